#!/usr/bin/python3
"""The executor container image, built from the .deb and run on a real Docker engine.

1. `debian_test.sh` builds and checks the .deb (kept for step 3).
2. A Debian 12 base image: `debootstrap --variant=minbase` with the .deb's runtime dependencies,
   from the mirror apt already uses (cached in the build directory), `docker import`ed.
3. A private dockerd (its own data/exec roots and socket, `--iptables=false --bridge=none`), and
   `docker build` of packaging/container/Dockerfile over that base: no registry, no network.
4. nfs-ganesha (NFSv4) on 127.0.0.1 exports a Nix store holding an "executor" program; the image
   runs as the README says (`--device /dev/fuse --cap-add SYS_ADMIN`, the cache on a volume,
   host network): the executor runs from /nix/store, `docker stop` (SIGTERM) ends it cleanly and
   the container's status is the executor's.
5. ganesha stopped, a new container on the same cache volume serves what the first one read,
   offline.
Prints the image's size."""

import concurrent.futures
import glob
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import unittest

SOURCE_ROOT = os.path.abspath(os.environ.get("SOURCE_ROOT", os.path.join(os.path.dirname(__file__), "..", "..")))
sys.path.insert(0, os.path.join(SOURCE_ROOT, "tests", "integration"))

import lazystore_testlib as lib  # noqa: E402
from nfs_server import Ganesha, wait_until  # noqa: E402

# What the .deb needs at run time, and what the entrypoint uses (bash, awk, setpriv are in minbase).
BASE_PACKAGES = ["fuse3", "libfuse3-3", "libnfs13", "libxxhash0", "libcurl4", "libssl3", "liblzma5",
                 "libzstd1", "libssh-4", "ca-certificates"]
BASE_VERSION = 1  # bump when the recipe changes: a cached base is rebuilt
DOCKER = "/usr/bin/docker"  # Debian's client, of the engine's own version


def apt_mirror():
    """The Debian mirror apt is configured with (deb822 .sources or sources.list)."""
    for path in sorted(glob.glob("/etc/apt/sources.list.d/*.sources")):
        with open(path) as f:
            for stanza in f.read().split("\n\n"):
                fields = dict(line.split(":", 1) for line in stanza.splitlines()
                              if ":" in line and not line.startswith("#"))
                suites = fields.get("Suites", "").split()
                if "deb" in fields.get("Types", "").split() and "bookworm" in suites:
                    return fields["URIs"].split()[0]
    if os.path.exists("/etc/apt/sources.list"):
        with open("/etc/apt/sources.list") as f:
            for line in f:
                words = line.split()
                if len(words) >= 3 and words[0] == "deb" and words[-2] != "bookworm-security":
                    return words[1] if not words[1].startswith("[") else words[2]
    raise AssertionError("no Debian mirror in apt's sources")


def base_rootfs_tar(cache_dir):
    """A debootstrap'ed Debian 12 as a tar, made once per build directory."""
    tar = os.path.join(cache_dir, f"debian12-base-v{BASE_VERSION}.tar")
    if os.path.exists(tar):
        return tar
    os.makedirs(cache_dir, exist_ok=True)
    root = tempfile.mkdtemp(dir=cache_dir, prefix="rootfs.")
    try:
        started = time.monotonic()
        lib.run(["timeout", "900", "debootstrap", "--variant=minbase", "--include=" + ",".join(BASE_PACKAGES),
                 "bookworm", root, apt_mirror()])
        for junk in ("usr/share/doc", "usr/share/man", "usr/share/locale", "var/cache/apt/archives",
                     "var/lib/apt/lists"):
            shutil.rmtree(os.path.join(root, junk), ignore_errors=True)
        lib.run(["tar", "-C", root, "--numeric-owner", "-cf", tar + ".tmp", "."])
        os.rename(tar + ".tmp", tar)
        lib.log(f"debootstrap base made in {time.monotonic() - started:.0f} s")
    finally:
        shutil.rmtree(root, ignore_errors=True)
    return tar


class Engine:
    """A private dockerd: its own roots and socket, no iptables, no bridge."""

    def __init__(self, work):
        self.root = os.path.join(work, "docker")
        os.makedirs(self.root)
        self.socket = os.path.join(self.root, "docker.sock")
        self.log_path = os.path.join(self.root, "dockerd.log")
        with open(self.log_path, "w") as log:
            self.process = subprocess.Popen(
                ["dockerd", "--iptables=false", "--ip-masq=false", "--bridge=none",
                 "--data-root", os.path.join(self.root, "data"), "--exec-root", os.path.join(self.root, "exec"),
                 "--pidfile", os.path.join(self.root, "dockerd.pid"), "-H", "unix://" + self.socket],
                stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT)
        wait_until(lambda: self.alive() and self.docker("info", check=False).returncode == 0, 60,
                       "dockerd answering")

    def alive(self):
        if self.process.poll() is not None:
            raise AssertionError(f"dockerd exited {self.process.returncode}:\n{self.log()}")
        return True

    def log(self):
        with open(self.log_path, errors="replace") as f:
            return f.read()[-3000:]

    def docker(self, *args, check=True, timeout=600):
        result = subprocess.run([DOCKER, "-H", "unix://" + self.socket, *args], stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True, timeout=timeout,
                                env=dict(os.environ, DOCKER_BUILDKIT="0", DOCKER_CONFIG=self.root))
        if check and result.returncode != 0:
            raise AssertionError(f"docker {' '.join(args)} exited {result.returncode}:\n"
                                 f"{result.stdout}\n{result.stderr}")
        return result

    def close(self):
        if self.process.poll() is None:
            self.docker("rm", "-f", *self.docker("ps", "-aq", check=False).stdout.split(), check=False)
            self.process.terminate()
            try:
                self.process.wait(timeout=60)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=30)
        # Whatever dockerd left mounted under its roots (it unmounts its own on a clean stop).
        with open("/proc/self/mountinfo") as f:
            left = [line.split()[4] for line in f if line.split()[4].startswith(self.root)]
        for mount in sorted(left, reverse=True):
            subprocess.run(["umount", "-l", mount], stderr=subprocess.DEVNULL)
        shutil.rmtree(self.root, ignore_errors=True)


EXECUTOR = """#!/bin/sh
# The "executor": runs a program of the store, then waits for SIGTERM like bb_runner would.
set -e
/nix/store/{tools}/bin/greet
sum=$(cksum < /nix/store/{tools}/share/blob)
echo "blob $sum"
trap 'echo "executor: SIGTERM"; exit 42' TERM
echo ready
while :; do sleep 0.1; done
"""

GREET = """#!/bin/sh
echo "hello from /nix/store"
"""


class ContainerImage(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        for tool in ("dockerd", DOCKER, "debootstrap", "ganesha.nfsd", "nix-store", "dpkg-buildpackage"):
            if shutil.which(tool) is None:
                lib.skip(f"no {tool}")
        cls.work = tempfile.mkdtemp(prefix="lazystore-container-")
        cls.build_root = os.environ.get("MESON_BUILD_ROOT", cls.work)
        cls.engine = None
        cls.ganesha = None
        try:
            cls.set_up()
        except BaseException:
            cls.tearDownClass()
            raise

    @classmethod
    def set_up(cls):
        # 1. The .deb, built and checked by the Debian package test, while 2. the base is
        # made: the compile needs the CPUs, debootstrap mostly waits for the mirror.
        debs = os.path.join(cls.work, "context")
        os.makedirs(debs)
        with concurrent.futures.ThreadPoolExecutor(max_workers=1) as pool:
            base = pool.submit(base_rootfs_tar, os.path.join(cls.build_root, "tests", "container-base"))
            subprocess.run(["bash", os.path.join(SOURCE_ROOT, "tests", "packaging", "debian_test.sh")],
                           check=True, env=dict(os.environ, DEB_OUT=debs), timeout=1500)
            tar = base.result(timeout=1000)
        for name in ("Dockerfile", "entrypoint.sh"):
            shutil.copy(os.path.join(SOURCE_ROOT, "packaging", "container", name), debs)
        # 3. The engine, the image.
        cls.engine = Engine(cls.work)
        cls.engine.docker("import", tar, "lazystore-test-base:1")
        started = time.monotonic()
        cls.engine.docker("build", "--build-arg", "BASE=lazystore-test-base:1", "-t", "lazystore-runner:test", debs,
                          timeout=900)
        lib.log(f"docker build took {time.monotonic() - started:.1f} s")
        size = int(cls.engine.docker("image", "inspect", "-f", "{{.Size}}", "lazystore-runner:test").stdout)
        base = int(cls.engine.docker("image", "inspect", "-f", "{{.Size}}", "lazystore-test-base:1").stdout)
        print(f"image lazystore-runner:test: {size / 2**20:.1f} MiB (base {base / 2**20:.1f} MiB, "
              f"lazystore layer {(size - base) / 2**20:.1f} MiB)", flush=True)
        # 4. A Nix store with the executor's tools, served by ganesha.
        store_root = os.path.join(cls.work, "server")
        nix = lib.NixStore(store_root, os.path.join(cls.work, "nix"))
        tools = os.path.join(cls.work, "tools")
        os.makedirs(os.path.join(tools, "bin"))
        os.makedirs(os.path.join(tools, "share"))
        lib._write(os.path.join(tools, "bin", "greet"), GREET.encode(), 0o755)
        lib._write(os.path.join(tools, "share", "blob"), lib.deterministic_bytes(7, 5 << 20))
        cls.tools = nix.add(tools)
        executor = os.path.join(cls.work, "executor")
        os.makedirs(os.path.join(executor, "bin"))
        lib._write(os.path.join(executor, "bin", "run"), EXECUTOR.format(tools=cls.tools).encode(), 0o755)
        cls.executor = nix.add(executor)
        cls.expected_sum = subprocess.run(["cksum"], input=lib.deterministic_bytes(7, 5 << 20),
                                          stdout=subprocess.PIPE, check=True).stdout.decode().strip()
        cls.ganesha = Ganesha.v4(os.path.join(store_root, "nix", "store"), os.path.join(cls.work, "ganesha"))

    @classmethod
    def tearDownClass(cls):
        if cls.engine is not None:
            cls.engine.close()
        if cls.ganesha is not None:
            cls.ganesha.close()
        shutil.rmtree(cls.work, ignore_errors=True)

    def run_container(self, name, *command, detach=True):
        return self.engine.docker(
            "run", *(["-d"] if detach else []), "--name", name, "--network", "host",
            "--device", "/dev/fuse", "--cap-add", "SYS_ADMIN",
            "-e", "LAZYSTORE_SOURCE=" + self.ganesha_url, "-e", "LAZYSTORE_OPTIONS=allow_other,upstream-timeout=5",
            "-v", "lazystore-cache:/var/cache/lazystore", "lazystore-runner:test", *command, check=not detach)

    def logs(self, name):
        result = self.engine.docker("logs", name, check=False)
        return result.stdout + result.stderr

    def test_run_stop_and_restart_offline(self):
        self.ganesha_url = self.ganesha.url(4)
        # The executor runs programs from /nix/store through lazystore.
        self.run_container("executor-1", f"/nix/store/{self.executor}/bin/run")
        wait_until(lambda: "ready" in self.logs("executor-1") or self.exited("executor-1"), 120,
                       "the executor ready")
        out = self.logs("executor-1")
        self.assertIn("hello from /nix/store", out)
        self.assertIn(f"blob {self.expected_sum}", out)
        self.assertIn("entrypoint: lazystore mounted at /nix/store", out)
        # SIGTERM (docker stop) reaches the executor; the container ends with its status.
        self.engine.docker("stop", "-t", "60", "executor-1", timeout=120)
        state = json.loads(self.engine.docker("inspect", "executor-1").stdout)[0]["State"]
        out = self.logs("executor-1")
        self.assertEqual(state["ExitCode"], 42, out)
        self.assertIn("executor: SIGTERM", out)
        self.assertNotIn("did not exit", out)
        self.assertNotIn("killing it", out)
        # The server goes away; a new container on the same volume serves from the cache.
        self.ganesha.kill()
        result = self.engine.docker(
            "run", "--rm", "--network", "host", "--device", "/dev/fuse", "--cap-add", "SYS_ADMIN",
            "-e", "LAZYSTORE_SOURCE=" + self.ganesha_url, "-e", "LAZYSTORE_OPTIONS=allow_other,upstream-timeout=2",
            "-v", "lazystore-cache:/var/cache/lazystore", "lazystore-runner:test",
            "sh", "-c", f"/nix/store/{self.tools}/bin/greet && cksum < /nix/store/{self.tools}/share/blob",
            check=False, timeout=300)
        self.assertEqual(result.returncode, 0, result.stdout + result.stderr)
        self.assertIn("hello from /nix/store", result.stdout)
        self.assertIn(self.expected_sum, result.stdout)

    def exited(self, name):
        state = json.loads(self.engine.docker("inspect", name).stdout)[0]["State"]
        if state["Status"] == "exited":
            raise AssertionError(f"{name} exited {state['ExitCode']}:\n{self.logs(name)}")
        return False


if __name__ == "__main__":
    if os.geteuid() != 0:
        lib.skip("not root")
    program = unittest.main(verbosity=2, exit=False)
    result = program.result
    if not result.wasSuccessful():
        sys.exit(1)
    if result.skipped:
        lib.skip("; ".join(why for _, why in result.skipped))
