#!/usr/bin/env bash
# lazystore end to end, on this machine alone, as root — the three places it is used:
#
#   1. installs the Debian packages and builds lazystore, lazystore-ctl, lazystore-push;
#   2. the Nix server: a throw-away Nix store (Debian's nix-bin, `local?root=`, no daemon),
#      sshd on 127.0.0.1 whose key may only run the forced-command wrapper
#      packaging/server/lazystore-serve, and the store exported over NFSv4 by nfs-ganesha;
#   3. the executor: lazystore mounted from that NFS export (libnfs, no kernel NFS client);
#   4. the developer: a second Nix store with a real closure with references (a launcher script
#      → Python + an app script → a data store path), pushed with lazystore-push to the server
#      (BAZEL_NIX_REMOTE=nix-server, an ~/.ssh/config-style alias) — it appears on the mount;
#   5. the executor runs the program from that closure with /nix/store = the mount (bwrap);
#      `lazystore-ctl stats` shows the bytes fetched against the closure's size;
#   6. a second, warm run after restarting the daemon: everything from the disk cache.
#
# Idempotent; everything lives in one mktemp directory removed on any exit (daemons stopped,
# mounts undone); never touches the host's /nix/store or ~/.ssh; listens on 127.0.0.1 only.
# No network beyond Debian's package registry.
#
#   packaging/demo.sh                        (LAZYSTORE_BUILD_DIR=DIR to use another build dir)
set -euo pipefail

REPO=$(cd "$(dirname "$(readlink -f "${BASH_SOURCE[0]}")")/.." && pwd)
BUILD_DIR=${LAZYSTORE_BUILD_DIR:-build}

TMP=""             # the demo's temporary directory
DAEMON_PID=""      # the lazystore daemon (runs in the foreground, as our child)
SSHD_PID=""        # the Nix server's sshd
GANESHA_PID=""     # the Nix server's NFS server
PYTHON=""          # the host's (Debian's) python3.X, e.g. python3.11
PYTHONHOME_NEEDED=0
TOP=""             # the pushed closure's top store path (the launcher)

# Executor's view: a private /nix/store bound to a directory, the rest of the host as it is.
PY_ENV=(env -u PYTHONPATH -u PYTHONHOME -u PYTHONSTARTUP PYTHONDONTWRITEBYTECODE=1 PYTHONNOUSERSITE=1)

step() { printf '\n==> [%3ss] %s\n' "$SECONDS" "$*"; }
info() { printf '    %s\n' "$*"; }
die() { printf 'demo.sh: error: %s\n' "$*" >&2; exit 1; }

# ---------------------------------------------------------------------------------------------
# Cleanup: unmount, stop the daemon, remove the temporary directory. Runs on any exit.

# is_mounted DIR: DIR is a mount point, even one whose daemon died (where stat fails).
is_mounted() {
    awk -v dir="$1" '$5 == dir { found = 1 } END { exit !found }' /proc/self/mountinfo
}

stop_daemon() {
    local mnt="$TMP/mnt"
    if is_mounted "$mnt"; then
        fusermount3 -u "$mnt" 2>/dev/null || fusermount3 -u -z "$mnt" 2>/dev/null || umount -l "$mnt" 2>/dev/null || true
    fi
    if [[ -n "$DAEMON_PID" ]]; then
        local i
        for ((i = 0; i < 50; i++)); do   # a foreground daemon exits by itself once unmounted
            kill -0 "$DAEMON_PID" 2>/dev/null || break
            sleep 0.1
        done
        if kill -0 "$DAEMON_PID" 2>/dev/null; then
            kill -TERM "$DAEMON_PID" 2>/dev/null || true
            sleep 1
            kill -KILL "$DAEMON_PID" 2>/dev/null || true
        fi
        wait "$DAEMON_PID" 2>/dev/null || true
        DAEMON_PID=""
    fi
}

# ---------------------------------------------------------------------------------------------
# 1. Packages and build

install_and_build() {
    step "installing Debian packages (packaging/install-deps.sh)"
    bash "$REPO/packaging/install-deps.sh" </dev/null
    info "packages present"

    step "building lazystore in $BUILD_DIR/"
    cd "$REPO"
    if [[ ! -f "$BUILD_DIR/meson-private/coredata.dat" ]]; then
        meson setup "$BUILD_DIR" </dev/null
    fi
    meson compile -C "$BUILD_DIR" </dev/null
    local exe
    for exe in fuse/lazystore fuse/lazystore-ctl push/lazystore-push; do
        [[ -x "$BUILD_DIR/$exe" ]] || die "$BUILD_DIR/$exe was not built"
    done
    info "daemon: $REPO/$BUILD_DIR/fuse/lazystore"
}

# ---------------------------------------------------------------------------------------------
# 2. A throw-away Nix store with real store paths

# A Python installation laid out as Python expects: bin/python3.11 finds its prefix (and the
# standard library) from its own location, lib/python3.11/os.py. Debian's python, without
# site-packages, dist-packages, __pycache__ and the build configuration.
make_python() {
    local dir="$TMP/src/python3-minimal"
    PYTHON=$(basename "$(readlink -f /usr/bin/python3)")
    [[ "$PYTHON" =~ ^python3\.[0-9]+$ && -d "/usr/lib/$PYTHON" ]] ||
        die "/usr/bin/python3 is not Debian's python3.X with /usr/lib/python3.X"
    mkdir -p "$dir/bin" "$dir/lib"
    cp "/usr/bin/$PYTHON" "$dir/bin/$PYTHON"
    ln -s "$PYTHON" "$dir/bin/python3"
    cp -a "/usr/lib/$PYTHON" "$dir/lib/$PYTHON"
    rm -rf "$dir/lib/$PYTHON/site-packages" "$dir/lib/$PYTHON/dist-packages" \
        "$dir/lib/$PYTHON/config-${PYTHON#python}-"*
    find "$dir/lib" -name __pycache__ -prune -exec rm -rf {} +
    # Debian links a few files to /etc or elsewhere on the host: a store path stands alone.
    find "$dir" -type l -lname '/*' -delete

    local prefix
    prefix=$("${PY_ENV[@]}" "$dir/bin/$PYTHON" -c 'import sys; print(sys.prefix)')
    if [[ "$prefix" == "$dir" ]]; then
        info "$PYTHON finds its prefix from its own location ($prefix)"
        PYTHONHOME_NEEDED=0
    else
        info "$PYTHON reports prefix $prefix, not $dir: PYTHONHOME will be set"
        PYTHONHOME_NEEDED=1
    fi
}

# A small Python program for the closure; @DATA@ becomes the data store path.
APP_PY='import json, os, sys
import argparse, base64, collections, csv, dataclasses, datetime, decimal, fractions
import hashlib, heapq, itertools, pathlib, random, re, sqlite3, statistics, textwrap, zlib
data = "@DATA@"
numbers = [int(x) for x in open(os.path.join(data, "numbers.txt"))]
db = sqlite3.connect(":memory:")
db.execute("create table t (x)")
db.executemany("insert into t values (?)", [(n,) for n in numbers])
(total,) = db.execute("select sum(x) from t").fetchone()
outside = [m.__name__ for m in list(sys.modules.values())
           if getattr(m, "__file__", None) and not m.__file__.startswith("/nix/store/")]
assert not outside, outside
print(f"hello from Python {sys.version.split()[0]} at {sys.prefix}")
print(f"  {len(sys.modules)} modules loaded, all from /nix/store; data from {data}")
print("  " + json.dumps({"count": len(numbers), "sum": total, "mean": statistics.mean(numbers),
                          "sha256": hashlib.sha256(str(total).encode()).hexdigest()[:16]}))
'

nix_conf() {
    mkdir -p "$TMP/nix-conf"
    printf 'build-users-group =\nsubstituters =\nexperimental-features = nix-command\n' >"$TMP/nix-conf/nix.conf"
}
dev_store() { NIX_CONF_DIR="$TMP/nix-conf" HOME="$TMP/home" nix-store --store "local?root=$TMP/dev" "$@" </dev/null; }
srv_store() { NIX_CONF_DIR="$TMP/nix-conf" HOME="$TMP/home" nix-store --store "local?root=$TMP/server" "$@" </dev/null; }

free_port() {
    /usr/bin/python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}
port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
wait_port() {  # PORT WHAT
    local i
    for ((i = 0; i < 200; i++)); do port_open "$1" && return 0; sleep 0.05; done
    die "$2 is not listening on 127.0.0.1:$1 after 10 s"
}

# ---------------------------------------------------------------------------------------------
# 2. The Nix server: store, sshd with the forced-command wrapper, NFS export

start_server() {
    step "the Nix server: a throw-away store in $TMP/server (nix-store --store 'local?root=$TMP/server')"
    mkdir -p "$TMP/server/nix/store" "$TMP/home"
    srv_store --verify >/dev/null 2>&1 || true   # creates the store's database
    info "empty store, database in $TMP/server/nix/var/nix/db"

    step "sshd on 127.0.0.1: the push key may only run packaging/server/lazystore-serve"
    mkdir -p /run/sshd
    ssh-keygen -q -t ed25519 -N '' -f "$TMP/hostkey" -C lazystore-demo-host
    ssh-keygen -q -t ed25519 -N '' -f "$TMP/pushkey" -C lazystore-demo-push
    local port command
    port=$(free_port)
    command="NIX_CONF_DIR=$TMP/nix-conf exec $REPO/packaging/server/lazystore-serve --store 'local?root=$TMP/server' --roots-dir $TMP/server/nix/var/nix/gcroots/lazystore"
    printf 'restrict,command="%s" %s\n' "$command" "$(cat "$TMP/pushkey.pub")" >"$TMP/authorized_keys"
    cat >"$TMP/sshd_config" <<CONF
Port $port
ListenAddress 127.0.0.1
HostKey $TMP/hostkey
AuthorizedKeysFile $TMP/authorized_keys
PermitRootLogin prohibit-password
StrictModes no
UsePAM no
PasswordAuthentication no
KbdInteractiveAuthentication no
PidFile none
CONF
    # root's ~/.bashrc may be slow or chatty; the forced command needs none of it.
    : >"$TMP/empty-bashrc"
    unshare --mount --propagation private /bin/sh -c \
        'mount --bind "$1" /root/.bashrc 2>/dev/null || true; exec /usr/sbin/sshd -f "$2" -D -e' \
        sh "$TMP/empty-bashrc" "$TMP/sshd_config" 2>"$TMP/sshd.log" &
    SSHD_PID=$!
    wait_port "$port" sshd
    echo "[127.0.0.1]:$port $(cut -d' ' -f1,2 "$TMP/hostkey.pub")" >"$TMP/known_hosts"
    # The developer's ssh config, as rules_nixpkgs' BAZEL_NIX_REMOTE expects it.
    cat >"$TMP/ssh_config" <<CONF
Host nix-server
  Hostname 127.0.0.1
  Port $port
  User root
  IdentityFile $TMP/pushkey
  UserKnownHostsFile $TMP/known_hosts
CONF
    info "sshd pid $SSHD_PID on 127.0.0.1:$port; authorized_keys: restrict,command=\"…/lazystore-serve …\""

    step "the store's NFS export: nfs-ganesha, NFSv4 on 127.0.0.1 (no rpcbind, no kernel nfsd)"
    NFS_PORT=$(free_port)
    mkdir -p "$TMP/ganesha/recovery"
    cat >"$TMP/ganesha/ganesha.conf" <<CONF
NFS_CORE_PARAM { Protocols = 4; NFS_Port = $NFS_PORT; Bind_addr = 127.0.0.1; Enable_NLM = false; Enable_RQUOTA = false; }
NFSV4 { Graceless = true; RecoveryBackend = fs; RecoveryRoot = "$TMP/ganesha/recovery"; }
NFS_KRB5 { Active_krb5 = false; }
EXPORT {
  Export_Id = 1; Path = "$TMP/server/nix/store"; Pseudo = /nix/store; Access_Type = RO;
  Squash = No_Root_Squash; Protocols = 4; SecType = sys; Attr_Expiration_Time = 0;
  FSAL { Name = VFS; }
}
LOG { Default_Log_Level = WARN; }
CONF
    ganesha.nfsd -F -f "$TMP/ganesha/ganesha.conf" -L "$TMP/ganesha/ganesha.log" \
        -p "$TMP/ganesha/ganesha.pid" -N NIV_WARN </dev/null >/dev/null 2>&1 &
    GANESHA_PID=$!
    wait_port "$NFS_PORT" ganesha
    NFS_URL="nfs://127.0.0.1/nix/store?version=4&nfsport=$NFS_PORT"
    info "ganesha pid $GANESHA_PID exports $TMP/server/nix/store as $NFS_URL"
}

# ---------------------------------------------------------------------------------------------
# 3. The executor's mount

mount_lazystore() {
    local log="$TMP/lazystore.log"
    mkdir -p "$TMP/mnt"
    info "\$ lazystore '$NFS_URL' $TMP/mnt -f -o cache=$TMP/cache,cache-size=2G,negative-timeout=0.5"
    "$REPO/$BUILD_DIR/fuse/lazystore" "$NFS_URL" "$TMP/mnt" \
        -o "cache=$TMP/cache,cache-size=2G,negative-timeout=0.5" -f </dev/null >>"$log" 2>&1 &
    DAEMON_PID=$!
    local i
    for ((i = 0; i < 100; i++)); do   # up to 10 s
        if is_mounted "$TMP/mnt"; then
            info "mounted (daemon pid $DAEMON_PID, log $log, control socket $TMP/cache/control.sock)"
            return 0
        fi
        if ! kill -0 "$DAEMON_PID" 2>/dev/null; then
            local status=0
            wait "$DAEMON_PID" || status=$?
            DAEMON_PID=""
            sed 's/^/    lazystore: /' "$log" >&2
            die "the daemon exited with status $status before the mount was up"
        fi
        sleep 0.1
    done
    sed 's/^/    lazystore: /' "$log" >&2
    die "$TMP/mnt is not mounted after 10 s"
}

unmount_lazystore() {
    info "\$ fusermount3 -u $TMP/mnt"
    fusermount3 -u "$TMP/mnt"
    local i
    for ((i = 0; i < 100; i++)); do
        kill -0 "$DAEMON_PID" 2>/dev/null || break
        sleep 0.1
    done
    kill -0 "$DAEMON_PID" 2>/dev/null && die "the daemon is still running 10 s after the unmount"
    local status=0
    wait "$DAEMON_PID" || status=$?
    DAEMON_PID=""
    ((status == 0)) || die "the daemon exited with status $status after the unmount"
    info "unmounted; the daemon exited cleanly"
}

ctl() { "$REPO/$BUILD_DIR/fuse/lazystore-ctl" --cache "$TMP/cache" "$@"; }

# ---------------------------------------------------------------------------------------------
# 4. The developer: a closure with references, pushed

make_closure() {
    step "the developer's store ($TMP/dev) with a real closure with references"
    mkdir -p "$TMP/src"
    make_python
    local python data
    python=$(dev_store --add "$TMP/src/python3-minimal")
    mkdir -p "$TMP/src/demo-data"
    seq 1 1000 >"$TMP/src/demo-data/numbers.txt"
    head -c $((16 << 20)) /dev/urandom >"$TMP/src/demo-data/unused-assets.bin"  # never read
    data=$(dev_store --add "$TMP/src/demo-data")
    printf '%s' "$APP_PY" >"$TMP/src/app.py"
    # builtins.toFile makes store paths whose references are the store paths they mention.
    cat >"$TMP/src/closure.nix" <<NIX
let
  python = builtins.storePath "$python";
  data = builtins.storePath "$data";
  app = builtins.toFile "demo-app.py"
    (builtins.replaceStrings [ "@DATA@" ] [ "\${data}" ] (builtins.readFile $TMP/src/app.py));
in builtins.toFile "run-demo-app" ''
  #!/bin/sh
  # The closure's entry point: Python from the store runs an app from the store.
  export PYTHONHOME=\${python} PYTHONDONTWRITEBYTECODE=1 PYTHONNOUSERSITE=1
  exec \${python}/bin/$PYTHON \${app} "\$@"
''
NIX
    TOP=$(NIX_CONF_DIR="$TMP/nix-conf" HOME="$TMP/home" nix-instantiate --store "local?root=$TMP/dev" \
        --read-write-mode --eval "$TMP/src/closure.nix" </dev/null)
    TOP=${TOP//\"/}
    rm -rf "$TMP/src"
    info "closure of $TOP:"
    local p
    while read -r p; do
        info "  $(printf '%-60s %8s' "$p" "$(du -sh "$TMP/dev$p" | cut -f1)")"
    done < <(dev_store -q --requisites "$TOP")
    info "references of the launcher: $(dev_store -q --references "$TOP" | xargs -n1 basename | tr '\n' ' ')"
}

push_closure() {
    step "lazystore-push to the server (BAZEL_NIX_REMOTE=nix-server, a Host of the ssh config)"
    info "\$ BAZEL_NIX_REMOTE=nix-server lazystore-push -F ssh_config --from-store local?root=$TMP/dev $TOP"
    BAZEL_NIX_REMOTE=nix-server HOME="$TMP/home" NIX_CONF_DIR="$TMP/nix-conf" \
        "$REPO/$BUILD_DIR/push/lazystore-push" -F "$TMP/ssh_config" --from-store "local?root=$TMP/dev" \
        --progress lines "$TOP" </dev/null 2>&1 | sed 's/^/    /'
    srv_store --verify-path $(dev_store -q --requisites "$TOP")
    info "the server has the whole closure (nix-store --verify-path), GC roots in $TMP/server/nix/var/nix/gcroots/lazystore"
    info "again, a no-op (the server already has everything):"
    BAZEL_NIX_REMOTE=nix-server HOME="$TMP/home" NIX_CONF_DIR="$TMP/nix-conf" \
        "$REPO/$BUILD_DIR/push/lazystore-push" -F "$TMP/ssh_config" --from-store "local?root=$TMP/dev" \
        --progress none "$TOP" </dev/null 2>&1 | sed 's/^/    /'
}

# ---------------------------------------------------------------------------------------------
# 5. The executor runs the program; what was fetched

# executor COMMAND...: /nix/store is the lazystore mount, the rest of the host as it is.
executor() {
    bwrap --dev-bind / / --tmpfs /nix --bind "$TMP/mnt" /nix/store --chdir / -- "$@" </dev/null
}

run_program() {  # TAG
    info "\$ bwrap --dev-bind / / --tmpfs /nix --bind $TMP/mnt /nix/store sh $TOP"
    local started=$SECONDS
    executor sh "$TOP" | tee "$TMP/out.$1" | sed 's/^/    | /'
    info "ran in $((SECONDS - started)) s"
}

closure_bytes() {
    local p total=0 n
    for p in $(srv_store -q --requisites "$TOP"); do
        n=$(du -sb --apparent-size "$TMP/server$p" | cut -f1)
        total=$((total + n))
    done
    echo "$total"
}

show_stats() {  # what was fetched against the closure
    local json fetched served closure
    json=$(ctl stats --json)
    fetched=$(/usr/bin/python3 -c 'import json,sys; print(json.loads(sys.argv[1])["upstream_bytes"])' "$json")
    served=$(/usr/bin/python3 -c 'import json,sys; print(json.loads(sys.argv[1])["served_bytes"])' "$json")
    closure=$(closure_bytes)
    info "\$ lazystore-ctl --cache $TMP/cache stats"
    ctl stats | sed 's/^/    | /'
    info "$(/usr/bin/python3 -c 'import sys; f, s, c = map(int, sys.argv[1:]); print(f"fetched {f/1048576:.1f} MiB from the NFS export for a closure of {c/1048576:.1f} MiB ({100*f/c:.1f} %); served {s/1048576:.1f} MiB to the program")' "$fetched" "$served" "$closure")"
    LAST_FETCHED=$fetched
}

# ---------------------------------------------------------------------------------------------
# Cleanup: the daemon and its mount, ganesha, sshd, the temporary directory. Runs on any exit.

cleanup() {
    local status=$?
    set +e
    trap - EXIT INT TERM
    if [[ -n "$TMP" && -d "$TMP" ]]; then
        step "cleaning up: unmounting, stopping lazystore, ganesha and sshd, removing $TMP"
        stop_daemon
        local pid
        for pid in "$GANESHA_PID" "$SSHD_PID"; do
            [[ -n $pid ]] || continue
            kill -TERM "$pid" 2>/dev/null
            wait "$pid" 2>/dev/null
        done
        if is_mounted "$TMP/mnt"; then
            echo "demo.sh: warning: $TMP/mnt is still mounted; leaving $TMP in place" >&2
        else
            rm -rf --one-file-system "$TMP"
        fi
    fi
    if ((status == 0)); then
        printf '\n==> demo finished successfully\n'
    else
        printf '\n==> demo FAILED (exit status %d)\n' "$status" >&2
    fi
    exit "$status"
}

# ---------------------------------------------------------------------------------------------

main() {
    [[ $EUID -eq 0 ]] || die "run as root (FUSE mount, bwrap, sshd, ganesha, Nix stores without a daemon)"
    trap cleanup EXIT
    trap 'exit 130' INT
    trap 'exit 143' TERM

    install_and_build

    TMP=$(mktemp -d -t lazystore-demo.XXXXXXXX)
    nix_conf
    start_server

    step "the executor: lazystore mounted from the NFS export"
    mount_lazystore
    info "the executor's /nix/store holds: $(executor ls /nix/store | grep -vc '^$') entries (the server's store is empty)"

    make_closure
    push_closure

    step "the executor runs the pushed program (a path pushed a moment ago is visible at once)"
    run_program cold
    show_stats
    local cold=$LAST_FETCHED

    step "second, warm run after restarting the daemon: served from the disk cache"
    unmount_lazystore
    mount_lazystore
    run_program warm
    cmp -s "$TMP/out.cold" "$TMP/out.warm" || die "the warm run printed something else than the cold run"
    show_stats
    ((LAST_FETCHED == 0)) || die "the warm run fetched $LAST_FETCHED bytes"
    info "the warm run fetched nothing (the cold run fetched $cold bytes); same output"
    info "\$ lazystore-ctl verify"
    ctl verify | sed 's/^/    | /'

    step "kill -9 of the serving process while the program runs: the mount lives on"
    local server
    server=$(awk '{print $1}' "/proc/$DAEMON_PID/task/$DAEMON_PID/children")
    [[ $server =~ ^[0-9]+$ ]] || die "no serving process under the supervisor (pid $DAEMON_PID)"
    ctl evict >/dev/null  # a cold run again: the kill lands while it fetches
    run_program killed &
    local program=$!
    sleep 0.3
    info "\$ kill -9 $server   # the server; the supervisor (pid $DAEMON_PID) holds the mount"
    kill -9 "$server"
    wait "$program" || die "the program failed across the kill of the server"
    cmp -s "$TMP/out.cold" "$TMP/out.killed" || die "the program printed something else across the kill"
    info "same output; the supervisor started server pid $(awk '{print $1}' "/proc/$DAEMON_PID/task/$DAEMON_PID/children")"
    grep -E 'killed by signal|serves again' "$TMP/lazystore.log" | sed 's/^/    | /'

    step "unmounting"
    unmount_lazystore
}

main "$@"
