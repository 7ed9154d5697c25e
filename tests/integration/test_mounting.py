#!/usr/bin/python3
"""Mounting as an operator meets it, each case against real servers (a directory, nfs-ganesha,
nginx serving a binary cache made by `nix copy`):

- daemon mode (no -f), supervised and with supervise=false, for every upstream: the first
  `stat` answers within a deadline and SIGTERM ends the daemon and its mount (no thread may
  start before the daemon forks);
- permissions answered from the mode (access(2) without default_permissions).
"""

import atexit
import os
import shutil
import signal
import subprocess
import tempfile
import time

from http_server import Nginx
from lazystore_testlib import LazystoreTestCase, NixStore, daemon_processes, fixture, \
    is_lazystore_mounted, main, parent_pid, read_file, run
from nfs_server import Ganesha

STAT_DEADLINE = 20.0   # the first stat of a fresh mount; it hung for ever before
STOP_DEADLINE = 30.0

_binary_cache = None


def binary_cache():
    """A binary cache (compression none, .ls listings, unsigned) of two small fixture paths."""
    global _binary_cache
    if _binary_cache is None:
        fx = fixture()
        work = tempfile.mkdtemp(prefix="lazystore-mounting-cache-", dir=os.environ.get("LAZYSTORE_TEST_TMP"))
        atexit.register(shutil.rmtree, work, ignore_errors=True)
        nix = NixStore(os.path.join(fx.root, "root"), os.path.join(work, "nix-home"))
        directory = os.path.join(work, "cache")
        paths = [fx.paths["single_file"], fx.paths["executable_file"]]
        run(["nix", "copy", "--no-check-sigs", "--to",
             f"file://{directory}?compression=none&write-nar-listing=true",
             "--from", f"local?root={nix.root}", *[f"/nix/store/{p}" for p in paths]], env=nix.env)
        _binary_cache = directory
    return _binary_cache


class BackgroundMount:
    """`lazystore SOURCE MNT -o …` without -f, as an operator runs it: the command returns once
    the store is mounted (or failed). Its stderr (and the daemon's, which keeps it) goes to a
    file. close() kills what is left and unmounts."""

    def __init__(self, test, source, options, name="bg"):
        self.mountpoint = os.path.join(test.work, name + "-mnt")
        self.cache = os.path.join(test.work, name + "-cache")
        self.stderr_path = os.path.join(test.work, name + ".stderr")
        os.makedirs(self.mountpoint, exist_ok=True)
        opts = {"cache": self.cache, "log-level": "info"}
        opts.update(options)
        self.argv = [os.environ["LAZYSTORE_BIN"], source, self.mountpoint, "-o",
                     ",".join(k if v is None else f"{k}={v}" for k, v in opts.items())]
        self.returncode = None
        test.addCleanup(self.close)

    def start(self, timeout=90):
        with open(self.stderr_path, "ab") as err:
            done = subprocess.run(self.argv, stdin=subprocess.DEVNULL, stdout=err, stderr=err,
                                  timeout=timeout)
        self.returncode = done.returncode
        return self

    def stderr(self):
        try:
            return read_file(self.stderr_path).decode(errors="replace")
        except OSError:
            return ""

    def processes(self):
        return daemon_processes(self.mountpoint)

    def top_process(self):
        """The supervisor (or the one unsupervised process)."""
        pids = self.processes()
        tops = [pid for pid in pids if parent_pid(pid) not in pids]
        return tops[0] if tops else None

    def wait_gone(self, deadline=STOP_DEADLINE):
        """Polls until no daemon process is left and nothing is mounted; False at the deadline."""
        end = time.monotonic() + deadline
        while time.monotonic() < end:
            if not self.processes() and not is_lazystore_mounted(self.mountpoint):
                return True
            time.sleep(0.05)  # polling interval, bounded by the deadline
        return False

    def answers_stat(self, path, deadline):
        """Whether `stat path` answers within the deadline. A request the daemon read and never
        answers keeps stat in D state even against SIGKILL: the daemon is killed first then."""
        stat = subprocess.Popen(["stat", path], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            return stat.wait(timeout=deadline) == 0
        except subprocess.TimeoutExpired:
            self.close()
            stat.kill()
            stat.wait(timeout=STOP_DEADLINE)
            return False

    def close(self):
        for pid in self.processes():
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        while is_lazystore_mounted(self.mountpoint):
            if subprocess.run(["fusermount3", "-u", "-z", self.mountpoint],
                              stderr=subprocess.DEVNULL).returncode != 0:
                break


class DaemonModeTest(LazystoreTestCase):
    """No -f: the process forks. A thread started before the fork (the HTTP upstream's curl
    worker did) is missing in the child, and the first request hangs for good."""

    def check_daemon_mode(self, source, options, store_path):
        for supervise in ("true", "false"):
            with self.subTest(supervise=supervise):
                mount = BackgroundMount(self, source, dict(options, supervise=supervise),
                                        name=f"supervise-{supervise}")
                mount.start()
                self.assertEqual(mount.returncode, 0, mount.stderr())
                self.assertTrue(is_lazystore_mounted(mount.mountpoint))
                self.assertEqual(len(mount.processes()), 2 if supervise == "true" else 1,
                                 mount.processes())
                path = os.path.join(mount.mountpoint, store_path)
                self.assertTrue(mount.answers_stat(path, STAT_DEADLINE),
                                f"the first stat in the daemonized mount hangs (> {STAT_DEADLINE} s)"
                                f":\n{mount.stderr()}")
                self.assertEqual(read_file(path), read_file(os.path.join(self.fixture.store, store_path)))
                os.kill(mount.top_process(), signal.SIGTERM)
                self.assertTrue(mount.wait_gone(), f"SIGTERM did not end the daemon and its mount:\n"
                                                   f"{mount.stderr()}")
                self.assertNotIn(": error:", mount.stderr())

    def test_directory(self):
        self.check_daemon_mode(self.fixture.store, {}, self.fixture.paths["single_file"])

    def test_nfs(self):
        server = Ganesha.v4(self.private_upstream("export"), os.path.join(self.work, "ganesha"))
        self.addCleanup(server.close)
        self.check_daemon_mode(server.url(4), {"upstream-timeout": 10}, self.fixture.paths["single_file"])

    def test_http(self):
        server = Nginx(binary_cache(), os.path.join(self.work, "nginx")).start()
        self.addCleanup(server.stop)
        self.check_daemon_mode(server.url, {"require-sigs": "false", "upstream-timeout": 10},
                               self.fixture.paths["single_file"])


class AccessTest(LazystoreTestCase):

    def test_execute_permission_follows_the_mode(self):
        daemon = self.mount()
        misc = self.fixture.paths["misc"]
        plain = daemon.path(misc, "share", "one-byte")       # 0444 in the store
        program = daemon.path(misc, "bin", "hello")          # 0555
        self.assertEqual(os.stat(plain).st_mode & 0o777, 0o444)
        self.assertFalse(os.access(plain, os.X_OK), "a 0444 file answers access(X_OK)")
        self.assertTrue(os.access(plain, os.R_OK))
        self.assertTrue(os.access(program, os.X_OK))
        self.assertTrue(os.access(daemon.path(misc, "share"), os.X_OK))  # a directory
        self.assertTrue(os.access(daemon.mountpoint, os.X_OK))
        self.assertFalse(os.access(program, os.W_OK))
        self.assertNotEqual(subprocess.run(["test", "-x", plain]).returncode, 0)
        self.assertEqual(subprocess.run(["test", "-x", program]).returncode, 0)
        # shutil.which skips what cannot be executed.
        share, bin_dir = daemon.path(misc, "share"), daemon.path(misc, "bin")
        self.assertIsNone(shutil.which("one-byte", path=share))
        self.assertEqual(shutil.which("hello", path=bin_dir), program)


if __name__ == "__main__":
    main()
