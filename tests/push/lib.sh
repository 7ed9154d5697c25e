# Shared setup for lazystore-push integration tests (sourced by bash scripts).
# Gives each test: throw-away "developer" and "server" Nix stores (local?root=DIR, nix-bin without
# a daemon), a private sshd on 127.0.0.1 with its own host key, whose authorized_keys runs the
# forced-command wrapper of packaging/server/, and an ssh config with the alias "nix-server".
# Nothing here reads or writes the real ~/.ssh, /nix/store or /etc/ssh.
set -euo pipefail

PUSH=${PUSH:?set PUSH to the lazystore-push binary}
# Skip (77) rather than fail where the servers these tests need are not installed.
for tool in nix-store nix-instantiate ssh-keygen unshare; do
  command -v "$tool" >/dev/null || { echo "SKIP: $tool not installed"; exit 77; }
done
[ -x /usr/sbin/sshd ] || { echo "SKIP: openssh-server not installed"; exit 77; }
SOURCE_ROOT=${SOURCE_ROOT:?set SOURCE_ROOT to the source tree}
WRAPPER=$SOURCE_ROOT/packaging/server/lazystore-serve

WORK=$(mktemp -d /tmp/lazystore-push-test.XXXXXX)
SSHD_PID=""
EXTRA_CLEANUP=()
cleanup() {
  local rc=$?
  local hook
  for hook in "${EXTRA_CLEANUP[@]}"; do eval "$hook" || true; done
  /usr/bin/python3 "$SOURCE_ROOT/tests/push/stop_persistent.py" "$WORK" 2>/dev/null || true
  if [ -n "$SSHD_PID" ]; then
    kill "$SSHD_PID" 2>/dev/null || true
    wait "$SSHD_PID" 2>/dev/null || true
  fi
  # Server-side nix-store processes end on EOF; let them go before their store is removed.
  local deadline=$((SECONDS + 10))
  while pgrep -f -- "local.root=$WORK/" > /dev/null && [ "$SECONDS" -lt "$deadline" ]; do sleep 0.05; done
  if [ "$rc" -ne 0 ] && [ -f "$WORK/sshd.log" ]; then
    echo "--- sshd log:"; tail -n 20 "$WORK/sshd.log" || true
  fi
  rm -rf "$WORK"
  exit "$rc"
}
trap cleanup EXIT

fail() { echo "FAIL: $*" >&2; exit 1; }
step() { echo "== $*"; }

export HOME=$WORK/home
mkdir -p "$HOME"
# lazystore-push shares connections across invocations by default; the tests push on fresh
# connections unless they ask for it, and every connection left open is ended on exit.
export LAZYSTORE_PUSH_PERSIST=0
export XDG_RUNTIME_DIR=$WORK/run
mkdir -m 0700 -p "$XDG_RUNTIME_DIR"
unset SSH_AUTH_SOCK BAZEL_NIX_REMOTE
export NIX_CONF_DIR=$WORK/nixconf
mkdir -p "$NIX_CONF_DIR"
# Builds in a store under a root need the sandbox; builders need /bin/sh (and absolute paths).
printf 'build-users-group =\nsubstituters =\nexperimental-features = nix-command\nsandbox = true\nsandbox-paths = /bin /lib /lib64 /usr\n' \
  > "$NIX_CONF_DIR/nix.conf"

DEV=$WORK/dev
SRV=$WORK/srv
DEV_STORE="local?root=$DEV"
SRV_STORE="local?root=$SRV"
ROOTS_DIR=$SRV/nix/var/nix/gcroots/lazystore
dev_store() { nix-store --store "$DEV_STORE" "$@"; }
srv_store() { nix-store --store "$SRV_STORE" "$@"; }

# A free TCP port on 127.0.0.1 (the kernel picks it; sshd binds it right after).
free_port() {
  /usr/bin/python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}

# Polls `cmd` until it succeeds or `seconds` pass.
wait_until() {
  local seconds=$1; shift
  local deadline=$((SECONDS + seconds))
  until "$@"; do
    [ "$SECONDS" -lt "$deadline" ] || return 1
    sleep 0.05
  done
}

port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

start_sshd() {
  mkdir -p /run/sshd  # sshd's privilege-separation directory
  ssh-keygen -q -t ed25519 -N '' -f "$WORK/hostkey" -C lazystore-test-host
  ssh-keygen -q -t ed25519 -N '' -f "$WORK/userkey" -C lazystore-test-user
  PORT=$(free_port)
  local command="NIX_CONF_DIR=$NIX_CONF_DIR exec $WRAPPER --store '$SRV_STORE' --roots-dir $ROOTS_DIR"
  printf 'restrict,command="%s" %s\n' "$command" "$(cat "$WORK/userkey.pub")" > "$WORK/authorized_keys"
  cat > "$WORK/sshd_config" <<CONF
Port $PORT
ListenAddress 127.0.0.1
HostKey $WORK/hostkey
AuthorizedKeysFile $WORK/authorized_keys
PermitRootLogin prohibit-password
StrictModes no
UsePAM no
PasswordAuthentication no
KbdInteractiveAuthentication no
PidFile none
LogLevel INFO
CONF
  # sshd runs commands through the login shell; this machine's /root/.bashrc spends seconds in
  # tool setup, so sshd gets a private mount namespace where that file is empty.
  : > "$WORK/empty-bashrc"
  unshare --mount --propagation private /bin/sh -c \
    'mount --bind "$1" /root/.bashrc 2>/dev/null || true; exec /usr/sbin/sshd -f "$2" -D -e' \
    sh "$WORK/empty-bashrc" "$WORK/sshd_config" 2>"$WORK/sshd.log" &
  SSHD_PID=$!
  wait_until 10 port_open "$PORT" || fail "sshd did not start listening on port $PORT"
  echo "[127.0.0.1]:$PORT $(cut -d' ' -f1,2 "$WORK/hostkey.pub")" > "$WORK/known_hosts"
  cat > "$WORK/ssh_config" <<CONF
Host nix-server
  Hostname 127.0.0.1
  Port $PORT
  User root
  IdentityFile $WORK/userkey
  UserKnownHostsFile $WORK/known_hosts
CONF
}

# lazystore-push with the test's ssh config and local store; PUSH_PROTOCOL=daemon|serve picks a
# protocol (default: lazystore-push's own choice, auto).
PUSH_PROTOCOL=${PUSH_PROTOCOL:-}
push() { "$PUSH" -F "$WORK/ssh_config" --from-store "$DEV_STORE" ${PUSH_PROTOCOL:+--protocol "$PUSH_PROTOCOL"} "$@"; }

# Builds a closure of 10 trees (nix-store --add) and 40 toFile nodes referencing them and each
# other (nix-instantiate --read-write-mode); prints the top node's store path.
build_closure() {
  local trees=$WORK/trees
  mkdir -p "$trees"
  local i
  for i in $(seq 0 9); do
    mkdir -p "$trees/tree-$i/sub/deeper"
    seq 1 $((i * 500 + 1)) > "$trees/tree-$i/data"
    printf '#!/bin/sh\necho %s\n' "$i" > "$trees/tree-$i/run"
    chmod +x "$trees/tree-$i/run"
    ln -s data "$trees/tree-$i/link"
    echo "leaf $i" > "$trees/tree-$i/sub/deeper/leaf"
  done
  mapfile -t tree_paths < <(dev_store --add "$trees"/tree-*)
  [ "${#tree_paths[@]}" -eq 10 ] || fail "expected 10 tree paths"
  local expr="let"
  for i in $(seq 0 9); do expr+=" t$i = builtins.storePath \"${tree_paths[$i]}\";"; done
  expr+=" n1 = builtins.toFile \"node-1\" \"node 1 \${t0}\";"
  for i in $(seq 2 40); do
    expr+=" n$i = builtins.toFile \"node-$i\" \"node $i \${n$((i - 1))} \${n$((i / 2))} \${t$((i % 10))}\";"
  done
  expr+=" in n40"
  local top
  top=$(nix-instantiate --store "$DEV_STORE" --read-write-mode --eval -E "$expr")
  top=${top//\"/}
  echo "$top"
}

json_field() { /usr/bin/python3 -c 'import json,sys; v=json.load(sys.stdin)[sys.argv[1]]; print(len(v) if isinstance(v,list) else v)' "$1"; }

# Runs lazystore-push expecting failure with exit code $1; the error must be exactly one line
# "lazystore-push: error: ..." on stderr, which is left in $ERR_LINE.
expect_failure() {
  local want=$1; shift
  local rc=0
  "$@" > "$WORK/fail.out" 2> "$WORK/fail.err" || rc=$?
  [ "$rc" -eq "$want" ] || { cat "$WORK/fail.err" >&2; fail "expected exit $want, got $rc from: $*"; }
  [ "$(wc -l < "$WORK/fail.err")" -eq 1 ] || { cat "$WORK/fail.err" >&2; fail "expected one line on stderr"; }
  ERR_LINE=$(cat "$WORK/fail.err")
  case "$ERR_LINE" in
    "lazystore-push: error: "*) ;;
    *) fail "unexpected stderr: $ERR_LINE" ;;
  esac
  echo "   exit $rc: $ERR_LINE"
}
