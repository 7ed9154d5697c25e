#!/usr/bin/python3
"""lazystore against the ways an executor could otherwise get its Nix store — one suite, one run.

Entry point: tests/bench/run.sh (see README.md here and the top-level README's "Benchmarks").

Every server (ganesha, nginx, sshd) is reached through a delay line (delay_line.c) at each round
trip of --rtt: every system pays the same wire. Cold runs at every round trip, disk-warm and hot at
the first (their time does not depend on the wire for lazystore; sshfs and rclone pay it).

Systems (each sees the same export directory of hard-linked store paths):
  native             the export directory itself (the limit)
  lazystore NFS      lazystore over nfs-ganesha NFSv4 on 127.0.0.1 (libnfs)
  lazystore HTTP     lazystore over nginx on 127.0.0.1 serving a signed Nix binary cache of the same
                     store paths (`nix copy --to file://…?compression=none&write-nar-listing=true`)
  sshfs              sshfs 3.7 over a private sshd on 127.0.0.1, default options
  sshfs cached       the same with -o kernel_cache and 1 h entry/attr/dcache timeouts
  rclone             `rclone mount --vfs-cache-mode full` of an sftp remote on the same sshd
Workloads: W1 find+stat, W2 gcc, W3 python imports, W4 sequential / random 4 KiB reads,
W5 bytes sent by the server for W2/W3 (cold). States: cold, disk-warm, hot.
"""

import argparse
import json
import os
import re
import shlex
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
SOURCE_ROOT = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, os.path.join(HERE, "..", "integration"))
sys.path.insert(0, HERE)
import delay_line  # noqa: E402
import http_server  # noqa: E402
import lazystore_testlib as lib  # noqa: E402
import nfs_server  # noqa: E402
import suite_store  # noqa: E402
import suite_report  # noqa: E402

DEFAULT_BIN = os.path.join(SOURCE_ROOT, "build", "fuse", "lazystore")
STATES = ("cold", "disk-warm", "hot")
# Workloads also run cold with a profile, as an executor's entrypoint would: on a fresh mount with
# an empty cache, `lazystore-ctl prefetch --from` of the files an earlier cold run read
# (`lazystore-ctl reads`), then at once the workload, whose reads meet the prefetch's fetches
# under way. Timed from the prefetch's start to the workload's end.
PROFILED = ("W2", "W3")
RUN_TIMEOUT = 300

HEADERS = """assert.h complex.h ctype.h errno.h fenv.h float.h inttypes.h limits.h locale.h math.h
setjmp.h signal.h stdarg.h stdatomic.h stdbool.h stddef.h stdint.h stdio.h stdlib.h string.h
tgmath.h threads.h time.h uchar.h wchar.h wctype.h pthread.h unistd.h fcntl.h dirent.h dlfcn.h
getopt.h glob.h grp.h pwd.h regex.h sched.h search.h semaphore.h spawn.h syslog.h termios.h
netdb.h ifaddrs.h arpa/inet.h netinet/in.h netinet/tcp.h sys/socket.h sys/stat.h sys/types.h
sys/mman.h sys/wait.h sys/time.h sys/resource.h sys/epoll.h sys/ioctl.h sys/uio.h sys/un.h
sys/utsname.h sys/select.h poll.h linux/fs.h linux/netlink.h linux/if_link.h""".split()

MODULES = """abc argparse ast asyncio base64 bisect bz2 calendar collections concurrent.futures
configparser contextlib copy csv dataclasses datetime decimal difflib email.message
email.parser enum fnmatch fractions functools gettext glob gzip hashlib heapq hmac html.parser
http.client inspect io ipaddress itertools json logging lzma multiprocessing operator pathlib
pickle pprint queue random re shutil socket sqlite3 ssl statistics string subprocess tarfile
tempfile textwrap threading tokenize traceback typing unittest urllib.request uuid
xml.etree.ElementTree zipfile""".split()[:50]

RANDREAD_C = r"""
#define _GNU_SOURCE
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>
int main(int argc, char **argv) {
  int fd = open(argv[1], O_RDONLY);
  if (fd < 0) { perror(argv[1]); return 1; }
  struct stat st; fstat(fd, &st);
  long n = atol(argv[2]); uint64_t x = 88172645463325252ull, blocks = st.st_size / 4096;
  char buf[4096];
  for (long i = 0; i < n; i++) {
    x ^= x << 13; x ^= x >> 7; x ^= x << 17;
    if (pread(fd, buf, sizeof buf, (off_t)(x % blocks) * 4096) != sizeof buf) { perror("pread"); return 1; }
  }
  return 0;
}
"""


def drop_caches():
    """Dirty pages (a cache just written) survive drop_caches: write them back first."""
    os.sync()
    lib.drop_page_cache()


def counter_delta(before, after):
    return {k: after[k] - before.get(k, 0) for k in after if isinstance(after[k], int) and after[k] != before.get(k, 0)}


def loadavg():
    return "{:.2f} {:.2f} {:.2f}".format(*os.getloadavg())


def is_mounted(mountpoint):
    return lib.mountinfo_entry(mountpoint) is not None


def server_bytes_sent(port):
    """TCP payload bytes sent by the server side of every established connection on `port`
    (tcp_info bytes_sent from `ss -ti`): what went over loopback, framing and encryption included."""
    out = subprocess.run(["ss", "-tinH", "state", "established", f"( sport = :{port} )"],
                         capture_output=True, text=True).stdout
    return sum(int(m) for m in re.findall(r"\bbytes_sent:(\d+)", out))


# ---------------------------------------------------------------------------------------------
# Systems
# ---------------------------------------------------------------------------------------------

class FuseProcess:
    """A FUSE daemon of a peer in the foreground (our child), mounted at mountpoint."""

    def __init__(self, argv, mountpoint, log_path, env=None):
        self.argv, self.mountpoint, self.log_path, self.env = argv, mountpoint, log_path, env
        self.process = None

    def start(self):
        assert self.process is None and not is_mounted(self.mountpoint)
        self.log = open(self.log_path, "ab")
        self.process = subprocess.Popen(self.argv, stdin=subprocess.DEVNULL, stdout=self.log,
                                        stderr=self.log, env=self.env)

        def up():
            if self.process.poll() is not None:
                raise RuntimeError(f"{self.argv[0]} exited {self.process.returncode}: {self.tail()}")
            return is_mounted(self.mountpoint)
        nfs_server.wait_until(up, 30, f"{self.argv[0]} mounted")

    def tail(self):
        try:
            with open(self.log_path, errors="replace") as f:
                return f.read()[-1500:]
        except OSError:
            return ""

    def stop(self):
        if self.process is None:
            return
        if is_mounted(self.mountpoint):
            subprocess.run(["fusermount3", "-u", self.mountpoint], stderr=subprocess.DEVNULL)
        try:
            self.process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout=15)
        if is_mounted(self.mountpoint):
            subprocess.run(["fusermount3", "-u", "-z", self.mountpoint], stderr=subprocess.DEVNULL)
        self.process = None
        self.log.close()


class System:
    key = name = ""
    persistent = False  # keeps a disk cache across restarts (else disk-warm == cold by construction)
    port = None         # the server port whose bytes_sent counts this system's transfers
    unavailable = None  # reason, when the system cannot run at all

    def start(self, fresh):
        pass

    def stop(self):
        pass

    def upstream_bytes(self):
        return None

    def server_bytes(self):
        """What the server sent so far (None: not measured)."""
        return server_bytes_sent(self.port) if self.port else None

    def close(self):
        pass


class Native(System):
    key, name = "native", "native"

    def __init__(self, export):
        self.root = export


def mountpoint(work, key, rtt):
    path = os.path.join(work, f"mnt-{key}-{rtt:g}ms")
    os.makedirs(path, exist_ok=True)
    return path


class Lazystore(System):
    """lazystore on `source`, its own mount point and cache under work."""
    persistent = True

    def __init__(self, work, source, rtt, options=None):
        self.root = mountpoint(work, self.key, rtt)
        self.cache = os.path.join(work, f"cache-{self.key}")
        self.source = source
        self.options = dict(options or {}, **{"log-level": "warning"})
        self.daemon = None
        self.problems = []

    def start(self, fresh):
        if fresh:
            shutil.rmtree(self.cache, ignore_errors=True)
        self.daemon = lib.Daemon(self.source, self.root, self.cache, self.options)
        self.daemon.start()

    def stop(self):
        if self.daemon is not None:
            problems = self.daemon.stop(check=False)
            if problems:
                self.problems += problems
                lib.log(f"{self.name}: " + "; ".join(problems))
            self.daemon = None

    def upstream_bytes(self):
        return self.counters()["upstream_bytes"]

    @staticmethod
    def ctl_bin():
        return os.path.join(os.path.dirname(os.environ["LAZYSTORE_BIN"]), "lazystore-ctl")

    def ctl(self, *args):
        return lib.run([self.ctl_bin(), "--cache", self.cache, *args])

    def counters(self):
        raw = lib.run(["getfattr", "--only-values", "--absolute-names", "-n", "user.lazystore.stats", self.root])
        return json.loads(raw)


class LazystoreNfs(Lazystore):
    key, name = "lazystore-nfs", "lazystore NFS"

    def __init__(self, work, ganesha, lines, rtt):
        super().__init__(work, ganesha.url(4, nfsport=lines.port(ganesha.port, rtt)), rtt)
        self.port = ganesha.port


class LazystoreHttp(Lazystore):
    """lazystore over a signed Nix binary cache (compression none, `.ls` listings) behind nginx:
    the cache (`nix copy --to file://…`) holds the same store paths as the export."""
    key, name = "lazystore-http", "lazystore HTTP"

    def __init__(self, work, nginx, public_key, lines, rtt):
        self.nginx = nginx
        super().__init__(work, f"http://127.0.0.1:{lines.port(nginx.port, rtt)}", rtt,
                         {"trusted-public-keys": public_key})

    def server_bytes(self):
        return self.nginx.bytes_served()  # $body_bytes_sent of every request


def make_binary_cache(work, stores):
    """A signed binary cache of every (store root, [base names]) in `stores`, as `nix copy
    --to file://DIR?compression=none&write-nar-listing=true` makes it, with lazystore-publish's
    signed manifests; (DIR, public key)."""
    nix_env = lib.NixStore(stores[0][0], os.path.join(work, "nix-home")).env
    secret, public = os.path.join(work, "cache-key.sec"), os.path.join(work, "cache-key.pub")
    lib.run(["nix-store", "--generate-binary-cache-key", "lazystore-bench-1", secret, public], env=nix_env)
    directory = os.path.join(work, "binary-cache")
    for root, names in stores:
        lib.run(["nix", "copy", "--no-check-sigs", "--to",
                 f"file://{directory}?compression=none&write-nar-listing=true&secret-key={secret}",
                 "--from", f"local?root={root}", *[f"/nix/store/{n}" for n in names]], env=nix_env)
    # Signed block manifests: what makes verified reads lazy (without them a signed cache is read
    # as whole NARs, checked against NarHash).
    publish = os.environ.get("LAZYSTORE_PUBLISH") or os.path.join(
        os.path.dirname(os.path.dirname(os.environ["LAZYSTORE_BIN"])), "push", "lazystore-publish")
    lib.log(lib.run([publish, "--secret-key", secret, directory]).strip().splitlines()[-1])
    with open(public) as f:
        return directory, f.read().strip()


class Sshfs(System):
    persistent = False

    def __init__(self, key, name, work, sshd, export, extra, lines, rtt):
        self.key, self.name = key, name
        self.root = mountpoint(work, key, rtt)
        self.port = sshd.port
        options = sshd.sshfs_options().replace(f"port={sshd.port},", f"port={lines.port(sshd.port, rtt)},")
        self.options = options + ("," + extra if extra else "")
        self.fuse = FuseProcess(["sshfs", f"root@127.0.0.1:{export}", self.root, "-f", "-F", "/dev/null",
                                 "-o", self.options], self.root, os.path.join(work, f"{key}.log"))

    def start(self, fresh):
        self.fuse.start()

    def stop(self):
        self.fuse.stop()


class Rclone(System):
    key, name, persistent = "rclone", "rclone vfs full", True

    def __init__(self, work, sshd, export, lines, rtt):
        self.root = mountpoint(work, self.key, rtt)
        self.cache = os.path.join(work, "cache-rclone")
        self.port = sshd.port
        self.fuse = None
        if shutil.which("rclone") is None:
            self.unavailable = "rclone not installed (packaging/install-deps.sh installs it)"
            return
        config = os.path.join(work, "rclone.conf")
        open(config, "w").close()
        env = dict(os.environ, RCLONE_CONFIG=config,
                   RCLONE_CONFIG_BENCH_TYPE="sftp", RCLONE_CONFIG_BENCH_HOST="127.0.0.1",
                   RCLONE_CONFIG_BENCH_PORT=str(lines.port(sshd.port, rtt)), RCLONE_CONFIG_BENCH_USER="root",
                   RCLONE_CONFIG_BENCH_KEY_FILE=sshd.client_key,
                   # No remote shell commands (hash sums, df): sftp only, no login shell.
                   RCLONE_CONFIG_BENCH_SHELL_TYPE="none", RCLONE_CONFIG_BENCH_DISABLE_HASHCHECK="true")
        self.argv = ["rclone", "mount", f"bench:{export}", self.root, "--read-only",
                     "--vfs-cache-mode", "full", "--cache-dir", self.cache, "--log-level", "ERROR"]
        self.fuse = FuseProcess(self.argv, self.root, os.path.join(work, "rclone.log"), env)

    def start(self, fresh):
        if fresh:
            shutil.rmtree(self.cache, ignore_errors=True)
        self.fuse.start()

    def stop(self):
        if self.fuse is not None:
            self.fuse.stop()


# ---------------------------------------------------------------------------------------------
# Workloads
# ---------------------------------------------------------------------------------------------

def bwrap(root, argv):
    """argv with MNT bound at /nix/store (over a tmpfs /nix), so store paths are real paths."""
    return ["bwrap", "--dev-bind", "/", "/", "--tmpfs", "/nix", "--bind", root, "/nix/store", *argv]


class Workloads:
    def __init__(self, work, export, names, randread_count):
        self.work, self.export, self.names = work, export, names
        self.randread_count = randread_count
        self.program = os.path.join(work, "w2.c")
        with open(self.program, "w") as f:
            f.write("".join(f"#include <{h}>\n" for h in HEADERS))
            f.write("int main(void) { printf(\"%zu\\n\", strlen(\"x\")); return 0; }\n")
        self.script = os.path.join(work, "w3.py")
        with open(self.script, "w") as f:
            f.write("".join(f"import {m}\n" for m in MODULES))
        self.randread = os.path.join(work, "randread")
        source = os.path.join(work, "randread.c")
        with open(source, "w") as f:
            f.write(RANDREAD_C)
        lib.run(["cc", "-O2", "-o", self.randread, source])
        self.gcc_include = lib.run(["gcc", "-print-file-name=include"]).strip()
        self.include_entries = 1 + sum(len(d) + len(f) for _, d, f in
                                       os.walk(os.path.join(export, names["include"])))

    def keys(self):
        return ["W1", "W2", "W3", "W4 seq", "W4 rand"]

    def argv(self, key, root):
        inc, home, large = self.names["include"], self.names["python_home"], self.names["large"]
        if key == "W1":
            return ["find", os.path.join(root, inc), "-printf", "%s %m %l\\n"]
        if key == "W2":
            store_inc = f"/nix/store/{inc}"
            return bwrap(root, ["gcc", "-nostdinc", "-isystem", self.gcc_include, "-isystem", store_inc,
                                "-isystem", f"{store_inc}/x86_64-linux-gnu", "-O0", "-c", self.program,
                                "-o", "/dev/null"])
        if key == "W3":
            return bwrap(root, ["env", "-i", "PATH=/usr/bin:/bin", f"PYTHONHOME=/nix/store/{home}",
                                "PYTHONDONTWRITEBYTECODE=1", "/usr/bin/python3.11", "-S", self.script])
        if key == "W4 seq":
            return ["dd", f"if={os.path.join(root, large, 'lib/libbig.so')}", "of=/dev/null", "bs=1M",
                    "status=none"]
        if key == "W4 rand":
            return [self.randread, os.path.join(root, large, "lib/libbig.so"), str(self.randread_count)]
        raise KeyError(key)

    def describe(self):
        return {
            "W1": f"`find STOREPATH -printf '%s %m %l\\n'` (lstat + readlink of every entry) over the "
                  f"/usr/include store path ({self.include_entries} entries)",
            "W2": f"`gcc -nostdinc -isystem <gcc's own include dir> -isystem /nix/store/…-include "
                  f"-isystem …/x86_64-linux-gnu -c` of a C file including {len(HEADERS)} headers, inside "
                  "`bwrap --dev-bind / / --tmpfs /nix --bind MNT /nix/store` (real /nix/store paths)",
            "W3": f"Debian's /usr/bin/python3.11 with `PYTHONHOME=/nix/store/…-python3.11-home` "
                  f"(stdlib + bytecode in the store), `-S`, importing {len(MODULES)} modules, in the same bwrap",
            "W4 seq": "`dd bs=1M` of a 256 MiB file",
            "W4 rand": f"{self.randread_count} random 4 KiB `pread`s (fixed xorshift sequence) of the same "
                       "256 MiB file",
        }

    def validate(self, key, result):
        """None when the run did the work, else why not (e.g. a peer missing entries)."""
        if result.returncode != 0:
            return f"exit {result.returncode}: " + result.stderr.decode(errors="replace").strip()[-300:]
        if key == "W1":
            lines = result.stdout.count(b"\n")
            if lines > self.include_entries:
                return (f"find listed {lines} entries, the store path has {self.include_entries}: the mount "
                        "follows symlinks to directories (rclone 1.60's sftp backend stats through "
                        "symlinks), so it is not the same tree")
            if lines != self.include_entries:
                return f"find listed {lines} of {self.include_entries} entries"
        return None


def timed(argv, capture):
    started = time.perf_counter()
    result = subprocess.run(argv, stdout=subprocess.PIPE if capture else subprocess.DEVNULL,
                            stderr=subprocess.PIPE, timeout=RUN_TIMEOUT)
    return time.perf_counter() - started, result


def hyperfine(argv, runs, json_path):
    """Hot runs: hyperfine without a shell, no warm-up (the run before left everything warm)."""
    lib.run(["hyperfine", "-N", "--style", "none", "--warmup", "0", "--runs", str(runs),
             "--export-json", json_path, shlex.join(argv)])
    with open(json_path) as f:
        return json.load(f)["results"][0]["times"]


def files_opened(argv, export, log_path):
    """Regular files under /nix/store a command opens (strace), with sizes from the export."""
    subprocess.run(["strace", "-f", "-qq", "-e", "trace=open,openat,execve", "-o", log_path, *argv],
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=RUN_TIMEOUT, check=True)
    files = set()
    with open(log_path, errors="replace") as f:
        for line in f:
            m = re.search(r'"/nix/store/([^"]+)".*= (\d+)$', line.strip())
            if m and "O_DIRECTORY" not in line:
                path = os.path.join(export, m.group(1))
                if os.path.isfile(path):
                    files.add(os.path.realpath(path))
    return len(files), sum(os.path.getsize(p) for p in files)


def tree_bytes(top):
    total = 0
    for dirpath, _dirs, names in os.walk(top):
        for name in names:
            path = os.path.join(dirpath, name)
            if os.path.isfile(path) and not os.path.islink(path):
                total += os.path.getsize(path)
    return total


def measure(system, key, wl, runs, hot_runs, work):
    """One cell: `runs` cold runs (each followed by a disk-warm one when hot_runs, i.e. at the first
    round trip), then hot_runs hot runs; a run that fails ends the cell with its reason."""
    cell = {state: [] for state in STATES}
    cell.update({"problem": system.unavailable, "server_bytes": [], "upstream_bytes": [],
                 "warm_is_cold": not system.persistent, "counters": {}, "profiled": []})
    if system.unavailable:
        return cell
    counters = getattr(system, "counters", None)
    capture = key == "W1"
    argv = wl.argv(key, system.root)
    try:
        for run in range(runs):
            system.start(fresh=True)
            drop_caches()
            before = system.server_bytes()
            up_before = system.upstream_bytes()
            cold_c0 = counters() if counters else None
            seconds, result = timed(argv, capture)
            problem = wl.validate(key, result)
            if problem:
                raise RuntimeError(problem)
            cell["cold"].append(seconds)
            if before is not None:
                cell["server_bytes"].append(system.server_bytes() - before)
            if up_before is not None:
                cell["upstream_bytes"].append(system.upstream_bytes() - up_before)
            if counters and run == 0:
                cell["counters"]["cold"] = counter_delta(cold_c0, counters())
            if isinstance(system, Lazystore) and key in PROFILED:
                # Another executor's cold start, given the list of what this one read.
                profile = os.path.join(work, f"profile-{system.key}-{key}")
                with open(profile, "w") as f:
                    f.write(system.ctl("reads"))
                system.stop()
                system.start(fresh=True)
                drop_caches()
                replay = ["sh", "-c", '"$0" --cache "$1" prefetch --from "$2" > /dev/null && shift 2 && exec "$@"',
                          system.ctl_bin(), system.cache, profile] + argv
                seconds, result = timed(replay, capture)
                problem = wl.validate(key, result)
                if problem:
                    raise RuntimeError("profiled: " + problem)
                cell["profiled"].append(seconds)
            if hot_runs and system.persistent:
                system.stop()
                system.start(fresh=False)
                drop_caches()
                c0 = counters() if counters else None
                seconds, result = timed(argv, capture)
                if counters and run == 0:
                    cell["counters"]["disk-warm"] = counter_delta(c0, counters())
                problem = wl.validate(key, result)
                if problem:
                    raise RuntimeError("disk-warm: " + problem)
                cell["disk-warm"].append(seconds)
            elif hot_runs:
                cell["disk-warm"].append(seconds)  # no disk cache: a restart is a cold start
            if hot_runs and run == runs - 1:
                _, result = timed(argv, capture)  # the hot runs' own check
                problem = wl.validate(key, result)
                if problem:
                    raise RuntimeError("hot: " + problem)
                c0 = counters() if counters else None
                cell["hot"] = hyperfine(argv, hot_runs, os.path.join(work, "hf.json"))
                if counters:
                    cell["counters"]["hot"] = counter_delta(c0, counters())
            system.stop()
    except (RuntimeError, OSError, subprocess.TimeoutExpired, subprocess.CalledProcessError) as e:
        system.stop()
        text = str(e).strip()
        cell["problem"] = text.splitlines()[0][:300] if text else repr(e)
        lib.log(f"{key} on {system.name}: {cell['problem']}")
    return cell


# ---------------------------------------------------------------------------------------------

def use_daemon(binary):
    """The daemon under test (LAZYSTORE_BIN) and the fixture store of its build directory, unless
    LAZYSTORE_FIXTURE_DIR names another; SIGTERM and SIGHUP end the run as Ctrl-C does, so that
    every mount and server is cleaned up."""
    os.environ["LAZYSTORE_BIN"] = os.path.abspath(binary)
    if not os.environ.get("LAZYSTORE_FIXTURE_DIR"):
        build = os.path.dirname(os.path.dirname(os.path.abspath(binary)))
        os.environ["LAZYSTORE_FIXTURE_DIR"] = os.path.join(build, "tests", "fixture-store")

    def interrupted(signum, _frame):
        raise KeyboardInterrupt(f"signal {signum}")
    signal.signal(signal.SIGTERM, interrupted)
    signal.signal(signal.SIGHUP, interrupted)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--bin", default=os.environ.get("LAZYSTORE_BIN", DEFAULT_BIN))
    parser.add_argument("--runs", type=int, default=2, help="cold and disk-warm runs per cell (default 2: a run stays under 10 min on a busy 2-CPU VM)")
    parser.add_argument("--hot-runs", type=int, default=3, help="hot runs per cell, hyperfine (default 3)")
    parser.add_argument("--rtt", default="0,0.5,2",
                        help="round trips (ms) added by a delay line before every server; cold runs at each, "
                             "disk-warm and hot at the first (default 0,0.5,2)")
    parser.add_argument("--rtt-runs", type=int, default=1,
                        help="cold runs per cell at the round trips after the first (default 1)")
    parser.add_argument("--randread", type=int, default=2000, help="random 4 KiB reads in W4 rand")
    parser.add_argument("--store-cache", default="/var/tmp/lazystore-bench-store",
                        help="where the suite's own store paths are built once and kept")
    parser.add_argument("--out", default=HERE, help="directory of results.md / results.png / results.json")
    parser.add_argument("--only", default=None, help="comma-separated system keys (debugging)")
    parser.add_argument("--workloads", default=None, help="comma-separated workload keys (debugging)")
    args = parser.parse_args()
    if not os.access(args.bin, os.X_OK):
        parser.error(f"{args.bin} is not an executable: give --bin or LAZYSTORE_BIN")
    if os.geteuid() != 0:
        parser.error("run as root (FUSE mounts, drop_caches, sshd, ganesha)")
    for tool in ("ganesha.nfsd", "sshfs", "/usr/sbin/sshd", "ssh-keygen", "getfattr", "cc", "gcc", "bwrap",
                 "hyperfine", "strace", "ss", "fusermount3", "/usr/bin/python3.11", "nginx", "nix", "nix-store"):
        if shutil.which(tool) is None:
            parser.error(f"{tool} is missing")
    use_daemon(args.bin)

    import nfs_bench  # the private sshd of the NFS benchmark (tests/bench/nfs_bench.py)

    load_start = loadavg()
    started = time.monotonic()
    fixture = lib.fixture()
    own = suite_store.bench_store(args.store_cache)
    work = tempfile.mkdtemp(prefix="lazystore-suite-")
    export = os.path.join(work, "export")
    os.makedirs(export)
    ganesha = sshd = nginx = lines = None
    systems = []
    lz_problems = []
    results = {"cells": {}, "w5": {}}
    try:
        sources = {"include": fixture.path("include"), "python_home": own["python_home"], "large": own["large"]}
        names = {}
        for role, source in sources.items():
            names[role] = os.path.basename(source)
            lib.copy_store(source, os.path.join(export, names[role]))
        wl = Workloads(work, export, names, args.randread)
        ganesha = nfs_server.Ganesha.v4(export, os.path.join(work, "ganesha"))
        sshd = nfs_bench.Sshd(os.path.join(work, "ssh"))
        lines = delay_line.DelayLines(delay_line.compile_delay_line(work))
        wanted = set(args.only.split(",")) | {"native"} if args.only else None
        nginx = public_key = None
        if wanted is None or "lazystore-http" in wanted:
            made = time.monotonic()
            cache_dir, public_key = make_binary_cache(work, [
                (os.path.join(fixture.root, "root"), [names["include"]]),
                (os.path.dirname(os.path.dirname(os.path.dirname(own["large"]))),
                 [names["python_home"], names["large"]])])
            lib.log(f"binary cache made in {time.monotonic() - made:.0f} s")
            nginx = http_server.Nginx(cache_dir, os.path.join(work, "nginx")).start()

        def make_systems(rtt):
            made = [Native(export), LazystoreNfs(work, ganesha, lines, rtt)]
            if nginx is not None:
                made.append(LazystoreHttp(work, nginx, public_key, lines, rtt))
            made += [Sshfs("sshfs", "sshfs", work, sshd, export, "", lines, rtt),
                     Sshfs("sshfs-cached", "sshfs cached", work, sshd, export,
                           "kernel_cache,entry_timeout=3600,attr_timeout=3600,dcache_timeout=3600", lines, rtt),
                     Rclone(work, sshd, export, lines, rtt)]
            return [s for s in made if wanted is None or s.key in wanted]
        keys = args.workloads.split(",") if args.workloads else wl.keys()
        rtts = [float(x) for x in args.rtt.split(",")]

        # Bytes the workloads read, from strace of the native run; store path sizes.
        actual = {}
        for key in ("W2", "W3"):
            count, size = files_opened(wl.argv(key, export), export, os.path.join(work, f"strace-{key}"))
            actual[key] = {"files": count, "bytes": size}
        closure = {"W2": tree_bytes(os.path.join(export, names["include"])),
                   "W3": tree_bytes(os.path.join(export, names["python_home"]))}
        for key in keys:  # every workload must work natively before anything is compared with it
            _, result = timed(wl.argv(key, export), key == "W1")
            problem = wl.validate(key, result)
            if problem:
                raise RuntimeError(f"{key} fails natively: {problem}")

        # Warm-up, not timed: ganesha's metadata cache sees every entry once (no side pays it alone),
        # nginx and the kernel have opened the cache files once.
        systems = make_systems(rtts[0])
        for warm in [s for s in systems if isinstance(s, Lazystore)]:
            warm.start(fresh=True)
            for key in ("W1", "W3"):
                timed(wl.argv(key, warm.root), False)
            warm.stop()
        lib.log(f"setup done in {time.monotonic() - started:.0f} s (load {loadavg()})")

        results["rtts"] = rtts
        results["rtt_cells"] = {}
        for rtt in rtts:
            first = rtt == rtts[0]
            if not first:
                systems = make_systems(rtt)
            runs = args.runs if first else args.rtt_runs
            cells = results["cells"] if first else results["rtt_cells"].setdefault(f"{rtt:g}", {})
            if first:
                results["rtt_cells"][f"{rtt:g}"] = results["cells"]
            for key in keys:
                for system in systems:
                    if not first and isinstance(system, Native):
                        continue  # no wire: the first round trip's native figures hold
                    cell = measure(system, key, wl, runs, args.hot_runs if first else 0, work)
                    cells[f"{key}|{system.key}"] = cell
                    med = {st: (f"{statistics.median(cell[st]):.3f}" if cell[st] else "-") for st in STATES}
                    lib.log(f"{key} {system.name} at {rtt:g} ms: cold {med['cold']} warm {med['disk-warm']} "
                            f"hot {med['hot']} s (load {loadavg()})")
            lz_problems += [p for s in systems if isinstance(s, Lazystore) for p in s.problems]
        results["delay_line_cpu_seconds"] = round(lines.cpu_seconds(), 2)
        for key in ("W2", "W3"):
            results["w5"][key] = {"closure_bytes": closure[key], "read_files": actual[key]["files"],
                                  "read_bytes": actual[key]["bytes"]}
    finally:
        for system in systems:
            try:
                system.stop()
                system.close()
            except Exception as e:  # keep cleaning up the others
                lib.log(f"stopping {system.name}: {e}")
        for server in (lines, nginx, sshd):
            if server is not None:
                server.close()
        if ganesha is not None:
            ganesha.close()
        if not any(is_mounted(getattr(s, "root", "")) for s in systems if not isinstance(s, Native)):
            shutil.rmtree(work, ignore_errors=True)
        else:
            lib.log(f"leaving {work}: still mounted")

    results.update({"runs": args.runs, "hot_runs": args.hot_runs, "rtt_runs": args.rtt_runs,
                    "randread_bytes": args.randread * 4096, "load_start": load_start,
                    "load_end": loadavg(), "seconds": round(time.monotonic() - started),
                    "cpus": os.cpu_count(), "systems": [[s.key, s.name] for s in systems],
                    "workloads": keys, "describe": wl.describe(), "lazystore_problems": lz_problems,
                    "bin": os.path.relpath(os.path.abspath(args.bin), SOURCE_ROOT), "bin_mtime": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(os.path.getmtime(args.bin))),
                    "kernel": os.uname().release, "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())})
    os.makedirs(args.out, exist_ok=True)
    with open(os.path.join(args.out, "results.json"), "w") as f:
        json.dump(results, f, indent=1)
    try:
        suite_report.chart(results, os.path.join(args.out, "results.png"))
    except ImportError as e:  # the tables are the result; the chart only shows them
        results["chart_problem"] = f"no chart: {e} (packaging/install-deps.sh installs python3-matplotlib)"
        lib.log(results["chart_problem"])
    markdown = suite_report.markdown(results)
    with open(os.path.join(args.out, "results.md"), "w") as f:
        f.write(markdown)
    print(markdown)


if __name__ == "__main__":
    main()
