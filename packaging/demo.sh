#!/usr/bin/env bash
# lazystore end to end, on this machine alone, as root — the three places it is used:
#
#   1. installs the Debian packages and builds the four programs the demo runs (lazystore,
#      lazystore-ctl, lazystore-push, lazystore-publish: no tests, no fuzz targets);
#   2. the Nix server: a throw-away Nix store (Debian's nix-bin, `local?root=`, no daemon),
#      sshd on 127.0.0.1 whose key may only run the forced-command wrapper
#      packaging/server/lazystore-serve, and the store exported over NFSv4 by nfs-ganesha;
#   3. the developer: a second Nix store with a real closure with references (a launcher script
#      → Python + an app script → a data store path), pushed with lazystore-push over ssh-ng
#      (BAZEL_NIX_REMOTE=nix-server, an ~/.ssh/config-style alias), then again: a no-op over
#      the connection the first push left open;
#   4. the executor: lazystore mounted from the NFS export runs the program (bwrap, the mount at
#      /nix/store): cold (empty cache), warm (after a daemon restart: from the disk cache), and
#      cold again while the serving process is killed with kill -9 (same output, the mount
#      stays up); `lazystore-ctl status` and the NFS counters;
#   5. the same closure published as a signed binary cache (nix copy --to file://…, then
#      lazystore-publish), served by nginx, mounted with trusted-public-keys=: cold and warm
#      runs again, reads lazy and verified (manifest_paths, block_hash_failures, bytes fetched
#      against the closure's size); the HTTP counters;
#   6. a summary: every timed step in milliseconds, cold and warm side by side.
#
# Idempotent; everything lives in one mktemp directory removed on any exit (mounts undone,
# daemons, servers and the shared push connection stopped); never touches the host's
# /nix/store or ~/.ssh; listens on 127.0.0.1 only. No network beyond Debian's package registry.
# Ctrl-C at any moment cleans everything up and exits with status 130.
#
#   packaging/demo.sh [--rtt MS]  MS: added to every round trip between the executor and the
#                                 server by a TCP proxy (default 5; 0: no proxy, loopback only)
#   LAZYSTORE_BUILD_DIR=DIR       the build directory (default build/; configured with
#                                 -Dtests=disabled when it does not exist yet)
set -euo pipefail

REPO=$(cd "$(dirname "$(readlink -f "${BASH_SOURCE[0]}")")/.." && pwd)
BUILD_DIR=${LAZYSTORE_BUILD_DIR:-build}
[[ $BUILD_DIR == /* ]] || BUILD_DIR=$REPO/$BUILD_DIR
TARGETS=(fuse/lazystore fuse/lazystore-ctl push/lazystore-push push/lazystore-publish)
# shellcheck source=../tests/integration/serve.sh
source "$REPO/tests/integration/serve.sh"

TMP=""              # the demo's temporary directory
CURRENT_PID=""      # the step running in the background (run), killed on interruption
CURRENT_STEP="starting"
SIGNAL=""           # the signal that ended the demo
DEMO_OUT=""         # the demo's own stdout and stderr, kept: a signal may arrive while a step's
DEMO_ERR=""         #   output goes to a file, and the cleanup must still speak to the user
PUSHED=0            # a push ran: its shared connection must be stopped
PYTHON=""           # the host's (Debian's) python3.X, e.g. python3.11
TOP=""              # the pushed closure's top store path (the launcher)
LATE=""             # a store path pushed while the executor has the store mounted
RTT_MS=5            # added to every round trip between the executor and the server
NFS_URL=""          # what the executor mounts: the NFS export, through the latency proxy
HTTP_URL=""         # the binary cache, through the latency proxy
CLOSURE_BYTES=0     # NAR size of the closure
declare -A MS=()    # timings of the steps, in milliseconds
declare -A FETCHED=()  # bytes fetched by the runs
declare -A MOUNT_LOG=()  # serve.py's log of each mount's latest start
START_US=${EPOCHREALTIME//[!0-9]/}

now_ms() { local us=${EPOCHREALTIME//[!0-9]/}; printf -v "$1" '%s' $(((us - START_US) / 1000)); }
step() {
    CURRENT_STEP=$*
    local t; now_ms t
    printf '\n==> [%4d.%d s] %s\n' $((t / 1000)) $((t % 1000 / 100)) "$*"
}
mib() { local t=$((($1 * 10 + 524288) / 1048576)); printf '%d.%d MiB' $((t / 10)) $((t % 10)); }
info() { printf '    %s\n' "$*"; }
die() { printf 'demo.sh: error: %s\n' "$*" >&2; exit 1; }

# run COMMAND...: in the background, waited for, so that Ctrl-C (or a SIGINT to this script
# alone) interrupts the wait at once; cleanup then ends what is still running.
run() {
    "$@" &
    CURRENT_PID=$!
    local status=0
    wait "$CURRENT_PID" || status=$?
    CURRENT_PID=""
    return "$status"
}

# timed NAME COMMAND...: run, and MS[NAME] = its wall time in milliseconds.
timed() {
    local name=$1 began ended status=0
    shift
    now_ms began
    run "$@" || status=$?
    now_ms ended
    MS[$name]=$((ended - began))
    return "$status"
}

# ms NAME: "1234 ms", or "-" when NAME was not timed.
# indented COMMAND...: its stdout and stderr, indented.
indented() { "$@" 2>&1 | sed 's/^/    | /'; }

ms() { if [[ -n ${MS[$1]:-} ]]; then printf '%s ms' "${MS[$1]}"; else printf -- '-'; fi; }

# ---------------------------------------------------------------------------------------------
# Cleanup: on every exit, whatever was started, in the order that lets each part stop cleanly:
# the running step, the shared push connection, the mounts, the servers, then the temp dir.

descendants() {  # PID: its descendants' pids, children first
    local child
    for child in $(cat /proc/"$1"/task/*/children 2>/dev/null); do
        echo "$child"
        descendants "$child"
    done
}

terminate() {  # PID...: SIGTERM, then SIGKILL to those left after 5 s
    local pid i left
    kill -TERM "$@" 2>/dev/null || true
    for ((i = 0; i < 100; i++)); do
        left=0
        for pid in "$@"; do kill -0 "$pid" 2>/dev/null && left=1; done
        ((left)) || return 0
        sleep 0.05  # polling interval, bounded by the loop
    done
    kill -KILL "$@" 2>/dev/null || true
}

# Processes of ours that name the temp directory (a daemon, a server, the push connection).
leftover_processes() {
    /usr/bin/python3 - "$TMP/" "$$" <<'EOF'
import os, sys
needle, me = sys.argv[1].encode(), {int(sys.argv[2]), os.getpid(), os.getppid()}
for pid in filter(str.isdigit, os.listdir("/proc")):
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            if int(pid) not in me and needle in f.read():
                print(pid)
    except OSError:
        pass
EOF
}

mounts_under() {  # DIR: mount points below DIR in this mount namespace
    awk -v dir="$1/" 'index($5, dir) == 1 { print $5 }' /proc/self/mountinfo
}

stop_server() {  # NAME WHAT [LOG]
    local status=0 log=${3:-$TMP/serve-$1.log}
    serve_stop "$1" 60 || status=$?
    ((status == 0)) || echo "demo.sh: warning: $2 did not stop cleanly (status $status): $(tail -n 20 "$log" 2>/dev/null)" >&2
}

cleanup() {
    local status=$? failed_step=$CURRENT_STEP
    set +e
    [[ -n $DEMO_OUT ]] && exec 1>&"$DEMO_OUT" 2>&"$DEMO_ERR"
    trap '' INT TERM HUP   # a second Ctrl-C must not cut the cleanup short (every wait is bounded)
    trap - EXIT
    [[ -n $SIGNAL ]] && printf '\n==> interrupted (SIG%s) during: %s\n' "$SIGNAL" "$failed_step"
    if [[ -n "$TMP" && -d "$TMP" ]]; then
        step "cleaning up: the running step, the shared push connection, mounts, servers, $TMP"
        if [[ -n $CURRENT_PID ]]; then
            local pids
            pids=$(descendants "$CURRENT_PID")
            # shellcheck disable=SC2086
            terminate "$CURRENT_PID" $pids
            # No `wait` here: bash 5.2, in a trap that interrupted `wait PID`, waits for any
            # child when asked for PID again once it is reaped (it hung on the servers).
            # terminate() saw it end (bash reaps its children by itself).
            CURRENT_PID=""
        fi
        if ((PUSHED)); then
            push_cmd --stop-persist 2>&1 | sed 's/^/    lazystore-push: /'
        fi
        stop_server HTTPMOUNT "the HTTP mount" "${MOUNT_LOG[HTTPMOUNT]:-}"
        stop_server NFSMOUNT "the NFS mount" "${MOUNT_LOG[NFSMOUNT]:-}"
        stop_server HTTPPROXY "the HTTP latency proxy"
        stop_server NFSPROXY "the NFS latency proxy"
        stop_server NGINX nginx
        stop_server GANESHA nfs-ganesha
        stop_server SSHD sshd
        local left
        left=$(leftover_processes)
        if [[ -n $left ]]; then
            echo "demo.sh: warning: processes left running, ended now: ${left//$'\n'/ }" >&2
            # shellcheck disable=SC2086
            terminate $left
        fi
        local mnt
        for mnt in $(mounts_under "$TMP"); do
            echo "demo.sh: warning: $mnt still mounted; unmounting it lazily" >&2
            umount -l "$mnt"
        done
        if [[ -n $(mounts_under "$TMP") ]]; then
            echo "demo.sh: warning: mounts left under $TMP; leaving it in place" >&2
        else
            rm -rf --one-file-system "$TMP"
            info "removed $TMP; nothing of the demo is left running or mounted"
        fi
    fi
    local total; now_ms total
    if [[ -n $SIGNAL ]]; then
        printf '\n==> demo interrupted by SIG%s after %s ms; everything was cleaned up\n' "$SIGNAL" "$total"
        exit "$status"
    elif ((status == 0)); then
        printf '\n==> demo finished successfully in %s ms\n' "$total"
    else
        printf '\n==> demo FAILED (exit status %d) during: %s\n' "$status" "$failed_step" >&2
    fi
    exit "$status"
}

on_signal() {  # NAME STATUS
    SIGNAL=$1
    exit "$2"
}

# ---------------------------------------------------------------------------------------------
# 1. Packages and build

install_and_build() {
    step "installing Debian packages (packaging/install-deps.sh)"
    timed install bash "$REPO/packaging/install-deps.sh"
    info "all packages present ($(ms install))"

    step "building only the demo's programs in $BUILD_DIR/ (no tests, no fuzz targets)"
    cd "$REPO"
    local began ended
    now_ms began
    if [[ ! -f "$BUILD_DIR/meson-private/coredata.dat" ]]; then
        info "\$ meson setup $BUILD_DIR -Dtests=disabled"
        run meson setup "$BUILD_DIR" -Dtests=disabled >"$TMP/build.log" 2>&1 ||
            { tail -n 30 "$TMP/build.log" >&2; die "meson setup failed"; }
    fi
    info "\$ ninja -C $BUILD_DIR ${TARGETS[*]}"
    local pending
    pending=$(ninja -C "$BUILD_DIR" -n "${TARGETS[@]}" 2>/dev/null | grep -c '^\[[0-9]*/[0-9]*\]' || true)
    ((pending == 0)) || info "$pending build steps to run (minutes on a first build); their output: $TMP/build.log"
    run ninja -C "$BUILD_DIR" "${TARGETS[@]}" >>"$TMP/build.log" 2>&1 ||
        { tail -n 30 "$TMP/build.log" >&2; die "the build failed"; }
    now_ms ended
    MS[build]=$((ended - began))
    local steps
    steps=$(grep -c '^\[[0-9]*/[0-9]*\]' "$TMP/build.log" || true)
    info "built in $(ms build) ($steps build steps; none when the programs were up to date)"
    LAZYSTORE=$BUILD_DIR/fuse/lazystore
    CTL=$BUILD_DIR/fuse/lazystore-ctl
    PUSH=$BUILD_DIR/push/lazystore-push
    PUBLISH=$BUILD_DIR/push/lazystore-publish
    local exe
    for exe in "$LAZYSTORE" "$CTL" "$PUSH" "$PUBLISH"; do
        [[ -x $exe ]] || die "$exe was not built"
    done
}

# ---------------------------------------------------------------------------------------------
# 2. Throw-away Nix stores with real store paths

nix_env() { NIX_CONF_DIR="$TMP/nix-conf" HOME="$TMP/home" "$@" </dev/null; }
dev_store() { nix_env nix-store --store "local?root=$TMP/dev" "$@"; }
srv_store() { nix_env nix-store --store "local?root=$TMP/server" "$@"; }

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

make_closure() {
    step "the developer's store ($TMP/dev) with a real closure with references"
    local began ended
    now_ms began
    mkdir -p "$TMP/src"
    make_python
    local python data
    python=$(dev_store --add "$TMP/src/python3-minimal")
    mkdir -p "$TMP/src/demo-data"
    seq 1 1000 >"$TMP/src/demo-data/numbers.txt"
    head -c $((16 << 20)) /dev/urandom >"$TMP/src/demo-data/unused-assets.bin"  # never read
    data=$(dev_store --add "$TMP/src/demo-data")
    printf 'pushed while the executor had the store mounted\n' >"$TMP/src/pushed-later.txt"
    LATE=$(dev_store --add "$TMP/src/pushed-later.txt")
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
    TOP=$(nix_env nix-instantiate --store "local?root=$TMP/dev" --read-write-mode --eval "$TMP/src/closure.nix")
    TOP=${TOP//\"/}
    rm -rf "$TMP/src"
    now_ms ended
    MS[closure]=$((ended - began))
    info "closure of $TOP (made in $(ms closure)):"
    local p size
    while read -r p; do
        size=$(dev_store -q --size "$p")
        CLOSURE_BYTES=$((CLOSURE_BYTES + size))
        info "  $(printf '%-72s %9s' "$p" "$(mib "$size")")"
    done < <(dev_store -q --requisites "$TOP")
    info "  $(printf '%-72s %9s' "(NAR size of the closure)" "$(mib "$CLOSURE_BYTES")")"
    info "references of the launcher: $(dev_store -q --references "$TOP" | xargs -n1 basename | tr '\n' ' ')"
}

# ---------------------------------------------------------------------------------------------
# 3. The Nix server: store, sshd with the forced-command wrapper, NFS export

start_server() {
    step "the Nix server: a throw-away store in $TMP/server (nix-store --store 'local?root=$TMP/server')"
    mkdir -p "$TMP/server/nix/store" "$TMP/home" "$TMP/nix-conf"
    printf 'build-users-group =\nsubstituters =\nexperimental-features = nix-command\n' >"$TMP/nix-conf/nix.conf"
    run srv_store --init
    info "empty store, database in $TMP/server/nix/var/nix/db"

    step "sshd on 127.0.0.1: the push key may only run packaging/server/lazystore-serve"
    local command="NIX_CONF_DIR=$TMP/nix-conf exec $REPO/packaging/server/lazystore-serve --store 'local?root=$TMP/server' --roots-dir $TMP/server/nix/var/nix/gcroots/lazystore"
    local began ended
    now_ms began
    serve_start SSHD "$TMP/serve-SSHD.log" sshd --dir "$TMP/sshd" --alias nix-server --key "$TMP/pushkey" \
        --key-options "restrict,command=\"$command\"" || die "sshd did not start"
    now_ms ended
    MS[sshd]=$((ended - began))
    info "sshd pid $SSHD_PID on 127.0.0.1:$SSHD_PORT, up in $(ms sshd); authorized_keys:"
    info "  restrict,command=\"…/packaging/server/lazystore-serve --store 'local?root=…' …\" ssh-ed25519 …"
    info "the developer's ssh config ($SSHD_SSH_CONFIG), as rules_nixpkgs' BAZEL_NIX_REMOTE expects:"
    sed 's/^/      /' "$SSHD_SSH_CONFIG"

    step "the store's NFS export: nfs-ganesha, NFSv4 on 127.0.0.1 (no rpcbind, no kernel nfsd)"
    now_ms began
    serve_start GANESHA "$TMP/serve-GANESHA.log" ganesha --export "$TMP/server/nix/store" \
        --dir "$TMP/ganesha" --numeric-owners || die "nfs-ganesha did not start"
    now_ms ended
    MS[ganesha]=$((ended - began))
    info "ganesha pid $GANESHA_PID exports $TMP/server/nix/store as $GANESHA_URL, up in $(ms ganesha)"
    info "(numeric owners, Attr_Expiration_Time = 0: the configuration README.md recommends)"
    latency_proxy NFS_URL NFSPROXY "$GANESHA_PORT" "$GANESHA_URL" "nfsport=$GANESHA_PORT" "nfsport="
}

# latency_proxy VAR NAME PORT URL OLD NEW: VAR = URL, or with RTT_MS > 0, URL with OLD replaced
# by NEW + the port of a TCP proxy (the test library's fault_proxy, as NAME) before PORT that holds
# every server→client packet RTT_MS ms: a network between two machines (loopback alone hides
# what waiting costs).
latency_proxy() {
    local var=$1 name=$2 port=$3 url=$4 old=$5 new=$6
    if ((RTT_MS == 0)); then
        printf -v "$var" '%s' "$url"
        return
    fi
    serve_start "$name" "$TMP/serve-$name.log" proxy --to "$port" --delay-ms "$RTT_MS" ||
        die "the latency proxy did not start"
    local proxy_port="${name}_PORT"
    info "the executor reaches it through a TCP proxy on 127.0.0.1:${!proxy_port} adding $RTT_MS ms to every round trip (--rtt)"
    printf -v "$var" '%s' "${url/$old/$new${!proxy_port}}"
}

# ---------------------------------------------------------------------------------------------
# 4. The developer pushes

# The shared connection it leaves behind outlives the call: it gets no copy of the demo's saved
# stdout and stderr (a reader of the demo's output would wait for it).
push_cmd() {
    BAZEL_NIX_REMOTE=nix-server HOME="$TMP/home" NIX_CONF_DIR="$TMP/nix-conf" \
        "$PUSH" -F "$SSHD_SSH_CONFIG" --from-store "local?root=$TMP/dev" --control-dir "$TMP/push-control" "$@" \
        </dev/null {DEMO_OUT}>&- {DEMO_ERR}>&-
}

push_closure() {
    step "lazystore-push to the server over ssh-ng (BAZEL_NIX_REMOTE=nix-server, a Host of the ssh config)"
    mkdir -p "$TMP/push-control"
    chmod 0700 "$TMP/push-control"
    info "\$ BAZEL_NIX_REMOTE=nix-server lazystore-push -F ssh_config --from-store 'local?root=$TMP/dev' --root demo $TOP"
    PUSHED=1
    timed push indented push_cmd --progress lines --root demo "$TOP"
    local closure
    mapfile -t closure < <(dev_store -q --requisites "$TOP")
    run srv_store --verify-path "${closure[@]}"
    info "pushed in $(ms push) (SSH handshake, nix-daemon --stdio started on the server, NARs sent);"
    info "the server has the whole closure (nix-store --verify-path); GC root 'demo' in"
    info "$TMP/server/nix/var/nix/gcroots/lazystore"
    info "again: a no-op over the connection the first push left open (for 5 min, like ControlPersist):"
    timed push_noop push_cmd --progress none --json "$TOP" >"$TMP/noop.json"
    /usr/bin/python3 -c 'import json, sys
j = json.load(open(sys.argv[1]))
missing, sent, protocol, reused = j["missing"], j["bytes_sent"], j["protocol"], j["connection_reused"]
print(f"    | {len(missing)} paths missing, {sent} bytes sent, protocol {protocol}, connection reused: {str(reused).lower()}")' "$TMP/noop.json"
    info "no-op push in $(ms push_noop)"
}

# ---------------------------------------------------------------------------------------------
# 5. The executor: mounts, runs the program, shows what was fetched

# mount_lazystore NAME TIMING SOURCE MOUNTPOINT CACHE [OPTIONS]: lazystore in the foreground (the
# test library's Daemon, through serve.py, as NAME), MS[TIMING] = the time until it answers.
mount_lazystore() {
    local name=$1 timing=$2 source=$3 mnt=$4 cache=$5 options=${6:-}
    mkdir -p "$mnt"
    local began ended
    MOUNT_LOG[$name]=$TMP/serve-$name-$timing.log
    now_ms began
    serve_start "$name" "${MOUNT_LOG[$name]}" mount "$source" "$mnt" --cache "$cache" --bin "$LAZYSTORE" \
        -o "cache-size=2G,negative-timeout=0.5${options:+,$options}" \
        --allow '^lazystore: error: the server of .* was killed by signal 9' ||
        die "lazystore did not mount $source"
    now_ms ended
    MS[$timing]=$((ended - began))
    local pid_var="${name}_PID" command_var="${name}_COMMAND"
    info "\$ ${!command_var/$LAZYSTORE/lazystore}"
    info "mounted and answering in $(ms "$timing") (daemon pid ${!pid_var}, control socket $cache/control.sock)"
}

unmount_lazystore() {  # NAME
    local began ended status=0
    now_ms began
    serve_stop "$1" 60 || status=$?
    now_ms ended
    ((status == 0)) || { tail -n 30 "${MOUNT_LOG[$1]}" >&2; die "the daemon did not stop cleanly (status $status)"; }
    info "\$ fusermount3 -u …: unmounted in $((ended - began)) ms; the daemon exited with status 0, no error in its log"
    # The test library says when a copy of the mount in another mount namespace kept the FUSE
    # connection after the unmount (and that it ended it).
    grep -h 'outlived the unmount' "${MOUNT_LOG[$1]}" | sed 's/^/    note: /' || true
}

# executor MOUNTPOINT COMMAND...: /nix/store is the lazystore mount, the rest of the host as it is.
executor() {
    local mnt=$1
    shift
    bwrap --dev-bind / / --tmpfs /nix --bind "$mnt" /nix/store --chdir / -- "$@" </dev/null
}

run_program() {  # NAME MOUNTPOINT: MS[NAME], output in $TMP/out.NAME
    info "\$ bwrap --dev-bind / / --tmpfs /nix --bind $2 /nix/store sh $TOP"
    timed "$1" executor "$2" sh "$TOP" >"$TMP/out.$1" || die "the program failed ($1)"
    sed 's/^/    | /' "$TMP/out.$1"
    info "ran in $(ms "$1")"
}

ctl() { "$CTL" "$@" </dev/null; }

show_status() {  # MOUNTPOINT
    info "\$ lazystore-ctl -m $1 status"
    ctl -m "$1" status | sed 's/^/    | /'
}

# show_counters MOUNTPOINT nfs|http RUN: the counters of this upstream; FETCHED[RUN] = bytes
# fetched from the upstream so far on this mount (the run's, right after a mount).
show_counters() {
    local mnt=$1 kind=$2 run_name=$3
    ctl -m "$mnt" stats --json >"$TMP/stats.json"
    info "\$ lazystore-ctl -m $mnt stats --json   # the counters of the ${kind^^} upstream:"
    /usr/bin/python3 "$REPO/packaging/demo_counters.py" "$kind" "$TMP/stats.json" "$CLOSURE_BYTES" "$TMP/fetched"
    FETCHED[$run_name]=$(cat "$TMP/fetched")
}

nfs_mount() {
    step "the executor: lazystore mounted from the NFS export (libnfs, no kernel NFS client)"
    mount_lazystore NFSMOUNT nfs_mount "$NFS_URL" "$TMP/mnt-nfs" "$TMP/cache-nfs"
    info "\$ bwrap … ls /nix/store   # the executor's view"
    executor "$TMP/mnt-nfs" ls /nix/store | sed 's/^/    | /'

    step "a path pushed while the executor has the store mounted is visible at once"
    info "\$ lazystore-push $LATE"
    timed push_late indented push_cmd --progress none "$LATE"
    info "pushed in $(ms push_late) over the shared connection; on the executor:"
    info "\$ bwrap … cat $LATE"
    executor "$TMP/mnt-nfs" cat "$LATE" | sed 's/^/    | /'
}

nfs_runs() {
    step "the executor runs the pushed program, cold: the cache is empty"
    run_program nfs_cold "$TMP/mnt-nfs"
    show_status "$TMP/mnt-nfs"
    show_counters "$TMP/mnt-nfs" nfs nfs_cold

    step "warm: the daemon restarted, everything from its disk cache"
    unmount_lazystore NFSMOUNT
    mount_lazystore NFSMOUNT nfs_remount "$NFS_URL" "$TMP/mnt-nfs" "$TMP/cache-nfs"
    run_program nfs_warm "$TMP/mnt-nfs"
    cmp -s "$TMP/out.nfs_cold" "$TMP/out.nfs_warm" || die "the warm run printed something else than the cold run"
    show_counters "$TMP/mnt-nfs" nfs nfs_warm
    ((FETCHED[nfs_warm] == 0)) || die "the warm run fetched ${FETCHED[nfs_warm]} bytes"
    info "same output; nothing fetched (the cold run fetched $(mib "${FETCHED[nfs_cold]}"))"
    info "\$ lazystore-ctl -m $TMP/mnt-nfs verify"
    ctl -m "$TMP/mnt-nfs" verify | sed 's/^/    | /'

    kill_during_run
    step "unmounting the NFS mount"
    unmount_lazystore NFSMOUNT
}

server_of() {  # MOUNTPOINT: "PID GENERATION" of the serving process
    ctl -m "$1" status --json | /usr/bin/python3 -c 'import json, sys; s = json.load(sys.stdin)["server"]; print(s["pid"], s["generation"])'
}

kill_during_run() {
    step "kill -9 of the serving process during a cold run: same output, the mount stays up"
    local mnt=$TMP/mnt-nfs
    unmount_lazystore NFSMOUNT
    info "a new, empty cache (cold again), so that the kill lands while the program fetches:"
    mount_lazystore NFSMOUNT nfs_kill_mount "$NFS_URL" "$mnt" "$TMP/cache-nfs-kill"
    local server generation
    read -r server generation < <(server_of "$mnt")
    info "\$ bwrap … sh $TOP &   then, once it has fetched something: kill -9 $server"
    info "(the server; the supervisor, pid $NFSMOUNT_PID, holds the mount and starts another)"
    local began ended misses=0 deadline=$((SECONDS + 30))
    now_ms began
    executor "$mnt" sh "$TOP" >"$TMP/out.nfs_killed" &
    CURRENT_PID=$!
    while ((misses == 0 && SECONDS < deadline)) && kill -0 "$CURRENT_PID" 2>/dev/null; do
        misses=$(ctl -m "$mnt" stats --json | /usr/bin/python3 -c 'import json, sys; print(json.load(sys.stdin)["chunk_misses"])')
        ((misses > 0)) || sleep 0.02  # polling interval, bounded by the deadline
    done
    if kill -0 "$CURRENT_PID" 2>/dev/null; then
        info "the program runs and has made $misses fetch(es): kill -9 $server"
    else
        info "the program ended before the kill (a fast machine): kill -9 $server anyway"
    fi
    kill -9 "$server"
    local status=0
    wait "$CURRENT_PID" || status=$?
    CURRENT_PID=""
    now_ms ended
    MS[nfs_killed]=$((ended - began))
    ((status == 0)) || die "the program failed (status $status) across the kill of the server"
    sed 's/^/    | /' "$TMP/out.nfs_killed"
    cmp -s "$TMP/out.nfs_cold" "$TMP/out.nfs_killed" || die "the program printed something else across the kill"
    local new_server new_generation
    read -r new_server new_generation < <(server_of "$mnt")
    ((new_generation > generation)) || die "no new server after the kill"
    info "ran in $(ms nfs_killed) (cold, with the kill), same output; server $new_generation of this mount answers (pid $new_server)"
    show_status "$mnt"
}

http_part() {
    step "the same closure published as a signed binary cache (on the server)"
    local cache=$TMP/binary-cache key=$TMP/cache-key.sec
    run nix_env nix-store --generate-binary-cache-key demo-cache-1 "$key" "$TMP/cache-key.pub"
    info "\$ nix copy --to 'file://$cache?compression=none&secret-key=$key' $TOP"
    timed nix_copy indented nix_env nix copy --no-check-sigs --from "local?root=$TMP/server" \
        --to "file://$cache?compression=none&secret-key=$key" "$TOP"
    local narinfos=("$cache"/*.narinfo)
    info "copied in $(ms nix_copy): ${#narinfos[@]} signed narinfos, NARs uncompressed"
    info "\$ lazystore-publish --secret-key $key $cache"
    timed publish indented "$PUBLISH" --secret-key "$key" "$cache"
    local manifests=("$cache"/*.manifest)
    info "published in $(ms publish): ${#manifests[@]} signed manifests (SHA-256 of every 64 KiB block of each NAR)"

    step "nginx serving the binary cache on 127.0.0.1"
    local began ended
    now_ms began
    serve_start NGINX "$TMP/serve-NGINX.log" nginx --root "$cache" --dir "$TMP/nginx" || die "nginx did not start"
    now_ms ended
    MS[nginx]=$((ended - began))
    info "nginx pid $NGINX_PID serves $cache at $NGINX_URL, up in $(ms nginx)"
    latency_proxy HTTP_URL HTTPPROXY "$NGINX_PORT" "$NGINX_URL" ":$NGINX_PORT" ":"

    step "the executor: lazystore mounted from the binary cache, only what demo-cache-1 signed"
    local trusted
    trusted=$(cat "$TMP/cache-key.pub")
    mount_lazystore HTTPMOUNT http_mount "$HTTP_URL" "$TMP/mnt-http" "$TMP/cache-http" "trusted-public-keys=$trusted"
    run_program http_cold "$TMP/mnt-http"
    cmp -s "$TMP/out.nfs_cold" "$TMP/out.http_cold" || die "the HTTP run printed something else than the NFS run"
    show_status "$TMP/mnt-http"
    show_counters "$TMP/mnt-http" http http_cold
    info "nginx sent $(mib "$(awk '{ s += $4 } END { print s + 0 }' "$NGINX_ACCESS_LOG")") in $(wc -l <"$NGINX_ACCESS_LOG") requests (its access log)"

    step "warm: the daemon restarted, everything from its disk cache"
    unmount_lazystore HTTPMOUNT
    mount_lazystore HTTPMOUNT http_remount "$HTTP_URL" "$TMP/mnt-http" "$TMP/cache-http" "trusted-public-keys=$trusted"
    run_program http_warm "$TMP/mnt-http"
    cmp -s "$TMP/out.nfs_cold" "$TMP/out.http_warm" || die "the warm run printed something else"
    show_counters "$TMP/mnt-http" http http_warm
    ((FETCHED[http_warm] == 0)) || die "the warm run fetched ${FETCHED[http_warm]} bytes"
    info "same output; nothing fetched"
    step "unmounting the HTTP mount"
    unmount_lazystore HTTPMOUNT
}

# ---------------------------------------------------------------------------------------------
# 6. Summary

ratio() {  # COLD_NAME WARM_NAME
    [[ -n ${MS[$1]:-} && -n ${MS[$2]:-} ]] || { printf -- '-'; return; }
    local r=$((MS[$1] * 10 / (MS[$2] > 0 ? MS[$2] : 1)))
    printf '%d.%dx' $((r / 10)) $((r % 10))
}

fetched() {  # RUN
    [[ -n ${FETCHED[$1]:-} ]] || { printf -- '-'; return; }
    printf '%s' "$(mib "${FETCHED[$1]}")"
}

# shellcheck disable=SC2059  # the row formats are ours
summary() {
    step "summary: milliseconds; $RTT_MS ms added to each round trip to the server; load average $(cut -d' ' -f1-3 /proc/loadavg)"
    local row='    %-38s %12s\n'
    printf "$row" "install-deps.sh" "$(ms install)"
    printf "$row" "build (the four programs)" "$(ms build)"
    printf "$row" "sshd up" "$(ms sshd)"
    printf "$row" "nfs-ganesha up" "$(ms ganesha)"
    printf "$row" "the developer's closure" "$(ms closure)"
    printf "$row" "lazystore-push (new connection)" "$(ms push)"
    printf "$row" "lazystore-push no-op (shared conn.)" "$(ms push_noop)"
    printf "$row" "lazystore-push one path (shared conn.)" "$(ms push_late)"
    printf "$row" "nix copy to the binary cache" "$(ms nix_copy)"
    printf "$row" "lazystore-publish" "$(ms publish)"
    printf "$row" "nginx up" "$(ms nginx)"
    echo
    local table='    %-9s %9s %11s %12s %11s %10s %13s %13s\n'
    printf "$table" upstream mount "cold run" "remount" "warm run" cold/warm "fetched cold" "fetched warm"
    printf "$table" NFS "$(ms nfs_mount)" "$(ms nfs_cold)" "$(ms nfs_remount)" "$(ms nfs_warm)" \
        "$(ratio nfs_cold nfs_warm)" "$(fetched nfs_cold)" "$(fetched nfs_warm)"
    printf "$table" HTTP "$(ms http_mount)" "$(ms http_cold)" "$(ms http_remount)" "$(ms http_warm)" \
        "$(ratio http_cold http_warm)" "$(fetched http_cold)" "$(fetched http_warm)"
    info "closure: $(mib "$CLOSURE_BYTES") of NAR; NFS cold run with kill -9 of the server: $(ms nfs_killed)"
}

# ---------------------------------------------------------------------------------------------

usage() {
    sed -n '2,/^set -euo/p' "${BASH_SOURCE[0]}" | sed '$d' | sed 's/^# \{0,1\}//'
}

main() {
    while (($#)); do
        case $1 in
            --rtt)
                [[ ${2:-} =~ ^[0-9]+$ ]] || { echo "demo.sh: --rtt takes a number of milliseconds" >&2; exit 2; }
                RTT_MS=$2
                shift
                ;;
            -h | --help) usage; exit 0 ;;
            *) echo "demo.sh: unknown argument $1 (see --help)" >&2; exit 2 ;;
        esac
        shift
    done
    [[ $EUID -eq 0 ]] || die "run as root (FUSE mount, bwrap, sshd, ganesha, Nix stores without a daemon)"
    exec {DEMO_OUT}>&1 {DEMO_ERR}>&2
    trap cleanup EXIT
    trap 'on_signal INT 130' INT
    trap 'on_signal TERM 143' TERM
    trap 'on_signal HUP 129' HUP

    TMP=$(mktemp -d -t lazystore-demo.XXXXXXXX)
    info "temporary directory: $TMP"
    install_and_build
    start_server
    make_closure
    push_closure
    nfs_mount
    nfs_runs
    http_part
    step "stopping the shared push connection"
    info "\$ lazystore-push --stop-persist"
    push_cmd --stop-persist 2>&1 | sed 's/^/    | /'
    PUSHED=0
    summary
}

main "$@"
