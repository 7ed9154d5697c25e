#!/usr/bin/python3
"""The HTTP binary-cache upstream against a real HTTP server (nginx on 127.0.0.1, which serves
Range) over binary caches made by `nix copy --to file://` from the fixture store: compression
none with `.ls` listings (lazy range reads), xz and zstd (whole NAR, hash-checked); signatures;
a corrupted NAR; fail-over between two servers; a stopped server."""

import atexit
import errno
import os
import shutil
import subprocess
import tempfile

from http_server import Nginx
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
        self.paths = {"none": everything, "xz": small, "zstd": small + [paths["misc"]]}

    def copy(self, name, store_paths, params, sign=False):
        directory = os.path.join(self.work, name)
        if sign:
            params += f"&secret-key={self.key_secret}"
        run(["nix", "copy", "--no-check-sigs", "--to", f"file://{directory}?{params}",
             "--from", f"local?root={self.nix.root}", *[f"/nix/store/{p}" for p in store_paths]],
            env=self.nix.env)
        return directory


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

    def test_uncompressed_every_file_equal_range_reads_only(self):
        server = self.serve(self.caches.none)
        daemon = self.mount_http(server.url)
        self.assert_same_as_fixture(daemon, self.caches.paths["none"])
        stats = daemon.stats()
        self.assertEqual(stats["nar_hash_failures"], 0, stats)
        self.assertEqual(stats["signature_failures"], 0, stats)
        nar = self.nar_requests(server)
        self.assertTrue(nar, "no NAR was read")
        whole = [r for r in nar if not r[4].startswith("bytes=") or r[2] != 206]
        self.assertEqual(whole, [], "a whole NAR was fetched although listings exist")
        # Paths looked up so far are what the top level lists (a binary cache cannot be listed).
        self.assertEqual(set(os.listdir(daemon.mountpoint)), set(self.caches.paths["none"]))

    def test_only_the_chunks_read_are_transferred(self):
        server = self.serve(self.caches.none)
        daemon = self.mount_http(server.url, {"chunk-size": "1M", "readahead": 0})
        misc = self.fixture.paths["misc"]
        big = daemon.path(misc, "big.bin")
        nar_size = os.path.getsize(os.path.join(self.caches.none, "nar",
                                                [n for n in os.listdir(os.path.join(self.caches.none, "nar"))
                                                 if self._nar_of(misc) == n][0]))
        expected = read_file(os.path.join(self.fixture.store, misc, "big.bin"))
        with open(big, "rb") as f:
            for offset in (0, 10 * MiB + 123, 40 * MiB):
                f.seek(offset)
                self.assertEqual(f.read(4096), expected[offset:offset + 4096])
        served = server.bytes_served("")  # every byte nginx sent (narinfo, listing, ranges)
        nar_bytes = sum(r[3] for r in self.nar_requests(server))
        log(f"read 3 x 4 KiB of a {nar_size} byte NAR: nginx sent {served} bytes ({nar_bytes} of NAR)")
        self.assertEqual(nar_bytes, 3 * MiB, "expected exactly the three 1 MiB chunks read")
        self.assertLess(served, nar_size // 10)
        self.assertEqual(cached_bytes(big), 3 * MiB)

    def _nar_of(self, name):
        with open(os.path.join(self.caches.none, name.split("-")[0] + ".narinfo")) as f:
            for line in f:
                if line.startswith("URL: "):
                    return os.path.basename(line[5:].strip())
        raise AssertionError("no URL")

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

    def test_corrupted_nar_fails_its_hash_and_nothing_is_cached(self):
        cache = self.private_cache("zstd")
        name = self.fixture.paths["python"]
        hash_part = name.split("-")[0]
        with open(os.path.join(cache, hash_part + ".narinfo")) as f:
            url = [l[5:].strip() for l in f if l.startswith("URL: ")][0]
        nar_file = os.path.join(cache, url)
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
        e = self.assertErrno(errno.EIO, os.listdir, daemon.path(name))
        log(f"listing a path whose NAR is corrupt: {e}")
        stats = daemon.stats()
        self.assertGreaterEqual(stats["nar_hash_failures"], 1, stats)
        self.assertEqual(stats["cache_bytes"], 0, stats)
        self.assertIn("NAR hash mismatch", daemon.stderr())
        # Repaired upstream: served again, correctly, without a remount.
        with open(nar_file, "wb") as f:
            f.write(good)
        self.assert_same_as_fixture(daemon, [name])

    def test_corrupted_xz_nar_with_listing_serves_nothing(self):
        # xz with a listing: the tree comes from the .ls, but file bytes only from a verified NAR.
        cache = self.private_cache("xz")
        name = self.fixture.paths["single_file"]
        with open(os.path.join(cache, name.split("-")[0] + ".narinfo")) as f:
            url = [l[5:].strip() for l in f if l.startswith("URL: ")][0]
        nar_file = os.path.join(cache, url)
        raw = bytearray(subprocess.run(["xz", "-d", "-c", nar_file], stdout=subprocess.PIPE, check=True).stdout)
        raw[-20] ^= 0x01
        bad = subprocess.run(["xz", "-c"], input=bytes(raw), stdout=subprocess.PIPE, check=True).stdout
        with open(nar_file, "wb") as f:
            f.write(bad)
        server = self.serve(cache)
        daemon = self.mount_http(server.url, allowed_stderr=UPSTREAM_ERRORS)
        self.assertTrue(os.path.isfile(daemon.path(name)))  # metadata from the listing
        self.assertErrno(errno.EIO, read_file, daemon.path(name))
        stats = daemon.stats()
        self.assertGreaterEqual(stats["nar_hash_failures"], 1, stats)
        self.assertEqual(stats["cache_bytes"], 0, stats)


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
                            allowed_stderr=UPSTREAM_ERRORS)
        with self.assertRaises(AssertionError) as raised:
            daemon.start()
        self.assertIn("trusted-public-keys", str(raised.exception))

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


if __name__ == "__main__":
    main()
