#!/usr/bin/env bash
# --persist: the first push starts a background master that keeps the connections; later pushes
# (no-op and not) go through it, survive the server dropping the connection, and --stop-persist
# ends it.
source "$(dirname "$0")/lib.sh"

start_sshd
top=$(build_closure)
mapfile -t closure < <(dev_store -qR "$top")
persist() { "$PUSH" -F "$WORK/ssh_config" --from-store "$DEV_STORE" --to nix-server --control-dir "$WORK/ctl" "$@"; }
EXTRA_CLEANUP+=('persist --stop-persist 2>/dev/null')

step "first push starts the master and copies the closure"
persist --persist 60s --json "$top" > "$WORK/first.json"
[ "$(json_field copied_paths < "$WORK/first.json")" -eq "${#closure[@]}" ] || fail "first push incomplete"
srv_store --verify-path "${closure[@]}" || fail "server contents do not verify"
socket=$(ls "$WORK"/ctl/*.sock)
[ "$(stat -c %a "$WORK/ctl")" = 700 ] || fail "control directory is not private"
[ "$(stat -c %a "$socket")" = 600 ] || fail "control socket is not private"

step "no-op push through the master"
persist --persist 60s --json "$top" > "$WORK/noop.json"
[ "$(json_field missing < "$WORK/noop.json")" -eq 0 ] || fail "no-op found missing paths"
LAZYSTORE_PUSH_PERSIST=60s persist --json --root kept "$top" > "$WORK/root.json"
[ -L "$ROOTS_DIR/kept/$(basename "$top")" ] || fail "root not set through the master"

step "a new path through the master"
extra=$(nix-instantiate --store "$DEV_STORE" --read-write-mode --eval -E "builtins.toFile \"extra\" \"\${builtins.storePath \"$top\"}\"")
extra=${extra//\"/}
persist --persist 60s --json "$extra" > "$WORK/extra.json"
[ "$(json_field copied_paths < "$WORK/extra.json")" -eq 1 ] || fail "expected one copied path"
srv_store --verify-path "$extra" || fail "extra path does not verify"

step "the server drops the connection: the master reconnects"
server_pid=$(pgrep -f -- "nix-daemon --stdio --store local.root=$SRV" | head -n 1)
[ -n "$server_pid" ] || fail "no server nix-daemon kept open by the master"
kill "$server_pid"
gone() { ! kill -0 "$server_pid" 2>/dev/null; }
wait_until 10 gone || fail "server nix-daemon did not exit"
persist --persist 60s --json "$extra" > "$WORK/again.json" || { cat "$WORK/again.json"; fail "push after a dropped connection failed"; }
[ "$(json_field missing < "$WORK/again.json")" -eq 0 ] || fail "push after reconnect is not a no-op"

step "--stop-persist ends the master"
persist --stop-persist 2> "$WORK/stop.err"
grep -q 'stopped' "$WORK/stop.err" || fail "master was not running"
no_socket() { [ ! -e "$socket" ]; }
wait_until 10 no_socket || fail "socket left behind"

echo "PASS"
