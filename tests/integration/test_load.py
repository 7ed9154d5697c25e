#!/usr/bin/python3
"""A short run of the load benchmark (tests/bench/load.py): 64 concurrent readers for ~10 s over
the mixed workload (stat, readdir, whole small files, sequential and random reads of large
files, readlink, 64 files open at once) against nfs-ganesha through a fresh mount with an empty
cache. Zero errors, zero wrong answers (every byte compared with the export), the daemon's RSS
under a generous bound, and it stays alive."""

import os
import sys

from lazystore_testlib import MiB, LazystoreTestCase, log, main
from nfs_server import Ganesha

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "bench"))
import load  # noqa: E402

READERS = 64
SECONDS = float(os.environ.get("LAZYSTORE_LOAD_SECONDS", "10"))
RSS_BOUND_KIB = 512 * 1024  # generous: ~55 MiB were measured with 64 readers for 60 s


class LoadTest(LazystoreTestCase):

    def test_sixty_four_readers_mixed_workload(self):
        export = self.fixture.store  # exported read-only as it is, nothing changes it
        server = Ganesha.v4(export, os.path.join(self.work, "ganesha"))
        self.addCleanup(server.close)
        daemon = self.mount(server.url(4), {"upstream-timeout": 10})
        # The store paths whose first listing takes seconds, not the 9000-entry /usr/include one.
        names = [self.fixture.paths["misc"], self.fixture.paths["python"]]
        catalog = load.Catalog(export, names)
        result = load.run_load(daemon.serving_pid(), daemon.mountpoint, catalog, READERS, SECONDS,
                               processes=8)
        log(f"LOAD {READERS} readers, {result['seconds']} s: {result['total_ops']} ops "
            f"({result['ops_per_second']}/s) {result['ops']}, errors {result['errors']}, wrong "
            f"{result['wrong']}, {result['bytes'] / MiB:.0f} MiB compared, RSS peak "
            f"{result['rss_peak_kib'] / 1024:.1f} MiB, end {result['rss_end_kib'] / 1024:.1f} MiB")
        self.assertEqual(result["errors"], 0, result["error_samples"])
        self.assertEqual(result["wrong"], 0, result["wrong_samples"])
        self.assertGreater(result["total_ops"], READERS)
        self.assertGreater(len(result["ops"]), 5, result["ops"])  # most kinds of operation ran
        self.assertLess(result["rss_peak_kib"], RSS_BOUND_KIB)
        self.assertIsNone(daemon.process.poll(), "the daemon died")
        self.assertEqual(daemon.stats()["errors"], 0)


if __name__ == "__main__":
    main()
