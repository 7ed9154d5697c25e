#!/bin/bash
# packaging/systemd: nix-store.mount passes systemd-analyze verify, and the tmpfiles snippet
# creates the cache directory root-only (applied to a throw-away --root, never to this host).
set -euo pipefail
SRC=${SOURCE_ROOT:?}/packaging/systemd
command -v systemd-analyze >/dev/null || { echo "SKIP: no systemd-analyze"; exit 77; }
work=$(mktemp -d /tmp/lazystore-systemd-test.XXXXXX)
trap 'rm -rf "$work"' EXIT

# The unit's file name must say where it mounts; verify it as it would be installed.
cp "$SRC/nix-store.mount" "$work/nix-store.mount"
# --man=no: the man pages are installed by the Debian package, not on this build machine.
out=$(systemd-analyze verify --man=no "$work/nix-store.mount" 2>&1) || { echo "$out"; exit 1; }
if [[ -n $out ]]; then echo "systemd-analyze verify complained:"; echo "$out"; exit 1; fi
[[ $(systemd-escape --path --suffix=mount /nix/store) == nix-store.mount ]]
grep -qx 'Type=fuse.lazystore' "$SRC/nix-store.mount"
grep -qx 'Where=/nix/store' "$SRC/nix-store.mount"

if command -v systemd-tmpfiles >/dev/null; then
  systemd-tmpfiles --create --root="$work/root" "$SRC/lazystore.tmpfiles"
  [[ $(stat -c '%a %U' "$work/root/var/cache/lazystore") == "700 root" ]]
fi
echo "ok: nix-store.mount verifies, tmpfiles creates /var/cache/lazystore 0700"
