"""Helpers for commands that run inside the lab guest (tests/lab/README.md, "Inside the guest").

The guest's boot script has already mounted the store disk at /srv, started the kernel NFS
server (rpcbind, rpc.statd, rpc.mountd, rpc.nfsd) exporting LAB_EXPORT with LAB_EXPORT_LINE,
and set netem on lo when asked. These helpers change that state and observe the kernel side.
"""

import errno
import json
import os
import subprocess
import time

EXPORT = os.environ.get("LAB_EXPORT", "/srv/nix/store")
SERVER = os.environ.get("LAB_SERVER", "127.0.0.1")
OUT = os.environ.get("LAB_OUT", "/lab/out")
SCRATCH = os.environ.get("LAB_SCRATCH", "/lab/scratch")
SOURCE_V3 = os.environ.get("LAB_SOURCE_V3", "127.0.0.1:/srv/nix/store")
SOURCE_V4 = os.environ.get("LAB_SOURCE_V4", "nfs://127.0.0.1/srv/nix/store?version=4")
EXPORT_LINE = os.environ.get("LAB_EXPORT_LINE", "")
NFSD_THREADS = 8


def in_guest():
    return os.environ.get("LAB_GUEST") == "1"


def run(argv, check=True, **kwargs):
    result = subprocess.run(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, **kwargs)
    if check and result.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)} exited {result.returncode}: {result.stdout.strip()}")
    return result.stdout


def manifest():
    """{role: store path name} of the store disk (written by the host next to nix/store)."""
    with open(os.path.join(os.path.dirname(os.path.dirname(EXPORT)), "lab-manifest.json")) as f:
        return json.load(f)["paths"]


def wait_until(predicate, deadline, interval=0.05):
    """True once predicate() is true, False when `deadline` seconds passed first."""
    end = time.monotonic() + deadline
    while True:
        if predicate():
            return True
        if time.monotonic() > end:
            return False
        time.sleep(interval)  # polling interval, bounded by the deadline


# ---------------------------------------------------------------------------------------------
# The kernel NFS server
# ---------------------------------------------------------------------------------------------

def nfsd_threads():
    with open("/proc/fs/nfsd/threads") as f:
        return int(f.read().strip() or 0)


def stop_server():
    """`rpc.nfsd 0`: every nfsd thread ends, port 2049 closes (mountd and rpcbind stay)."""
    run(["rpc.nfsd", "0"])
    if not wait_until(lambda: nfsd_threads() == 0, 30):
        raise RuntimeError("nfsd threads still running 30 s after rpc.nfsd 0")


def start_server(threads=NFSD_THREADS, grace_seconds=10, lease_seconds=10):
    """`rpc.nfsd N`. A (re)started server is in its NFSv4 grace period for grace_seconds
    (Debian's default: 90 s, the lease time): clients may reclaim state, no new OPEN."""
    run(["rpc.nfsd", "--grace-time", str(grace_seconds), "--lease-time", str(lease_seconds), str(threads)])
    if not wait_until(lambda: nfsd_threads() == threads, 30):
        raise RuntimeError(f"nfsd has not {threads} threads 30 s after rpc.nfsd {threads}")


def end_grace(deadline=30):
    """Ends the NFSv4 grace period now (as nfsdcld does once no client can reclaim). The file
    answers EBUSY while nfsd has no service up (just after rpc.nfsd started its threads)."""
    def ended():
        if not in_grace():
            return True
        try:
            with open("/proc/fs/nfsd/v4_end_grace", "w") as f:
                f.write("Y")
        except OSError as e:
            if e.errno != errno.EBUSY:
                raise
            return False
        return not in_grace()
    if not wait_until(ended, deadline, interval=0.2):
        raise RuntimeError(f"the NFSv4 grace period did not end within {deadline} s")


def in_grace():
    with open("/proc/fs/nfsd/v4_end_grace") as f:
        return f.read().strip() == "N"


def export_options():
    """The options exportfs reports for the export ({option: True or value}), from etab."""
    with open("/var/lib/nfs/etab") as f:
        for line in f:
            path, _, rest = line.strip().partition("\t")
            if path == EXPORT:
                options = rest[rest.index("(") + 1:rest.rindex(")")]
                return {k: (v or True) for k, _, v in (o.partition("=") for o in options.split(","))}
    raise RuntimeError(f"{EXPORT} is not exported: {open('/var/lib/nfs/etab').read()!r}")


def reexport(options):
    """Exports EXPORT to 127.0.0.1 with `options` instead (kernel caches flushed)."""
    run(["exportfs", "-u", f"127.0.0.1:{EXPORT}"])
    run(["exportfs", "-o", options, f"127.0.0.1:{EXPORT}"])
    run(["exportfs", "-f"])


def restore_export():
    """Back to /etc/exports (the seed's line)."""
    run(["exportfs", "-r"])
    run(["exportfs", "-f"])


# ---------------------------------------------------------------------------------------------
# The kernel side of a FUSE mount, the network, the page cache
# ---------------------------------------------------------------------------------------------

def fuse_connection(mountpoint):
    """/sys/fs/fuse/connections/N of a FUSE mount (N is the minor of its anonymous device)."""
    return f"/sys/fs/fuse/connections/{os.minor(os.stat(mountpoint).st_dev)}"


def fuse_waiting(connection):
    """Requests the kernel has sent to the daemon and not yet had answered."""
    with open(os.path.join(connection, "waiting")) as f:
        return int(f.read().strip())


def abort_fuse(connection):
    """Ends the connection: every waiting request fails (ECONNABORTED), the mount is dead."""
    with open(os.path.join(connection, "abort"), "w") as f:
        f.write("1")


def set_rtt(ms):
    """netem on lo: `ms` of round trip (half each way); 0 removes it."""
    run(["tc", "qdisc", "del", "dev", "lo", "root"], check=False)
    if ms:
        run(["tc", "qdisc", "add", "dev", "lo", "root", "netem", "delay", f"{ms / 2:g}ms"])


def drop_caches():
    os.sync()
    with open("/proc/sys/vm/drop_caches", "w") as f:
        f.write("3\n")


def process_states(pids):
    """{pid: (state, wchan)} of the processes or threads given (to describe a hang)."""
    out = {}
    for pid in pids:
        try:
            with open(f"/proc/{pid}/stat") as f:
                state = f.read().rsplit(")", 1)[1].split()[0]
            with open(f"/proc/{pid}/wchan") as f:
                out[pid] = (state, f.read().strip())
        except OSError:
            pass
    return out
