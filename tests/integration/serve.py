#!/usr/bin/python3
"""The test library's servers for shell scripts (packaging/demo.sh, tests/push/lib.sh): one
server per invocation, the same classes the Python tests use (ssh_server.Sshd,
nfs_server.Ganesha, http_server.Nginx, lazystore_testlib.Daemon, fault_proxy.FaultProxy).

  serve.py sshd --dir D [--alias A --key PATH --key-options OPTS] [--plain-client] [--sftp]
  serve.py ganesha --export DIR --dir D [--numeric-owners]
  serve.py nginx --root DIR --dir D
  serve.py mount SOURCE MOUNTPOINT --cache DIR [-o OPTS] [--bin LAZYSTORE] [--allow REGEX]
  serve.py proxy --to PORT [--delay-ms MS]
  serve.py free-port          (prints a free TCP port of 127.0.0.1 and exits)

Starts the server, prints `KEY=VALUE` lines (PID, PORT, URL, paths: see each command) and then
`READY` on stdout, and runs until SIGTERM, SIGHUP or SIGINT: then it stops the server (a mount:
`fusermount3 -u`, the daemon's exit status and stderr checked) and exits 0, or 1 when the stop
found problems (on stderr). It also stops the server when its parent dies, and exits 1 when the
server ends by itself. It runs in a process group of its own, so a terminal's Ctrl-C reaches only its
caller, which then stops it: what is stopped, and in which order, stays the caller's choice.
`tests/integration/serve.sh` is the shell side (serve_start, serve_stop).
"""

import argparse
import ctypes
import os
import shlex
import signal
import sys
import threading

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import lazystore_testlib as lib  # noqa: E402
from fault_proxy import FaultProxy  # noqa: E402
from http_server import Nginx  # noqa: E402
from nfs_server import Ganesha  # noqa: E402
from ssh_server import STRICT_CLIENT, Sshd  # noqa: E402

PR_SET_PDEATHSIG = 1


class Stop(Exception):
    pass


def detach_from_caller():
    """A process group of our own (a terminal's signals go to its foreground group only), and
    SIGTERM when the caller dies. Not a session of our own: Linux schedules each session as one
    group (autogroup), and the servers must compete for CPU as their caller does, not ahead."""
    parent = os.getppid()
    os.setpgid(0, 0)
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
    if os.getppid() != parent:
        raise SystemExit("serve.py: the caller exited before the server started")


def announce(values):
    """KEY=VALUE lines and READY on stdout, then stdout closed (the caller stops reading)."""
    for key, value in values.items():
        value = str(value)
        if "\n" in value:
            raise ValueError(f"{key} has a newline: {value!r}")
        print(f"{key}={value}")
    print("READY", flush=True)
    with open(os.devnull, "w") as null:
        os.dup2(null.fileno(), sys.stdout.fileno())


def parse_options(text):
    """-o k=v,k2,k3=v3 into {k: v, k2: None, k3: v3}."""
    options = {}
    for item in filter(None, (text or "").split(",")):
        key, sep, value = item.partition("=")
        options[key] = value if sep else None
    return options


# Each start_*(args, on_stop) registers how to stop the server before starting it (a signal may
# end the start half way), starts it and returns (KEY=VALUE values, exit status or None).

def start_sshd(args, on_stop):
    sshd = Sshd(args.dir, sftp=args.sftp, log_level=args.log_level)
    values = {}
    if args.alias:
        client = () if args.plain_client else STRICT_CLIENT
        values["KEY"] = sshd.authorize(args.alias, args.key_options, key=args.key, client_options=client)
    on_stop(sshd.close)
    sshd.start()
    values.update(PID=sshd.pid, PORT=sshd.port, SSH_CONFIG=sshd.ssh_config, KNOWN_HOSTS=sshd.known_hosts,
                  HOST_KEY=sshd.host_key, AUTHORIZED_KEYS=sshd.authorized_keys, LOG=sshd.log_path)
    return values, lambda: sshd.process.poll()


def start_ganesha(args, on_stop):
    ganesha = Ganesha(args.export, args.dir, protocols=(4,), numeric_owners=args.numeric_owners)
    on_stop(ganesha.close)
    ganesha.start()
    values = dict(PID=ganesha.process.pid, PORT=ganesha.port, URL=ganesha.url(4), LOG=ganesha.log_path,
                  CONFIG=ganesha.config)
    return values, lambda: ganesha.process.poll()


def start_nginx(args, on_stop):
    nginx = Nginx(args.root, args.dir)
    on_stop(nginx.close)
    nginx.start()
    values = dict(PID=nginx.process.pid, PORT=nginx.port, URL=nginx.url, ACCESS_LOG=nginx.access_log,
                  CONFIG=nginx.config)
    return values, lambda: nginx.process.poll()


def start_proxy(args, on_stop):
    proxy = FaultProxy(args.to)
    on_stop(proxy.close)
    proxy.start()
    if args.delay_ms:
        proxy.delay(args.delay_ms)
    return dict(PORT=proxy.port), lambda: None


def start_mount(args, on_stop):
    os.environ["LAZYSTORE_BIN"] = os.path.abspath(args.bin)
    daemon = lib.Daemon(args.source, args.mountpoint, args.cache, parse_options(args.options),
                        log_level=args.log_level, allowed_stderr=args.allow)

    def stop():
        problems = daemon.stop(check=False)
        if problems:
            raise RuntimeError("; ".join(problems) + f"\n--- daemon stderr ---\n{daemon.stderr()[-4000:]}")
    on_stop(stop)
    daemon.start()
    values = dict(PID=daemon.process.pid, STDERR=daemon.stderr_path, COMMAND=shlex.join(daemon.argv()))
    return values, lambda: daemon.process.poll() if daemon.process else None


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True)

    p = commands.add_parser("sshd", help="OpenSSH's sshd on 127.0.0.1 (ssh_server.Sshd)")
    p.add_argument("--dir", required=True, help="its work directory (keys, configs, log)")
    p.add_argument("--alias", help="a Host alias of ssh_config with a new client key")
    p.add_argument("--key", help="the client key's path (default DIR/key-ALIAS)")
    p.add_argument("--key-options", default="", help='its authorized_keys options, e.g. restrict,command="…"')
    p.add_argument("--plain-client", action="store_true",
                   help="no IdentitiesOnly/StrictHostKeyChecking/BatchMode lines in the alias")
    p.add_argument("--sftp", action="store_true", help="serve the sftp subsystem")
    p.add_argument("--log-level", default="INFO", help="sshd's LogLevel")
    p.set_defaults(start=start_sshd)

    p = commands.add_parser("ganesha", help="nfs-ganesha, NFSv4 on 127.0.0.1 (nfs_server.Ganesha)")
    p.add_argument("--export", required=True, help="the directory exported (pseudo path /store)")
    p.add_argument("--dir", required=True, help="its work directory (config, log, recovery)")
    p.add_argument("--numeric-owners", action="store_true", help="NFSv4 owners as numbers")
    p.set_defaults(start=start_ganesha)

    p = commands.add_parser("nginx", help="nginx serving a directory on 127.0.0.1 (http_server.Nginx)")
    p.add_argument("--root", required=True, help="the directory served")
    p.add_argument("--dir", required=True, help="its work directory (config, logs, temp paths)")
    p.set_defaults(start=start_nginx)

    p = commands.add_parser("proxy", help="a TCP proxy on 127.0.0.1 to a port (fault_proxy.FaultProxy)")
    p.add_argument("--to", type=int, required=True, help="the port of 127.0.0.1 it forwards to")
    p.add_argument("--delay-ms", type=float, default=0, help="hold every server→client packet this long")
    p.set_defaults(start=start_proxy)

    p = commands.add_parser("mount", help="a lazystore mount in the foreground (lazystore_testlib.Daemon)")
    p.add_argument("source")
    p.add_argument("mountpoint")
    p.add_argument("--cache", required=True)
    p.add_argument("-o", dest="options", default="", help="mount options, k=v,k2=v2")
    p.add_argument("--bin", default=os.environ.get("LAZYSTORE_BIN", ""), help="the daemon (default $LAZYSTORE_BIN)")
    p.add_argument("--log-level", default="info")
    p.add_argument("--allow", action="append", default=[], help="a regex of stderr lines not to complain about")
    p.set_defaults(start=start_mount)

    p = commands.add_parser("free-port", help="print a free TCP port of 127.0.0.1 and exit")
    p.set_defaults(start=None)

    args = parser.parse_args()
    if args.start is None:
        print(lib.free_port())
        return 0
    detach_from_caller()
    stop_requested = threading.Event()

    def request_stop(signum, _frame):
        stop_requested.set()
        raise Stop()
    for sig in (signal.SIGTERM, signal.SIGHUP, signal.SIGINT):
        if signal.getsignal(sig) != signal.SIG_IGN:  # an ignored SIGINT stays so (a background job)
            signal.signal(sig, request_stop)

    def ignore_signals():
        """From now on signals do not interrupt the stop: it has deadlines of its own."""
        for sig in (signal.SIGTERM, signal.SIGHUP, signal.SIGINT):
            if signal.getsignal(sig) == request_stop:
                signal.signal(sig, signal.SIG_IGN)

    stop = None

    def on_stop(function):
        nonlocal stop
        stop = function
    try:
        try:
            values, exited = args.start(args, on_stop)
            announce(values)
            while not stop_requested.wait(0.5):  # polling the server's life; signals end the wait
                code = exited()
                if code is not None:
                    print(f"serve.py {args.command}: the server exited by itself (status {code})", file=sys.stderr)
                    return 1
        except Stop:
            pass
        ignore_signals()
        if stop is not None:
            stop()
            stop = None
        return 0
    except Exception as e:  # reported as one message, the caller shows our stderr
        print(f"serve.py {args.command}: {e}", file=sys.stderr)
        return 1
    finally:
        ignore_signals()
        if stop is not None:
            try:
                stop()
            except Exception as e:
                print(f"serve.py {args.command}: stopping: {e}", file=sys.stderr)


if __name__ == "__main__":
    sys.exit(main())
