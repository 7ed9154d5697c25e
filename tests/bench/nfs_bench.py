#!/usr/bin/python3
"""lazystore over NFS vs raw libnfs, sshfs and native disk, side by side in one run (README.md here).

Usage (as root):
  /usr/bin/python3 tests/bench/nfs_bench.py [--bin build/fuse/lazystore] [--runs 3] [--json out.json]

One export directory (hard links of fixture store paths) is served by nfs-ganesha (NFSv4,
127.0.0.1) to lazystore and to a raw libnfs reader, and by a private sshd (sftp) to sshfs; the
native side reads the export directory itself. Every file read goes through one reader program,
tests/bench/nfs_raw_read.c (compiled into a temp dir at start): `nfs` mode reads with libnfs
directly, `posix` mode reads the same list of files through a mount (lazystore, sshfs) or the
export directory (native), with the same access pattern: 1 reader (`cat` of every file in order,
1 MiB reads) or 8 readers (1 MiB pieces taken by 8 threads; libnfs: 8 contexts).

Cases (median of --runs each; the sides of a case alternate inside each run):
  (a) cold read of the Python stdlib store path + the 64 MiB big.bin: lazystore (fresh mount,
      empty cache, drop_caches) vs raw libnfs (drop_caches) vs sshfs (fresh mount, drop_caches).
      Target: lazystore time <= 1.3x raw libnfs.
  (b) cold `find -printf '%s %m %l'` (lstat + readlink of every entry) of the /usr/include store
      path: lazystore (fresh mount, empty cache) vs sshfs (fresh mount). Target: lazystore faster.
      Info: a raw libnfs walk (nfs_raw_read walk: opendir + readlink, one context, sequential).
  (b') the same walk against a second ganesha on the same export that sends numeric owners
      (Only_Numeric_Owners, what the kernel's nfsd does for AUTH_SYS): libnfs 4.0 resolves each
      owner/group *name* it receives through NSS, twice per directory entry, which dominates (b).
  (c) warm read of (a)'s files: lazystore cache filled, daemon restarted, drop_caches, vs the
      export directory read natively after drop_caches. Target: >= 0.8x native throughput.
Also: upstream bytes fetched by lazystore (user.lazystore.stats) vs bytes read.

The cold path at network latency (--cases d,e; one ganesha serving NFSv3 and NFSv4 in a private
network namespace, a fault proxy there adding --rtt milliseconds to every reply; with
--before-bin, a second lazystore build, e.g. main's, is measured beside this one):
  (d) time to first lookup (`stat` of a top-level and of a deep header) and cold walk
      (`find -printf '%s %m %l'`) of the /usr/include store path, fresh mount and cache each.
  (e) W4 seq cold: `dd bs=1M` of a 256 MiB file, fresh mount and cache, vs raw libnfs reading
      the same file with the same window (JOBS contexts, one 1 MiB READ in flight each).
"""

import argparse
import json
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
SOURCE_ROOT = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, os.path.join(HERE, "..", "integration"))
import lazystore_testlib as lib  # noqa: E402
import nfs_server  # noqa: E402

DEFAULT_BIN = os.path.join(SOURCE_ROOT, "build-lead", "fuse", "lazystore")
READERS = (1, 8)


def loadavg():
    return "{:.2f} {:.2f} {:.2f}".format(*os.getloadavg())


def compile_reader(directory):
    binary = os.path.join(directory, "nfs_raw_read")
    lib.run(["cc", "-O2", "-pthread", "-o", binary, os.path.join(HERE, "nfs_raw_read.c"), "-lnfs"])
    return binary


def is_mounted(mountpoint):
    return lib.mountinfo_entry(mountpoint) is not None


def wait_for(predicate, seconds, what):
    nfs_server.wait_until(predicate, seconds, what)


class Sshd:
    """A private sshd on 127.0.0.1 (own host key, one generated client key, sftp-server)."""

    def __init__(self, work):
        self.work = work
        os.makedirs(work, mode=0o700)
        self.port = nfs_server.free_port()
        self.host_key = os.path.join(work, "host_ed25519")
        self.client_key = os.path.join(work, "client_ed25519")
        for key in (self.host_key, self.client_key):
            lib.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", key])
        shutil.copy(self.client_key + ".pub", os.path.join(work, "authorized_keys"))
        self.config = os.path.join(work, "sshd_config")
        with open(self.config, "w") as f:
            f.write(f"""Port {self.port}
ListenAddress 127.0.0.1
HostKey {self.host_key}
PidFile {work}/sshd.pid
AuthorizedKeysFile {work}/authorized_keys
PermitRootLogin prohibit-password
StrictModes no
UsePAM no
PasswordAuthentication no
KbdInteractiveAuthentication no
Subsystem sftp /usr/lib/openssh/sftp-server
LogLevel ERROR
""")
        self.created_run_dir = False
        if not os.path.isdir("/run/sshd"):  # sshd's privilege separation directory
            os.makedirs("/run/sshd", mode=0o755)
            self.created_run_dir = True
        self.log = open(os.path.join(work, "sshd.log"), "wb")
        self.process = subprocess.Popen(["/usr/sbin/sshd", "-f", self.config, "-D", "-e"],
                                        stdin=subprocess.DEVNULL, stdout=self.log, stderr=self.log)

        def up():
            if self.process.poll() is not None:
                raise RuntimeError(f"sshd exited {self.process.returncode}: {self.log_text()}")
            with socket.socket() as s:
                return s.connect_ex(("127.0.0.1", self.port)) == 0
        wait_for(up, 30, "sshd listening")

    def log_text(self):
        with open(os.path.join(self.work, "sshd.log"), errors="replace") as f:
            return f.read()[-2000:]

    def sshfs_options(self):
        return (f"IdentityFile={self.client_key},StrictHostKeyChecking=no,UserKnownHostsFile=/dev/null,"
                f"port={self.port},BatchMode=yes,LogLevel=ERROR,ro,"
                # Debian's sshfs 3.7.3-1.2~deb12u1 refuses (EPERM) symlink targets with ".." or
                # a leading "/" unless told otherwise; a Nix store is full of both.
                "no_contain_symlinks")

    def close(self):
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)
        self.process = None
        self.log.close()
        if self.created_run_dir:
            try:
                os.rmdir("/run/sshd")
            except OSError:
                pass


class Sshfs:
    """sshfs in the foreground (our own process), default caching options, a fresh mount each time."""

    def __init__(self, sshd, remote_dir, mountpoint):
        self.sshd, self.remote_dir, self.mountpoint = sshd, remote_dir, mountpoint
        self.process = None

    def mount(self):
        assert self.process is None and not is_mounted(self.mountpoint)
        self.process = subprocess.Popen(
            ["sshfs", f"root@127.0.0.1:{self.remote_dir}", self.mountpoint, "-f", "-F", "/dev/null",
             "-o", self.sshd.sshfs_options()],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)

        def up():
            if self.process.poll() is not None:
                raise RuntimeError(f"sshfs exited {self.process.returncode}: "
                                   f"{self.process.stderr.read().decode(errors='replace')}")
            return is_mounted(self.mountpoint)
        wait_for(up, 30, "sshfs mounted")

    def unmount(self):
        if self.process is None:
            return
        if is_mounted(self.mountpoint):
            subprocess.run(["fusermount3", "-u", self.mountpoint], stderr=subprocess.DEVNULL)
        try:
            self.process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout=15)
        if is_mounted(self.mountpoint):
            subprocess.run(["fusermount3", "-u", "-z", self.mountpoint], stderr=subprocess.DEVNULL)
        self.process.stderr.close()
        self.process = None


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--bin", default=os.environ.get("LAZYSTORE_BIN", DEFAULT_BIN), help="the lazystore daemon")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--work", default=None, help="scratch directory parent (default: the temp dir)")
    parser.add_argument("--json", default=None, help="also write the figures to this file")
    parser.add_argument("--cases", default="a,b,c", help="which cases: a,b,c (NFSv4, loopback) and d,e "
                        "(NFSv3 and NFSv4 at --rtt, see above)")
    parser.add_argument("--rtt", default="0,0.5", help="round trips added by the proxy in (d)/(e), ms")
    parser.add_argument("--before-bin", default=None, help="(d)/(e): another lazystore build to compare")
    parser.add_argument("--window", type=int, default=5, help="(e): raw libnfs READs in flight (MiB)")
    args = parser.parse_args()
    cases = set(args.cases.split(","))
    if cases & {"d", "e"}:
        return latency_cases(args, cases)
    if not os.access(args.bin, os.X_OK):
        parser.error(f"{args.bin} is not an executable: give the daemon with --bin or LAZYSTORE_BIN")
    if os.geteuid() != 0:
        parser.error("run as root (FUSE mounts, drop_caches, sshd, ganesha)")
    for tool in ("ganesha.nfsd", "sshfs", "/usr/sbin/sshd", "ssh-keygen", "getfattr", "cc", "fusermount3"):
        if shutil.which(tool) is None:
            parser.error(f"{tool} is missing (apt-get install nfs-ganesha nfs-ganesha-vfs sshfs "
                         "openssh-server attr gcc libnfs-dev)")
    os.environ["LAZYSTORE_BIN"] = os.path.abspath(args.bin)
    os.environ.setdefault("LAZYSTORE_FIXTURE_DIR", "/tmp/nfsbench-fixture")

    # SIGTERM/SIGHUP run the finally blocks below like Ctrl-C does.
    def interrupted(signum, _frame):
        raise KeyboardInterrupt(f"signal {signum}")
    signal.signal(signal.SIGTERM, interrupted)
    signal.signal(signal.SIGHUP, interrupted)

    load_start = loadavg()
    started = time.monotonic()
    fixture = lib.fixture()
    work = tempfile.mkdtemp(prefix="lazystore-nfsbench-", dir=args.work)
    export = os.path.join(work, "export")
    mnt = os.path.join(work, "mnt")
    ssh_mnt = os.path.join(work, "sshfs")
    for d in (export, mnt, ssh_mnt):
        os.makedirs(d)
    ganesha = numeric = sshd = daemon = sshfs = None
    rows, info, fetched = [], {}, []
    try:
        for role in ("python", "misc", "include"):
            lib.copy_store(fixture.path(role), os.path.join(export, fixture.paths[role]))
        reader = compile_reader(work)

        # (a)/(c)'s files: every regular file of the Python stdlib store path, then big.bin.
        python, misc, include = fixture.paths["python"], fixture.paths["misc"], fixture.paths["include"]
        listing = [f"{python}/{rel}" for rel in lib.regular_files(os.path.join(export, python))]
        listing.append(f"{misc}/big.bin")
        sizes = {rel: os.path.getsize(os.path.join(export, rel)) for rel in listing}
        file_list = "".join(f"{sizes[rel]}\t{rel}\n" for rel in listing)
        total_bytes = sum(sizes.values())
        include_entries = 1 + sum(len(d) + len(f) for _, d, f in os.walk(os.path.join(export, include)))

        ganesha = nfs_server.Ganesha.v4(export, os.path.join(work, "ganesha"))
        url = ganesha.url(4)
        # The same export from a second ganesha that sends numeric owners ("0", as the kernel's
        # nfsd does for AUTH_SYS by default) instead of "root@localdomain": libnfs 4.0 maps
        # every owner/group name it receives through NSS (getpwnam/getgrnam), per entry.
        numeric = nfs_server.Ganesha(export, os.path.join(work, "ganesha-numeric"), protocols=(4,))
        with open(numeric.config) as f:
            config = f.read()
        with open(numeric.config, "w") as f:
            f.write(config.replace("NFSV4 {", "NFSV4 { Allow_Numeric_Owners = true; Only_Numeric_Owners = true;"))
        numeric.start()
        numeric_url = numeric.url(4)
        sshd = Sshd(os.path.join(work, "ssh"))
        sshfs = Sshfs(sshd, export, ssh_mnt)

        def read(mode, target, readers):
            """Drop the page cache, then read the file list; returns seconds."""
            lib.drop_page_cache()
            out = lib.run([reader, mode, target, str(readers)], input=file_list)
            result = json.loads(out)
            if result["bytes"] != total_bytes:
                raise RuntimeError(f"{mode} {target}: read {result['bytes']} bytes, expected {total_bytes}")
            return result["seconds"]

        def walk(top):
            lib.drop_page_cache()
            began = time.perf_counter()
            out = lib.run(["find", top, "-printf", "%s %m %l\\n"])
            seconds = time.perf_counter() - began
            if out.count("\n") != include_entries:
                raise RuntimeError(f"find {top}: {out.count(chr(10))} entries, expected {include_entries}")
            return seconds

        def raw_walk(server_url):
            lib.drop_page_cache()
            result = json.loads(lib.run([reader, "walk", server_url, "1"], input=f"0\t{include}\n"))
            if result["files"] != include_entries:
                raise RuntimeError(f"raw walk: {result['files']} entries, expected {include_entries}")
            return result["seconds"]

        def lazystore(cache, source=None):
            nonlocal daemon
            daemon = lib.Daemon(source or url, mnt, cache, {"log-level": "warning", "upstream-timeout": 10})
            return daemon.start()

        def stop_lazystore():
            nonlocal daemon
            problems = daemon.stop(check=False)
            if problems:
                lib.log("lazystore: " + "; ".join(problems))
            daemon = None

        def lazystore_stats():
            raw = lib.run(["getfattr", "--only-values", "--absolute-names", "-n", "user.lazystore.stats", mnt])
            return json.loads(raw)

        def fresh_cache(name):
            cache = os.path.join(work, name)
            shutil.rmtree(cache, ignore_errors=True)
            return cache

        # Warm-up, not timed: the server's own metadata caches (ganesha's MDCACHE) see every
        # file and directory once, so that no side pays for them alone.
        for server_url in (url, numeric_url):
            read("nfs", server_url, 8)
            raw_walk(server_url)
        lib.log(f"setup done in {time.monotonic() - started:.0f} s (load {loadavg()}); "
                f"{len(listing)} files, {total_bytes / 1e6:.1f} MB; /usr/include path: {include_entries} entries")

        # (a) cold read.
        times = {(side, n): [] for side in ("lazystore", "libnfs", "sshfs", "native") for n in READERS}
        for run in range(args.runs):
            for n in READERS:
                lazystore(fresh_cache("cache-cold"))
                times["lazystore", n].append(read("posix", mnt, n))
                stats = lazystore_stats()
                fetched.append({"readers": n, "upstream_bytes": stats["upstream_bytes"],
                                "upstream_requests": stats["upstream_requests"],
                                "served_bytes": stats["served_bytes"], "chunk_misses": stats["chunk_misses"],
                                "upstream_connects": stats["upstream_connects"]})
                stop_lazystore()
                times["libnfs", n].append(read("nfs", url, n))
                sshfs.mount()
                times["sshfs", n].append(read("posix", ssh_mnt, n))
                sshfs.unmount()
                times["native", n].append(read("posix", export, n))
            lib.log(f"(a) run {run + 1}/{args.runs}: " + ", ".join(
                f"{side}×{n} {t[-1]:.2f} s" for (side, n), t in times.items()) + f" (load {loadavg()})")

        # (b) cold walk.
        walks = {"lazystore": [], "sshfs": [], "native": [], "libnfs": [], "lazystore numeric": [],
                 "libnfs numeric": []}
        walk_requests = []
        for run in range(args.runs):
            lazystore(fresh_cache("cache-walk"))
            walks["lazystore"].append(walk(os.path.join(mnt, include)))
            walk_requests.append(lazystore_stats()["upstream_requests"])
            stop_lazystore()
            walks["libnfs"].append(raw_walk(url))
            lazystore(fresh_cache("cache-walk"), numeric_url)
            walks["lazystore numeric"].append(walk(os.path.join(mnt, include)))
            stop_lazystore()
            walks["libnfs numeric"].append(raw_walk(numeric_url))
            sshfs.mount()
            walks["sshfs"].append(walk(os.path.join(ssh_mnt, include)))
            sshfs.unmount()
            walks["native"].append(walk(os.path.join(export, include)))
            lib.log(f"(b) run {run + 1}/{args.runs}: " + ", ".join(f"{k} {v[-1]:.2f} s" for k, v in walks.items())
                    + f" (load {loadavg()})")

        # (c) warm read: fill one cache, then restart the daemon before every run.
        warm_cache = fresh_cache("cache-warm")
        lazystore(warm_cache)
        read("posix", mnt, 8)
        stop_lazystore()
        warm = {(side, n): [] for side in ("lazystore", "native") for n in READERS}
        warm_fetched = []
        for run in range(args.runs):
            for n in READERS:
                lazystore(warm_cache)
                warm["lazystore", n].append(read("posix", mnt, n))
                warm_fetched.append(lazystore_stats()["upstream_bytes"])
                stop_lazystore()
                warm["native", n].append(read("posix", export, n))
            lib.log(f"(c) run {run + 1}/{args.runs}: " + ", ".join(
                f"{side}×{n} {t[-1]:.2f} s" for (side, n), t in warm.items()) + f" (load {loadavg()})")
    finally:
        if daemon is not None:
            daemon.kill()
        if sshfs is not None:
            sshfs.unmount()
        if sshd is not None:
            sshd.close()
        if ganesha is not None:
            ganesha.close()
        if numeric is not None:
            numeric.close()
        if not any(is_mounted(m) for m in (mnt, ssh_mnt)):
            shutil.rmtree(work, ignore_errors=True)
        else:
            lib.log(f"leaving {work}: still mounted")

    # ---- the table ----
    med = statistics.median
    mb = total_bytes / 1e6

    def row(case, ours, peer_name, peer, target=None, throughput=True, higher_is_better=False):
        o, p = med(ours), med(peer)
        ratio = (p / o) if higher_is_better else (o / p)  # throughput ratio, or time ratio
        met = ""
        if target is not None:
            met = "yes" if ((ratio >= target) if higher_is_better else (ratio <= target)) else "**no**"
        rows.append({"case": case, "lazystore_s": o, "peer": peer_name, "peer_s": p, "ratio": ratio,
                     "ratio_kind": "throughput lazystore/peer" if higher_is_better else "time lazystore/peer",
                     "target": None if target is None else ("≥ " if higher_is_better else "≤ ") + f"{target}×",
                     "met": met, "throughput": throughput, "lazystore_runs": ours, "peer_runs": peer})

    for n in READERS:
        label = "1 reader" if n == 1 else f"{n} readers"
        row(f"(a) cold read, {label}", times["lazystore", n], f"raw libnfs ({n} ctx)", times["libnfs", n], 1.3)
    for n in READERS:
        label = "1 reader" if n == 1 else f"{n} readers"
        row(f"(a) cold read, {label}", times["lazystore", n], "sshfs cold", times["sshfs", n])
    row("(b) cold find+lstat+readlink walk", walks["lazystore"], "sshfs cold", walks["sshfs"], 1.0, throughput=False)
    row("(b) cold walk (info)", walks["lazystore"], "raw libnfs walk (1 ctx, sequential)", walks["libnfs"],
        throughput=False)
    row("(b) cold walk (info)", walks["lazystore"], "native disk, drop_caches", walks["native"], throughput=False)
    row("(b') cold walk, server sends numeric owners", walks["lazystore numeric"], "sshfs cold", walks["sshfs"], 1.0,
        throughput=False)
    row("(b') cold walk, server sends numeric owners (info)", walks["lazystore numeric"],
        "raw libnfs walk, numeric owners", walks["libnfs numeric"], throughput=False)
    for n in READERS:
        label = "1 reader" if n == 1 else f"{n} readers"
        row(f"(c) warm read after restart, {label}", warm["lazystore", n], "native disk, drop_caches",
            warm["native", n], 0.8, higher_is_better=True)
    for n in READERS:
        label = "1 reader" if n == 1 else f"{n} readers"
        row(f"(a) info: lazystore cold vs native disk, {label}", times["lazystore", n], "native disk, drop_caches",
            times["native", n], higher_is_better=True)

    load_end = loadavg()
    print(f"\nlazystore over NFS: {args.runs} runs per case, medians; {os.cpu_count()} CPUs; "
          f"load average at start {load_start}, at end {load_end}; whole run {time.monotonic() - started:.0f} s")
    print(f"(a)/(c) data: {len(listing)} files, {mb:.1f} MB (Python stdlib store path + 64 MiB big.bin); "
          f"(b): /usr/include store path, {include_entries} entries")
    print("NFS: nfs-ganesha 4.3 VFS, NFSv4, 127.0.0.1; lazystore defaults (chunk 1 MiB, readahead 4, "
          "8 connections); sshfs: default caching options (dir_cache=yes) + no_contain_symlinks, "
          "fresh mount each run, sftp-server over ssh to 127.0.0.1\n")
    print("| case | lazystore | peer | peer figure | ratio | target | met |")
    print("|---|---:|---|---:|---:|---|---|")
    for r in rows:
        if r["throughput"]:
            ours = f"{mb / r['lazystore_s']:.0f} MB/s ({r['lazystore_s']:.2f} s)"
            theirs = f"{mb / r['peer_s']:.0f} MB/s ({r['peer_s']:.2f} s)"
        else:
            ours, theirs = f"{r['lazystore_s']:.2f} s", f"{r['peer_s']:.2f} s"
        kind = "thr" if r["ratio_kind"].startswith("throughput") else "time"
        print(f"| {r['case']} | {ours} | {r['peer']} | {theirs} | {r['ratio']:.2f}× {kind} | "
              f"{r['target'] or ''} | {r['met']} |")
    print("\nratio: \"time\" = lazystore time / peer time (lower is better); \"thr\" = lazystore throughput / "
          "peer throughput (higher is better).")
    up = [f["upstream_bytes"] for f in fetched]
    print(f"\nupstream bytes fetched by lazystore per cold read (user.lazystore.stats): median {int(med(up))} "
          f"(min {min(up)}, max {max(up)}) for {total_bytes} bytes read = {med(up) / total_bytes:.3f}×; "
          f"upstream requests per cold read: median {med(f['upstream_requests'] for f in fetched)}; "
          f"per cold walk: median {med(walk_requests)}; upstream bytes during warm reads: max {max(warm_fetched)}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"runs": args.runs, "load_start": load_start, "load_end": load_end, "bytes": total_bytes,
                       "files": len(listing), "include_entries": include_entries, "rows": rows,
                       "cold_read_stats": fetched, "walk_upstream_requests": walk_requests,
                       "warm_upstream_bytes": warm_fetched}, f, indent=1)


def latency_cases(args, cases):
    """(d) and (e): see the module's docstring."""
    os.environ["LAZYSTORE_BIN"] = os.path.abspath(args.bin)
    os.environ.setdefault("LAZYSTORE_FIXTURE_DIR", "/tmp/nfsbench-fixture")
    load_start = loadavg()
    fixture = lib.fixture()
    work = tempfile.mkdtemp(prefix="lazystore-nfsbench-rtt-", dir=args.work)
    export = os.path.join(work, "export")
    mnt = os.path.join(work, "mnt")
    os.makedirs(mnt)
    os.makedirs(export)
    include = fixture.paths["include"]
    lib.copy_store(fixture.path("include"), os.path.join(export, include))
    large = "6" * 32 + "-large"
    os.makedirs(os.path.join(export, large))
    big = os.path.join(export, large, "big.bin")
    with open(big, "wb") as f:
        for _ in range(256):
            f.write(os.urandom(1 << 20))
    big_size = os.path.getsize(big)
    entries = 1 + sum(len(d) + len(f) for _, d, f in os.walk(os.path.join(export, include)))
    deep = "x86_64-linux-gnu/bits/types/struct_timespec.h"
    if not os.path.exists(os.path.join(export, include, deep)):
        deep = min((os.path.relpath(os.path.join(d, f), os.path.join(export, include))
                    for d, _, fs in os.walk(os.path.join(export, include)) for f in fs),
                   key=lambda rel: (-rel.count("/"), rel))
    reader = compile_reader(work)
    bins = {"after": os.path.abspath(args.bin)}
    if args.before_bin:
        bins["before"] = os.path.abspath(args.before_bin)
    rtts = [float(x) for x in args.rtt.split(",")]
    server = proxy = daemon = None
    results = []
    try:
        server = nfs_server.Ganesha.v3(export, os.path.join(work, "ganesha"))
        proxy = server.fault_proxy()

        def url(version, rtt):
            return server.url(version, nfsport=proxy.port)

        def mount(binary, version, rtt):
            nonlocal daemon
            cache = os.path.join(work, "cache")
            shutil.rmtree(cache, ignore_errors=True)
            os.environ["LAZYSTORE_BIN"] = binary
            daemon = nfs_server.NetnsDaemon(server, url(version, rtt), mnt, cache,
                                            {"log-level": "warning", "upstream-timeout": 30})
            daemon.start()
            return daemon

        def unmount():
            nonlocal daemon
            problems = daemon.stop(check=False)
            if problems:
                lib.log("lazystore: " + "; ".join(problems))
            daemon = None

        def timed(function):
            began = time.perf_counter()
            function()
            return time.perf_counter() - began

        def walk():
            out = lib.run(["find", os.path.join(mnt, include), "-printf", "%s %m %l\\n"])
            if out.count("\n") != entries:
                raise RuntimeError(f"find: {out.count(chr(10))} entries, expected {entries}")

        for version in (3, 4):
            for rtt in rtts:
                proxy.delay(rtt)
                figures = {}
                for run in range(args.runs):
                    for side, binary in bins.items():
                        if "d" in cases:
                            lib.drop_page_cache()
                            mount(binary, version, rtt)
                            figures.setdefault((side, "first lookup, top"), []).append(
                                timed(lambda: os.stat(os.path.join(mnt, include, "stdio.h"))))
                            figures.setdefault((side, "first lookup, deep"), []).append(
                                timed(lambda: os.stat(os.path.join(mnt, include, deep))))
                            unmount()
                            lib.drop_page_cache()
                            mount(binary, version, rtt)
                            figures.setdefault((side, "cold walk"), []).append(timed(walk))
                            unmount()
                        if "e" in cases:
                            lib.drop_page_cache()
                            mount(binary, version, rtt)
                            figures.setdefault((side, "W4 seq cold"), []).append(timed(lambda: lib.run(
                                ["dd", f"if={os.path.join(mnt, large, 'big.bin')}", "of=/dev/null", "bs=1M",
                                 "status=none"])))
                            unmount()
                    if "e" in cases:
                        lib.drop_page_cache()
                        out = lib.run(server.netns_argv([reader, "nfs", url(version, rtt), str(args.window)]),
                                      input=f"{big_size}\t{large}/big.bin\n")
                        figures.setdefault(("raw libnfs", "W4 seq cold"), []).append(json.loads(out)["seconds"])
                    lib.log(f"NFSv{version} rtt +{rtt} ms run {run + 1}: " + ", ".join(
                        f"{side} {what} {v[-1]:.3f} s" for (side, what), v in figures.items()) + f" (load {loadavg()})")
                results.append({"version": version, "rtt_ms": rtt,
                                "figures": {f"{side}: {what}": v for (side, what), v in figures.items()}})
    finally:
        if daemon is not None:
            daemon.kill()
        if proxy is not None:
            proxy.close()
        if server is not None:
            server.close()
        if not is_mounted(mnt):
            shutil.rmtree(work, ignore_errors=True)
        else:
            lib.log(f"leaving {work}: still mounted")
    med = statistics.median
    load_end = loadavg()
    print(f"\nlazystore cold path over NFS at added round trips: {args.runs} runs, medians; {os.cpu_count()} CPUs; "
          f"load average at start {load_start}, at end {load_end}")
    print(f"/usr/include store path: {entries} entries, deep header {deep}; W4: {big_size >> 20} MiB, dd bs=1M; "
          f"raw libnfs window {args.window} x 1 MiB READs")
    print("\n| NFS | +RTT | case | " + " | ".join(bins) + " | " + (" before/after |" if "before" in bins else "")
          + (" raw libnfs | after/raw thr |" if "e" in cases else ""))
    print("|---|---:|---|" + "---:|" * (len(bins) + ("before" in bins) + 2 * ("e" in cases)))
    for r in results:
        whats = sorted({k.split(": ", 1)[1] for k in r["figures"]})
        for what in whats:
            row = [f"v{r['version']}", f"{r['rtt_ms']} ms", what]
            vals = {side: med(r["figures"][f"{side}: {what}"]) for side in bins if f"{side}: {what}" in r["figures"]}
            row += [f"{vals[side]:.3f} s" if side in vals else "" for side in bins]
            if "before" in bins:
                row.append(f"{vals['before'] / vals['after']:.2f}×" if "before" in vals else "")
            if "e" in cases:
                raw = r["figures"].get(f"raw libnfs: {what}")
                row.append(f"{med(raw):.3f} s" if raw else "")
                row.append(f"{med(raw) / vals['after']:.2f}×" if raw else "")
            print("| " + " | ".join(row) + " |")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"runs": args.runs, "load_start": load_start, "load_end": load_end, "entries": entries,
                       "deep": deep, "results": results}, f, indent=1)


if __name__ == "__main__":
    main()
