"""rules_nixpkgs' own remote flow, end to end, against lazystore's server setup.

The Nix server: a chroot store (local?root=SRV, sandbox on, sandbox-paths so builders find
/bin/sh), reached through a real sshd on 127.0.0.1 whose key is restricted by
packaging/server/lazystore-serve; nfs-ganesha exports SRV/nix/store; a lazystore mount of that
export. The developer: a private /nix (bwrap), BAZEL_NIX_REMOTE=nix-server as a Host alias of a
private ssh config (ssh -F, NIX_SSHOPTS). The executor: bwrap with the lazystore mount at
/nix/store.

- rules_nixpkgs' three commands exactly as core/nixpkgs.bzl runs them (nix-build --store
  ssh-ng://…?max-connections=1 --eval-store auto; ssh … "nix-store --add-root
  ~/rules_nixpkgs_gcroots/NAME -r OUT"; nix copy --from ssh-ng://…, then the local nix-build)
  build a small derivation on the server; the server's GC keeps it; the executor runs it from
  lazystore; the root is listed and expired by lazystore-push roots.
- A server build that takes a few seconds, polled through the mount while it runs: hidden while
  Nix holds <out>.lock (and nothing of Nix's scratch shows), visible within negative-timeout
  once valid.
- lazystore-push over ssh-ng: a locally built closure of 51 paths, its root kept by the
  server's GC, the program run by the executor from lazystore.
"""

import json
import os
import shlex
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(__file__))

from lazystore_testlib import LazystoreTestCase, log, main, read_file, run, skip  # noqa: E402
from nfs_server import Ganesha, wait_until  # noqa: E402
from ssh_server import Sshd  # noqa: E402

SOURCE_ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
WRAPPER = os.path.join(SOURCE_ROOT, "packaging", "server", "lazystore-serve")
NEGATIVE_TIMEOUT = 1.0
DEADLINE = 300.0

NIX_CONF = """build-users-group =
substituters =
experimental-features = nix-command
sandbox = true
sandbox-paths = /bin /lib /lib64 /usr
"""

DEFAULT_NIX = r"""
{ salt ? "" }:
let
  system = builtins.currentSystem;
  leaves = builtins.genList (i: builtins.toFile "leaf-${toString i}" "leaf ${toString i} ${salt}\n") 40;
  parts = builtins.genList (i: derivation {
    name = "part-${toString i}";
    inherit system;
    builder = "/bin/sh";
    args = [ "-c" "/bin/mkdir $out; echo 'part ${toString i}' > $out/data; echo ${builtins.elemAt leaves (i * 4)} > $out/leaf" ];
  }) 10;
in {
  # What rules_nixpkgs' nixpkgs_package would build on the server: a directory with a program.
  hello = derivation {
    name = "hello-remote";
    inherit system;
    builder = "/bin/sh";
    args = [ "-c" ''
      /bin/mkdir -p $out/bin
      printf '#!/bin/sh\necho hello from the server build ${salt}\n' > $out/bin/hello
      /bin/chmod +x $out/bin/hello
    '' ];
  };
  # The same that takes a few seconds to build (the builder's own work, not synchronisation).
  slow = derivation {
    name = "slow-remote";
    inherit system;
    builder = "/bin/sh";
    args = [ "-c" ''
      /bin/mkdir -p $out/bin
      /bin/sleep 4
      printf '#!/bin/sh\necho built slowly\n' > $out/bin/slow
      /bin/chmod +x $out/bin/slow
    '' ];
  };
  # A closure of 51 paths built locally: the program, 10 parts, 40 leaves.
  program = derivation {
    name = "program";
    inherit system;
    builder = "/bin/sh";
    args = [ "-c" ''
      /bin/mkdir -p $out/bin
      {
        echo '#!/bin/sh'
        ${builtins.concatStringsSep "\n" (map (p: "echo '/bin/cat ${p}/data'") parts)}
        echo '/bin/cat ${builtins.elemAt leaves 39}'
        echo '# ${builtins.concatStringsSep " " leaves}'
      } > $out/bin/program
      /bin/chmod +x $out/bin/program
    '' ];
  };
}
"""


class RulesNixpkgsFlow(LazystoreTestCase):
    @classmethod
    def setUpClass(cls):
        cls.fixture = None  # this file makes its own stores
        for tool in ("nix-build", "nix-daemon", "ssh", "ssh-keygen", "bwrap", "ganesha.nfsd"):
            if subprocess.run(["sh", "-c", f"command -v {tool}"], stdout=subprocess.DEVNULL).returncode != 0:
                skip(f"no {tool}")
        if not os.path.exists("/usr/sbin/sshd"):
            skip("no sshd")
        if not os.access(os.environ.get("LAZYSTORE_PUSH_BIN", ""), os.X_OK):
            skip("LAZYSTORE_PUSH_BIN is not set to lazystore-push")

    def setUp(self):
        super().setUp()
        w = self.work
        self.srv = os.path.join(w, "srv")
        self.srv_store = f"local?root={self.srv}"
        self.server_home = os.path.join(w, "server-home")  # the push user's home on the server
        self.dev_nix = os.path.join(w, "dev", "nix")       # the developer's /nix
        self.repo = os.path.join(w, "repo")                # the Bazel workspace
        for d in (self.server_home, self.dev_nix, self.repo, os.path.join(w, "dev-home")):
            os.makedirs(d)
        with open(os.path.join(self.repo, "default.nix"), "w") as f:
            f.write(DEFAULT_NIX)
        # The server signs what it builds; the developer trusts that key (so step 3's copy back
        # is accepted, as on a real rules_nixpkgs setup that wants it).
        key = os.path.join(w, "server-signing")
        run(["nix-store", "--generate-binary-cache-key", "nix-server-1", key + ".sec", key + ".pub"])
        with open(key + ".pub") as f:
            public_key = f.read().strip()
        self.server_conf = os.path.join(w, "server-conf")
        self.dev_conf = os.path.join(w, "dev-conf")
        for conf, extra in ((self.server_conf, f"secret-key-files = {key}.sec\n"),
                            (self.dev_conf, f"trusted-public-keys = {public_key}\n")):
            os.makedirs(conf)
            with open(os.path.join(conf, "nix.conf"), "w") as f:
                f.write(NIX_CONF + extra)
        self.server_env = dict(os.environ, NIX_CONF_DIR=self.server_conf, HOME=self.server_home)
        self.server_env.pop("NIX_REMOTE", None)
        run(["nix-store", "--store", self.srv_store, "--init"], env=self.server_env)

        # sshd, the key restricted by the forced command exactly as packaging/server/ documents.
        self.sshd = Sshd(os.path.join(w, "sshd"))
        self.addCleanup(self.sshd.close)
        command = (f"NIX_CONF_DIR={self.server_conf} HOME={self.server_home} exec {WRAPPER} "
                   f"--store '{self.srv_store}' --roots-dir {self.srv}/nix/var/nix/gcroots/lazystore")
        self.sshd.authorize("nix-server", f'restrict,command="{command}"')
        self.sshd.start()

        # The Nix server's NFS export, and the executor's lazystore mount of it.
        self.ganesha = Ganesha.v4(os.path.join(self.srv, "nix", "store"), os.path.join(w, "ganesha"))
        self.addCleanup(self.ganesha.close)
        self.daemon = self.mount(self.ganesha.url(4), {"negative-timeout": int(NEGATIVE_TIMEOUT)})

        self.dev_env = dict(os.environ, NIX_CONF_DIR=self.dev_conf, HOME=os.path.join(w, "dev-home"),
                            NIX_SSHOPTS=f"-F {self.sshd.ssh_config}", BAZEL_NIX_REMOTE="nix-server",
                            LAZYSTORE_PUSH_PERSIST="0")
        self.dev_env.pop("NIX_REMOTE", None)
        self.developer(["nix-store", "--init"])

    # --- the three machines -----------------------------------------------------------------

    def developer(self, argv, check=True, timeout=DEADLINE):
        """A command on the developer's machine: its own /nix (bwrap), cwd the workspace."""
        wrapped = ["bwrap", "--dev-bind", "/", "/", "--bind", self.dev_nix, "/nix", "--chdir", self.repo, "--", *argv]
        result = subprocess.run(wrapped, env=self.dev_env, text=True, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, timeout=timeout)
        if check and result.returncode != 0:
            self.fail(f"developer: {shlex.join(argv)} exited {result.returncode}:\n{result.stdout}\n{result.stderr}")
        return result

    def server(self, *args, check=True):
        return subprocess.run(["nix-store", "--store", self.srv_store, *args], env=self.server_env, text=True,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, check=check, timeout=DEADLINE)

    def server_valid(self, *paths):
        return self.server("--check-validity", *paths, check=False).returncode == 0

    def executor(self, *argv):
        """A build action on the executor: lazystore's mount is its /nix/store."""
        return run(["bwrap", "--dev-bind", "/", "/", "--tmpfs", "/nix", "--bind", self.daemon.mountpoint,
                    "/nix/store", "--", *argv])

    def lazystore_push(self, *args, check=True):
        result = self.developer([os.environ["LAZYSTORE_PUSH_BIN"], "-F", self.sshd.ssh_config, *args], check=check)
        return result

    # --- rules_nixpkgs' commands, as core/nixpkgs.bzl (_nixpkgs_build_and_symlink) runs them ---

    def rules_nixpkgs_remote_build(self, attribute, extra=()):
        host = self.dev_env["BAZEL_NIX_REMOTE"]
        store = f"ssh-ng://{host}?max-connections=1"
        expr_args = ["default.nix", "-A", attribute, "--out-link", "bazel-support/nix-out-link", *extra]
        build = self.developer(["nix-build", "--store", store, "--eval-store", "auto", *expr_args])
        out = build.stdout.splitlines()[-1]
        root = out.split("/")[-1]
        # rules_nixpkgs runs [ssh, host, "nix-store --add-root ~/…"]; -F keeps the real ~/.ssh out.
        self.developer(["ssh", "-F", self.sshd.ssh_config, host,
                        f"nix-store --add-root ~/rules_nixpkgs_gcroots/{root} -r {out}"])
        copy = self.developer(["nix", "copy", "--from", store, out], check=False)  # status ignored there
        local = self.developer(["nix-build", *expr_args])
        return out, copy, local

    # ------------------------------------------------------------------------------------------

    def test_rules_nixpkgs_remote_flow(self):
        out, copy, local = self.rules_nixpkgs_remote_build("hello")
        name = os.path.basename(out)
        log(f"built on the server: {out}")
        self.assertTrue(self.server_valid(out), "the output is not valid on the server")
        # Step 3 worked too: the server signed the build, the developer's store took it, so the
        # local nix-build found it and built nothing.
        self.assertEqual(copy.returncode, 0, copy.stderr)
        self.assertNotIn("will be built", local.stderr)
        self.assertEqual(local.stdout.splitlines()[-1], out)
        link = os.path.join(self.server_home, "rules_nixpkgs_gcroots", name)
        self.assertEqual(os.readlink(link), out)
        auto = os.path.join(self.srv, "nix", "var", "nix", "gcroots", "auto")
        self.assertIn(link, [os.readlink(os.path.join(auto, e)) for e in os.listdir(auto)])

        self.server("--gc")
        self.assertTrue(self.server_valid(out), "the server's GC deleted a rules_nixpkgs root")
        self.assertEqual(self.executor(f"{out}/bin/hello"), "hello from the server build\n")

        # The root is listed and expired like lazystore's own.
        listing = json.loads(self.lazystore_push("--json", "roots").stdout)
        self.assertIn(f"rules_nixpkgs/{name}", [r["name"] for r in listing["roots"]])
        then = time.time() - 40 * 86400
        os.utime(link, (then, then), follow_symlinks=False)
        expired = json.loads(self.lazystore_push("--json", "roots", "--older-than", "30d", "--delete").stdout)
        self.assertEqual(expired["deleted"], [f"rules_nixpkgs/{name}"])
        self.server("--gc")
        self.assertFalse(self.server_valid(out), "an expired root still kept its path")

    def test_server_build_hidden_until_valid(self):
        mount = self.daemon.mountpoint
        instantiated = self.developer(["nix-instantiate", "--eval", "-E", "(import ./default.nix {}).slow.outPath"])
        out = json.loads(instantiated.stdout)
        name = os.path.basename(out)
        real = os.path.join(self.srv, "nix", "store", name)
        self.assertFalse(os.path.lexists(os.path.join(mount, name)))
        build = subprocess.Popen(
            ["bwrap", "--dev-bind", "/", "/", "--bind", self.dev_nix, "/nix", "--chdir", self.repo, "--",
             "nix-build", "--store", "ssh-ng://nix-server?max-connections=1", "--eval-store", "auto",
             "default.nix", "-A", "slow", "--out-link", "bazel-support/nix-out-link"],
            env=self.dev_env, text=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        def reap():
            if build.poll() is None:
                build.kill()
            build.communicate(timeout=DEADLINE)
        self.addCleanup(reap)
        wait_until(lambda: os.path.exists(real + ".lock") or build.poll() is not None, 120,
                   "the server starts building (Nix takes <out>.lock)")
        self.assertIsNone(build.poll(), "the build ended before it was seen running")
        polls = 0
        seen_on_server = set()
        while build.poll() is None:
            # While Nix builds: the output hidden, in lookups and in the listing, and nothing that
            # is not a complete store path (Nix's <drv>.chroot scratch directory) listed.
            top = os.listdir(mount)
            seen_on_server.update(os.listdir(os.path.join(self.srv, "nix", "store")))
            valid = self.server_valid(out)
            if not valid:
                self.assertNotIn(name, top, "a path still being built is listed")
                self.assertFalse(os.path.lexists(os.path.join(mount, name)), "a path still being built is visible")
            for entry in top:
                self.assertFalse(entry.endswith(".chroot") or entry.endswith(".lock"), f"listed: {entry}")
            polls += 1
            time.sleep(0.05)  # polling interval while the build runs
        stdout, stderr = build.communicate(timeout=DEADLINE)
        self.assertEqual(build.returncode, 0, stderr)
        self.assertEqual(stdout.splitlines()[-1], out)
        valid_at = time.monotonic()
        self.assertTrue(any(e.endswith(".drv.chroot") for e in seen_on_server),
                        f"the server never had a chroot directory: {sorted(seen_on_server)}")
        log(f"{polls} polls of the mount while the server built {name}")
        self.assertGreater(polls, 10)
        wait_until(lambda: os.path.exists(os.path.join(mount, name)), NEGATIVE_TIMEOUT + 10,
                   "the built path shows up")
        delay = time.monotonic() - valid_at
        log(f"visible {delay:.2f} s after the build ended (negative-timeout {NEGATIVE_TIMEOUT} s)")
        self.assertLessEqual(delay, NEGATIVE_TIMEOUT + 5.0)
        self.assertEqual(read_file(os.path.join(mount, name, "bin", "slow")),
                         b"#!/bin/sh\necho built slowly\n")

    def test_lazystore_push_over_ssh_ng(self):
        built = self.developer(["nix-build", "default.nix", "-A", "program", "--out-link", "result"])
        program = built.stdout.splitlines()[-1]
        closure = self.developer(["nix-store", "-qR", program]).stdout.split()
        self.assertGreaterEqual(len(closure), 50)
        pushed = json.loads(self.lazystore_push("--json", "--root", "program", "result").stdout)
        self.assertEqual(pushed["protocol"], "daemon")
        self.assertEqual(pushed["copied_paths"], len(closure))
        self.assertEqual(pushed["server_nix_version"], "2.8.0")
        self.server("--verify-path", *closure)
        self.server("--gc")
        self.assertTrue(self.server_valid(*closure), "the server's GC deleted a pushed, rooted path")
        output = self.executor(f"{program}/bin/program")
        self.assertEqual(output, "".join(f"part {i}\n" for i in range(10)) + "leaf 39 \n")
        again = json.loads(self.lazystore_push("--json", "result").stdout)
        self.assertEqual((again["missing"], again["bytes_sent"]), ([], 0))


if __name__ == "__main__":
    main()
