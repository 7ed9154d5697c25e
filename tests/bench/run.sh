#!/bin/sh
# The one entry point of the benchmarks (tests/bench/README.md). As root:
#
#   tests/bench/run.sh [suite] [--rtt 0,0.5,2] [--runs 2] [--hot-runs 3] [--out DIR] ...
#                          lazystore (NFS, HTTP) vs native, sshfs, rclone at each round trip
#   tests/bench/run.sh scale [--mounts 1,4,16] [--rtt 0.5]   many executors, one server
#   tests/bench/run.sh lab [--runs 2] [--rtts 0,0.5]   the kernel NFS client and server in the qemu lab
#   tests/bench/run.sh nfs|http|verified-http|supervisor|load|mount|push [ARGS...]
#                          the focused benchmarks (each script's --help)
#
# Installs what the benchmarks use (packaging/install-deps.sh), builds build/ if it is not
# built, and runs the daemon of build/ unless LAZYSTORE_BIN names another. Not part of meson test.
set -eu
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
if [ "$(id -u)" != 0 ]; then
    echo "run.sh: run as root (FUSE mounts, drop_caches, sshd, ganesha, nginx)" >&2
    exit 1
fi
bash "$root/packaging/install-deps.sh"
build=${LAZYSTORE_BUILD:-$root/build}
if [ -z "${LAZYSTORE_BIN:-}" ]; then
    [ -f "$build/build.ninja" ] || meson setup "$build" "$root" -Dwerror=true -Dtests=enabled >/dev/null
    nice -n 10 ninja -C "$build" >/dev/null
    LAZYSTORE_BIN=$build/fuse/lazystore
fi
export LAZYSTORE_BIN
export LAZYSTORE_PUBLISH=${LAZYSTORE_PUBLISH:-$(dirname "$(dirname "$LAZYSTORE_BIN")")/push/lazystore-publish}
export PUSH=${PUSH:-$(dirname "$(dirname "$LAZYSTORE_BIN")")/push/lazystore-push}
what=suite
case "${1:-}" in
    suite|scale|lab|nfs|http|verified-http|supervisor|load|mount|push) what=$1; shift ;;
esac
# Debian's python3 (matplotlib from python3-matplotlib); the python3 on PATH may be pyenv's.
case "$what" in
    suite) exec /usr/bin/python3 "$here/suite.py" "$@" ;;
    scale) exec /usr/bin/python3 "$here/scale_bench.py" "$@" ;;
    nfs) exec /usr/bin/python3 "$here/nfs_bench.py" "$@" ;;
    http) exec /usr/bin/python3 "$here/http_bench.py" "$@" ;;
    verified-http) exec /usr/bin/python3 "$here/verified_http_bench.py" "$@" ;;
    supervisor) exec /usr/bin/python3 "$here/supervisor_bench.py" "$@" ;;
    load) exec /usr/bin/python3 "$here/load.py" "$@" ;;
    mount) exec /usr/bin/python3 "$here/mount_bench.py" "$@" ;;
    push) exec bash "$here/push_bench.sh" "$@" ;;
    lab) exec /usr/bin/python3 "$here/lab_bench.py" "$@" ;;
esac
