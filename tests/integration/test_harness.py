#!/usr/bin/python3
"""The test harness itself, without the daemon: the fixture is a real Nix store, the tree
comparison sees every kind of difference, the stderr filter tells allowed from unexpected lines."""

import os
import shutil
import subprocess
import tempfile
import unittest

import lazystore_testlib as lib


class HarnessTest(unittest.TestCase):

    @classmethod
    def setUpClass(cls):
        cls.fixture = lib.fixture()
        print(f"\nfixture built in {cls.fixture.build_seconds} s (cached afterwards): {cls.fixture.paths}")

    def setUp(self):
        self.work = tempfile.mkdtemp(prefix="lazystore-harness-")
        self.addCleanup(shutil.rmtree, self.work, True)

    def test_fixture_is_a_nix_store(self):
        self.assertEqual(set(n for n in os.listdir(self.fixture.store) if not n.startswith(".")),
                         self.fixture.store_paths())
        include = lib.regular_files(self.fixture.path("include"))
        self.assertGreater(len(include), 1000)
        python = lib.regular_files(self.fixture.path("python"))
        self.assertIn("os.py", python)
        self.assertFalse(any("__pycache__" in p or "site-packages" in p for p in python))
        self.assertEqual(os.path.getsize(os.path.join(self.fixture.path("misc"), "big.bin")), 64 * lib.MiB)
        self.assertTrue(os.path.isfile(self.fixture.path("single_file")))
        self.assertTrue(os.path.islink(self.fixture.path("symlink")))
        # Nix canonicalised the modes: what the mount must show.
        for top in (self.fixture.path("misc"), self.fixture.path("executable_file")):
            for rel, (kind, perm, _size, _x) in lib.describe_tree(top).items():
                expected = {"dir": {0o555}, "file": {0o444, 0o555}, "symlink": {0o777}}[kind]
                self.assertIn(perm, expected, rel)

    def test_comparison_of_a_bind_mount_is_equal(self):
        mnt = os.path.join(self.work, "mnt")
        os.makedirs(mnt)
        lib.run(["mount", "--bind", "-o", "ro", self.fixture.store, mnt])
        try:
            self.assertTrue(lib.is_lazystore_mounted(mnt) is False)  # not FUSE
            self.assertIsNotNone(lib.mountinfo_entry(mnt))
            for name in self.fixture.paths.values():
                self.assertEqual(lib.tree_differences(os.path.join(self.fixture.store, name),
                                                      os.path.join(mnt, name)), [])
        finally:
            subprocess.run(["umount", mnt], check=True)
        self.assertIsNone(lib.mountinfo_entry(mnt))

    def test_comparison_sees_tampering(self):
        source = self.fixture.path("misc")
        before = lib.describe_tree(source)
        copy = os.path.join(self.work, "copy")
        lib.run(["cp", "-al", source, copy])
        self.assertEqual(lib.tree_differences(source, copy), [])

        def tampered(change):
            # Hard links keep this fast; a change first gives the entry it touches its own copy.
            shutil.rmtree(copy)
            lib.run(["cp", "-al", source, copy])
            change(copy)
            return lib.tree_differences(source, copy)

        def own_copy(c, rel):
            path = os.path.join(c, rel)
            os.unlink(path)
            shutil.copy2(os.path.join(source, rel), path)
            return path

        def flip_byte(c):
            path = own_copy(c, "big.bin")
            os.chmod(path, 0o644)
            with open(path, "r+b") as f:
                f.seek(50 * lib.MiB)
                b = f.read(1)
                f.seek(50 * lib.MiB)
                f.write(bytes([b[0] ^ 1]))
            os.chmod(path, 0o444)

        def file_mode(c):
            os.chmod(own_copy(c, "bin/hello"), 0o444)

        def dir_mode(c):
            os.chmod(os.path.join(c, "blobs"), 0o755)  # directories are not hard links

        def relink(c):
            os.unlink(os.path.join(c, "links", "relative"))
            os.symlink("../bin/hellO", os.path.join(c, "links", "relative"))

        def extra(c):
            open(os.path.join(c, "empty-dir", "new"), "w").close()

        def missing(c):
            os.unlink(os.path.join(c, "share", "empty-file"))

        def symlink_to_file(c):
            target = os.path.join(c, "links", "dangling")
            os.unlink(target)
            open(target, "w").close()

        def grow(c):
            with open(own_copy(c, "share/empty-file"), "ab") as f:
                f.write(b"\0")

        changes = {
            "flipped byte": flip_byte,
            "file mode": file_mode,
            "dir mode": dir_mode,
            "symlink target": relink,
            "extra entry": extra,
            "missing entry": missing,
            "type": symlink_to_file,
            "size": grow,
        }
        for name, change in changes.items():
            with self.subTest(change=name):
                self.assertNotEqual(tampered(change), [], f"{name} not detected")
        # The fixture itself was not touched through a hard link.
        self.assertEqual(lib.describe_tree(source), before)

    def test_stderr_filter(self):
        daemon = lib.Daemon("/nonexistent", os.path.join(self.work, "mnt"), os.path.join(self.work, "cache"),
                            allowed_stderr=[r"^lazystore: error: upstream"])
        daemon.stderr_path = os.path.join(self.work, "stderr")
        with open(daemon.stderr_path, "w") as f:
            f.write("lazystore: info: serving\n"
                    "lazystore: warning: chunk 3 of x failed verification, refetching\n"
                    "lazystore: error: upstream gone\n"
                    "\n"
                    "lazystore: error: something else\n"
                    "fuse: unknown option\n"
                    "==123==ERROR: AddressSanitizer: heap-use-after-free\n"
                    "lazystore: warning: runtime error: shift exponent\n")
        self.assertEqual(daemon.unexpected_stderr(),
                         ["lazystore: error: something else", "fuse: unknown option",
                          "==123==ERROR: AddressSanitizer: heap-use-after-free",
                          "lazystore: warning: runtime error: shift exponent"])

    def test_never_mounts_on_the_hosts_store(self):
        with self.assertRaises(ValueError):
            lib.Daemon(self.fixture.store, "/nix/store", os.path.join(self.work, "cache"))


if __name__ == "__main__":
    lib.main(daemon=False)
