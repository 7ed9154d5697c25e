#!/usr/bin/env bash
# A push killed (SIGKILL) in the middle of a NAR leaves the server consistent: the partial path is
# not valid, every valid path has its references, and a partial directory on disk keeps its
# "<path>.lock" sibling (so lazystore, which hides locked paths, never shows it). A rerun sends
# only what is still missing.
source "$(dirname "$0")/lib.sh"

start_sshd
small=$(dev_store --add "$SOURCE_ROOT/packaging/server")
# The big path is a 24 MiB file that references the small one, so the small one goes first.
head -c $((18 * 1024 * 1024)) /dev/urandom | base64 -w 0 > "$WORK/blob.txt"
big=$(nix-instantiate --store "$DEV_STORE" --read-write-mode --eval -E \
  "builtins.toFile \"big\" \"\${builtins.storePath \"$small\"}\n\${builtins.readFile $WORK/blob.txt}\"")
big=${big//\"/}
top=$(nix-instantiate --store "$DEV_STORE" --read-write-mode --eval -E \
  "builtins.toFile \"top\" \"\${builtins.storePath \"$small\"} \${builtins.storePath \"$big\"}\"")
top=${top//\"/}
mapfile -t closure < <(dev_store -qR "$top")
[ "${#closure[@]}" -eq 3 ] || fail "expected a closure of 3 paths, got ${#closure[@]}"

# The local store served through a pipe paced at 8 MiB/s, so the 24 MiB NAR takes ~3 s.
cat > "$WORK/slow-nix-store" <<SCRIPT
#!/bin/sh
nix-store "\$@" | /usr/bin/python3 "$SOURCE_ROOT/tests/push/slow_pipe.py" 8388608
SCRIPT
chmod +x "$WORK/slow-nix-store"

mapfile -t order < <(push --to nix-server --dry-run "$top" 2>/dev/null)
[ "${order[*]}" = "$small $big $top" ] || fail "unexpected sending order: ${order[*]}"

step "push, killed once the server has part of the big file"
big_real=$SRV${big}
# Started directly (not through the push function) so that $! is lazystore-push itself.
"$PUSH" -F "$WORK/ssh_config" --from-store "$DEV_STORE" ${PUSH_PROTOCOL:+--protocol "$PUSH_PROTOCOL"} \
  --to nix-server --nix-store "$WORK/slow-nix-store" \
  "$top" > /dev/null 2>&1 &
push_pid=$!
partial() { [ "$(stat -c %s "$big_real" 2>/dev/null || echo 0)" -ge $((2 * 1024 * 1024)) ]; }
wait_until 60 partial || { kill -9 "$push_pid"; fail "the big NAR never started arriving"; }
kill -9 "$push_pid"
wait "$push_pid" 2>/dev/null || true
size=$(stat -c %s "$big_real")
[ "$size" -lt $((24 * 1024 * 1024)) ] || fail "killed too late: the whole file had arrived"
echo "   killed with $size of $((24 * 1024 * 1024)) bytes of the big file on the server"

# The server's store process ends when it sees the connection gone; wait for that.
server_gone() { ! pgrep -f -- "--store local.root=$SRV( |\$)" > /dev/null; }
wait_until 30 server_gone || fail "the server's store process did not exit"

step "server store is consistent"
! srv_store --check-validity "$big" 2>/dev/null || fail "partial path is valid"
! srv_store --check-validity "$top" 2>/dev/null || fail "top is valid without its reference"
! nix --store "$SRV_STORE" path-info "$big" > /dev/null 2>&1 || fail "path-info shows the partial path"
for p in "${order[@]}"; do
  [ "$p" != "$big" ] || break
  srv_store --check-validity "$p" || fail "$p, sent before the big path, is not valid"
done
for p in "${closure[@]}"; do
  if srv_store --check-validity "$p" 2>/dev/null; then
    srv_store -qR "$p" > /dev/null || fail "valid path $p lacks references"
    srv_store --verify-path "$p" || fail "valid path $p does not verify"
  fi
done
if [ -e "$big_real" ]; then
  [ -e "$big_real.lock" ] || fail "partial $big_real on disk without a .lock: lazystore would show it"
  echo "   partial path present on disk, hidden by its .lock sibling"
fi
mapfile -t invalid < <(srv_store --check-validity --print-invalid "${closure[@]}")
echo "   still missing: ${#invalid[@]} paths"

step "rerun sends only what is missing"
push --to nix-server --json "$top" > "$WORK/rerun.json" || { cat "$WORK/rerun.json"; fail "rerun failed"; }
[ "$(json_field copied_paths < "$WORK/rerun.json")" -eq "${#invalid[@]}" ] || { cat "$WORK/rerun.json"; fail "rerun copied the wrong number"; }
/usr/bin/python3 -c '
import json, sys
got = sorted(json.load(open(sys.argv[1]))["missing"])
want = sorted(sys.argv[2:])
sys.exit(0 if got == want else "rerun sent %s, expected %s" % (got, want))' "$WORK/rerun.json" "${invalid[@]}"
srv_store --check-validity "${closure[@]}" || fail "closure incomplete after rerun"
srv_store --verify-path "${closure[@]}" || fail "closure does not verify after rerun"
[ ! -e "$big_real.lock" ] || fail "stale .lock left after the rerun"

echo "PASS"
