#!/usr/bin/env bash
# lazystore-push vs `nix copy --to ssh://ALIAS`: same closure, same sshd (with the forced-command
# wrapper of packaging/server/ serving a throw-away server store), same run, alternating tools.
#   (a) full push of a closure the server lacks (the server store is emptied before each run)
#   (b) no-op push of a closure the server already has
# Two closures: 50 small paths (latency-bound) and the same plus 64 MiB in 4 files (throughput).
# "no-op, --persist" is lazystore-push with its background master already holding the
# connections (what repeated pushes during a build see).
# Prints median wall times and ratios. Not run by `meson test`.
#   usage: tests/bench/push_bench.sh [RUNS]      (PUSH=path/to/lazystore-push, default build-push)
set -euo pipefail
SOURCE_ROOT=$(cd "$(dirname "$0")/../.." && pwd)
export SOURCE_ROOT
export PUSH=${PUSH:-$SOURCE_ROOT/build-push/push/lazystore-push}
RUNS=${1:-5}
[ -x "$PUSH" ] || { echo "build lazystore-push first (or set PUSH)"; exit 1; }
source "$SOURCE_ROOT/tests/push/lib.sh"

start_sshd
small_top=$(build_closure)
mkdir -p "$WORK/data"
for i in 1 2 3 4; do head -c $((16 * 1024 * 1024)) /dev/urandom > "$WORK/data/blob-$i"; done
data=$(dev_store --add "$WORK/data")
big_top=$(nix-instantiate --store "$DEV_STORE" --read-write-mode --eval -E \
  "builtins.toFile \"bench-top\" \"\${builtins.storePath \"$small_top\"} \${builtins.storePath \"$data\"}\"")
big_top=${big_top//\"/}

export NIX_SSHOPTS="-F $WORK/ssh_config"
run_lazystore() { "$PUSH" -F "$WORK/ssh_config" --from-store "$DEV_STORE" --to nix-server --progress none "$1" 2>/dev/null; }
run_lazystore_persist() {
  "$PUSH" -F "$WORK/ssh_config" --from-store "$DEV_STORE" --to nix-server --progress none \
    --control-dir "$WORK/ctl" --persist 5m "$1" 2>/dev/null
}
stop_persist() { "$PUSH" -F "$WORK/ssh_config" --from-store "$DEV_STORE" --to nix-server --control-dir "$WORK/ctl" --stop-persist 2>/dev/null; }
EXTRA_CLEANUP+=(stop_persist)
run_nix_copy() { nix --store "$DEV_STORE" copy --to ssh://nix-server "$1" 2>/dev/null; }
empty_server() { rm -rf "$SRV"; srv_store --init; }

# Times one command in seconds (bash's clock; no subprocess in the measurement).
time_it() {
  local t0=$EPOCHREALTIME
  "$@"
  local t1=$EPOCHREALTIME
  /usr/bin/python3 -c "print(f'{$t1 - $t0:.4f}')"
}
median() { printf '%s\n' "$@" | sort -g | awk '{a[NR]=$1} END {print (NR % 2) ? a[(NR+1)/2] : (a[NR/2] + a[NR/2+1]) / 2}'; }

bench() {
  local label=$1 top=$2
  local -a lz_full=() nix_full=() lz_noop=() nix_noop=() lz_persist=()
  local -a closure
  mapfile -t closure < <(dev_store -qR "$top")
  local paths=${#closure[@]}
  for _ in $(seq 1 "$RUNS"); do
    empty_server; lz_full+=("$(time_it run_lazystore "$top")")
    srv_store --check-validity "${closure[@]}" || { echo "lazystore-push left the server incomplete"; exit 1; }
    lz_noop+=("$(time_it run_lazystore "$top")")
    run_lazystore_persist "$top"  # starts the master (not timed)
    lz_persist+=("$(time_it run_lazystore_persist "$top")")
    stop_persist
    empty_server; nix_full+=("$(time_it run_nix_copy "$top")")
    srv_store --check-validity "${closure[@]}" || { echo "nix copy left the server incomplete"; exit 1; }
    nix_noop+=("$(time_it run_nix_copy "$top")")
  done
  local a b c d e
  a=$(median "${lz_full[@]}"); b=$(median "${nix_full[@]}")
  c=$(median "${lz_noop[@]}"); d=$(median "${nix_noop[@]}")
  e=$(median "${lz_persist[@]}")
  /usr/bin/python3 - "$label" "$paths" "$a" "$b" "$c" "$d" "$e" "$RUNS" <<'PY'
import sys
label, paths, lf, nf, ln, nn, lp, runs = sys.argv[1], sys.argv[2], *map(float, sys.argv[3:8]), sys.argv[8]
print(f"{label} ({paths} paths, median of {runs} runs)")
print(f"  full push: lazystore-push {lf:7.3f} s   nix copy {nf:7.3f} s   nix copy / lazystore-push = {nf / lf:5.2f}x")
print(f"  no-op    : lazystore-push {ln:7.3f} s   nix copy {nn:7.3f} s   nix copy / lazystore-push = {nn / ln:5.2f}x")
print(f"  no-op, --persist: lazystore-push {lp:7.3f} s   nix copy {nn:7.3f} s   nix copy / lazystore-push = {nn / lp:5.2f}x")
PY
}

echo "nix $(nix --version | awk '{print $3}'), $(nproc) cores, load $(cut -d' ' -f1-3 /proc/loadavg)"
bench "50 small paths" "$small_top"
bench "50 small paths + 64 MiB" "$big_top"
