#!/usr/bin/python3
"""A full cache disk: the cache directory on a small tmpfs (24 MiB) while more than that is read,
with `-o cache-size` above the tmpfs size (the disk fills before the bound) and below it (the
bound holds first). Every byte read is compared with the source; a chunk that cannot be stored is
served from the upstream directly; the cache stays within its bound and within the disk; the
daemon keeps caching what it can (it makes room instead of staying full), logs the condition in
one clear line, and stays alive."""

import os
import re
import subprocess

from lazystore_testlib import MiB, LazystoreTestCase, cached_bytes, main, read_file, regular_files

DISK = 24 * MiB


def disk_usage(path):
    st = os.statvfs(path)
    return (st.f_blocks - st.f_bfree) * st.f_frsize


def data_bytes(cache):
    """Disk blocks of the content cache's data files."""
    total = 0
    for dirpath, _dirs, names in os.walk(os.path.join(cache, "v1", "data")):
        for name in names:
            try:
                total += os.lstat(os.path.join(dirpath, name)).st_blocks * 512
            except FileNotFoundError:
                pass
    return total


class FullDiskTest(LazystoreTestCase):

    def setUp(self):
        super().setUp()
        self.disk = os.path.join(self.work, "disk")
        os.makedirs(self.disk)
        subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={DISK},mode=0700", "tmpfs", self.disk],
                       check=True)
        self.addCleanup(lambda: subprocess.run(["umount", "-l", self.disk]))

    def read_everything(self, daemon, label):
        """Reads every file of misc (64 MiB big.bin included) and 300 of python, twice over in
        places, compares each with the source; returns the peak disk figures seen."""
        misc = self.fixture.paths["misc"]
        python = self.fixture.paths["python"]
        files = [(misc, rel) for rel in regular_files(os.path.join(self.fixture.store, misc))]
        files += [(python, rel) for rel in regular_files(os.path.join(self.fixture.store, python))[:300]]
        wrong = []
        compared = 0
        peak_disk = peak_data = 0
        for i, (name, rel) in enumerate(files + files[:40]):
            got = read_file(daemon.path(name, rel))
            if got != read_file(os.path.join(self.fixture.store, name, rel)):
                wrong.append(f"{label}: {name}/{rel}")
            compared += len(got)
            if i % 20 == 0 or rel == "big.bin":
                peak_disk = max(peak_disk, disk_usage(self.disk))
                peak_data = max(peak_data, data_bytes(daemon.cache))
        self.assertEqual(wrong, [])
        return compared, peak_disk, peak_data

    def check_run(self, cache_size, label):
        cache = os.path.join(self.disk, "cache")
        daemon = self.mount(cache=cache, options={"cache-size": cache_size})
        compared, peak_disk, peak_data = self.read_everything(daemon, label)
        self.assertIsNone(daemon.process.poll(), "the daemon died")
        # Once more, with the kernel's page cache dropped: from the cache or the upstream.
        with open("/proc/sys/vm/drop_caches", "w") as f:
            f.write("3\n")
        again, _, _ = self.read_everything(daemon, label + " again")
        stats = daemon.stats()
        # The cache goes on caching after the disk or the bound was reached: a file read now for
        # the first time is kept.
        python = self.fixture.paths["python"]
        fresh = next(rel for rel in regular_files(os.path.join(self.fixture.store, python))[300:]
                     if os.path.getsize(os.path.join(self.fixture.store, python, rel)) > 0)
        self.assertEqual(read_file(daemon.path(python, fresh)),
                         read_file(os.path.join(self.fixture.store, python, fresh)))
        self.assertGreater(cached_bytes(daemon.path(python, fresh)), 0, stats)
        print(f"\n{label}: {compared + again} bytes compared, 0 wrong; peak disk use "
              f"{peak_disk / MiB:.1f} MiB of {DISK / MiB:.0f}, peak data {peak_data / MiB:.1f} MiB; "
              f"cache_write_errors {stats['cache_write_errors']}, evictions {stats['evictions']}, "
              f"uncached_chunks {stats.get('uncached_chunks')}")
        return daemon, stats, peak_data

    def test_cache_size_above_the_disk(self):
        daemon, stats, peak_data = self.check_run("1G", "cache-size 1G on a 24 MiB disk")
        self.assertLessEqual(peak_data, DISK)
        self.assertGreater(stats["evictions"], 0, stats)  # room was made on the full disk
        self.assertGreater(stats["uncached_chunks"], 0, stats)  # a 64 MiB file cannot fit
        daemon.stop()
        full = [line for line in daemon.stderr().splitlines() if re.search(r"disk|full|uncached", line)]
        self.assertTrue(full, "no log line about the full cache disk:\n" + daemon.stderr()[-3000:])
        self.assertLess(len(full), 10, "the full disk is logged once in a while, not per chunk:\n"
                        + "\n".join(full[:20]))

    def test_cache_size_below_the_disk(self):
        daemon, stats, peak_data = self.check_run("8M", "cache-size 8M on a 24 MiB disk")
        # The bound, plus one chunk in flight per fill (rounded to blocks) and its slot block.
        self.assertLessEqual(peak_data, 8 * MiB + 2 * MiB, stats)
        self.assertLessEqual(stats["cache_bytes"], 8 * MiB, stats)
        self.assertGreater(stats["evictions"], 0, stats)
        daemon.stop()


if __name__ == "__main__":
    main()
