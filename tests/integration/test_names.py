#!/usr/bin/python3
"""Top-level names: invalid names never reach the upstream, locked (incomplete) paths are hidden
until their lock goes, paths added upstream appear within negative-timeout."""

import errno
import os
import random
import time

from lazystore_testlib import LazystoreTestCase, main, random_hash, read_file

NEGATIVE_TIMEOUT = 1.0
# How much later than negative-timeout a new path may show up (scheduling, kernel dentry expiry).
SLACK = 1.5


def make_store_path(directory, name, contents=b"contents\n"):
    """A store path directory built beside the store and renamed in, as Nix does."""
    staging = os.path.join(os.path.dirname(directory), "staging-" + name)
    os.makedirs(staging)
    with open(os.path.join(staging, "file"), "wb") as f:
        f.write(contents)
    os.rename(staging, os.path.join(directory, name))


def wait_until_visible(path, deadline_seconds):
    """Seconds until lstat(path) succeeds, polling; None when the deadline passed."""
    started = time.monotonic()
    while True:
        try:
            os.lstat(path)
            return time.monotonic() - started
        except FileNotFoundError:
            pass
        if time.monotonic() - started > deadline_seconds:
            return None
        time.sleep(0.02)


class NamesTest(LazystoreTestCase):

    def test_invalid_names_never_reach_the_upstream(self):
        upstream = self.private_upstream()
        rng = random.Random(7)
        h = random_hash(rng)
        invalid = [
            "notastorepath",
            ".links",
            h[:31] + "-short-hash",
            h[:31] + "e-bad-letter",  # 'e' is not a nix32 digit
            h.upper() + "-upper-hash",
            h + h[:1] + "-long-hash",
            h + "-..",
            h + "-.",
            h + "-" + "a" * 212,
            h + "-bad name",
            h + "-bad:colon",
            h + "_no-dash",
            h,
            h + "-",
        ]
        for name in invalid:
            path = os.path.join(upstream, name)
            os.makedirs(path, exist_ok=True)
            with open(os.path.join(path, "x"), "wb") as f:
                f.write(b"must never be served\n")
        locked = random_hash(rng) + "-locked"
        make_store_path(upstream, locked, b"complete now\n")
        with open(os.path.join(upstream, locked + ".lock"), "wb"):
            pass

        daemon = self.mount(upstream, options={"negative-timeout": NEGATIVE_TIMEOUT})
        os.stat(daemon.mountpoint)
        before = daemon.stats()
        for name in invalid:
            with self.subTest(name=name):
                self.assertErrno(errno.ENOENT, os.lstat, daemon.path(name))
                self.assertErrno(errno.ENOENT, read_file, daemon.path(name, "x"))
        after = daemon.stats()
        self.assertEqual(after["upstream_requests"], before["upstream_requests"],
                         "an invalid name caused upstream requests")
        self.assertGreaterEqual(after["invalid_names"] - before["invalid_names"], len(invalid))

        with self.subTest(check="top-level listing"):
            self.assertEqual(set(os.listdir(daemon.mountpoint)), self.fixture.store_paths(),
                             "top-level listing shows invalid names, a locked path or a lock file")

        # The locked path is hidden until its lock goes, then appears within negative-timeout.
        self.assertErrno(errno.ENOENT, os.lstat, daemon.path(locked))
        os.unlink(os.path.join(upstream, locked + ".lock"))
        seconds = wait_until_visible(daemon.path(locked), NEGATIVE_TIMEOUT + 10)
        self.assertIsNotNone(seconds, "unlocked path never appeared")
        print(f"\nunlocked path appeared after {seconds:.2f} s (negative-timeout {NEGATIVE_TIMEOUT})")
        self.assertLessEqual(seconds, NEGATIVE_TIMEOUT + SLACK)
        self.assertEqual(read_file(daemon.path(locked, "file")), b"complete now\n")
        self.assertIn(locked, os.listdir(daemon.mountpoint))

    def test_path_added_while_mounted_appears(self):
        upstream = self.private_upstream()
        daemon = self.mount(upstream, options={"negative-timeout": NEGATIVE_TIMEOUT})
        late = random_hash() + "-added-later"
        late_file = random_hash() + "-added-later.txt"
        self.assertErrno(errno.ENOENT, os.lstat, daemon.path(late))
        self.assertErrno(errno.ENOENT, os.lstat, daemon.path(late_file))
        self.assertNotIn(late, os.listdir(daemon.mountpoint))

        make_store_path(upstream, late, b"new path\n")
        with open(os.path.join(upstream, late_file), "wb") as f:
            f.write(b"new single-file path\n")
        seconds = wait_until_visible(daemon.path(late), NEGATIVE_TIMEOUT + 10)
        self.assertIsNotNone(seconds, "the added path never appeared")
        print(f"\nadded path appeared after {seconds:.2f} s (negative-timeout {NEGATIVE_TIMEOUT})")
        self.assertLessEqual(seconds, NEGATIVE_TIMEOUT + SLACK)
        self.assertIsNotNone(wait_until_visible(daemon.path(late_file), NEGATIVE_TIMEOUT + SLACK))
        self.assertEqual(read_file(daemon.path(late, "file")), b"new path\n")
        self.assertEqual(read_file(daemon.path(late_file)), b"new single-file path\n")
        self.assertLessEqual({late, late_file}, set(os.listdir(daemon.mountpoint)))


if __name__ == "__main__":
    main()
