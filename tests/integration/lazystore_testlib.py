"""Shared helpers of the lazystore integration tests (and the benchmark).

- `fixture()` builds, once per build directory, a real Nix store with Debian's nix-bin
  (`nix-store --store local?root=DIR --add`), guarded by a file lock and a completion marker.
- `Daemon` runs `lazystore SOURCE MNT -f` with stderr captured to a file, waits for the mount in
  /proc/self/mountinfo and for its first answer (deadline, never a bare sleep), unmounts with
  `fusermount3 -u`, and fails on unexpected stderr lines (level "error", sanitizer reports,
  tracebacks, foreign lines).
- `LazystoreTestCase` gives each test a private work directory and unmounts whatever it mounted.

Environment: LAZYSTORE_BIN (the daemon), LAZYSTORE_FIXTURE_DIR (where the fixture store is cached;
default $MESON_BUILD_ROOT/tests/fixture-store, else /tmp/lazystore-fixture-store).
"""

import contextlib
import errno
import fcntl
import hashlib
import itertools
import json
import os
import random
import re
import signal
import shutil
import socket
import stat
import subprocess
import sys
import tempfile
import threading
import time
import unittest

MiB = 1 << 20

# Bump when the recipe below changes: a cached fixture with another version is rebuilt.
FIXTURE_VERSION = 3
NIX32 = "0123456789abcdfghijklmnpqrsvwxyz"


def log(message):
    print(message, file=sys.stderr, flush=True)


def run(argv, **kwargs):
    """Runs a command; on failure raises with its output, so the reason is in the test log."""
    result = subprocess.run(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **kwargs)
    if result.returncode != 0:
        raise RuntimeError(f"{' '.join(map(str, argv))} exited {result.returncode}:\n"
                           f"{result.stdout}\n{result.stderr}")
    return result.stdout


def random_hash(rng=random):
    return "".join(rng.choice(NIX32) for _ in range(32))


# ---------------------------------------------------------------------------------------------
# Ports, deadlines, processes (the one home: nfs_server, http_server, ssh_server, serve.py)
# ---------------------------------------------------------------------------------------------

def free_port():
    """A TCP port on 127.0.0.1 that nothing listens on (the kernel's choice); bind it soon."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def port_open(port, host="127.0.0.1"):
    """Whether something accepts TCP connections on host:port now."""
    try:
        with socket.create_connection((host, port), timeout=0.5):
            return True
    except OSError:
        return False


@contextlib.contextmanager
def takeover_mode(mode):
    """LAZYSTORE_TAKEOVER for the daemons started inside (they inherit the environment); None
    removes it."""
    before = os.environ.get("LAZYSTORE_TAKEOVER")
    if mode is None:
        os.environ.pop("LAZYSTORE_TAKEOVER", None)
    else:
        os.environ["LAZYSTORE_TAKEOVER"] = mode
    try:
        yield
    finally:
        if before is None:
            os.environ.pop("LAZYSTORE_TAKEOVER", None)
        else:
            os.environ["LAZYSTORE_TAKEOVER"] = before


def wait_until(predicate, deadline_seconds, what):
    """Polls predicate() until it is true; AssertionError naming `what` past the deadline."""
    deadline = time.monotonic() + deadline_seconds
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not within {deadline_seconds} s")
        time.sleep(0.05)  # polling interval, bounded by the deadline


# Shell: lazily unmounts, in the current mount namespace, every FUSE mount it holds. A server
# started in a new mount namespace (unshare --mount) gets a copy of every mount there is, other
# tests' FUSE mounts too, and a copy keeps its FUSE connection (and daemon) alive after that
# test's own unmount: such servers detach the copies at once.
DETACH_FUSE_MOUNTS = ("awk '{for (i = 7; i <= NF; i++) if ($i == \"-\") { if ($(i + 1) ~ /^fuse/) print $5; break }}' "
                      "/proc/self/mountinfo | while read -r m; do umount -l \"$m\"; done; ")


def _start_time(pid):
    """The start time of process pid (clock ticks since boot), or None when it is gone: with the
    pid it names one process, never a later one that reuses the pid."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return None if fields[0] == "Z" else int(fields[19])


def descendants(pid):
    """[(pid, start time)] of every living descendant of pid, children first."""
    found, queue = [], [pid]
    while queue:
        parent = queue.pop(0)
        try:
            tasks = os.listdir(f"/proc/{parent}/task")
        except OSError:
            continue
        for tid in tasks:
            try:
                with open(f"/proc/{parent}/task/{tid}/children") as f:
                    children = [int(c) for c in f.read().split()]
            except OSError:
                continue
            for child in children:
                started = _start_time(child)
                if started is not None:
                    found.append((child, started))
                    queue.append(child)
    return found


def terminate_processes(processes, deadline_seconds):
    """SIGTERM to each (pid, start time) still alive, SIGKILL to those left at the deadline;
    returns the pids still alive after that (none, normally)."""
    def alive():
        return [(pid, t) for pid, t in processes if _start_time(pid) == t]
    for sig in (signal.SIGTERM, signal.SIGKILL):
        for pid, _ in alive():
            try:
                os.kill(pid, sig)
            except OSError:
                pass
        deadline = time.monotonic() + deadline_seconds
        while alive() and time.monotonic() < deadline:
            time.sleep(0.02)  # polling interval, bounded by the deadline
        if not alive():
            return []
    return [pid for pid, _ in alive()]


def require_environment(daemon=True):
    """Exits 77 (meson's "skipped") when this machine cannot run the tests at all."""
    reasons = []
    if os.geteuid() != 0:
        reasons.append("not root")
    if not os.path.exists("/dev/fuse"):
        reasons.append("no /dev/fuse")
    for tool in ("nix-store", "fusermount3"):
        if shutil.which(tool) is None:
            reasons.append(f"no {tool}")
    binary = os.environ.get("LAZYSTORE_BIN", "")
    if daemon and (not binary or not os.access(binary, os.X_OK)):
        reasons.append(f"LAZYSTORE_BIN={binary!r} is not an executable")
    if reasons:
        skip("; ".join(reasons))


def strict():
    """In CI (CI=true) and under `tests/run.sh --strict` a skip is a failure: a missing install step."""
    return os.environ.get("LAZYSTORE_STRICT") == "1" or os.environ.get("CI") == "true"


def skip(reason):
    """Ends the test file as skipped (exit 77), or as failed (exit 1) when strict()."""
    if strict():
        log(f"FAIL: would skip in strict mode (CI): {reason}")
        sys.exit(1)
    log(f"SKIP: {reason}")
    sys.exit(77)


def main(daemon=True):
    """unittest.main for a test file. Without root/FUSE/nix/daemon the file skips (77); a test
    that skips inside it makes the whole file a skip, never a pass (and a failure when strict())."""
    require_environment(daemon)
    program = unittest.main(verbosity=2, exit=False)
    result = program.result
    if not result.wasSuccessful():
        sys.exit(1)
    if result.skipped:
        skip(", ".join(f"{test.id()}: {why}" for test, why in result.skipped))
    sys.exit(0)


# ---------------------------------------------------------------------------------------------
# The fixture store
# ---------------------------------------------------------------------------------------------

def fixture_dir():
    if os.environ.get("LAZYSTORE_FIXTURE_DIR"):
        return os.environ["LAZYSTORE_FIXTURE_DIR"]
    if os.environ.get("MESON_BUILD_ROOT"):
        return os.path.join(os.environ["MESON_BUILD_ROOT"], "tests", "fixture-store")
    return "/tmp/lazystore-fixture-store"


class Fixture:
    """A built fixture: `store` is the directory laid out like /nix/store, `paths` maps a role
    (include, python, misc, single_file, executable_file, symlink) to a store path base name."""

    def __init__(self, root, manifest):
        self.root = root
        self.store = os.path.join(root, "root", "nix", "store")
        self.paths = manifest["paths"]
        self.misc_files = manifest["misc_files"]
        self.build_seconds = manifest["build_seconds"]

    def path(self, role):
        return os.path.join(self.store, self.paths[role])

    def store_paths(self):
        """The valid store paths of the source (what the mount's top level must list)."""
        return set(self.paths.values())


class NixStore:
    """Debian's nix-bin without a daemon, as root, on a store under ROOT (files in ROOT/nix/store)."""

    def __init__(self, root, work):
        self.root = root
        conf = os.path.join(work, "nix-conf")
        os.makedirs(conf, exist_ok=True)
        with open(os.path.join(conf, "nix.conf"), "w") as f:
            f.write("build-users-group =\nsubstituters =\nexperimental-features = nix-command\n"
                    "sandbox = false\n")
        self.env = dict(os.environ, NIX_CONF_DIR=conf, HOME=work,
                        XDG_CACHE_HOME=os.path.join(work, "xdg-cache"),
                        XDG_CONFIG_HOME=os.path.join(work, "xdg-config"),
                        XDG_DATA_HOME=os.path.join(work, "xdg-data"))
        self.env.pop("NIX_REMOTE", None)

    def add(self, path):
        """`nix-store --add PATH`; returns the store path's base name."""
        out = run(["nix-store", "--store", f"local?root={self.root}", "--add", path], env=self.env)
        logical = out.strip().splitlines()[-1]
        assert logical.startswith("/nix/store/"), logical
        return os.path.basename(logical)


def deterministic_bytes(seed, size):
    return random.Random(seed).randbytes(size)


def _write(path, data, mode=0o644):
    with open(path, "wb") as f:
        f.write(data)
    os.chmod(path, mode)


def make_misc_tree(top, big_size=64 * MiB):
    """Files of every kind the mount must reproduce; returns {relative path: size}. big_size: the
    size of big.bin (the lab's emulated guest uses a smaller one)."""
    os.makedirs(top)
    files = {}

    def add_file(rel, data, mode=0o644):
        path = os.path.join(top, rel)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        _write(path, data, mode)
        files[rel] = len(data)

    add_file("big.bin", deterministic_bytes(1, big_size))           # 64 chunks of 1 MiB by default
    add_file("blobs/3m-plus.bin", deterministic_bytes(2, 3 * MiB + 12345))
    add_file("blobs/1m-exact.bin", deterministic_bytes(3, MiB))
    add_file("blobs/1m-minus-1.bin", deterministic_bytes(4, MiB - 1))
    add_file("blobs/2m-plus-1.bin", deterministic_bytes(5, 2 * MiB + 1))
    add_file("blobs/small-a.bin", deterministic_bytes(6, 4321))
    add_file("blobs/small-b.bin", deterministic_bytes(7, 777))
    add_file("blobs/small-c.bin", deterministic_bytes(8, 100000))
    add_file("blobs/unread.bin", deterministic_bytes(9, 200000))
    # Zero runs inside data: a sparse cache must not mistake them for holes (or holes for zeros).
    add_file("blobs/zeros-inside.bin",
             deterministic_bytes(10, MiB) + bytes(3 * MiB) + deterministic_bytes(11, 4096))
    add_file("blobs/all-zero.bin", bytes(2 * MiB + 7))
    add_file("bin/hello", b"#!/bin/sh\necho hello from the fixture\n", 0o755)
    add_file("bin/tool", deterministic_bytes(12, 50000), 0o755)
    add_file("share/empty-file", b"")
    add_file("share/empty-executable", b"", 0o755)
    add_file("share/one-byte", b"x")
    add_file("share/text with spaces.txt", b"spaces in names\n")
    add_file("share/unicodé-ñame.txt", "non-ASCII name\n".encode())
    add_file("share/" + "n" * 250, b"a 250-character file name\n")
    deep = "/".join(f"d{i}" for i in range(24))
    add_file(f"deep/{deep}/leaf.txt", b"deep leaf\n")
    os.makedirs(os.path.join(top, "empty-dir"))
    os.makedirs(os.path.join(top, "nested-empty/a/b/c"))
    links = os.path.join(top, "links")
    os.makedirs(links)
    os.symlink("../bin/hello", os.path.join(links, "relative"))
    os.symlink("/etc/hostname", os.path.join(links, "absolute"))
    os.symlink("/nix/store/00000000000000000000000000000000-nothing/x", os.path.join(links, "store-absolute"))
    os.symlink("does/not/exist", os.path.join(links, "dangling"))
    os.symlink("../share", os.path.join(links, "to-dir"))
    os.symlink("relative", os.path.join(links, "chain"))
    os.symlink("x" * 200, os.path.join(links, "long-target"))
    return files


_make_misc_tree = make_misc_tree  # its first name


def _build_fixture(root):
    started = time.monotonic()
    shutil.rmtree(root, ignore_errors=True)
    os.makedirs(root)
    stage = os.path.join(root, "stage")
    os.makedirs(stage)
    nix = NixStore(os.path.join(root, "root"), os.path.join(root, "nix-home"))
    paths = {}

    # 1. /usr/include: thousands of small files and symlinks.
    paths["include"] = nix.add("/usr/include")

    # 2. The Python stdlib without site/dist-packages and bytecode.
    pylib = os.path.join(stage, "python3.11-stdlib")
    shutil.copytree("/usr/lib/python3.11", pylib, symlinks=True,
                    ignore=shutil.ignore_patterns("site-packages", "dist-packages", "__pycache__"))
    paths["python"] = nix.add(pylib)

    # 3. Large files, executables, symlinks, empty files and directories.
    misc = os.path.join(stage, "lazystore-fixture-misc")
    misc_files = _make_misc_tree(misc)
    paths["misc"] = nix.add(misc)

    # 4. Single-file store paths (a plain file, an executable) and a symlink store path.
    single = os.path.join(stage, "hello.txt")
    _write(single, b"a single-file store path\n")
    paths["single_file"] = nix.add(single)
    script = os.path.join(stage, "run-me.sh")
    _write(script, b"#!/bin/sh\nexit 0\n", 0o755)
    paths["executable_file"] = nix.add(script)
    link = os.path.join(stage, "link-to-include")
    os.symlink(f"/nix/store/{paths['include']}/stdio.h", link)
    paths["symlink"] = nix.add(link)

    shutil.rmtree(stage)
    seconds = time.monotonic() - started
    manifest = {"version": FIXTURE_VERSION, "paths": paths, "misc_files": misc_files,
                "build_seconds": round(seconds, 2)}
    with open(os.path.join(root, "manifest.json"), "w") as f:
        json.dump(manifest, f, indent=1)
    # The completion marker is written last: its presence means everything above is there.
    with open(os.path.join(root, "complete"), "w") as f:
        f.write(f"{FIXTURE_VERSION}\n")
    log(f"fixture store built in {seconds:.1f} s at {root}")


def _fixture_complete(root):
    try:
        with open(os.path.join(root, "complete")) as f:
            if f.read().strip() != str(FIXTURE_VERSION):
                return None
        with open(os.path.join(root, "manifest.json")) as f:
            manifest = json.load(f)
    except (OSError, ValueError):
        return None
    store = os.path.join(root, "root", "nix", "store")
    if not all(os.path.lexists(os.path.join(store, p)) for p in manifest["paths"].values()):
        return None
    return manifest


_fixture = None


def fixture():
    """The fixture store, built on first use per build directory (file-locked, marker last)."""
    global _fixture
    if _fixture is None:
        root = fixture_dir()
        os.makedirs(os.path.dirname(root), exist_ok=True)
        with open(root + ".lock", "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            manifest = _fixture_complete(root)
            if manifest is None:
                _build_fixture(root)
                manifest = _fixture_complete(root)
                assert manifest is not None, "fixture incomplete right after building it"
        _fixture = Fixture(root, manifest)
    return _fixture


def copy_store(source, destination):
    """A private upstream a test may change: hard links (fast, same bytes), else a real copy."""
    try:
        run(["cp", "-al", source, destination])
    except RuntimeError:
        shutil.rmtree(destination, ignore_errors=True)
        run(["cp", "-a", source, destination])


# ---------------------------------------------------------------------------------------------
# Comparing trees
# ---------------------------------------------------------------------------------------------

def file_digest(path, block=MiB):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while True:
            data = f.read(block)
            if not data:
                break
            h.update(data)
    return h.hexdigest()


def describe_tree(top):
    """{relative path: (kind, mode bits, size, symlink target or sha256)} of a tree (or one file)."""
    entries = {}

    def describe(path, rel):
        st = os.lstat(path)
        kind = stat.S_IFMT(st.st_mode)
        perm = st.st_mode & 0o7777
        if stat.S_ISLNK(st.st_mode):
            entries[rel] = ("symlink", perm, None, os.readlink(path))
        elif stat.S_ISREG(st.st_mode):
            entries[rel] = ("file", perm, st.st_size, file_digest(path))
        elif stat.S_ISDIR(st.st_mode):
            names = sorted(os.listdir(path))
            entries[rel] = ("dir", perm, None, tuple(names))
            for name in names:
                describe(os.path.join(path, name), f"{rel}/{name}" if rel else name)
        else:
            entries[rel] = ("other", perm, kind, None)

    describe(top, "")
    return entries


def tree_differences(expected_top, actual_top, limit=20):
    """Human-readable differences between two trees (empty list when equal)."""
    expected = describe_tree(expected_top)
    actual = describe_tree(actual_top)
    problems = []
    for rel in sorted(set(expected) | set(actual)):
        if rel not in actual:
            problems.append(f"missing: {rel!r}")
        elif rel not in expected:
            problems.append(f"unexpected: {rel!r}")
        elif expected[rel] != actual[rel]:
            problems.append(f"differs: {rel!r}: expected {expected[rel]!r}, got {actual[rel]!r}")
        if len(problems) >= limit:
            problems.append("...")
            break
    return problems


def regular_files(top):
    """Relative paths of the regular files under top (top itself when it is a file)."""
    if stat.S_ISREG(os.lstat(top).st_mode):
        return [""]
    out = []
    for dirpath, _dirs, names in os.walk(top):
        for name in names:
            path = os.path.join(dirpath, name)
            if stat.S_ISREG(os.lstat(path).st_mode):
                out.append(os.path.relpath(path, top))
    return sorted(out)


def join(*parts):
    """os.path.join without the trailing slash an empty last part would add."""
    return os.path.join(*[p for p in parts if p])


def read_file(path):
    with open(path, "rb") as f:
        return f.read()


def drop_page_cache():
    with open("/proc/sys/vm/drop_caches", "w") as f:
        f.write("3\n")


# ---------------------------------------------------------------------------------------------
# The daemon
# ---------------------------------------------------------------------------------------------

def _mount_point_field(field):
    """A mountinfo mount point field, its octal escapes (\\040 for a space) undone."""
    return re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), field)


def mountinfo_entry(mountpoint):
    """The /proc/self/mountinfo fields of the mount at mountpoint, or None (no file system access)."""
    mountpoint = os.path.realpath(mountpoint)
    found = None
    with open("/proc/self/mountinfo") as f:
        for line in f:
            fields = line.split()
            point = _mount_point_field(fields[4])
            if point == mountpoint:
                sep = fields.index("-")
                found = {"options": fields[5].split(","), "fstype": fields[sep + 1],
                         "source": fields[sep + 2], "super_options": fields[sep + 3].split(","),
                         "id": fields[0], "device": fields[2]}
    return found  # the last one: the mount on top


def _mounts_of(device):
    """(pid, mount namespace, mount point) of each mount of the file system `device` that a
    process sees. A process's mountinfo depends only on its namespace and its root, so it is
    read once for each pair."""
    points_in = {}
    for entry in filter(str.isdigit, os.listdir("/proc")):
        try:
            namespace = os.readlink(f"/proc/{entry}/ns/mnt")
            view = (namespace, os.readlink(f"/proc/{entry}/root"))
            if view not in points_in:
                with open(f"/proc/{entry}/mountinfo") as f:
                    points_in[view] = [_mount_point_field(fields[4]) for fields in map(str.split, f)
                                       if fields[2] == device]
        except OSError:
            continue
        for point in points_in[view]:
            yield int(entry), namespace, point


def held_only_by_copies(connection, mountpoint):
    """Whether FUSE connection `connection` is mounted only in other mount namespaces, and
    there only at `mountpoint`: copies of a mount unmounted here. Connection numbers are reused
    at once, so a number alone may name another test's later mount, at another mount point (or
    here, in this namespace); that one must not be aborted."""
    own, point = os.readlink("/proc/self/ns/mnt"), os.path.realpath(mountpoint)
    mounts = [(namespace, at) for _pid, namespace, at in _mounts_of(f"0:{connection}")]
    return bool(mounts) and all(namespace != own and at == point for namespace, at in mounts)


def mount_namespace_holders(device):
    """Processes in another mount namespace that still have the file system `device` mounted (a
    namespace copied while it was mounted keeps it, and its FUSE connection, after the unmount)."""
    own = os.readlink("/proc/self/ns/mnt")
    return list(dict.fromkeys(pid for pid, namespace, _point in _mounts_of(device) if namespace != own))


def is_lazystore_mounted(mountpoint):
    entry = mountinfo_entry(mountpoint)
    return entry is not None and entry["fstype"].startswith("fuse")


FUSECTL = "/sys/fs/fuse/connections"


def fuse_connection(mountpoint):
    """The FUSE connection number of the mount at mountpoint (its device minor), or None."""
    entry = mountinfo_entry(mountpoint)
    if entry is None or not entry["fstype"].startswith("fuse"):
        return None
    major, minor = entry["device"].split(":")
    return int(minor) if major == "0" else None


def fuse_connection_alive(connection):
    """Whether the kernel still has FUSE connection `connection` (fusectl, mounted if need be)."""
    if not os.path.ismount(FUSECTL):
        subprocess.run(["mount", "-t", "fusectl", "fusectl", FUSECTL], stderr=subprocess.DEVNULL)
    return os.path.isdir(os.path.join(FUSECTL, str(connection)))


def abort_fuse_connection(connection):
    """Aborts FUSE connection `connection` (a number, or the mount point of a FUSE mount): what
    frees a reader stuck on a request nobody will answer; the mount is dead afterwards."""
    if isinstance(connection, str):
        connection = fuse_connection(connection)
        if connection is None:
            return False
    fuse_connection_alive(connection)  # mounts fusectl if need be
    with open(os.path.join(FUSECTL, str(connection), "abort"), "w") as f:
        f.write("1")
    return True


def wait_connection_gone(connection, deadline_seconds):
    """True once the connection is gone. Right after a successful unmount it lives on only where
    another mount namespace holds a copy of the mount (nix with a chroot store, `unshare --mount`,
    taken while the mount existed)."""
    deadline = time.monotonic() + deadline_seconds
    while fuse_connection_alive(connection):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.02)  # polling interval, bounded by the deadline
    return True


def daemon_processes(mountpoint, cache=None):
    """Pids of the running lazystore processes (LAZYSTORE_BIN) whose arguments name mountpoint
    (and that use `cache`, if given): a daemonized mount's supervisor and server, or its one
    unsupervised process. A process that set its title ("[supervisor] MOUNTPOINT", "[server N]
    MOUNTPOINT") keeps only the mountpoint of its arguments: a server's cache is known by the
    files it holds open there (its lock). A supervisor holds none: it counts unless its server
    uses another cache — also once its server has ended, while it ends the mount."""
    found = {}  # pid -> (parent pid, uses the cache, is a retitled supervisor)
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/cmdline", "rb") as f:
                argv = f.read().split(b"\0")
            with open(f"/proc/{entry}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if fields[0] == "Z" or not argv or argv[0] != os.environ["LAZYSTORE_BIN"].encode() or \
                mountpoint.encode() not in argv:
            continue
        uses = cache is None or any(f"cache={cache}".encode() in arg.split(b",") for arg in argv)
        if not uses:
            try:
                fds = os.listdir(f"/proc/{entry}/fd")
            except OSError:
                fds = []
            for fd in fds:
                try:
                    target = os.readlink(f"/proc/{entry}/fd/{fd}")
                except OSError:
                    continue
                if target.startswith(cache.rstrip("/") + "/"):
                    uses = True
                    break
        found[int(entry)] = (int(fields[1]), uses, argv[1:2] == [b"[supervisor]"])
    users = {pid for pid, (_, uses, _) in found.items() if uses}
    for pid, (_, uses, supervisor) in found.items():
        children = [child for child, (parent, _, _) in found.items() if parent == pid]
        if supervisor and not uses and all(found[child][1] for child in children):
            users.add(pid)
    return sorted(users)


def remove_work_dir(work, mount_prefix="mnt"):
    """Lazily unmounts the lazystore mounts left in `work` (those named mount_prefix*), then
    removes it: the last cleanup of a benchmark's private directory."""
    for name in os.listdir(work):
        if name.startswith(mount_prefix) and is_lazystore_mounted(os.path.join(work, name)):
            subprocess.run(["fusermount3", "-u", "-z", os.path.join(work, name)])
    shutil.rmtree(work, ignore_errors=True)


def dead_fuse_mount(mountpoint, fstype="fuse.lazystore", source="dead-daemon"):
    """Leaves a dead FUSE mount at mountpoint, as a daemon killed together with its fusermount3
    does: mount(2) on a fresh /dev/fuse, then close it (stat then answers ENOTCONN)."""
    import ctypes
    libc = ctypes.CDLL(None, use_errno=True)
    fd = os.open("/dev/fuse", os.O_RDWR | os.O_CLOEXEC)
    try:
        options = f"fd={fd},rootmode=40000,user_id=0,group_id=0".encode()
        if libc.mount(source.encode(), mountpoint.encode(), fstype.encode(), 0, options) != 0:
            code = ctypes.get_errno()
            raise OSError(code, f"mount {fstype} on {mountpoint}: {os.strerror(code)}")
    finally:
        os.close(fd)


def parent_pid(pid):
    with open(f"/proc/{pid}/stat") as f:
        return int(f.read().rsplit(")", 1)[1].split()[1])


# Lines a daemon may print on stderr: its own log lines below level error.
_ALLOWED_LINE = re.compile(r"^lazystore: (warning|info|debug): ")
# Always a failure, whatever a test allows.
_FATAL_LINE = re.compile(r"Sanitizer|runtime error:|Traceback|terminate called|Assertion .* failed"
                         r"|Segmentation fault|core dumped|stack-use|heap-use|double free")


_stderr_serial = itertools.count(1)


def _stat_quietly(path):
    try:
        os.stat(path)
    except OSError:
        pass  # the daemon failed: Daemon.start reports it from its exit


class DaemonError(AssertionError):
    pass


def describe_stuck_process(pid):
    """What a process that should have exited (and its children) is doing: each thread's state
    and kernel wait channel, and the user-space stacks (gdb, bounded)."""
    lines = []
    pids = [pid]
    try:
        with open(f"/proc/{pid}/task/{pid}/children") as f:
            pids += [int(p) for p in f.read().split()]
    except OSError:
        pass
    for p in pids:
        try:
            tasks = sorted(os.listdir(f"/proc/{p}/task"), key=int)
        except OSError:
            continue
        for tid in tasks:
            def read(name):
                try:
                    with open(f"/proc/{p}/task/{tid}/{name}") as f:
                        return f.read().strip()
                except OSError:
                    return "?"
            state = read("stat").rsplit(")", 1)[-1].split()[:1]
            lines.append(f"  pid {p} tid {tid} {read('comm')}: {' '.join(state)} wchan={read('wchan')}")
        if shutil.which("gdb"):
            try:
                out = subprocess.run(["gdb", "-batch", "-nx", "-p", str(p), "-ex", "thread apply all bt 12"],
                                     stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                     timeout=60).stdout
                lines += ["  " + l for l in out.splitlines() if l.startswith(("#", "Thread"))][:200]
            except subprocess.TimeoutExpired:
                lines.append("  (gdb timed out)")
    return "\n".join(lines)


class Daemon:
    """One lazystore process in the foreground, its stderr in a file."""

    START_DEADLINE = 30.0
    STOP_DEADLINE = 30.0

    def __init__(self, source, mountpoint, cache, options=None, log_level="info",
                 allowed_stderr=(), extra_args=()):
        real = os.path.realpath(mountpoint)
        if real == "/nix/store" or real.startswith("/nix/store/"):
            raise ValueError("the tests never mount on the host's /nix/store")
        self.source = source
        self.mountpoint = mountpoint
        self.cache = cache
        self.options = {"cache": cache, "log-level": log_level}
        self.options.update(options or {})
        self.allowed = [re.compile(p) for p in allowed_stderr]
        self.extra_args = list(extra_args)
        self.process = None
        self.stderr_path = None
        self.generation = 0
        self.device = None  # "major:minor" of the mounted file system

    def argv(self):
        opts = ",".join(k if v is None else f"{k}={v}" for k, v in self.options.items())
        return [os.environ["LAZYSTORE_BIN"], self.source, self.mountpoint, "-f", "-o", opts,
                *self.extra_args]

    def start(self):
        assert self.process is None, "already running"
        if is_lazystore_mounted(self.mountpoint):
            raise DaemonError(f"{self.mountpoint} is already a mount point")
        self.generation += 1
        # Unique per start, also across Daemon objects on one cache: a process of an earlier
        # start (its unmount guard) may still write to its own file.
        self.stderr_path = f"{self.cache}.stderr.{next(_stderr_serial)}.{self.generation}"
        with open(self.stderr_path, "wb") as err, open(os.devnull, "rb") as null:
            self.process = subprocess.Popen(self.argv(), stdin=null, stdout=err, stderr=err,
                                            close_fds=True)
        deadline = time.monotonic() + self.START_DEADLINE
        while not is_lazystore_mounted(self.mountpoint):
            if self.process.poll() is not None:
                code = self.process.returncode
                self.process = None
                raise DaemonError(f"lazystore exited {code} before mounting:\n{self.stderr()}")
            if time.monotonic() > deadline:
                self.kill()
                raise DaemonError(f"not mounted after {self.START_DEADLINE} s:\n{self.stderr()}")
            time.sleep(0.01)  # polling interval, bounded by the deadline above
        # A supervised mount exists before its server does: the first stat waits for the server
        # to answer, and then its control socket listens too (it is opened before it serves).
        answered = threading.Thread(target=_stat_quietly, args=(self.mountpoint,), daemon=True)
        answered.start()
        answered.join(max(0.0, deadline - time.monotonic()))
        if answered.is_alive():
            self.kill()
            raise DaemonError(f"mounted, but not answering after {self.START_DEADLINE} s:\n{self.stderr()}")
        self.device = (mountinfo_entry(self.mountpoint) or {}).get("device")
        return self

    def stderr(self):
        try:
            with open(self.stderr_path, "rb") as f:
                return f.read().decode(errors="replace")
        except (OSError, TypeError):
            return ""

    def unexpected_stderr(self):
        bad = []
        for line in self.stderr().splitlines():
            if not line.strip():
                continue
            if _FATAL_LINE.search(line):
                bad.append(line)
            elif _ALLOWED_LINE.match(line):
                continue
            elif any(p.search(line) for p in self.allowed):
                continue
            else:
                bad.append(line)
        return bad

    def stop(self, check=True):
        """fusermount3 -u, wait for the process to exit (deadline), check exit status and stderr."""
        if self.process is None:
            return
        problems = []
        connection = fuse_connection(self.mountpoint)
        if is_lazystore_mounted(self.mountpoint):
            result = subprocess.run(["fusermount3", "-u", self.mountpoint],
                                    stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
            if result.returncode != 0:
                problems.append(f"fusermount3 -u failed: {result.stdout.strip()}")
            elif connection is not None and not wait_connection_gone(connection, 2.0) and \
                    held_only_by_copies(connection, self.mountpoint):
                # A copy of the mount in another process's mount namespace keeps the connection,
                # so the kernel never tells the daemon the mount ended: end it for them.
                log(f"FUSE connection {connection} outlived the unmount of {self.mountpoint} "
                    "(a copy in another mount namespace): aborting it")
                abort_fuse_connection(connection)
        try:
            code = self.process.wait(timeout=self.STOP_DEADLINE)
        except subprocess.TimeoutExpired:
            problems.append(f"daemon still running {self.STOP_DEADLINE} s after fusermount3 -u:\n"
                            + describe_stuck_process(self.process.pid))
            self.kill()
            code = None
        self.process = None
        if is_lazystore_mounted(self.mountpoint):
            subprocess.run(["fusermount3", "-u", "-z", self.mountpoint], stderr=subprocess.DEVNULL)
        if code is not None and code != 0:
            problems.append(f"daemon exited with status {code} after a clean unmount")
        bad = self.unexpected_stderr()
        if bad:
            problems.append("unexpected daemon stderr lines:\n  " + "\n  ".join(bad[:30]))
        if problems and check:
            raise DaemonError("; ".join(problems) + f"\n--- daemon stderr ---\n{self.stderr()[-6000:]}")
        return problems

    def kill(self):
        """Emergency stop of our own process (by its pid), then a lazy unmount."""
        if self.process is not None:
            self.process.kill()
            try:
                self.process.wait(timeout=self.STOP_DEADLINE)
            except subprocess.TimeoutExpired:
                pass
            self.process = None
        if is_lazystore_mounted(self.mountpoint):
            subprocess.run(["fusermount3", "-u", "-z", self.mountpoint], stderr=subprocess.DEVNULL)

    def server_pid(self):
        """The process that serves requests: the supervisor's child (None while none runs)."""
        pid = self.process.pid
        with open(f"/proc/{pid}/task/{pid}/children") as f:
            children = [int(p) for p in f.read().split()]
        return children[0] if children else None

    def serving_pid(self):
        """The process that answers requests (and holds the caches): the supervisor's server, or
        the daemon itself with supervise=false. What RSS figures must be taken of."""
        return self.server_pid() or self.process.pid

    def kill_server(self):
        """SIGKILL of the serving process only (the supervisor starts another); its pid."""
        pid = self.server_pid()
        if pid is None:
            raise DaemonError("no server process to kill")
        os.kill(pid, signal.SIGKILL)
        return pid

    def wait_for_server(self, not_pid, deadline=30.0):
        """Waits until a server other than `not_pid` runs; returns its pid."""
        end = time.monotonic() + deadline
        while time.monotonic() < end:
            pid = self.server_pid()
            if pid is not None and pid != not_pid:
                return pid
            time.sleep(0.01)  # polling interval, bounded by the deadline
        raise DaemonError(f"no new server {deadline} s after the old one died:\n{self.stderr()}")

    def stats(self):
        raw = os.getxattr(self.mountpoint, "user.lazystore.stats")
        return json.loads(raw.decode())

    def path(self, *parts):
        return join(self.mountpoint, *parts)


def cached_bytes(path):
    return int(os.getxattr(path, "user.lazystore.cached").decode().strip())


def executor_argv(mountpoint, argv, chdir="/"):
    """argv as a build executor runs it: the rest of the host as it is, the mount at /nix/store
    (over a tmpfs /nix, so the host's own /nix is never seen)."""
    return ["bwrap", "--dev-bind", "/", "/", "--tmpfs", "/nix", "--bind", mountpoint, "/nix/store",
            "--chdir", chdir, "--", *argv]


class FuseProcess:
    """Another FUSE program in the foreground (a benchmark peer: sshfs, rclone mount), our child,
    its output in log_path: started and awaited in /proc/self/mountinfo (deadline), stopped with
    `fusermount3 -u` (then a lazy unmount if it has to be killed)."""

    DEADLINE = 30.0

    def __init__(self, argv, mountpoint, log_path, env=None):
        self.argv, self.mountpoint, self.log_path, self.env = list(argv), mountpoint, log_path, env
        self.process = None

    def start(self):
        assert self.process is None, "already running"
        if mountinfo_entry(self.mountpoint) is not None:
            raise RuntimeError(f"{self.mountpoint} is already a mount point")
        with open(self.log_path, "ab") as out:
            self.process = subprocess.Popen(self.argv, stdin=subprocess.DEVNULL, stdout=out, stderr=out,
                                            env=self.env)

        def up():
            if self.process.poll() is not None:
                raise RuntimeError(f"{self.argv[0]} exited {self.process.returncode}: {self.tail()}")
            return mountinfo_entry(self.mountpoint) is not None
        try:
            wait_until(up, self.DEADLINE, f"{self.argv[0]} mounted at {self.mountpoint}")
        except BaseException:
            self.stop()
            raise
        return self

    def tail(self, size=1500):
        try:
            with open(self.log_path, errors="replace") as f:
                return f.read()[-size:]
        except OSError:
            return ""

    def stop(self):
        """Unmounts and waits for the program (deadline); its exit status (None: killed)."""
        if self.process is None:
            return None
        if mountinfo_entry(self.mountpoint) is not None:
            subprocess.run(["fusermount3", "-u", self.mountpoint], stderr=subprocess.DEVNULL)
        try:
            code = self.process.wait(timeout=self.DEADLINE)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout=self.DEADLINE)
            code = None
        if mountinfo_entry(self.mountpoint) is not None:
            subprocess.run(["fusermount3", "-u", "-z", self.mountpoint], stderr=subprocess.DEVNULL)
        self.process = None
        return code


# ---------------------------------------------------------------------------------------------
# Test case base
# ---------------------------------------------------------------------------------------------

class LazystoreTestCase(unittest.TestCase):
    """A private work directory per test; every daemon started through `mount` is stopped (and
    its stderr checked) at the end of the test, also when the test failed."""

    maxDiff = 4000

    @classmethod
    def setUpClass(cls):
        started = time.monotonic()
        cls.fixture = fixture()
        seconds = time.monotonic() - started
        if seconds > 1:
            log(f"fixture ready after {seconds:.1f} s")

    def setUp(self):
        base = os.environ.get("LAZYSTORE_TEST_TMP") or None
        self.work = tempfile.mkdtemp(prefix=f"lazystore-it-{self._testMethodName}-", dir=base)
        self.daemons = []
        self.started = time.monotonic()
        self.addCleanup(self._cleanup)

    def _cleanup(self):
        log(f"[{self._testMethodName}: {time.monotonic() - self.started:.1f} s]")
        problems = []
        for daemon in self.daemons:
            if daemon.process is not None:
                problems += daemon.stop(check=False) or []
            notable = [line for line in daemon.stderr().splitlines()
                       if line.strip() and not line.startswith("lazystore: info: ")]
            if notable:
                log(f"[{self._testMethodName}: daemon stderr, last start, without info lines]\n  "
                    + "\n  ".join(notable[-40:]))
        for daemon in self.daemons:
            daemon.kill()
        if not any(is_lazystore_mounted(d.mountpoint) for d in self.daemons):
            shutil.rmtree(self.work, ignore_errors=True)
        else:
            log(f"leaving {self.work}: still mounted")
        if problems:
            self.fail("daemon problems: " + "; ".join(problems) + "\n--- daemon stderr ---\n"
                      + "\n".join(d.stderr()[-4000:] for d in self.daemons))

    def private_upstream(self, name="upstream"):
        destination = os.path.join(self.work, name)
        copy_store(self.fixture.store, destination)
        return destination

    def mount(self, source=None, options=None, cache=None, mountpoint=None, allowed_stderr=(),
              start=True):
        mountpoint = mountpoint or os.path.join(self.work, "mnt")
        cache = cache or os.path.join(self.work, "cache")
        os.makedirs(mountpoint, exist_ok=True)
        daemon = Daemon(source or self.fixture.store, mountpoint, cache, options,
                        allowed_stderr=allowed_stderr)
        self.daemons.append(daemon)
        if start:
            daemon.start()
        return daemon

    def assertErrno(self, expected, function, *args, **kwargs):
        """function(*args) must fail with OSError whose errno is in expected (int or tuple)."""
        expected = expected if isinstance(expected, tuple) else (expected,)
        try:
            result = function(*args, **kwargs)
        except OSError as e:
            if e.errno not in expected:
                self.fail(f"{function.__name__}{args}: expected "
                          f"{'/'.join(errno.errorcode[x] for x in expected)}, got "
                          f"{errno.errorcode.get(e.errno, e.errno)} ({e})")
            return e
        self.fail(f"{function.__name__}{args}: expected "
                  f"{'/'.join(errno.errorcode[x] for x in expected)}, but it succeeded ({result!r})")
