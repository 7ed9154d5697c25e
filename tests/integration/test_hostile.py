#!/usr/bin/python3
"""Hostile upstreams. An HTTP binary cache (nginx on 127.0.0.1) serving hand-made narinfos, `.ls`
listings and NARs: entry names with '/', '..', '.', '' and NUL; absurd sizes (2^63, negative,
larger than the NAR); symlink loops; a million entries. Each lookup gives EIO with a log line
naming the store path, or is served exactly as the NAR says (a bad listing falls back to the
hash-checked NAR); the daemon never crashes and its peak RSS (VmHWM) stays bounded. The directory
and NFS (nfs-ganesha) upstreams get what a real filesystem can hold: symlink loops, names with a
newline or bytes that are not UTF-8, a directory of BIG entries (20,000; 100,000 offline)."""

import errno
import os
import shutil
import tempfile
import time
import unittest

from hostile_cache import HostileCache, file_offsets, listing, listing_file, nar, nar_directory, \
    nar_file, nar_symlink
from http_server import Nginx
from lazystore_testlib import LazystoreTestCase, log, main, tree_differences

TIMEOUT = 5.0
MILLION = 1_000_000
# Entries of the big directory cases (an HTTP store path, a directory over NFS and the directory
# upstream): 20,000 in the suite, the README's figures with LAZYSTORE_HOSTILE_ENTRIES=100000.
BIG = int(os.environ.get("LAZYSTORE_HOSTILE_ENTRIES", "20000"))
# Fixed caps of the daemon (common/tree.h kMaxNodes): a store path of more entries is refused.
MAX_ENTRIES = 1_000_000
# What "bounded" means here: far below what a DOM of a million-entry listing would take.
RSS_BOUND_MIB = 768

BAD_NAMES = {"slash": "a/b", "dotdot": "..", "dot": ".", "empty": "", "nul": "a\0b", "long": "x" * 256}


def rss_bound_mib(daemon):
    """RSS_BOUND_MIB, tripled for a daemon built with AddressSanitizer (redzones, quarantine)."""
    with open(f"/proc/{daemon.serving_pid()}/maps") as f:
        return RSS_BOUND_MIB * (3 if "libasan" in f.read() else 1)


def peak_rss_mib(daemon):
    with open(f"/proc/{daemon.serving_pid()}/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    raise AssertionError("no VmHWM in /proc/PID/status")


class HostileTestCase(LazystoreTestCase):
    """Upstreams made by the tests themselves: the fixture store is not needed."""

    @classmethod
    def setUpClass(cls):
        cls.fixture = None


class HostileHttpTestCase(HostileTestCase):

    def setUp(self):
        super().setUp()
        self.cache = HostileCache(os.path.join(self.work, "binary-cache"))
        self.server = None
        self.addCleanup(self._stop_server)

    def _stop_server(self):
        if self.server is not None:
            self.server.stop()

    def mount_cache(self):
        self.server = Nginx(self.cache.root, os.path.join(self.work, "nginx")).start()
        return self.mount(self.server.url, {"require-sigs": "false", "upstream-timeout": TIMEOUT})

    def assert_eio_logged(self, daemon, base, function=os.lstat, *more):
        self.assertErrno(errno.EIO, function, daemon.path(base, *more))
        lines = [line for line in daemon.stderr().splitlines()
                 if line.startswith("lazystore: warning: ") and base in line]
        self.assertTrue(lines, f"no warning naming {base}:\n{daemon.stderr()[-3000:]}")
        return lines

    def report_rss(self, daemon, what):
        rss = peak_rss_mib(daemon)
        log(f"[{self._testMethodName}] daemon peak RSS (VmHWM) after {what}: {rss:.0f} MiB")
        self.assertLess(rss, rss_bound_mib(daemon), f"daemon memory not bounded after {what}")
        return rss


class HostileNamesTest(HostileHttpTestCase):

    def test_bad_entry_names_in_a_nar_are_eio(self):
        bases = {}
        for label, bad in BAD_NAMES.items():
            entries = sorted([("good", nar_file(b"fine\n")), (bad, nar_file(b"evil\n"))],
                             key=lambda e: e[0].encode())
            bases[label] = self.cache.add("bad-name-" + label, nar(nar_directory(entries)))
        daemon = self.mount_cache()
        for label, base in bases.items():
            with self.subTest(label):
                self.assert_eio_logged(daemon, base)
        self.assertFalse(os.path.lexists(os.path.join(self.work, "b")))

    def test_bad_entry_names_in_a_listing_fall_back_to_the_nar(self):
        good = nar(nar_directory([("good", nar_file(b"fine\n"))]))
        offset = file_offsets(good, [b"fine\n"])[0]
        bases = {}
        for label, bad in BAD_NAMES.items():
            ls = listing({"type": "directory", "entries": {"good": listing_file(5, offset),
                                                           bad: listing_file(5, offset)}})
            bases[label] = self.cache.add("bad-listing-" + label, good, ls)
        daemon = self.mount_cache()
        for label, base in bases.items():
            with self.subTest(label):
                self.assertEqual(os.listdir(daemon.path(base)), ["good"])
                with open(daemon.path(base, "good"), "rb") as f:
                    self.assertEqual(f.read(), b"fine\n")
                warned = [line for line in daemon.stderr().splitlines() if base in line and ".ls" in line]
                self.assertTrue(warned, f"no warning about the listing of {base}")

    def test_duplicate_and_unsorted_entries(self):
        dup = nar(nar_directory([("a", nar_file(b"1")), ("a", nar_file(b"2"))]))
        unsorted = nar(nar_directory([("b", nar_file(b"1")), ("a", nar_file(b"2"))]))
        dup_base = self.cache.add("duplicate", dup)
        unsorted_base = self.cache.add("unsorted", unsorted)
        # A listing may list keys in any order (JSON objects are unordered), never twice.
        good = nar(nar_directory([("a", nar_file(b"A")), ("b", nar_file(b"B"))]))
        oa, ob = file_offsets(good, [b"A", b"B"])
        ls_unsorted = ('{"version":1,"root":{"entries":{"b":{"size":1,"narOffset":%d,"type":"regular"},'
                       '"a":{"type":"regular","size":1,"narOffset":%d}},"type":"directory"}}' % (ob, oa))
        ls_dup = ('{"version":1,"root":{"type":"directory","entries":{"a":{"type":"regular","size":1,'
                  '"narOffset":%d},"a":{"type":"regular","size":1,"narOffset":%d}}}}' % (oa, ob))
        ls_unsorted_base = self.cache.add("listing-unsorted", good, ls_unsorted)
        ls_dup_base = self.cache.add("listing-duplicate", good, ls_dup)
        daemon = self.mount_cache()
        self.assert_eio_logged(daemon, dup_base)
        self.assert_eio_logged(daemon, unsorted_base)
        for base in (ls_unsorted_base, ls_dup_base):
            self.assertEqual(sorted(os.listdir(daemon.path(base))), ["a", "b"])
            with open(daemon.path(base, "b"), "rb") as f:
                self.assertEqual(f.read(), b"B")
        nar_requests = [r for r in self.server.requests() if r[1].endswith(".nar")]
        whole = {r[1] for r in nar_requests if not r[4].startswith("bytes=")}
        self.assertEqual(whole, {f"/nar/{ls_dup_base.split('-')[0]}.nar", f"/nar/{dup_base.split('-')[0]}.nar",
                                 f"/nar/{unsorted_base.split('-')[0]}.nar"},
                         "only the paths with a bad listing (or none) fetch their whole NAR")


class HostileSizesTest(HostileHttpTestCase):

    def test_absurd_narinfo_sizes_are_eio(self):
        small = nar(nar_file(b"x"))
        bases = [self.cache.add("narsize-2-63", small, nar_size=2**63),
                 self.cache.add("narsize-2-64-1", small, nar_size=2**64 - 1),
                 self.cache.add("narsize-negative", small, nar_size=-1),
                 self.cache.add("filesize-2-63", small, narinfo_extra=f"FileSize: {2**63}\n")]
        daemon = self.mount_cache()
        for base in bases:
            with self.subTest(base):
                self.assert_eio_logged(daemon, base)

    def test_listing_sizes_beyond_the_nar_fall_back_to_the_nar(self):
        contents = b"0123456789" * 20
        good = nar(nar_directory([("f", nar_file(contents))]))
        offset = file_offsets(good, [contents])[0]
        cases = {"2-63": (2**63, offset), "2-64-1": (2**64 - 1, offset), "negative": (-1, offset),
                 "larger-than-nar": (len(good) + 1, offset), "offset-beyond-nar": (len(contents), len(good)),
                 "offset-2-64-1": (len(contents), 2**64 - 1)}
        bases = {}
        for label, (size, off) in cases.items():
            ls = '{"version":1,"root":{"type":"directory","entries":{"f":{"type":"regular","size":%d,"narOffset":%d}}}}' % (size, off)
            bases[label] = self.cache.add("listing-size-" + label, good, ls)
        daemon = self.mount_cache()
        for label, base in bases.items():
            with self.subTest(label):
                self.assertEqual(os.lstat(daemon.path(base, "f")).st_size, len(contents))
                with open(daemon.path(base, "f"), "rb") as f:
                    self.assertEqual(f.read(), contents)

    def test_nar_sizes_that_lie_are_eio(self):
        huge_claim = nar(nar_directory([("f", nar_file(b"short", claimed_size=2**63))]))
        short_nar = nar(nar_directory([("f", nar_file(b"abc"))]))
        bases = [self.cache.add("nar-file-2-63", huge_claim),
                 self.cache.add("narsize-larger-than-nar", short_nar, nar_size=len(short_nar) + 4096),
                 self.cache.add("narsize-smaller-than-nar", short_nar, nar_size=len(short_nar) - 8)]
        daemon = self.mount_cache()
        for base in bases:
            with self.subTest(base):
                self.assert_eio_logged(daemon, base)
        self.assertGreaterEqual(daemon.stats()["nar_hash_failures"], 1)


class HostileSymlinksTest(HostileHttpTestCase):
    """Upstream symlinks are shown, never followed: loops are the reader's kernel's ELOOP."""

    def loops(self):
        return nar_directory([("a", nar_symlink("b")), ("b", nar_symlink("a")), ("d", nar_directory([])),
                              ("here", nar_symlink(".")), ("self", nar_symlink("self")),
                              ("up", nar_symlink("../../../../../../..")),
                              ("via-dir", nar_symlink("d/../self"))])

    def check(self, daemon, base):
        top = daemon.path(base)
        self.assertEqual(sorted(os.listdir(top)), ["a", "b", "d", "here", "self", "up", "via-dir"])
        self.assertEqual(os.readlink(os.path.join(top, "self")), "self")
        self.assertEqual(os.readlink(os.path.join(top, "a")), "b")
        self.assertEqual(os.readlink(os.path.join(top, "up")), "../../../../../../..")
        for name in ("self", "a", "b", "via-dir"):
            self.assertErrno(errno.ELOOP, os.stat, os.path.join(top, name))
            self.assertErrno(errno.ELOOP, open, os.path.join(top, name), "rb")
        self.assertEqual(os.listdir(os.path.join(top, "here", "here", "here")), os.listdir(top))

    def test_symlink_loops_from_a_nar(self):
        base = self.cache.add("loops-nar", nar(self.loops()))
        daemon = self.mount_cache()
        self.check(daemon, base)

    def test_symlink_loops_from_a_listing_and_a_self_linked_store_path(self):
        entries = {"a": {"type": "symlink", "target": "b"}, "b": {"type": "symlink", "target": "a"},
                   "d": {"type": "directory", "entries": {}}, "here": {"type": "symlink", "target": "."},
                   "self": {"type": "symlink", "target": "self"},
                   "up": {"type": "symlink", "target": "../../../../../../.."},
                   "via-dir": {"type": "symlink", "target": "d/../self"}}
        base = self.cache.add("loops-listing", nar(self.loops()), listing({"type": "directory", "entries": entries}))
        # A store path that is a symlink to itself (relative to the store directory).
        h = self.cache.next_hash()
        self.cache.counter -= 1
        self_base = self.cache.add("self-link", nar(nar_symlink(f"{h}-self-link")))
        daemon = self.mount_cache()
        self.check(daemon, base)
        self.assertEqual(os.readlink(daemon.path(self_base)), self_base)
        self.assertErrno(errno.ELOOP, os.stat, daemon.path(self_base))
        nar_requests = [r for r in self.server.requests() if r[1].endswith(".nar")]
        self.assertEqual([r[1] for r in nar_requests], [f"/nar/{h}.nar"],
                         "a listed path needs no NAR; the symlink store path's NAR is read once")


class HostileHugeTest(HostileHttpTestCase):

    def flat_listing(self, count, offset):
        # Written directly: a million-entry dict through json.dumps would cost the test, not the daemon.
        entry = '{"type":"regular","size":0,"narOffset":%d}' % offset
        parts = ['{"version":1,"root":{"type":"directory","entries":{']
        parts.append(",".join('"%06d":%s' % (i, entry) for i in range(count)))
        parts.append("}}}")
        return "".join(parts)

    def flat_nar(self, count):
        file_node = nar_file(b"")
        return nar(nar_directory([("%06d" % i, file_node) for i in range(count)]))

    def test_a_million_entries_are_refused_with_bounded_memory(self):
        started = time.monotonic()
        million_nar = self.flat_nar(MILLION)
        both = self.cache.add("million-listing-and-nar", million_nar, self.flat_listing(MILLION, 64))
        del million_nar
        log(f"[{self._testMethodName}] million-entry NAR and listing written in "
            f"{time.monotonic() - started:.1f} s")
        daemon = self.mount_cache()
        started = time.monotonic()
        lines = self.assert_eio_logged(daemon, both)
        log(f"[{self._testMethodName}] refused in {time.monotonic() - started:.1f} s: {lines[-1]}")
        self.assertTrue(any("entries" in line for line in lines), lines)
        self.report_rss(daemon, "a million-entry listing and NAR")

    def test_a_hundred_thousand_entries_are_served(self):
        count = BIG
        data = self.flat_nar(count)
        offset = file_offsets(data, [b""])[0]
        base = self.cache.add("hundred-thousand", data, self.flat_listing(count, offset))
        nar_only = self.cache.add("hundred-thousand-nar-only", data)
        daemon = self.mount_cache()
        for b in (base, nar_only):
            names = os.listdir(daemon.path(b))
            self.assertEqual(len(names), count)
            self.assertEqual(os.lstat(daemon.path(b, "%06d" % (count - 1))).st_size, 0)
        self.report_rss(daemon, f"two {count:,}-entry store paths")


def make_hostile_tree(store, count=BIG):
    """A store a real filesystem can hold: loops, odd names, a huge directory. Returns the names."""
    names = {"loops": "0" * 31 + "1-loops", "names": "0" * 31 + "2-odd-names", "huge": "0" * 31 + "3-huge-dir",
             "self": "0" * 31 + "4-self-link"}
    loops = os.path.join(store, names["loops"])
    os.makedirs(os.path.join(loops, "d"))
    for name, target in (("a", "b"), ("b", "a"), ("self", "self"), ("here", "."), ("up", "../../../.."),
                         ("via-dir", "d/../self"), ("out", "/etc")):
        os.symlink(target, os.path.join(loops, name))
    odd = os.path.join(store, names["names"])
    os.makedirs(odd)
    for name in (b"new\nline", b"tab\there", b"back\\slash", b" lead-space", b"\xff\xfe-not-utf8",
                 b"-dash", b"\xe2\x98\x83-snowman", b"x" * 255):
        with open(os.path.join(odd.encode(), name), "wb") as f:
            f.write(name)
    huge = os.path.join(store, names["huge"])
    os.makedirs(huge)
    for i in range(count):
        open(os.path.join(huge, "%06d" % i), "wb").close()
    os.symlink(names["self"], os.path.join(store, names["self"]))
    # Nix's canonical modes, which the mount shows (files 0444, directories 0555).
    for dirpath, dirnames, filenames in os.walk(store):
        for name in dirnames + filenames:
            path = os.path.join(dirpath, name)
            if not os.path.islink(path):
                os.chmod(path, 0o555 if os.path.isdir(path) else 0o444)
    return names


class HostileFilesystemTest(HostileTestCase):
    """The directory upstream and the NFS upstream (nfs-ganesha, NFSv4) over the same tree."""

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.store_parent = tempfile.mkdtemp(prefix="lazystore-hostile-fs-", dir=os.environ.get("LAZYSTORE_TEST_TMP"))
        cls.store = os.path.join(cls.store_parent, "store")
        os.makedirs(cls.store)
        started = time.monotonic()
        cls.names = make_hostile_tree(cls.store)
        log(f"hostile filesystem tree made in {time.monotonic() - started:.1f} s")

    @classmethod
    def tearDownClass(cls):
        shutil.rmtree(cls.store_parent, ignore_errors=True)
        super().tearDownClass()

    def check(self, daemon, what):
        for key in ("loops", "names", "huge"):
            base = self.names[key]
            problems = tree_differences(os.path.join(self.store, base), daemon.path(base))
            self.assertEqual(problems, [], f"{base} differs through the {what} mount")
        loops = daemon.path(self.names["loops"])
        for name in ("self", "a", "via-dir"):
            self.assertErrno(errno.ELOOP, os.stat, os.path.join(loops, name))
        self.assertEqual(os.readlink(os.path.join(loops, "out")), "/etc")
        odd = daemon.path(self.names["names"]).encode()
        with open(os.path.join(odd, b"new\nline"), "rb") as f:
            self.assertEqual(f.read(), b"new\nline")
        self.assertEqual(os.readlink(daemon.path(self.names["self"])), self.names["self"])
        self.assertErrno(errno.ELOOP, os.stat, daemon.path(self.names["self"]))
        rss = peak_rss_mib(daemon)
        log(f"[{self._testMethodName}] daemon peak RSS (VmHWM) after a {BIG:,}-entry directory: {rss:.0f} MiB")
        self.assertLess(rss, rss_bound_mib(daemon))

    def test_directory_upstream(self):
        daemon = self.mount("file://" + self.store)
        self.check(daemon, "directory")

    def test_nfs_upstream(self):
        if shutil.which("ganesha.nfsd") is None:
            raise unittest.SkipTest("no ganesha.nfsd")
        from nfs_server import Ganesha
        server = Ganesha.v4(self.store, os.path.join(self.work, "ganesha"))
        self.addCleanup(server.close)
        daemon = self.mount(server.url(4), {"upstream-timeout": 300})
        self.check(daemon, "NFS")


if __name__ == "__main__":
    main()
