#!/usr/bin/python3
"""Many executors, one server: N lazystore mounts (separate caches, as separate executors)
cold-start W2 (gcc of 64 headers) and W3 (python imports) at once against one nfs-ganesha
(NFSv4) and one nginx (a signed binary cache of the same store paths), each behind a delay line
at --rtt; the HTTP mounts also through an nginx proxy_cache tier before the origin.

Entry point: tests/bench/run.sh scale [--mounts 1,4,16] [--rtt 0.5] [--json out.json]

Per (upstream, N, workload): wall time until every executor is done (and the slowest / median
executor), the server's CPU seconds (ganesha's or the origin nginx's utime+stime over the run),
and bytes the server sent per executor (tcp_info bytes_sent of ganesha's sockets; nginx's
$body_bytes_sent). The page cache is dropped before each round; mounts start before the clock.
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
sys.path.insert(0, HERE)
import delay_line  # noqa: E402
import http_server  # noqa: E402
import lazystore_testlib as lib  # noqa: E402
import nfs_server  # noqa: E402
import suite  # noqa: E402
import suite_store  # noqa: E402


class ProxyCache:
    """nginx with proxy_cache in front of an origin (the caching tier between executors and
    the binary cache): its own config, as a site would write one."""

    def __init__(self, work, origin_port):
        self.work, self.port = work, nfs_server.free_port()
        for sub in ("client", "proxy", "fastcgi", "uwsgi", "scgi", "logs", "cache"):
            os.makedirs(os.path.join(work, sub), exist_ok=True)
        self.config = os.path.join(work, "nginx.conf")
        with open(self.config, "w") as f:
            f.write(f"""
user root;
daemon off;
master_process off;
worker_processes 1;
pid {work}/nginx.pid;
error_log {work}/logs/error.log warn;
events {{ worker_connections 1024; }}
http {{
  access_log off;
  client_body_temp_path {work}/client;
  proxy_temp_path {work}/proxy;
  fastcgi_temp_path {work}/fastcgi;
  uwsgi_temp_path {work}/uwsgi;
  scgi_temp_path {work}/scgi;
  proxy_cache_path {work}/cache levels=1:2 keys_zone=nix:16m max_size=4g inactive=1h use_temp_path=off;
  upstream origin {{ server 127.0.0.1:{origin_port}; keepalive 32; }}
  server {{
    listen 127.0.0.1:{self.port};
    location / {{
      proxy_pass http://origin;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      proxy_cache nix;
      proxy_cache_valid 200 206 1h;
      proxy_cache_lock on;
      # lazystore's reads are Range requests of whole chunks, the same ones from every executor:
      # the tier keeps each range as asked (slices of 1 MiB would fetch one per small file, a
      # whole-file cache the whole NAR first).
      proxy_cache_key $uri$http_range;
      proxy_set_header Range $http_range;
    }}
  }}
}}
""")
        with open(os.path.join(work, "logs", "stderr"), "ab") as err:
            self.process = subprocess.Popen(["nginx", "-c", self.config, "-p", work + "/"],
                                            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=err)
        nfs_server.wait_until(lambda: http_server._port_open(self.port), 30, "proxy_cache nginx listening")

    def clear(self):
        shutil.rmtree(os.path.join(self.work, "cache"), ignore_errors=True)
        os.makedirs(os.path.join(self.work, "cache"))

    def close(self):
        if self.process is not None:
            self.process.terminate()
            self.process.wait(timeout=15)
            self.process = None


def cpu_seconds(pid):
    return delay_line.process_cpu_seconds(pid)


def round_of(n, source, options, wl, key, work, server_pid, sent):
    """N fresh mounts of `source`, the workload on all at once; the round's figures."""
    daemons = []
    try:
        for i in range(n):
            mnt, cache = os.path.join(work, f"mnt{i}"), os.path.join(work, f"cache{i}")
            shutil.rmtree(cache, ignore_errors=True)
            os.makedirs(mnt, exist_ok=True)
            daemon = lib.Daemon(source, mnt, cache, dict(options, **{"log-level": "warning"}))
            daemon.start()
            daemons.append(daemon)
        suite.drop_caches()
        cpu0, sent0 = cpu_seconds(server_pid), sent()
        started = time.perf_counter()
        procs = [(subprocess.Popen(wl.argv(key, d.mountpoint), stdout=subprocess.DEVNULL,
                                   stderr=subprocess.PIPE), time.perf_counter()) for d in daemons]
        times, failures = [], []
        for proc, t0 in procs:
            try:
                _out, err = proc.communicate(timeout=suite.RUN_TIMEOUT)
            except subprocess.TimeoutExpired:
                proc.kill()
                _out, err = proc.communicate()
            times.append(time.perf_counter() - t0)
            if proc.returncode != 0:
                failures.append(err.decode(errors="replace").strip()[-200:])
        wall = time.perf_counter() - started
        cpu, bytes_sent = cpu_seconds(server_pid) - cpu0, sent() - sent0
        upstream = [d.stats()["upstream_bytes"] for d in daemons]
    finally:
        for d in daemons:
            d.stop(check=False)
    return {"n": n, "wall": wall, "max": max(times), "median": statistics.median(times),
            "server_cpu": cpu, "sent_per_executor": bytes_sent / n,
            "upstream_per_executor": statistics.mean(upstream), "failures": failures}


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--bin", default=os.environ.get("LAZYSTORE_BIN", suite.DEFAULT_BIN))
    parser.add_argument("--mounts", default="1,4,16")
    parser.add_argument("--rtt", type=float, default=0.5)
    parser.add_argument("--workloads", default="W2,W3")
    parser.add_argument("--upstreams", default="nfs,http,http-proxy-cache")
    parser.add_argument("--store-cache", default="/var/tmp/lazystore-bench-store")
    parser.add_argument("--json")
    args = parser.parse_args()
    if os.geteuid() != 0:
        parser.error("run as root")
    os.environ["LAZYSTORE_BIN"] = os.path.abspath(args.bin)
    if not os.environ.get("LAZYSTORE_FIXTURE_DIR"):
        build = os.path.dirname(os.path.dirname(os.path.abspath(args.bin)))
        os.environ["LAZYSTORE_FIXTURE_DIR"] = os.path.join(build, "tests", "fixture-store")
    load_start = suite.loadavg()
    fixture = lib.fixture()
    own = suite_store.bench_store(args.store_cache)
    work = tempfile.mkdtemp(prefix="lazystore-scale-")
    ganesha = nginx = proxy = lines = None
    rows = []
    try:
        export = os.path.join(work, "export")
        os.makedirs(export)
        names = {"include": os.path.basename(fixture.path("include")),
                 "python_home": os.path.basename(own["python_home"]), "large": os.path.basename(own["large"])}
        lib.copy_store(fixture.path("include"), os.path.join(export, names["include"]))
        lib.copy_store(own["python_home"], os.path.join(export, names["python_home"]))
        wl = suite.Workloads(work, export, names, 1)
        ganesha = nfs_server.Ganesha.v4(export, os.path.join(work, "ganesha"))
        lines = delay_line.DelayLines(delay_line.compile_delay_line(work))
        upstreams = args.upstreams.split(",")
        if any(u.startswith("http") for u in upstreams):
            cache_dir, public_key = suite.make_binary_cache(work, [
                (os.path.join(fixture.root, "root"), [names["include"]]),
                (os.path.dirname(os.path.dirname(os.path.dirname(own["large"]))), [names["python_home"]])])
            nginx = http_server.Nginx(cache_dir, os.path.join(work, "nginx")).start()
            if "http-proxy-cache" in upstreams:
                proxy = ProxyCache(os.path.join(work, "proxy"), nginx.port)
        lib.log(f"setup done (load {suite.loadavg()})")
        for upstream in upstreams:
            if upstream == "nfs":
                source = ganesha.url(4, nfsport=lines.port(ganesha.port, args.rtt))
                options, pid = {}, ganesha.process.pid
                sent = lambda: suite.server_bytes_sent(ganesha.port)  # noqa: E731
            else:
                # The round trip is between the executors and the first server they reach.
                front = proxy.port if upstream == "http-proxy-cache" else nginx.port
                source = f"http://127.0.0.1:{lines.port(front, args.rtt)}"
                options, pid = {"trusted-public-keys": public_key}, nginx.process.pid
                sent = nginx.bytes_served
            for key in args.workloads.split(","):
                for n in [int(x) for x in args.mounts.split(",")]:
                    if proxy is not None:
                        proxy.clear()  # every round starts with a cold tier
                    row = round_of(n, source, options, wl, key, work, pid, sent)
                    row.update({"upstream": upstream, "workload": key})
                    rows.append(row)
                    lib.log(f"{upstream} {key} N={n}: wall {row['wall']:.2f} s, slowest {row['max']:.2f} s, "
                            f"origin CPU {row['server_cpu']:.2f} s, sent/executor {row['sent_per_executor'] / 1e6:.2f} MB"
                            f"{', FAILED ' + str(row['failures'][:1]) if row['failures'] else ''} (load {suite.loadavg()})")
    finally:
        for server in (proxy, lines, nginx, ganesha):
            if server is not None:
                server.close()
        shutil.rmtree(work, ignore_errors=True)
    out = {"rtt_ms": args.rtt, "load_start": load_start, "load_end": suite.loadavg(), "cpus": os.cpu_count(),
           "rows": rows, "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())}
    if args.json:
        with open(args.json, "w") as f:
            json.dump(out, f, indent=1)
    print(f"\nScale: N executors cold at once, {args.rtt:g} ms RTT; load {load_start} → {out['load_end']} "
          f"on {out['cpus']} CPUs\n")
    print("| upstream | workload | N | wall (all done) | ÷ N=1 | slowest | median | origin CPU | "
          "origin sent / executor | lazystore upstream_bytes / executor |")
    print("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    for row in rows:
        one = next(r for r in rows if r["upstream"] == row["upstream"] and r["workload"] == row["workload"])
        print(f"| {row['upstream']} | {row['workload']} | {row['n']} | {row['wall']:.2f} s | "
              f"{row['wall'] / one['wall']:.2f}× | {row['max']:.2f} s | {row['median']:.2f} s | "
              f"{row['server_cpu']:.2f} s | {row['sent_per_executor'] / 1e6:.2f} MB | "
              f"{row['upstream_per_executor'] / 1e6:.2f} MB |" + (" FAILED" if row["failures"] else ""))


if __name__ == "__main__":
    main()
