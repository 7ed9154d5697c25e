#!/usr/bin/env bash
# Connections shared across invocations (lazystore-push's default, like OpenSSH's
# ControlPersist): the first push leaves its SSH session and store processes open in the
# background, the next one-shot pushes reuse them; a changed known_hosts or ssh config is never
# served by a connection made under the old one; a dropped server connection is reopened; the
# connection ends after its idle time or with --stop-persist; --persist 0 shares nothing.
source "$(dirname "$0")/lib.sh"
unset LAZYSTORE_PUSH_PERSIST  # the default, as users get it

start_sshd
top=$(build_closure)
mapfile -t closure < <(dev_store -qR "$top")
ctl=$XDG_RUNTIME_DIR/lazystore-push
jpush() { push --to nix-server --json "$@"; }
field() { json_field "$1" < "$2"; }

step "first push copies the closure and leaves the connection open"
jpush "$top" > "$WORK/first.json"
[ "$(field copied_paths "$WORK/first.json")" -eq "${#closure[@]}" ] || fail "first push incomplete"
[ "$(field persistent "$WORK/first.json")" = True ] || fail "not through a persistent connection"
[ "$(field connection_reused "$WORK/first.json")" = False ] || fail "first push cannot reuse anything"
srv_store --verify-path "${closure[@]}" || fail "server contents do not verify"
mapfile -t sockets < <(ls "$ctl"/*.sock)
[ "${#sockets[@]}" -eq 1 ] || fail "expected one socket, got ${#sockets[@]}"
[ "$(stat -c '%a %u' "$ctl")" = "700 $(id -u)" ] || fail "control directory is not private"
[ "$(stat -c %a "${sockets[0]}")" = 600 ] || fail "control socket is not private"

step "the next one-shot pushes reuse it: no-op, with a root, a new path"
jpush "$top" > "$WORK/noop.json"
[ "$(field connection_reused "$WORK/noop.json")" = True ] || fail "no-op push did not reuse the connection"
[ "$(field missing "$WORK/noop.json")" -eq 0 ] || fail "no-op found missing paths"
jpush --root kept "$top" > "$WORK/root.json"
[ "$(field connection_reused "$WORK/root.json")" = True ] || fail "root push did not reuse the connection"
[ -L "$ROOTS_DIR/kept/$(basename "$top")" ] || fail "root not set through the persistent connection"
extra=$(nix-instantiate --store "$DEV_STORE" --read-write-mode --eval -E "builtins.toFile \"extra\" \"\${builtins.storePath \"$top\"}\"")
extra=${extra//\"/}
jpush "$extra" > "$WORK/extra.json"
[ "$(field copied_paths "$WORK/extra.json")" -eq 1 ] || fail "expected one copied path"
srv_store --verify-path "$extra" || fail "extra path does not verify"

step "--persist 0 shares nothing"
LAZYSTORE_PUSH_PERSIST=0 jpush "$top" > "$WORK/direct.json"
[ "$(field persistent "$WORK/direct.json")" = False ] || fail "--persist 0 went through the persistent connection"

step "host keys: a connection made under the old known_hosts never serves the new one"
cp "$WORK/known_hosts" "$WORK/known_hosts.saved"
: > "$WORK/known_hosts"   # the user removed the server's key
expect_failure 5 push --to nix-server "$top"
case "$ERR_LINE" in *unknown*) ;; *) fail "an emptied known_hosts must refuse the host" ;; esac
cp "$WORK/known_hosts.saved" "$WORK/known_hosts"
jpush "$top" > "$WORK/back.json"
[ "$(field connection_reused "$WORK/back.json")" = True ] || fail "the restored known_hosts should find its connection again"
echo "# a comment" >> "$WORK/ssh_config"   # any change to the ssh config: a connection of its own
jpush "$top" > "$WORK/config.json"
[ "$(field connection_reused "$WORK/config.json")" = False ] || fail "a changed ssh config reused a connection"
[ "$(ls "$ctl"/*.sock | wc -l)" -eq 2 ] || fail "expected a second socket"

step "a control directory that is not private is not used"
chmod 0755 "$ctl"
jpush "$top" > "$WORK/open.json" 2> "$WORK/open.err"
[ "$(field persistent "$WORK/open.json")" = False ] || fail "used a control directory others can enter"
chmod 0700 "$ctl"

step "the server drops the connection: it is reopened"
server_pid=$(pgrep -f -- "nix-daemon --stdio --store local.root=$SRV\$" | head -n 1)
[ -n "$server_pid" ] || fail "no server nix-daemon kept open"
kill "$server_pid"
gone() { ! kill -0 "$server_pid" 2>/dev/null; }
wait_until 10 gone || fail "server nix-daemon did not exit"
jpush "$extra" > "$WORK/again.json" || { cat "$WORK/again.json"; fail "push after a dropped connection failed"; }
[ "$(field missing "$WORK/again.json")" -eq 0 ] || fail "push after reconnect is not a no-op"

step "--stop-persist ends it; an idle one ends by itself"
push --to nix-server --stop-persist 2> "$WORK/stop.err"
grep -q 'stopped' "$WORK/stop.err" || fail "it was not running"
[ "$(ls "$ctl"/*.sock | wc -l)" -eq 1 ] || fail "the stopped connection's socket is left behind"
/usr/bin/python3 "$SOURCE_ROOT/tests/push/stop_persistent.py" "$ctl"  # the one of the changed config
no_sockets() { ! ls "$ctl"/*.sock > /dev/null 2>&1; }
wait_until 10 no_sockets || fail "sockets left behind"
jpush --persist 2s "$top" > "$WORK/short.json"
[ "$(field persistent "$WORK/short.json")" = True ] || fail "--persist 2s not used"
wait_until 30 no_sockets || fail "the connection did not end after 2 s idle"

echo "PASS"
