#!/usr/bin/python3
"""Mounting as an operator meets it: permissions answered from the mode (access(2) without
default_permissions)."""

import os
import shutil
import subprocess

from lazystore_testlib import LazystoreTestCase, main


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
