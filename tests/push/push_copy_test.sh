#!/usr/bin/env bash
# lazystore-push copies a 50-path closure to a real sshd (the forced command of packaging/server/,
# nix-daemon --stdio or nix-store --serve --write as PUSH_PROTOCOL says), the server verifies
# it, a second push is a no-op, GC roots are set, listed and expired.
source "$(dirname "$0")/lib.sh"

start_sshd
top=$(build_closure)
ln -s "$top" "$WORK/result"   # a result symlink, dangling on this host: its store is under $DEV
mapfile -t closure < <(dev_store -qR "$top")
[ "${#closure[@]}" -ge 50 ] || fail "closure has only ${#closure[@]} paths"
step "closure of ${#closure[@]} paths"

step "dry run lists every path, copies nothing"
push --to nix-server --dry-run "$WORK/result" > "$WORK/dry.out" 2> "$WORK/dry.err"
[ "$(wc -l < "$WORK/dry.out")" -eq "${#closure[@]}" ] || fail "dry run listed $(wc -l < "$WORK/dry.out") paths"
! srv_store --check-validity "$top" 2>/dev/null || fail "dry run copied something"

step "full push (alias from BAZEL_NIX_REMOTE, plain progress lines, GC root)"
BAZEL_NIX_REMOTE=nix-server push --root ci-main "$WORK/result" 2> "$WORK/push.err"
grep -q '^copying 50 paths' "$WORK/push.err" || { cat "$WORK/push.err"; fail "no progress lines off a terminal"; }
srv_store --check-validity "${closure[@]}" || fail "server lacks paths"
srv_store --verify-path "${closure[@]}" || fail "server contents do not verify"
[ "$(srv_store -qR "$top" | sort)" = "$(printf '%s\n' "${closure[@]}" | sort)" ] || fail "server closure differs"
# References order: the server registered every path with its references (checked by -qR above).

step "on a terminal: a one-line progress bar (paths, bytes, rate, ETA)"
if command -v script > /dev/null; then
  tty_path=$(nix-instantiate --store "$DEV_STORE" --read-write-mode --eval -E "builtins.toFile \"tty\" \"\${builtins.storePath \"$top\"}\"")
  tty_path=${tty_path//\"/}
  script -q -e -c "$(printf '%q ' "$PUSH" -F "$WORK/ssh_config" --from-store "$DEV_STORE" --to nix-server "$tty_path")" \
    /dev/null > "$WORK/tty.out" < /dev/null
  grep -q $'\r.*1/1 paths .* ETA ' "$WORK/tty.out" || { cat -v "$WORK/tty.out"; fail "no progress bar on a tty"; }
  ! grep -q '^copying ' "$WORK/tty.out" || fail "plain lines on a tty"
  srv_store --verify-path "$tty_path" || fail "path pushed on a tty does not verify"
fi

step "second push is a no-op"
push --to nix-server --json "$top" > "$WORK/noop.json"
[ "$(json_field missing < "$WORK/noop.json")" -eq 0 ] || fail "no-op push found missing paths"
[ "$(json_field copied_paths < "$WORK/noop.json")" -eq 0 ] || fail "no-op push copied paths"
[ "$(json_field bytes_sent < "$WORK/noop.json")" -eq 0 ] || fail "no-op push sent bytes"
[ "$(json_field closure_paths < "$WORK/noop.json")" -eq "${#closure[@]}" ] || fail "wrong closure size"
[ "$(json_field protocol < "$WORK/noop.json")" = "${PUSH_PROTOCOL:-daemon}" ] || fail "wrong protocol: $(json_field protocol < "$WORK/noop.json")"

step "a new path on top: only it is sent"
echo extra > "$WORK/extra"
extra=$(nix-instantiate --store "$DEV_STORE" --read-write-mode --eval -E "builtins.toFile \"extra\" \"extra \${builtins.storePath \"$top\"}\"")
extra=${extra//\"/}
push --to nix-server --json "$extra" > "$WORK/extra.json"
[ "$(json_field missing < "$WORK/extra.json")" -eq 1 ] || fail "expected exactly one missing path"
[ "$(json_field copied_paths < "$WORK/extra.json")" -eq 1 ] || fail "expected exactly one copied path"
srv_store --verify-path "$extra" || fail "extra path does not verify"

step "legacy ImportPaths mode"
small=$(nix-instantiate --store "$DEV_STORE" --read-write-mode --eval -E "builtins.toFile \"small\" \"small \${builtins.storePath \"$extra\"}\"")
small=${small//\"/}
push --to nix-server --import-paths --json "$small" > "$WORK/import.json"
[ "$(json_field copied_paths < "$WORK/import.json")" -eq 1 ] || fail "ImportPaths did not copy one path"
srv_store --verify-path "$small" || fail "ImportPaths path does not verify"

step "GC roots: set, listed, protected from the server's GC, expired"
[ -L "$ROOTS_DIR/ci-main/$(basename "$top")" ] || fail "root symlink missing"
push --to nix-server --root other "$small" 2>/dev/null
"$PUSH" -F "$WORK/ssh_config" --to nix-server roots > "$WORK/roots.out"
grep -q "^ci-main	.*$top" "$WORK/roots.out" || { cat "$WORK/roots.out"; fail "roots list lacks ci-main"; }
grep -q "^other	" "$WORK/roots.out" || fail "roots list lacks other"
"$PUSH" -F "$WORK/ssh_config" --to nix-server --json roots > "$WORK/roots.json"
[ "$(json_field roots < "$WORK/roots.json")" -eq 2 ] || fail "json roots count"
srv_store --gc > /dev/null 2>&1
srv_store --check-validity "${closure[@]}" "$small" || fail "server GC deleted rooted paths"
# Age the ci-main root, then expire roots older than an hour: only ci-main goes.
touch -d '2 hours ago' "$ROOTS_DIR/ci-main"
"$PUSH" -F "$WORK/ssh_config" --to nix-server roots --older-than 1h > "$WORK/old.out"
[ "$(cut -f1 "$WORK/old.out")" = "ci-main" ] || { cat "$WORK/old.out"; fail "--older-than 1h should list only ci-main"; }
"$PUSH" -F "$WORK/ssh_config" --to nix-server roots --older-than 1h --delete > /dev/null 2>&1
[ ! -e "$ROOTS_DIR/ci-main" ] || fail "ci-main not deleted"
[ -e "$ROOTS_DIR/other" ] || fail "other deleted"
expect_failure 2 "$PUSH" -F "$WORK/ssh_config" --to nix-server roots --delete
"$PUSH" -F "$WORK/ssh_config" --to nix-server roots --delete other > /dev/null 2>&1
[ ! -e "$ROOTS_DIR/other" ] || fail "other not deleted"
# Without roots the server's GC does collect them: the roots above were what kept them.
srv_store --gc > /dev/null 2>&1
! srv_store --check-validity "$top" 2>/dev/null || fail "GC kept an unrooted path"

echo "PASS"
