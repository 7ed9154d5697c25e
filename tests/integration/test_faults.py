#!/usr/bin/python3
"""Server faults between lazystore and a real NFS server: a fault-injecting TCP proxy
(fault_proxy.py) sits on 127.0.0.1 between the daemon and nfs-ganesha's NFSv4 port.

Cases: the server unreachable (connections closed, new ones refused, then blackholed), slow (every
reply delayed below and above `upstream-timeout`), connections reset in the middle of READ
replies, and the server killed (SIGKILL) and started again on the same port while readers run.
Each time: cached data keeps being served, uncached reads fail with EIO within a generous bound
(the time is measured and printed) or succeed after recovery, every byte read is compared with
the source (nothing wrong is ever returned), and the daemon stays alive (it must also unmount
cleanly with nothing but warnings on stderr)."""

import errno
import os
import random
import threading
import time

from fault_proxy import FaultProxy
from lazystore_testlib import MiB, LazystoreTestCase, log, main, read_file, regular_files, \
    tree_differences
from nfs_server import WIDE_DEEP, Ganesha, NetnsDaemon, wait_until, wide_store_path

TIMEOUT = 2.0  # -o upstream-timeout of every mount here
# An uncached read of a dead or silent server: a call or a connection attempt on a pooled
# connection, one retry on a fresh one, the kernel retrying a failed read-ahead synchronously.
# Generous on purpose (a shared 2-CPU machine); the measured times are printed.
EIO_BOUND = 4 * TIMEOUT + 6.0


def read_uncached_by_the_kernel(path, offset=0, length=None):
    """Reads a file through the mount with the kernel's page cache of it dropped before and
    after, so that the bytes come from the daemon (its cache or the upstream) every time."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        if length is None:
            length = os.fstat(fd).st_size - offset
        chunks = []
        done = 0
        while done < length:
            data = os.pread(fd, min(length - done, 4 * MiB), offset + done)
            if not data:
                break
            chunks.append(data)
            done += len(data)
        return b"".join(chunks)
    finally:
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        os.close(fd)


def settle():
    """Lets background read-ahead in flight finish and the daemon's hold on reconnecting after a
    failed attempt (1 s) expire, so that the next uncached read meets the fault itself."""
    time.sleep(1.2)


class FaultTestCase(LazystoreTestCase):

    def setUp(self):
        super().setUp()
        # Exported as it is (read-only; nothing here changes it): a private copy of 10,000 hard
        # links costs seconds to make and remove on a busy disk.
        self.export = self.fixture.store
        self.server = Ganesha.v4(self.export, os.path.join(self.work, "ganesha"))
        self.addCleanup(self.server.close)
        self.proxy = FaultProxy(self.server.port).start()
        self.addCleanup(self.proxy.close)  # cleanups run last-in first: before the daemons stop
        self.misc = self.fixture.paths["misc"]
        self.python = self.fixture.paths["python"]
        self.compared = 0      # bytes read through the mount and compared with the source
        self.wrong = []        # reads that returned bytes other than the source's
        self.eio_seconds = []  # how long each expected EIO took

    def mount_through_proxy(self, options=None):
        opts = {"upstream-timeout": TIMEOUT}
        opts.update(options or {})
        url = f"nfs://127.0.0.1/store?version=4&nfsport={self.proxy.port}"
        self.daemon = self.mount(url, opts)
        return self.daemon

    def source(self, name, rel):
        return os.path.join(self.export, name, rel)

    def check(self, name, rel, offset=0, length=None):
        """Reads through the mount (bypassing the kernel's cache) and compares with the source;
        returns the bytes, or raises the OSError of the read."""
        got = read_uncached_by_the_kernel(self.daemon.path(name, rel), offset, length)
        with open(self.source(name, rel), "rb") as f:
            f.seek(offset)
            want = f.read(len(got) if length is None else length)
        if got != want:
            self.wrong.append(f"{name}/{rel} at {offset}+{length}: {len(got)} bytes differ "
                              f"from the source's {len(want)}")
        self.compared += len(got)
        return got

    def expect_eio(self, name, rel, offset=0, length=MiB):
        started = time.monotonic()
        with self.assertRaises(OSError) as raised:
            self.check(name, rel, offset, length)
        seconds = time.monotonic() - started
        self.assertEqual(raised.exception.errno, errno.EIO, raised.exception)
        self.eio_seconds.append(seconds)
        self.assertLess(seconds, EIO_BOUND, f"EIO for {rel} took {seconds:.1f} s")
        return seconds

    def readable(self, name, rel, offset=0, length=MiB):
        try:
            self.check(name, rel, offset, length)
            return True
        except OSError as e:
            self.assertEqual(e.errno, errno.EIO, e)
            return False

    def assert_alive_and_correct(self):
        self.assertIsNone(self.daemon.process.poll(), "the daemon died")
        self.assertEqual(self.wrong, [], "wrong bytes were returned")

    def report(self, what, **figures):
        eio = ""
        if self.eio_seconds:
            eio = (f", EIO after {min(self.eio_seconds):.2f}–{max(self.eio_seconds):.2f} s "
                   f"({len(self.eio_seconds)} reads)")
        extra = "".join(f", {k} {v}" for k, v in figures.items())
        log(f"FAULTS {what}: {self.compared} bytes compared, 0 wrong{eio}{extra}; "
            f"proxy {self.proxy.stats()}")

    def misc_files(self):
        """The misc store path's non-empty files, largest first."""
        files = [rel for rel in regular_files(os.path.join(self.export, self.misc))
                 if os.path.getsize(self.source(self.misc, rel)) > 0]
        return sorted(files, key=lambda rel: -os.path.getsize(self.source(self.misc, rel)))


class FaultTest(FaultTestCase):

    def test_server_unreachable(self):
        daemon = self.mount_through_proxy()
        files = self.misc_files()
        cached = [rel for rel in files if rel != "big.bin"][::2]
        for rel in cached:
            self.check(self.misc, rel)
        self.check(self.misc, "big.bin", 0, 4 * MiB)  # chunks 0–3 of big.bin, + read-ahead
        os.listdir(daemon.path(self.python))  # python's metadata cached, none of its content
        python_files = regular_files(os.path.join(self.export, self.python))
        unseen = self.fixture.paths["single_file"]  # a store path never looked up

        first_eio = {}
        for fault, offset in (("refused", 20 * MiB), ("blackholed", 56 * MiB)):
            with self.subTest(fault=fault):
                settle()
                # New connections first, so that none is made in between; then the open ones.
                self.proxy.refuse() if fault == "refused" else self.proxy.blackhole()
                self.proxy.close_all()
                for rel in cached:
                    self.check(self.misc, rel)
                self.check(self.misc, "big.bin", 0, MiB)
                settle()
                first_eio[fault] = f"{self.expect_eio(self.misc, 'big.bin', offset):.2f} s"
                self.expect_eio(self.python, python_files.pop())
                started = time.monotonic()
                self.assertErrno(errno.EIO, os.stat, daemon.path(unseen))
                self.eio_seconds.append(time.monotonic() - started)
                self.assertLess(self.eio_seconds[-1], EIO_BOUND)
                # The top level offline: the store paths the cache knows.
                listed = set(os.listdir(daemon.mountpoint))
                self.assertIn(self.misc, listed)
                self.proxy.passthrough()
                wait_until(lambda: self.readable(self.misc, "big.bin", offset), 3 * EIO_BOUND,
                           f"reads work again once the server is reachable ({fault})")
        self.check(self.misc, "big.bin", 16 * MiB, 8 * MiB)
        for rel in python_files[:30]:
            self.check(self.python, rel)
        self.assertEqual(read_file(daemon.path(unseen)), read_file(os.path.join(self.export, unseen)))
        stats = daemon.stats()
        self.assertGreater(stats["upstream_connect_failures"] + stats["upstream_timeouts"], 0, stats)
        self.assert_alive_and_correct()
        self.report("unreachable (refused, blackholed)", first_eio=first_eio,
                    connect_failures=stats["upstream_connect_failures"],
                    timeouts=stats["upstream_timeouts"])

    def test_slow_server(self):
        daemon = self.mount_through_proxy()
        files = self.misc_files()
        os.listdir(daemon.path(self.misc))  # the tree listed at full speed
        self.check(self.misc, "blobs/small-a.bin")
        # Below the deadline: everything is served, only later.
        below_ms = 150
        self.proxy.delay(below_ms)
        started = time.monotonic()
        self.check(self.misc, "big.bin", 0, 6 * MiB)
        for rel in files[1:6]:
            self.check(self.misc, rel)
        slow_seconds = time.monotonic() - started
        self.assertGreater(slow_seconds, below_ms / 1000.0)  # the delay was really there
        # Above it: uncached reads fail (EIO), cached ones are served at once.
        self.proxy.delay(int(TIMEOUT * 1000) + 1500)
        self.expect_eio(self.misc, "big.bin", 48 * MiB)
        self.expect_eio(self.misc, "blobs/unread.bin", 0, None)
        started = time.monotonic()
        self.check(self.misc, "big.bin", 0, 6 * MiB)
        for rel in files[1:6]:
            self.check(self.misc, rel)
        cached_seconds = time.monotonic() - started
        self.assertLess(cached_seconds, EIO_BOUND)
        # Fast again: the same reads succeed.
        self.proxy.delay(0)
        wait_until(lambda: self.readable(self.misc, "big.bin", 48 * MiB), 3 * EIO_BOUND,
                   "reads work again once the server is fast")
        self.check(self.misc, "blobs/unread.bin")
        stats = daemon.stats()
        self.assertGreater(stats["upstream_timeouts"], 0, stats)
        self.assert_alive_and_correct()
        self.report("slow", below=f"{below_ms} ms: 6 MiB + 5 files in {slow_seconds:.2f} s",
                    above=f"{int(TIMEOUT * 1000) + 1500} ms", cached_reads=f"{cached_seconds:.2f} s",
                    timeouts=stats["upstream_timeouts"])

    def test_connections_dropped_mid_read(self):
        daemon = self.mount_through_proxy({"readahead": 2})
        os.listdir(daemon.path(self.misc))
        rng = random.Random(7)
        drops = 0
        failed = 0
        # Cut points inside one 1 MiB READ reply (header, first segment, middle, near its end).
        for i, cut in enumerate((40, 1000, 70_000, 300_000, 700_000, 1_000_000, 1_048_000)):
            before = self.proxy.stats()["dropped"]
            self.proxy.drop_after(cut)
            offset = (4 + 8 * i) * MiB + rng.randrange(0, MiB)  # apart: no read-ahead reaches it
            try:
                self.check(self.misc, "big.bin", offset, MiB)
            except OSError as e:
                self.assertEqual(e.errno, errno.EIO, e)
                failed += 1
            wait_until(lambda: self.proxy.stats()["dropped"] > before, 10, f"the cut at {cut} bytes")
            drops += 1
            # Then the same range and a fresh one are served (reconnected by itself).
            wait_until(lambda: self.readable(self.misc, "big.bin", offset, MiB), EIO_BOUND,
                       f"reads after the cut at {cut} bytes")
            self.check(self.misc, "big.bin", offset + 2 * MiB, 256 * 1024)
        # Drops while 4 readers fetch different files at once.
        files = [rel for rel in self.misc_files() if rel != "big.bin"]
        for cut in (5000, 500_000):
            self.proxy.drop_after(cut)
            threads = [threading.Thread(target=self.readable, args=(self.misc, rel, 0, None))
                       for rel in files[:4]]
            for t in threads:
                t.start()
            for t in threads:
                t.join()
            drops += 1
        for rel in files:
            self.check(self.misc, rel)
        self.check(self.misc, "big.bin")
        stats = daemon.stats()
        self.assertGreater(self.proxy.stats()["dropped"], 0)
        self.assertGreater(stats["upstream_disconnects"], 0, stats)
        self.assert_alive_and_correct()
        self.report("dropped mid-READ", cuts=drops, reads_failed=failed,
                    disconnects=stats["upstream_disconnects"], connects=stats["upstream_connects"])

    def test_server_killed_and_restarted(self):
        daemon = self.mount_through_proxy()
        os.listdir(daemon.path(self.python))
        os.listdir(daemon.path(self.misc))
        python_files = regular_files(os.path.join(self.export, self.python))
        cached = python_files[:150]
        for rel in cached:
            self.check(self.python, rel)
        uncached = python_files[150:]
        stop = threading.Event()
        outcomes = {"ok": 0, "eio": 0, "other": []}
        lock = threading.Lock()

        def reader(seed):
            r = random.Random(seed)
            while not stop.is_set():
                name, rel = (self.misc, "big.bin") if r.random() < 0.3 else (self.python, r.choice(uncached))
                size = os.path.getsize(self.source(name, rel))
                offset = r.randrange(0, max(1, size))
                try:
                    self.check(name, rel, offset, min(MiB, size - offset))
                    key = "ok"
                except OSError as e:
                    key = "eio" if e.errno == errno.EIO else None
                    if key is None:
                        with lock:
                            outcomes["other"].append(f"{rel}: {e}")
                        continue
                with lock:
                    outcomes[key] += 1

        threads = [threading.Thread(target=reader, args=(i,)) for i in range(4)]
        for t in threads:
            t.start()
        restarts = 0
        try:
            for _ in range(2):
                time.sleep(1.0)
                self.server.kill()  # SIGKILL
                for rel in cached[::10]:
                    self.check(self.python, rel)  # the cache keeps serving
                time.sleep(TIMEOUT)
                self.server.start()  # the same port
                restarts += 1
        finally:
            time.sleep(1.0)
            stop.set()
            for t in threads:
                t.join()
        wait_until(lambda: self.readable(self.misc, "big.bin", 60 * MiB), 3 * EIO_BOUND,
                   "reads work again after the restart")
        for rel in uncached[:200]:
            self.check(self.python, rel)
        stats = daemon.stats()
        self.assertEqual(outcomes["other"], [])
        self.assertGreater(outcomes["ok"], 0)
        self.assertGreater(stats["upstream_connects"], 1, stats)
        self.assert_alive_and_correct()
        self.report("killed and restarted", restarts=restarts, reads_ok=outcomes["ok"],
                    reads_eio=outcomes["eio"], connects=stats["upstream_connects"],
                    disconnects=stats["upstream_disconnects"])


WALK_TIMEOUT = 4.0  # upstream-timeout of the walk fault mounts: the walk must not time out by itself
WALK_EIO_BOUND = 2 * WALK_TIMEOUT + 6.0


class WalkFaultTest(LazystoreTestCase):
    """Faults while a store path is walked with many requests in flight (NFSv4; NFSv3 in the
    server's private network namespace, through a proxy there): the server goes silent, or its
    connections are closed under the walk. Lookups answered before stay answered; a directory
    not listed yet answers EIO within the deadline; nothing is persisted; once the server is back
    the next lookup walks again and the tree equals the export."""

    def setUp(self):
        super().setUp()
        self.export = os.path.join(self.work, "export")
        os.makedirs(self.export)
        self.name, self.dirs = wide_store_path(self.export)

    def start(self, version):
        work = os.path.join(self.work, "ganesha")
        server = Ganesha.v4(self.export, work) if version == 4 else Ganesha.v3(self.export, work)
        self.addCleanup(server.close)
        proxy = server.fault_proxy()
        self.addCleanup(proxy.close)  # cleanups run last-in first: before the daemons stop
        mountpoint = os.path.join(self.work, "mnt")
        os.makedirs(mountpoint)
        daemon = NetnsDaemon(server, server.url(version, nfsport=proxy.port), mountpoint,
                             os.path.join(self.work, "cache"), {"upstream-timeout": WALK_TIMEOUT})
        self.daemons.append(daemon)
        daemon.start()
        return proxy, daemon

    def check(self, version, fault):
        proxy, daemon = self.start(version)
        tree_file = os.path.join(daemon.cache, "v1", "meta", self.name + ".tree")
        proxy.delay(40)  # the walk takes dozens of round trips, the lookup below a few
        self.assertEqual(read_file(daemon.path(self.name, WIDE_DEEP)), b"found it\n")
        self.assertFalse(os.path.exists(tree_file), "the walk ended before the fault")
        proxy.delay(60_000)  # silent: every reply from now on is held
        if fault == "closed":
            proxy.close_all()  # and the connections the walk uses are gone
        started = time.monotonic()
        self.assertErrno(errno.EIO, os.listdir, daemon.path(self.name, "d37", "s21"))
        seconds = time.monotonic() - started
        self.assertLess(seconds, WALK_EIO_BOUND)
        # What was answered before stays answered, from memory.
        self.assertEqual(read_file(daemon.path(self.name, WIDE_DEEP)), b"found it\n")
        self.assertFalse(os.path.exists(tree_file), "a walk that failed was persisted")
        proxy.delay(0)
        proxy.close_all()  # the held replies go with their connections
        wait_until(lambda: self._listable(daemon.path(self.name, "d37", "s21")), 3 * WALK_EIO_BOUND,
                   "listing works again once the server answers")
        wait_until(lambda: os.path.exists(tree_file), 120, "the new walk finishes and is persisted")
        self.assertEqual(tree_differences(os.path.join(self.export, self.name), daemon.path(self.name)), [])
        stats = daemon.stats()
        self.assertGreaterEqual(stats["metadata_misses"], 2, stats)  # walked again
        log(f"FAULTS walk NFSv{version} {fault}: EIO after {seconds:.2f} s, then walked again; proxy {proxy.stats()}")

    @staticmethod
    def _listable(path):
        try:
            os.listdir(path)
            return True
        except OSError as e:
            if e.errno != errno.EIO:
                raise
            return False

    def test_v4_silent(self):
        self.check(4, "silent")

    def test_v4_closed(self):
        self.check(4, "closed")

    def test_v3_silent(self):
        self.check(3, "silent")

    def test_v3_closed(self):
        self.check(3, "closed")


if __name__ == "__main__":
    main()
