#!/bin/sh
# The benchmark suite: lazystore (NFS and HTTP) vs native disk, sshfs and rclone on the same store (README.md).
# As root:  tests/bench/run.sh [--runs 3] [--hot-runs 5] [--out DIR]
#           tests/bench/run.sh lab [--runs 2] [--rtts 0,0.5] [--out DIR]   (lab_bench.py: the kernel NFS client)
# Writes tests/bench/results.{md,png,json}. Not part of meson test.
# LAZYSTORE_BIN overrides the daemon (default build-lead/fuse/lazystore).
set -eu
here=$(cd "$(dirname "$0")" && pwd)
if [ "$(id -u)" != 0 ]; then
    echo "run.sh: run as root (FUSE mounts, drop_caches, sshd, ganesha)" >&2
    exit 1
fi
# Debian's python3 (matplotlib from python3-matplotlib); the python3 on PATH may be pyenv's.
# `run.sh lab [...]`: the suite's workloads against the kernel NFS client, in the lab guest.
if [ "${1:-}" = lab ]; then
    shift
    exec /usr/bin/python3 "$here/lab_bench.py" "$@"
fi
exec /usr/bin/python3 "$here/suite.py" "$@"
