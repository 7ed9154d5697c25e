#!/usr/bin/python3
"""Mounting as an operator meets it, each case against real servers (a directory, nfs-ganesha,
nginx serving a binary cache made by `nix copy`):

- a wrong SOURCE (a missing directory, a refused NFS port, a host name that does not resolve,
  a wrong export, an HTTP server that does not answer or is no binary cache) fails the mount:
  exit status 1, one error line with the cause, nothing mounted, no process left;
- with store paths in the cache, a SOURCE that does not answer starts the mount offline;
- a regular file or a lazystore mount as MOUNTPOINT is refused with a clear line;
- no dead mount: kill -9 of the supervisor (or of every lazystore process) removes the mount
  (auto_unmount) and a remount works; a dead lazystore mount left at MOUNTPOINT is cleared, any
  other dead FUSE mount is refused with the command that clears it;

- daemon mode (no -f), supervised and with supervise=false, for every upstream: the first
  `stat` answers within a deadline and SIGTERM ends the daemon and its mount (no thread may
  start before the daemon forks);
- logs of a daemon in the background: syslog when /dev/log answers, else the stderr it was
  started with (a `bwrap` view without /dev/log, as in most containers), and -o log=FILE;
- permissions answered from the mode (access(2) without default_permissions).
"""

import atexit
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time

from http_server import Nginx, SilentServer
from lazystore_testlib import LazystoreTestCase, NixStore, daemon_processes, dead_fuse_mount, fixture, \
    is_lazystore_mounted, main, mountinfo_entry, parent_pid, read_file, run
from nfs_server import Ganesha, free_port

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
        self.foreign_mount = False  # another mount is at the mount point: close() leaves it
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
        return daemon_processes(self.mountpoint, self.cache)

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
        while not self.foreign_mount and is_lazystore_mounted(self.mountpoint):
            if subprocess.run(["fusermount3", "-u", "-z", self.mountpoint],
                              stderr=subprocess.DEVNULL).returncode != 0:
                break


class RefusedMountTestCase(LazystoreTestCase):

    def assert_refused(self, source, options, cause, modes=("background", "foreground"),
                       mountpoint=None):
        """`lazystore SOURCE MNT` (with -f and without) exits 1 with one error line matching
        `cause`, mounts nothing and leaves no process."""
        for mode in modes:
            with self.subTest(mode=mode):
                mount = BackgroundMount(self, source, dict({"upstream-timeout": 1}, **options),
                                        name=f"refused-{mode}")
                if mountpoint:
                    mount.argv[2] = mount.mountpoint = mountpoint
                    mount.foreign_mount = True
                if mode == "foreground":
                    mount.argv.append("-f")
                started = time.monotonic()
                mount.start()
                seconds = time.monotonic() - started
                errors = [line for line in mount.stderr().splitlines() if ": error: " in line]
                self.assertEqual(mount.returncode, 1, mount.stderr())
                self.assertEqual(len(errors), 1, mount.stderr())
                self.assertRegex(errors[0], cause)
                self.assertFalse(mountpoint is None and is_lazystore_mounted(mount.mountpoint))
                self.assertEqual(mount.processes(), [])
                self.assertLess(seconds, 30, "refusing took too long")
        return errors[0]


class WrongSourceTest(RefusedMountTestCase):

    def test_missing_directory(self):
        missing = os.path.join(self.work, "does-not-exist")
        line = self.assert_refused(f"file://{missing}", {}, r"^lazystore: error: cannot mount file://")
        self.assertIn(f"upstream directory {missing}: No such file or directory", line)

    def test_refused_nfs_port(self):
        port = free_port()
        self.assert_refused(f"nfs://127.0.0.1/store?version=4&nfsport={port}", {},
                            r"cannot mount nfs://127\.0\.0\.1/store.*: Connection refused$")

    def test_host_name_that_does_not_resolve(self):
        self.assert_refused("nix-servr.invalid:/nix/store", {},
                            r"cannot mount nix-servr\.invalid:/nix/store: .*nix-servr\.invalid")

    def test_wrong_nfs_export(self):
        server = Ganesha.v4(self.private_upstream("export"), os.path.join(self.work, "ganesha"))
        self.addCleanup(server.close)
        self.assert_refused(f"nfs://127.0.0.1/no-such-export?version=4&nfsport={server.port}", {},
                            r"cannot mount nfs://127\.0\.0\.1/no-such-export")

    def test_http_server_that_does_not_answer(self):
        silent = SilentServer()
        self.addCleanup(silent.close)
        self.assert_refused(silent.url, {"require-sigs": "false"},
                            rf"cannot mount {silent.url}: {silent.url}/nix-cache-info: .*[Tt]imed out")

    def test_http_server_that_is_no_binary_cache(self):
        empty = os.path.join(self.work, "empty-site")
        os.makedirs(empty)
        server = Nginx(empty, os.path.join(self.work, "nginx")).start()
        self.addCleanup(server.stop)
        self.assert_refused(server.url, {"require-sigs": "false"}, r"has no nix-cache-info: not a Nix binary cache")


class OfflineStartTest(LazystoreTestCase):
    """The persistent cache is for this: a restart while SOURCE is down still serves it."""

    def fill_cache(self, source, cache, mountpoint):
        daemon = self.mount(source=source, cache=cache, mountpoint=mountpoint, options={"upstream-timeout": 2})
        single, misc = self.fixture.paths["single_file"], self.fixture.paths["misc"]
        expected = {single: read_file(daemon.path(single)),
                    f"{misc}/bin/hello": read_file(daemon.path(misc, "bin", "hello"))}
        daemon.stop()
        return expected

    def check_offline(self, source, cache, expected):
        mount = BackgroundMount(self, source, {"upstream-timeout": 1}, name="offline")
        mount.cache = cache
        mount.argv[4] = mount.argv[4].replace(f"cache={os.path.join(self.work, 'offline-cache')}", f"cache={cache}")
        mount.start()
        self.assertEqual(mount.returncode, 0, mount.stderr())
        self.assertRegex(mount.stderr(), r"lazystore: warning: .* does not answer \(.*\): starting offline, "
                                         r"serving the 2 store paths cached in ")
        for rel, data in expected.items():
            self.assertEqual(read_file(os.path.join(mount.mountpoint, rel)), data)
        self.assertNotIn(": error:", mount.stderr())
        subprocess.run(["fusermount3", "-u", mount.mountpoint], check=True)
        self.assertTrue(mount.wait_gone())

    def test_missing_directory_with_a_filled_cache(self):
        upstream = self.private_upstream()
        cache = os.path.join(self.work, "cache")
        expected = self.fill_cache(upstream, cache, os.path.join(self.work, "mnt"))
        os.rename(upstream, upstream + ".gone")
        self.check_offline(f"file://{upstream}", cache, expected)

    def test_stopped_nfs_server_with_a_filled_cache(self):
        server = Ganesha.v4(self.private_upstream("export"), os.path.join(self.work, "ganesha"))
        self.addCleanup(server.close)
        cache = os.path.join(self.work, "cache")
        expected = self.fill_cache(server.url(4), cache, os.path.join(self.work, "mnt"))
        server.kill()
        self.check_offline(server.url(4), cache, expected)


class MountpointTest(RefusedMountTestCase):

    def test_regular_file(self):
        target = os.path.join(self.work, "a-file")
        with open(target, "w") as f:
            f.write("not a directory\n")
        self.assert_refused(self.fixture.store, {}, r"mount point .*/a-file is a regular file", mountpoint=target)
        self.assertEqual(read_file(target), b"not a directory\n")

    def test_already_a_lazystore_mount(self):
        daemon = self.mount()
        self.assert_refused(self.fixture.store, {}, rf"{daemon.mountpoint} is already a lazystore mount "
                                                    rf"\(of .*\); unmount it first: fusermount3 -u ",
                            mountpoint=daemon.mountpoint)
        single = self.fixture.paths["single_file"]
        self.assertEqual(read_file(daemon.path(single)), read_file(os.path.join(self.fixture.store, single)))


class DeadMountTest(RefusedMountTestCase):
    """`Transport endpoint is not connected` at the mount point was what a kill -9 left."""

    CLEAN_DEADLINE = 15.0

    @staticmethod
    def running(pid):
        try:
            with open(f"/proc/{pid}/stat") as f:
                return f.read().rsplit(")", 1)[1].split()[0] != "Z"
        except OSError:
            return False

    @staticmethod
    def continue_process(pid):
        try:
            os.kill(pid, signal.SIGCONT)
        except ProcessLookupError:
            pass

    @staticmethod
    def guards(mountpoint):
        found = []
        for entry in filter(str.isdigit, os.listdir("/proc")):
            try:
                with open(f"/proc/{entry}/cmdline", "rb") as f:
                    argv = f.read().split(b"\0")
            except OSError:
                continue
            if argv[0] == b"lazystore-unmount-guard" and mountpoint.encode() in argv:
                found.append(int(entry))
        return found

    def mount_in_background(self, options=None, name="bg"):
        mount = BackgroundMount(self, self.fixture.store, options or {}, name=name)
        mount.start()
        self.assertEqual(mount.returncode, 0, mount.stderr())
        # Armed by the time the command returns: a kill right away must find it running.
        self.assertEqual(len(self.guards(mount.mountpoint)), 1)
        self.assertNotIn(parent_pid(self.guards(mount.mountpoint)[0]), mount.processes())
        single = self.fixture.paths["single_file"]
        self.assertEqual(read_file(os.path.join(mount.mountpoint, single)),
                         read_file(os.path.join(self.fixture.store, single)))
        return mount

    def assert_clean_and_remountable(self, mount):
        self.assertTrue(mount.wait_gone(self.CLEAN_DEADLINE),
                        f"still mounted or running {self.CLEAN_DEADLINE} s after the kill: "
                        f"{mountinfo_entry(mount.mountpoint)}, {mount.processes()}")
        os.listdir(mount.mountpoint)  # the directory itself again, not ENOTCONN
        mount.start()  # same mount point, same cache (and its control socket, left behind)
        self.assertEqual(mount.returncode, 0, mount.stderr())
        single = self.fixture.paths["single_file"]
        self.assertEqual(read_file(os.path.join(mount.mountpoint, single)),
                         read_file(os.path.join(self.fixture.store, single)))
        stats = subprocess.run([os.environ["LAZYSTORE_CTL_BIN"], "--cache", mount.cache, "stats", "--json"],
                               capture_output=True, text=True, timeout=30)
        self.assertEqual(stats.returncode, 0, stats.stderr)
        subprocess.run(["fusermount3", "-u", mount.mountpoint], check=True)
        self.assertTrue(mount.wait_gone())

    def test_kill_9_of_the_supervisor(self):
        mount = self.mount_in_background()
        supervisor = mount.top_process()
        server = [pid for pid in mount.processes() if pid != supervisor][0]
        # A crash of the server alone must not end the mount: the supervisor starts another.
        os.kill(server, signal.SIGKILL)
        end = time.monotonic() + 30
        while (not mount.processes() or server in mount.processes() or len(mount.processes()) < 2) \
                and time.monotonic() < end:
            time.sleep(0.05)  # polling interval, bounded by the deadline
        self.assertTrue(is_lazystore_mounted(mount.mountpoint))
        os.listdir(os.path.join(mount.mountpoint, self.fixture.paths["misc"]))
        os.kill(supervisor, signal.SIGKILL)
        self.assert_clean_and_remountable(mount)

    def test_kill_9_of_every_lazystore_process(self):
        mount = self.mount_in_background()
        for pid in mount.processes():
            os.kill(pid, signal.SIGKILL)
        self.assert_clean_and_remountable(mount)

    def test_kill_9_of_an_unsupervised_daemon(self):
        mount = self.mount_in_background({"supervise": "false"})
        os.kill(mount.top_process(), signal.SIGKILL)
        self.assert_clean_and_remountable(mount)

    def test_kill_9_of_the_daemon_and_its_guard_then_a_remount_clears_it(self):
        mount = self.mount_in_background()
        os.stat(mount.mountpoint)  # the kernel now holds the root's attributes for a second
        for pid in self.guards(mount.mountpoint) + mount.processes():
            os.kill(pid, signal.SIGKILL)
        end = time.monotonic() + STOP_DEADLINE
        while (mount.processes() or self.guards(mount.mountpoint)) and time.monotonic() < end:
            time.sleep(0.01)  # polling interval, bounded by the deadline
        self.assertTrue(is_lazystore_mounted(mount.mountpoint))  # dead, and nobody to clear it
        mount.start()  # at once: the cached attributes must not make it look alive
        self.assertEqual(mount.returncode, 0, mount.stderr())
        self.assertIn(f"lazystore: warning: {mount.mountpoint} was a dead lazystore mount", mount.stderr())
        self.assertIn(self.fixture.paths["single_file"], os.listdir(mount.mountpoint))

    def test_the_guard_of_an_earlier_mount_leaves_a_later_one_alone(self):
        """Mount IDs and device numbers are reused: a guard that wakes up late (here: stopped
        until the next mount is up) must not take a later mount that got its ID and device."""
        for attempt in range(5):
            first = self.mount_in_background(name=f"first-{attempt}")
            entry = mountinfo_entry(first.mountpoint)
            guard = self.guards(first.mountpoint)[0]
            os.kill(guard, signal.SIGSTOP)
            self.addCleanup(self.continue_process, guard)
            subprocess.run(["fusermount3", "-u", first.mountpoint], check=True)
            self.assertTrue(first.wait_gone())
            later = BackgroundMount(self, self.fixture.store, {}, name=f"later-{attempt}")
            later.argv[2] = later.mountpoint = first.mountpoint
            later.start()
            self.assertEqual(later.returncode, 0, later.stderr())
            same = mountinfo_entry(later.mountpoint)["device"] == entry["device"]
            os.kill(guard, signal.SIGCONT)
            end = time.monotonic() + 30
            while self.running(guard) and time.monotonic() < end:
                time.sleep(0.05)  # polling interval, bounded by the deadline: the guard decides
            self.assertTrue(is_lazystore_mounted(later.mountpoint), "the earlier guard unmounted a later mount")
            self.assertIn(self.fixture.paths["single_file"], os.listdir(later.mountpoint))
            subprocess.run(["fusermount3", "-u", later.mountpoint], check=True)
            self.assertTrue(later.wait_gone())
            if same:
                return
        self.fail("no later mount got the earlier one's device number in 5 attempts")

    def test_a_dead_lazystore_mount_is_cleared(self):
        mount = BackgroundMount(self, self.fixture.store, {}, name="dead")
        dead_fuse_mount(mount.mountpoint, "fuse.lazystore")
        self.addCleanup(subprocess.run, ["fusermount3", "-u", "-z", mount.mountpoint], stderr=subprocess.DEVNULL)
        self.assertErrno(107, os.stat, mount.mountpoint)  # ENOTCONN
        mount.start()
        self.assertEqual(mount.returncode, 0, mount.stderr())
        self.assertIn(f"lazystore: warning: {mount.mountpoint} was a dead lazystore mount (of dead-daemon; "
                      f"its daemon was killed): unmounted it", mount.stderr())
        single = self.fixture.paths["single_file"]
        self.assertEqual(read_file(os.path.join(mount.mountpoint, single)),
                         read_file(os.path.join(self.fixture.store, single)))

    def test_another_dead_fuse_mount_is_refused_with_the_way_to_clear_it(self):
        mountpoint = os.path.join(self.work, "other")
        os.makedirs(mountpoint)
        dead_fuse_mount(mountpoint, "fuse.sshfs", "user@host:/dir")
        self.addCleanup(subprocess.run, ["fusermount3", "-u", "-z", mountpoint], stderr=subprocess.DEVNULL)
        line = self.assert_refused(self.fixture.store, {},
                                   rf"{mountpoint} is a dead FUSE mount \(fuse\.sshfs of user@host:/dir: "
                                   rf"Transport endpoint is not connected\): its daemon is gone; "
                                   rf"clear it with: fusermount3 -u {mountpoint}$", mountpoint=mountpoint)
        subprocess.run(line.split("clear it with: ", 1)[1].split(), check=True)  # what it says works
        mount = BackgroundMount(self, self.fixture.store, {}, name="after")
        mount.argv[2] = mount.mountpoint = mountpoint
        mount.start()
        self.assertEqual(mount.returncode, 0, mount.stderr())
        self.assertIn(self.fixture.paths["single_file"], os.listdir(mountpoint))


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


class LogsTest(LazystoreTestCase):
    """Lines a daemon logs after it went to the background (here: when the mount ends)."""

    ENDED = {"true": "lazystore: info: the server ended the mount of ",
             "false": "lazystore: info: unmounted "}

    def run_in_view(self, supervise, dev_log=None, options=None):
        """Mounts in the background inside `bwrap` with a fresh /dev (no /dev/log unless
        `dev_log`, a socket bound there), stats a file, unmounts, waits for the daemon to end.
        Returns (mountpoint, the stderr lazystore was started with)."""
        mountpoint = os.path.join(self.work, f"view-{supervise}-mnt")
        cache = os.path.join(self.work, f"view-{supervise}-cache")
        stderr_path = os.path.join(self.work, f"view-{supervise}.stderr")
        os.makedirs(mountpoint)
        opts = {"cache": cache, "log-level": "info", "supervise": supervise}
        opts.update(options or {})
        script = ('"$0" "$1" "$2" -o "$3" 2>>"$4" && stat "$2/$5" >/dev/null && '
                  'fusermount3 -u "$2"')
        argv = ["bwrap", "--dev-bind", "/", "/", "--dev", "/dev", "--dev-bind", "/dev/fuse", "/dev/fuse"]
        if dev_log:
            argv += ["--bind", dev_log, "/dev/log"]
        argv += ["sh", "-c", script, os.environ["LAZYSTORE_BIN"], self.fixture.store, mountpoint,
                 ",".join(f"{k}={v}" for k, v in opts.items()), stderr_path,
                 self.fixture.paths["single_file"]]
        self.addCleanup(self.kill_daemons, mountpoint)
        done = subprocess.run(argv, stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=120)
        stderr = read_file(stderr_path).decode(errors="replace") if os.path.exists(stderr_path) else ""
        self.assertEqual(done.returncode, 0, done.stderr + stderr)
        end = time.monotonic() + STOP_DEADLINE
        while daemon_processes(mountpoint) and time.monotonic() < end:
            time.sleep(0.05)  # polling interval, bounded by the deadline
        self.assertEqual(daemon_processes(mountpoint), [], "the daemon did not end with its mount")
        return mountpoint, read_file(stderr_path).decode(errors="replace")

    @staticmethod
    def kill_daemons(mountpoint):
        for pid in daemon_processes(mountpoint):
            os.kill(pid, signal.SIGKILL)

    def test_without_dev_log_the_background_daemon_logs_to_its_stderr(self):
        for supervise in ("true", "false"):
            with self.subTest(supervise=supervise):
                mountpoint, stderr = self.run_in_view(supervise)
                self.assertIn(self.ENDED[supervise] + mountpoint, stderr)
                self.assertNotIn(": error:", stderr)

    def test_with_dev_log_the_background_daemon_logs_to_syslog(self):
        path = os.path.join(self.work, "dev-log")
        receiver = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.addCleanup(receiver.close)
        receiver.bind(path)
        receiver.settimeout(0.2)
        messages, stop = [], threading.Event()

        def receive():
            while not stop.is_set():
                try:
                    messages.append(receiver.recv(65536).decode(errors="replace"))
                except socket.timeout:
                    continue
                except OSError:
                    return

        thread = threading.Thread(target=receive)
        thread.start()
        try:
            mountpoint, stderr = self.run_in_view("true", dev_log=path)
            end = time.monotonic() + 10
            while not any("the server ended the mount of " + mountpoint in m for m in messages) \
                    and time.monotonic() < end:
                time.sleep(0.05)  # polling interval, bounded by the deadline
        finally:
            stop.set()
            thread.join(10)
        ended = [m for m in messages if "the server ended the mount of " + mountpoint in m]
        self.assertTrue(ended, f"no syslog message about the end of the mount: {messages[-5:]}")
        self.assertIn("lazystore[", ended[0])
        self.assertNotIn("the server ended the mount", stderr)  # syslog took the line over

    def test_log_file(self):
        log_path = os.path.join(self.work, "daemon.log")
        for supervise in ("true", "false"):
            with self.subTest(supervise=supervise):
                mount = BackgroundMount(self, self.fixture.store,
                                        {"supervise": supervise, "log": log_path}, name=f"log-{supervise}")
                mount.start()
                self.assertEqual(mount.returncode, 0, mount.stderr())
                os.stat(os.path.join(mount.mountpoint, self.fixture.paths["single_file"]))
                subprocess.run(["fusermount3", "-u", mount.mountpoint], check=True)
                self.assertTrue(mount.wait_gone())
                text = read_file(log_path).decode()
                ended = self.ENDED[supervise].replace("lazystore: ", "") + mount.mountpoint
                self.assertRegex(text, r"\d{4}-\d\d-\d\dT[0-9:.]+Z lazystore\[\d+\]: " + ended)
                self.assertIn("info: serving ", text)  # from before the daemon detached too
                self.assertNotIn(ended, mount.stderr())  # in the background: the file only
        with self.subTest(foreground=True):  # -f: stderr and the file
            daemon = self.mount(options={"log": log_path}, mountpoint=os.path.join(self.work, "fg-mnt"),
                                cache=os.path.join(self.work, "fg-cache"))
            daemon.stop()
            self.assertIn("lazystore: info: serving ", daemon.stderr())
            self.assertEqual(read_file(log_path).decode().count("info: serving "), 3)


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
