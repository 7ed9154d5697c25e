#!/usr/bin/python3
"""Parallel readers of overlapping data all get the right bytes, and concurrent misses of one chunk
are fetched from the upstream once."""

import os
import random
import threading

from lazystore_testlib import MiB, LazystoreTestCase, main, read_file, regular_files

READERS = 8
CHUNK = MiB


class ParallelReadersTest(LazystoreTestCase):

    def test_parallel_overlapping_readers(self):
        # readahead=0: every byte fetched is one some reader asked for, so upstream_bytes
        # measures merging alone.
        daemon = self.mount(options={"chunk-size": "1M", "readahead": 0})
        misc = self.fixture.paths["misc"]
        python = self.fixture.paths["python"]
        big_source = os.path.join(self.fixture.store, misc, "big.bin")
        with open(big_source, "rb") as f:
            big = f.read()
        big_chunks = len(big) // CHUNK

        rng = random.Random(42)
        # A pool of chunks all readers share, read in the same order so that they collide, each
        # reader at its own offsets inside a chunk (first 3/4: kernel read-ahead stays inside).
        pool = rng.sample(range(big_chunks), 24)
        small = [rel for rel in regular_files(os.path.join(self.fixture.store, python))
                 if rel.endswith(".py")]
        small = sorted(rng.sample(small, 150))
        small_data = {rel: read_file(os.path.join(self.fixture.store, python, rel)) for rel in small}

        plans = []
        for reader in range(READERS):
            r = random.Random(reader)
            chunks = [c for c in pool if r.random() < 0.75] + r.sample(range(big_chunks), 2)
            reads = [(c * CHUNK + r.randrange(0, 3 * CHUNK // 4 - 65536), r.choice([4096, 65536, 12345]))
                     for c in chunks]
            files = [rel for rel in small if r.random() < 0.8]
            plans.append((reads, files))

        distinct_chunks = {off // CHUNK for reads, _ in plans for off, _size in reads}
        distinct_files = {rel for _, files in plans for rel in files}
        small_bytes = sum(len(small_data[rel]) for rel in distinct_files)
        distinct_bytes = len(distinct_chunks) * CHUNK + small_bytes
        # The 4 KiB blocks the reads of big.bin cover: what the cache must fetch at the least (a
        # small read fetches only its blocks, a 64 KiB one its whole chunk).
        distinct_blocks = {b for reads, _ in plans for off, size in reads
                           for b in range(off // 4096, (off + size - 1) // 4096 + 1)}

        before = daemon.stats()
        barrier = threading.Barrier(READERS)
        failures = []

        def reader(index):
            reads, files = plans[index]
            try:
                with open(daemon.path(misc, "big.bin"), "rb") as f:
                    barrier.wait(timeout=30)
                    for offset, size in reads:
                        data = os.pread(f.fileno(), size, offset)
                        if data != big[offset:offset + size]:
                            failures.append(f"reader {index}: wrong bytes at {offset}+{size}")
                for rel in files:
                    with open(daemon.path(python, rel), "rb") as f:
                        if f.read() != small_data[rel]:
                            failures.append(f"reader {index}: wrong bytes in {rel}")
            except Exception as e:  # reported below with the reader's number
                failures.append(f"reader {index}: {e!r}")

        threads = [threading.Thread(target=reader, args=(i,)) for i in range(READERS)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=300)
        self.assertFalse(any(t.is_alive() for t in threads), "readers hang")
        self.assertEqual(failures, [])

        after = daemon.stats()
        fetched = after["upstream_bytes"] - before["upstream_bytes"]
        misses = after["chunk_misses"] - before["chunk_misses"]
        distinct_count = len(distinct_chunks) + len(distinct_files)
        print(f"\n{READERS} readers: distinct chunks+files {distinct_count} ({distinct_bytes} bytes), "
              f"upstream_bytes {fetched}, chunk_misses {misses}, stats {after}")
        self.assertLessEqual(fetched, 1.5 * distinct_bytes,
                             f"upstream_bytes {fetched} > 1.5 x distinct data {distinct_bytes}: "
                             f"concurrent misses not merged? (chunk_misses {misses})")
        self.assertGreaterEqual(fetched, len(distinct_blocks) * 4096 + small_bytes, "fewer bytes fetched than read?")


if __name__ == "__main__":
    main()
