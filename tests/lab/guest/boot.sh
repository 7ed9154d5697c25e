#!/bin/bash
# PID 1 of the lab guest (after /init): mounts, modules, the store disk, the kernel NFS server
# exporting it with the seed's options, netem on lo, then the command of /lab/command. Its exit
# status goes to $LAB_OUT/status; then the guest powers off. tests/lab/README.md has the details.
# (/lab is a copy made at boot: editing the checkout's boot.sh cannot change a running guest.)
set -u
export PATH=/lab/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
export HOME=/root LC_ALL=C.UTF-8
# shellcheck source=/dev/null
. /lab/params # LAB_TIMEOUT, LAB_RTT_MS, LAB_EXPORT_LINE, LAB_NFSD_THREADS, LAB_GRACE

# devtmpfs has no /dev/fd (bash's process substitution needs it).
[ -e /dev/fd ] || ln -s /proc/self/fd /dev/fd
ln -sf /proc/self/fd/0 /dev/stdin
ln -sf /proc/self/fd/1 /dev/stdout
ln -sf /proc/self/fd/2 /dev/stderr

TEE_PID=
poweroff_now() {
    if [ -n "$TEE_PID" ]; then # let tee write the last lines to the share
        exec >/dev/console 2>&1
        wait "$TEE_PID"
    fi
    sync
    echo o >/proc/sysrq-trigger
    read -r -t 30 <>/lab/idle # waits (nothing writes the fifo) until the power is off
}
trap poweroff_now EXIT

log() { echo "lab-boot: $* ($(cut -d' ' -f1 /proc/uptime) s)"; }
die() {
    log "FAILED: $*"
    echo "boot: $*" >"$LAB_OUT/boot-failure" 2>/dev/null
    exit 1
}

export LAB_OUT=/lab/out
mount -t 9p -o trans=virtio,version=9p2000.L,msize=262144 out "$LAB_OUT" || die "cannot mount the out share"
mkfifo /lab/idle
exec > >(tee -a "$LAB_OUT/guest.log") 2>&1
TEE_PID=$!

mount -t tmpfs -o mode=0755 tmpfs /run
mount -t tmpfs -o mode=0755 tmpfs /var/lib/nfs
mkdir -p /run/rpcbind /run/rpc_pipefs /var/lib/nfs/v4recovery /var/lib/nfs/sm /var/lib/nfs/sm.bak /srv
: >/var/lib/nfs/etab
: >/var/lib/nfs/rmtab
ip link set lo up
hostname lab-guest

modprobe -a virtio_blk ext4 fuse nfsd nfs nfsv3 nfsv4 sch_netem || die "modprobe failed"
mount -t fusectl fusectl /sys/fs/fuse/connections
for _ in $(seq 100); do [ -b /dev/vda ] && [ -b /dev/vdb ] && break; sleep 0.1; done
[ -b /dev/vda ] || die "no store disk (/dev/vda)"
[ -b /dev/vdb ] || die "no scratch disk (/dev/vdb)"
# The disk is qemu's snapshot of the store image: writable here, the image itself is never changed.
mount -o rw /dev/vda /srv || die "cannot mount the store disk"
[ -d /srv/nix/store ] || die "the store disk has no /nix/store"
# The scratch disk (an empty ext4 file system): caches and work files of the command.
mkdir -p /lab/scratch
mount /dev/vdb /lab/scratch || die "cannot mount the scratch disk"

log "kernel $(uname -r), $(nproc) CPUs, $(awk '/MemTotal/ {print int($2/1024)}' /proc/meminfo) MiB"

# The kernel NFS server, as nfs-kernel-server's init script starts it.
mount -t rpc_pipefs sunrpc /run/rpc_pipefs
mount -t nfsd nfsd /proc/fs/nfsd
echo "$LAB_EXPORT_LINE" >/etc/exports
rpcbind -w || die "rpcbind"
rpc.statd --no-notify || die "rpc.statd"
exportfs -r || die "exportfs"
rpc.mountd || die "rpc.mountd"
rpc.nfsd --grace-time "$LAB_GRACE" --lease-time "$LAB_GRACE" "$LAB_NFSD_THREADS" || die "rpc.nfsd"
if [ "$LAB_RTT_MS" != 0 ]; then
    tc qdisc add dev lo root netem delay "$(awk -v r="$LAB_RTT_MS" 'BEGIN { print r / 2 }')ms" ||
        die "tc netem"
fi
log "NFS server up: $(tr '\n' ' ' </etc/exports)"
log "command starts"

# The command, under the guest's own timeout (the host kills qemu a little later).
mapfile -t argv </lab/command
timeout -k 10 "$LAB_TIMEOUT" /usr/bin/env "${argv[@]}"
status=$?
[ $status = 124 ] && log "the command timed out after $LAB_TIMEOUT s"
log "command exited $status"
echo $status >"$LAB_OUT/status"
dmesg >"$LAB_OUT/dmesg.txt"
