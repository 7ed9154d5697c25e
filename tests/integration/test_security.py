#!/usr/bin/python3
"""The daemon's footprint, watched from outside with strace (-f: the supervisor and every
server it starts): it writes only below its cache directory (plus /dev/fuse and /dev/null), and
never follows a symlink of the upstream — an upstream whose store paths hold links to a secret
outside the store (absolute, relative, through a symlinked directory, loops, a store path that is
itself a link) shows the links as links, and the secret's bytes never reach the daemon or its
cache."""

import os
import re
import shutil
import subprocess
import tempfile

from lazystore_testlib import Daemon, LazystoreTestCase, main, read_file, regular_files, \
    tree_differences

SECRET = b"the secret outside the store\n"
# Calls that create, change or remove a file by path; their paths must be below the cache.
PATH_WRITES = ("mkdir", "mkdirat", "rename", "renameat", "renameat2", "unlink", "unlinkat",
               "link", "linkat", "symlink", "symlinkat", "truncate", "chmod", "fchmodat",
               "chown", "fchownat", "lchown", "bind", "mknod", "mknodat", "rmdir")
OPENS = ("open", "openat", "openat2", "creat")
WRITE_FLAGS = re.compile(r"O_WRONLY|O_RDWR|O_CREAT|O_TRUNC|O_APPEND")
RESULT_PATH = re.compile(r"= \d+<([^>]*)>$")
QUOTED = re.compile(r'"((?:[^"\\]|\\.)*)"')
CALL = re.compile(r"^(?:\[pid\s+\d+\]\s+|\d+\s+)?(\w+)\((.*)$")
FD_PATH = re.compile(r"^\d+<([^>]*)>, \"((?:[^\"\\]|\\.)*)\"")
KILLED = (r"lazystore: error: the server of .* was killed by signal 9",)


class TracedDaemon(Daemon):
    def __init__(self, trace, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.trace = trace

    def argv(self):
        calls = ",".join(OPENS + PATH_WRITES)
        # LeakSanitizer cannot run under ptrace: a sanitizer build checks leaks in the other tests.
        asan = ":".join(filter(None, [os.environ.get("ASAN_OPTIONS"), "detect_leaks=0"]))
        return ["env", f"ASAN_OPTIONS={asan}", "strace", "-f", "-y", "-qq", "-s", "4096", "-o", self.trace,
                "-e", f"trace={calls}", *super().argv()]

    def server_pid(self):  # strace → supervisor → server
        with open(f"/proc/{self.process.pid}/task/{self.process.pid}/children") as f:
            supervisor = int(f.read().split()[0])
        with open(f"/proc/{supervisor}/task/{supervisor}/children") as f:
            children = [int(p) for p in f.read().split()]
        return children[0] if children else None


class SecurityTest(LazystoreTestCase):

    def make_hostile_upstream(self):
        export = self.private_upstream("export")
        outside = os.path.join(self.work, "outside")
        os.makedirs(outside)
        secret = os.path.join(outside, "secret")
        with open(secret, "wb") as f:
            f.write(SECRET)
        links = "5" * 32 + "-links"
        top = os.path.join(export, links)
        os.makedirs(os.path.join(top, "sub"))
        os.symlink(secret, os.path.join(top, "absolute"))
        os.symlink(os.path.relpath(secret, os.path.join(top, "sub")), os.path.join(top, "sub", "relative"))
        os.symlink(outside, os.path.join(top, "dir-outside"))
        os.symlink("loop", os.path.join(top, "loop"))
        os.symlink("b", os.path.join(top, "a"))
        os.symlink("a", os.path.join(top, "b"))
        with open(os.path.join(top, "plain"), "wb") as f:
            f.write(b"an ordinary file\n")
        for root, dirs, files in os.walk(top):  # Nix's canonical modes
            for name in files:
                if not os.path.islink(os.path.join(root, name)):
                    os.chmod(os.path.join(root, name), 0o444)
            os.chmod(root, 0o555)
        whole = "6" * 32 + "-outside"
        os.symlink(outside, os.path.join(export, whole))  # a store path that is a link out
        return export, outside, links, whole

    def test_writes_only_below_the_cache_and_follows_no_upstream_symlink(self):
        export, outside, links, whole = self.make_hostile_upstream()
        # Short enough for the default control socket below it (a unix socket path is 107 bytes).
        cache = tempfile.mkdtemp(prefix="lzsec-")
        self.addCleanup(shutil.rmtree, cache, ignore_errors=True)
        mountpoint = os.path.join(self.work, "mnt")
        os.makedirs(mountpoint)
        trace = os.path.join(self.work, "strace.log")
        daemon = TracedDaemon(trace, export, mountpoint, cache, allowed_stderr=KILLED)
        self.daemons.append(daemon)
        daemon.start()

        # Through the mount: links are links; only the reader's own kernel may follow them.
        top = daemon.path(links)
        self.assertEqual(os.readlink(os.path.join(top, "loop")), "loop")
        self.assertEqual(os.readlink(os.path.join(top, "absolute")), os.path.join(outside, "secret"))
        self.assertTrue(os.path.islink(os.path.join(top, "dir-outside")))
        self.assertEqual(read_file(os.path.join(top, "plain")), b"an ordinary file\n")
        self.assertEqual(tree_differences(os.path.join(export, links), top), [])
        self.assertTrue(os.path.islink(daemon.path(whole)))
        misc = self.fixture.paths["misc"]
        for rel in regular_files(os.path.join(export, misc))[:40]:
            read_file(daemon.path(misc, rel))
        # A restart of the server under the trace (restore, reopen), then lazystore-ctl.
        daemon.wait_for_server(daemon.kill_server())
        self.assertEqual(read_file(os.path.join(top, "plain")), b"an ordinary file\n")
        for command in (["stats"], ["verify"], ["evict"]):
            subprocess.run([os.environ["LAZYSTORE_CTL_BIN"], "--cache", cache, *command],
                           check=True, capture_output=True, timeout=60)
        daemon.stop()

        problems, writes = self.check_trace(trace, cache, outside)
        self.assertEqual(problems[:20], [])
        self.assertGreater(writes, 0, "the trace saw no write at all: is it tracing the daemon?")
        for root, _, names in os.walk(cache):
            for name in names:
                path = os.path.join(root, name)
                if os.path.isfile(path) and not os.path.islink(path):
                    self.assertNotIn(SECRET, read_file(path), f"the secret reached {path}")

    @staticmethod
    def check_trace(trace, cache, outside):
        cache = os.path.realpath(cache)
        allowed_writes = (cache + "/", "/dev/fuse", "/dev/null", "/memfd:", "/dev/pts/")
        problems, writes = [], 0
        with open(trace, errors="replace") as f:
            for line in f:
                line = line.rstrip("\n")
                if outside in line:
                    problems.append(f"touched the outside: {line}")
                match = CALL.match(line)
                if not match:
                    continue
                call, rest = match.groups()
                if call in OPENS:
                    if not WRITE_FLAGS.search(rest):
                        continue
                    result = RESULT_PATH.search(rest)
                    if not result:
                        continue  # a failed open writes nothing
                    writes += 1
                    path = result.group(1)
                    if not (path + "/").startswith(allowed_writes) and not path.startswith(allowed_writes):
                        problems.append(f"opened for writing outside the cache: {line}")
                elif call in PATH_WRITES:
                    if call == "bind" and "sun_path" not in rest:
                        continue
                    paths = []
                    at = FD_PATH.match(rest)
                    if at:
                        paths.append(os.path.join(at.group(1), at.group(2)))
                    else:
                        paths += [p for p in QUOTED.findall(rest) if p.startswith("/")]
                    for path in paths:
                        writes += 1
                        if not path.startswith(cache + "/") and path != cache:
                            problems.append(f"{call} outside the cache: {line}")
        return problems, writes


if __name__ == "__main__":
    main()
