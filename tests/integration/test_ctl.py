#!/usr/bin/python3
"""lazystore-ctl against a real mount: stats (text, JSON, Prometheus), prefetch, evict, verify,
the socket's mode, and clear errors when no daemon is running."""

import json
import os
import re
import stat
import subprocess

from lazystore_testlib import MiB, LazystoreTestCase, join, main, read_file

# verify logs what it dropped as warnings; nothing else is expected.
CTL_STDERR = ()


def ctl_bin():
    return os.environ["LAZYSTORE_CTL_BIN"]


class CtlTestCase(LazystoreTestCase):
    def ctl(self, daemon, *args, check=True, socket=None):
        argv = [ctl_bin()]
        argv += ["--socket", socket] if socket else ["--cache", daemon.cache]
        result = subprocess.run(argv + list(args), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                text=True, timeout=120)
        if check and result.returncode != 0:
            self.fail(f"lazystore-ctl {' '.join(args)} exited {result.returncode}: {result.stderr}")
        return result

    def stats(self, daemon):
        return json.loads(self.ctl(daemon, "stats", "--json").stdout)

    def data_files(self, daemon):
        out = []
        for dirpath, _dirs, names in os.walk(os.path.join(daemon.cache, "v1", "data")):
            out += [os.path.join(dirpath, n) for n in names]
        return out


class StatsTest(CtlTestCase):
    def test_stats_formats_and_counters(self):
        daemon = self.mount()
        misc = self.fixture.paths["misc"]
        expected = read_file(self.fixture.path("misc") + "/blobs/3m-plus.bin")
        self.assertEqual(read_file(daemon.path(misc) + "/blobs/3m-plus.bin"), expected)

        stats = self.stats(daemon)
        self.assertGreaterEqual(stats["upstream_bytes"], len(expected))
        self.assertGreaterEqual(stats["served_bytes"], len(expected))
        self.assertGreaterEqual(stats["chunk_misses"], 4)
        self.assertGreater(stats["upstream_latency"]["count"], 0)
        self.assertGreater(stats["read_latency"]["count"], 0)
        lat = stats["upstream_latency"]
        self.assertTrue(0 < lat["p50"] <= lat["p90"] <= lat["p99"], lat)

        text = self.ctl(daemon, "stats").stdout
        self.assertIn("bytes fetched", text)
        self.assertRegex(text, r"upstream latency\s+p50 ")

        prom = self.ctl(daemon, "--prometheus", "stats").stdout
        self.assertRegex(prom, r"(?m)^# TYPE lazystore_upstream_bytes_total counter$")
        self.assertRegex(prom, r"(?m)^lazystore_upstream_bytes_total \d+$")
        self.assertRegex(prom, r'(?m)^lazystore_read_latency_seconds\{quantile="0.99"\} [0-9.e-]+$')
        for line in prom.splitlines():
            if not line.startswith("#"):
                self.assertRegex(line, r'^lazystore_[a-z_]+(\{quantile="[0-9.]+"\})? [0-9.e+-]+$')

    def test_socket_is_root_only_and_daemon_absence_is_clear(self):
        daemon = self.mount()
        sock = os.path.join(daemon.cache, "control.sock")
        mode = os.lstat(sock).st_mode
        self.assertTrue(stat.S_ISSOCK(mode))
        self.assertEqual(mode & 0o777, 0o600)
        # Many requests in a row: finished connections are reaped, never "too many".
        for _ in range(50):
            self.assertIn("used", self.ctl(daemon, "cache-usage").stdout)
        bad = self.ctl(daemon, "frobnicate", check=False)
        self.assertEqual(bad.returncode, 1)
        self.assertIn("unknown command", bad.stderr)
        daemon.stop()
        self.assertFalse(os.path.exists(sock), "the daemon leaves its socket behind")
        gone = self.ctl(daemon, "stats", check=False)
        self.assertEqual(gone.returncode, 3)
        self.assertIn("is lazystore running", gone.stderr)

    def test_custom_socket_option(self):
        sock = os.path.join(self.work, "ctl.sock")
        daemon = self.mount(options={"control": sock})
        self.assertFalse(os.path.exists(os.path.join(daemon.cache, "control.sock")))
        self.assertIn("upstream_requests", self.ctl(daemon, "stats", "--json", socket=sock).stdout)


class PrefetchEvictVerifyTest(CtlTestCase):
    def test_prefetch_wait_then_reads_are_hits(self):
        daemon = self.mount()
        misc = self.fixture.paths["misc"]
        blobs = join("/nix/store", misc, "blobs")
        before = self.stats(daemon)
        out = self.ctl(daemon, "prefetch", "--wait", blobs).stdout
        self.assertRegex(out, r"^prefetched \d+ files")
        source_blobs = os.path.join(self.fixture.path("misc"), "blobs")
        total = sum(os.path.getsize(os.path.join(source_blobs, n)) for n in os.listdir(source_blobs))
        after = self.stats(daemon)
        self.assertGreaterEqual(after["upstream_bytes"] - before["upstream_bytes"], total)
        # Everything is cached now: reading through the mount fetches nothing more.
        for name in sorted(os.listdir(source_blobs)):
            self.assertEqual(read_file(os.path.join(daemon.path(misc), "blobs", name)),
                             read_file(os.path.join(source_blobs, name)), name)
        final = self.stats(daemon)
        self.assertEqual(final["upstream_bytes"], after["upstream_bytes"])
        self.assertEqual(final["chunk_misses"], after["chunk_misses"])

    def test_prefetch_in_background_and_bad_paths(self):
        daemon = self.mount()
        single = self.fixture.paths["single_file"]
        out = self.ctl(daemon, "prefetch", daemon.path(single), "--json").stdout
        self.assertEqual(json.loads(out)["queued_files"], 1)
        bad = self.ctl(daemon, "prefetch", "/etc/passwd", check=False)
        self.assertEqual(bad.returncode, 1)
        missing = self.ctl(daemon, "prefetch", "/nix/store/" + "0" * 32 + "-absent", check=False)
        self.assertEqual(missing.returncode, 1)

    def test_evict_frees_everything_not_open(self):
        daemon = self.mount()
        misc = self.fixture.paths["misc"]
        self.ctl(daemon, "prefetch", "--wait", join("/nix/store", misc, "blobs"))
        self.assertGreater(len(self.data_files(daemon)), 3)
        held = open(os.path.join(daemon.path(misc), "blobs", "small-a.bin"), "rb")
        try:
            held.read()
            report = json.loads(self.ctl(daemon, "evict", "--json").stdout)
        finally:
            held.close()
        self.assertGreater(report["bytes"], 3 * MiB)
        self.assertEqual(report["pinned_files"], 1)
        self.assertEqual(len(self.data_files(daemon)), 1)
        self.assertEqual(self.stats(daemon)["cache_bytes"], os.lstat(self.data_files(daemon)[0]).st_blocks * 512)
        # Still correct after eviction: refetched.
        expected = read_file(os.path.join(self.fixture.path("misc"), "blobs", "2m-plus-1.bin"))
        self.assertEqual(read_file(os.path.join(daemon.path(misc), "blobs", "2m-plus-1.bin")), expected)

    def test_verify_reports_and_drops_a_corrupt_chunk(self):
        daemon = self.mount(allowed_stderr=(r"^lazystore: warning: cache file .* (failed verification|holds no valid chunk)",))
        misc = self.fixture.paths["misc"]
        name = "blobs/3m-plus.bin"
        expected = read_file(os.path.join(self.fixture.path("misc"), name))
        self.ctl(daemon, "prefetch", "--wait", join("/nix/store", misc, name))
        clean = json.loads(self.ctl(daemon, "verify", "--json").stdout)
        self.assertEqual(clean["bad_chunks"], 0)
        self.assertEqual(clean["chunks"], 4)
        self.assertEqual(clean["bytes"], len(expected))

        (data_file,) = self.data_files(daemon)
        with open(data_file, "r+b") as f:
            f.seek(2 * MiB + 5)
            byte = f.read(1)
            f.seek(2 * MiB + 5)
            f.write(bytes([byte[0] ^ 0xFF]))
        report = json.loads(self.ctl(daemon, "verify", "--json").stdout)
        self.assertEqual(report["bad_chunks"], 1, report)
        self.assertEqual(self.stats(daemon)["verify_failures"], 1)
        again = json.loads(self.ctl(daemon, "verify", "--json").stdout)
        self.assertEqual((again["chunks"], again["bad_chunks"]), (3, 0))
        text = self.ctl(daemon, "verify").stdout
        self.assertRegex(text, r"verified 3 chunks .* 0 bad chunks dropped")
        # The dropped chunk is refetched on read: right bytes, one more miss.
        self.assertEqual(read_file(os.path.join(daemon.path(misc), name)), expected)


if __name__ == "__main__":
    main()
