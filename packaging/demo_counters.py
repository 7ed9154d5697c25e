#!/usr/bin/python3
"""The counters of one upstream from `lazystore-ctl stats --json`, for packaging/demo.sh.

  demo_counters.py nfs|http STATS_JSON CLOSURE_BYTES FETCHED_OUT

Prints the counters that matter for that upstream (name, value, meaning) and a line comparing
what was fetched with the closure's NAR size; writes the bytes fetched (NFS: upstream_bytes,
HTTP: http_bytes, everything received) to FETCHED_OUT.
"""

import json
import sys

COUNTERS = {
    "nfs": [
        ("upstream_requests", "calls into the NFS upstream (lookups, tree walks, READs)"),
        ("upstream_bytes", "file bytes read over NFS"),
        ("chunk_misses", "fetches from the NFS server (runs of 4 KiB blocks)"),
        ("chunk_hits", "reads answered from the disk cache"),
        ("readahead_chunks", "chunks fetched ahead of sequential reads"),
        ("metadata_misses", "store path trees listed over NFS"),
        ("metadata_hits", "store path trees from the metadata cache"),
        ("served_bytes", "bytes the program read"),
    ],
    "http": [
        ("http_requests", "HTTP requests: narinfos, manifests, Range reads of NARs"),
        ("http_bytes", "body bytes received from nginx"),
        ("manifest_paths", "store paths listed from a signed manifest (lazy, verified reads)"),
        ("nar_downloads", "whole NARs downloaded (paths without a manifest)"),
        ("block_hash_failures", "NAR blocks that did not match their signed SHA-256"),
        ("signature_failures", "narinfos refused: unsigned or badly signed"),
        ("chunk_misses", "fetches over HTTP (runs of 4 KiB blocks)"),
        ("chunk_hits", "reads answered from the disk cache"),
        ("metadata_misses", "store path trees fetched (manifests)"),
        ("metadata_hits", "store path trees from the metadata cache"),
        ("served_bytes", "bytes the program read"),
    ],
}
BYTES = {"upstream_bytes", "http_bytes", "served_bytes"}


def mib(n):
    return f"{n / 1048576:.1f} MiB"


def main():
    kind, stats_path, closure, fetched_out = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
    with open(stats_path) as f:
        stats = json.load(f)
    for name, meaning in COUNTERS[kind]:
        value = stats.get(name, 0)
        shown = mib(value) if name in BYTES else str(value)
        print(f"    | {name:<20} {shown:>11}   {meaning}")
    fetched = stats["upstream_bytes"] if kind == "nfs" else stats["http_bytes"]
    share = f" ({100 * fetched / closure:.1f} %)" if closure else ""
    over = "over NFS" if kind == "nfs" else "over HTTP, every block checked against its signed manifest,"
    print(f"    fetched {mib(fetched)} {over} for a closure of {mib(closure)} of NAR{share}; "
          f"the program read {mib(stats['served_bytes'])}")
    with open(fetched_out, "w") as f:
        f.write(f"{fetched}\n")


if __name__ == "__main__":
    main()
