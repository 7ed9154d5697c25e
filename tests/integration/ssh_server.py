"""A real sshd for the tests, the benchmarks and the demo: OpenSSH's sshd on 127.0.0.1 at a free
port, with its own host key, one client key per `authorize()` (each with its own authorized_keys
line, e.g. a forced command), and a private client config (`ssh_config`, `known_hosts`) with one
Host alias per key. Nothing here reads or writes the real ~/.ssh or /etc/ssh.

Files in `work`: hostkey(.pub), authorized_keys, ssh_config, known_hosts, sshd_config, sshd.log,
and key-ALIAS(.pub) per client key unless `authorize(key=…)` names another path.

sshd runs commands through the login shell; this machine's /root/.bashrc spends seconds in tool
setup, so sshd runs in a private mount namespace where that file is empty (and where the copies
of other tests' FUSE mounts are detached, so that they do not outlive those tests' unmounts).

`close()` ends sshd and the sessions it still serves (their server-side commands too): a
listener that exits leaves its sessions running.
"""

import os
import subprocess

from lazystore_testlib import DETACH_FUSE_MOUNTS, descendants, free_port, log, port_open, terminate_processes, wait_until

START_DEADLINE = 30.0

# Client options of a Host alias by default: this key only, this host key only, no prompts.
STRICT_CLIENT = ("IdentitiesOnly yes", "StrictHostKeyChecking yes", "BatchMode yes")
SFTP_SERVER = "/usr/lib/openssh/sftp-server"


class Sshd:
    """sftp=True serves the sftp subsystem (sshfs, rclone); log_level is sshd's LogLevel."""

    def __init__(self, work, sftp=False, log_level="INFO"):
        self.work = work
        os.makedirs(work, exist_ok=True)
        self.port = free_port()
        self.sftp = sftp
        self.log_level = log_level
        self.host_key = os.path.join(work, "hostkey")
        self.authorized_keys = os.path.join(work, "authorized_keys")
        self.ssh_config = os.path.join(work, "ssh_config")
        self.known_hosts = os.path.join(work, "known_hosts")
        self.config = os.path.join(work, "sshd_config")
        self.log_path = os.path.join(work, "sshd.log")
        self.keys = {}  # alias -> private key path
        self.process = None
        for path in (self.authorized_keys, self.ssh_config):
            open(path, "w").close()
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", self.host_key,
                        "-C", "lazystore-test-host"], check=True)
        with open(self.host_key + ".pub") as f:
            key = " ".join(f.read().split()[:2])
        with open(self.known_hosts, "w") as f:
            f.write(f"[127.0.0.1]:{self.port} {key}\n")

    def authorize(self, alias, options="", key=None, client_options=STRICT_CLIENT):
        """A new client key (at `key`, default work/key-ALIAS) whose authorized_keys line has
        `options` (e.g. 'restrict,command="…"'), and a Host `alias` for it in ssh_config with
        `client_options` lines; returns the private key's path. Keys may be added while sshd
        runs (it reads authorized_keys per connection)."""
        key = key or os.path.join(self.work, f"key-{alias}")
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", key, "-C", f"lazystore-test-{alias}"],
                       check=True)
        with open(key + ".pub") as f:
            public = f.read().strip()
        with open(self.authorized_keys, "a") as f:
            f.write(f"{options} {public}\n" if options else f"{public}\n")
        lines = ["Hostname 127.0.0.1", f"Port {self.port}", "User root", f"IdentityFile {key}",
                 f"UserKnownHostsFile {self.known_hosts}", *client_options]
        with open(self.ssh_config, "a") as f:
            f.write(f"Host {alias}\n" + "".join(f"  {line}\n" for line in lines))
        self.keys[alias] = key
        return key

    def start(self):
        assert self.process is None, "already running"
        os.makedirs("/run/sshd", exist_ok=True)  # sshd's privilege-separation directory
        with open(self.config, "w") as f:
            f.write(f"Port {self.port}\nListenAddress 127.0.0.1\nHostKey {self.host_key}\n"
                    f"AuthorizedKeysFile {self.authorized_keys}\nPermitRootLogin prohibit-password\n"
                    "StrictModes no\nUsePAM no\nPasswordAuthentication no\nKbdInteractiveAuthentication no\n"
                    f"PidFile none\nLogLevel {self.log_level}\n"
                    + (f"Subsystem sftp {SFTP_SERVER}\n" if self.sftp else ""))
        empty = os.path.join(self.work, "empty-bashrc")
        open(empty, "w").close()
        with open(self.log_path, "ab") as err:
            self.process = subprocess.Popen(
                ["unshare", "--mount", "--propagation", "private", "/bin/sh", "-c",
                 DETACH_FUSE_MOUNTS +
                 'mount --bind "$1" /root/.bashrc 2>/dev/null || true; exec /usr/sbin/sshd -f "$2" -D -e',
                 "sh", empty, self.config],
                stdin=subprocess.DEVNULL, stdout=err, stderr=err)

        def up():
            if self.process.poll() is not None:
                raise AssertionError(f"sshd exited {self.process.returncode}:\n{self.log()}")
            return port_open(self.port)
        try:
            wait_until(up, START_DEADLINE, "sshd listening")
        except BaseException:
            self.close()
            raise
        return self

    @property
    def pid(self):
        return self.process.pid if self.process is not None else None

    def ssh_argv(self, alias, *command):
        """OpenSSH's client to `alias` with this server's private config."""
        return ["ssh", "-F", self.ssh_config, alias, *command]

    def log(self):
        try:
            with open(self.log_path, errors="replace") as f:
                return f.read()[-4000:]
        except OSError:
            return ""

    def close(self):
        if self.process is None:
            return
        sessions = descendants(self.process.pid)  # taken first: they outlive the listener
        if self.process.poll() is None:
            self.process.terminate()
        try:
            self.process.wait(timeout=START_DEADLINE)
        except subprocess.TimeoutExpired:
            log("sshd did not stop on SIGTERM; killing it")
            self.process.kill()
            self.process.wait(timeout=START_DEADLINE)
        self.process = None
        left = terminate_processes(sessions, START_DEADLINE)
        if left:
            log(f"sshd sessions still running after SIGKILL: {left}")
