"""A real sshd for the tests: OpenSSH's sshd on 127.0.0.1 at a free port, with its own host key,
one client key per `authorize()` (each with its own authorized_keys line, e.g. a forced
command), and a private client config (`ssh_config`, known_hosts) with one Host alias per key.
Nothing here reads or writes the real ~/.ssh or /etc/ssh.

sshd runs commands through the login shell; this machine's /root/.bashrc spends seconds in tool
setup, so sshd runs in a private mount namespace where that file is empty.
"""

import os
import socket
import subprocess

from lazystore_testlib import log
from nfs_server import free_port, wait_until

START_DEADLINE = 30.0


class Sshd:
    def __init__(self, work):
        self.work = work
        os.makedirs(work, exist_ok=True)
        self.port = free_port()
        self.host_key = os.path.join(work, "hostkey")
        self.authorized_keys = os.path.join(work, "authorized_keys")
        self.ssh_config = os.path.join(work, "ssh_config")
        self.known_hosts = os.path.join(work, "known_hosts")
        self.log_path = os.path.join(work, "sshd.log")
        self.process = None
        for path in (self.authorized_keys, self.ssh_config):
            open(path, "w").close()
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", self.host_key,
                        "-C", "lazystore-test-host"], check=True)
        with open(self.host_key + ".pub") as f:
            key = " ".join(f.read().split()[:2])
        with open(self.known_hosts, "w") as f:
            f.write(f"[127.0.0.1]:{self.port} {key}\n")

    def authorize(self, alias, options):
        """A new client key whose authorized_keys line has `options` (e.g. 'restrict,command="…"'),
        and a Host `alias` for it in ssh_config; returns the private key's path."""
        key = os.path.join(self.work, f"key-{alias}")
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", key, "-C", f"lazystore-test-{alias}"],
                       check=True)
        with open(key + ".pub") as f:
            public = f.read().strip()
        with open(self.authorized_keys, "a") as f:
            f.write(f"{options} {public}\n")
        with open(self.ssh_config, "a") as f:
            f.write(f"Host {alias}\n  Hostname 127.0.0.1\n  Port {self.port}\n  User root\n"
                    f"  IdentityFile {key}\n  IdentitiesOnly yes\n  UserKnownHostsFile {self.known_hosts}\n"
                    f"  StrictHostKeyChecking yes\n  BatchMode yes\n")
        return key

    def start(self):
        os.makedirs("/run/sshd", exist_ok=True)  # sshd's privilege-separation directory
        config = os.path.join(self.work, "sshd_config")
        with open(config, "w") as f:
            f.write(f"Port {self.port}\nListenAddress 127.0.0.1\nHostKey {self.host_key}\n"
                    f"AuthorizedKeysFile {self.authorized_keys}\nPermitRootLogin prohibit-password\n"
                    "StrictModes no\nUsePAM no\nPasswordAuthentication no\nKbdInteractiveAuthentication no\n"
                    "PidFile none\nLogLevel INFO\n")
        empty = os.path.join(self.work, "empty-bashrc")
        open(empty, "w").close()
        with open(self.log_path, "wb") as err:
            self.process = subprocess.Popen(
                ["unshare", "--mount", "--propagation", "private", "/bin/sh", "-c",
                 'mount --bind "$1" /root/.bashrc 2>/dev/null || true; exec /usr/sbin/sshd -f "$2" -D -e',
                 "sh", empty, config],
                stdin=subprocess.DEVNULL, stdout=err, stderr=err)

        def up():
            if self.process.poll() is not None:
                raise AssertionError(f"sshd exited {self.process.returncode}:\n{self.log()}")
            with socket.socket() as s:
                return s.connect_ex(("127.0.0.1", self.port)) == 0
        wait_until(up, START_DEADLINE, "sshd listening")
        return self

    def log(self):
        try:
            with open(self.log_path, errors="replace") as f:
                return f.read()[-4000:]
        except OSError:
            return ""

    def close(self):
        if self.process is None:
            return
        if self.process.poll() is None:
            self.process.terminate()
        try:
            self.process.wait(timeout=START_DEADLINE)
        except subprocess.TimeoutExpired:
            log("sshd did not stop on SIGTERM; killing it")
            self.process.kill()
            self.process.wait(timeout=START_DEADLINE)
        self.process = None
