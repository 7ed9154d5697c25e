"""Real NFS servers for the tests: nfs-ganesha (VFS FSAL) exporting a directory.

- `Ganesha.v4(export_dir, work)`: NFSv4 on 127.0.0.1 at a free port, no rpcbind needed.
- `Ganesha.v3(export_dir, work)`: NFSv3 and v4 with rpcbind, in a private network namespace
  (`ip netns add`) with `lo` up; run clients there with `netns_argv()`.
Each server can be stopped (SIGKILL), frozen (SIGSTOP/SIGCONT) and restarted on the same port.
"""

import os
import signal
import subprocess
import uuid

from lazystore_testlib import log

START_DEADLINE = 30.0


# Their home is lazystore_testlib; tests import them from here too.
from lazystore_testlib import DETACH_FUSE_MOUNTS, free_port, wait_until  # noqa: E402,F401


class Ganesha:
    def __init__(self, export_dir, work, protocols, netns=None, numeric_owners=False):
        """numeric_owners: NFSv4 owners as numbers ("0", as the kernel's nfsd sends for AUTH_SYS)
        instead of names ("root@localdomain"), which libnfs resolves through NSS per entry."""
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
        owners = "Allow_Numeric_Owners = true; Only_Numeric_Owners = true; " if numeric_owners else ""
        protos = ", ".join(str(p) for p in protocols)
        # In a private namespace, all addresses are loopback (and ganesha cannot resolve
        # 127.0.0.1 without a configured non-loopback address).
        bind = "" if netns else "Bind_addr = 127.0.0.1;"
        with open(self.config, "w") as f:
            f.write(f"""
NFS_CORE_PARAM {{
  Protocols = {protos};
  NFS_Port = {self.port};
  {bind}
  Enable_NLM = false;
  Enable_RQUOTA = false;
}}
NFSV4 {{ Graceless = true; RecoveryBackend = fs; RecoveryRoot = "{recovery}"; {owners}}}
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
    def v4(cls, export_dir, work, **options):
        return cls(export_dir, work, protocols=(4,), **options).start()

    @classmethod
    def v3(cls, export_dir, work):
        netns = "lzt-" + uuid.uuid4().hex[:8]
        subprocess.run(["ip", "netns", "add", netns], check=True)
        server = cls(export_dir, work, protocols=(3, 4), netns=netns)
        try:
            subprocess.run(server.netns_argv(["ip", "link", "set", "lo", "up"]), check=True)
            # rpcbind keeps its lock and socket in /run: a private /run keeps it apart from any
            # rpcbind of the host; ganesha then registers with it over the namespace's loopback.
            # The new mount namespace copies every mount there is, FUSE mounts of other tests
            # too, and a copy keeps its FUSE connection (and daemon) alive after the test's own
            # unmount: the copies are detached at once.
            server.rpcbind = subprocess.Popen(
                server.netns_argv(["unshare", "--mount", "sh", "-c", DETACH_FUSE_MOUNTS +
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

    def url(self, version=4):
        if version == 4:
            return f"nfs://127.0.0.1/store?version=4&nfsport={self.port}"
        return f"nfs://127.0.0.1{self.export_dir}?version=3"

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
