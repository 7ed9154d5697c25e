#!/bin/bash
# packaging/container/entrypoint.sh in a private mount namespace: bwrap gives each run its own
# tmpfs /nix, so the entrypoint's /nix/store mount never touches the host's.
# Checks: the command sees the store and its exit status comes back; SIGTERM reaches the command
# and the store is unmounted afterwards; a daemon that cannot mount and one that never mounts
# both end in a bounded failure (70) without running the command; LAZYSTORE_PROFILE's files are
# fetched without the command reading them, and a profile that cannot be used is skipped.
set -euo pipefail
: "${LAZYSTORE:?}" "${LAZYSTORE_CTL:?}" "${SOURCE_ROOT:?}"
[[ $EUID == 0 ]] || { echo "SKIP: not root"; exit 77; }
for tool in bwrap fusermount3; do command -v $tool >/dev/null || { echo "SKIP: no $tool"; exit 77; }; done
[[ -e /dev/fuse ]] || { echo "SKIP: no /dev/fuse"; exit 77; }

ENTRYPOINT=$SOURCE_ROOT/packaging/container/entrypoint.sh
work=$(mktemp -d /tmp/lazystore-entrypoint.XXXXXX)
trap 'rm -rf "$work"' EXIT
name=0123456789abcdfghijklmnpqrsvwxyz-greeting
mkdir -p "$work/store/$name"
echo "hello from the store" > "$work/store/$name/message"
export LAZYSTORE_SOURCE=$work/store LAZYSTORE_BIN=$LAZYSTORE LAZYSTORE_CTL_BIN=$LAZYSTORE_CTL \
  LAZYSTORE_CACHE=$work/cache LAZYSTORE_MOUNT_TIMEOUT=20 name work ENTRYPOINT

# Runs bash -c SCRIPT in a private mount namespace with an empty tmpfs /nix.
private() { bwrap --dev-bind / / --tmpfs /nix --die-with-parent bash -euo pipefail -c "$1"; }
fail() { echo "FAIL: $*"; exit 1; }

# 1. The command sees /nix/store; its exit status is the entrypoint's; unmounted afterwards.
started=$SECONDS
out=$(private '
  set +e
  "$ENTRYPOINT" sh -c "cat /nix/store/$name/message; exit 7"
  status=$?
  if awk "\$5 == \"/nix/store\"" /proc/self/mountinfo | grep -q .; then echo STILL-MOUNTED; fi
  exit $status' 2>"$work/err1") && status=0 || status=$?
[[ $status == 7 ]] || fail "exit status $status, expected 7; stderr: $(cat "$work/err1")"
[[ $out == "hello from the store" ]] || fail "command output: $out"
echo "ok: status 7 propagated, store seen, unmounted ($((SECONDS - started)) s)"

# 2. SIGTERM to the entrypoint reaches the command; the store is unmounted afterwards.
out=$(private '
  set +e
  rm -f "$work/ready"
  "$ENTRYPOINT" bash -c "trap \"echo got-TERM; exit 42\" TERM; touch \"\$work/ready\"; while :; do sleep 0.05; done" &
  ep=$!
  for _ in $(seq 1 400); do [[ -e $work/ready ]] && break; sleep 0.05; done
  [[ -e $work/ready ]] || { echo "command never started"; exit 1; }
  kill -TERM $ep
  wait $ep
  status=$?
  if awk "\$5 == \"/nix/store\"" /proc/self/mountinfo | grep -q .; then echo STILL-MOUNTED; fi
  exit $status' 2>"$work/err2") && status=0 || status=$?
[[ $status == 42 ]] || fail "after SIGTERM: status $status, expected 42; out: $out; stderr: $(cat "$work/err2")"
[[ $out == got-TERM ]] || fail "after SIGTERM: output $out"
echo "ok: SIGTERM forwarded (command exited 42), unmounted"

# 3. A daemon that cannot mount (an unsupported SOURCE): bounded failure, the command never runs.
started=$SECONDS
out=$(LAZYSTORE_SOURCE=gopher://nowhere/nix/store private '"$ENTRYPOINT" echo RAN' 2>"$work/err3") && status=0 || status=$?
[[ $status == 70 && $out != *RAN* ]] || fail "bad source: status $status, out $out"
grep -q "before mounting" "$work/err3" || fail "bad source: stderr $(cat "$work/err3")"
echo "ok: unmountable source fails with 70 in $((SECONDS - started)) s"

# 4. A daemon that never mounts: the timeout bounds the wait, the daemon is stopped.
printf '#!/bin/sh\nexec sleep 600\n' > "$work/hang"
chmod +x "$work/hang"
started=$SECONDS
out=$(LAZYSTORE_BIN=$work/hang LAZYSTORE_MOUNT_TIMEOUT=2 private '"$ENTRYPOINT" echo RAN' 2>"$work/err4") \
  && status=0 || status=$?
elapsed=$((SECONDS - started))
[[ $status == 70 && $out != *RAN* ]] || fail "hanging daemon: status $status, out $out"
((elapsed < 20)) || fail "hanging daemon: took $elapsed s"
grep -q "not mounted after 2 s" "$work/err4" || fail "hanging daemon: stderr $(cat "$work/err4")"
echo "ok: a daemon that never mounts fails with 70 after $elapsed s"

# 5. A profile: its file comes into the cache although the command never reads it (the daemon's
# counter, polled with a deadline); an unreadable profile is said, and the command runs anyway.
head -c 20000 /dev/urandom > "$work/store/$name/data.bin"
printf '# from another executor\n/nix/store/%s/data.bin\n' "$name" > "$work/profile"
rm -rf "$work/cache"
out=$(LAZYSTORE_PROFILE=$work/profile private '
  "$ENTRYPOINT" sh -c "
    for _ in \$(seq 1 200); do
      getfattr --absolute-names --only-values -n user.lazystore.stats /nix/store | grep -q \"\\\"upstream_bytes\\\":20000,\" && { echo FETCHED; exit 0; }
      sleep 0.05
    done
    echo NOT-FETCHED"' 2>"$work/err5") && status=0 || status=$?
[[ $status == 0 && $out == FETCHED ]] || fail "profile: status $status, out $out; stderr: $(cat "$work/err5")"
grep -q "queued 1 files" "$work/err5" || fail "profile: stderr $(cat "$work/err5")"
out=$(LAZYSTORE_PROFILE=$work/no-such-profile private '"$ENTRYPOINT" echo RAN' 2>"$work/err6") && status=0 || status=$?
[[ $status == 0 && $out == RAN ]] || fail "missing profile: status $status, out $out"
grep -q "cannot be read; running without it" "$work/err6" || fail "missing profile: stderr $(cat "$work/err6")"
echo "ok: the profile's file fetched before any read; a missing profile skipped"
