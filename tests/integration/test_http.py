#!/usr/bin/python3
"""The HTTP binary-cache upstream against a real HTTP server (nginx on 127.0.0.1, which serves
Range) over binary caches made by `nix copy --to file://` (signed with `secret-key=`) from the
fixture store: with signed manifests written by lazystore-publish (lazy Range reads, every block
checked), without them (the whole NAR, hash-checked, then everything from it), xz and zstd;
require-sigs=false (the cache trusted: listings and unchecked Range reads); altered NARs,
listings and manifests; https redirects to http; a server that drips its NAR; fail-over between
two servers; a stopped server."""

import atexit
import base64
import errno
import hashlib
import os
import random
import shutil
import subprocess
import tempfile
import threading
import time

from hostile_cache import HostileCache, file_offsets, nar, nar_directory, nar_file
from http_server import DripServer, Nginx, self_signed_certificate
from lazystore_testlib import MiB, LazystoreTestCase, NixStore, cached_bytes, fixture, log, main, \
    read_file, regular_files, run, tree_differences

TIMEOUT = 2.0
# Lines the daemon may print at level error when a test makes the upstream fail on purpose.
UPSTREAM_ERRORS = (r"lazystore: error: .*",)

_caches = None


class Caches:
    """Binary caches of the fixture, made once per test run (the fixture itself stays untouched)."""

    def __init__(self, work):
        fx = fixture()
        self.work = work
        self.nix = NixStore(os.path.join(fx.root, "root"), os.path.join(work, "nix-home"))
        self.key_secret = os.path.join(work, "cache-key.sec")
        self.key_public_path = os.path.join(work, "cache-key.pub")
        run(["nix-store", "--generate-binary-cache-key", "lazystore-it-1", self.key_secret,
             self.key_public_path], env=self.nix.env)
        self.key_public = read_file(self.key_public_path).decode().strip()
        paths = fx.paths
        everything = sorted(paths.values())
        small = [paths[r] for r in ("python", "single_file", "executable_file", "symlink")]
        # compression none + listings, signed: the lazy range-read path.
        self.none = self.copy("none", everything, "compression=none&write-nar-listing=true", sign=True)
        # Whole-NAR paths: xz (slow to compress: a subset), zstd with the large random files.
        self.xz = self.copy("xz", small, "compression=xz&write-nar-listing=true", sign=True)
        self.zstd = self.copy("zstd", small + [paths["misc"]], "compression=zstd", sign=True)
        self.unsigned = self.copy("unsigned", [paths["single_file"]], "compression=none")
        self.paths = {"none": everything, "xz": small, "zstd": small + [paths["misc"]],
                      "manifests": everything}
        # The same as `none`, with a signed manifest next to every narinfo.
        self.manifests = os.path.join(work, "manifests")
        shutil.copytree(self.none, self.manifests)
        publish(self.manifests, self.key_secret)

    def copy(self, name, store_paths, params, sign=False):
        directory = os.path.join(self.work, name)
        if sign:
            params += f"&secret-key={self.key_secret}"
        run(["nix", "copy", "--no-check-sigs", "--to", f"file://{directory}?{params}",
             "--from", f"local?root={self.nix.root}", *[f"/nix/store/{p}" for p in store_paths]],
            env=self.nix.env)
        return directory


def publish_bin():
    if os.environ.get("LAZYSTORE_PUBLISH_BIN"):
        return os.environ["LAZYSTORE_PUBLISH_BIN"]
    build = os.path.dirname(os.path.dirname(os.environ["LAZYSTORE_BIN"]))
    return os.path.join(build, "push", "lazystore-publish")


def publish(directory, secret_key, *args):
    """lazystore-publish over a cache directory; returns its summary line."""
    out = run([publish_bin(), "--secret-key", secret_key, *args, directory])
    return out.strip().splitlines()[-1]


def narinfo_fields(cache, name):
    with open(os.path.join(cache, name.split("-")[0] + ".narinfo")) as f:
        return dict(line.split(": ", 1) for line in f.read().splitlines() if ": " in line)


def nar_file_of(cache, name):
    return os.path.join(cache, narinfo_fields(cache, name)["URL"])


def flip_byte_of(cache, name, contents):
    """Alters one byte of `contents` (a file's bytes) inside the uncompressed NAR of `name`, in
    place: same length, the narinfo (and its signature) unchanged. Returns the NAR offset."""
    path = nar_file_of(cache, name)
    data = bytearray(read_file(path))
    at = bytes(data).index(contents) + len(contents) // 2
    data[at] ^= 0x01
    with open(path, "wb") as f:
        f.write(data)
    return at


def nix32_encode(digest):
    """Nix's base-32 of a hash (printHash32)."""
    alphabet = "0123456789abcdfghijklmnpqrsvwxyz"
    length = (len(digest) * 8 - 1) // 5 + 1
    out = []
    for n in range(length - 1, -1, -1):
        b = n * 5
        i, j = b // 8, b % 8
        c = (digest[i] >> j) | (digest[i + 1] << (8 - j) if i + 1 < len(digest) else 0)
        out.append(alphabet[c & 0x1f])
    return "".join(out)


def caches():
    global _caches
    if _caches is None:
        work = tempfile.mkdtemp(prefix="lazystore-http-caches-", dir=os.environ.get("LAZYSTORE_TEST_TMP"))
        atexit.register(shutil.rmtree, work, ignore_errors=True)
        _caches = Caches(work)
    return _caches


class HttpTestCase(LazystoreTestCase):

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.caches = caches()

    def setUp(self):
        super().setUp()
        self.servers = []
        self.addCleanup(self._stop_servers)

    def _stop_servers(self):
        for server in self.servers:
            server.stop()

    def serve(self, root, name="nginx"):
        server = Nginx(root, os.path.join(self.work, name)).start()
        self.servers.append(server)
        return server

    def private_cache(self, kind):
        destination = os.path.join(self.work, "cache-" + kind)
        shutil.copytree(getattr(self.caches, kind), destination)
        return destination

    def mount_http(self, source, options=None, signed=True, **kwargs):
        opts = {"upstream-timeout": TIMEOUT}
        if signed:
            opts["trusted-public-keys"] = self.caches.key_public
        else:
            opts["require-sigs"] = "false"
        opts.update(options or {})
        return self.mount(source, opts, **kwargs)

    def assert_same_as_fixture(self, daemon, names):
        for name in names:
            problems = tree_differences(os.path.join(self.fixture.store, name), daemon.path(name))
            self.assertEqual(problems, [], f"{name} differs through the HTTP mount")

    def nar_requests(self, server):
        return [r for r in server.requests() if r[1].startswith("/nar/")]


class HttpContentTest(HttpTestCase):

    def test_manifests_every_file_equal_verified_range_reads_only(self):
        server = self.serve(self.caches.manifests)
        daemon = self.mount_http(server.url)
        self.assert_same_as_fixture(daemon, self.caches.paths["manifests"])
        stats = daemon.stats()
        for counter in ("nar_hash_failures", "signature_failures", "manifest_failures", "block_hash_failures",
                        "nar_downloads"):
            self.assertEqual(stats[counter], 0, (counter, stats))
        self.assertEqual(stats["manifest_paths"], len(self.caches.paths["manifests"]), stats)
        nar = self.nar_requests(server)
        self.assertTrue(nar, "no NAR was read")
        whole = [r for r in nar if not r[4].startswith("bytes=") or r[2] != 206]
        self.assertEqual(whole, [], "a whole NAR was fetched although manifests exist")
        self.assertEqual([r for r in server.requests() if r[1].endswith(".ls")], [], "unsigned listings read")
        # Paths looked up so far are what the top level lists (a binary cache cannot be listed).
        self.assertEqual(set(os.listdir(daemon.mountpoint)), set(self.caches.paths["manifests"]))

    def test_without_manifests_every_file_equal_from_the_whole_nar(self):
        server = self.serve(self.caches.none)
        daemon = self.mount_http(server.url)
        names = self.caches.paths["none"]
        self.assert_same_as_fixture(daemon, names)
        stats = daemon.stats()
        self.assertEqual(stats["nar_hash_failures"], 0, stats)
        self.assertEqual(stats["nar_downloads"], len(names), stats)
        nar = self.nar_requests(server)
        self.assertEqual([r for r in nar if r[4].startswith("bytes=")], [], "an unverified Range read")
        self.assertEqual(sorted(r[1] for r in nar), sorted(set(r[1] for r in nar)), "a NAR fetched twice")
        self.assertEqual([r for r in server.requests() if r[1].endswith(".ls")], [], "unsigned listings read")

    def test_trusted_cache_range_reads_only_with_require_sigs_false(self):
        # Today's behaviour, kept for require-sigs=false: listings and unchecked Range reads.
        server = self.serve(self.caches.none)
        daemon = self.mount_http(server.url, signed=False)
        self.assert_same_as_fixture(daemon, self.caches.paths["none"])
        whole = [r for r in self.nar_requests(server) if not r[4].startswith("bytes=") or r[2] != 206]
        self.assertEqual(whole, [], "a whole NAR was fetched although listings exist")
        self.assertEqual(daemon.stats()["nar_downloads"], 0)

    def test_only_the_blocks_read_are_transferred(self):
        server = self.serve(self.caches.manifests)
        daemon = self.mount_http(server.url, {"chunk-size": "1M", "readahead": 0})
        misc = self.fixture.paths["misc"]
        big = daemon.path(misc, "big.bin")
        nar_size = os.path.getsize(nar_file_of(self.caches.none, misc))
        expected = read_file(os.path.join(self.fixture.store, misc, "big.bin"))
        with open(big, "rb") as f:
            for offset in (0, 10 * MiB + 123, 40 * MiB):
                f.seek(offset)
                self.assertEqual(f.read(4096), expected[offset:offset + 4096])
        served = server.bytes_served("")  # every byte nginx sent (narinfo, manifest, ranges)
        nar_bytes = sum(r[3] for r in self.nar_requests(server))
        log(f"read 3 x 4 KiB of a {nar_size} byte NAR: nginx sent {served} bytes ({nar_bytes} of NAR)")
        # The read at 0 starts a stream: its 1 MiB chunk, checked by whole blocks. The two others
        # are random: each moves its own 4 KiB leaves (the one at 10 MiB + 123 spans two) and the
        # leaf hashes of its block (512 bytes), and the cache keeps the leaves.
        leaves = [r for r in server.requests() if r[1].endswith(".leaves")]
        log(f"leaves requests: {leaves}")
        self.assertEqual(nar_bytes, MiB + 3 * 4096, "expected the first chunk and three leaves")
        self.assertEqual(sorted(r[3] for r in leaves), [512, 512])
        self.assertLess(served, nar_size // 10)
        self.assertEqual(cached_bytes(big), MiB + 3 * 4096)

    def test_one_header_of_the_include_path_transfers_a_small_part_of_it(self):
        server = self.serve(self.caches.manifests)
        daemon = self.mount_http(server.url)
        include = self.fixture.paths["include"]
        nar_size = os.path.getsize(nar_file_of(self.caches.none, include))
        header = read_file(daemon.path(include, "stdio.h"))
        self.assertEqual(header, read_file(os.path.join(self.fixture.store, include, "stdio.h")))
        served = server.bytes_served("")
        manifest = server.bytes_served(".manifest")
        log(f"one header of the include path ({nar_size} byte NAR): nginx sent {served} bytes "
            f"({manifest} of manifest, {sum(r[3] for r in self.nar_requests(server))} of NAR)")
        self.assertLess(served, nar_size // 20)
        self.assertEqual(daemon.stats()["nar_downloads"], 0)

    def test_xz_cache_every_file_equal(self):
        server = self.serve(self.caches.xz)
        daemon = self.mount_http(server.url)
        self.assert_same_as_fixture(daemon, self.caches.paths["xz"])
        stats = daemon.stats()
        self.assertEqual(stats["nar_hash_failures"], 0, stats)
        # Each NAR is fetched whole once, however many files are read from it.
        nars = [r[1] for r in self.nar_requests(server)]
        self.assertEqual(len(nars), len(set(nars)), nars)

    def test_zstd_cache_without_listings_every_file_equal(self):
        server = self.serve(self.caches.zstd)
        daemon = self.mount_http(server.url)
        self.assert_same_as_fixture(daemon, self.caches.paths["zstd"])
        self.assertEqual(daemon.stats()["nar_hash_failures"], 0)

    def test_corrupted_nar_makes_the_path_absent_logged_once_nothing_cached(self):
        cache = self.private_cache("zstd")
        name = self.fixture.paths["python"]
        nar_file = nar_file_of(cache, name)
        good = read_file(nar_file)
        # A well-formed zstd stream of a NAR with one flipped byte: only NarHash can tell.
        raw = bytearray(subprocess.run(["zstd", "-d", "-c", nar_file], stdout=subprocess.PIPE,
                                       check=True).stdout)
        raw[len(raw) // 2] ^= 0x01
        bad = subprocess.run(["zstd", "-q", "-c"], input=bytes(raw), stdout=subprocess.PIPE, check=True).stdout
        with open(nar_file, "wb") as f:
            f.write(bad)
        server = self.serve(cache)
        daemon = self.mount_http(server.url, allowed_stderr=UPSTREAM_ERRORS)
        e = self.assertErrno(errno.ENOENT, os.listdir, daemon.path(name))
        log(f"listing a path whose NAR is corrupt: {e}")
        self.assertErrno(errno.ENOENT, os.lstat, daemon.path(name))
        stats = daemon.stats()
        self.assertEqual(stats["nar_hash_failures"], 1, stats)  # absent for a while: not fetched again
        self.assertEqual(stats["cache_bytes"], 0, stats)
        self.assertEqual(daemon.stderr().count("NAR hash mismatch"), 1, daemon.stderr())
        self.assertNotIn(name, os.listdir(daemon.mountpoint))
        # Repaired upstream: served again, correctly, after a restart (the refusal is in memory).
        with open(nar_file, "wb") as f:
            f.write(good)
        daemon.stop()
        daemon.start()
        self.assert_same_as_fixture(daemon, [name])

    def test_corrupted_xz_nar_with_listing_serves_nothing(self):
        # xz with a listing: the listing is not signed, so nothing is believed before the NAR is.
        cache = self.private_cache("xz")
        name = self.fixture.paths["single_file"]
        nar_file = nar_file_of(cache, name)
        raw = bytearray(subprocess.run(["xz", "-d", "-c", nar_file], stdout=subprocess.PIPE, check=True).stdout)
        raw[-20] ^= 0x01
        bad = subprocess.run(["xz", "-c"], input=bytes(raw), stdout=subprocess.PIPE, check=True).stdout
        with open(nar_file, "wb") as f:
            f.write(bad)
        server = self.serve(cache)
        daemon = self.mount_http(server.url, allowed_stderr=UPSTREAM_ERRORS)
        self.assertErrno(errno.ENOENT, os.lstat, daemon.path(name))
        stats = daemon.stats()
        self.assertGreaterEqual(stats["nar_hash_failures"], 1, stats)
        self.assertEqual(stats["cache_bytes"], 0, stats)

    def _nar_of(self, name):
        return os.path.basename(narinfo_fields(self.caches.none, name)["URL"])


class HttpSignatureTest(HttpTestCase):

    def test_signed_cache_verified_and_tampered_narinfo_refused(self):
        cache = self.private_cache("none")
        good, tampered = self.fixture.paths["single_file"], self.fixture.paths["executable_file"]
        info_path = os.path.join(cache, tampered.split("-")[0] + ".narinfo")
        with open(info_path) as f:
            lines = f.read().splitlines()
        # Claim another NAR (the good path's) under the tampered path's name and signature.
        with open(os.path.join(cache, good.split("-")[0] + ".narinfo")) as f:
            other = {l.split(": ", 1)[0]: l for l in f.read().splitlines()}
        lines = [other[l.split(": ", 1)[0]] if l.split(": ", 1)[0] in ("URL", "NarHash", "NarSize", "FileHash", "FileSize") else l
                 for l in lines]
        with open(info_path, "w") as f:
            f.write("\n".join(lines) + "\n")
        server = self.serve(cache)
        daemon = self.mount_http(server.url)
        self.assert_same_as_fixture(daemon, [good])
        self.assertEqual(daemon.stats()["signature_failures"], 0)
        self.assertErrno(errno.ENOENT, os.lstat, daemon.path(tampered))
        self.assertGreaterEqual(daemon.stats()["signature_failures"], 1)
        self.assertIn("no valid signature", daemon.stderr())

    def test_wrong_key_or_unsigned_cache_refused(self):
        server = self.serve(self.caches.unsigned, "nginx-unsigned")
        name = self.fixture.paths["single_file"]
        daemon = self.mount_http(server.url)
        self.assertErrno(errno.ENOENT, os.lstat, daemon.path(name))
        self.assertIn("unsigned narinfo", daemon.stderr())
        daemon.stop()
        signed = self.serve(self.caches.none, "nginx-signed")
        other_key = os.path.join(self.work, "other")
        run(["nix-store", "--generate-binary-cache-key", "lazystore-it-1", other_key + ".sec",
             other_key + ".pub"], env=self.caches.nix.env)
        daemon = self.mount_http(signed.url, {"trusted-public-keys": read_file(other_key + ".pub").decode().strip()},
                                 mountpoint=os.path.join(self.work, "mnt2"), cache=os.path.join(self.work, "cache2"))
        self.assertErrno(errno.ENOENT, os.lstat, daemon.path(name))
        self.assertGreaterEqual(daemon.stats()["signature_failures"], 1)

    def test_unsigned_cache_served_with_require_sigs_false(self):
        server = self.serve(self.caches.unsigned)
        daemon = self.mount_http(server.url, signed=False)
        self.assert_same_as_fixture(daemon, [self.fixture.paths["single_file"]])

    def test_no_keys_and_signatures_required_is_refused_at_start(self):
        daemon = self.mount("http://127.0.0.1:9", {"upstream-timeout": TIMEOUT}, start=False,
                            allowed_stderr=UPSTREAM_ERRORS + (r"fuse: failed to unmount .*",))
        try:
            daemon.start()
        except AssertionError as e:  # the command failed before the mount showed
            self.assertIn("trusted-public-keys", str(e))
            return
        # The supervisor mounts before its first server checks the options: it then ends the mount.
        code = daemon.process.wait(timeout=30)
        daemon.process = None
        self.assertNotEqual(code, 0)
        self.assertIn("trusted-public-keys", daemon.stderr())

    def test_several_keys_in_one_option(self):
        server = self.serve(self.caches.none)
        other = "someone-else:" + "A" * 43 + "="
        daemon = self.mount_http(server.url, {"trusted-public-keys": f"{other} {self.caches.key_public}"})
        self.assert_same_as_fixture(daemon, [self.fixture.paths["single_file"]])


class HttpAvailabilityTest(HttpTestCase):

    def test_first_server_killed_fails_over_to_the_second(self):
        first = self.serve(self.caches.none, "nginx-a")
        second = self.serve(self.caches.none, "nginx-b")
        daemon = self.mount_http(f"{first.url},{second.url}")
        python = self.fixture.paths["python"]
        self.assert_same_as_fixture(daemon, [self.fixture.paths["single_file"]])
        self.assertTrue(first.requests())
        self.assertEqual(second.requests(), [])
        first.kill()
        self.assert_same_as_fixture(daemon, [python])
        stats = daemon.stats()
        self.assertEqual(stats["http_failovers"], 1, stats)
        self.assertTrue(self.nar_requests(second))

    def test_server_stopped_cached_data_still_served(self):
        server = self.serve(self.caches.none)
        daemon = self.mount_http(server.url, allowed_stderr=UPSTREAM_ERRORS)
        python, misc = self.fixture.paths["python"], self.fixture.paths["misc"]
        self.assert_same_as_fixture(daemon, [python])
        server.stop()
        self.assert_same_as_fixture(daemon, [python])
        # Not cached: an error within the deadline, not a hang.
        self.assertErrno((errno.EIO, errno.ETIMEDOUT, errno.ENOENT), os.listdir, daemon.path(misc))
        # And after a restart, from the disk caches alone.
        daemon.stop()
        daemon.start()
        self.assert_same_as_fixture(daemon, [python])


class HttpTamperTest(HttpTestCase):
    """A cache in the middle alters what it serves; the narinfos (and their signatures) stay."""

    def contents_of(self, name, relative):
        return read_file(os.path.join(self.fixture.store, name, relative))

    def test_nar_altered_in_place_is_never_served_without_a_manifest(self):
        cache = self.private_cache("none")
        name = self.fixture.paths["python"]
        relative = sorted(f for f in regular_files(os.path.join(self.fixture.store, name))
                          if os.path.getsize(os.path.join(self.fixture.store, name, f)) > 1000)[0]
        flip_byte_of(cache, name, self.contents_of(name, relative))
        server = self.serve(cache)
        daemon = self.mount_http(server.url, allowed_stderr=UPSTREAM_ERRORS)
        self.assertErrno(errno.ENOENT, read_file, daemon.path(name, relative))
        self.assertErrno(errno.ENOENT, os.lstat, daemon.path(name))
        stats = daemon.stats()
        self.assertEqual(stats["nar_hash_failures"], 1, stats)
        self.assertEqual(stats["cache_bytes"], 0, stats)
        self.assertEqual(daemon.stderr().count("NAR hash mismatch"), 1)
        # The other paths are served.
        self.assert_same_as_fixture(daemon, [self.fixture.paths["single_file"]])

    def test_nar_altered_in_place_is_never_served_with_a_manifest(self):
        cache = self.private_cache("manifests")
        name = self.fixture.paths["python"]
        files = sorted(f for f in regular_files(os.path.join(self.fixture.store, name))
                       if os.path.getsize(os.path.join(self.fixture.store, name, f)) > 1000)
        altered, intact = files[0], files[1]
        flip_byte_of(cache, name, self.contents_of(name, altered))
        server = self.serve(cache)
        daemon = self.mount_http(server.url, allowed_stderr=UPSTREAM_ERRORS)
        self.assertErrno(errno.EIO, read_file, daemon.path(name, altered))
        self.assertErrno(errno.EIO, read_file, daemon.path(name, altered))
        self.assertEqual(read_file(daemon.path(name, intact)), self.contents_of(name, intact))
        stats = daemon.stats()
        self.assertGreaterEqual(stats["block_hash_failures"], 1, stats)
        self.assertEqual(stats["nar_downloads"], 0, stats)
        self.assertEqual(cached_bytes(daemon.path(name, altered)), 0)
        self.assertEqual(daemon.stderr().count("do not match the signed manifest"), 1, daemon.stderr())

    def test_altered_listing_is_never_served(self):
        cache = self.private_cache("none")
        link, script, single = (self.fixture.paths[r] for r in ("symlink", "executable_file", "single_file"))
        edits = {link: ('"target":"', '"target":"/etc/passwd#'),
                 script: ('"executable":true', '"executable":false'),
                 single: ('"size":', '"size":1')}
        for name, (old, new) in edits.items():
            path = os.path.join(cache, name.split("-")[0] + ".ls")
            text = read_file(path).decode()
            self.assertIn(old, text, name)
            with open(path, "w") as f:
                f.write(text.replace(old, new, 1))
        server = self.serve(cache)
        daemon = self.mount_http(server.url)
        self.assert_same_as_fixture(daemon, list(edits))
        self.assertEqual(os.readlink(daemon.path(link)), os.readlink(os.path.join(self.fixture.store, link)))
        self.assertTrue(os.access(daemon.path(script), os.X_OK))


class HttpManifestRefusalTest(HttpTestCase):
    """Manifests that must not be used: the path is then served from its verified whole NAR."""

    def check_refused_and_served_whole(self, cache, name):
        server = self.serve(cache)
        daemon = self.mount_http(server.url)
        self.assert_same_as_fixture(daemon, [name])
        stats = daemon.stats()
        self.assertEqual(stats["manifest_failures"], 1, stats)
        self.assertEqual(stats["manifest_paths"], 0, stats)
        self.assertEqual(stats["nar_downloads"], 1, stats)
        self.assertEqual([r for r in self.nar_requests(server) if r[4].startswith("bytes=")], [])
        self.assertIn("manifest", daemon.stderr())
        return daemon

    def test_signed_by_an_untrusted_key(self):
        cache = self.private_cache("manifests")
        other = os.path.join(self.work, "other")
        run(["nix-store", "--generate-binary-cache-key", "lazystore-it-1", other + ".sec", other + ".pub"],
            env=self.caches.nix.env)
        summary = publish(cache, other + ".sec", "--force")
        self.assertIn("failed 0", summary.replace(", 0 failed", " failed 0"))
        daemon = self.check_refused_and_served_whole(cache, self.fixture.paths["python"])
        self.assertIn("no valid signature", daemon.stderr())

    def test_moved_to_another_path(self):
        cache = self.private_cache("manifests")
        target, source = self.fixture.paths["python"], self.fixture.paths["executable_file"]
        shutil.copy(os.path.join(cache, source.split("-")[0] + ".manifest"),
                    os.path.join(cache, target.split("-")[0] + ".manifest"))
        daemon = self.check_refused_and_served_whole(cache, target)
        self.assertIn("it is the manifest of " + source, daemon.stderr())

    def test_one_block_hash_changed(self):
        cache = self.private_cache("manifests")
        name = self.fixture.paths["python"]
        path = os.path.join(cache, name.split("-")[0] + ".manifest")
        data = read_file(path)
        head, body = data.split(b"\n\n", 1)
        text = subprocess.run(["zstd", "-d", "-c"], input=body, stdout=subprocess.PIPE, check=True).stdout
        at = text.index(b'"blocks":"') + len(b'"blocks":"')
        changed = text[:at] + (b"B" if text[at:at + 1] == b"A" else b"A") + text[at + 1:]
        body = subprocess.run(["zstd", "-q", "-c"], input=changed, stdout=subprocess.PIPE, check=True).stdout
        # A consistent file (BodyHash and BodySize match the new body): only the signature can tell.
        lines = []
        for line in head.decode().splitlines():
            if line.startswith("BodyHash: "):
                line = "BodyHash: sha256:" + nix32_encode(hashlib.sha256(body).digest())
            elif line.startswith("BodySize: "):
                line = f"BodySize: {len(body)}"
            lines.append(line)
        with open(path, "wb") as f:
            f.write("\n".join(lines).encode() + b"\n\n" + body)
        daemon = self.check_refused_and_served_whole(cache, name)
        self.assertIn("no valid signature", daemon.stderr())

    def test_a_manifest_larger_than_the_cap(self):
        cache = self.private_cache("manifests")
        name = self.fixture.paths["single_file"]
        path = os.path.join(cache, name.split("-")[0] + ".manifest")
        with open(path, "r+b") as f:
            f.truncate(129 * MiB)  # sparse: 1 MiB above kMaxManifestBytes
        daemon = self.check_refused_and_served_whole(cache, name)
        self.assertIn("larger than", daemon.stderr())

    def test_publish_is_idempotent_and_refuses_a_nar_that_does_not_match(self):
        cache = self.private_cache("none")
        first = publish(cache, self.caches.key_secret)
        n = len(self.caches.paths["none"])
        self.assertIn(f"{n} manifests written", first)
        again = publish(cache, self.caches.key_secret)
        self.assertIn(f"0 manifests written", again)
        self.assertIn(f"{n} current", again)
        # A NAR altered on the server is not signed.
        name = self.fixture.paths["single_file"]
        os.unlink(os.path.join(cache, name.split("-")[0] + ".manifest"))
        flip_byte_of(cache, name, read_file(os.path.join(self.fixture.store, name)))
        result = subprocess.run([publish_bin(), "--secret-key", self.caches.key_secret, cache],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        self.assertEqual(result.returncode, 1, result.stdout + result.stderr)
        self.assertIn("does not match the narinfo's NarHash", result.stderr)
        self.assertFalse(os.path.exists(os.path.join(cache, name.split("-")[0] + ".manifest")))

    def test_publish_rewrites_missing_or_altered_leaves_and_manifests_without_leaves(self):
        cache = self.private_cache("manifests")
        n = len(self.caches.paths["manifests"])
        misc, python = (self.fixture.paths[r].split("-")[0] for r in ("misc", "python"))
        leaves = {h: os.path.join(cache, h + ".leaves") for h in (misc, python)}
        for path in leaves.values():
            self.assertTrue(os.path.getsize(path) > 0, path)
        os.unlink(leaves[misc])
        with open(leaves[python], "r+b") as f:
            f.seek(5)  # inside the first leaf hash of the first block: always in use
            byte = f.read(1)
            f.seek(5)
            f.write(bytes([byte[0] ^ 1]))
        self.assertIn(f"2 manifests written", publish(cache, self.caches.key_secret))
        self.assertIn(f"{n} current", publish(cache, self.caches.key_secret))
        # Without leaves (--leaf-size 0) every manifest changes; with them again, every one.
        self.assertIn(f"{n} manifests written", publish(cache, self.caches.key_secret, "--leaf-size", "0"))
        with open(os.path.join(cache, misc + ".manifest"), "rb") as f:
            self.assertNotIn(b"LeafSize:", f.read().split(b"\n\n")[0])
        self.assertIn(f"{n} manifests written", publish(cache, self.caches.key_secret))
        for bad in (["--leaf-size", "64K"], ["--leaf-size", "3K"], ["--leaf-size", "2K"], ["--leaf-size", "x"]):
            result = subprocess.run([publish_bin(), "--secret-key", self.caches.key_secret, *bad, cache],
                                    stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
            self.assertEqual(result.returncode, 2, (bad, result.stdout, result.stderr))
            self.assertIn("--leaf-size", result.stderr)


class HttpLeavesTest(HttpTestCase):
    """Small reads of a manifest's NAR fetch their 4 KiB leaves and the leaf hashes of the block
    (`<hash>.leaves`); leaves that are missing or wrong cost bytes (whole blocks), never a wrong byte."""

    def random_reads(self, daemon, count, seed):
        misc = self.fixture.paths["misc"]
        big = daemon.path(misc, "big.bin")
        source_big = os.path.join(self.fixture.path("misc"), "big.bin")
        size = os.path.getsize(source_big)
        offsets = [4096 * block for block in random.Random(seed).sample(range(MiB // 4096, size // 4096 - 1), count)]
        with open(big, "rb") as f, open(source_big, "rb") as g:
            for offset in offsets:
                self.assertEqual(os.pread(f.fileno(), 4096, offset), os.pread(g.fileno(), 4096, offset), offset)
        return big, 4096 * count

    def test_random_small_reads_move_about_what_they_read(self):
        server = self.serve(self.caches.manifests)
        daemon = self.mount_http(server.url, {"chunk-size": "1M"})
        os.stat(daemon.path(self.fixture.paths["misc"], "big.bin"))  # the manifest, before counting
        before = daemon.stats()
        big, read = self.random_reads(daemon, 300, 17)
        after = daemon.stats()
        moved = after["http_bytes"] - before["http_bytes"]
        log(f"300 random 4 KiB reads over HTTP: {moved} bytes received for {read} read ({moved / read:.2f}x), "
            f"{after['http_requests'] - before['http_requests']} requests")
        self.assertLessEqual(moved, 1.25 * read, "random reads moved much more than they read")
        self.assertGreaterEqual(moved, read)
        self.assertEqual(after["leaf_failures"], 0, after)
        self.assertLessEqual(cached_bytes(big), 1.1 * read)
        # Read again: from the cache.
        self.random_reads(daemon, 300, 17)
        self.assertEqual(daemon.stats()["http_bytes"], after["http_bytes"])

    def check_whole_blocks_instead(self, cache, why):
        server = self.serve(cache)
        daemon = self.mount_http(server.url, {"chunk-size": "1M"}, allowed_stderr=UPSTREAM_ERRORS)
        big, read = self.random_reads(daemon, 40, 5)
        stats = daemon.stats()
        self.assertGreaterEqual(stats["leaf_failures"], 1, stats)
        self.assertEqual(stats["block_hash_failures"], 0, stats)
        self.assertEqual(stats["nar_downloads"], 0, stats)
        self.assertEqual(daemon.stderr().count("reading whole blocks instead"), 1, daemon.stderr())
        self.assertIn(why, daemon.stderr())
        # After the first failure the path's reads are whole 64 KiB blocks: no more leaves asked.
        ranges = [r[3] for r in self.nar_requests(server)]
        self.assertEqual(len([r for r in server.requests() if r[1].endswith(".leaves")]), 1)
        self.assertTrue(all(n % (64 * 1024) == 0 for n in ranges[1:]), ranges)
        return daemon

    def test_missing_leaves_cost_bytes_never_correctness(self):
        cache = self.private_cache("manifests")
        os.unlink(os.path.join(cache, self.fixture.paths["misc"].split("-")[0] + ".leaves"))
        self.check_whole_blocks_instead(cache, ".leaves is missing")

    def test_altered_leaves_are_refused_and_whole_blocks_read(self):
        cache = self.private_cache("manifests")
        path = os.path.join(cache, self.fixture.paths["misc"].split("-")[0] + ".leaves")
        size = os.path.getsize(path)
        with open(path, "wb") as f:
            f.write(os.urandom(size))
        self.check_whole_blocks_instead(cache, "do not match the manifest")

    def test_an_altered_leaf_of_the_nar_is_never_served(self):
        cache = self.private_cache("manifests")
        misc = self.fixture.paths["misc"]
        source_big = os.path.join(self.fixture.path("misc"), "big.bin")
        with open(source_big, "rb") as f:
            contents = os.pread(f.fileno(), 4096, 20 * MiB)
        at = flip_byte_of(cache, misc, contents)
        server = self.serve(cache)
        daemon = self.mount_http(server.url, {"chunk-size": "1M"}, allowed_stderr=UPSTREAM_ERRORS)
        big = daemon.path(misc, "big.bin")
        with open(big, "rb") as f:
            self.assertErrno(errno.EIO, os.pread, f.fileno(), 4096, 20 * MiB)
            with open(source_big, "rb") as g:
                # Another leaf of the same block (not the next one: that would be a stream).
                self.assertEqual(os.pread(f.fileno(), 4096, 20 * MiB + 32768), os.pread(g.fileno(), 4096, 20 * MiB + 32768))
        stats = daemon.stats()
        # The kernel may ask for the failed page twice (its read-ahead, then the read itself).
        self.assertIn(stats["block_hash_failures"], (1, 2), stats)
        self.assertEqual(stats["leaf_failures"], 0, stats)
        log(f"altered NAR byte at {at}: EIO for its leaf, another leaf of its block served")


class HttpSpoolTest(HttpTestCase):
    """The whole-NAR path: one download per path, kept across restarts, retried after a failure."""

    def test_concurrent_lookups_share_one_download(self):
        server = self.serve(self.caches.none)
        daemon = self.mount_http(server.url)
        name = self.fixture.paths["python"]
        errors = []

        def walk():
            try:
                self.assertEqual(tree_differences(os.path.join(self.fixture.store, name), daemon.path(name)), [])
            except Exception as e:  # noqa: BLE001 - reported below
                errors.append(e)
        threads = [threading.Thread(target=walk) for _ in range(6)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=300)
        self.assertEqual(errors, [])
        self.assertEqual(len(self.nar_requests(server)), 1, self.nar_requests(server))

    def test_a_kept_nar_is_not_downloaded_again_after_a_restart(self):
        server = self.serve(self.caches.none)
        daemon = self.mount_http(server.url)
        name = self.fixture.paths["python"]
        files = sorted(regular_files(os.path.join(self.fixture.store, name)))
        first, later = files[0], files[len(files) // 2]
        self.assertEqual(read_file(daemon.path(name, first)), read_file(os.path.join(self.fixture.store, name, first)))
        self.assertEqual(len(self.nar_requests(server)), 1)
        daemon.stop()
        daemon.start()
        # A file not read before the restart: from the kept NAR, verified again, not downloaded.
        self.assertEqual(read_file(daemon.path(name, later)), read_file(os.path.join(self.fixture.store, name, later)))
        self.assertEqual(len(self.nar_requests(server)), 1, self.nar_requests(server))
        self.assertEqual(daemon.stats()["nar_downloads"], 0)

    def test_a_failed_download_is_retried_on_the_next_access(self):
        cache = self.private_cache("none")
        name = self.fixture.paths["python"]
        nar_file = nar_file_of(cache, name)
        os.rename(nar_file, nar_file + ".away")  # the NAR cannot be had for now (404)
        server = self.serve(cache)
        daemon = self.mount_http(server.url, allowed_stderr=UPSTREAM_ERRORS)
        self.assertErrno(errno.EIO, os.listdir, daemon.path(name))
        self.assertErrno(errno.EIO, os.listdir, daemon.path(name))
        os.rename(nar_file + ".away", nar_file)
        # No restart: the very next access downloads it (a failure is not remembered).
        self.assert_same_as_fixture(daemon, [name])


class HttpHostileSizeTest(HttpTestCase):
    """Absurd file sizes are refused where they enter (issue 14.1)."""

    def test_a_hostile_listing_size_is_refused_where_it_enters(self):
        # require-sigs=false trusts the listing, but not past the cap on file sizes: a size of
        # 2^62 - 1000 inside a NarSize of 2^62 used to reach the content cache and kill the server.
        cache = HostileCache(os.path.join(self.work, "hostile"))
        contents = b"0123456789" * 20
        good = nar(nar_directory([("f", nar_file(contents))]))
        offset = file_offsets(good, [contents])[0]
        ls = ('{"version":1,"root":{"type":"directory","entries":{"f":{"type":"regular","size":%d,'
              '"narOffset":%d}}}}' % (2**62 - 1000, offset))
        base = cache.add("huge-listing", good, ls, nar_size=2**62)
        server = self.serve(cache.root)
        daemon = self.mount_http(server.url, signed=False, allowed_stderr=UPSTREAM_ERRORS)
        self.assertErrno(errno.EIO, os.lstat, daemon.path(base, "f"))
        self.assertIn("absurd size", daemon.stderr())
        self.assertGreaterEqual(daemon.stats()["errors"], 1)  # the same server answers


class HttpTransportTest(HttpTestCase):

    def trust(self, cert):
        """The daemons started from now on trust `cert` (the CA file Nix's variables name)."""
        for name in ("NIX_SSL_CERT_FILE", "SSL_CERT_FILE"):
            old = os.environ.get(name)
            os.environ[name] = cert
            self.addCleanup(lambda n=name, o=old: os.environ.pop(n) if o is None else os.environ.__setitem__(n, o))

    def test_https_redirect_to_http_is_refused(self):
        cert, key = self_signed_certificate(self.work)
        plain = self.serve(self.caches.manifests, "nginx-plain")
        tls = Nginx(self.caches.manifests, os.path.join(self.work, "nginx-tls"), tls=(cert, key),
                    extra=f"location /nar/ {{ return 302 {plain.url}$request_uri; }}").start()
        self.servers.append(tls)
        self.trust(cert)
        daemon = self.mount_http(tls.url, allowed_stderr=UPSTREAM_ERRORS)
        name = self.fixture.paths["single_file"]
        self.assertTrue(os.path.isfile(daemon.path(name)))  # narinfo and manifest over https
        self.assertErrno(errno.EIO, read_file, daemon.path(name))
        self.assertTrue([r for r in tls.requests() if r[1].startswith("/nar/") and r[2] == 302])
        self.assertEqual(plain.requests(), [], "a redirect to http was followed")
        self.assertIn("refused a redirect from https", daemon.stderr())

    def test_https_redirect_to_https_is_followed(self):
        cert, key = self_signed_certificate(self.work)
        target = Nginx(self.caches.manifests, os.path.join(self.work, "nginx-target"), tls=(cert, key)).start()
        self.servers.append(target)
        front = Nginx(self.caches.manifests, os.path.join(self.work, "nginx-front"), tls=(cert, key),
                      extra=f"location /nar/ {{ return 302 {target.url}$request_uri; }}").start()
        self.servers.append(front)
        self.trust(cert)
        daemon = self.mount_http(front.url)
        self.assert_same_as_fixture(daemon, [self.fixture.paths["single_file"]])
        self.assertTrue(self.nar_requests(target))

    def test_narinfo_url_outside_the_cache_is_refused(self):
        other = self.serve(self.caches.none, "nginx-other")
        cache = self.private_cache("none")
        names = [self.fixture.paths[r] for r in ("single_file", "executable_file", "symlink")]
        urls = [f"{other.url}/nar/x.nar", "//127.0.0.1/nar/x.nar", "nar/../../etc/passwd"]
        for name, url in zip(names, urls):
            path = os.path.join(cache, name.split("-")[0] + ".narinfo")
            text = read_file(path).decode()
            fields = narinfo_fields(cache, name)
            with open(path, "w") as f:
                f.write(text.replace("URL: " + fields["URL"], "URL: " + url))  # URL is not signed
        server = self.serve(cache)
        daemon = self.mount_http(server.url)
        for name in names:
            self.assertErrno(errno.EIO, os.lstat, daemon.path(name))
        self.assertIn("invalid URL", daemon.stderr())
        self.assertEqual(other.requests(), [])


class HttpDeadlineTest(HttpTestCase):

    def test_a_slow_drip_nar_fails_within_the_derived_bound(self):
        # The NAR arrives at 5 bytes/s: never a stall of upstream-timeout, but far below the
        # minimum rate. The download ends after upstream-timeout + NarSize / 1 MiB/s.
        server = DripServer(self.caches.none, drip="/nar/", chunk=1, interval=0.2).start()
        self.addCleanup(server.stop)
        daemon = self.mount_http(server.url, allowed_stderr=UPSTREAM_ERRORS)
        name = self.fixture.paths["single_file"]
        nar_size = int(narinfo_fields(self.caches.none, name)["NarSize"])
        bound = TIMEOUT + nar_size / MiB
        started = time.monotonic()
        self.assertErrno((errno.EIO, errno.ETIMEDOUT), os.lstat, daemon.path(name))
        took = time.monotonic() - started
        log(f"slow drip of a {nar_size} byte NAR: refused after {took:.2f} s (bound {bound:.2f} s, "
            f"{server.dripped} bytes dripped)")
        self.assertGreater(server.dripping, 0)
        self.assertLess(took, bound + 2.0)
        self.assertGreaterEqual(daemon.stats()["upstream_timeouts"], 1)


if __name__ == "__main__":
    main()
