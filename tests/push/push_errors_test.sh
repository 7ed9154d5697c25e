#!/usr/bin/env bash
# lazystore-push refuses unknown and changed host keys, and reports a wrong alias, an unreachable
# host, a rejected key, a disallowed command, a server that never answers and a bad argument with
# one line and its exit code.
source "$(dirname "$0")/lib.sh"

start_sshd
path=$(dev_store --add "$SOURCE_ROOT/packaging/server")

step "unknown host key is refused (exit 5), nothing is recorded"
: > "$WORK/empty_known_hosts"
expect_failure 5 push --to nix-server -o UserKnownHostsFile="$WORK/empty_known_hosts" "$path"
case "$ERR_LINE" in *unknown*--accept-new-host-key*) ;; *) fail "message should say unknown and how to accept" ;; esac
[ ! -s "$WORK/empty_known_hosts" ] || fail "known_hosts written without --accept-new-host-key"

step "--accept-new-host-key trusts and records it"
push --to nix-server -o UserKnownHostsFile="$WORK/empty_known_hosts" --accept-new-host-key "$path" 2>/dev/null
grep -q "$(cut -d' ' -f2 "$WORK/hostkey.pub")" "$WORK/empty_known_hosts" || fail "host key not recorded"
srv_store --check-validity "$path" || fail "path not copied"
push --to nix-server -o UserKnownHostsFile="$WORK/empty_known_hosts" "$path" 2>/dev/null || fail "recorded key not accepted"

step "changed host key is refused (exit 5), even with --accept-new-host-key"
ssh-keygen -q -t ed25519 -N '' -f "$WORK/otherkey"
echo "[127.0.0.1]:$PORT $(cut -d' ' -f1,2 "$WORK/otherkey.pub")" > "$WORK/changed_known_hosts"
expect_failure 5 push --to nix-server -o UserKnownHostsFile="$WORK/changed_known_hosts" --accept-new-host-key "$path"
case "$ERR_LINE" in *CHANGED*) ;; *) fail "message should say the key changed" ;; esac

step "wrong alias (no such Host, does not resolve; no network namespace escape) gives exit 4"
expect_failure 4 unshare --net "$PUSH" -F "$WORK/ssh_config" --from-store "$DEV_STORE" --to no-such-alias.invalid "$path"

step "unreachable host (closed port on 127.0.0.1) gives exit 4"
closed=$(free_port)
expect_failure 4 push --to nix-server -o Port="$closed" "$path"

step "a key the server does not accept gives exit 6"
ssh-keygen -q -t ed25519 -N '' -f "$WORK/strangerkey"
sed -e 's/^Host nix-server/Host stranger/' -e "s|IdentityFile .*|IdentityFile $WORK/strangerkey|" \
  "$WORK/ssh_config" > "$WORK/stranger_config"
expect_failure 6 "$PUSH" -F "$WORK/stranger_config" --from-store "$DEV_STORE" --to stranger "$path"

step "ssh-agent authentication (no IdentityFile in the config)"
agent_out=$(ssh-agent -s -a "$WORK/agent.sock")
agent_pid=$(sed -n 's/^SSH_AGENT_PID=\([0-9]*\);.*/\1/p' <<< "$agent_out")
[ -n "$agent_pid" ] || fail "ssh-agent did not start"
EXTRA_CLEANUP+=("kill $agent_pid")
SSH_AUTH_SOCK="$WORK/agent.sock" ssh-add -q "$WORK/userkey"
grep -v IdentityFile "$WORK/ssh_config" | sed 's/^Host nix-server/Host via-agent/' > "$WORK/agent_config"
SSH_AUTH_SOCK="$WORK/agent.sock" "$PUSH" -F "$WORK/agent_config" --from-store "$DEV_STORE" --to via-agent \
  --json "$path" > "$WORK/agent.json" || { cat "$WORK/agent.json"; fail "agent auth failed"; }
expect_failure 6 "$PUSH" -F "$WORK/agent_config" --from-store "$DEV_STORE" --to via-agent "$path"

step "the forced command refuses anything but the Nix protocols and roots (exit 7)"
expect_failure 7 push --to nix-server --protocol serve --remote-command 'cat /etc/passwd' "$path"
case "$ERR_LINE" in *"not allowed"*) ;; *) fail "message should carry the server's reason" ;; esac
expect_failure 7 push --to nix-server --protocol daemon --daemon-command 'cat /etc/passwd' "$path"
case "$ERR_LINE" in *"not allowed"*) ;; *) fail "message should carry the server's reason" ;; esac

step "a server that never answers: the push gives up after --io-timeout (exit 7)"
ssh-keygen -q -t ed25519 -N '' -f "$WORK/hangkey" -C lazystore-test-hang
printf 'restrict,command="exec cat > /dev/null" %s\n' "$(cat "$WORK/hangkey.pub")" >> "$WORK/authorized_keys"
sed -e 's/^Host nix-server/Host hanging/' -e "s|IdentityFile .*|IdentityFile $WORK/hangkey|" \
  "$WORK/ssh_config" > "$WORK/hang_config"
started=$SECONDS
expect_failure 7 timeout 120 "$PUSH" -F "$WORK/hang_config" --from-store "$DEV_STORE" --to hanging --io-timeout 2 "$path"
case "$ERR_LINE" in *"sent nothing for 2 s"*) ;; *) fail "message should say the server went silent" ;; esac
[ $((SECONDS - started)) -lt 60 ] || fail "gave up only after $((SECONDS - started)) s"

step "bad arguments give exit 2"
expect_failure 2 push --to nix-server /etc/passwd
expect_failure 2 push --to nix-server --root 'bad/name' "$path"
expect_failure 2 "$PUSH" "$path"
expect_failure 2 push --to nix-server -o ProxyCommand=nc "$path"

step "a path missing from the local store gives exit 3"
expect_failure 3 push --to nix-server /nix/store/00000000000000000000000000000000-absent

step "an unreadable ssh config gives exit 4"
expect_failure 4 "$PUSH" -F "$WORK/no-such-config" --from-store "$DEV_STORE" --to nix-server "$path"

echo "PASS"
