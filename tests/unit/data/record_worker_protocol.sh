#!/usr/bin/env bash
# Records what Debian's Nix 2.8 really sends and answers over ssh-ng (the worker protocol of
# `nix-daemon --stdio`), for the golden-byte tests in tests/unit/push_worker_protocol_test.cc.
# Nix runs "bash -c 'nix-daemon --stdio'" for the host "localhost" instead of ssh; a nix-daemon
# first on PATH tees both directions into files and runs the real one on a throw-away store.
#   worker_nix_copy_{client,server}.bin   nix copy --to ssh-ng:// of a 2-path closure
#   worker_nix_build_server.bin           nix-build --store ssh-ng:// of a derivation (activities)
#   worker_unsigned_refused_server.bin    an untrusted client's unsigned input-addressed path
# Usage: tests/unit/data/record_worker_protocol.sh [OUTPUT_DIR]   (default: this directory)
set -euo pipefail
out=$(cd "${1:-$(dirname "$0")}" && pwd)
work=$(mktemp -d /tmp/lazystore-record.XXXXXX)
daemon_pid=""
cleanup() {
  [ -z "$daemon_pid" ] || kill "$daemon_pid" 2>/dev/null || true
  [ -z "$daemon_pid" ] || wait "$daemon_pid" 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT
export HOME=$work/home NIX_CONF_DIR=$work/conf
mkdir -p "$HOME" "$NIX_CONF_DIR" "$work/bin"
unset NIX_REMOTE
cat > "$NIX_CONF_DIR/nix.conf" <<'CONF'
build-users-group =
substituters =
experimental-features = nix-command
sandbox = true
sandbox-paths = /bin /lib /lib64 /usr
CONF
dev="local?root=$work/dev"
srv="local?root=$work/srv"
real_daemon=$(command -v nix-daemon)

# The shim: records into $RECORD.{client,server}.bin and serves $SERVE_STORE.
cat > "$work/bin/nix-daemon" <<SHIM
#!/bin/sh
exec tee "\$RECORD.client.bin" | "$real_daemon" --stdio --store "\$SERVE_STORE" | tee "\$RECORD.server.bin"
SHIM
chmod +x "$work/bin/nix-daemon"

# A 2-path closure with fixed content: a tree (nix-store --add) and a text file referencing it.
mkdir -p "$work/tree/sub"
echo leaf > "$work/tree/sub/leaf"
printf '#!/bin/sh\necho hi\n' > "$work/tree/run"
chmod +x "$work/tree/run"
ln -s run "$work/tree/link"
tree=$(nix-store --store "$dev" --add "$work/tree")
node=$(nix-instantiate --store "$dev" --read-write-mode --eval -E \
  "builtins.toFile \"node\" \"node \${builtins.storePath \"$tree\"}\"" | tr -d '"')
nix-store --store "$srv" --init

RECORD=$work/copy SERVE_STORE=$srv PATH=$work/bin:$PATH \
  nix --store "$dev" copy --to 'ssh-ng://localhost' "$node"
cp "$work/copy.client.bin" "$out/worker_nix_copy_client.bin"
cp "$work/copy.server.bin" "$out/worker_nix_copy_server.bin"
echo "closure: $tree $node"
nix-store --store "$dev" -q --hash "$tree" "$node"

# A build on the server: start/stop activity and result messages.
cat > "$work/hello.nix" <<'NIX'
derivation {
  name = "hello-recorded";
  system = builtins.currentSystem;
  builder = "/bin/sh";
  args = [ "-c" "echo building; /bin/mkdir $out; echo hi > $out/hi" ];
}
NIX
RECORD=$work/build SERVE_STORE=$srv PATH=$work/bin:$PATH \
  nix-build --store "$dev" --eval-store "$dev" --store 'ssh-ng://localhost' "$work/hello.nix" --no-out-link
cp "$work/build.server.bin" "$out/worker_nix_build_server.bin"

# An untrusted client (trusted-users empty) adding an unsigned input-addressed path: refused.
built=$(nix-build --store "$dev" "$work/hello.nix" --no-out-link)
mkdir -p "$work/untrusted-conf"
cp "$NIX_CONF_DIR/nix.conf" "$work/untrusted-conf/nix.conf"
echo "trusted-users =" >> "$work/untrusted-conf/nix.conf"
nix-store --store "local?root=$work/srv2" --init
NIX_CONF_DIR=$work/untrusted-conf NIX_DAEMON_SOCKET_PATH=$work/daemon.sock \
  "$real_daemon" --store "local?root=$work/srv2" &
daemon_pid=$!
for _ in $(seq 1 200); do [ -S "$work/daemon.sock" ] && break; sleep 0.05; done
[ -S "$work/daemon.sock" ] || { echo "the daemon did not start"; exit 1; }
if RECORD=$work/untrusted SERVE_STORE=unix://$work/daemon.sock PATH=$work/bin:$PATH \
  nix --store "$dev" copy --to 'ssh-ng://localhost' "$built" 2> "$work/untrusted.err"; then
  echo "the untrusted copy was accepted"; exit 1
fi
cat "$work/untrusted.err"
cp "$work/untrusted.server.bin" "$out/worker_unsigned_refused_server.bin"
ls -l "$out"/worker_*.bin
