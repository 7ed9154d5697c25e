#!/usr/bin/env bash
# lazystore-push over the daemon protocol: it falls back to the serve protocol where the server
# gives it no nix-daemon --stdio; and against a server whose key is not a Nix trusted user
# (the wrapper forwards to a nix-daemon with trusted-users empty, docs/server.md's restricted
# choice) content-addressed paths go in unsigned, an unsigned input-addressed path is refused
# with the daemon's reason, and the same path signed by a key the server trusts goes in.
source "$(dirname "$0")/lib.sh"

start_sshd
top=$(build_closure)
mapfile -t closure < <(dev_store -qR "$top")

step "auto: a server without nix-daemon --stdio for this key gets the serve protocol"
push --to nix-server --daemon-command 'no-such-daemon --stdio' --json -v "$top" > "$WORK/fallback.json" 2> "$WORK/fallback.err" ||
  { cat "$WORK/fallback.err"; fail "push with the fallback failed"; }
[ "$(json_field protocol < "$WORK/fallback.json")" = serve ] || fail "expected the serve protocol"
[ "$(json_field copied_paths < "$WORK/fallback.json")" -eq "${#closure[@]}" ] || fail "fallback push incomplete"
grep -q "falling back" "$WORK/fallback.err" || { cat "$WORK/fallback.err"; fail "-v does not say it fell back"; }
srv_store --verify-path "${closure[@]}" || fail "server contents do not verify"
expect_failure 7 push --to nix-server --protocol daemon --daemon-command 'no-such-daemon --stdio' "$top"
case "$ERR_LINE" in *"no nix-daemon --stdio"*"not allowed"*) ;; *) fail "message should say why" ;; esac

step "a server where the key is not a trusted user (a nix-daemon with trusted-users empty)"
SRV2=$WORK/srv2
nix-store --store "local?root=$SRV2" --init
nix-store --generate-binary-cache-key lazystore-test-1 "$WORK/sign.sec" "$WORK/sign.pub"
mkdir -p "$WORK/untrusted-conf"
cp "$NIX_CONF_DIR/nix.conf" "$WORK/untrusted-conf/nix.conf"
printf 'trusted-users =\ntrusted-public-keys = %s\n' "$(cat "$WORK/sign.pub")" >> "$WORK/untrusted-conf/nix.conf"
NIX_CONF_DIR=$WORK/untrusted-conf NIX_DAEMON_SOCKET_PATH=$WORK/daemon.sock \
  nix-daemon --store "local?root=$SRV2" > "$WORK/daemon.log" 2>&1 &
daemon_pid=$!
EXTRA_CLEANUP+=("kill $daemon_pid; wait $daemon_pid 2>/dev/null")
socket_ready() { [ -S "$WORK/daemon.sock" ]; }
wait_until 20 socket_ready || fail "nix-daemon did not create its socket"
ssh-keygen -q -t ed25519 -N '' -f "$WORK/restrictedkey" -C lazystore-test-restricted
command="NIX_CONF_DIR=$NIX_CONF_DIR exec $WRAPPER --store 'unix://$WORK/daemon.sock' --roots-dir $SRV2/nix/var/nix/gcroots/lazystore"
printf 'restrict,command="%s" %s\n' "$command" "$(cat "$WORK/restrictedkey.pub")" >> "$WORK/authorized_keys"
sed -e 's/^Host nix-server/Host restricted/' -e "s|IdentityFile .*|IdentityFile $WORK/restrictedkey|" \
  "$WORK/ssh_config" > "$WORK/restricted_config"
rpush() { "$PUSH" -F "$WORK/restricted_config" --from-store "$DEV_STORE" --to restricted "$@"; }
srv2_store() { nix-store --store "local?root=$SRV2" "$@"; }

step "content-addressed paths go in unsigned (their hash proves them)"
rpush --json --root ca "$top" > "$WORK/ca.json" || { cat "$WORK/ca.json"; fail "CA push refused"; }
[ "$(json_field protocol < "$WORK/ca.json")" = daemon ] || fail "expected the daemon protocol"
srv2_store --verify-path "${closure[@]}" || fail "restricted server contents do not verify"
[ -L "$SRV2/nix/var/nix/gcroots/lazystore/ca/$(basename "$top")" ] || fail "root not set on the restricted server"

step "an unsigned input-addressed path is refused with the daemon's reason (exit 7)"
cat > "$WORK/built.nix" <<'NIX'
derivation {
  name = "built-locally";
  system = builtins.currentSystem;
  builder = "/bin/sh";
  args = [ "-c" "/bin/mkdir $out; echo built > $out/file" ];
}
NIX
built=$(nix-build --store "$DEV_STORE" "$WORK/built.nix" --no-out-link)
expect_failure 7 rpush --progress none "$built"
case "$ERR_LINE" in *"refused"*"$built"*"lacks a valid signature"*) ;; *) fail "message should carry the daemon's reason" ;; esac
! srv2_store --check-validity "$built" 2>/dev/null || fail "the unsigned path went in"

step "the same path signed with a key the server trusts goes in"
nix --store "$DEV_STORE" store sign --key-file "$WORK/sign.sec" "$built"
rpush --json "$built" > "$WORK/signed.json" || { cat "$WORK/signed.json"; fail "signed push refused"; }
[ "$(json_field copied_paths < "$WORK/signed.json")" -eq 1 ] || fail "signed path not copied"
srv2_store --verify-path "$built" || fail "signed path does not verify"

echo "PASS"
