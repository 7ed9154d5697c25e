#!/usr/bin/python3
"""The cache directory's safety rules, from outside: links planted in the cache (a linked
subdirectory, a linked data file) are never followed — the start-up scan removes the links
and nothing they point to; a cache directory owned by another user, or writable by others, is
refused with a clear message and no mount."""

import os
import subprocess

from lazystore_testlib import Daemon, LazystoreTestCase, is_lazystore_mounted, main, read_file, \
    regular_files

STRAYS = (r"^lazystore: warning: removing stray ",)


class CacheDirectoryTest(LazystoreTestCase):

    def read_some(self, daemon):
        misc = self.fixture.paths["misc"]
        for rel in regular_files(os.path.join(self.fixture.store, misc))[:30]:
            self.assertEqual(read_file(daemon.path(misc, rel)),
                             read_file(os.path.join(self.fixture.store, misc, rel)), rel)

    def test_links_in_the_cache_are_removed_never_followed(self):
        outside = os.path.join(self.work, "outside")
        os.makedirs(os.path.join(outside, "sub"))
        precious = {os.path.join(outside, "precious"): b"not the cache's\n",
                    os.path.join(outside, "0" * 32): b"named like a cache file\n",
                    os.path.join(outside, "sub", "deeper"): b"further in\n"}
        for path, data in precious.items():
            with open(path, "wb") as f:
                f.write(data)
        daemon = self.mount(allowed_stderr=STRAYS)
        self.read_some(daemon)
        daemon.stop()

        data = os.path.join(daemon.cache, "v1", "data")
        prefixes = sorted(os.listdir(data))
        self.assertTrue(prefixes, "nothing was cached")
        free = next(f"{i:02x}" for i in range(256) if f"{i:02x}" not in prefixes)
        planted = [os.path.join(data, free), os.path.join(data, "elsewhere")]
        for link in planted:
            os.symlink(outside, link)  # a linked subdirectory
        # A data file replaced by a link to a file outside.
        victim_dir = os.path.join(data, prefixes[0])
        victim = os.path.join(victim_dir, sorted(os.listdir(victim_dir))[0])
        os.unlink(victim)
        os.symlink(os.path.join(outside, "precious"), victim)
        planted.append(victim)

        daemon.start()
        self.read_some(daemon)
        for link in planted:  # the data file read again is a new, real file of the same name
            self.assertFalse(os.path.islink(link), f"{link} is still a link")
        self.assertFalse(os.path.lexists(planted[0]))
        for path, contents in precious.items():
            self.assertEqual(read_file(path), contents, f"{path} was touched")
        daemon.stop()
        self.assertIn("removing stray", daemon.stderr())

    def check_refused(self, cache, says):
        """The lazystore command fails with `says` on stderr and leaves no mount."""
        mountpoint = os.path.join(self.work, "mnt")
        os.makedirs(mountpoint)
        argv = Daemon(self.fixture.store, mountpoint, cache).argv()
        process = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                   stderr=subprocess.STDOUT, text=True)
        try:
            output, _ = process.communicate(timeout=30)
        except subprocess.TimeoutExpired:  # it serves: the directory was accepted
            process.kill()
            process.communicate()
            subprocess.run(["fusermount3", "-u", "-z", mountpoint], stderr=subprocess.DEVNULL)
            self.fail(f"lazystore accepted the cache directory {cache}")
        self.assertNotEqual(process.returncode, 0, output)
        self.assertIn(says, output)
        self.assertFalse(is_lazystore_mounted(mountpoint))
        self.assertEqual(os.listdir(cache), [], "the refused directory was written to")

    def test_a_cache_directory_of_another_user_is_refused(self):
        cache = os.path.join(self.work, "cache")
        os.makedirs(cache, mode=0o700)
        os.chown(cache, 65534, 65534)
        self.check_refused(cache, "is owned by uid 65534, not by this daemon's user")

    def test_a_cache_directory_others_may_write_to_is_refused(self):
        cache = os.path.join(self.work, "cache")
        os.makedirs(cache)
        os.chmod(cache, 0o777)
        self.check_refused(cache, "is writable by others (mode 0777)")


if __name__ == "__main__":
    main()
