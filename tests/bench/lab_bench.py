#!/usr/bin/python3
"""The suite's workloads in the lab guest: lazystore against the kernel NFS client, on the kernel
NFS server of Debian's 6.1 kernel (tests/bench/README.md, "The kernel NFS client").

    tests/bench/run.sh lab [--runs 2] [--hot-runs 3] [--rtts 0,0.5] [--out DIR]
    /usr/bin/python3 tests/bench/lab_bench.py [the same]        # LAZYSTORE_BIN or --bin: the daemon

One guest boot (tests/lab/lab.py) measures, for each round trip (netem on the guest's lo), each
workload of suite.py (W1 walk, W2 gcc, W3 python imports, W4 seq/rand; W5 bytes) and each system
— native (the exported ext4 tree), the kernel client NFSv3 with the seed's fstab options
(`ro,nfsvers=3`), the kernel client NFSv4 (`ro,nfsvers=4`), lazystore NFSv3 (`host:/path`) and
NFSv4 (`nfs://host/path?version=4`) against the same kernel server — cold (fresh mount, empty
cache, drop_caches), disk-warm (lazystore restarted on its cache; the kernel client remounted, it
has no persistent cache; drop_caches) and hot (again, right away). Then every system's bytes are
compared with the export. Writes lab-results.{json,md,png} (lab_report.py) into --out.
"""

import argparse
import json
import os
import shutil
import statistics
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
SOURCE_ROOT = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, os.path.join(SOURCE_ROOT, "tests", "integration"))
sys.path.insert(0, os.path.join(SOURCE_ROOT, "tests", "lab"))
sys.path.insert(0, HERE)
import lab  # noqa: E402
import lab_report  # noqa: E402
import lazystore_testlib as lib  # noqa: E402
import suite  # noqa: E402
import suite_store  # noqa: E402

STATES = suite.STATES
SYSTEMS = [("native", "native"), ("knfs3", "kernel NFSv3"), ("knfs4", "kernel NFSv4"),
           ("lazy3", "lazystore NFSv3"), ("lazy4", "lazystore NFSv4")]
# The seed's fstab line: host_ip:/nix/store /nix/store nfs ro,nfsvers=3 0 0
KERNEL_OPTIONS = {3: "ro,nfsvers=3", 4: "ro,nfsvers=4"}
# What the timed commands exec, served from the guest's memory (exec over 9p costs ~0.35 s).
TOOLS = ["/usr/bin/find", "/usr/bin/dd", "/usr/bin/env", "/usr/bin/bwrap", "/usr/bin/hyperfine",
         "/usr/bin/gcc", "/usr/bin/as", "/usr/bin/python3.11", "/usr/bin/getfattr", "/usr/bin/ss"]
IMAGE_VERSION = 1


# ---------------------------------------------------------------------------------------------
# In the guest
# ---------------------------------------------------------------------------------------------

class KernelNfs(suite.System):
    """The kernel NFS client mounting the export; no cache that survives an unmount."""
    persistent = False

    def __init__(self, key, name, work, version, guestlib):
        self.key, self.name, self.version, self.guest = key, name, version, guestlib
        self.root = os.path.join(work, f"mnt-{key}")
        os.makedirs(self.root)
        self.port = 2049
        self.mounted_options = None

    def start(self, fresh):
        self.guest.run(["mount", "-t", "nfs", "-o", KERNEL_OPTIONS[self.version],
                        f"{self.guest.SERVER}:{self.guest.EXPORT}", self.root])
        self.mounted_options = lib.mountinfo_entry(self.root)["super_options"]

    def stop(self):
        if suite.is_mounted(self.root):
            self.guest.run(["umount", self.root])


class LazystoreLab(suite.Lazystore):
    def __init__(self, key, name, work, source):
        self.key, self.name = key, name
        super().__init__(work, source, {"upstream-timeout": 60})
        self.port = 2049

    def cpu_seconds(self):
        """User + system CPU time of the serving process so far (where a run's time goes)."""
        with open(f"/proc/{self.daemon.serving_pid()}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def measure(system, argv, key, wl, runs, hot_runs, work, guestlib):
    """One cell, as suite.py measures it: `runs` cold and disk-warm pairs, then `hot_runs`."""
    cell = {state: [] for state in STATES}
    cell.update({"problem": None, "server_bytes": [], "upstream_bytes": [],
                 "warm_is_cold": False, "counters": {}, "cpu": {state: [] for state in STATES}})
    counters = getattr(system, "counters", None)
    cpu = getattr(system, "cpu_seconds", None)
    capture = key == "W1"
    try:
        for run in range(runs):
            for state in ("cold", "disk-warm"):
                if state == "cold" or not system.persistent:
                    system.stop()
                    system.start(fresh=True)   # a fresh mount (lazystore: an empty cache)
                else:
                    system.stop()
                    system.start(fresh=False)  # lazystore restarted on its cache
                guestlib.drop_caches()
                before, up_before = system.server_bytes(), system.upstream_bytes()
                c0 = counters() if counters else None
                cpu0 = cpu() if cpu else None
                seconds, result = suite.timed(argv, capture)
                problem = wl.validate(key, result)
                if problem:
                    raise RuntimeError(f"{state}: {problem}")
                cell[state].append(seconds)
                if cpu:
                    cell["cpu"][state].append(cpu() - cpu0)
                if state == "cold" and before is not None:
                    cell["server_bytes"].append(system.server_bytes() - before)
                if state == "cold" and up_before is not None:
                    cell["upstream_bytes"].append(system.upstream_bytes() - up_before)
                if counters and run == 0:
                    cell["counters"][state] = suite.counter_delta(c0, counters())
        c0 = counters() if counters else None
        cpu0 = cpu() if cpu else None
        seconds, result = suite.timed(argv, capture)  # the hot runs' own check
        problem = wl.validate(key, result)
        if problem:
            raise RuntimeError("hot: " + problem)
        if hot_runs <= 1:  # one hot run: this checked one (a plain timed run, like cold's)
            cell["hot"] = [seconds]
        else:
            c0 = counters() if counters else None
            cpu0 = cpu() if cpu else None
            cell["hot"] = suite.hyperfine(argv, hot_runs, os.path.join(work, "hf.json"))
        if counters:
            cell["counters"]["hot"] = suite.counter_delta(c0, counters())
        if cpu:
            cell["cpu"]["hot"].append((cpu() - cpu0) / max(1, hot_runs))
    except (RuntimeError, OSError, suite.subprocess.TimeoutExpired) as e:
        cell["problem"] = (str(e).strip().splitlines() or [repr(e)])[0][:300]
        lib.log(f"{key} on {system.name}: {cell['problem']}")
    finally:
        system.stop()
    return cell


def verify(systems, names, guestlib):
    """Every system's tree of every store path against the export's (kind, mode, size, sha256)."""
    expected = {name: lib.describe_tree(os.path.join(guestlib.EXPORT, name)) for name in names.values()}
    out = {}
    for system in systems:
        if system.key == "native":
            continue
        problems = []
        system.start(fresh=True)
        try:
            for name, want in expected.items():
                got = lib.describe_tree(os.path.join(system.root, name))
                problems += [f"{name}/{rel}" for rel in sorted(set(want) | set(got)) if want.get(rel) != got.get(rel)]
        except OSError as e:
            problems.append(str(e))
        finally:
            system.stop()
        out[system.key] = problems[:10]
        lib.log(f"bytes of {system.name}: {'equal' if not problems else problems[:3]}")
    return out


def guest_main(params_path):
    import guestlib
    with open(params_path) as f:
        params = json.load(f)
    started = time.monotonic()
    work = os.path.join(guestlib.SCRATCH, "bench")
    os.makedirs(work)
    names = params["names"]
    wl = suite.Workloads(work, guestlib.EXPORT, names, params["randread"])
    guestlib.end_grace()  # the kernel client's NFSv4 OPENs would wait for it
    systems = [suite.Native(guestlib.EXPORT),
               KernelNfs("knfs3", "kernel NFSv3", work, 3, guestlib),
               KernelNfs("knfs4", "kernel NFSv4", work, 4, guestlib),
               LazystoreLab("lazy3", "lazystore NFSv3", work, guestlib.SOURCE_V3),
               LazystoreLab("lazy4", "lazystore NFSv4", work, guestlib.SOURCE_V4)]
    systems = [s for s in systems if s.key in params["systems"]]
    for key in params["workloads"]:  # every workload must work natively first
        _, result = suite.timed(wl.argv(key, guestlib.EXPORT), key == "W1")
        problem = wl.validate(key, result)
        if problem:
            raise RuntimeError(f"{key} fails natively: {problem}")
    results = {"cells": {}, "mount_options": {}, "describe": wl.describe(), "guest_kernel": os.uname().release,
               "guest_cpus": os.cpu_count(), "partial": True}
    out_path = os.path.join(guestlib.OUT, "lab-results.json")

    def save():
        """After every cell: a run cut short by its timeout still reports what it measured."""
        results["guest_seconds"] = round(time.monotonic() - started)
        with open(out_path + ".tmp", "w") as f:
            json.dump(results, f, indent=1)
        os.replace(out_path + ".tmp", out_path)
    # Workload by workload, every round trip of each: a run cut short by its timeout misses the
    # last workloads, not a round trip.
    for key in params["workloads"]:
        for rtt in params["rtts"]:
            guestlib.set_rtt(rtt)
            for system in systems:
                cell = measure(system, wl.argv(key, system.root), key, wl, params["runs"],
                               params["hot_runs"], work, guestlib)
                results["cells"][f"{rtt:g}|{key}|{system.key}"] = cell
                med = {s: (f"{statistics.median(cell[s]):.3f}" if cell[s] else "-") for s in STATES}
                lib.log(f"rtt {rtt:g} ms {key} {system.name}: cold {med['cold']} warm {med['disk-warm']} "
                        f"hot {med['hot']} s ({time.monotonic() - started:.0f} s in)")
                save()
    guestlib.set_rtt(0)
    for system in systems:
        if isinstance(system, KernelNfs) and system.mounted_options:
            results["mount_options"][system.key] = system.mounted_options
    save()
    results["bytes"] = verify(systems, names, guestlib) if params["verify"] else {}
    results.update({"partial": False,
                    "lazystore_problems": [p for s in systems for p in getattr(s, "problems", [])]})
    save()
    return 0


# ---------------------------------------------------------------------------------------------
# On the host
# ---------------------------------------------------------------------------------------------

def bench_image(cache_dir, sources):
    """The ext4 image of the three store paths, made once per set of store paths (their names
    are content hashes) in cache_dir."""
    os.makedirs(cache_dir, exist_ok=True)
    key = f"{IMAGE_VERSION} " + " ".join(sorted(os.path.basename(p) for p in sources))
    image, marker = os.path.join(cache_dir, "store.img"), os.path.join(cache_dir, "complete")
    try:
        with open(marker) as f:
            if f.read().strip() == key and os.path.exists(image):
                return image
    except OSError:
        pass
    stage = tempfile.mkdtemp(prefix="lab-bench-stage-", dir=cache_dir)
    try:
        store = os.path.join(stage, "nix", "store")
        os.makedirs(store)
        for source in sources:
            lib.copy_store(source, os.path.join(store, os.path.basename(source)))
        started = time.monotonic()
        lab.build_store_image(stage, image)
        lib.log(f"bench image built in {time.monotonic() - started:.0f} s")
    finally:
        shutil.rmtree(stage, ignore_errors=True)
    with open(marker, "w") as f:
        f.write(key + "\n")
    return image


def host_main(args):
    if os.geteuid() != 0:
        sys.exit("lab_bench.py: run as root")
    missing = lab.missing_prerequisites()
    if missing:
        sys.exit("lab_bench.py: cannot run the lab here: " + "; ".join(missing))
    if not os.access(args.bin, os.X_OK):
        sys.exit(f"lab_bench.py: {args.bin} is not an executable: give --bin or LAZYSTORE_BIN")
    suite.use_daemon(args.bin)

    load_start, started = suite.loadavg(), time.monotonic()
    fixture = lib.fixture()
    own = suite_store.bench_store(args.store_cache)
    sources = {"include": fixture.path("include"), "python_home": own["python_home"], "large": own["large"]}
    names = {role: os.path.basename(p) for role, p in sources.items()}
    image = bench_image(args.image_cache, list(sources.values()))
    work = tempfile.mkdtemp(prefix="lazystore-lab-bench-")
    try:
        # W5's "bytes read": the store files W2 and W3 open (strace of a native run, on the host).
        export = os.path.join(work, "export")
        os.makedirs(export)
        for role, source in sources.items():
            lib.copy_store(source, os.path.join(export, names[role]))
        os.makedirs(os.path.join(work, "host"))
        wl = suite.Workloads(os.path.join(work, "host"), export, names, args.randread)
        w5 = {}
        for key in ("W2", "W3"):
            count, size = suite.files_opened(wl.argv(key, export), export, os.path.join(work, f"strace-{key}"))
            w5[key] = {"files": count, "read_bytes": size,
                       "closure_bytes": suite.tree_bytes(os.path.join(export, names[
                           "include" if key == "W2" else "python_home"]))}
        params = {"names": names, "randread": args.randread, "runs": args.runs, "hot_runs": args.hot_runs,
                  "rtts": args.rtts, "workloads": args.workloads, "systems": args.systems,
                  "verify": not args.no_verify}
        params_path = os.path.join(work, "params.json")
        with open(params_path, "w") as f:
            json.dump(params, f)
        cc1 = lib.run(["gcc", "-print-prog-name=cc1"]).strip()
        preload = TOOLS + lab.PYTHON_PRELOAD + [cc1, wl.gcc_include]
        guest = lab.Guest(work, image, lazystore=args.bin,
                          lazystore_ctl=os.path.join(os.path.dirname(args.bin), "lazystore-ctl"),
                          preload=preload, memory_mb=args.memory_mb, timeout=args.timeout,
                          scratch_mb=6144, echo=sys.stderr if args.verbose else None)
        lib.log(f"booting the guest ({guest.accel}); the defaults take hours under emulation on 2 CPUs")
        result = guest.run(["/usr/bin/python3", os.path.abspath(__file__), "--guest", params_path])
        partial_path = os.path.join(result.out, "lab-results.json")
        if result.status != 0 and not os.path.exists(partial_path):
            sys.exit(f"lab_bench.py: the guest run failed (status {result.status}, timed out: "
                     f"{result.timed_out}):\n{result.console_tail(60)}")
        with open(partial_path) as f:
            results = json.load(f)
        if result.status != 0:  # cut short (its timeout): report the cells it finished
            lib.log(f"the guest run ended with status {result.status} (timed out: {result.timed_out}) "
                    f"after {len(results['cells'])} cells: reporting those\n{result.console_tail(20)}")
            results["partial"] = True
    finally:
        shutil.rmtree(work, ignore_errors=True)
    results.update({"w5": w5, "runs": args.runs, "hot_runs": args.hot_runs, "rtts": args.rtts,
                    "workloads": args.workloads, "systems": [s for s in SYSTEMS if s[0] in args.systems],
                    "load_start": load_start, "load_end": suite.loadavg(),
                    "seconds": round(time.monotonic() - started), "host_cpus": os.cpu_count(),
                    "accel": guest.accel, "boot_seconds": round(result.boot_seconds or 0),
                    "bin": os.path.relpath(os.path.abspath(args.bin), SOURCE_ROOT),
                    "bin_mtime": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(os.path.getmtime(args.bin))),
                    "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())})
    os.makedirs(args.out, exist_ok=True)
    with open(os.path.join(args.out, "lab-results.json"), "w") as f:
        json.dump(results, f, indent=1)
    markdown = lab_report.markdown(results)
    with open(os.path.join(args.out, "lab-results.md"), "w") as f:
        f.write(markdown)
    lab_report.chart(results, os.path.join(args.out, "lab-results.png"))
    print(markdown)
    return 0


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--guest", help=argparse.SUPPRESS)  # inside the guest: the parameters' file
    parser.add_argument("--bin", default=os.environ.get("LAZYSTORE_BIN",
                                                        os.path.join(SOURCE_ROOT, "build", "fuse", "lazystore")))
    parser.add_argument("--runs", type=int, default=2, help="cold and disk-warm runs per cell (default 2)")
    parser.add_argument("--hot-runs", type=int, default=3, help="hot runs per cell (default 3)")
    parser.add_argument("--rtts", default="0,0.5", help="netem round trips in ms (default 0,0.5)")
    parser.add_argument("--workloads", default="W1,W2,W3,W4 seq,W4 rand")
    parser.add_argument("--systems", default=",".join(s for s, _ in SYSTEMS))
    parser.add_argument("--randread", type=int, default=2000, help="random 4 KiB reads in W4 rand")
    parser.add_argument("--no-verify", action="store_true", help="skip the byte comparison at the end")
    parser.add_argument("--store-cache", default="/var/tmp/lazystore-bench-store")
    parser.add_argument("--image-cache", default="/var/tmp/lazystore-lab-bench-image")
    parser.add_argument("--memory-mb", type=int, default=3072)
    parser.add_argument("--timeout", type=int, default=6 * 3600, help="seconds the guest may measure")
    parser.add_argument("--out", default=HERE, help="directory of lab-results.{md,png,json}")
    parser.add_argument("-v", "--verbose", action="store_true", help="echo the guest console")
    args = parser.parse_args()
    if args.guest:
        return guest_main(args.guest)
    args.rtts = [float(x) for x in args.rtts.split(",")]
    args.workloads = args.workloads.split(",")
    args.systems = args.systems.split(",")
    return host_main(args)


if __name__ == "__main__":
    sys.exit(main())
