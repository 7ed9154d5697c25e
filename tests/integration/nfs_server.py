"""Real NFS servers for the tests: nfs-ganesha (VFS FSAL) exporting a directory.

- `Ganesha.v4(export_dir, work)`: NFSv4 on 127.0.0.1 at a free port, no rpcbind needed.
- `Ganesha.v3(export_dir, work)`: NFSv3 and v4 with rpcbind, in a private network namespace
  (`ip netns add`) with `lo` up; run clients there with `netns_argv()` (`NetnsDaemon`), reach
  it through a fault proxy with `fault_proxy()` (the proxy's sockets live in the namespace).
Each server can be stopped (SIGKILL), frozen (SIGSTOP/SIGCONT) and restarted on the same port.
`wide_store_path(export_dir)` adds a store path of many directories with one deep file: its
walk takes many round trips, a lookup of the deep file few.
"""

import ctypes
import os
import signal
import socket
import subprocess
import threading
import time
import uuid

from fault_proxy import FaultProxy
from lazystore_testlib import Daemon, log

CLONE_NEWNET = 0x40000000
MOUNT_PORT = 20048
FUSE_TYPES = "fuse,fuse.lazystore,fuse.sshfs,fuse.rclone,fuseblk"  # ganesha's MOUNT port inside a private namespace (nothing else is there)

START_DEADLINE = 30.0


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_until(predicate, deadline_seconds, what):
    deadline = time.monotonic() + deadline_seconds
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not within {deadline_seconds} s")
        time.sleep(0.05)  # polling interval, bounded by the deadline


class Ganesha:
    def __init__(self, export_dir, work, protocols, netns=None):
        self.export_dir = export_dir
        self.work = work
        self.protocols = protocols
        self.netns = netns
        self.port = 2049 if netns else free_port()
        self.process = None
        self.rpcbind = None
        os.makedirs(work, exist_ok=True)
        self.config = os.path.join(work, "ganesha.conf")
        self.log_path = os.path.join(work, "ganesha.log")
        recovery = os.path.join(work, "recovery")
        os.makedirs(recovery, exist_ok=True)
        protos = ", ".join(str(p) for p in protocols)
        # In a private namespace, all addresses are loopback (and ganesha cannot resolve
        # 127.0.0.1 without a configured non-loopback address).
        bind = f"MNT_Port = {MOUNT_PORT};" if netns else "Bind_addr = 127.0.0.1;"
        with open(self.config, "w") as f:
            f.write(f"""
NFS_CORE_PARAM {{
  Protocols = {protos};
  NFS_Port = {self.port};
  {bind}
  Enable_NLM = false;
  Enable_RQUOTA = false;
}}
NFSV4 {{ Graceless = true; RecoveryBackend = fs; RecoveryRoot = "{recovery}"; }}
NFS_KRB5 {{ Active_krb5 = false; }}
EXPORT {{
  Export_Id = 1;
  Path = "{export_dir}";
  Pseudo = /store;
  Access_Type = RO;
  Squash = No_Root_Squash;
  Protocols = {protos};
  SecType = sys;
  Attr_Expiration_Time = 0;
  FSAL {{ Name = VFS; }}
}}
LOG {{ Default_Log_Level = WARN; }}
""")

    @classmethod
    def v4(cls, export_dir, work):
        return cls(export_dir, work, protocols=(4,)).start()

    @classmethod
    def v3(cls, export_dir, work):
        netns = "lzt-" + uuid.uuid4().hex[:8]
        subprocess.run(["ip", "netns", "add", netns], check=True)
        server = cls(export_dir, work, protocols=(3, 4), netns=netns)
        try:
            subprocess.run(server.netns_argv(["ip", "link", "set", "lo", "up"]), check=True)
            # rpcbind keeps its lock and socket in /run: a private /run keeps it apart from any
            # rpcbind of the host; ganesha then registers with it over the namespace's loopback.
            # The new mount namespace starts with a copy of every mount, FUSE mounts of other
            # tests included: a copy would keep such a mount alive after its fusermount3 -u
            # (the host's mounts are private, nothing propagates), so they are let go first.
            server.rpcbind = subprocess.Popen(
                server.netns_argv(["unshare", "--mount", "sh", "-c",
                                   f"umount -a -l -t {FUSE_TYPES} 2>/dev/null; "
                                   "mount -t tmpfs tmpfs /run && exec rpcbind -f"]),
                stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            wait_until(lambda: server._listening(111), START_DEADLINE, "rpcbind listening")
            return server.start()
        except BaseException:
            server.close()
            raise

    def netns_argv(self, argv):
        """argv run inside the server's network namespace (the mount namespace stays shared)."""
        if not self.netns:
            return list(argv)
        return ["nsenter", f"--net=/run/netns/{self.netns}", *argv]

    def _listening(self, port):
        probe = self.netns_argv(["bash", "-c", f"exec 3<>/dev/tcp/127.0.0.1/{port}"])
        return subprocess.run(probe, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL).returncode == 0

    def start(self):
        assert self.process is None
        pid_file = os.path.join(self.work, "ganesha.pid")
        self.process = subprocess.Popen(
            self.netns_argv(["ganesha.nfsd", "-F", "-f", self.config, "-L", self.log_path,
                             "-p", pid_file, "-N", "NIV_WARN"]),
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        def up():
            if self.process.poll() is not None:
                raise AssertionError(f"ganesha exited {self.process.returncode}:\n{self.log()}")
            return self._listening(self.port)
        wait_until(up, START_DEADLINE, "ganesha listening")
        return self

    def log(self):
        try:
            with open(self.log_path, errors="replace") as f:
                return f.read()[-4000:]
        except OSError:
            return ""

    def url(self, version=4, nfsport=None):
        """The export's libnfs URL; with nfsport (a proxy's port) the portmapper is skipped."""
        if version == 4:
            return f"nfs://127.0.0.1/store?version=4&nfsport={nfsport or self.port}"
        if nfsport:
            return f"nfs://127.0.0.1{self.export_dir}?version=3&nfsport={nfsport}&mountport={MOUNT_PORT}"
        return f"nfs://127.0.0.1{self.export_dir}?version=3"

    def fault_proxy(self):
        """A started FaultProxy before the NFS port, in the server's namespace if it has one."""
        if not self.netns:
            return FaultProxy(self.port).start()
        return NetnsFaultProxy(self.netns, self.port).start()

    def freeze(self):
        os.kill(self.process.pid, signal.SIGSTOP)

    def thaw(self):
        os.kill(self.process.pid, signal.SIGCONT)

    def kill(self):
        if self.process is None:
            return
        if self.process.poll() is None:
            os.kill(self.process.pid, signal.SIGCONT)
            self.process.kill()
        self.process.wait(timeout=30)
        self.process = None

    def restart(self):
        self.kill()
        return self.start()

    def close(self):
        self.kill()
        if self.rpcbind is not None:
            self.rpcbind.kill()
            self.rpcbind.wait(timeout=30)
            self.rpcbind = None
        if self.netns:
            subprocess.run(["ip", "netns", "delete", self.netns], stderr=subprocess.DEVNULL)
            self.netns = None


def in_netns(netns, function):
    """Runs function() on a thread inside the network namespace and returns its result; threads
    it starts stay in the namespace (a thread's namespaces pass to the threads it creates)."""
    outcome = {}
    libc = ctypes.CDLL(None, use_errno=True)

    def body():
        try:
            fd = os.open(f"/run/netns/{netns}", os.O_RDONLY)
            try:
                if libc.setns(fd, CLONE_NEWNET) != 0:
                    raise OSError(ctypes.get_errno(), f"setns into {netns}")
            finally:
                os.close(fd)
            outcome["value"] = function()
        except BaseException as e:  # handed to the caller
            outcome["error"] = e

    thread = threading.Thread(target=body)
    thread.start()
    thread.join()
    if "error" in outcome:
        raise outcome["error"]
    return outcome.get("value")


class NetnsFaultProxy(FaultProxy):
    """A FaultProxy listening and connecting inside a network namespace (an NFSv3 server's)."""

    def __init__(self, netns, target_port):
        super().__init__(target_port)
        self.netns = netns

    def _listen(self):
        in_netns(self.netns, super()._listen)


class NetnsDaemon(Daemon):
    """A daemon whose network is the NFS server's private namespace (its mount stays visible)."""

    def __init__(self, server, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.server = server

    def argv(self):
        return self.server.netns_argv(super().argv())


WIDE_NAME = "2" * 32 + "-wide-tree"
WIDE_DEEP = "deep/a/b/c/target.txt"


def wide_store_path(export_dir, top=40, sub=40):
    """Adds WIDE_NAME to the export: `top` x `sub` directories of one file each (breadth-first
    they come before most of deep/a/b/c), deep/a/b/c/target.txt and a few symlinks. Returns the
    name and the number of directories."""
    root = os.path.join(export_dir, WIDE_NAME)
    for i in range(top):
        for j in range(sub):
            d = os.path.join(root, f"d{i:02}", f"s{j:02}")
            os.makedirs(d)
            with open(os.path.join(d, "f"), "w") as f:
                f.write(f"{i} {j}\n")
    deep = os.path.join(root, os.path.dirname(WIDE_DEEP))
    os.makedirs(deep)
    with open(os.path.join(root, WIDE_DEEP), "w") as f:
        f.write("found it\n")
    for i in range(0, top, 8):
        os.symlink(f"../d{i:02}/s00/f", os.path.join(root, f"d{(i + 1) % top:02}", "link"))
    for dirpath, dirnames, filenames in os.walk(root):  # a store path's modes
        os.chmod(dirpath, 0o555)
        for name in filenames:
            path = os.path.join(dirpath, name)
            if not os.path.islink(path):
                os.chmod(path, 0o444)
    return WIDE_NAME, top * sub + top + 4
