#!/usr/bin/python3
"""kill -9 of the process that serves FUSE requests does not end the mount: the supervisor (the
process that mounted and holds /dev/fuse) starts another server on the same session, with the
same inode numbers, file handles and cache. Open files keep reading correct bytes; requests in
flight at the kill (observed: the fault proxy holds the NFS READ a FUSE READ is waiting for) are
answered by the next server from the request journal, without FUSE_NOTIFY_RESEND, as on a
kernel before 6.9; inode numbers the kernel forgot leave the inode journal; a daemonized mount
and its supervisor end cleanly with the mount.
LAZYSTORE_SERVER_KILLS sets the number of kills of the kill loop (default 20)."""

import os
import random
import re
import signal
import subprocess
import threading
import time

from fault_proxy import FaultProxy
from lazystore_testlib import MiB, LazystoreTestCase, abort_fuse_connection, daemon_processes, \
    is_lazystore_mounted, main, mount_namespace_holders, parent_pid, read_file, regular_files, \
    takeover_mode, tree_differences, wait_until
from nfs_server import Ganesha

KILLS = int(os.environ.get("LAZYSTORE_SERVER_KILLS", "20"))
KILLED = (r"lazystore: error: the server of .* was killed by signal 9",)


def memfd_bytes(pid, name):
    """Total size of the memfds called `name` that process `pid` holds."""
    total = 0
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            if os.readlink(f"/proc/{pid}/fd/{fd}").startswith(f"/memfd:{name} "):
                total += os.stat(f"/proc/{pid}/fd/{fd}").st_size
        except OSError:
            pass
    return total


class SupervisorTest(LazystoreTestCase):

    def test_killed_server_is_replaced_and_open_files_keep_reading(self):
        daemon = self.mount(allowed_stderr=KILLED)
        misc, include, python = (self.fixture.paths[k] for k in ("misc", "include", "python"))
        big_source = os.path.join(self.fixture.store, misc, "big.bin")
        expected = read_file(big_source)
        big = open(daemon.path(misc, "big.bin"), "rb")
        self.addCleanup(big.close)
        head = big.read(3 * MiB)
        include_fd = os.open(daemon.path(include), os.O_RDONLY | os.O_DIRECTORY)
        self.addCleanup(os.close, include_fd)
        top = os.scandir(daemon.mountpoint)  # a top-level listing open across the kill
        self.addCleanup(top.close)
        first = next(top).name
        inodes = {p: os.stat(daemon.path(p)).st_ino for p in (misc, include, f"{misc}/big.bin")}
        supervisor = daemon.process.pid

        old = daemon.kill_server()
        killed_at = time.monotonic()
        # A new operation on a path never looked up before: answered by the next server.
        names = os.listdir(daemon.path(python))
        recovered = time.monotonic() - killed_at
        new = daemon.wait_for_server(old)
        print(f"\nfirst new operation answered {recovered * 1000:.0f} ms after kill -9 of the server")
        self.assertLess(recovered, 10.0)
        self.assertEqual(sorted(names), sorted(os.listdir(os.path.join(self.fixture.store, python))))

        # What was open before the kill goes on.
        self.assertEqual(head + big.read(), expected)
        self.assertEqual(sorted(os.listdir(include_fd)),
                         sorted(os.listdir(os.path.join(self.fixture.store, include))))
        rest = [first] + [entry.name for entry in top]
        self.assertEqual(sorted(rest), sorted(os.listdir(daemon.mountpoint)))
        self.assertEqual({p: os.stat(daemon.path(p)).st_ino for p in inodes}, inodes)
        self.assertEqual(tree_differences(os.path.join(self.fixture.store, include),
                                          daemon.path(include)), [])
        self.assertEqual(daemon.process.pid, supervisor)
        self.assertNotEqual(new, old)
        self.assertIn("serves again", daemon.stderr())

    def test_files_read_without_an_open_keep_reading_after_a_kill(self):
        # The kernel opens files itself, so the next server never sees an OPEN: it serves reads
        # (fh 0) by inode, through files opened before the kill and after it.
        daemon = self.mount(allowed_stderr=KILLED)
        misc = self.fixture.paths["misc"]
        expected = read_file(os.path.join(self.fixture.store, misc, "big.bin"))
        held = open(daemon.path(misc, "big.bin"), "rb")
        self.addCleanup(held.close)
        head = held.read(3 * MiB)
        before = daemon.stats()["open_requests"]
        small = daemon.path(misc, "blobs", "small-a.bin")
        read_file(small)
        self.assertEqual(daemon.stats()["open_requests"], before)
        old = daemon.kill_server()
        daemon.wait_for_server(old)
        with open("/proc/sys/vm/drop_caches", "w") as f:
            f.write("3\n")  # the next reads reach the new server
        self.assertEqual(head + held.read(), expected)
        self.assertEqual(read_file(small), read_file(os.path.join(self.fixture.store, misc, "blobs", "small-a.bin")))
        self.assertEqual(read_file(daemon.path(misc, "blobs", "3m-plus.bin")),
                         read_file(os.path.join(self.fixture.store, misc, "blobs", "3m-plus.bin")))
        stats = daemon.stats()
        # The counters outlive servers: still the one OPEN of the mount's first open.
        self.assertEqual(stats["open_requests"], before, "the next server was asked to open a file")
        self.assertEqual(before, 1)
        self.assertGreater(stats["served_bytes"], 0)

    def read_in_flight_at_the_kill(self, mode):
        """A cold read() whose FUSE READ the server has read and not answered (it waits for the
        NFS READ the fault proxy holds) at the kill -9: it completes with the right bytes."""
        export = self.private_upstream("export")
        server = Ganesha.v4(export, os.path.join(self.work, "ganesha"))
        self.addCleanup(server.close)
        proxy = FaultProxy(server.port).start()
        self.addCleanup(proxy.close)
        misc = self.fixture.paths["misc"]
        with takeover_mode(mode):
            daemon = self.mount(source=f"nfs://127.0.0.1/store?version=4&nfsport={proxy.port}",
                                options={"upstream-timeout": 60}, allowed_stderr=KILLED)
        path = daemon.path(misc, "big.bin")
        os.stat(path)  # metadata fetched, no content
        expected = read_file(os.path.join(export, misc, "big.bin"))[:2 * MiB]
        result = {}

        def reader():
            try:
                with open(path, "rb") as f:
                    result["data"] = f.read(2 * MiB)
            except OSError as e:
                result["error"] = e

        proxy.hold_next_read()
        thread = threading.Thread(target=reader, daemon=True)
        thread.start()
        self.assertTrue(proxy.wait_for_held_read(30), "the read never reached the upstream")
        self.assertTrue(thread.is_alive(), f"the read did not wait for its upstream READ: {result}")
        old = daemon.kill_server()
        killed_at = time.monotonic()
        daemon.wait_for_server(old)
        thread.join(60)
        if thread.is_alive():
            abort_fuse_connection(daemon.mountpoint)  # else the reader waits for ever
            thread.join(30)
            self.fail(f"the read in flight at the kill never finished\n{daemon.stderr()[-3000:]}")
        print(f"\n[{mode or 'default'}] the read in flight at the kill completed "
              f"{(time.monotonic() - killed_at) * 1000:.0f} ms after kill -9 of the server")
        self.assertNotIn("error", result)
        self.assertEqual(result["data"], expected)
        self.assertEqual(proxy.stats()["held_reads"], 1)
        return daemon

    def test_a_read_in_flight_at_the_kill_is_replayed_without_resend(self):
        daemon = self.read_in_flight_at_the_kill("replay-only")
        stats = daemon.stats()
        self.assertGreaterEqual(stats["replayed_requests"], 1)
        self.assertNotRegex(daemon.stderr(), r"kernel (cannot )?resend")

    def test_a_read_in_flight_at_the_kill_completes_by_default(self):
        daemon = self.read_in_flight_at_the_kill(None)
        self.assertGreaterEqual(daemon.stats()["replayed_requests"], 1)

    def test_replayed_and_resent_requests_are_answered_once(self):
        daemon = self.read_in_flight_at_the_kill("both")
        self.assertGreaterEqual(daemon.stats()["replayed_requests"], 1)
        # The kernel took one of the two answers of each request and refused the other (the
        # replay's, which may come after the resent copy completed the read).
        wait_until(lambda: daemon.stats()["refused_replies"] >= 1, 30, "the refused second answer")

    def test_forgotten_inodes_leave_the_journal_and_held_ones_keep_working(self):
        misc, include, python = (self.fixture.paths[k] for k in ("misc", "include", "python"))
        source = self.fixture.store
        names = [(top, name) for top in (python, include)
                 for name in regular_files(os.path.join(source, top))]
        daemon = self.mount(allowed_stderr=KILLED)
        big = open(daemon.path(misc, "big.bin"), "rb")  # held across everything below
        self.addCleanup(big.close)
        held_dir = os.open(daemon.path(include), os.O_RDONLY | os.O_DIRECTORY)
        self.addCleanup(os.close, held_dir)
        held_ino = os.fstat(big.fileno()).st_ino
        for top, name in names:
            os.stat(daemon.path(top, name))
        daemon.wait_for_server(daemon.kill_server())
        wait_until(lambda: len(self.taken_over(daemon)) == 1, 30, "the second server's takeover")
        memfds_before = memfd_bytes(daemon.server_pid(), "lazystore-inodes")

        # The kernel forgets every inode nothing holds: the server drops them.
        forgotten = daemon.stats()["forgotten_inodes"]
        with open("/proc/sys/vm/drop_caches", "w") as f:
            f.write("2\n")
        wait_until(lambda: daemon.stats()["forgotten_inodes"] >= forgotten + len(names), 30,
                   "FORGET of the dropped inodes")
        daemon.wait_for_server(daemon.kill_server())
        wait_until(lambda: len(self.taken_over(daemon)) == 2, 30, "the third server's takeover")
        memfds_after = memfd_bytes(daemon.server_pid(), "lazystore-inodes")
        (before, journal_before), (after, journal_after) = self.taken_over(daemon)
        print(f"\ninodes taken over: {before} after {len(names)} lookups, {after} after the kernel "
              f"forgot them; inode journal {journal_before} -> {journal_after} bytes "
              f"(its memfds {memfds_before} -> {memfds_after})")
        self.assertGreater(before, len(names))
        self.assertLess(after, 50)
        self.assertLess(journal_after * 20, journal_before)
        self.assertLess(memfds_after, memfds_before)

        # What the kernel still holds keeps working across the kills.
        self.assertEqual(os.fstat(big.fileno()).st_ino, held_ino)
        self.assertEqual(big.read(), read_file(os.path.join(source, misc, "big.bin")))
        self.assertEqual(sorted(os.listdir(held_dir)), sorted(os.listdir(os.path.join(source, include))))
        self.assertEqual(tree_differences(os.path.join(source, include), daemon.path(include)), [])

    @staticmethod
    def taken_over(daemon):
        """(inodes, inode journal bytes) each server took over from the one before."""
        return [(int(n), int(size)) for n, size in
                re.findall(r"taking over (\d+) inodes .*\(inode journal: (\d+) bytes\)", daemon.stderr())]

    def test_kill_loop_readers_see_no_error_and_no_wrong_byte(self):
        misc, python = self.fixture.paths["misc"], self.fixture.paths["python"]
        source = self.fixture.store
        files = [(misc, rel) for rel in regular_files(os.path.join(source, misc))]
        files += [(python, rel) for rel in regular_files(os.path.join(source, python))][:300]
        expected = {key: read_file(os.path.join(source, *key)) for key in files}
        # Small chunks and read-ahead: many fills in flight when a kill lands. Requests in flight
        # come back from the request journal alone, as on a kernel before 6.9.
        with takeover_mode("replay-only"):
            daemon = self.mount(options={"chunk-size": "64K", "readahead": 8}, allowed_stderr=KILLED)
        stop = threading.Event()
        problems, reads = [], [0] * 4

        def reader(index):
            r = random.Random(index)
            while not stop.is_set():
                key = r.choice(files)
                data = expected[key]
                try:
                    with open(daemon.path(*key), "rb") as f:  # open across several kills
                        for _ in range(r.randrange(1, 20)):
                            offset = r.randrange(0, max(1, len(data)))
                            length = r.choice((1, 4096, 65536, MiB))
                            # Out of the kernel's page cache: every read is a FUSE READ, so
                            # the server is busy when a kill lands, however warm the files are.
                            os.posix_fadvise(f.fileno(), 0, 0, os.POSIX_FADV_DONTNEED)
                            f.seek(offset)
                            if f.read(length) != data[offset:offset + length]:
                                problems.append(f"wrong bytes: {key} at {offset}+{length}")
                            reads[index] += 1
                except OSError as e:
                    problems.append(f"{key}: {e}")

        threads = [threading.Thread(target=reader, args=(i,)) for i in range(len(reads))]
        for t in threads:
            t.start()
        rng = random.Random(20261125)
        replayed = 0  # requests in flight at a kill, answered by the next server
        try:
            for _ in range(KILLS):
                time.sleep(rng.uniform(0.05, 1.6))  # some young servers: a few backoffs
                replayed += daemon.stats()["replayed_requests"]
                daemon.wait_for_server(daemon.kill_server())
        finally:
            stop.set()
            for t in threads:
                t.join(120)
        replayed += daemon.stats()["replayed_requests"]
        print(f"\n{KILLS} kills of the server, {sum(reads)} reads compared, "
              f"{len(problems)} errors or wrong bytes, {replayed} requests replayed")
        self.assertEqual(problems[:20], [])
        self.assertGreater(sum(reads), KILLS)
        self.assertGreater(replayed, 0, "no kill found a request in flight: nothing was tested")

    def test_daemonized_mount_survives_a_kill_and_ends_with_the_unmount(self):
        mountpoint = os.path.join(self.work, "mnt")
        cache = os.path.join(self.work, "cache")
        os.makedirs(mountpoint)
        argv = [os.environ["LAZYSTORE_BIN"], self.fixture.store, mountpoint, "-o", f"cache={cache}"]
        # A file, not a pipe: without /dev/log the daemon keeps logging to the stderr it was
        # started with, and a pipe would not end before the mount does.
        stderr_path = os.path.join(self.work, "daemon.stderr")
        with open(stderr_path, "w") as err:
            done = subprocess.run(argv, stdin=subprocess.DEVNULL, stdout=err, stderr=err, timeout=60)
        self.addCleanup(subprocess.run, ["fusermount3", "-u", "-z", mountpoint],
                        stderr=subprocess.DEVNULL)
        self.assertEqual(done.returncode, 0, read_file(stderr_path).decode(errors="replace"))
        self.assertTrue(is_lazystore_mounted(mountpoint))
        processes = self.processes_of(mountpoint)
        self.assertEqual(len(processes), 2, processes)  # the supervisor and its server
        supervisor = min(processes, key=lambda pid: self.parent_of(pid) in processes)
        server = [pid for pid in processes if pid != supervisor][0]
        os.kill(server, signal.SIGKILL)
        misc = self.fixture.paths["misc"]
        self.assertEqual(read_file(os.path.join(mountpoint, misc, "big.bin"))[:MiB],
                         read_file(os.path.join(self.fixture.store, misc, "big.bin"))[:MiB])
        subprocess.run(["fusermount3", "-u", mountpoint], check=True)
        end = time.monotonic() + 30
        while self.processes_of(mountpoint) and time.monotonic() < end:
            time.sleep(0.05)  # polling interval, bounded by the deadline
        self.assertEqual(self.processes_of(mountpoint), [], "processes left after the unmount")

    def test_start_failure_is_reported_and_leaves_no_mount(self):
        mountpoint = os.path.join(self.work, "mnt")
        os.makedirs(mountpoint)
        blocker = os.path.join(self.work, "not-a-directory")
        open(blocker, "w").close()
        for foreground in ([], ["-f"]):
            argv = [os.environ["LAZYSTORE_BIN"], self.fixture.store, mountpoint,
                    "-o", f"cache={blocker}/cache", *foreground]
            done = subprocess.run(argv, stdin=subprocess.DEVNULL, capture_output=True, text=True,
                                  timeout=60)
            self.assertEqual(done.returncode, 1, done.stderr)
            self.assertIn("lazystore: error: cache directory", done.stderr)
            self.assertFalse(is_lazystore_mounted(mountpoint))
            self.assertEqual(self.processes_of(mountpoint), [])

    def test_sigterm_to_the_supervisor_unmounts(self):
        daemon = self.mount()
        daemon.process.send_signal(signal.SIGTERM)
        self.assertEqual(daemon.process.wait(30), 0)
        self.assertFalse(is_lazystore_mounted(daemon.mountpoint))
        daemon.process = None

    def test_a_mount_another_namespace_still_holds_stops_cleanly(self):
        """A mount namespace copied while mounted (another test's unshare, nix, bwrap) keeps the
        mount, and its daemon serving, after the unmount here: the harness then stops the daemon
        instead of failing on a daemon that (rightly) does not exit."""
        daemon = self.mount()
        holder = subprocess.Popen(["unshare", "--mount", "--propagation", "private", "sh", "-c",
                                   "echo ready; read line"], stdin=subprocess.PIPE,
                                  stdout=subprocess.PIPE, text=True)
        self.addCleanup(holder.wait, 30)
        self.addCleanup(holder.stdin.close)
        self.assertEqual(holder.stdout.readline().strip(), "ready")
        self.assertIn(holder.pid, mount_namespace_holders(daemon.device))
        started = time.monotonic()
        self.assertEqual(daemon.stop(), [])
        self.assertLess(time.monotonic() - started, daemon.STOP_DEADLINE)
        self.assertFalse(is_lazystore_mounted(daemon.mountpoint))

    def test_unsupervised_mount_is_one_process(self):
        daemon = self.mount(options={"supervise": "false"})
        misc = self.fixture.paths["misc"]
        self.assertEqual(read_file(daemon.path(misc, "bin", "hello")),
                         read_file(os.path.join(self.fixture.store, misc, "bin", "hello")))
        self.assertIsNone(daemon.server_pid())  # no child: the process itself serves

    @staticmethod
    def processes_of(mountpoint):
        return daemon_processes(mountpoint)

    @staticmethod
    def parent_of(pid):
        return parent_pid(pid)


if __name__ == "__main__":
    main()
