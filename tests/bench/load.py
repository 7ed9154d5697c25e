#!/usr/bin/python3
"""Load: many concurrent readers over a mixed workload against a real NFS server (nfs-ganesha,
NFSv4 on 127.0.0.1) through a mounted lazystore, from a cold start (empty cache, fresh mount,
page cache dropped). Every answer is compared with the export: bytes, sizes, listings, targets.

    /usr/bin/python3 tests/bench/load.py --bin BUILD/fuse/lazystore [--readers 64] [--seconds 60]
                                         [--processes 8] [--json out.json]

Operations (each reader picks one at random per step, weights in OPS):
  stat       lstat of a random path (file, directory or symlink) of the whole store: type and size
  readdir    listing of a random directory: the sorted names
  small      whole read of a random file below 256 KiB
  seq        sequential 1 MiB reads of 8 MiB of a large file from a random offset
  random     16 preads of 4 KiB–128 KiB at random offsets of a large file
  readlink   a random symlink's target
  many-open  64 random files opened at once, 4 KiB read from each, then all closed
Large-file reads drop the kernel's pages of the file first (POSIX_FADV_DONTNEED), so the daemon
serves them (its cache, or the upstream).

Prints (and writes with --json) ops per kind, ops/s, errors, wrong answers, bytes compared, the
daemon's RSS (sampled every 0.5 s from /proc/PID/status; peak = VmHWM) and its counters.
`tests/integration/test_load.py` runs a short version in the meson suite.
"""

import argparse
import json
import multiprocessing
import os
import random
import stat
import sys
import tempfile
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "integration"))
import lazystore_testlib as lib  # noqa: E402
from nfs_server import Ganesha  # noqa: E402

MiB = 1 << 20
OPS = {"stat": 30, "readdir": 10, "small": 25, "seq": 5, "random": 10, "readlink": 10, "many-open": 2}
LARGE = 1 * MiB  # files at least this big get sequential and random reads
SMALL = 256 * 1024


class Catalog:
    """What the export holds, for picking operations and checking answers."""

    def __init__(self, export, names):
        self.export = export
        self.files, self.small, self.large, self.dirs, self.links, self.all = [], [], [], [], [], []
        for name in names:
            top = os.path.join(export, name)
            if not os.path.isdir(top) or os.path.islink(top):
                continue
            for dirpath, dirnames, filenames in os.walk(top):
                rel_dir = os.path.relpath(dirpath, export)
                self.dirs.append(rel_dir)
                for entry in dirnames + filenames:
                    rel = os.path.join(rel_dir, entry)
                    st = os.lstat(os.path.join(export, rel))
                    self.all.append(rel)
                    if stat.S_ISLNK(st.st_mode):
                        self.links.append(rel)
                    elif stat.S_ISREG(st.st_mode):
                        self.files.append(rel)
                        if st.st_size < SMALL:
                            self.small.append(rel)
                        if st.st_size >= LARGE:
                            self.large.append(rel)


def pread_all(fd, length, offset):
    chunks = []
    while length > 0:
        data = os.pread(fd, length, offset)
        if not data:
            break
        chunks.append(data)
        length -= len(data)
        offset += len(data)
    return b"".join(chunks)


class Reader:
    def __init__(self, mount, catalog, seed, counts):
        self.mount = mount
        self.catalog = catalog
        self.rng = random.Random(seed)
        self.counts = counts

    def both(self, rel):
        return os.path.join(self.mount, rel), os.path.join(self.catalog.export, rel)

    def step(self):
        ops, weights = zip(*OPS.items())
        op = self.rng.choices(ops, weights)[0]
        try:
            problem, nbytes = getattr(self, "op_" + op.replace("-", "_"))()
        except OSError as e:
            self.counts["errors"] += 1
            if len(self.counts["error_samples"]) < 10:
                self.counts["error_samples"].append(f"{op}: {e}")
            return
        self.counts["ops"][op] = self.counts["ops"].get(op, 0) + 1
        self.counts["bytes"] += nbytes
        if problem:
            self.counts["wrong"] += 1
            if len(self.counts["wrong_samples"]) < 10:
                self.counts["wrong_samples"].append(f"{op}: {problem}")

    def op_stat(self):
        rel = self.rng.choice(self.catalog.all)
        mine, theirs = self.both(rel)
        a, b = os.lstat(mine), os.lstat(theirs)
        if stat.S_IFMT(a.st_mode) != stat.S_IFMT(b.st_mode):
            return f"{rel}: type differs", 0
        if stat.S_ISREG(a.st_mode) and a.st_size != b.st_size:
            return f"{rel}: size {a.st_size} != {b.st_size}", 0
        return None, 0

    def op_readdir(self):
        rel = self.rng.choice(self.catalog.dirs)
        mine, theirs = self.both(rel)
        if sorted(os.listdir(mine)) != sorted(os.listdir(theirs)):
            return f"{rel}: listing differs", 0
        return None, 0

    def op_small(self):
        rel = self.rng.choice(self.catalog.small)
        mine, theirs = self.both(rel)
        got = lib.read_file(mine)
        if got != lib.read_file(theirs):
            return f"{rel}: bytes differ", len(got)
        return None, len(got)

    def _large(self, pieces):
        rel = self.rng.choice(self.catalog.large)
        mine, theirs = self.both(rel)
        fd = os.open(mine, os.O_RDONLY)
        src = os.open(theirs, os.O_RDONLY)
        try:
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
            size = os.fstat(src).st_size
            total = 0
            for offset, length in pieces(size):
                got = pread_all(fd, length, offset)
                if got != pread_all(src, length, offset):
                    return f"{rel} at {offset}+{length}: bytes differ", total + len(got)
                total += len(got)
            return None, total
        finally:
            os.close(fd)
            os.close(src)

    def op_seq(self):
        def pieces(size):
            start = self.rng.randrange(0, max(1, size - 8 * MiB)) // MiB * MiB
            return [(start + i * MiB, MiB) for i in range(8) if start + i * MiB < size]
        return self._large(pieces)

    def op_random(self):
        def pieces(size):
            return [(self.rng.randrange(0, size), self.rng.choice((4096, 16384, 65536, 131072)))
                    for _ in range(16)]
        return self._large(pieces)

    def op_readlink(self):
        rel = self.rng.choice(self.catalog.links)
        mine, theirs = self.both(rel)
        if os.readlink(mine) != os.readlink(theirs):
            return f"{rel}: target differs", 0
        return None, 0

    def op_many_open(self):
        rels = self.rng.sample(self.catalog.files, min(64, len(self.catalog.files)))
        fds = []
        try:
            for rel in rels:
                fds.append(os.open(os.path.join(self.mount, rel), os.O_RDONLY))
            total = 0
            for rel, fd in zip(rels, fds):
                got = os.pread(fd, 4096, 0)
                with open(os.path.join(self.catalog.export, rel), "rb") as f:
                    if got != f.read(4096):
                        return f"{rel}: first 4 KiB differ", total
                total += len(got)
            return None, total
        finally:
            for fd in fds:
                os.close(fd)


def _process(mount, catalog, threads, seed, seconds, results):
    """One worker process: `threads` readers until the deadline; puts its counts on the queue."""
    deadline = time.monotonic() + seconds
    counts = {"ops": {}, "errors": 0, "wrong": 0, "bytes": 0, "error_samples": [], "wrong_samples": []}
    lock = threading.Lock()

    def run(i):
        mine = {"ops": {}, "errors": 0, "wrong": 0, "bytes": 0, "error_samples": [], "wrong_samples": []}
        reader = Reader(mount, catalog, seed * 1000 + i, mine)
        while time.monotonic() < deadline:
            reader.step()
        with lock:
            for op, n in mine["ops"].items():
                counts["ops"][op] = counts["ops"].get(op, 0) + n
            for key in ("errors", "wrong", "bytes"):
                counts[key] += mine[key]
            counts["error_samples"] += mine["error_samples"][:3]
            counts["wrong_samples"] += mine["wrong_samples"][:3]

    workers = [threading.Thread(target=run, args=(i,)) for i in range(threads)]
    for t in workers:
        t.start()
    for t in workers:
        t.join()
    results.put(counts)


def rss_kib(pid):
    """(VmRSS, VmHWM) of a process in KiB."""
    values = {}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            key, _, rest = line.partition(":")
            if key in ("VmRSS", "VmHWM"):
                values[key] = int(rest.split()[0])
    return values.get("VmRSS", 0), values.get("VmHWM", 0)


def run_load(daemon_pid, mount, catalog, readers, seconds, processes):
    """Runs the workload; returns the result dict (ops, errors, wrong, bytes, RSS, ops/s)."""
    processes = max(1, min(processes, readers))
    per = [readers // processes + (1 if i < readers % processes else 0) for i in range(processes)]
    results = multiprocessing.get_context("fork").Queue()
    samples = []
    stop = threading.Event()

    def sample():
        while not stop.is_set():
            try:
                samples.append(rss_kib(daemon_pid)[0])
            except OSError:
                break
            stop.wait(0.5)

    sampler = threading.Thread(target=sample)
    sampler.start()
    started = time.monotonic()
    children = [multiprocessing.get_context("fork").Process(
        target=_process, args=(mount, catalog, n, i + 1, seconds, results)) for i, n in enumerate(per)]
    for c in children:
        c.start()
    parts = [results.get(timeout=seconds + 600) for _ in children]
    for c in children:
        c.join()
    elapsed = time.monotonic() - started
    stop.set()
    sampler.join()
    rss_end, rss_peak = rss_kib(daemon_pid)
    total = {"ops": {}, "errors": 0, "wrong": 0, "bytes": 0, "error_samples": [], "wrong_samples": []}
    for part in parts:
        for op, n in part["ops"].items():
            total["ops"][op] = total["ops"].get(op, 0) + n
        for key in ("errors", "wrong", "bytes"):
            total[key] += part[key]
        total["error_samples"] += part["error_samples"]
        total["wrong_samples"] += part["wrong_samples"]
    ops = sum(total["ops"].values())
    total.update({"readers": readers, "processes": processes, "seconds": round(elapsed, 1),
                  "total_ops": ops, "ops_per_second": round(ops / elapsed, 1),
                  "rss_peak_kib": max([rss_peak] + samples), "rss_end_kib": rss_end,
                  "rss_samples": len(samples)})
    return total


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--bin", default=os.environ.get("LAZYSTORE_BIN", "build/fuse/lazystore"))
    parser.add_argument("--readers", type=int, default=64)
    parser.add_argument("--seconds", type=float, default=60)
    parser.add_argument("--processes", type=int, default=8)
    parser.add_argument("--json")
    args = parser.parse_args()
    os.environ["LAZYSTORE_BIN"] = os.path.abspath(args.bin)
    fixture = lib.fixture()
    with tempfile.TemporaryDirectory(prefix="lazystore-load-") as work:
        export = fixture.store  # exported read-only as it is
        server = Ganesha.v4(export, os.path.join(work, "ganesha"))
        mnt = os.path.join(work, "mnt")
        os.makedirs(mnt)
        daemon = lib.Daemon(server.url(4), mnt, os.path.join(work, "cache"), {"upstream-timeout": 10})
        try:
            lib.drop_page_cache()
            daemon.start()
            catalog = Catalog(export, sorted(fixture.store_paths()))
            result = run_load(daemon.serving_pid(), mnt, catalog, args.readers, args.seconds, args.processes)
            result["daemon_stats"] = daemon.stats()
            result["entries"] = len(catalog.all)
        finally:
            daemon.stop(check=False)
            server.close()
    print(f"{result['readers']} readers ({result['processes']} processes), {result['seconds']} s, cold start, "
          f"{result['entries']} entries in the store")
    print(f"ops {result['total_ops']} ({result['ops_per_second']}/s): "
          + ", ".join(f"{k} {v}" for k, v in sorted(result['ops'].items())))
    print(f"errors {result['errors']}, wrong answers {result['wrong']}, bytes compared {result['bytes']}")
    print(f"daemon RSS: peak {result['rss_peak_kib'] / 1024:.1f} MiB, end {result['rss_end_kib'] / 1024:.1f} MiB "
          f"({result['rss_samples']} samples)")
    s = result["daemon_stats"]
    print(f"daemon: upstream_requests {s['upstream_requests']}, upstream_bytes {s['upstream_bytes']}, "
          f"chunk_misses {s['chunk_misses']}, chunk_hits {s['chunk_hits']}, errors {s['errors']}")
    for line in result["error_samples"] + result["wrong_samples"]:
        print("  " + line)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(result, f, indent=1)
    return 0 if result["errors"] == 0 and result["wrong"] == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
