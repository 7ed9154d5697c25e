#!/usr/bin/env bash
# lazystore end to end, on one machine, as root:
#
#   1. installs the Debian packages and builds lazystore (build/);
#   2. makes a throw-away Nix store (Debian's nix-bin, no daemon) with realistic store paths:
#      the system C headers, a runnable Python standard library, a small C program's source;
#   3. mounts lazystore over that store's directory (the "upstream"), in a temporary directory;
#   4. runs programs from /nix/store as an executor sees it (bwrap: a private /nix/store that is
#      the mount): Python importing stdlib modules, gcc compiling against the store's headers;
#   5. shows what was fetched from the upstream (xattrs) against what the store holds;
#   6. remounts with the upstream gone and runs the same programs again, from the cache alone.
#
# Idempotent; everything it makes lives in one mktemp directory that is removed on any exit, and
# nothing is mounted on the host's own /nix/store. No network beyond Debian's package registry.
#
#   packaging/demo.sh                        (LAZYSTORE_BUILD_DIR=DIR to use another build dir)
set -euo pipefail

REPO=$(cd "$(dirname "$(readlink -f "${BASH_SOURCE[0]}")")/.." && pwd)
BUILD_DIR=${LAZYSTORE_BUILD_DIR:-build}

TMP=""             # the demo's temporary directory
DAEMON_PID=""      # the lazystore daemon (runs in the foreground, as our child)
STORE_URL=""       # the throw-away Nix store, for nix-store --store
declare -A SP=()   # store paths: SP[c-headers]=/nix/store/<hash>-c-headers, ...
PYTHON=""          # the host's (Debian's) python3.X, e.g. python3.11
PYTHONHOME_NEEDED=0  # 1 if the store's python does not find its prefix by itself
STATS_JSON="{}"    # the last user.lazystore.stats read

# Executor's view: a private /nix/store bound to a directory, the rest of the host as it is.
# Python runs without its user site and without writing bytecode into the (read-only) store.
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

cleanup() {
    local status=$?
    set +e
    trap - EXIT INT TERM
    if [[ -n "$TMP" && -d "$TMP" ]]; then
        step "cleaning up: unmounting, stopping the daemon, removing $TMP"
        stop_daemon
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
    [[ -x "$BUILD_DIR/fuse/lazystore" ]] || die "$BUILD_DIR/fuse/lazystore was not built"
    info "daemon: $REPO/$BUILD_DIR/fuse/lazystore"
}

# ---------------------------------------------------------------------------------------------
# 2. A throw-away Nix store with real store paths

nix_store() {
    NIX_CONF_DIR="$TMP/nix-conf" XDG_CACHE_HOME="$TMP/xdg-cache" NIX_REMOTE="" \
        nix-store --store "$STORE_URL" "$@" </dev/null
}

# Copies /usr/include (every header the host has; gcc needs the libc ones) as c-headers.
make_c_headers() {
    cp -a /usr/include "$TMP/src/c-headers"
}

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

# A small C program that uses a handful of libc headers.
make_c_program() {
    local dir="$TMP/src/hello-c-src"
    mkdir -p "$dir"
    cat >"$dir/hello.c" <<'EOF'
#include <inttypes.h>
#include <limits.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/utsname.h>
#include <time.h>
#include <unistd.h>

int main(void) {
    struct utsname u;
    if (uname(&u) != 0) {
        perror("uname");
        return EXIT_FAILURE;
    }
    uint64_t h = UINT64_C(1469598103934665603);
    const char *msg = "compiled against headers from /nix/store";
    for (size_t i = 0; i < strlen(msg); i++) {
        h = (h ^ (unsigned char)msg[i]) * UINT64_C(1099511628211);
    }
    printf("hello from C: %s; %s %s, pid %ld, INT_MAX=%d, fnv1a=%016" PRIx64 ", time>0: %d\n",
           msg, u.sysname, u.machine, (long)getpid(), INT_MAX, h, time(NULL) > 0);
    return EXIT_SUCCESS;
}
EOF
    cat >"$dir/README" <<'EOF'
hello.c: a C program compiled by packaging/demo.sh against the c-headers store path.
EOF
}

make_store() {
    step "making a throw-away Nix store in $TMP/server (Debian's nix-bin, no daemon)"
    mkdir -p "$TMP/nix-conf" "$TMP/src" "$TMP/server"
    cat >"$TMP/nix-conf/nix.conf" <<'EOF'
build-users-group =
substituters =
experimental-features = nix-command
EOF
    STORE_URL="local?root=$TMP/server"
    info "store: --store '$STORE_URL' (paths are /nix/store/..., files in $TMP/server/nix/store)"

    info "preparing trees: c-headers (copy of /usr/include), python3-minimal, hello-c-src"
    make_c_headers
    make_python
    make_c_program

    local name path
    for name in c-headers python3-minimal hello-c-src; do
        path=$(nix_store --add "$TMP/src/$name")
        [[ "$path" == /nix/store/*-"$name" ]] || die "nix-store --add $name printed '$path'"
        [[ -d "$TMP/server$path" ]] || die "$path is not in $TMP/server/nix/store"
        SP[$name]=$path
        info "$(printf '%-16s %s  (%s)' "$name" "$path" "$(du -sh "$TMP/server$path" | cut -f1)")"
    done
    rm -rf "$TMP/src"
    nix_store --verify-path "${SP[@]}"
    info "nix-store --verify-path: all store paths valid"
}

# ---------------------------------------------------------------------------------------------
# 4. Programs run as an executor would: /nix/store is a private bind of STORE_DIR

# executor STORE_DIR COMMAND...
executor() {
    local store_dir=$1
    shift
    bwrap --dev-bind / / --tmpfs /nix --bind "$store_dir" /nix/store \
        --chdir "$TMP/out" -- "$@" </dev/null
}

PYTHON_PROGRAM='
import sys
mods = ["argparse", "base64", "bisect", "collections", "csv", "dataclasses", "datetime",
        "decimal", "fractions", "functools", "hashlib", "heapq", "itertools", "json", "pathlib",
        "random", "re", "sqlite3", "statistics", "string", "struct", "textwrap", "typing",
        "uuid", "zlib", "email.message", "xml.etree.ElementTree", "urllib.parse"]
loaded = {m: __import__(m, fromlist=["_"]) for m in mods}
outside = [m for m, mod in loaded.items()
           if getattr(mod, "__file__", None) and not mod.__file__.startswith(sys.prefix)]
assert not outside, f"modules from outside the store: {outside}"
import decimal, fractions, hashlib, json, sqlite3, statistics
db = sqlite3.connect(":memory:")
db.execute("create table t (x)")
db.executemany("insert into t values (?)", [(i,) for i in range(1, 101)])
(total,) = db.execute("select sum(x) from t").fetchone()
print(f"hello from Python {sys.version.split()[0]} at {sys.prefix}")
print(f"  imported {len(mods)} stdlib modules ({len(sys.modules)} in sys.modules), all from the store")
print("  " + json.dumps({"sqlite_sum": total,
                          "mean": statistics.mean(range(10)),
                          "frac": str(fractions.Fraction(1, 3) * 3), "dec": str(decimal.Decimal(1) / 7),
                          "sha256": hashlib.sha256(b"lazystore").hexdigest()[:16]}, sort_keys=True))
'

# run_python STORE_DIR TAG: output also kept in $TMP/out/python.TAG
run_python() {
    local store_dir=$1 tag=$2 py="${SP[python3-minimal]}"
    local -a env=("${PY_ENV[@]}")
    if ((PYTHONHOME_NEEDED)); then
        env+=("PYTHONHOME=$py")
    fi
    info "\$ $py/bin/$PYTHON -c '<import 28 stdlib modules, sqlite, json>'"
    executor "$store_dir" "${env[@]}" "$py/bin/$PYTHON" -c "$PYTHON_PROGRAM" | tee "$TMP/out/python.$tag"
}

# The headers of c-headers that the last compilation read (from gcc's dependency file).
headers_read() {
    tr -s '[:space:]' '\n' <"$TMP/out/hello.d" | grep "^${SP[c-headers]}/" | sort -u || true
}

# compile_and_run_c STORE_DIR TAG: the program is kept as $TMP/out/hello.TAG
compile_and_run_c() {
    local store_dir=$1 tag=$2 hdr="${SP[c-headers]}" src="${SP[hello-c-src]}"
    local multiarch gcc_include
    multiarch=$(gcc -print-multiarch)
    gcc_include=$(gcc -print-file-name=include)
    rm -f "$TMP/out/hello" "$TMP/out/hello.d"
    local -a cc=(gcc -O2 -nostdinc -isystem "$gcc_include" -isystem "$hdr/$multiarch" -isystem "$hdr"
        -MD -MF "$TMP/out/hello.d" -o "$TMP/out/hello" "$src/hello.c")
    info "\$ gcc -nostdinc -isystem $gcc_include -isystem $hdr/$multiarch -isystem $hdr -o hello $src/hello.c"
    executor "$store_dir" "${cc[@]}"
    local from_store
    from_store=$(headers_read | wc -l)
    info "gcc read $from_store headers from $hdr"
    ((from_store > 0)) || die "gcc used no header from the store"
    info "\$ ./hello"
    executor "$store_dir" "$TMP/out/hello"
    cp "$TMP/out/hello" "$TMP/out/hello.$tag"
}

# run_programs STORE_DIR TAG: TAG's results must equal the baseline's (same bytes read).
run_programs() {
    local store_dir=$1 tag=$2
    run_python "$store_dir" "$tag"
    compile_and_run_c "$store_dir" "$tag"
    if [[ "$tag" != baseline ]]; then
        cmp -s "$TMP/out/python.baseline" "$TMP/out/python.$tag" ||
            die "Python's output differs from the baseline run's"
        cmp -s "$TMP/out/hello.baseline" "$TMP/out/hello.$tag" ||
            die "the compiled program differs from the one compiled in the baseline run"
        info "same Python output and a byte-identical compiled program as in the baseline run"
    fi
}

# ---------------------------------------------------------------------------------------------
# 3. Mounting lazystore

mount_lazystore() {
    local source=$1 log="$TMP/lazystore.log"
    mkdir -p "$TMP/mnt"
    info "\$ $BUILD_DIR/fuse/lazystore $source $TMP/mnt -o cache=$TMP/cache,cache-size=2G -f &"
    "$REPO/$BUILD_DIR/fuse/lazystore" "$source" "$TMP/mnt" \
        -o "cache=$TMP/cache,cache-size=2G" -f </dev/null >>"$log" 2>&1 &
    DAEMON_PID=$!
    local i
    for ((i = 0; i < 100; i++)); do   # up to 10 s
        if is_mounted "$TMP/mnt"; then
            info "mounted (daemon pid $DAEMON_PID, log $log)"
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

# ---------------------------------------------------------------------------------------------
# 5. What was fetched

show_stats() {
    local stats
    stats=$(getfattr --absolute-names --only-values -n user.lazystore.stats "$TMP/mnt") ||
        die "cannot read the user.lazystore.stats xattr of the mount root"
    info "user.lazystore.stats of the mount root:"
    info "  $stats"
    STATS_JSON=$stats
}

# Per store path: bytes in the cache (sum of user.lazystore.cached over its files) vs its size.
show_fetched() {
    local store_bytes
    store_bytes=$(du -sbc "${SP[@]/#/$TMP/server}" | tail -n1 | cut -f1)
    /usr/bin/python3 - "$TMP/mnt" "$store_bytes" "$STATS_JSON" "${SP[@]}" <<'EOF'
import json, os, stat, sys

mnt, store_bytes, stats = sys.argv[1], int(sys.argv[2]), json.loads(sys.argv[3])
def human(n):
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.1f} {unit}" if unit != "B" else f"{n} B"
        n /= 1024

for path in sys.argv[4:]:
    root = os.path.join(mnt, os.path.basename(path))
    files = cached_files = size = cached = 0
    for dirpath, dirnames, filenames in os.walk(root):
        for name in filenames:
            p = os.path.join(dirpath, name)
            st = os.lstat(p)
            if not stat.S_ISREG(st.st_mode):
                continue
            files += 1
            size += st.st_size
            n = int(os.getxattr(p, "user.lazystore.cached", follow_symlinks=False))
            cached += n
            cached_files += n > 0
    pct = 100 * cached / size if size else 0
    print(f"    {os.path.basename(path)[33:]:<16} {cached_files:>6} of {files:>6} files cached, "
          f"{human(cached):>10} of {human(size):>10} ({pct:.2f} %)")

fetched = stats.get("upstream_bytes", 0)
print(f"    fetched from the upstream: {human(fetched)} of the {human(store_bytes)} the store paths hold "
      f"({100 * fetched / store_bytes:.2f} %), in {stats.get('upstream_requests', '?')} requests")
EOF
}

# The largest header of c-headers that gcc did not read (per its dependency file).
unread_header() {
    local hdr="${SP[c-headers]}"
    headers_read >"$TMP/out/headers-read"
    (cd "$TMP/server.away" && find ".$hdr" -type f -name '*.h' -printf "%s $hdr/%P\n") |
        awk 'NR == FNR { read[$1] = 1; next } !($2 in read)' "$TMP/out/headers-read" - |
        sort -n | tail -n1 | cut -d' ' -f2-
}

# ---------------------------------------------------------------------------------------------

main() {
    [[ $EUID -eq 0 ]] || die "run as root (FUSE mount, bwrap, a Nix store without a daemon)"
    trap cleanup EXIT
    trap 'exit 130' INT
    trap 'exit 143' TERM

    install_and_build

    TMP=$(mktemp -d -t lazystore-demo.XXXXXXXX)
    mkdir -p "$TMP/out"
    make_store

    step "baseline: the same programs with /nix/store bound straight to the upstream directory"
    run_programs "$TMP/server/nix/store" baseline

    step "mounting lazystore over the upstream (file://$TMP/server/nix/store) at $TMP/mnt"
    mount_lazystore "file://$TMP/server/nix/store"
    info "the executor sees: $(executor "$TMP/mnt" ls /nix/store | tr '\n' ' ')"

    step "running programs from /nix/store through lazystore (bwrap --tmpfs /nix --bind $TMP/mnt /nix/store)"
    run_programs "$TMP/mnt" mounted

    step "what was fetched"
    show_stats
    show_fetched

    step "going offline: unmounting, moving the upstream away, remounting on the same cache"
    unmount_lazystore
    mv "$TMP/server" "$TMP/server.away"
    info "upstream $TMP/server/nix/store no longer exists"
    mount_lazystore "file://$TMP/server/nix/store"

    step "running the same programs again, offline, from the cache alone"
    run_programs "$TMP/mnt" offline
    show_stats
    local fetched
    fetched=$(/usr/bin/python3 -c 'import json, sys; print(json.loads(sys.argv[1]).get("upstream_bytes", 0))' "$STATS_JSON")
    ((fetched == 0)) || die "the offline run fetched $fetched bytes from a missing upstream"
    info "nothing was fetched: everything came from $TMP/cache"

    step "offline, a file that was never read is not served"
    local unread
    unread=$(unread_header)
    if executor "$TMP/mnt" timeout 60 head -c 64 "$unread" >/dev/null 2>"$TMP/out/unread.err"; then
        info "unexpected: $unread was read while offline"
    else
        info "as expected: reading $unread fails: $(head -n1 "$TMP/out/unread.err")"
    fi

    step "unmounting"
    unmount_lazystore
    mv "$TMP/server.away" "$TMP/server"
}

main "$@"
