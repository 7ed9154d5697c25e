#!/bin/sh
# The benchmark suite: lazystore (NFS and HTTP) vs native disk, sshfs and rclone on the same store (README.md).
# As root:  tests/bench/run.sh [--runs 3] [--hot-runs 5] [--out DIR]
# Writes tests/bench/results.{md,png,json}. Not part of meson test.
# LAZYSTORE_BIN overrides the daemon (default build-lead/fuse/lazystore).
set -eu
here=$(cd "$(dirname "$0")" && pwd)
if [ "$(id -u)" != 0 ]; then
    echo "run.sh: run as root (FUSE mounts, drop_caches, sshd, ganesha)" >&2
    exit 1
fi
# Debian's python3 (matplotlib from python3-matplotlib); the python3 on PATH may be pyenv's.
exec /usr/bin/python3 "$here/suite.py" "$@"
