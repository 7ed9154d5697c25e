#!/usr/bin/python3
"""Every write-type operation on the mount fails with EROFS, at the top level and inside store
paths, and changes nothing."""

import errno
import os

from lazystore_testlib import LazystoreTestCase, main, mountinfo_entry, random_hash, tree_differences


class ReadOnlyTest(LazystoreTestCase):

    def test_mount_flags(self):
        daemon = self.mount()
        entry = mountinfo_entry(daemon.mountpoint)
        for flag in ("ro", "nosuid", "nodev"):
            self.assertIn(flag, entry["options"], f"mount options {entry['options']}")

    def test_writes_fail_with_erofs(self):
        upstream = self.private_upstream()
        daemon = self.mount(upstream)
        misc = self.fixture.paths["misc"]
        single = daemon.path(self.fixture.paths["single_file"])
        top = daemon.mountpoint
        path = daemon.path(misc)
        file = daemon.path(misc, "bin", "hello")
        link = daemon.path(misc, "links", "relative")
        empty_dir = daemon.path(misc, "empty-dir")
        new_top = daemon.path(random_hash() + "-new")
        new_inner = daemon.path(misc, "new-entry")

        def open_close(p, flags):
            os.close(os.open(p, flags, 0o644))

        cases = [
            ("create at top", open_close, new_top, os.O_CREAT | os.O_WRONLY),
            ("create exclusive at top", open_close, new_top, os.O_CREAT | os.O_EXCL | os.O_WRONLY),
            ("create inside", open_close, new_inner, os.O_CREAT | os.O_WRONLY),
            ("write-open file", open_close, file, os.O_WRONLY),
            ("read-write-open file", open_close, file, os.O_RDWR),
            ("truncating open", open_close, file, os.O_WRONLY | os.O_TRUNC),
            ("append-open single-file path", open_close, single, os.O_WRONLY | os.O_APPEND),
            ("mkdir at top", os.mkdir, new_top),
            ("mkdir inside", os.mkdir, new_inner),
            ("mkfifo inside", os.mkfifo, new_inner),
            ("unlink top-level file", os.unlink, single),
            ("unlink file", os.unlink, file),
            ("unlink symlink", os.unlink, link),
            ("rmdir empty dir", os.rmdir, empty_dir),
            ("rmdir store path", os.rmdir, path),
            ("rename store path", os.rename, path, new_top),
            ("rename inside", os.rename, file, new_inner),
            ("rename top-level file", os.rename, single, new_top),
            ("symlink at top", os.symlink, "target", new_top),
            ("symlink inside", os.symlink, "target", new_inner),
            ("link at top", os.link, file, new_top),
            ("link inside", os.link, file, new_inner),
            ("chmod root", os.chmod, top, 0o777),
            ("chmod store path", os.chmod, path, 0o777),
            ("chmod file", os.chmod, file, 0o777),
            ("chown file", os.chown, file, 1, 1),
            ("truncate file", os.truncate, file, 0),
            ("truncate single-file path", os.truncate, single, 1),
            ("setxattr root", os.setxattr, top, "user.test", b"x"),
            ("setxattr file", os.setxattr, file, "user.test", b"x"),
            ("removexattr root", os.removexattr, top, "user.lazystore.stats"),
            ("utime root", os.utime, top, (5, 5)),
            ("utime file", os.utime, file, (5, 5)),
            ("utime store path", os.utime, path, None),
        ]
        for name, function, *args in cases:
            with self.subTest(operation=name):
                self.assertErrno(errno.EROFS, function, *args)

        # Nothing changed, neither through the mount nor upstream.
        self.assertEqual(set(os.listdir(top)), self.fixture.store_paths())
        self.assertEqual(tree_differences(self.fixture.path("misc"), path), [])
        self.assertEqual(tree_differences(self.fixture.path("misc"), os.path.join(upstream, misc)), [])
        self.assertEqual(tree_differences(self.fixture.path("single_file"), single), [])


if __name__ == "__main__":
    main()
