#!/usr/bin/python3
"""lazystore over HTTP vs copying the whole closure first (`nix copy --from http://…`, the
rules_nixpkgs copy model): bytes transferred and time to first result, same run, medians.

Usage (as root):  /usr/bin/python3 tests/bench/http_bench.py --bin BUILD/fuse/lazystore [--runs 5]

The program is Debian's python3.11 run entirely from a Nix store: a store path with the
interpreter and its whole standard library (with bytecode), one with the shared libraries of
the interpreter and of every extension module (glibc, OpenSSL, libffi, sqlite, ...), started
through that store path's own ld.so, and one with Debian's Python packages (like a
python3.withPackages environment). It imports a handful of stdlib modules plus yaml and dateutil
and prints one line. The store paths are published as one binary cache (compression=none, signed,
with lazystore-publish's manifests: verified lazy reads) behind nginx on 127.0.0.1. Each run starts from nothing (fresh lazystore cache, fresh local store):

  lazystore  mount over HTTP, run the program in `bwrap --bind MNT /nix/store`
  copy       `nix copy --from http://…` of the closure into `local?root=FRESH`, then run it the
             same way from FRESH/nix/store

Bytes = body bytes nginx sent during the run (its access log, $body_bytes_sent).
"""

import argparse
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "integration"))
import lazystore_testlib as lib  # noqa: E402
from http_server import Nginx  # noqa: E402

PROGRAM = ("import json, argparse, email.parser, http.client, decimal, urllib.parse, datetime, "
           "sqlite3, ssl, yaml, dateutil.parser; print('first result', json.dumps({'d': str(decimal.Decimal(1) / 7)}), "
           "sqlite3.sqlite_version, ssl.OPENSSL_VERSION)")


def shared_libraries(paths):
    """Every shared library that ldd resolves for the given ELF files (and the loader)."""
    libs = set()
    for path in paths:
        out = subprocess.run(["ldd", path], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True).stdout
        for line in out.splitlines():
            m = re.search(r"=> (/\S+)", line) or re.match(r"\s*(/\S+ld-linux\S*)", line)
            if m:
                libs.add(os.path.realpath(m.group(1)) + "|" + os.path.basename(m.group(1)))
    return libs


def build_closure(work, nix):
    stage = os.path.join(work, "stage")
    env = os.path.join(stage, "python3.11-env")
    os.makedirs(os.path.join(env, "bin"))
    shutil.copy2("/usr/bin/python3.11", os.path.join(env, "bin", "python3"))
    shutil.copytree("/usr/lib/python3.11", os.path.join(env, "lib", "python3.11"), symlinks=True,
                    ignore=shutil.ignore_patterns("site-packages", "dist-packages"))
    elves = ["/usr/bin/python3.11"] + [os.path.join("/usr/lib/python3.11/lib-dynload", n)
                                        for n in os.listdir("/usr/lib/python3.11/lib-dynload")]
    libs = os.path.join(stage, "python3.11-libs")
    os.makedirs(os.path.join(libs, "lib"))
    for entry in shared_libraries(elves):
        real, name = entry.split("|")
        shutil.copy2(real, os.path.join(libs, "lib", name))
    # The packages next to the interpreter, as in a python3.withPackages environment.
    site = os.path.join(stage, "python3.11-site-packages")
    shutil.copytree("/usr/lib/python3/dist-packages", site, symlinks=True)
    names = [nix.add(env), nix.add(libs), nix.add(site)]
    shutil.rmtree(stage)
    return names


def du(path):
    return int(subprocess.run(["du", "-sb", path], stdout=subprocess.PIPE, text=True).stdout.split()[0])


def run_program(store_dir, env_name, libs_name, site_name):
    """Runs the program with MNT as /nix/store; returns (seconds, output)."""
    loader = f"/nix/store/{libs_name}/lib/ld-linux-x86-64.so.2"
    argv = ["bwrap", "--dev-bind", "/", "/", "--tmpfs", "/nix", "--bind", store_dir, "/nix/store",
            "--setenv", "PYTHONHOME", f"/nix/store/{env_name}", "--setenv", "PYTHONDONTWRITEBYTECODE", "1",
            "--setenv", "PYTHONPATH", f"/nix/store/{site_name}",
            loader, "--library-path", f"/nix/store/{libs_name}/lib", f"/nix/store/{env_name}/bin/python3",
            "-c", PROGRAM]
    started = time.monotonic()
    out = lib.run(argv)
    return time.monotonic() - started, out.strip()


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--bin", default=os.environ.get("LAZYSTORE_BIN", "build/fuse/lazystore"))
    parser.add_argument("--publish", help="lazystore-publish (default: BUILD/push/ next to --bin's BUILD/fuse/)")
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--json")
    parser.add_argument("-o", dest="options", default="",
                        help="extra mount options, e.g. chunk-size=256K,readahead=1")
    args = parser.parse_args()
    os.environ["LAZYSTORE_BIN"] = os.path.abspath(args.bin)
    work = tempfile.mkdtemp(prefix="lazystore-http-bench-")
    server = None
    try:
        nix = lib.NixStore(os.path.join(work, "store"), os.path.join(work, "nix-home"))
        names = build_closure(work, nix)
        closure = [f"/nix/store/{n}" for n in names]
        closure_bytes = sum(du(os.path.join(nix.root, "nix", "store", n)) for n in names)
        key = os.path.join(work, "key")
        lib.run(["nix-store", "--generate-binary-cache-key", "bench-1", key + ".sec", key + ".pub"], env=nix.env)
        public = lib.read_file(key + ".pub").decode().strip()
        cache = os.path.join(work, "cache")
        lib.run(["nix", "copy", "--to", f"file://{cache}?compression=none&write-nar-listing=true&secret-key={key}.sec",
                 "--from", f"local?root={nix.root}", *closure], env=nix.env)
        publish = args.publish or os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(args.bin))),
                                               "push", "lazystore-publish")
        lib.log(lib.run([publish, "--secret-key", key + ".sec", cache]).strip())
        server = Nginx(cache, os.path.join(work, "nginx")).start()
        lib.log(f"closure: {closure} ({closure_bytes} bytes on disk)")

        mount_options = {"trusted-public-keys": public}
        for item in filter(None, args.options.split(",")):
            k, _, v = item.partition("=")
            mount_options[k] = v or None
        results = {"lazystore": [], "copy": []}
        for i in range(args.runs):
            # lazystore: mount (cold cache), run.
            before = server.bytes_served()
            mnt = os.path.join(work, f"mnt{i}")
            os.makedirs(mnt)
            started = time.monotonic()
            daemon = lib.Daemon(server.url, mnt, os.path.join(work, f"lzcache{i}"),
                                mount_options, log_level="warning").start()
            try:
                _, out = run_program(mnt, *names)
                seconds = time.monotonic() - started
            finally:
                daemon.stop()
            results["lazystore"].append({"seconds": seconds, "bytes": server.bytes_served() - before})
            assert out.startswith("first result"), out

            # copy: nix copy --from http into a fresh store, run.
            before = server.bytes_served()
            fresh = os.path.join(work, f"fresh{i}")
            started = time.monotonic()
            lib.run(["nix", "copy", "--from", f"{server.url}", "--to", f"local?root={fresh}",
                     "--option", "trusted-public-keys", public, *closure], env=nix.env)
            _, out2 = run_program(os.path.join(fresh, "nix", "store"), *names)
            seconds = time.monotonic() - started
            results["copy"].append({"seconds": seconds, "bytes": server.bytes_served() - before})
            assert out2 == out, (out, out2)
            shutil.rmtree(fresh, ignore_errors=True)
            lib.log(f"run {i + 1}: lazystore {results['lazystore'][-1]}, copy {results['copy'][-1]}")

        med = {k: {m: statistics.median(r[m] for r in v) for m in ("seconds", "bytes")} for k, v in results.items()}
        bytes_ratio = med["copy"]["bytes"] / max(1, med["lazystore"]["bytes"])
        time_ratio = med["copy"]["seconds"] / med["lazystore"]["seconds"]
        print(f"program output: {out}")
        print(f"closure: {len(names)} store paths, {closure_bytes / lib.MiB:.1f} MiB; medians of {args.runs} runs; "
              f"mount options: {args.options or 'defaults'}\n")
        print("| how | bytes transferred | time to first result |")
        print("|---|---|---|")
        for k in ("copy", "lazystore"):
            print(f"| {k} | {med[k]['bytes'] / lib.MiB:.2f} MiB | {med[k]['seconds']:.2f} s |")
        print(f"| ratio copy/lazystore | {bytes_ratio:.1f}× (target ≥ 5×) | {time_ratio:.1f}× (target > 1×) |")
        if args.json:
            with open(args.json, "w") as f:
                json.dump({"runs": results, "medians": med, "closure_bytes": closure_bytes}, f, indent=1)
    finally:
        if server:
            server.stop()
        lib.remove_work_dir(work)


if __name__ == "__main__":
    main()
