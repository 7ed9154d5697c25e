#!/usr/bin/python3
"""Verified lazy reads over HTTP, what they cost (issue 15, item 6): bytes transferred and time to
first result of W2 (gcc of 64 headers from the fixture's /usr/include store path) and W3 (Debian's
python3.11 run from a 3-path Nix closure, the program of http_bench.py) over one signed binary
cache behind nginx on 127.0.0.1, each run from nothing (fresh lazystore cache, fresh store):

  unverified  require-sigs=false: `.ls` listings and unchecked Range reads (lazystore before)
  manifest    signed manifests (lazystore-publish): Range reads, every 64 KiB block checked
  whole NAR   signatures required, no manifests: each store path's NAR downloaded and checked
  copy        `nix copy --from http://…` of the closure into `local?root=FRESH`, then run it

Bytes = body bytes nginx sent ($body_bytes_sent); time = mount (or copy) to the program's exit.
Rounds alternate the systems; medians; the load average is printed (2 shared CPUs: compare
ratios within this run only).

Usage (as root):  /usr/bin/python3 tests/bench/verified_http_bench.py --bin BUILD/fuse/lazystore \\
                      --publish BUILD/push/lazystore-publish [--rounds 3] [--json out.json]
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
sys.path.insert(0, os.path.join(HERE, "..", "integration"))
sys.path.insert(0, HERE)
import http_bench  # noqa: E402
import lazystore_testlib as lib  # noqa: E402
from http_server import Nginx  # noqa: E402
from suite import HEADERS, bwrap  # noqa: E402

SYSTEMS = ("unverified", "manifest", "whole NAR", "copy")


def load_average():
    with open("/proc/loadavg") as f:
        return float(f.read().split()[0])


class Workload:
    def __init__(self, key, paths, run):
        self.key, self.paths, self.run = key, paths, run  # run(store_dir) -> output


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--bin", default=os.environ.get("LAZYSTORE_BIN", "build/fuse/lazystore"))
    parser.add_argument("--publish", default=os.environ.get("LAZYSTORE_PUBLISH", "build/push/lazystore-publish"))
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--json")
    args = parser.parse_args()
    os.environ["LAZYSTORE_BIN"] = os.path.abspath(args.bin)
    work = tempfile.mkdtemp(prefix="lazystore-verified-bench-")
    servers = []
    try:
        fx = lib.fixture()
        py = lib.NixStore(os.path.join(work, "py-store"), os.path.join(work, "py-home"))
        py_names = http_bench.build_closure(work, py)
        key = os.path.join(work, "key")
        lib.run(["nix-store", "--generate-binary-cache-key", "bench-1", key + ".sec", key + ".pub"], env=py.env)
        public = lib.read_file(key + ".pub").decode().strip()
        cache = os.path.join(work, "cache")
        params = f"compression=none&write-nar-listing=true&secret-key={key}.sec"
        include = fx.paths["include"]
        fx_nix = lib.NixStore(os.path.join(fx.root, "root"), os.path.join(work, "fx-home"))
        lib.run(["nix", "copy", "--no-check-sigs", "--to", f"file://{cache}?{params}", "--from",
                 f"local?root={fx_nix.root}", f"/nix/store/{include}"], env=fx_nix.env)
        lib.run(["nix", "copy", "--to", f"file://{cache}?{params}", "--from", f"local?root={py.root}",
                 *[f"/nix/store/{n}" for n in py_names]], env=py.env)
        started = time.monotonic()
        summary = lib.run([args.publish, "--secret-key", key + ".sec", cache]).strip().splitlines()[-1]
        publish_seconds = time.monotonic() - started
        manifest_bytes = sum(os.path.getsize(os.path.join(cache, n)) for n in os.listdir(cache) if n.endswith(".manifest"))
        listing_bytes = sum(os.path.getsize(os.path.join(cache, n)) for n in os.listdir(cache) if n.endswith(".ls"))
        lib.log(f"{summary} in {publish_seconds:.1f} s; manifests {manifest_bytes} bytes, listings {listing_bytes}")
        # One nginx for every system; the whole-NAR one hides the manifests (404).
        plain = Nginx(cache, os.path.join(work, "nginx")).start()
        servers.append(plain)
        hidden = Nginx(cache, os.path.join(work, "nginx-hidden"),
                       extra=r"location ~ \.manifest$ { return 404; }").start()
        servers.append(hidden)

        program = os.path.join(work, "w2.c")
        with open(program, "w") as f:
            f.write("".join(f"#include <{h}>\n" for h in HEADERS))
            f.write("int main(void) { printf(\"%zu\\n\", strlen(\"x\")); return 0; }\n")
        gcc_include = lib.run(["gcc", "-print-file-name=include"]).strip()

        def w2(store_dir):
            inc = f"/nix/store/{include}"
            lib.run(bwrap(store_dir, ["gcc", "-nostdinc", "-isystem", gcc_include, "-isystem", inc, "-isystem",
                                      f"{inc}/x86_64-linux-gnu", "-O0", "-c", program, "-o", "/dev/null"]))
            return "compiled"

        def w3(store_dir):
            return http_bench.run_program(store_dir, *py_names)[1]

        workloads = [Workload("W2", [include], w2), Workload("W3", py_names, w3)]
        results = {w.key: {s: [] for s in SYSTEMS} for w in workloads}
        loads = [load_average()]
        for r in range(args.rounds):
            for w in workloads:
                expected = None
                for system in SYSTEMS:
                    server = hidden if system == "whole NAR" else plain
                    before = server.bytes_served()
                    started = time.monotonic()
                    if system == "copy":
                        fresh = os.path.join(work, f"fresh-{w.key}-{r}")
                        lib.run(["nix", "copy", "--from", plain.url, "--to", f"local?root={fresh}", "--option",
                                 "trusted-public-keys", public, *[f"/nix/store/{n}" for n in w.paths]], env=py.env)
                        out = w.run(os.path.join(fresh, "nix", "store"))
                        seconds = time.monotonic() - started
                        shutil.rmtree(fresh, ignore_errors=True)
                        stats = {}
                    else:
                        tag = system.replace(" ", "-")
                        mnt = os.path.join(work, f"mnt-{w.key}-{tag}-{r}")
                        os.makedirs(mnt)
                        options = ({"require-sigs": "false"} if system == "unverified"
                                   else {"trusted-public-keys": public})
                        daemon = lib.Daemon(server.url, mnt, os.path.join(work, f"lz-{w.key}-{tag}-{r}"), options,
                                            log_level="warning").start()
                        try:
                            out = w.run(mnt)
                            seconds = time.monotonic() - started
                            stats = daemon.stats()
                        finally:
                            daemon.stop()
                    sent = server.bytes_served() - before
                    if expected is None:
                        expected = out
                    assert out == expected, (w.key, system, out, expected)
                    results[w.key][system].append({"seconds": seconds, "bytes": sent,
                                                   "nar_downloads": stats.get("nar_downloads"),
                                                   "block_hash_failures": stats.get("block_hash_failures")})
                    lib.log(f"round {r + 1} {w.key} {system}: {seconds:.2f} s, {sent} bytes")
            loads.append(load_average())

        med = {k: {s: {m: statistics.median(x[m] for x in v) for m in ("seconds", "bytes")} for s, v in by.items()}
               for k, by in results.items()}
        print(f"{summary}; manifests {manifest_bytes / lib.MiB:.2f} MiB in all (listings "
              f"{listing_bytes / lib.MiB:.2f} MiB), published in {publish_seconds:.1f} s")
        print(f"medians of {args.rounds} rounds; load average {min(loads):.1f}–{max(loads):.1f} "
              f"(1-min, sampled each round) on {os.cpu_count()} CPUs\n")
        print("| workload | system | bytes transferred | time to first result | bytes ÷ unverified | time ÷ unverified |")
        print("|---|---|---:|---:|---:|---:|")
        for k, by in med.items():
            base = by["unverified"]
            for s in SYSTEMS:
                print(f"| {k} | {s} | {by[s]['bytes'] / lib.MiB:.2f} MiB | {by[s]['seconds']:.2f} s | "
                      f"{by[s]['bytes'] / max(1, base['bytes']):.2f}× | {by[s]['seconds'] / base['seconds']:.2f}× |")
        if args.json:
            with open(args.json, "w") as f:
                json.dump({"runs": results, "medians": med, "loads": loads, "publish": summary,
                           "manifest_bytes": manifest_bytes, "listing_bytes": listing_bytes}, f, indent=1)
    finally:
        for s in servers:
            s.stop()
        lib.remove_work_dir(work)


if __name__ == "__main__":
    main()
