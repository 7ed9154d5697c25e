#!/usr/bin/python3
"""What the supervisor costs and what it buys, in one run (see README.md here).

Usage (as root):  /usr/bin/python3 tests/bench/supervisor_bench.py --bin build/fuse/lazystore \
                      [--runs 5] [--kills 20] [--skip recovery,in-flight,cost]

- recovery: kill -9 of the serving process, then time until a new operation (listing a
  directory never looked up before) is answered; median and max over --kills kills.
- in-flight: a cold read() whose FUSE READ the server has read and not answered (its NFS READ
  held by the fault proxy in front of nfs-ganesha) at the kill -9: time from the kill to the
  completed read (bytes checked), and per kill the requests the next server replayed and the
  replies the kernel refused, for each way of taking over (LAZYSTORE_TAKEOVER): `replay` (the
  request journal; the default), `resend` (no journal, FUSE_NOTIFY_RESEND only: Linux >= 6.9),
  `both`.
- cost: hot parallel reads (lazystore's cache full and in the page cache; the mount's own kernel
  caches cold: daemon restarted before each run), 8 readers, two workloads: a walk reading every
  file of the /usr/include and Python store paths (many small requests) and the fixture's files of
  1 MiB or more (128 KiB READs; 8 passes, the mount's pages dropped between them), with the request journal (`replay`), without it (`resend`: replies
  spliced, as before) and `supervise=false` (cloned descriptors); runs interleaved, medians.
"""

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "integration"))
import lazystore_testlib as lib  # noqa: E402
from fault_proxy import FaultProxy  # noqa: E402
from nfs_server import Ganesha  # noqa: E402

KILLED = (r"was killed by signal 9",)
LARGE_PASSES = 8  # of the large files per run


def parallel_read(files, readers=8, passes=1):
    """Reads `files` with `readers` threads; each pass after the first drops the mount's pages of
    the file first (POSIX_FADV_DONTNEED), so that every pass is served by the daemon."""
    chunks = [files[i::readers] for i in range(readers)]

    def read_all(paths):
        for n in range(passes):
            for path in paths:
                if not os.path.islink(path):
                    with open(path, "rb") as f:
                        if n:
                            os.posix_fadvise(f.fileno(), 0, 0, os.POSIX_FADV_DONTNEED)
                        while f.read(1 << 20):
                            pass

    started = time.perf_counter()
    threads = [threading.Thread(target=read_all, args=(c,)) for c in chunks]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return time.perf_counter() - started


def cpu_seconds(pid):
    """User + system CPU time of a process (all its threads) so far."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def wait_until_older_than(daemon, seconds):
    """Pacing: a server that served less than 1 s counts as a young death (crash-loop backoff)."""
    pid = daemon.server_pid()
    with open(f"/proc/{pid}/stat") as f:
        started_ticks = int(f.read().rsplit(")", 1)[1].split()[19])
    with open("/proc/uptime") as f:
        uptime = float(f.read().split()[0])
    age = uptime - started_ticks / os.sysconf("SC_CLK_TCK")
    if age < seconds:
        time.sleep(seconds - age)


def recovery(fixture, work, kills):
    name = fixture.paths["python"]
    mnt = os.path.join(work, "mnt")
    daemon = lib.Daemon(fixture.store, mnt, os.path.join(work, "cache-kill"), {},
                        allowed_stderr=KILLED).start()
    try:
        dirs = [os.path.join(mnt, name, d) for d in sorted(os.listdir(os.path.join(fixture.store, name)))
                if os.path.isdir(os.path.join(fixture.store, name, d))]
        times = []
        for i in range(kills):
            wait_until_older_than(daemon, 1.1)
            old = daemon.kill_server()
            started = time.perf_counter()
            os.listdir(dirs[i % len(dirs)])
            times.append(time.perf_counter() - started)
            daemon.wait_for_server(old)
    finally:
        daemon.stop()
    return times


def in_flight(fixture, work, kills, mode):
    export = os.path.join(work, f"export-{mode}")
    lib.copy_store(fixture.store, export)
    server = Ganesha.v4(export, os.path.join(work, f"ganesha-{mode}"))
    proxy = FaultProxy(server.port).start()
    mnt = os.path.join(work, "mnt")
    python = fixture.paths["python"]
    files = sorted((os.path.getsize(os.path.join(export, python, rel)), rel)
                   for rel in lib.regular_files(os.path.join(export, python)))
    files = [rel for size, rel in files if size >= 64 * 1024][:kills]
    rows = []
    try:
        with lib.takeover_mode(mode):
            daemon = lib.Daemon(f"nfs://127.0.0.1/store?version=4&nfsport={proxy.port}", mnt,
                                os.path.join(work, f"cache-{mode}"), {"upstream-timeout": 60},
                                allowed_stderr=KILLED).start()
        try:
            for rel in files:
                path = os.path.join(mnt, python, rel)
                expected = lib.read_file(os.path.join(export, python, rel))
                os.stat(path)
                wait_until_older_than(daemon, 1.1)
                result = {}

                def reader():
                    with open(path, "rb") as f:
                        result["data"] = f.read()

                proxy.hold_next_read()
                thread = threading.Thread(target=reader, daemon=True)
                thread.start()
                if not proxy.wait_for_held_read(30):
                    raise RuntimeError(f"{rel}: the read never reached the upstream")
                old = daemon.kill_server()
                killed = time.perf_counter()
                thread.join(60)
                done = time.perf_counter() - killed
                if thread.is_alive() or result.get("data") != expected:
                    raise RuntimeError(f"[{mode}] {rel}: the read in flight at the kill "
                                       f"{'never finished' if thread.is_alive() else 'read wrong bytes'}")
                daemon.wait_for_server(old)
                stats = daemon.stats()
                if mode == "both":  # the replays answer after the resent copies: their refusals
                    end = time.monotonic() + 10
                    while stats["refused_replies"] < stats["replayed_requests"] and time.monotonic() < end:
                        time.sleep(0.05)  # polling interval, bounded by the deadline
                        stats = daemon.stats()
                rows.append((done, stats["replayed_requests"], stats["refused_replies"]))
        finally:
            daemon.stop()
    finally:
        proxy.close()
        server.close()
    return rows


def cost(fixture, work, runs):
    names = [fixture.paths["include"], fixture.paths["python"]]
    big = [os.path.join(root, n) for top in fixture.paths.values()
           for root, _, ns in os.walk(os.path.join(fixture.store, top)) for n in ns
           if not os.path.islink(os.path.join(root, n))
           and os.path.getsize(os.path.join(root, n)) >= (1 << 20)]
    mnt = os.path.join(work, "mnt")
    cache = os.path.join(work, "cache-cost")
    sides = {"replay": ("true", "replay"), "resend": ("true", "resend"), "unsupervised": ("false", "replay")}

    def mount(side):
        supervise, mode = sides[side]
        with lib.takeover_mode(mode):
            return lib.Daemon(fixture.store, mnt, cache, {"supervise": supervise}).start()

    def through_mount(paths):
        return [os.path.join(mnt, os.path.relpath(p, fixture.store)) for p in paths]

    walk_files = [os.path.join(root, n) for top in names
                  for root, _, ns in os.walk(os.path.join(fixture.store, top)) for n in ns]
    d = mount("replay")  # fill the cache once, then every side reads it
    parallel_read(through_mount(walk_files + big))
    d.stop()
    times = {(side, load): [] for side in sides for load in ("walk", "large")}
    cpus = {key: [] for key in times}  # CPU time of the serving process
    for _ in range(runs):
        for side in sides:
            for load, files, passes in (("walk", walk_files, 1), ("large", big, LARGE_PASSES)):
                d = mount(side)
                cpu = cpu_seconds(d.serving_pid())
                times[(side, load)].append(parallel_read(through_mount(files), passes=passes))
                cpus[(side, load)].append(cpu_seconds(d.serving_pid()) - cpu)
                d.stop()
    return times, cpus, len(walk_files), len(big), sum(os.path.getsize(p) for p in big)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--bin", default=os.environ.get("LAZYSTORE_BIN", "build/fuse/lazystore"), help="the lazystore daemon")
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--kills", type=int, default=20)
    parser.add_argument("--skip", default="", help="comma-separated parts to skip")
    args = parser.parse_args()
    if not args.bin:
        parser.error("--bin or LAZYSTORE_BIN is required")
    skip = set(filter(None, args.skip.split(",")))
    os.environ["LAZYSTORE_BIN"] = os.path.abspath(args.bin)
    fixture = lib.fixture()
    work = tempfile.mkdtemp(prefix="lazystore-supervisor-bench-")
    load_before = open("/proc/loadavg").read().split()[:3]
    results = {}
    try:
        os.makedirs(os.path.join(work, "mnt"))
        if "recovery" not in skip:
            results["recovery"] = recovery(fixture, work, args.kills)
        if "in-flight" not in skip:
            results["in-flight"] = {mode: in_flight(fixture, work, args.kills, mode)
                                    for mode in ("replay", "resend", "both")}
        if "cost" not in skip:
            results["cost"] = cost(fixture, work, args.runs)
    finally:
        subprocess.run(["fusermount3", "-u", "-z", os.path.join(work, "mnt")], stderr=subprocess.DEVNULL)
        shutil.rmtree(work, ignore_errors=True)

    load_after = open("/proc/loadavg").read().split()[:3]
    print(f"\nload average {' '.join(load_before)} at start, {' '.join(load_after)} at end; "
          f"{args.kills} kills, {args.runs} interleaved runs\n")
    print("| measure | value |")
    print("|---|---|")
    if "recovery" in results:
        ms = [r * 1000 for r in results["recovery"]]
        print(f"| first new operation after kill -9 of the server | median {statistics.median(ms):.0f} ms, "
              f"max {max(ms):.0f} ms |")
    for mode, rows in results.get("in-flight", {}).items():
        ms = [r[0] * 1000 for r in rows]
        replayed = [r[1] for r in rows]
        refused = [r[2] for r in rows]
        print(f"| read in flight at the kill, completed after (`{mode}`) | median {statistics.median(ms):.0f} ms, "
              f"max {max(ms):.0f} ms; per kill: {statistics.median(replayed):g} replayed "
              f"(max {max(replayed)}), {statistics.median(refused):g} replies refused (max {max(refused)}) |")
    if "cost" in results:
        times, cpus, walk_count, big_count, big_bytes = results["cost"]
        for load, what in (("walk", f"{walk_count} files"),
                           ("large", f"{big_count} files, {LARGE_PASSES} × {big_bytes / lib.MiB:.0f} MiB")):
            med = {side: statistics.median(times[(side, load)]) for side in ("replay", "resend", "unsupervised")}
            cpu = {side: statistics.median(cpus[(side, load)]) for side in ("replay", "resend", "unsupervised")}
            print(f"| hot parallel read, {load} ({what}), 8 readers: time | journal {med['replay']:.2f} s, "
                  f"no journal {med['resend']:.2f} s, unsupervised {med['unsupervised']:.2f} s; "
                  f"journal / no journal {med['replay'] / med['resend']:.2f}× |")
            print(f"| same: CPU time of the serving process | journal {cpu['replay']:.2f} s, "
                  f"no journal {cpu['resend']:.2f} s, unsupervised {cpu['unsupervised']:.2f} s; "
                  f"journal / no journal {cpu['replay'] / max(cpu['resend'], 1e-9):.2f}× |")


if __name__ == "__main__":
    main()
