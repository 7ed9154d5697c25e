#!/usr/bin/python3
"""The NFS upstream against a real NFS server (nfs-ganesha, VFS FSAL) exporting a real Nix store:
NFSv4 on 127.0.0.1; NFSv3 (the seed's version, fstab form host:/path) with rpcbind in a private
network namespace. Byte equality, paths appearing while mounted, .lock hiding, a stopped and a
frozen server (cached reads go on, uncached ones fail with EIO within the deadline), a restarted
server (everything works again without a remount), 16 parallel readers."""

import errno
import os
import random
import shutil
import subprocess
import threading
import time

from lazystore_testlib import LazystoreTestCase, log, main, read_file, regular_files, \
    tree_differences
from nfs_server import WIDE_DEEP, Ganesha, NetnsDaemon, wait_until, wide_store_path

TIMEOUT = 2.0  # upstream-timeout of the mounts below
SERVER_WARNINGS = (r"lazystore: error: read .*", r"lazystore: error: .*(timed out|deadline|connection)")


class NfsTestCase(LazystoreTestCase):
    server = None
    copy_fixture = True  # the export starts as a copy of the fixture store, else empty

    def setUp(self):
        super().setUp()
        if self.copy_fixture:
            self.export = self.private_upstream("export")
        else:
            self.export = os.path.join(self.work, "export")
            os.makedirs(self.export)
        self.servers = []
        self.addCleanup(self._stop_servers)  # runs before the daemons are stopped

    def _stop_servers(self):
        for server in self.servers:
            server.close()

    def mount_nfs(self, server, source, options=None, **kwargs):
        mountpoint = os.path.join(self.work, "mnt")
        os.makedirs(mountpoint, exist_ok=True)
        opts = {"upstream-timeout": TIMEOUT}
        opts.update(options or {})
        daemon = NetnsDaemon(server, source, mountpoint, os.path.join(self.work, "cache"), opts,
                             allowed_stderr=kwargs.get("allowed_stderr", ()))
        self.daemons.append(daemon)
        return daemon.start()

    def assert_same_as_export(self, daemon, names):
        for name in names:
            problems = tree_differences(os.path.join(self.export, name), daemon.path(name))
            self.assertEqual(problems, [], f"{name} differs through the NFS mount")


class NfsV4Test(NfsTestCase):

    def start_server(self):
        server = Ganesha.v4(self.export, os.path.join(self.work, "ganesha"))
        self.servers.append(server)
        return server

    def test_every_file_equals_the_export(self):
        server = self.start_server()
        daemon = self.mount_nfs(server, server.url(4))
        self.assertEqual(set(os.listdir(daemon.mountpoint)), self.fixture.store_paths())
        self.assert_same_as_export(daemon, sorted(self.fixture.paths.values()))
        stats = daemon.stats()
        self.assertEqual(stats["upstream_errors"], 0, stats)

    def test_added_path_appears_and_locked_path_stays_hidden(self):
        server = self.start_server()
        daemon = self.mount_nfs(server, server.url(4), {"negative-timeout": 1})
        # A new store path made by Nix in the exported store while mounted.
        src = os.path.join(self.work, "new-tree")
        os.makedirs(os.path.join(src, "bin"))
        with open(os.path.join(src, "bin", "tool"), "w") as f:
            f.write("#!/bin/sh\necho new\n")
        os.chmod(os.path.join(src, "bin", "tool"), 0o755)
        name = "0" * 32 + "-new-tree"
        self.assertFalse(os.path.exists(daemon.path(name)))  # looked up while absent
        shutil.copytree(src, os.path.join(self.export, name), symlinks=True)
        wait_until(lambda: os.path.exists(daemon.path(name)), 5 * 1.0 + 2 * TIMEOUT,
                   "a path added on the server shows up")
        self.assertEqual(read_file(daemon.path(name, "bin", "tool")), b"#!/bin/sh\necho new\n")

        locked = "1" * 32 + "-being-written"
        os.makedirs(os.path.join(self.export, locked))
        open(os.path.join(self.export, locked + ".lock"), "wb").close()
        self.assertFalse(os.path.exists(daemon.path(locked)))
        self.assertNotIn(locked, os.listdir(daemon.mountpoint))
        os.unlink(os.path.join(self.export, locked + ".lock"))
        wait_until(lambda: os.path.exists(daemon.path(locked)), 5.0, "an unlocked path shows up")

    def test_server_down_frozen_and_restarted(self):
        server = self.start_server()
        daemon = self.mount_nfs(server, server.url(4), allowed_stderr=SERVER_WARNINGS)
        python = self.fixture.paths["python"]
        include = self.fixture.paths["include"]
        files = regular_files(os.path.join(self.export, python))
        cached = files[: len(files) // 2]
        uncached = files[len(files) // 2:]
        for rel in cached:
            read_file(daemon.path(python, rel))
        os.listdir(daemon.path(include))  # metadata of include cached, content not
        victims = [rel for rel in regular_files(os.path.join(self.export, include))
                   if os.path.getsize(os.path.join(self.export, include, rel)) > 0]

        for how in ("frozen", "killed"):
            with self.subTest(server=how):
                server.freeze() if how == "frozen" else server.kill()
                for rel in cached[:50]:
                    self.assertEqual(read_file(daemon.path(python, rel)),
                                     read_file(os.path.join(self.export, python, rel)))
                started = time.monotonic()
                victim = victims.pop()  # never read before
                self.assertErrno(errno.EIO, read_file, daemon.path(include, victim))
                # One connection attempt or call, each bounded by the deadline (plus a retry).
                self.assertLess(time.monotonic() - started, 2 * TIMEOUT + 3.0)
                server.thaw() if how == "frozen" else server.start()
                wait_until(lambda: self._readable(daemon.path(include, victim)), 10 + 2 * TIMEOUT,
                           "reads work again after the server came back")
        for rel in uncached:
            self.assertEqual(read_file(daemon.path(python, rel)),
                             read_file(os.path.join(self.export, python, rel)), rel)
        stats = daemon.stats()
        self.assertGreater(stats["upstream_timeouts"] + stats["upstream_connect_failures"], 0, stats)
        self.assertGreater(stats["upstream_connects"], 1, stats)  # reconnected by itself

    @staticmethod
    def _readable(path):
        try:
            read_file(path)
            return True
        except OSError:
            return False

    def test_sixteen_parallel_readers(self):
        server = self.start_server()
        daemon = self.mount_nfs(server, server.url(4))
        python = self.fixture.paths["python"]
        misc = self.fixture.paths["misc"]
        files = [(python, rel) for rel in regular_files(os.path.join(self.export, python))]
        files += [(misc, rel) for rel in regular_files(os.path.join(self.export, misc))]
        errors = []

        def reader(seed):
            rng = random.Random(seed)
            for name, rel in rng.sample(files, min(200, len(files))):
                try:
                    got = read_file(daemon.path(name, rel))
                    if got != read_file(os.path.join(self.export, name, rel)):
                        errors.append(f"wrong bytes: {name}/{rel}")
                except OSError as e:
                    errors.append(f"{name}/{rel}: {e}")

        threads = [threading.Thread(target=reader, args=(i,)) for i in range(16)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        self.assertEqual(errors, [])
        self.assertGreater(daemon.stats()["upstream_connects"], 1)  # served concurrently


class NfsV3Test(NfsTestCase):

    def test_a_v3_server_keeps_no_other_mount_alive(self):
        # A mount up when the server's rpcbind gets its own mount namespace (a copy of every
        # mount) still ends at its fusermount3 -u: stop() waits for the daemon to exit.
        daemon = self.mount(self.export)
        server = Ganesha.v3(self.export, os.path.join(self.work, "ganesha"))
        self.servers.append(server)
        self.assertTrue(os.listdir(daemon.mountpoint))
        daemon.stop()

    def test_fstab_form_over_nfsv3_with_rpcbind(self):
        server = Ganesha.v3(self.export, os.path.join(self.work, "ganesha"))
        self.servers.append(server)
        # The seed's fstab syntax: host:/path, NFSv3 by default (through the portmapper).
        daemon = self.mount_nfs(server, f"127.0.0.1:{self.export}")
        self.assertEqual(set(os.listdir(daemon.mountpoint)), self.fixture.store_paths())
        self.assert_same_as_export(daemon, sorted(self.fixture.paths.values()))
        # -o nfsvers=4 against the same server, through its pseudo path.
        daemon.stop()
        daemon4 = self.mount_nfs(server, "127.0.0.1:/store", {"nfsvers": 4})
        name = self.fixture.paths["include"]
        self.assert_same_as_export(daemon4, [name])


class NfsEarlyAnswerTest(NfsTestCase):
    """A lookup deep in a store path of many directories is answered long before its walk ends
    (every reply 40 ms late through the fault proxy: the walk needs dozens of round trips, the
    lookup a few); the walk then finishes, is persisted, and the tree equals the export."""

    REPLY_DELAY_MS = 40
    copy_fixture = False

    def start_server(self, version):
        work = os.path.join(self.work, "ganesha")
        server = Ganesha.v4(self.export, work) if version == 4 else Ganesha.v3(self.export, work)
        self.servers.append(server)
        return server

    def check_early_answer(self, version):
        name, dirs = wide_store_path(self.export)
        server = self.start_server(version)
        proxy = server.fault_proxy()
        self.addCleanup(proxy.close)
        proxy.delay(self.REPLY_DELAY_MS)
        daemon = self.mount_nfs(server, server.url(version, nfsport=proxy.port))
        tree_file = os.path.join(daemon.cache, "v1", "meta", name + ".tree")
        started = time.monotonic()
        with open(daemon.path(name, WIDE_DEEP), "rb") as f:
            self.assertEqual(f.read(), b"found it\n")
        first = time.monotonic() - started
        # Answered while the walk goes on: nothing persisted yet, counted as a partial answer.
        self.assertFalse(os.path.exists(tree_file), "the walk ended before the first answer")
        self.assertGreater(daemon.stats()["metadata_partial_answers"], 0)
        # readdir of a directory waits only for it.
        self.assertEqual(sorted(os.listdir(daemon.path(name, "d39"))), [f"s{j:02}" for j in range(40)])
        wait_until(lambda: os.path.exists(tree_file), 120, "the walk finishes and is persisted")
        whole = time.monotonic() - started
        # Every file's bytes, read cold: without the delay (1,600 reads at 40 ms took a minute).
        proxy.delay(0)
        self.assert_same_as_export(daemon, [name])
        stats = daemon.stats()
        self.assertEqual(stats["metadata_misses"], 1, stats)  # one walk served every lookup
        self.assertEqual(stats["upstream_errors"], 0, stats)
        log(f"NFSv{version} {dirs} directories, replies {self.REPLY_DELAY_MS} ms late: first answer "
            f"{first:.2f} s, whole walk {whole:.2f} s")

    def test_v4(self):
        self.check_early_answer(4)

    def test_v3(self):
        self.check_early_answer(3)


class NfsAbsurdSizeTest(NfsTestCase):
    """A server that describes a file of 2^52 + 4 KiB bytes, past the largest served (a sparse file on a tmpfs, which ganesha's
    VFS FSAL serves as it is): its store path, or the directory that holds it, answers EIO with a
    warning naming it; the rest of the store is served."""

    copy_fixture = False
    HUGE = (1 << 52) + 4096  # Tree::kMaxFileSize is served; one page more is not

    def setUp(self):
        super().setUp()
        hugefs = os.path.join(self.work, "hugefs")
        os.makedirs(hugefs)
        subprocess.run(["mount", "-t", "tmpfs", "-o", "size=16m", "tmpfs", hugefs], check=True)
        # Cleanups run last-in first: the servers (added in setUp before) are still up here.
        self.addCleanup(subprocess.run, ["umount", "-l", hugefs], check=False)
        self.export = os.path.join(hugefs, "store")
        self.inside, self.whole, self.fine = ("3" * 32 + "-huge-inside", "4" * 32 + "-huge-file",
                                              "5" * 32 + "-fine")
        os.makedirs(os.path.join(self.export, self.inside, "sub"))
        os.makedirs(os.path.join(self.export, self.fine))
        for path in (os.path.join(self.export, self.inside, "ok.txt"), os.path.join(self.export, self.fine, "ok.txt")):
            with open(path, "w") as f:
                f.write("ok\n")
        for path in (os.path.join(self.export, self.inside, "sub", "huge.bin"), os.path.join(self.export, self.whole)):
            with open(path, "wb") as f:
                f.truncate(self.HUGE)
        self.assertEqual(os.path.getsize(os.path.join(self.export, self.whole)), self.HUGE)

    def check(self, version):
        work = os.path.join(self.work, f"ganesha{version}")
        server = Ganesha.v4(self.export, work) if version == 4 else Ganesha.v3(self.export, work)
        self.servers.append(server)
        daemon = self.mount_nfs(server, server.url(version))
        self.assertErrno(errno.EIO, os.stat, daemon.path(self.whole))
        self.assertEqual(read_file(daemon.path(self.inside, "ok.txt")), b"ok\n")
        self.assertErrno(errno.EIO, os.listdir, daemon.path(self.inside, "sub"))
        self.assertEqual(read_file(daemon.path(self.fine, "ok.txt")), b"ok\n")
        warnings = daemon.stderr()
        for name in (self.whole, self.inside):
            self.assertRegex(warnings, rf"warning: .*{name}.*{self.HUGE} bytes, more than the largest file lazystore serves")
        daemon.stop()

    def test_v4(self):
        self.check(4)

    def test_v3(self):
        self.check(3)


if __name__ == "__main__":
    main()
