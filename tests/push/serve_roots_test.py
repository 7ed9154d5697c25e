"""The server's root commands (packaging/server/lazystore-serve), run as the forced command would
run them (SSH_ORIGINAL_COMMAND), against throw-away root directories: a table of hostile
inputs, a cut-short list, concurrent adds of one name, killed commands and their leftovers, and
an expiry racing a renewal. Needs only sh, flock and coreutils.

Environment: SOURCE_ROOT (the source tree), or WRAPPER (the script under test).
"""

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import unittest

SOURCE_ROOT = os.environ.get("SOURCE_ROOT", os.path.join(os.path.dirname(__file__), "..", ".."))
WRAPPER = os.environ.get("WRAPPER", os.path.join(SOURCE_ROOT, "packaging", "server", "lazystore-serve"))
DEADLINE = 30.0

P1 = "/nix/store/" + "a" * 32 + "-one"
P2 = "/nix/store/" + "b" * 32 + "-two"
P3 = "/nix/store/" + "c" * 32 + "-three"


def wait_until(predicate, what, deadline=DEADLINE):
    end = time.monotonic() + deadline
    while not predicate():
        if time.monotonic() > end:
            raise AssertionError(f"{what}: not within {deadline} s")
        time.sleep(0.02)  # polling interval, bounded by the deadline


class Roots(unittest.TestCase):
    def setUp(self):
        self.work = tempfile.mkdtemp(prefix="lazystore-roots-test-")
        self.addCleanup(shutil.rmtree, self.work, ignore_errors=True)
        self.roots = os.path.join(self.work, "state", "gcroots", "lazystore")
        self.rules = os.path.join(self.work, "home", "rules_nixpkgs_gcroots")
        self.children = []
        self.addCleanup(self._reap)

    def _reap(self):
        for child in self.children:
            if child.poll() is None:
                child.kill()
            child.wait(timeout=DEADLINE)

    def argv(self):
        return ["sh", WRAPPER, "--roots-dir", self.roots, "--rules-nixpkgs-roots", self.rules]

    def env(self, command):
        return dict(os.environ, SSH_ORIGINAL_COMMAND=command, HOME=os.path.join(self.work, "home"),
                    LAZYSTORE_ROOTS_LOCK_TIMEOUT="20")

    def run_command(self, command, stdin=""):
        return subprocess.run(self.argv(), input=stdin, env=self.env(command), text=True,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=DEADLINE)

    def start(self, command):
        child = subprocess.Popen(self.argv(), env=self.env(command), text=True, stdin=subprocess.PIPE,
                                 stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        self.children.append(child)
        return child

    def add(self, name, paths, check=True):
        result = self.run_command(f"lazystore-roots add {name}", "".join(p + "\n" for p in paths) + ".\n")
        if check:
            self.assertEqual(result.returncode, 0, result.stderr)
        return result

    def refused(self, result, fragment):
        self.assertNotEqual(result.returncode, 0)
        lines = result.stderr.splitlines()
        self.assertEqual(len(lines), 1, result.stderr)
        self.assertTrue(lines[0].startswith("lazystore-serve: "), lines[0])
        self.assertIn(fragment, lines[0])

    def generation(self, name):
        """{link name: target} of root NAME; fails on anything but symlinks inside."""
        top = os.path.join(self.roots, name)
        out = {}
        for entry in os.listdir(top):
            path = os.path.join(top, entry)
            self.assertTrue(os.path.islink(path), f"{path} is not a symlink (nested generation?)")
            out[entry] = os.readlink(path)
        return out

    def hidden(self):
        return sorted(e for e in os.listdir(self.roots) if e.startswith(".") and e != ".lock")

    def age(self, path, seconds):
        then = time.time() - seconds
        os.utime(path, (then, then), follow_symlinks=False)

    # ------------------------------------------------------------------------------------------

    def test_add_list_delete(self):
        self.add("ci-main", [P1, P2])
        self.assertEqual(self.generation("ci-main"), {os.path.basename(P1): P1, os.path.basename(P2): P2})
        self.add("ci-main", [P3])  # a new generation replaces the old one
        self.assertEqual(self.generation("ci-main"), {os.path.basename(P3): P3})
        listing = self.run_command("lazystore-roots list")
        self.assertEqual(listing.returncode, 0, listing.stderr)
        name, mtime, paths = listing.stdout.rstrip("\n").split("\t")
        self.assertEqual((name, paths), ("ci-main", P3))
        self.assertLess(abs(int(mtime) - time.time()), 60)
        deleted = self.run_command("lazystore-roots delete ci-main")
        self.assertEqual((deleted.returncode, deleted.stdout), (0, "ci-main\n"), deleted.stderr)
        self.assertFalse(os.path.exists(os.path.join(self.roots, "ci-main")))
        self.assertEqual(self.hidden(), [])

    def test_hostile_names_and_paths(self):
        self.add("kept", [P1])
        before = sorted(os.listdir(self.roots))
        long_name = "n" * 101
        cases = [
            # (command, stdin, fragment of the one error line)
            ("lazystore-roots add ''", f"{P1}\n.\n", "bad root name"),
            ("lazystore-roots add .hidden", f"{P1}\n.\n", "bad root name"),
            ("lazystore-roots add -x", f"{P1}\n.\n", "bad root name"),
            ("lazystore-roots add a/b", f"{P1}\n.\n", "bad root name"),
            ("lazystore-roots add ..", f"{P1}\n.\n", "bad root name"),
            (f"lazystore-roots add {long_name}", f"{P1}\n.\n", "bad root name"),
            ("lazystore-roots add a;touch", f"{P1}\n.\n", "bad root name"),
            ("lazystore-roots add $(id)", f"{P1}\n.\n", "bad root name"),
            ("lazystore-roots add *", f"{P1}\n.\n", "bad root name"),
            ("lazystore-roots add kept extra", f"{P1}\n.\n", "usage"),
            ("lazystore-roots add kept", "/etc/passwd\n.\n", "not a store path"),
            ("lazystore-roots add kept", "/nix/store/../../etc/passwd\n.\n", "not a store path"),
            ("lazystore-roots add kept", "/nix/store/" + "a" * 31 + "-short\n.\n", "not a store path"),
            ("lazystore-roots add kept", "/nix/store/" + "e" * 32 + "-bad-hash-char\n.\n", "not a store path"),
            ("lazystore-roots add kept", "/nix/store/" + "a" * 32 + "-x/sub\n.\n", "not a store path"),
            ("lazystore-roots add kept", "/nix/store/" + "a" * 32 + "-.dot\n.\n", "not a store path"),
            ("lazystore-roots add kept", "/nix/store/" + "a" * 32 + "-" + "x" * 212 + "\n.\n", "not a store path"),
            ("lazystore-roots add kept", f"{P2}\r\n.\n", "not a store path"),
            ("lazystore-roots add kept", f"{P2}\n/nix/store/x y\n.\n", "not a store path"),
            ("lazystore-roots add kept", ".\n", "no store paths"),
            ("lazystore-roots add kept", "", "cut short"),
            ("lazystore-roots delete", "", "usage"),
            ("lazystore-roots delete ../kept", "", "bad root name"),
            ("lazystore-roots delete rules_nixpkgs/../x", "", "bad root name"),
            ("lazystore-roots delete --older-than", "", "needs an AGE"),
            ("lazystore-roots delete --older-than 3x kept", "", "bad age"),
            ("lazystore-roots delete --older-than -1 kept", "", "bad age"),
            ("lazystore-roots list extra", "", "usage"),
            ("lazystore-roots expire", "", "usage"),
            ("lazystore-roots frobnicate", "", "unknown roots command"),
            ("lazystore-roots", "", "usage"),
        ]
        for command, stdin, fragment in cases:
            with self.subTest(command=command, stdin=stdin[:40]):
                self.refused(self.run_command(command, stdin), fragment)
                self.assertEqual(sorted(os.listdir(self.roots)), before)
                self.assertEqual(self.generation("kept"), {os.path.basename(P1): P1})

    def test_cut_short_list_changes_nothing(self):
        self.add("ci-main", [P1])
        # The client dies after two lines: EOF without the final "." line.
        result = self.run_command("lazystore-roots add ci-main", f"{P2}\n{P3}\n")
        self.refused(result, "cut short")
        self.assertEqual(self.generation("ci-main"), {os.path.basename(P1): P1})
        self.assertEqual(self.hidden(), [])
        # A first add cut short creates nothing at all.
        self.refused(self.run_command("lazystore-roots add fresh", f"{P2}\n"), "cut short")
        self.assertFalse(os.path.lexists(os.path.join(self.roots, "fresh")))

    def test_concurrent_adds_never_nest(self):
        sets = [[P1], [P2], [P3], [P1, P2], [P2, P3], [P1, P3], [P1, P2, P3]] * 3
        children = [self.start("lazystore-roots add ci-main") for _ in sets]
        for child, paths in zip(children, sets):
            child.stdin.write("".join(p + "\n" for p in paths) + ".\n")
            child.stdin.close()
        for child in children:
            self.assertEqual(child.wait(timeout=DEADLINE), 0, child.stderr.read())
        final = self.generation("ci-main")
        self.assertIn(sorted(final.values()), [sorted(s) for s in sets])
        self.assertEqual(sorted(os.listdir(self.roots)), [".lock", "ci-main"])

    def test_killed_add_leaves_nothing_behind(self):
        self.add("ci-main", [P1])
        # Killed while the list is still arriving: nothing may change.
        child = self.start("lazystore-roots add ci-main")
        child.stdin.write(f"{P2}\n")
        child.stdin.flush()
        child.send_signal(signal.SIGKILL)
        child.wait(timeout=DEADLINE)
        self.assertEqual(self.generation("ci-main"), {os.path.basename(P1): P1})
        # Killed while holding the lock, at each point of a replacement: simulated by the
        # leftovers such a kill leaves (a half-built new generation; the old one moved aside
        # with the new one not yet in place). The next command cleans or undoes them.
        os.makedirs(os.path.join(self.roots, ".new.4242.ci-main"))
        os.symlink(P3, os.path.join(self.roots, ".new.4242.ci-main", os.path.basename(P3)))
        os.rename(os.path.join(self.roots, "ci-main"), os.path.join(self.roots, ".old.4243.ci-main"))
        os.makedirs(os.path.join(self.roots, ".other.old.77"))  # an older wrapper's leftover
        os.makedirs(os.path.join(self.roots, ".del.4244.gone"))
        listing = self.run_command("lazystore-roots list")
        self.assertEqual(listing.returncode, 0, listing.stderr)
        self.assertEqual(sorted(line.split("\t")[0] for line in listing.stdout.splitlines()),
                         ["ci-main", "other"])
        self.assertEqual(self.generation("ci-main"), {os.path.basename(P1): P1})
        self.assertEqual(self.hidden(), [])
        # Leftovers next to an existing root are removed, not put back over it.
        os.makedirs(os.path.join(self.roots, ".old.4245.ci-main"))
        self.add("ci-main", [P2])
        self.assertEqual(self.generation("ci-main"), {os.path.basename(P2): P2})
        self.assertEqual(self.hidden(), [])

    def test_expiry_never_deletes_a_renewed_root(self):
        self.add("old", [P1])
        self.add("renewed", [P2])
        for name in ("old", "renewed"):
            self.age(os.path.join(self.roots, name), 7200)
        old_names = [line.split("\t")[0] for line in
                     self.run_command("lazystore-roots list --older-than 1h").stdout.splitlines()]
        self.assertEqual(sorted(old_names), ["old", "renewed"])
        # A push renews "renewed" between the client's listing and its delete.
        self.add("renewed", [P2])
        result = self.run_command("lazystore-roots delete --older-than 1h " + " ".join(old_names))
        self.assertEqual(result.returncode, 0, result.stderr)
        self.assertEqual(result.stdout, "old\n")
        self.assertFalse(os.path.exists(os.path.join(self.roots, "old")))
        self.assertEqual(self.generation("renewed"), {os.path.basename(P2): P2})

    def test_expiry_waits_for_a_running_add(self):
        self.add("ci-main", [P1])
        self.age(os.path.join(self.roots, "ci-main"), 7200)
        # An add holds the lock (its list is complete, it is replacing the generation); the
        # expiry that starts meanwhile must see the renewed root, not the old one.
        lock = os.open(os.path.join(self.roots, ".lock"), os.O_RDWR)
        self.addCleanup(os.close, lock)
        subprocess.run(["flock", str(lock)], pass_fds=(lock,), check=True)
        adder = self.start("lazystore-roots add ci-main")
        adder.stdin.write(f"{P2}\n.\n")
        adder.stdin.close()
        expirer = self.start("lazystore-roots expire --older-than 1h")
        # Both wait for the lock (two blocked waiters in /proc/locks); then it is released.
        inode = os.stat(os.path.join(self.roots, ".lock")).st_ino
        wait_until(lambda: self._lock_waiters(inode) >= 2, "both commands waiting for the roots lock")
        subprocess.run(["flock", "-u", str(lock)], pass_fds=(lock,), check=True)
        self.assertEqual(adder.wait(timeout=DEADLINE), 0, adder.stderr.read())
        self.assertEqual(expirer.wait(timeout=DEADLINE), 0, expirer.stderr.read())
        # Whichever ran first, the root holds the new generation afterwards.
        self.assertIn(expirer.stdout.read(), ("", "ci-main\n"))
        self.assertEqual(self.generation("ci-main"), {os.path.basename(P2): P2})

    @staticmethod
    def _lock_waiters(inode):
        """How many processes are blocked on an flock of the file with this inode."""
        with open("/proc/locks") as f:
            return sum(1 for line in f if "->" in line and "FLOCK" in line
                       and line.split()[-3].endswith(f":{inode}"))


if __name__ == "__main__":
    unittest.main(verbosity=2)
