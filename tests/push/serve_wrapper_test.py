"""The forced command (packaging/server/lazystore-serve) as sshd runs it: a table of what a key
may ask for (SSH_ORIGINAL_COMMAND) and exactly what the wrapper then runs — recorded by stand-in
nix-store/nix-daemon programs — or the one line with which it refuses; rules_nixpkgs' roots
(listed, expired, a renewed one kept, Nix's GC held off while one is checked); and the
lazystore-roots-expire service's own ExecStart lines run against a real throw-away store.

Environment: SOURCE_ROOT (the source tree).
"""

import os
import shlex
import shutil
import subprocess
import tempfile
import time
import unittest

SOURCE_ROOT = os.environ.get("SOURCE_ROOT", os.path.join(os.path.dirname(__file__), "..", ".."))
SERVER = os.path.join(SOURCE_ROOT, "packaging", "server")
WRAPPER = os.path.join(SERVER, "lazystore-serve")
DEADLINE = 60.0

P1 = "/nix/store/" + "a" * 32 + "-hello-remote"
P2 = "/nix/store/" + "b" * 32 + "-two"
NAME = P1[len("/nix/store/"):]


def wait_until(predicate, what, deadline=DEADLINE):
    end = time.monotonic() + deadline
    while not predicate():
        if time.monotonic() > end:
            raise AssertionError(f"{what}: not within {deadline} s")
        time.sleep(0.02)  # polling interval, bounded by the deadline


class Work(unittest.TestCase):
    def setUp(self):
        self.work = tempfile.mkdtemp(prefix="lazystore-serve-test-")
        self.addCleanup(shutil.rmtree, self.work, ignore_errors=True)
        self.home = os.path.join(self.work, "home")
        os.makedirs(self.home)
        self.roots = os.path.join(self.work, "state", "nix", "var", "nix", "gcroots", "lazystore")
        self.rules = os.path.join(self.home, "rules_nixpkgs_gcroots")
        self.log = os.path.join(self.work, "ran.log")
        self.fake = os.path.join(self.work, "fake-nix")
        with open(self.fake, "w") as f:
            # Records its name and every argument, one a line, then a blank line.
            f.write('#!/bin/sh\n{ echo "${0##*/}"; for a in "$@"; do echo "$a"; done; echo; } >> "$FAKE_LOG"\n')
        os.chmod(self.fake, 0o755)
        for name in ("nix-store", "nix-daemon"):
            os.symlink(self.fake, os.path.join(self.work, name))

    def wrapper_argv(self, *options):
        return ["sh", WRAPPER, "--store", "local?root=/srv/nix", "--roots-dir", self.roots,
                "--nix-store", os.path.join(self.work, "nix-store"),
                "--nix-daemon", os.path.join(self.work, "nix-daemon"), *options]

    def run_as_sshd(self, command, *options, stdin=""):
        """The wrapper as a forced command: HOME as sshd sets it, the client's command unexpanded."""
        env = dict(os.environ, HOME=self.home, FAKE_LOG=self.log)
        env.pop("SSH_ORIGINAL_COMMAND", None)
        if command is not None:
            env["SSH_ORIGINAL_COMMAND"] = command
        if os.path.exists(self.log):
            os.unlink(self.log)
        return subprocess.run(self.wrapper_argv(*options), input=stdin, env=env, text=True,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=DEADLINE)

    def ran(self):
        """What the stand-ins were run with: a list of argv lists."""
        if not os.path.exists(self.log):
            return []
        with open(self.log) as f:
            return [block.split("\n") for block in f.read().split("\n\n") if block]


class ForcedCommand(Work):
    def test_allowed_commands_run_exactly_this(self):
        rules = self.rules
        cases = [
            ("nix-daemon --stdio", ["nix-daemon", "--stdio", "--store", "local?root=/srv/nix"]),
            ("/usr/bin/nix-daemon --stdio", ["nix-daemon", "--stdio", "--store", "local?root=/srv/nix"]),
            ("nix-store --serve", ["nix-store", "--store", "local?root=/srv/nix", "--serve"]),
            ("nix-store --serve --write", ["nix-store", "--store", "local?root=/srv/nix", "--serve", "--write"]),
            (f"nix-store --add-root ~/rules_nixpkgs_gcroots/{NAME} -r {P1}",
             ["nix-store", "--store", "local?root=/srv/nix", "--add-root", f"{rules}/{NAME}", "-r", P1]),
            (f"nix-store --add-root ~/rules_nixpkgs_gcroots/{NAME} -r {P1} {P2}",
             ["nix-store", "--store", "local?root=/srv/nix", "--add-root", f"{rules}/{NAME}", "-r", P1, P2]),
        ]
        for command, expected in cases:
            with self.subTest(command=command):
                result = self.run_as_sshd(command)
                self.assertEqual(result.returncode, 0, result.stderr)
                self.assertEqual(self.ran(), [expected])
        self.assertTrue(os.path.isdir(rules), "the rules_nixpkgs roots directory is created")

    def test_everything_else_is_refused_with_one_line(self):
        add_root = "nix-store --add-root ~/rules_nixpkgs_gcroots/"
        cases = [
            (None, "interactive logins are not allowed"),
            ("", "interactive logins are not allowed"),
            ("nix-daemon", "only 'nix-daemon --stdio'"),
            ("nix-daemon --daemon", "only 'nix-daemon --stdio'"),
            ("nix-daemon --stdio --store /tmp/other", "only 'nix-daemon --stdio'"),
            ("nix-daemon --stdio;id", "only 'nix-daemon --stdio'"),
            ("nix-daemon --stdio --option build-hook /tmp/x", "only 'nix-daemon --stdio'"),
            ("nix-store --serve --write --store /tmp/other", "only 'nix-store --serve [--write]'"),
            ("nix-store --store /tmp/other --serve", "only 'nix-store --serve [--write]'"),
            ("nix-store --gc", "only 'nix-store --serve [--write]'"),
            (f"nix-store --delete {P1}", "only 'nix-store --serve [--write]'"),
            (f"nix-store -r {P1}", "only 'nix-store --serve [--write]'"),
            (f"nix-store --add-root /tmp/x -r {P1}", "only be added as ~/rules_nixpkgs_gcroots/NAME"),
            (f"nix-store --add-root ~root/rules_nixpkgs_gcroots/{NAME} -r {P1}", "only be added as"),
            (f"nix-store --add-root ~/other/{NAME} -r {P1}", "only be added as"),
            (f"{add_root}../escape -r {P1}", "bad root name"),
            (f"{add_root}a/b -r {P1}", "bad root name"),
            (f"{add_root}.hidden -r {P1}", "bad root name"),
            (f"{add_root} -r {P1}", "bad root name"),
            (f"{add_root}{NAME} -r /etc/passwd", "not a store path"),
            (f"{add_root}{NAME} -r {P1} --indirect", "not a store path"),
            (f"{add_root}{NAME} -r", "only 'nix-store --add-root"),
            (f"{add_root}{NAME} --realise {P1}", "only 'nix-store --add-root"),
            (f"{add_root}{NAME} {P1}", "only 'nix-store --add-root"),
            ("sh -c id", "command not allowed for this key: sh"),
            ("bash", "command not allowed for this key: bash"),
            ("cat /etc/passwd", "command not allowed for this key: cat"),
            ("nix copy --to file:///tmp/x /nix/store", "command not allowed for this key: nix"),
            ("nix-build /tmp/x.nix", "command not allowed for this key: nix-build"),
            ("scp -t /tmp", "command not allowed for this key: scp"),
            ("rsync --server . /", "command not allowed for this key: rsync"),
            ("internal-sftp", "command not allowed for this key: internal-sftp"),
            ("$(id)", "command not allowed for this key: $(id)"),
            ("lazystore-roots add ../x", "bad root name"),
        ]
        for command, fragment in cases:
            with self.subTest(command=command):
                result = self.run_as_sshd(command, stdin=f"{P1}\n.\n")
                self.assertEqual(result.returncode, 1)
                lines = result.stderr.splitlines()
                self.assertEqual(len(lines), 1, result.stderr)
                self.assertTrue(lines[0].startswith("lazystore-serve: "), lines[0])
                self.assertIn(fragment, lines[0])
                self.assertEqual(self.ran(), [], "nothing may run for a refused command")
                self.assertFalse(os.path.exists(os.path.join(self.home, "rules_nixpkgs_gcroots", "..", "escape")))

    def test_read_only_key(self):
        result = self.run_as_sshd("nix-store --serve --write", "--read-only")
        self.assertEqual(result.returncode, 0, result.stderr)
        self.assertEqual(self.ran(), [["nix-store", "--store", "local?root=/srv/nix", "--serve"]])
        for command in ("nix-daemon --stdio", f"nix-store --add-root ~/rules_nixpkgs_gcroots/{NAME} -r {P1}",
                        "lazystore-roots add x", "lazystore-roots delete x", "lazystore-roots expire --older-than 1d"):
            with self.subTest(command=command):
                result = self.run_as_sshd(command, "--read-only", stdin=f"{P1}\n.\n")
                self.assertEqual(result.returncode, 1)
                self.assertIn("read-only", result.stderr)
                self.assertEqual(self.ran(), [])
        self.assertEqual(self.run_as_sshd("lazystore-roots list", "--read-only").returncode, 0)

    def test_tilde_is_the_login_shells_home(self):
        other = os.path.join(self.work, "elsewhere")
        env = dict(os.environ, HOME=other, FAKE_LOG=self.log,
                   SSH_ORIGINAL_COMMAND=f"nix-store --add-root ~/rules_nixpkgs_gcroots/{NAME} -r {P1}")
        subprocess.run(self.wrapper_argv(), env=env, check=True, timeout=DEADLINE)
        self.assertEqual(self.ran()[0][4], f"{other}/rules_nixpkgs_gcroots/{NAME}")
        # An explicit --rules-nixpkgs-roots wins (the timer, run as another user, needs it).
        fixed = os.path.join(self.work, "fixed")
        subprocess.run(self.wrapper_argv("--rules-nixpkgs-roots", fixed), env=env, check=True, timeout=DEADLINE)
        self.assertEqual(self.ran()[-1][4], f"{fixed}/{NAME}")


class RulesNixpkgsRoots(Work):
    def make_rules_root(self, name, target, age=0):
        os.makedirs(self.rules, exist_ok=True)
        link = os.path.join(self.rules, name)
        os.symlink(target, link)
        if age:
            then = time.time() - age
            os.utime(link, (then, then), follow_symlinks=False)
        return link

    def add_lazystore_root(self, name, paths, age=0):
        result = self.run_as_sshd(f"lazystore-roots add {name}", stdin="".join(p + "\n" for p in paths) + ".\n")
        self.assertEqual(result.returncode, 0, result.stderr)
        if age:
            then = time.time() - age
            os.utime(os.path.join(self.roots, name), (then, then))

    def test_listed_expired_and_renewed(self):
        self.add_lazystore_root("ci-main", [P2], age=7200)
        self.make_rules_root(NAME, P1, age=7200)
        self.make_rules_root("fresh", P2)
        listing = self.run_as_sshd("lazystore-roots list")
        self.assertEqual(listing.returncode, 0, listing.stderr)
        rows = sorted(tuple(line.split("\t")[::2]) for line in listing.stdout.splitlines())
        self.assertEqual(rows, sorted([("ci-main", P2), ("rules_nixpkgs/fresh", P2), (f"rules_nixpkgs/{NAME}", P1)]))
        old = self.run_as_sshd("lazystore-roots list --older-than 1h")
        self.assertEqual(sorted(line.split("\t")[0] for line in old.stdout.splitlines()),
                         ["ci-main", f"rules_nixpkgs/{NAME}"])
        # rules_nixpkgs renews its root (nix-store --add-root replaces the link) after the listing.
        os.unlink(os.path.join(self.rules, NAME))
        self.make_rules_root(NAME, P1)
        result = self.run_as_sshd(f"lazystore-roots delete --older-than 1h ci-main rules_nixpkgs/{NAME}")
        self.assertEqual((result.returncode, result.stdout), (0, "ci-main\n"), result.stderr)
        self.assertTrue(os.path.islink(os.path.join(self.rules, NAME)))
        self.assertEqual(sorted(os.listdir(self.rules)), sorted(["fresh", NAME]))
        # Not renewed: expired with everything else that is old.
        then = time.time() - 7200
        os.utime(os.path.join(self.rules, NAME), (then, then), follow_symlinks=False)
        result = self.run_as_sshd("lazystore-roots expire --older-than 1h")
        self.assertEqual((result.returncode, result.stdout), (0, f"rules_nixpkgs/{NAME}\n"), result.stderr)
        self.assertEqual(os.listdir(self.rules), ["fresh"])
        # And by name, whatever its age.
        result = self.run_as_sshd("lazystore-roots delete rules_nixpkgs/fresh")
        self.assertEqual((result.returncode, result.stdout), (0, "rules_nixpkgs/fresh\n"), result.stderr)
        self.assertEqual(os.listdir(self.rules), [])

    def test_a_root_moved_aside_by_a_killed_expiry_comes_back(self):
        self.make_rules_root(".expire.4242." + NAME, P1)
        self.make_rules_root(".expire.4243.fresh", P2)
        self.make_rules_root("fresh", P2)
        listing = self.run_as_sshd("lazystore-roots list")
        self.assertEqual(sorted(line.split("\t")[0] for line in listing.stdout.splitlines()),
                         sorted(["rules_nixpkgs/fresh", f"rules_nixpkgs/{NAME}"]))
        self.assertEqual(sorted(os.listdir(self.rules)), sorted(["fresh", NAME]))

    def test_expiry_holds_off_the_garbage_collector(self):
        state = os.path.dirname(os.path.dirname(self.roots))
        self.make_rules_root(NAME, P1, age=7200)
        gc_lock = os.path.join(state, "gc.lock")
        os.makedirs(state, exist_ok=True)
        with open(gc_lock, "w"):
            pass
        # A GC is running (it holds gc.lock exclusively): the expiry waits for it to finish
        # rather than move a root aside under its feet.
        holder = subprocess.Popen(["flock", gc_lock, "sh", "-c", "read line"], stdin=subprocess.PIPE, text=True)
        self.addCleanup(holder.wait, timeout=DEADLINE)
        wait_until(lambda: self._flocks(gc_lock) >= 1, "the stand-in GC holds gc.lock")
        env = dict(os.environ, HOME=self.home, SSH_ORIGINAL_COMMAND="lazystore-roots expire --older-than 1h")
        expiry = subprocess.Popen(self.wrapper_argv(), env=env, text=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        self.addCleanup(expiry.wait, timeout=DEADLINE)
        wait_until(lambda: self._flocks(gc_lock, waiting=True) >= 1, "the expiry waiting for the GC")
        self.assertTrue(os.path.islink(os.path.join(self.rules, NAME)), "root touched while the GC runs")
        holder.communicate("done\n", timeout=DEADLINE)
        out, err = expiry.communicate(timeout=DEADLINE)
        self.assertEqual((expiry.returncode, out), (0, f"rules_nixpkgs/{NAME}\n"), err)

    @staticmethod
    def _flocks(path, waiting=False):
        inode = os.stat(path).st_ino
        with open("/proc/locks") as f:
            return sum(1 for line in f if "FLOCK" in line and ("->" in line) == waiting
                       and line.split()[-3].endswith(f":{inode}"))


class ExpiryService(Work):
    """lazystore-roots-expire.service's ExecStart lines, variables substituted as systemd does
    ($VAR: split into words, ${VAR}: one word), run against a real throw-away store."""

    def exec_lines(self, environment):
        with open(os.path.join(SERVER, "lazystore-roots-expire.service")) as f:
            lines = [line.split("=", 1)[1].strip() for line in f if line.startswith("ExecStart=")]
        commands = []
        for line in lines:
            argv = []
            for word in line.split():
                if word.startswith("$") and not word.startswith("${"):
                    argv += environment.get(word[1:], "").split()
                    continue
                for key, value in environment.items():
                    word = word.replace("${" + key + "}", value)
                argv.append(word)
            commands.append(argv)
        return commands

    def test_unit_files_verify(self):
        if shutil.which("systemd-analyze") is None:
            self.skipTest("no systemd-analyze")
        units = os.path.join(self.work, "units")
        os.makedirs(units)
        for name in ("lazystore-roots-expire.service", "lazystore-roots-expire.timer"):
            with open(os.path.join(SERVER, name)) as f:
                text = f.read().replace("/usr/lib/lazystore/lazystore-serve", WRAPPER)
            with open(os.path.join(units, name), "w") as f:
                f.write(text)
        result = subprocess.run(["systemd-analyze", "verify", "--man=no",
                                 os.path.join(units, "lazystore-roots-expire.timer"),
                                 os.path.join(units, "lazystore-roots-expire.service")],
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=DEADLINE)
        self.assertEqual((result.returncode, result.stdout), (0, ""))
        with open(os.path.join(SERVER, "lazystore-roots-expire.timer")) as f:
            self.assertIn("WantedBy=timers.target", f.read())

    def test_expires_then_collects(self):
        if shutil.which("nix-store") is None:
            self.skipTest("no nix-store")
        root = os.path.join(self.work, "srv")
        conf = os.path.join(self.work, "nixconf")
        os.makedirs(conf)
        with open(os.path.join(conf, "nix.conf"), "w") as f:
            f.write("build-users-group =\nsubstituters =\nexperimental-features = nix-command\n")
        env = dict(os.environ, NIX_CONF_DIR=conf, HOME=self.home)
        env.pop("NIX_REMOTE", None)
        store = f"local?root={root}"

        def nix_store(*args, check=True):
            return subprocess.run(["nix-store", "--store", store, *args], env=env, text=True, check=check,
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=DEADLINE)

        paths = {}
        for name in ("old-lazystore", "fresh-lazystore", "old-rules", "fresh-rules", "unrooted"):
            src = os.path.join(self.work, name)
            with open(src, "w") as f:
                f.write(name + "\n")
            paths[name] = nix_store("--add", src).stdout.strip()
        roots = os.path.join(root, "nix", "var", "nix", "gcroots", "lazystore")
        options = ["--store", store, "--roots-dir", roots, "--rules-nixpkgs-roots", self.rules]
        for name, age in (("old-lazystore", 40 * 86400), ("fresh-lazystore", 0)):
            subprocess.run(["sh", WRAPPER, *options, "roots", "add", name], input=paths[name] + "\n.\n",
                           text=True, env=env, check=True, timeout=DEADLINE)
            if age:
                then = time.time() - age
                os.utime(os.path.join(roots, name), (then, then))
        for name, age in (("old-rules", 40 * 86400), ("fresh-rules", 0)):
            # What rules_nixpkgs' ssh line runs on the server (through the wrapper).
            run_env = dict(env, SSH_ORIGINAL_COMMAND=f"nix-store --add-root ~/rules_nixpkgs_gcroots/{name} -r {paths[name]}")
            subprocess.run(["sh", WRAPPER, *options], env=run_env, check=True, timeout=DEADLINE,
                           stdout=subprocess.DEVNULL)
            if age:
                then = time.time() - age
                os.utime(os.path.join(self.rules, name), (then, then), follow_symlinks=False)
        environment = {"LAZYSTORE_ROOTS_MAX_AGE": "30d",
                       "LAZYSTORE_SERVE_OPTIONS": " ".join(options),
                       "NIX_STORE_OPTIONS": f"--store {store}"}
        commands = self.exec_lines(environment)
        self.assertEqual([c[0] for c in commands], ["/usr/lib/lazystore/lazystore-serve", "/usr/bin/nix-store"])
        outputs = []
        for argv in commands:
            if argv[0] == "/usr/lib/lazystore/lazystore-serve":
                argv = ["sh", WRAPPER, *argv[1:]]
            result = subprocess.run(argv, env=env, text=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                    timeout=DEADLINE)
            self.assertEqual(result.returncode, 0, f"{shlex.join(argv)}: {result.stderr}")
            outputs.append(result.stdout)
        self.assertEqual(sorted(outputs[0].split()), ["old-lazystore", "rules_nixpkgs/old-rules"])
        valid = {name: nix_store("--check-validity", path, check=False).returncode == 0 for name, path in paths.items()}
        self.assertEqual(valid, {"old-lazystore": False, "fresh-lazystore": True, "old-rules": False,
                                 "fresh-rules": True, "unrooted": False})


if __name__ == "__main__":
    unittest.main(verbosity=2)
