#!/usr/bin/env bash
# Installs the Debian 12 packages lazystore needs to build, test and demo.
# Idempotent: prints nothing and touches nothing when every package is already installed.
# Runs as root (or via sudo) with no standard input.
set -euo pipefail

# The one list of packages, grouped.
PACKAGES=(
    # build: compiler, build system, FUSE, hashing, unit tests
    meson ninja-build pkg-config g++ libfuse3-dev fuse3 libxxhash-dev libgtest-dev libgmock-dev
    # fuzzing and sanitizer builds (tests/fuzz/run_libfuzzer.sh): clang and its libFuzzer runtime
    clang libclang-rt-14-dev
    # runtime and tests: Nix (throw-away stores), executor sandbox, xattrs, mounts, processes,
    # benchmarks, the daemon's footprint (strace)
    nix-bin bubblewrap attr util-linux bsdutils procps python3 hyperfine psmisc strace
    # real servers of the integration tests: NFS (nfs-ganesha with its VFS backend, rpcbind,
    # network namespaces), SSH (push), and sshfs as a benchmark peer
    nfs-ganesha nfs-ganesha-vfs rpcbind iproute2 openssh-server openssh-client sshfs
    # HTTP binary cache tests: nginx, and the compressors Nix's caches use
    nginx zstd xz-utils
    # benchmarks (tests/bench/run.sh): rclone as a peer, the suite's chart
    rclone python3-matplotlib
    # packaging checks: Debian package build, systemd unit verification, Kubernetes YAML, and the
    # container image test's own engine (a private dockerd) and Debian base (debootstrap)
    debhelper dpkg-dev fakeroot systemd python3-yaml docker.io debootstrap
    # the lab (tests/lab/): Debian's 6.1 kernel (NFS server and client as modules) in a qemu
    # guest, busybox for its initramfs, the kernel NFS server's tools, ext4 images of the store
    qemu-system-x86 linux-image-amd64 busybox-static nfs-kernel-server nfs-common e2fsprogs kmod
    # libraries: NFS, push over SSH, HTTP binary cache, compression, crypto, CLI parsing
    libnfs-dev libssh-dev libcurl4-openssl-dev nlohmann-json3-dev libzstd-dev liblzma-dev libssl-dev libcli11-dev
)

# Prints the packages of PACKAGES that are not installed, one a line.
missing_packages() {
    local -A installed=()
    local pkg status
    # One dpkg-query for all; it exits non-zero when a package is unknown, which just means missing.
    while read -r pkg status; do
        [[ "$status" == installed ]] && installed[$pkg]=1
    done < <(dpkg-query -W -f='${Package} ${db:Status-Status}\n' "${PACKAGES[@]}" 2>/dev/null || true)
    for pkg in "${PACKAGES[@]}"; do
        [[ -n "${installed[$pkg]:-}" ]] || echo "$pkg"
    done
}

main() {
    local -a missing
    mapfile -t missing < <(missing_packages)
    if ((${#missing[@]} == 0)); then
        return 0
    fi

    local sudo=()
    if ((EUID != 0)); then
        sudo=(sudo)
    fi
    echo "==> installing Debian packages: ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    "${sudo[@]}" apt-get update -qq </dev/null >/dev/null
    "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive \
        apt-get install -y -qq --no-install-recommends "${missing[@]}" </dev/null >/dev/null

    mapfile -t missing < <(missing_packages)
    if ((${#missing[@]} != 0)); then
        echo "install-deps.sh: still missing after apt-get install: ${missing[*]}" >&2
        return 1
    fi
}

main "$@"
