#!/usr/bin/python3
"""lazystore against the kernel NFS server, inside the lab guest (run by tests/lab/test_lab.py).

One unittest method per check, for NFSv3 (`host:/path`, the default, like the seed's
nfsvers=3) and NFSv4 (`nfs://host/path?version=4`, through the server's pseudo root), each
against the export the guest's boot script made with the seed's options. Every check is
printed as it ends (`CHECK <name>: PASS|FAIL|ERROR <seconds> s <detail>`) and all of them are
written to $LAB_OUT/checks.json. Exit status 1 when any check did not pass.
"""

import errno
import hashlib
import json
import os
import sys
import threading
import time
import unittest

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "integration"))
sys.path.insert(0, HERE)
import guestlib as guest  # noqa: E402
from lazystore_testlib import (Daemon, LazystoreTestCase, file_digest, random_hash,  # noqa: E402
                               read_file, regular_files, tree_differences)
from test_names import make_store_path, wait_until_visible  # noqa: E402

NEGATIVE_TIMEOUT = 1.0     # lazystore's default
# How much later than negative-timeout a new path may show up: one upstream LOOKUP and the
# kernel's dentry expiry, in an emulated guest.
SLACK = 3.0
UPSTREAM_TIMEOUT = 3.0     # -o upstream-timeout of the mounts here (default 10)
# An uncached read with the server gone answers EIO after one deadline, not one per retry.
EIO_BOUND = 2 * UPSTREAM_TIMEOUT + 5.0
# Server restarted → served again within this, while the server is still in its NFSv4 grace
# period (RESTART_GRACE; no new OPEN then): a read needs no state, so it need not wait.
RECOVERY_DEADLINE = 20.0
RESTART_GRACE = 60
# kill -9 of the server: the readers must go on; none may stall this long (no file finished).
STALL_DEADLINE = 30.0
KILLED = (r"lazystore: error: the server of .* was killed by signal 9",)


def valid_store_paths(store):
    """What the mount's top level must list: store path names with no `.lock` sibling."""
    names = set(os.listdir(store))
    return {n for n in names if len(n) > 33 and n[32] == "-" and not n.endswith(".lock")
            and f"{n}.lock" not in names}


def timed(function, *args):
    started = time.monotonic()
    try:
        return function(*args), None, time.monotonic() - started
    except OSError as e:
        return None, e, time.monotonic() - started


class UnprivilegedPortDaemon(Daemon):
    """lazystore without CAP_NET_BIND_SERVICE: libnfs cannot bind a reserved source port."""

    def argv(self):
        return ["setpriv", "--bounding-set", "-net_bind_service", *super().argv()]


class Checks:
    """The checks, for the NFS version of the subclass (SOURCE)."""

    SOURCE = None

    @classmethod
    def setUpClass(cls):
        cls.paths = guest.manifest()
        cls.export = guest.EXPORT

    def native(self, *parts):
        return os.path.join(self.export, *parts)

    def mount_export(self, options=None, allowed=(), daemon_class=Daemon):
        mountpoint = os.path.join(self.work, "mnt")
        os.makedirs(mountpoint, exist_ok=True)
        opts = {"upstream-timeout": UPSTREAM_TIMEOUT}
        opts.update(options or {})
        daemon = daemon_class(self.SOURCE, mountpoint, os.path.join(self.work, "cache"), opts,
                              allowed_stderr=allowed)
        self.daemons.append(daemon)
        return daemon.start()

    def test_content(self):
        """Every store path byte for byte (files, modes, symlinks, empty and large files), and
        the top-level listing, equal to the exported tree."""
        daemon = self.mount_export()
        self.assertEqual(set(os.listdir(daemon.mountpoint)) & set(self.paths.values()),
                         set(self.paths.values()))
        self.assertLessEqual(set(os.listdir(daemon.mountpoint)), valid_store_paths(self.export))
        for role, name in sorted(self.paths.items()):
            with self.subTest(store_path=role):
                self.assertEqual(tree_differences(self.native(name), daemon.path(name)), [])

    def test_new_path_appears(self):
        """A store path added to the export while mounted appears within negative-timeout."""
        daemon = self.mount_export()
        name = random_hash() + "-lab-added"
        self.assertErrno(errno.ENOENT, os.lstat, daemon.path(name))  # a negative entry now
        make_store_path(self.export, name, b"added while mounted\n")
        seconds = wait_until_visible(daemon.path(name), NEGATIVE_TIMEOUT + 10)
        self.assertIsNotNone(seconds, "the added path never appeared")
        self.report(f"appeared after {seconds:.2f} s (negative-timeout {NEGATIVE_TIMEOUT:g} s)")
        self.assertLessEqual(seconds, NEGATIVE_TIMEOUT + SLACK)
        self.assertEqual(read_file(daemon.path(name, "file")), b"added while mounted\n")
        self.assertIn(name, os.listdir(daemon.mountpoint))

    def test_locked_path_hidden(self):
        """A path with a `.lock` sibling (Nix still writing it) stays hidden, and appears within
        negative-timeout of the lock's removal."""
        daemon = self.mount_export()
        name = random_hash() + "-lab-locked"
        lock = self.native(name + ".lock")
        with open(lock, "wb"):
            pass
        make_store_path(self.export, name, b"complete now\n")
        hidden_until = time.monotonic() + 3 * NEGATIVE_TIMEOUT
        while time.monotonic() < hidden_until:
            self.assertErrno(errno.ENOENT, os.lstat, daemon.path(name))
            self.assertNotIn(name, os.listdir(daemon.mountpoint))
            self.assertNotIn(name + ".lock", os.listdir(daemon.mountpoint))
            time.sleep(0.2)  # observation interval over the 3 × negative-timeout window
        os.unlink(lock)
        seconds = wait_until_visible(daemon.path(name), NEGATIVE_TIMEOUT + 10)
        self.assertIsNotNone(seconds, "the unlocked path never appeared")
        self.report(f"hidden for {3 * NEGATIVE_TIMEOUT:g} s, appeared {seconds:.2f} s after the unlock")
        self.assertLessEqual(seconds, NEGATIVE_TIMEOUT + SLACK)
        self.assertEqual(read_file(daemon.path(name, "file")), b"complete now\n")

    def test_server_stopped_and_restarted(self):
        """`rpc.nfsd 0`: cached reads are served, uncached ones answer EIO within the deadline;
        `rpc.nfsd 8`: served again, without a remount."""
        misc, headers, single = self.paths["misc"], self.paths["headers"], self.paths["single_file"]
        daemon = self.mount_export(allowed=(r"lazystore: error: .*",))
        cached = (misc, "blobs/small-a.bin")
        self.assertEqual(read_file(daemon.path(*cached)), read_file(self.native(*cached)))
        os.listdir(daemon.path(headers))  # its tree is listed, no content read
        uncached = (misc, "blobs/3m-plus.bin")
        unlisted = [single]  # never looked up
        guest.stop_server()
        try:
            data, error, seconds = timed(read_file, daemon.path(*cached))
            self.assertIsNone(error, f"cached read with the server stopped: {error}")
            self.assertEqual(data, read_file(self.native(*cached)))
            cached_s = seconds
            _, error, seconds = timed(read_file, daemon.path(*uncached))
            self.assertIsNotNone(error, "an uncached read succeeded with the server stopped")
            self.assertEqual(error.errno, errno.EIO, error)
            self.assertLess(seconds, EIO_BOUND, f"EIO after {seconds:.1f} s")
            eio_s = seconds
            _, error, seconds = timed(os.lstat, daemon.path(*unlisted))
            self.assertIsNotNone(error, "a lookup needing the server succeeded while it was stopped")
            self.assertEqual(error.errno, errno.EIO, f"{error} (ENOENT would hide a real path)")
            self.assertLess(seconds, EIO_BOUND)
        finally:
            guest.start_server(grace_seconds=RESTART_GRACE)
            self.addCleanup(guest.end_grace)
        restarted = time.monotonic()

        def served():
            try:
                return read_file(daemon.path(*uncached)) == read_file(self.native(*uncached))
            except OSError:
                return False
        recovered = guest.wait_until(served, RECOVERY_DEADLINE, interval=0.5)
        recovered_s = time.monotonic() - restarted
        self.assertTrue(recovered, f"not served again {RECOVERY_DEADLINE:g} s after rpc.nfsd "
                        f"{guest.NFSD_THREADS} (grace period {RESTART_GRACE} s, in grace now: {guest.in_grace()}): "
                        + self.log_excerpt(daemon, uncached[1], last=True))
        self.assertEqual(read_file(daemon.path(single)), read_file(self.native(single)))
        some = regular_files(self.native(headers))[:20]
        for rel in some:
            self.assertEqual(read_file(daemon.path(headers, rel)), read_file(self.native(headers, rel)))
        self.report(f"cached read {cached_s:.2f} s, EIO after {eio_s:.2f} s while stopped; "
                    f"served again {recovered_s:.1f} s after the restart, within the server's "
                    f"{RESTART_GRACE} s grace period")

    def test_root_squash(self):
        """The seed's export squashes root (the default `root_squash`): lazystore, running as
        root, reads as nobody — world-readable files (all of a Nix store) are served; a file
        only root may read answers EACCES, never bytes."""
        self.assertIn("root_squash", guest.export_options())
        name = random_hash() + "-lab-private"
        staging = self.native("..", "staging-" + name)
        os.makedirs(staging)
        with open(os.path.join(staging, "public"), "wb") as f:
            f.write(b"world-readable\n")
        with open(os.path.join(staging, "private"), "wb") as f:
            f.write(b"root only\n")
        os.chmod(os.path.join(staging, "public"), 0o444)
        os.chmod(os.path.join(staging, "private"), 0o400)
        os.rename(staging, self.native(name))
        daemon = self.mount_export(allowed=(r"lazystore: (error|warning): .*",))
        self.assertEqual(read_file(daemon.path(name, "public")), b"world-readable\n")
        _, error, _ = timed(read_file, daemon.path(name, "private"))
        self.assertIsNotNone(error, "a root-only file was served through a root_squash export")
        self.assertIn(error.errno, (errno.EACCES, errno.EIO), error)
        self.report(f"world-readable file served; root-only file: {errno.errorcode[error.errno]} "
                    f"({self.log_excerpt(daemon, 'private')})")

    def test_unprivileged_source_port(self):
        """The seed's export is `secure` (the default): only reserved source ports. lazystore as
        root binds one (libnfs); without CAP_NET_BIND_SERVICE it is refused, with a clear error,
        until the export says `insecure`."""
        self.assertIn("secure", guest.export_options())
        misc = self.paths["misc"]
        probe = (misc, "blobs/small-b.bin")
        try:
            daemon = self.mount_export(daemon_class=UnprivilegedPortDaemon,
                                       allowed=(r"lazystore: (error|warning): .*",))
            _, error, _ = timed(read_file, daemon.path(*probe))
            refused = error is not None
            if refused:
                error = f"{errno.errorcode.get(error.errno, error.errno)}; {self.log_excerpt(daemon, '')}"
            daemon.stop(check=False)
        except AssertionError as e:  # the daemon would not start: also a refusal
            refused, error = True, e
        self.assertTrue(refused, "an unprivileged source port was accepted by a secure export")
        guest.reexport(guest.EXPORT_LINE.split("(", 1)[1].rstrip(")") + ",insecure")
        try:
            daemon = self.mount_export(daemon_class=UnprivilegedPortDaemon)
            self.assertEqual(read_file(daemon.path(*probe)), read_file(self.native(*probe)))
            daemon.stop()
        finally:
            guest.restore_export()
        self.report(f"secure export refused it ({str(error).splitlines()[0][:300]}); insecure served it")

    def test_kill9_during_cold_read(self):
        """kill -9 of the serving process while readers are in a cold read (a FUSE request
        waiting for its answer): every read completes, with the right bytes. On 6.1 the kernel
        has no FUSE_NOTIFY_RESEND."""
        misc, headers = self.paths["misc"], self.paths["headers"]
        files = [(misc, rel) for rel in regular_files(self.native(misc))]
        files += [(headers, rel) for rel in regular_files(self.native(headers))][:120]
        expected = {key: file_digest(self.native(*key)) for key in files}
        daemon = self.mount_export(options={"upstream-timeout": 30}, allowed=KILLED)
        os.stat(daemon.mountpoint)
        connection = guest.fuse_connection(daemon.mountpoint)
        guest.drop_caches()
        done, problems, tids = [], [], []

        def reader(shard):
            tids.append(threading.get_native_id())
            for key in shard:
                try:
                    h = hashlib.sha256()
                    with open(daemon.path(*key), "rb") as f:
                        while True:
                            block = f.read(256 * 1024)
                            if not block:
                                break
                            h.update(block)
                    if h.hexdigest() != expected[key]:
                        problems.append(f"wrong bytes: {'/'.join(key)}")
                except OSError as e:
                    problems.append(f"{'/'.join(key)}: {e}")
                done.append(key)

        threads = [threading.Thread(target=reader, args=(files[i::4],), daemon=True) for i in range(4)]
        for t in threads:
            t.start()
        in_flight = guest.wait_until(lambda: done and guest.fuse_waiting(connection) > 0, 60, 0.01)
        self.assertTrue(in_flight, "no FUSE request in flight within 60 s of the readers' start")
        waiting, at_kill = guest.fuse_waiting(connection), len(done)
        old = daemon.kill_server()
        daemon.wait_for_server(old, deadline=30)
        # Progress, not a fixed time: the readers stall when no file finishes for STALL_DEADLINE.
        last, last_change = len(done), time.monotonic()
        while any(t.is_alive() for t in threads) and time.monotonic() - last_change < STALL_DEADLINE:
            time.sleep(0.2)  # observation interval, bounded by STALL_DEADLINE without progress
            if len(done) != last:
                last, last_change = len(done), time.monotonic()
        blocked = [t for t in threads if t.is_alive()]
        if blocked:
            states = guest.process_states(tids)
            still, finished = guest.fuse_waiting(connection), len(done)
            guest.abort_fuse(connection)  # frees the readers; the mount is dead from here
            for t in threads:
                t.join(30)
            self.fail(f"{len(blocked)} of 4 readers blocked: no file finished for {STALL_DEADLINE:g} s after "
                      f"kill -9 of the server ({at_kill} of {len(files)} files read before the kill, "
                      f"{finished} when given up; {waiting} FUSE requests waiting at the kill, {still} "
                      f"still waiting; reader states {sorted(set(states.values()))})")
        self.assertEqual(problems, [])
        self.assertEqual(len(done), len(files))
        self.report(f"{len(files)} files read right ({at_kill} before the kill), {waiting} FUSE requests "
                    "waiting at the kill")

    # -----------------------------------------------------------------------------------------
    @staticmethod
    def log_excerpt(daemon, needle, last=False):
        """The daemon's first (or last) warning/error line mentioning `needle` (what an operator
        sees)."""
        lines = [line.strip()[:300] for line in daemon.stderr().splitlines()
                 if needle in line and (" warning: " in line or " error: " in line)]
        return (lines[-1] if last else lines[0]) if lines else "nothing logged"

    def report(self, text):
        print(f"\n  {self.id().split('.', 1)[1]}: {text}", flush=True)
        _details[self.id()] = text


class ServerChecks(LazystoreTestCase):
    """The export itself: the seed's line, adapted to the guest's loopback."""

    @classmethod
    def setUpClass(cls):
        pass

    def test_export_line(self):
        """/etc/exports is the seed's line with 127.0.0.1 for 10.0.0.0/16; exportfs shows ro,
        sync, no_subtree_check and the defaults root_squash and secure in force, and the kernel
        client cannot write through it."""
        self.assertEqual(guest.EXPORT_LINE, f"{guest.EXPORT} 127.0.0.1(ro,sync,no_subtree_check)")
        with open("/etc/exports") as f:
            self.assertEqual(f.read().strip(), guest.EXPORT_LINE)
        options = guest.export_options()
        for option in ("ro", "sync", "no_subtree_check", "root_squash", "secure"):
            self.assertIn(option, options)
        mountpoint = os.path.join(self.work, "knfs")
        os.makedirs(mountpoint)
        guest.run(["mount", "-t", "nfs", "-o", "rw,nfsvers=3", f"127.0.0.1:{guest.EXPORT}", mountpoint])
        try:
            _, error, _ = timed(os.mkdir, os.path.join(mountpoint, "x"))
            self.assertIsNotNone(error)
            self.assertEqual(error.errno, errno.EROFS, error)
        finally:
            guest.run(["umount", mountpoint])


class NFSv4Root(LazystoreTestCase):
    """NFSv4 paths start at the server's pseudo root. Without an `fsid=0` export, nfs-utils makes
    that root itself from the exports (the v3 and v4 paths are then the same); with one, a v4 path
    is relative to it."""

    @classmethod
    def setUpClass(cls):
        cls.paths = guest.manifest()

    def test_explicit_fsid0_root(self):
        """The store disk's root exported with fsid=0: lazystore's v4 path is /nix/store, as on a
        server whose store is /nix/store, while the v3 path stays /srv/nix/store."""
        single = self.paths["single_file"]
        root = os.path.dirname(os.path.dirname(guest.EXPORT))  # /srv
        options = guest.EXPORT_LINE.split("(", 1)[1].rstrip(")")
        guest.run(["exportfs", "-o", f"{options},fsid=0", f"127.0.0.1:{root}"])
        try:
            guest.run(["exportfs", "-f"])
            source = f"nfs://127.0.0.1/{os.path.relpath(guest.EXPORT, root)}?version=4"
            daemon = self.mount(source=source, options={"upstream-timeout": UPSTREAM_TIMEOUT})
            self.assertEqual(read_file(daemon.path(single)), read_file(os.path.join(guest.EXPORT, single)))
            daemon.stop()
        finally:
            guest.run(["exportfs", "-u", f"127.0.0.1:{root}"])
            guest.restore_export()
        print(f"\n  served through {source}", flush=True)


class Kernel61(LazystoreTestCase):
    """What the guest's kernel (the 6.1 of Debian 12 executors) does with the FUSE mount."""

    @classmethod
    def setUpClass(cls):
        cls.paths = guest.manifest()

    def test_walk_without_per_entry_lookups(self):
        """A cold walk (W1's `find -printf '%s %m %l'`) of a store path with a 178-entry directory
        sends no LOOKUP per entry: every readdir is a READDIRPLUS (6.1's "auto" mode asks plus
        for a directory's first page only)."""
        headers = self.paths["headers"]
        daemon = self.mount(source=guest.SOURCE_V3, options={"upstream-timeout": UPSTREAM_TIMEOUT})
        entries = 1 + sum(len(d) + len(f) for _, d, f in os.walk(os.path.join(guest.EXPORT, headers)))
        before = daemon.stats().get("lookups", 0)
        listed = guest.run(["find", daemon.path(headers), "-printf", "%s %m %l\n"]).count("\n")
        lookups = daemon.stats().get("lookups", 0) - before
        self.assertEqual(listed, entries)
        print(f"\n  {lookups} LOOKUPs for a walk of {entries} entries", flush=True)
        self.assertLessEqual(lookups, 2, f"{lookups} LOOKUPs for a walk of {entries} entries")


class NFSv3(Checks, LazystoreTestCase):
    SOURCE = guest.SOURCE_V3


class NFSv4(Checks, LazystoreTestCase):
    SOURCE = guest.SOURCE_V4


# ---------------------------------------------------------------------------------------------

_details = {}


class CheckResult(unittest.TextTestResult):
    """Prints `CHECK name: STATUS seconds detail` as each check ends; keeps them for the JSON."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.checks = []

    def startTest(self, test):
        self._started = time.monotonic()
        self._status, self._detail = "PASS", ""
        super().startTest(test)

    def _set(self, status, detail):
        if self._status == "PASS" or status == "ERROR":
            self._status = status
        self._detail += detail

    def addFailure(self, test, err):
        super().addFailure(test, err)
        self._set("FAIL", self._exc_info_to_string(err, test))

    def addError(self, test, err):
        super().addError(test, err)
        self._set("ERROR", self._exc_info_to_string(err, test))

    def addSubTest(self, test, subtest, err):
        super().addSubTest(test, subtest, err)
        if err is not None:
            failed = issubclass(err[0], subtest.failureException)
            self._set("FAIL" if failed else "ERROR", f"{subtest}: " + self._exc_info_to_string(err, subtest))

    def addSkip(self, test, reason):
        super().addSkip(test, reason)
        self._set("SKIP", reason)

    def stopTest(self, test):
        super().stopTest(test)
        name = test.id().split(".", 1)[1]
        seconds = time.monotonic() - self._started
        detail = self._detail or _details.get(test.id(), "")
        self.checks.append({"name": name, "status": self._status, "seconds": round(seconds, 2),
                            "detail": detail})
        lines = [line for line in detail.strip().splitlines() if line.strip()]
        summary = lines[-1].strip() if lines else ""
        self.stream.write(f"\nCHECK {name}: {self._status} {seconds:.1f} s {summary[:300]}\n")
        self.stream.flush()


def main():
    if not guest.in_guest():
        print("guest_conformance.py runs inside the lab guest (tests/lab/test_lab.py)", file=sys.stderr)
        return 2
    os.environ.setdefault("LAZYSTORE_TEST_TMP", guest.SCRATCH)
    guest.end_grace()  # the boot's grace period: the first checks need not wait it out
    names = sys.argv[1:]
    loader = unittest.TestLoader()
    module = sys.modules[__name__]
    suite = loader.loadTestsFromNames(names, module) if names else loader.loadTestsFromModule(module)
    runner = unittest.TextTestRunner(verbosity=2, resultclass=CheckResult, stream=sys.stdout)
    result = runner.run(suite)
    with open(os.path.join(guest.OUT, "checks.json"), "w") as f:
        json.dump({"kernel": os.uname().release, "checks": result.checks}, f, indent=1)
    return 0 if result.wasSuccessful() else 1


if __name__ == "__main__":
    sys.exit(main())
