#!/usr/bin/python3
"""The lab: Debian's kernel (6.1) in a qemu guest, the kernel NFS server exporting a Nix store
with the seed's options, and a command run inside (tests/lab/README.md).

    tests/lab/lab.py --store DIR|--image IMG|--lab-store DIR [--lazystore BIN] [--rtt-ms 0.5] [--timeout 600] [--out DIR]
                     [--preload PATH]... [--env K=V]... -- COMMAND [ARG...]

Exits with the command's status (124: the command timed out in the guest; 125: the guest did not
run it). As a module: `build_store_image()` and `Guest(...).run(argv)`.

The guest: qemu (TCG, or KVM where the CPU has real hardware virtualisation) boots the host's
/boot/vmlinuz-6.1.* with an initramfs made here (busybox-static, the 9p/overlay modules, the
preloaded tools and lazystore, tests/lab/guest/{init,boot.sh}); the host root is its read-only
lower layer over 9p, `out` a writable 9p share (results), the store an ext4 image on a virtio
disk (qemu snapshot: writable in the guest, the image never changes). No network device: the
guest's only network is its own loopback.
"""

import argparse
import os
import re
import shlex
import shutil
import signal
import stat
import struct
import subprocess
import sys
import tempfile
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
GUEST_DIR = os.path.join(HERE, "guest")

EXPORT = "/srv/nix/store"          # where the guest mounts the store disk's /nix/store
SERVER = "127.0.0.1"
# The seed's /etc/exports line is `/nix/store 10.0.0.0/16(ro,sync,no_subtree_check)`: the same
# options, for the guest's loopback address.
SEED_EXPORT_OPTIONS = "ro,sync,no_subtree_check"
INITRAMFS_MODULES = ("virtio_pci", "9pnet_virtio", "9p", "overlay")
BOOT_DEADLINE = 240                # seconds from qemu's start to the command's start
SHUTDOWN_DEADLINE = 60             # seconds from the command's timeout to qemu's exit

# Python 3.11's interpreter and standard library (no site/dist-packages, tests, Tk, IDLE or the
# static library): what a guest-side Python script needs in memory instead of over 9p.
PYTHON_STDLIB = "/usr/lib/python3.11"
PYTHON_SKIP = {"dist-packages", "site-packages", "test", "idlelib", "tkinter", "turtledemo",
               "lib2to3", "ensurepip", "config-3.11-x86_64-linux-gnu"}
PYTHON_PRELOAD = ["/usr/bin/python3.11", PYTHON_STDLIB]

# Exit statuses of lab.py besides the command's own.
TIMED_OUT = 124
NOT_RUN = 125

# Tools the host needs, and the Debian package of each (packaging/install-deps.sh installs them).
PREREQUISITES = {
    "qemu-system-x86_64": "qemu-system-x86",
    "busybox": "busybox-static",
    "rpc.nfsd": "nfs-kernel-server",
    "exportfs": "nfs-kernel-server",
    "rpcbind": "rpcbind",
    "mount.nfs": "nfs-common",
    "mkfs.ext4": "e2fsprogs",
    "tc": "iproute2",
    "modprobe": "kmod",
    "ldd": "libc-bin",
}


def log(message):
    print(message, file=sys.stderr, flush=True)


# ---------------------------------------------------------------------------------------------
# Host prerequisites
# ---------------------------------------------------------------------------------------------

def find_kernel():
    """(version, vmlinuz) of the newest installed Debian 6.1 kernel with its nfsd module, else None."""
    found = []
    for version in os.listdir("/lib/modules") if os.path.isdir("/lib/modules") else []:
        image = f"/boot/vmlinuz-{version}"
        nfsd = os.path.join("/lib/modules", version, "kernel", "fs", "nfsd")
        if version.startswith("6.1.") and os.path.exists(image) and os.path.isdir(nfsd):
            found.append(version)
    if not found:
        return None
    key = lambda v: [int(x) if x.isdigit() else x for x in re.split(r"[.-]", v)]
    version = max(found, key=key)
    return version, f"/boot/vmlinuz-{version}"


def elf_interpreter(path):
    """The PT_INTERP of an ELF file (None for a static executable or a non-ELF file)."""
    with open(path, "rb") as f:
        header = f.read(64)
        if header[:4] != b"\x7fELF" or header[4] != 2:  # 64-bit ELF only
            return None
        phoff, = struct.unpack_from("<Q", header, 32)
        phentsize, phnum = struct.unpack_from("<HH", header, 54)
        for i in range(phnum):
            f.seek(phoff + i * phentsize)
            p_type, _flags, p_offset, _vaddr, _paddr, p_filesz = struct.unpack("<IIQQQQ", f.read(40))
            if p_type == 3:
                f.seek(p_offset)
                return f.read(p_filesz).rstrip(b"\0").decode()
    return None


def busybox_static():
    path = shutil.which("busybox") or "/bin/busybox"
    if os.path.exists(path) and elf_interpreter(path) is None:
        return os.path.realpath(path)
    return None


def missing_prerequisites():
    """What this host lacks to run the lab, as readable reasons (empty: it can run)."""
    reasons = []
    if os.geteuid() != 0:
        reasons.append("not root")
    for tool, package in PREREQUISITES.items():
        if shutil.which(tool) is None:
            reasons.append(f"no {tool} (Debian package {package})")
    if shutil.which("busybox") and busybox_static() is None:
        reasons.append("busybox is not static (Debian package busybox-static)")
    if find_kernel() is None:
        reasons.append("no Debian 6.1 kernel with modules (Debian package linux-image-amd64)")
    return reasons


def choose_accel(requested="auto"):
    """KVM only where it is real hardware virtualisation (vmx/svm, not a PVM host), else TCG."""
    if requested in ("tcg", "kvm"):
        return requested
    try:
        with open("/proc/cpuinfo") as f:
            flags = re.search(r"^flags\s*:(.*)$", f.read(), re.M)
        hardware = flags is not None and bool({"vmx", "svm"} & set(flags.group(1).split()))
    except OSError:
        hardware = False
    usable = os.access("/dev/kvm", os.R_OK | os.W_OK) and not os.path.exists("/sys/module/kvm_pvm")
    return "kvm" if hardware and usable else "tcg"


# ---------------------------------------------------------------------------------------------
# The initramfs: a newc cpio archive, uncompressed (decompression is slow under emulation)
# ---------------------------------------------------------------------------------------------

class Cpio:
    """Writes a newc ("070701") archive as the kernel's initramfs unpacker reads it."""

    def __init__(self, path):
        self.file = open(path, "wb")
        self.inode = 1
        self.dirs = set()

    def _entry(self, name, mode, data=b"", mtime=0):
        name_bytes = name.encode() + b"\0"
        header = "070701" + "".join(f"{v:08X}" for v in (
            self.inode, mode, 0, 0, 1, mtime, len(data), 0, 0, 0, 0, len(name_bytes), 0))
        self.inode += 1
        self.file.write(header.encode() + name_bytes)
        self.file.write(b"\0" * (-(110 + len(name_bytes)) % 4))
        self.file.write(data)
        self.file.write(b"\0" * (-len(data) % 4))

    def directory(self, name, mode=0o755):
        """name and its parents (each once)."""
        parts = name.strip("/").split("/")
        for i in range(1, len(parts) + 1):
            sub = "/".join(parts[:i])
            if sub and sub not in self.dirs:
                self.dirs.add(sub)
                self._entry(sub, stat.S_IFDIR | mode)

    def file_bytes(self, name, data, mode=0o644):
        self.directory(os.path.dirname(name))
        self._entry(name.strip("/"), stat.S_IFREG | mode, data)

    def host_file(self, name, path):
        st = os.stat(path)
        with open(path, "rb") as f:
            self.file_bytes(name, f.read(), stat.S_IMODE(st.st_mode))

    def symlink(self, name, target):
        self.directory(os.path.dirname(name))
        self._entry(name.strip("/"), stat.S_IFLNK | 0o777, target.encode())

    def close(self):
        self._entry("TRAILER!!!", 0)
        self.file.close()


def module_closure(version, names):
    """The module files for names and their dependencies, in load order (modinfo -F depends)."""
    order, seen = [], set()

    def visit(name):
        if name in seen:
            return
        seen.add(name)
        depends = subprocess.run(["modinfo", "-k", version, "-F", "depends", name], check=True,
                                 capture_output=True, text=True).stdout.strip()
        for dep in filter(None, depends.replace(",", " ").split()):
            visit(dep)
        path = subprocess.run(["modinfo", "-k", version, "-n", name], check=True,
                              capture_output=True, text=True).stdout.strip()
        if path.endswith((".ko", ".ko.xz")):  # else built into the kernel
            order.append((name, path))

    for name in names:
        visit(name)
    return order


def library_closure(paths):
    """The real paths of `paths` plus the shared libraries and loader of every ELF among them."""
    out = set()
    for path in paths:
        real = os.path.realpath(path)
        out.add(real)
        if elf_interpreter(real) is None:
            continue
        listing = subprocess.run(["ldd", real], capture_output=True, text=True).stdout
        for m in re.finditer(r"(?:=>\s*)?(/\S+)\s+\(0x", listing):
            out.add(os.path.realpath(m.group(1)))
    return out


def preload_files(paths):
    """Files (real paths) for the guest's tmpfs: each path (a directory: all files below it) and
    the libraries of each executable."""
    files = []
    for path in paths:
        if os.path.isdir(path) and not os.path.islink(path):
            for dirpath, dirs, names in os.walk(path):
                if os.path.realpath(dirpath) == PYTHON_STDLIB:
                    dirs[:] = [d for d in dirs if d not in PYTHON_SKIP]
                files += [os.path.join(dirpath, n) for n in names
                          if os.path.isfile(os.path.join(dirpath, n))]
        else:
            files.append(path)
    return sorted(library_closure(files))


def build_initramfs(path, version, binaries, preload, params, command):
    """The guest's initramfs: busybox + modules + /init, /lab (boot.sh, params, command, binaries)
    and the preloaded files under rw/upper (the overlay's upper layer: served from memory)."""
    archive = Cpio(path)
    try:
        busybox = busybox_static()
        archive.host_file("bin/busybox", busybox)
        for applet in ("sh", "mount", "mkdir", "insmod", "cat", "echo", "sleep", "poweroff", "cp",
                       "cut", "chroot"):
            archive.symlink(f"bin/{applet}", "busybox")
        for d in ("dev", "proc", "sys", "lower", "newroot", "rw/work"):
            archive.directory(d)
        order = []
        for name, module in module_closure(version, INITRAMFS_MODULES):
            if module.endswith(".xz"):
                import lzma
                with open(module, "rb") as f:
                    archive.file_bytes(f"lib/modules/{name}.ko", lzma.decompress(f.read()))
            else:
                archive.host_file(f"lib/modules/{name}.ko", module)
            order.append(name)
        archive.file_bytes("lib/modules/order", ("\n".join(order) + "\n").encode())
        for name, source in (("init", "init"), ("lab/boot.sh", "boot.sh")):
            with open(os.path.join(GUEST_DIR, source), "rb") as f:
                archive.file_bytes(name, f.read(), 0o755)
        archive.file_bytes("lab/params", "".join(f"{k}={shlex.quote(str(v))}\n"
                                                 for k, v in params.items()).encode())
        archive.file_bytes("lab/command", "".join(a + "\n" for a in command).encode())
        archive.directory("lab/out")
        for name, source in binaries.items():
            archive.host_file(f"lab/bin/{name}", source)
        for source in preload:
            archive.host_file("rw/upper" + source, source)
    finally:
        archive.close()


# ---------------------------------------------------------------------------------------------
# The store disk
# ---------------------------------------------------------------------------------------------

def build_store_image(root, image):
    """An ext4 image of ROOT (a directory holding nix/store/...), at IMAGE; modes, owners,
    symlinks and mtimes as in ROOT. Built next to IMAGE and renamed: a half-made image never
    exists under its name."""
    if not os.path.isdir(os.path.join(root, "nix", "store")):
        raise ValueError(f"{root} has no nix/store directory")
    files = size = 0
    for dirpath, dirs, names in os.walk(root):
        for name in names + dirs:
            files += 1
            path = os.path.join(dirpath, name)
            if os.path.isfile(path) and not os.path.islink(path):
                size += (os.path.getsize(path) + 4095) // 4096 * 4096
    blocks = (size * 5 // 4 + files * 4096 + (64 << 20)) // 4096
    inodes = files * 2 + 4096
    tmp = f"{image}.tmp-{os.getpid()}"
    try:
        subprocess.run(["mkfs.ext4", "-q", "-F", "-L", "labstore", "-b", "4096", "-N", str(inodes),
                        "-E", "root_owner=0:0", "-d", root, tmp, str(blocks)],
                       check=True, capture_output=True, text=True)
        os.rename(tmp, image)
    except subprocess.CalledProcessError as e:
        raise RuntimeError(f"mkfs.ext4 of {root} failed: {e.stderr.strip()}") from e
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return image


def make_scratch_image(image, megabytes):
    """An empty ext4 file system in a sparse file (the guest's /lab/scratch)."""
    with open(image, "wb") as f:
        f.truncate(megabytes << 20)
    subprocess.run(["mkfs.ext4", "-q", "-F", "-L", "labscratch", "-E",
                    "lazy_itable_init=1,lazy_journal_init=1", image], check=True, capture_output=True)


# ---------------------------------------------------------------------------------------------
# The guest
# ---------------------------------------------------------------------------------------------

class GuestResult:
    def __init__(self, status, out, console, seconds, boot_seconds, timed_out):
        self.status = status            # the command's exit status, None if it never ran
        self.out = out                  # the out share's directory on the host
        self.console = console          # the guest's console log on the host
        self.seconds = seconds          # qemu start to qemu exit
        self.boot_seconds = boot_seconds  # qemu start to the command's start (None: never)
        self.timed_out = timed_out      # the host killed qemu at its deadline

    def console_tail(self, lines=40):
        try:
            with open(self.console, errors="replace") as f:
                return "".join(f.readlines()[-lines:])
        except OSError:
            return ""


class Guest:
    """One boot of the lab guest running one command (`run`)."""

    def __init__(self, work, image, lazystore=None, lazystore_ctl=None, preload=(), memory_mb=2048,
                 cpus=2, timeout=600, rtt_ms=0.0, accel="auto", export_options=SEED_EXPORT_OPTIONS,
                 nfsd_threads=8, grace_seconds=10, scratch_mb=2048, env=None, echo=None):
        self.work = work                # a private directory; out/ and the console log go here
        self.image = image
        self.binaries = {}
        for name, path in (("lazystore", lazystore), ("lazystore-ctl", lazystore_ctl)):
            if path:
                self.binaries[name] = os.path.realpath(path)
        self.preload = list(preload) + list(self.binaries.values())
        self.memory_mb, self.cpus, self.timeout = memory_mb, cpus, timeout
        self.rtt_ms = rtt_ms
        self.accel = choose_accel(accel)
        self.export_line = f"{EXPORT} {SERVER}({export_options})"
        self.nfsd_threads, self.grace_seconds = nfsd_threads, grace_seconds
        self.scratch_mb = scratch_mb
        self.env = dict(env or {})
        self.echo = echo                # a text stream that sees the console as it comes, or None

    def guest_env(self):
        env = {
            "LAB_GUEST": "1",
            "LAB_OUT": "/lab/out",
            "LAB_SCRATCH": "/lab/scratch",
            "LAB_EXPORT": EXPORT,
            "LAB_SERVER": SERVER,
            "LAB_EXPORT_LINE": self.export_line,
            "LAB_SOURCE_V3": f"{SERVER}:{EXPORT}",
            "LAB_SOURCE_V4": f"nfs://{SERVER}{EXPORT}?version=4",
            "LAB_RTT_MS": f"{self.rtt_ms:g}",
            "PYTHONDONTWRITEBYTECODE": "1",
            "PYTHONUNBUFFERED": "1",
        }
        if "lazystore" in self.binaries:
            env["LAZYSTORE_BIN"] = "/lab/bin/lazystore"
        if "lazystore-ctl" in self.binaries:
            env["LAZYSTORE_CTL_BIN"] = "/lab/bin/lazystore-ctl"
        env.update(self.env)
        return env

    def qemu_argv(self, kernel, initrd, out, scratch):
        if self.accel == "kvm":
            accel = ["-accel", "kvm", "-cpu", "host"]
        else:
            accel = ["-accel", "tcg,thread=multi", "-cpu", "max"]
        return ["qemu-system-x86_64", *accel, "-m", str(self.memory_mb), "-smp", str(self.cpus),
                "-nodefaults", "-no-user-config", "-display", "none", "-no-reboot",
                "-chardev", "stdio,id=console,signal=off", "-serial", "chardev:console",
                "-kernel", kernel, "-initrd", initrd,
                "-append", "console=ttyS0 panic=-1 quiet rdinit=/init",
                "-virtfs", "local,path=/,mount_tag=hostroot,security_model=none,readonly=on,multidevs=remap",
                "-virtfs", f"local,path={out},mount_tag=out,security_model=none,multidevs=remap",
                "-drive", f"file={self.image},format=raw,if=virtio,snapshot=on,cache=unsafe",
                "-drive", f"file={scratch},format=raw,if=virtio,cache=unsafe"]

    def run(self, argv):
        """Boots, runs argv in the guest, returns a GuestResult once qemu has exited."""
        for arg in list(argv) + [f"{k}={v}" for k, v in self.guest_env().items()]:
            if "\n" in arg:
                raise ValueError(f"a newline in a guest argument: {arg!r}")
        version, kernel = find_kernel()
        out = os.path.join(self.work, "out")
        os.makedirs(out, exist_ok=True)
        initrd = os.path.join(self.work, "initramfs.cpio")
        params = {"LAB_TIMEOUT": self.timeout, "LAB_RTT_MS": f"{self.rtt_ms:g}",
                  "LAB_EXPORT_LINE": self.export_line, "LAB_NFSD_THREADS": self.nfsd_threads,
                  "LAB_GRACE": self.grace_seconds}
        command = [f"{k}={v}" for k, v in self.guest_env().items()] + list(argv)
        build_initramfs(initrd, version, self.binaries, preload_files(self.preload), params, command)
        scratch = os.path.join(self.work, "scratch.img")
        make_scratch_image(scratch, self.scratch_mb)
        console = os.path.join(self.work, "console.log")
        env = dict(os.environ, TMPDIR=self.work)  # qemu's snapshot file of the store disk
        started = time.monotonic()
        self.command_started = None
        timed_out = False
        with open(console, "wb") as console_file:
            process = subprocess.Popen(self.qemu_argv(kernel, initrd, out, scratch), stdin=subprocess.DEVNULL,
                                       stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env)
            reader = threading.Thread(target=self._copy_console, args=(process.stdout, console_file),
                                      daemon=True)
            reader.start()
            try:
                while process.poll() is None:
                    now = time.monotonic()
                    if self.command_started is None and now > started + BOOT_DEADLINE:
                        timed_out = True
                        log(f"lab: the guest did not start the command within {BOOT_DEADLINE} s: "
                            "killing qemu")
                        break
                    if self.command_started and now > self.command_started + self.timeout + SHUTDOWN_DEADLINE:
                        timed_out = True
                        log(f"lab: the guest is still running {self.timeout + SHUTDOWN_DEADLINE} s after "
                            "the command started: killing qemu")
                        break
                    time.sleep(0.2)  # polling interval, bounded by the deadlines
            finally:
                if process.poll() is None:
                    process.kill()
                process.wait()
                reader.join(timeout=10)
        seconds = time.monotonic() - started
        status = None
        try:
            with open(os.path.join(out, "status")) as f:
                status = int(f.read().strip())
        except (OSError, ValueError):
            pass
        boot = self.command_started - started if self.command_started else None
        return GuestResult(status, out, console, seconds, boot, timed_out)

    def _copy_console(self, pipe, console_file):
        for line in iter(pipe.readline, b""):
            if self.command_started is None and line.startswith(b"lab-boot: command starts"):
                self.command_started = time.monotonic()
            console_file.write(line)
            console_file.flush()
            if self.echo is not None:
                self.echo.write(line.decode(errors="replace"))
                self.echo.flush()


# ---------------------------------------------------------------------------------------------

def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--store", help="a directory holding nix/store/... (made into an ext4 image)")
    source.add_argument("--image", help="an ext4 image holding /nix/store (build_store_image)")
    source.add_argument("--lab-store", help="the conformance store (lab_store.py), built once in this directory")
    parser.add_argument("--lazystore", help="the daemon to copy into the guest (/lab/bin/lazystore)")
    parser.add_argument("--lazystore-ctl", help="lazystore-ctl for the guest (default: next to --lazystore)")
    parser.add_argument("--preload", action="append", default=[],
                        help="a file or directory the guest serves from memory (with its libraries)")
    parser.add_argument("--env", action="append", default=[], help="K=V for the command")
    parser.add_argument("--rtt-ms", type=float, default=0.0, help="netem round trip on the guest's lo")
    parser.add_argument("--timeout", type=int, default=600, help="seconds the command may run")
    parser.add_argument("--memory-mb", type=int, default=2048)
    parser.add_argument("--cpus", type=int, default=2)
    parser.add_argument("--accel", choices=("auto", "tcg", "kvm"), default="auto")
    parser.add_argument("--export-options", default=SEED_EXPORT_OPTIONS,
                        help=f"options of the export line (default: the seed's, {SEED_EXPORT_OPTIONS})")
    parser.add_argument("--out", help="keep the out share, console log and initramfs in this directory")
    parser.add_argument("-q", "--quiet", action="store_true", help="do not echo the guest console")
    parser.add_argument("command", nargs=argparse.REMAINDER)
    args = parser.parse_args()
    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    if not command:
        parser.error("no command given (… -- COMMAND [ARG...])")
    missing = missing_prerequisites()
    if missing:
        parser.error("cannot run the lab here: " + "; ".join(missing))
    ctl = args.lazystore_ctl
    if args.lazystore and not ctl:
        candidate = os.path.join(os.path.dirname(args.lazystore), "lazystore-ctl")
        ctl = candidate if os.access(candidate, os.X_OK) else None
    env = dict(e.split("=", 1) for e in args.env)

    def interrupted(signum, _frame):
        raise KeyboardInterrupt(f"signal {signum}")
    signal.signal(signal.SIGTERM, interrupted)
    signal.signal(signal.SIGHUP, interrupted)

    if args.out:
        os.makedirs(args.out, exist_ok=True)
        work = tempfile.mkdtemp(prefix="run-", dir=args.out)
    else:
        work = tempfile.mkdtemp(prefix="lazystore-lab-")
    try:
        if args.lab_store:
            import lab_store
            image, _paths = lab_store.store(args.lab_store)
        else:
            image = args.image or build_store_image(args.store, os.path.join(work, "store.img"))
        guest = Guest(work, image, lazystore=args.lazystore, lazystore_ctl=ctl, preload=args.preload,
                      memory_mb=args.memory_mb, cpus=args.cpus, timeout=args.timeout, rtt_ms=args.rtt_ms,
                      accel=args.accel, export_options=args.export_options, env=env,
                      echo=None if args.quiet else sys.stderr)
        result = guest.run(command)
        if result.timed_out:
            return TIMED_OUT
        if result.status is None:
            log("lab: the guest did not run the command; console:\n" + result.console_tail())
            return NOT_RUN
        log(f"lab: command exited {result.status}; guest {result.seconds:.0f} s "
            f"(boot {result.boot_seconds or 0:.0f} s, {guest.accel}); out: {result.out}")
        return result.status
    finally:
        if not args.out:
            shutil.rmtree(work, ignore_errors=True)
        elif os.path.exists(os.path.join(work, "store.img")):
            os.unlink(os.path.join(work, "store.img"))


if __name__ == "__main__":
    sys.exit(main())
