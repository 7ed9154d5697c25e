#!/usr/bin/python3
"""What the supervisor costs and what it buys, in one run (see README.md here).

Usage (as root):  /usr/bin/python3 tests/bench/supervisor_bench.py --bin build/fuse/lazystore [--runs 5] [--kills 20]

- recovery: kill -9 of the serving process, then time until a new operation (listing a
  directory never looked up before) is answered; median and max over --kills kills.
- cost: the same disk-warm parallel walk (8 readers over the /usr/include and Python store paths,
  daemon restarted and page cache dropped before each run) with `supervise=true` (every thread
  reads the supervisor's /dev/fuse descriptor) and `supervise=false` (cloned descriptors), runs
  interleaved; ratio of medians.
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


def parallel_walk(tops, readers=8):
    files = [os.path.join(root, name) for top in tops for root, _, names in os.walk(top)
             for name in names]
    chunks = [files[i::readers] for i in range(readers)]

    def read_all(paths):
        for path in paths:
            if not os.path.islink(path):
                with open(path, "rb") as f:
                    f.read()

    started = time.perf_counter()
    threads = [threading.Thread(target=read_all, args=(c,)) for c in chunks]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return time.perf_counter() - started


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--bin", default=os.environ.get("LAZYSTORE_BIN", "build/fuse/lazystore"), help="the lazystore daemon")
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--kills", type=int, default=20)
    args = parser.parse_args()
    if not args.bin:
        parser.error("--bin or LAZYSTORE_BIN is required")
    os.environ["LAZYSTORE_BIN"] = os.path.abspath(args.bin)
    fixture = lib.fixture()
    names = [fixture.paths["include"], fixture.paths["python"]]
    work = tempfile.mkdtemp(prefix="lazystore-supervisor-bench-")
    try:
        mnt = os.path.join(work, "mnt")
        os.makedirs(mnt)

        def mount(supervise, cache):
            return lib.Daemon(fixture.store, mnt, cache, {"supervise": supervise},
                              allowed_stderr=(r"was killed by signal 9",)).start()

        # Recovery after kill -9.
        daemon = mount("true", os.path.join(work, "cache-kill"))
        dirs = [os.path.join(mnt, names[1], d) for d in sorted(os.listdir(os.path.join(fixture.store, names[1])))
                if os.path.isdir(os.path.join(fixture.store, names[1], d))]
        recoveries = []
        for i in range(args.kills):
            old = daemon.kill_server()
            started = time.perf_counter()
            os.listdir(dirs[i % len(dirs)])
            recoveries.append(time.perf_counter() - started)
            daemon.wait_for_server(old)
            time.sleep(1.1)  # an older server each time: no crash-loop backoff
        daemon.stop()

        # Cost of serving through the supervisor's descriptor: disk-warm parallel walk.
        caches = {s: os.path.join(work, f"cache-{s}") for s in ("true", "false")}
        times = {s: [] for s in caches}
        for supervise, cache in caches.items():  # fill both caches once
            d = mount(supervise, cache)
            parallel_walk([os.path.join(mnt, n) for n in names])
            d.stop()
        for _ in range(args.runs):
            for supervise, cache in caches.items():
                lib.drop_page_cache()
                d = mount(supervise, cache)
                times[supervise].append(parallel_walk([os.path.join(mnt, n) for n in names]))
                d.stop()
    finally:
        subprocess.run(["fusermount3", "-u", "-z", os.path.join(work, "mnt")], stderr=subprocess.DEVNULL)
        shutil.rmtree(work, ignore_errors=True)

    load = open("/proc/loadavg").read().split()[:3]
    ms = [r * 1000 for r in recoveries]
    on, off = statistics.median(times["true"]), statistics.median(times["false"])
    print(f"\nload average {' '.join(load)}; {args.kills} kills, {args.runs} interleaved runs\n")
    print("| measure | value |")
    print("|---|---|")
    print(f"| first new operation after kill -9 of the server | median {statistics.median(ms):.0f} ms, "
          f"max {max(ms):.0f} ms |")
    print(f"| disk-warm parallel walk (8 readers), supervise=true | {on:.2f} s |")
    print(f"| disk-warm parallel walk (8 readers), supervise=false | {off:.2f} s |")
    print(f"| ratio supervised / unsupervised | {on / off:.2f}× |")


if __name__ == "__main__":
    main()
