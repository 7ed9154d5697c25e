#!/usr/bin/python3
"""Open files and the descriptor limit. Under `ulimit -n 64` (soft and hard) a build that holds
500 files of the store open at once reads every one of them correctly: the daemon keeps its
cache files' descriptors in a bounded pool and reopens them on demand. With a soft limit below
the hard one (systemd's 1024), the daemon raises its soft limit to the hard one at start."""

import os
import resource

from lazystore_testlib import Daemon, LazystoreTestCase, drop_page_cache, main, read_file, \
    regular_files

FILES = 500


class LimitedDaemon(Daemon):
    """The daemon started under shell `ulimit` settings."""

    def __init__(self, limits, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.limits = limits

    def argv(self):
        return ["/bin/sh", "-c", f'{self.limits} && exec "$@"', "sh", *super().argv()]


def read_whole(fd):
    """All bytes of an open file, from offset 0 (the handle's position is left alone)."""
    parts, offset = [], 0
    while part := os.pread(fd, 1 << 20, offset):
        parts.append(part)
        offset += len(part)
    return b"".join(parts)


def open_files_limit(pid):
    """(soft, hard) RLIMIT_NOFILE of a process, from /proc."""
    with open(f"/proc/{pid}/limits") as f:
        for line in f:
            if line.startswith("Max open files"):
                soft, hard = line.split()[3:5]
                return int(soft), int(hard)
    raise AssertionError(f"no open files limit for {pid}")


class DescriptorTest(LazystoreTestCase):

    def limited(self, limits):
        mountpoint = os.path.join(self.work, "mnt")
        os.makedirs(mountpoint)
        daemon = LimitedDaemon(limits, self.fixture.store, mountpoint, os.path.join(self.work, "cache"))
        self.daemons.append(daemon)
        return daemon.start()

    def sample(self, count):
        """`count` distinct non-empty regular files of the fixture store: (store path, rel)."""
        files = []
        for name in sorted(self.fixture.store_paths()):
            top = os.path.join(self.fixture.store, name)
            if not os.path.isdir(top):
                continue
            for rel in regular_files(top):
                if os.path.getsize(os.path.join(top, rel)) > 0:
                    files.append((name, rel))
        self.assertGreaterEqual(len(files), count, "the fixture has too few files")
        step = len(files) // count
        return files[::step][:count]

    def test_500_open_files_under_ulimit_n_64(self):
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        if soft < FILES + 100:  # the test itself holds the 500 files open
            resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, FILES + 100), hard))
        daemon = self.limited("ulimit -n 64")
        server = daemon.serving_pid()
        self.assertEqual(open_files_limit(server), (64, 64))
        files = self.sample(FILES)
        handles = []
        try:
            for name, rel in files:
                handles.append(open(daemon.path(name, rel), "rb"))
            peak = len(os.listdir(f"/proc/{server}/fd"))
            # Every file read while all 500 are open, twice: in order, then in reverse from the
            # cache (the kernel's page cache dropped: the daemon reads its data files again).
            wrong = []
            for order in (range(FILES), reversed(range(FILES))):
                drop_page_cache()
                for i in order:
                    name, rel = files[i]
                    got = read_whole(handles[i].fileno())
                    if got != read_file(os.path.join(self.fixture.store, name, rel)):
                        wrong.append(f"{name}/{rel}")
                    peak = max(peak, len(os.listdir(f"/proc/{server}/fd")))
            self.assertEqual(wrong, [])
        finally:
            for handle in handles:
                handle.close()
        stats = daemon.stats()
        print(f"\n{FILES} files open under ulimit -n 64: 0 wrong; serving process descriptors "
              f"peak {peak}; cache_reopens {stats['cache_reopens']}, errors {stats['errors']}")
        self.assertEqual(daemon.serving_pid(), server)
        self.assertEqual(stats["errors"], 0, stats)
        self.assertGreater(stats["cache_reopens"], 0, stats)
        self.assertLessEqual(peak, 64)
        daemon.stop()

    def test_the_soft_limit_is_raised_to_the_hard_one(self):
        daemon = self.limited("ulimit -Sn 64 && ulimit -Hn 4096")
        self.assertEqual(open_files_limit(daemon.process.pid), (4096, 4096))
        self.assertEqual(open_files_limit(daemon.serving_pid()), (4096, 4096))
        daemon.stop()


if __name__ == "__main__":
    main()
