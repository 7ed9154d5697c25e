#!/usr/bin/python3
"""lazystore vs the same tree on native disk, side by side in one run (see README.md here).

Usage (as root):  /usr/bin/python3 tests/bench/mount_bench.py --bin build/fuse/lazystore [--runs 5]

Cases (median of --runs each, ratios next to targets):
  read, disk-cold    warm lazystore cache; `echo 3 > drop_caches` before every run, so lazystore
                     reads its cache files from disk and native reads its file from disk
  read, page-hot     lazystore's cache files and the native file in the page cache; only the
                     mount's own pages are dropped (posix_fadvise DONTNEED): FUSE overhead alone
  walk, kernel-warm  find + stat + readlink + read-all of the /usr/include store path, after the
                     kernel has seen it once (dentries, attributes, pages cached) vs native warm
  walk, restart      first walk after a daemon restart with drop_caches: disk-warm, kernel-cold,
                     vs native after drop_caches
  info rows          first (upstream-fetching) read and walk, not compared against a target
"""

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "integration"))
import lazystore_testlib as lib  # noqa: E402

LARGE_SIZE = 256 * lib.MiB
BENCH_VERSION = 1


def large_store_path(fixture):
    """A store path holding a 256 MiB file, made on demand next to the fixture (own Nix store)."""
    root = fixture.root + "-bench"
    marker = os.path.join(root, "complete")
    with open(root + ".lock", "w") as lock:
        import fcntl
        fcntl.flock(lock, fcntl.LOCK_EX)
        if os.path.exists(marker):
            with open(marker) as f:
                version, name = f.read().split()
            if version == str(BENCH_VERSION) and os.path.exists(os.path.join(root, "root", "nix", "store", name)):
                return os.path.join(root, "root", "nix", "store", name)
        shutil.rmtree(root, ignore_errors=True)
        stage = os.path.join(root, "stage", "lazystore-bench-large")
        os.makedirs(stage)
        started = time.monotonic()
        with open(os.path.join(stage, "large-256m.bin"), "wb") as f:
            for i in range(LARGE_SIZE // (16 * lib.MiB)):
                f.write(lib.deterministic_bytes(1000 + i, 16 * lib.MiB))
        name = lib.NixStore(os.path.join(root, "root"), os.path.join(root, "nix-home")).add(stage)
        shutil.rmtree(os.path.join(root, "stage"))
        with open(marker, "w") as f:
            f.write(f"{BENCH_VERSION} {name}\n")
        lib.log(f"large store path made in {time.monotonic() - started:.1f} s")
        return os.path.join(root, "root", "nix", "store", name)


def timed(argv):
    started = time.perf_counter()
    subprocess.run(argv, check=True, stdout=subprocess.DEVNULL)
    return time.perf_counter() - started


def cat(path):
    return ["sh", "-c", 'cat "$1" > /dev/null', "sh", path]


def walk(path):
    # stat (%s %m), readlink (%l) of every entry, then read every regular file.
    return ["sh", "-c", "find \"$1\" -printf '%s %m %l\\n' -type f -exec cat {} + > /dev/null", "sh", path]


def drop_own_pages(path):
    fd = os.open(path, os.O_RDONLY)
    try:
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    finally:
        os.close(fd)


def warm_page_cache(paths):
    subprocess.run(["sh", "-c", 'cat "$@" > /dev/null', "sh", *paths], check=True)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--bin", default=os.environ.get("LAZYSTORE_BIN", "build/fuse/lazystore"), help="the lazystore daemon")
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--work", default=None, help="scratch directory (default: a temp dir)")
    parser.add_argument("--json", default=None, help="also write the figures to this file")
    args = parser.parse_args()
    if not args.bin or not os.access(args.bin, os.X_OK):
        parser.error("give the daemon with --bin or LAZYSTORE_BIN")
    if os.geteuid() != 0:
        parser.error("run as root (FUSE mounts, drop_caches)")
    os.environ["LAZYSTORE_BIN"] = os.path.abspath(args.bin)
    if not os.environ.get("LAZYSTORE_FIXTURE_DIR"):
        # BUILD/fuse/lazystore → the integration tests' fixture in BUILD/tests/fixture-store.
        build = os.path.dirname(os.path.dirname(os.path.abspath(args.bin)))
        os.environ["LAZYSTORE_FIXTURE_DIR"] = os.path.join(build, "tests", "fixture-store")

    fixture = lib.fixture()
    large = large_store_path(fixture)
    work = tempfile.mkdtemp(prefix="lazystore-bench-", dir=args.work)
    upstream = os.path.join(work, "store")  # the native tree, and lazystore's upstream
    os.makedirs(upstream)
    for source in (fixture.path("include"), fixture.path("misc"), large):
        lib.copy_store(source, os.path.join(upstream, os.path.basename(source)))
    include = fixture.paths["include"]
    large_name = os.path.basename(large)
    files = {"large-256m.bin (256 MiB)": (large_name, "large-256m.bin"),
             "big.bin (64 MiB)": (fixture.paths["misc"], "big.bin")}

    os.makedirs(os.path.join(work, "mnt"))
    df = subprocess.run(["df", "--output=source,fstype", work], capture_output=True, text=True).stdout.split()
    filesystem = " ".join(df[-2:])
    daemon = lib.Daemon(upstream, os.path.join(work, "mnt"), os.path.join(work, "cache"),
                        {"log-level": "warning"})
    rows = []
    stats = {}

    def row(case, native_times, lazy_times, unit, size=None, target=None, higher_is_better=False):
        n, z = statistics.median(native_times), statistics.median(lazy_times)
        if size:  # throughput in MB/s
            n_val, z_val = size / n / 1e6, size / z / 1e6
            ratio = z_val / n_val
        else:
            n_val, z_val = n, z
            ratio = z / n
        met = ""
        if target is not None:
            met = "yes" if (ratio >= target if higher_is_better else ratio <= target) else "**no**"
        rows.append({"case": case, "unit": unit, "native": n_val, "lazystore": z_val, "ratio": ratio,
                     "target": None if target is None else ("≥ " if higher_is_better else "≤ ") + f"{target}×",
                     "met": met, "native_runs": native_times, "lazystore_runs": lazy_times})
        lib.log(f"{case}: native {n_val:.3f} {unit}, lazystore {z_val:.3f} {unit}, ratio {ratio:.2f}")

    try:
        daemon.start()
        mnt = daemon.mountpoint
        runs = range(args.runs)

        # Info: the first read fetches from the upstream directory.
        for label, (path, rel) in files.items():
            lib.drop_page_cache()
            native_cold = [timed(cat(os.path.join(upstream, path, rel)))]
            lib.drop_page_cache()
            first = [timed(cat(os.path.join(mnt, path, rel)))]
            size = os.path.getsize(os.path.join(upstream, path, rel))
            row(f"info: first read of {label}, fetched from upstream (both disk-cold)", native_cold, first,
                "MB/s", size=size, higher_is_better=True)

        for label, (path, rel) in files.items():
            native_file, lazy_file = os.path.join(upstream, path, rel), os.path.join(mnt, path, rel)
            size = os.path.getsize(native_file)
            native, lazy = [], []
            for _ in runs:
                lib.drop_page_cache()
                native.append(timed(cat(native_file)))
                lib.drop_page_cache()
                lazy.append(timed(cat(lazy_file)))
            row(f"warm read {label}, disk-cold (drop_caches before each run)", native, lazy, "MB/s",
                size=size, target=0.8, higher_is_better=True)

        for label, (path, rel) in files.items():
            native_file, lazy_file = os.path.join(upstream, path, rel), os.path.join(mnt, path, rel)
            size = os.path.getsize(native_file)
            warm_page_cache([native_file] + [os.path.join(d, f) for d, _, fs in
                                             os.walk(os.path.join(daemon.cache, "v1", "data")) for f in fs])
            native, lazy = [], []
            for _ in runs:
                native.append(timed(cat(native_file)))
                drop_own_pages(lazy_file)
                lazy.append(timed(cat(lazy_file)))
            row(f"warm read {label}, page-hot (only the mount's pages dropped)", native, lazy, "MB/s",
                size=size, target=0.8, higher_is_better=True)

        native_tree, lazy_tree = os.path.join(upstream, include), os.path.join(mnt, include)
        lib.drop_page_cache()
        native_cold = [timed(walk(native_tree))]
        first = [timed(walk(lazy_tree))]
        row("info: first walk of /usr/include, fetched from upstream (native disk-cold; upstream then page-hot)",
            native_cold, first, "s")

        native, lazy = [], []
        for _ in runs:
            native.append(timed(walk(native_tree)))
            lazy.append(timed(walk(lazy_tree)))
        row("walk /usr/include (find+stat+read), kernel-warm", native, lazy, "s", target=1.2)

        native, lazy = [], []
        for _ in runs:
            lib.drop_page_cache()
            native.append(timed(walk(native_tree)))
            problems = daemon.stop(check=False)
            if problems:
                lib.log("daemon: " + "; ".join(problems))
            lib.drop_page_cache()
            daemon.start()
            lazy.append(timed(walk(lazy_tree)))
        row("walk /usr/include, first after daemon restart + drop_caches (disk-warm, kernel-cold)",
            native, lazy, "s", target=3.0)
        stats = daemon.stats()
    finally:
        problems = daemon.stop(check=False) or []
        if problems:
            lib.log("daemon: " + "; ".join(problems))
        if not lib.is_lazystore_mounted(daemon.mountpoint):
            shutil.rmtree(work, ignore_errors=True)

    print(f"\nlazystore benchmark: {args.runs} runs per case, medians; {os.cpu_count()} CPUs; native tree "
          f"= lazystore's upstream = one directory on {filesystem}; cache on the same file system\n")
    print("| case | unit | native | lazystore | ratio | target | met |")
    print("|---|---|---:|---:|---:|---|---|")
    for r in rows:
        print(f"| {r['case']} | {r['unit']} | {r['native']:.3f} | {r['lazystore']:.3f} | "
              f"{r['ratio']:.2f}× | {r['target'] or ''} | {r['met']} |")
    print("\nratio: lazystore/native throughput for MB/s rows, lazystore/native time for s rows.")
    print(f"daemon counters at the end: {json.dumps(stats)}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"runs": args.runs, "rows": rows, "stats": stats}, f, indent=1)


if __name__ == "__main__":
    main()
