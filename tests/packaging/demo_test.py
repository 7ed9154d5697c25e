#!/usr/bin/python3
"""packaging/demo.sh, run as a user runs it:

- to completion: exit 0, the final success line, every step's timing in milliseconds and the
  cold/warm summary table (NFS and HTTP rows), the counters of each upstream, nothing left;
- interrupted like Ctrl-C (SIGINT to its process group) while the executor runs its first
  program, with sshd, nfs-ganesha and the NFS mount up (checked before the signal): exit 130, the
  "interrupted" line and no "FAILED" line, and nothing left — no process naming the demo's temp
  directory (lazystore, ganesha, sshd, nginx, serve.py, the shared push connection), no mount
  under it, the directory itself removed.

In both runs the demo must not have had to force anything (no "warning:" line).
Environment: SOURCE_ROOT, LAZYSTORE_BUILD_DIR (the build directory the demo uses).
"""

import os
import re
import select
import signal
import subprocess
import sys
import time
import unittest

SOURCE_ROOT = os.path.abspath(os.environ.get("SOURCE_ROOT", os.path.join(os.path.dirname(__file__), "..", "..")))
sys.path.insert(0, os.path.join(SOURCE_ROOT, "tests", "integration"))

from lazystore_testlib import log, main, skip  # noqa: E402

DEMO = os.path.join(SOURCE_ROOT, "packaging", "demo.sh")
RUN_DEADLINE = 900.0
STOP_DEADLINE = 180.0
TOOLS = ("nix-store", "nix", "bwrap", "ganesha.nfsd", "nginx", "fusermount3", "ssh-keygen", "ninja", "meson")


def processes_naming(text):
    """{pid: command line} of every process whose arguments contain `text`."""
    found = {}
    needle = text.encode()
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                cmdline = f.read()
        except OSError:
            continue
        if needle in cmdline and int(pid) != os.getpid():
            found[int(pid)] = cmdline.replace(b"\0", b" ").decode(errors="replace").strip()
    return found


def mounts_under(directory):
    with open("/proc/self/mountinfo") as f:
        return [line.split()[4] for line in f if line.split()[4].startswith(directory.rstrip("/") + "/")]


class Demo:
    """demo.sh in a process group of its own (a signal to the group is what a terminal's Ctrl-C
    sends), SIGINT at its default disposition, stdout and stderr read line by line."""

    def __init__(self, *args):
        env = dict(os.environ)
        env.setdefault("LAZYSTORE_BUILD_DIR", os.path.join(SOURCE_ROOT, "build"))
        self.process = subprocess.Popen(
            ["bash", DEMO, *args], stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
            env=env, process_group=0,
            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
        self.lines = []
        self.tmp = None
        self._buffer = b""

    def read_until(self, pattern, deadline_seconds):
        """Reads output until a line matches `pattern` (returns the match) or the demo ends
        (returns None); fails past the deadline."""
        regex = re.compile(pattern)
        deadline = time.monotonic() + deadline_seconds
        while True:
            for line in self._take_lines():
                if regex.search(line):
                    return regex.search(line)
            if self.process.poll() is not None and not self._fill(0):
                return None
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise AssertionError(f"no line matching {pattern!r} within {deadline_seconds} s:\n" + self.tail())
            self._fill(min(remaining, 1.0))

    def _fill(self, timeout):
        ready, _, _ = select.select([self.process.stdout], [], [], timeout)
        if not ready:
            return False
        data = os.read(self.process.stdout.fileno(), 65536)
        self._buffer += data
        return bool(data)

    def _take_lines(self):
        *complete, self._buffer = self._buffer.split(b"\n")
        out = []
        for raw in complete:
            line = raw.decode(errors="replace")
            self.lines.append(line)
            out.append(line)
            found = re.match(r"^    temporary directory: (/\S+)$", line)
            if found:
                self.tmp = found.group(1)
        return out

    def finish(self, deadline_seconds):
        """Reads the rest of the output and waits for the exit status (deadline)."""
        end = time.monotonic() + deadline_seconds
        while self.process.poll() is None or self._fill(0):
            if time.monotonic() > end:
                self.process.kill()  # our own child, by its pid
                raise AssertionError(f"demo.sh still running after {deadline_seconds} s:\n" + self.tail())
            self._fill(0.5)
            self._take_lines()
        self._buffer += b"\n"
        self._take_lines()
        self.process.stdout.close()
        return self.process.wait()

    def stop(self):
        """After a failed check: SIGTERM (the demo cleans up), SIGKILL past the deadline."""
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=STOP_DEADLINE)
            except subprocess.TimeoutExpired:
                self.process.kill()  # our own child, by its pid
                self.process.wait()

    def output(self):
        return "\n".join(self.lines)

    def tail(self, n=60):
        return "\n".join(self.lines[-n:])


class DemoTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        missing = [t for t in TOOLS if subprocess.run(["sh", "-c", f"command -v {t}"],
                                                      stdout=subprocess.DEVNULL).returncode != 0]
        if missing or not os.path.exists("/usr/sbin/sshd") or not os.path.exists("/dev/fuse"):
            skip(f"missing: {' '.join(missing) or 'sshd or /dev/fuse'}")

    def assertNothingLeft(self, demo):
        self.assertIsNotNone(demo.tmp, "the demo never said its temporary directory")
        self.assertEqual(processes_naming(demo.tmp + "/"), {}, "processes of the demo left running")
        self.assertEqual(mounts_under(demo.tmp), [], "mounts of the demo left")
        self.assertFalse(os.path.exists(demo.tmp), f"{demo.tmp} left behind")
        warnings = [line for line in demo.lines if "warning:" in line and line.startswith("demo.sh")]
        self.assertEqual(warnings, [], "the cleanup had to force something")

    def test_runs_to_completion(self):
        began = time.monotonic()
        demo = Demo()
        status = demo.finish(RUN_DEADLINE)
        out = demo.output()
        log(f"demo.sh: {time.monotonic() - began:.1f} s\n{demo.tail(40)}")
        self.assertEqual(status, 0, demo.tail())
        self.assertRegex(out, r"(?m)^==> demo finished successfully in \d+ ms$")
        self.assertNotIn("FAILED", out)
        for step in ("install-deps.sh", "build (the four programs)", "sshd up", "nfs-ganesha up",
                     "the developer's closure", "lazystore-push (new connection)",
                     "lazystore-push no-op (shared conn.)", "lazystore-push one path (shared conn.)",
                     "nix copy to the binary cache", "lazystore-publish", "nginx up"):
            self.assertRegex(out, rf"(?m)^    {re.escape(step)} +\d+ ms$")
        # The table: cold and warm side by side, milliseconds; warm runs fetch nothing.
        for upstream in ("NFS", "HTTP"):
            self.assertRegex(out, rf"(?m)^    {upstream} +\d+ ms +\d+ ms +\d+ ms +\d+ ms +\d+\.\dx +[1-9]\d*\.\d MiB +0\.0 MiB$")
        self.assertRegex(out, r"(?m)^    closure: \d+\.\d MiB of NAR; NFS cold run with kill -9 of the server: \d+ ms$")
        self.assertRegex(out, r"(?m)^    ran in \d+ ms \(cold, with the kill\), same output; server 2 of this mount answers")
        # Each upstream shows its own counters, and only those.
        nfs = out[out.index("the counters of the NFS upstream"):out.index("the same closure published")]
        self.assertIn("upstream_requests", nfs)
        self.assertNotIn("http_requests", nfs)
        http = out[out.index("the counters of the HTTP upstream"):out.index("==> [", out.index("the counters of the HTTP upstream"))]
        for counter in ("http_requests", "http_bytes", "manifest_paths", "block_hash_failures", "nar_downloads"):
            self.assertIn(counter, http)
        self.assertRegex(http, r"(?m)^    \| manifest_paths +[1-9]\d* ")
        self.assertRegex(http, r"(?m)^    \| block_hash_failures +0 ")
        self.assertRegex(http, r"(?m)^    \| nar_downloads +0 ")
        self.assertIn("lazystore-ctl -m", out)
        self.assertRegex(out, r"(?m)^    \| upstream +reachable")
        self.assertIn("connection reused: true", out)
        self.assertIn("persistent connection stopped", out)
        self.assertNothingLeft(demo)

    def test_interrupted_like_ctrl_c(self):
        demo = Demo()
        try:
            found = demo.read_until(r"==> \[ *[\d.]+ s\] the executor runs the pushed program, cold", RUN_DEADLINE)
            self.assertIsNotNone(found, "the demo ended before its first run:\n" + demo.tail())
            self.assertIsNotNone(demo.tmp)
            running = processes_naming(demo.tmp + "/")
            kinds = {kind for kind in ("sshd", "ganesha.nfsd", "lazystore ") if any(kind in c for c in running.values())}
            self.assertEqual(kinds, {"sshd", "ganesha.nfsd", "lazystore "}, f"not all servers are up: {running}")
            self.assertIn(os.path.join(demo.tmp, "mnt-nfs"), mounts_under(demo.tmp))
            # Interrupted while the executor's program runs: the step's output goes to a file
            # then, and the cleanup must still report to the user.
            mnt = os.path.join(demo.tmp, "mnt-nfs")
            deadline = time.monotonic() + 60
            while not any(c.startswith("bwrap ") for c in processes_naming(mnt).values()):
                self.assertLess(time.monotonic(), deadline, "the executor's program never ran:\n" + demo.tail())
                time.sleep(0.01)  # polling interval, bounded by the deadline
            os.killpg(demo.process.pid, signal.SIGINT)  # what a terminal's Ctrl-C does
            status = demo.finish(STOP_DEADLINE)
        finally:
            demo.stop()
        out = demo.output()
        log(demo.tail(25))
        self.assertEqual(status, 130, demo.tail())
        self.assertRegex(out, r"(?m)^==> demo interrupted by SIGINT after \d+ ms; everything was cleaned up$")
        self.assertNotIn("FAILED", out)
        self.assertNothingLeft(demo)


if __name__ == "__main__":
    main(daemon=False)
