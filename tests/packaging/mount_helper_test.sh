#!/bin/bash
# `mount -t fuse.lazystore SOURCE MNT -o …` and an fstab line (`mount -T FSTAB`) through
# mount.fuse3, in a private mount namespace. mount.fuse3 runs the helper `lazystore` from a fixed
# PATH, so inside the namespace a directory holding it is bind-mounted over /usr/local/sbin and
# /usr/local/bin. Never touches the host's /nix/store or its mount table.
set -euo pipefail
: "${LAZYSTORE:?}" "${LAZYSTORE_CTL:?}"
[[ $EUID == 0 ]] || { echo "SKIP: not root"; exit 77; }
for tool in mount.fuse3 fusermount3 unshare; do
  command -v $tool >/dev/null || { echo "SKIP: no $tool"; exit 77; }
done
[[ -e /dev/fuse ]] || { echo "SKIP: no /dev/fuse"; exit 77; }

work=$(mktemp -d /tmp/lazystore-mount-helper.XXXXXX)
trap 'rm -rf "$work"' EXIT
hash=0123456789abcdfghijklmnpqrsvwxy
name=${hash}z-greeting
mkdir -p "$work/store/$name/bin" "$work/bin" "$work/mnt1" "$work/mnt2"
echo "hello through mount.fuse3" > "$work/store/$name/message"
ln -s "$LAZYSTORE" "$work/bin/lazystore"
cat > "$work/fstab" <<FSTAB
# a line as in /etc/fstab (defaults add rw,suid,dev: lazystore forces ro,nosuid,nodev)
$work/store $work/mnt2 fuse.lazystore defaults,_netdev,allow_other,cache=$work/cache2,negative-timeout=0.5 0 0
FSTAB

export work name LAZYSTORE_CTL
unshare --mount --propagation private bash -euo pipefail -c '
  cleanup() { for m in "$work/mnt1" "$work/mnt2"; do fusermount3 -u -z "$m" 2>/dev/null || true; done; }
  trap cleanup EXIT
  mount --bind "$work/bin" /usr/local/sbin
  mount --bind "$work/bin" /usr/local/bin

  check_mount() {  # MNT CACHE
    local mnt=$1 cache=$2 line
    line=$(awk -v m="$mnt" "\$5 == m" /proc/self/mountinfo | tail -1)
    [[ -n $line ]] || { echo "FAIL: $mnt is not mounted"; exit 1; }
    [[ $line == *" - fuse.lazystore "* ]] || { echo "FAIL: wrong type: $line"; exit 1; }
    local opts; opts=$(awk "{print \$6}" <<<"$line")
    for o in ro nosuid nodev; do
      [[ ,$opts, == *,$o,* ]] || { echo "FAIL: $o missing in $opts"; exit 1; }
    done
    [[ $(cat "$mnt/$name/message") == "hello through mount.fuse3" ]] || { echo "FAIL: content"; exit 1; }
    "$LAZYSTORE_CTL" --cache "$cache" stats --json | grep -q "\"served_bytes\":[1-9]" \
      || { echo "FAIL: lazystore-ctl stats"; exit 1; }
  }
  unmount_and_wait() {  # MNT CACHE: the daemon exits and releases its cache lock
    fusermount3 -u "$1"
    for _ in $(seq 1 300); do
      flock -n "$2/lock" true && return 0
      sleep 0.1  # polling interval, bounded by the loop
    done
    echo "FAIL: daemon of $1 still running 30 s after unmounting"; exit 1
  }

  mount -t fuse.lazystore "$work/store" "$work/mnt1" -o "cache=$work/cache1,allow_other"
  check_mount "$work/mnt1" "$work/cache1"
  unmount_and_wait "$work/mnt1" "$work/cache1"
  echo "ok: mount -t fuse.lazystore"

  mount -T "$work/fstab" "$work/mnt2"
  check_mount "$work/mnt2" "$work/cache2"
  unmount_and_wait "$work/mnt2" "$work/cache2"
  echo "ok: mount -T fstab (fuse.lazystore line with defaults,_netdev)"
'
