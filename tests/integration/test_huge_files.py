#!/usr/bin/python3
"""Files that claim absurd sizes. A directory upstream on a tmpfs holds a sparse file of 2^52
bytes (4 PiB, the largest lazystore serves) with known bytes far apart, and one of 2^52 + 5 MiB
(the size that made every server crash on a wrapped chunk count): reads of the first at chunk
indices past 2^32 return the right bytes while the same process serves; the second is a clean
error. With the cache on a disk that can hold such a file (tmpfs), its chunks are cached and
served after a restart with the upstream gone."""

import errno
import os
import subprocess

from lazystore_testlib import MiB, LazystoreTestCase, cached_bytes, main, random_hash

MAX_FILE_SIZE = 1 << 52  # Tree::kMaxFileSize
# Where the known bytes are: the start, chunk 2^32 of 64 KiB chunks, and the last two chunks.
OFFSETS = (0, (1 << 32) * 65536 + 12345, MAX_FILE_SIZE - MiB - 7, MAX_FILE_SIZE - 100)
READ = 4096
# A chunk the cache's disk cannot hold (ext4 ends at 16 TiB) is served uncached, with a warning.
TOO_LARGE_FOR_DISK = (r"^lazystore: warning: content cache .*File too large",)
REFUSED = (r"^lazystore: warning: lookup .*more than the largest file lazystore serves",)


def marker(offset):
    return f"<bytes at {offset}>".encode().ljust(64, b".")


class HugeFileTest(LazystoreTestCase):

    def setUp(self):
        super().setUp()
        self.upstream = self.tmpfs("upstream")
        self.huge = f"{random_hash()}-huge"
        self.too_big = f"{random_hash()}-too-big"
        os.makedirs(os.path.join(self.upstream, self.huge))
        with open(os.path.join(self.upstream, self.huge, "sparse"), "wb") as f:
            f.truncate(MAX_FILE_SIZE)
            for offset in OFFSETS:
                f.seek(offset)
                f.write(marker(offset)[:MAX_FILE_SIZE - offset])
        os.makedirs(os.path.join(self.upstream, self.too_big))
        with open(os.path.join(self.upstream, self.too_big, "sparse"), "wb") as f:
            f.truncate(MAX_FILE_SIZE + 5 * MiB)

    def tmpfs(self, name):
        path = os.path.join(self.work, name)
        os.makedirs(path)
        subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64M,mode=0700", "tmpfs", path], check=True)
        self.addCleanup(lambda: subprocess.run(["umount", "-l", path]))
        return path

    def expected(self, offset):
        with open(os.path.join(self.upstream, self.huge, "sparse"), "rb") as f:
            return os.pread(f.fileno(), READ, offset)

    def check_reads(self, daemon, expected):
        path = daemon.path(self.huge, "sparse")
        self.assertEqual(os.stat(path).st_size, MAX_FILE_SIZE)
        with open(path, "rb") as f:
            for offset in OFFSETS:
                with self.subTest(offset=offset):
                    got = os.pread(f.fileno(), READ, offset)
                    self.assertEqual(got, expected[offset])
                    self.assertTrue(got.startswith(marker(offset)[:len(got)]))

    def test_reads_past_2_32_chunks_and_a_size_past_the_largest(self):
        expected = {offset: self.expected(offset) for offset in OFFSETS}
        for chunk_size in ("64K", "1M"):
            with self.subTest(chunk_size=chunk_size):
                daemon = self.mount(self.upstream, cache=os.path.join(self.work, f"cache-{chunk_size}"),
                                    mountpoint=os.path.join(self.work, f"mnt-{chunk_size}"),
                                    options={"chunk-size": chunk_size},
                                    allowed_stderr=TOO_LARGE_FOR_DISK + REFUSED)
                server = daemon.serving_pid()
                self.check_reads(daemon, expected)
                # The size the old chunk count wrapped on is refused, cleanly and at once.
                self.assertErrno(errno.EIO, os.stat, daemon.path(self.too_big, "sparse"))
                self.check_reads(daemon, expected)
                self.assertEqual(daemon.serving_pid(), server, "the serving process changed")
                stats = daemon.stats()
                print(f"\nchunk-size {chunk_size}: {stats['upstream_bytes']} upstream bytes, "
                      f"{stats['uncached_chunks']} uncached chunks, cache_bytes {stats['cache_bytes']}")
                daemon.stop()
                self.assertIn("more than the largest file lazystore serves", daemon.stderr())

    def test_cached_on_a_sparse_disk_and_served_offline_after_a_restart(self):
        expected = {offset: self.expected(offset) for offset in OFFSETS}
        cache = os.path.join(self.tmpfs("disk"), "cache")
        daemon = self.mount(self.upstream, cache=cache)
        self.check_reads(daemon, expected)
        stats = daemon.stats()
        self.assertEqual(stats["uncached_chunks"], 0, stats)
        cached = cached_bytes(daemon.path(self.huge, "sparse"))
        # The chunk at offset 0 (a stream's start) and the 4 KiB blocks of the three random reads.
        self.assertGreaterEqual(cached, MiB + 3 * READ)
        daemon.stop()

        os.rename(os.path.join(self.upstream, self.huge), os.path.join(self.upstream, "away"))
        daemon.start()
        self.assertEqual(cached_bytes(daemon.path(self.huge, "sparse")), cached)
        self.check_reads(daemon, expected)
        self.assertEqual(daemon.stats()["upstream_bytes"], 0)
        daemon.stop()


if __name__ == "__main__":
    main()
