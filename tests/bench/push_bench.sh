#!/usr/bin/env bash
# Push benchmark, one run, one sshd (the forced command of packaging/server/ on a throw-away
# server store), tools alternating within each round:
#   lazystore-push over ssh-ng (the daemon protocol, nix-daemon --stdio)
#   lazystore-push over the serve protocol (nix-store --serve --write)
#   nix copy --to ssh-ng://nix-server
#   nix copy --to ssh://nix-server
# Closures: 50 small paths (10 nix-store --add trees, 40 toFile nodes), and the same plus one path
# of 64 MiB (4 random files). Every tool pushes a closure of the same shape that is new to the
# server (its contents salted per round and tool), so nothing is emptied between runs.
#   full    a closure the server lacks, each tool one-shot as a user runs it; lazystore-push
#           reuses the connection an earlier invocation left open (its default; one untimed push
#           before the rounds opens it), nix copy starts an SSH session and a server process
#   no-op   the same closure again
#   cold    lazystore-push --persist 0 (nothing shared: handshake and server start-up each time),
#           full and no-op, for what the shared connection saves
# Prints median wall times (RUNS rounds, default 5), ratios to the fastest nix copy, the load
# average before and after, and bytes moved. Not run by meson test.
#   usage: tests/bench/push_bench.sh [RUNS]      (PUSH=path/to/lazystore-push, default build/)
set -euo pipefail
SOURCE_ROOT=$(cd "$(dirname "$0")/../.." && pwd)
export SOURCE_ROOT
export PUSH=${PUSH:-$SOURCE_ROOT/build/push/lazystore-push}
RUNS=${1:-5}
[ -x "$PUSH" ] || { echo "build lazystore-push first (or set PUSH)"; exit 1; }
source "$SOURCE_ROOT/tests/push/lib.sh"

start_sshd
unset LAZYSTORE_PUSH_PERSIST  # lazystore-push's default: connections shared across invocations

# A closure shaped like build_closure's, with every path salted: new to the server.
make_closure() {  # SALT WITH_BIG
  local salt=$1 big=$2 dir=$WORK/closures/$1 i
  mkdir -p "$dir"
  for i in $(seq 0 9); do
    mkdir -p "$dir/tree-$i/sub"
    { echo "$salt"; seq 1 $((i * 500 + 1)); } > "$dir/tree-$i/data"
    printf '#!/bin/sh\necho %s\n' "$i" > "$dir/tree-$i/run"
    echo "leaf $i $salt" > "$dir/tree-$i/sub/leaf"
  done
  local -a trees
  mapfile -t trees < <(dev_store --add "$dir"/tree-*)
  local expr="let" extra=""
  for i in $(seq 0 9); do expr+=" t$i = builtins.storePath \"${trees[$i]}\";"; done
  if [ "$big" = 1 ]; then
    mkdir -p "$dir/data"
    for i in 1 2 3 4; do head -c $((16 * 1024 * 1024)) /dev/urandom > "$dir/data/blob-$i"; done
    expr+=" data = builtins.storePath \"$(dev_store --add "$dir/data")\";"
    extra=" \${data}"
    rm -rf "$dir/data"
  fi
  expr+=" n1 = builtins.toFile \"node-1\" \"$salt \${t0}$extra\";"
  for i in $(seq 2 40); do
    expr+=" n$i = builtins.toFile \"node-$i\" \"$salt $i \${n$((i - 1))} \${n$((i / 2))} \${t$((i % 10))}\";"
  done
  expr+=" in n40"
  nix-instantiate --store "$DEV_STORE" --read-write-mode --eval -E "$expr" | tr -d '"'
}

export NIX_SSHOPTS="-F $WORK/ssh_config"
lz() {  # PROTOCOL PATH [OPTIONS...]
  local protocol=$1 path=$2
  shift 2
  "$PUSH" -F "$WORK/ssh_config" --from-store "$DEV_STORE" --to nix-server --control-dir "$WORK/ctl" \
    --protocol "$protocol" --progress none "$@" "$path" > /dev/null 2>&1
}
lz_stop() {
  local protocol
  for protocol in daemon serve; do
    "$PUSH" -F "$WORK/ssh_config" --from-store "$DEV_STORE" --to nix-server --control-dir "$WORK/ctl" \
      --protocol "$protocol" --stop-persist > /dev/null 2>&1 || true
  done
}
EXTRA_CLEANUP+=(lz_stop)
run_tool() {  # TOOL PATH
  case "$1" in
    lz-daemon) lz daemon "$2" ;;
    lz-serve) lz serve "$2" ;;
    lz-daemon-cold) lz daemon "$2" --persist 0 ;;
    nix-ng) nix --store "$DEV_STORE" copy --to ssh-ng://nix-server "$2" 2> /dev/null ;;
    nix-ssh) nix --store "$DEV_STORE" copy --to ssh://nix-server "$2" 2> /dev/null ;;
  esac
}
# Wall time of one command in seconds (bash's clock; no subprocess in the measurement).
time_it() {
  local t0=$EPOCHREALTIME
  "$@"
  local t1=$EPOCHREALTIME
  /usr/bin/python3 -c "print(f'{$t1 - $t0:.4f}')"
}

TOOLS=(lz-daemon lz-serve nix-ng nix-ssh)
declare -A times closures
echo "building closures ($RUNS rounds × 5 × 2 shapes) ..."
for label in small big; do
  big=0; [ "$label" = big ] && big=1
  for round in $(seq 1 "$RUNS"); do
    for tool in "${TOOLS[@]}" lz-daemon-cold; do
      closures[$label,$round,$tool]=$(make_closure "$label-$round-$tool" "$big")
    done
  done
done
warm=$(make_closure warm-up 0)
for tool in lz-daemon lz-serve nix-ng nix-ssh; do run_tool "$tool" "$warm"; done  # opens lazystore-push's connections

bench() {
  local label=$1 round tool top
  for round in $(seq 1 "$RUNS"); do
    local -a order=("${TOOLS[@]}")
    if (( round % 2 == 0 )); then order=(nix-ssh nix-ng lz-serve lz-daemon); fi
    for tool in "${order[@]}" lz-daemon-cold; do
      top=${closures[$label,$round,$tool]}
      times[$label,full,$tool]+="$(time_it run_tool "$tool" "$top") "
      srv_store --check-validity $(dev_store -qR "$top") || { echo "$tool left the server incomplete"; exit 1; }
      times[$label,noop,$tool]+="$(time_it run_tool "$tool" "$top") "
    done
  done
  top=${closures[$label,1,lz-daemon]}
  "$PUSH" -F "$WORK/ssh_config" --from-store "$DEV_STORE" --to nix-server --persist 0 --json --dry-run "$top" \
    > "$WORK/bytes.json" 2> /dev/null
  echo "$(json_field closure_paths < "$WORK/bytes.json") $(json_field closure_bytes < "$WORK/bytes.json")" > "$WORK/size.$label"
}

load_before=$(cut -d' ' -f1-3 /proc/loadavg)
bench small
bench big
load_after=$(cut -d' ' -f1-3 /proc/loadavg)

for key in "${!times[@]}"; do echo "$key ${times[$key]}"; done > "$WORK/times.txt"
/usr/bin/python3 - "$WORK" "$RUNS" "$(nix --version | awk '{print $3}')" "$(nproc)" "$load_before" "$load_after" <<'PY'
import statistics, sys
work, runs, nix_version, cores, load_before, load_after = sys.argv[1:]
times = {}
for line in open(f"{work}/times.txt"):
    key, *values = line.split()
    times[tuple(key.split(","))] = statistics.median(map(float, values))
print(f"nix {nix_version}, {cores} cores, load average {load_before} before, {load_after} after; "
      f"median of {runs} rounds\n")
names = {"lz-daemon": "lazystore-push ssh-ng", "lz-serve": "lazystore-push serve",
         "nix-ng": "nix copy ssh-ng://", "nix-ssh": "nix copy ssh://"}
print("| closure | case | lazystore-push ssh-ng | lazystore-push serve | nix copy ssh-ng:// | nix copy ssh:// "
      "| fastest nix copy ÷ lazystore-push ssh-ng |")
print("|---|---|---|---|---|---|---|")
for label, title in (("small", "50 small paths"), ("big", "50 paths + 64 MiB")):
    paths, size = open(f"{work}/size.{label}").read().split()
    title = f"{title} ({paths} paths, {int(size) / 2**20:.1f} MiB of NAR)"
    for case, case_title in (("full", "full push"), ("noop", "no-op push")):
        row = [times[(label, case, tool)] for tool in names]
        fastest_nix = min(row[2], row[3])
        cells = " | ".join(f"{t:.3f} s" for t in row)
        print(f"| {title} | {case_title} | {cells} | {fastest_nix / row[0]:.2f}× |")
        title = ""
    for case, case_title in (("full", "full push, --persist 0 (cold)"), ("noop", "no-op push, --persist 0 (cold)")):
        cold = times[(label, case, "lz-daemon-cold")]
        fastest_nix = min(times[(label, case, "nix-ng")], times[(label, case, "nix-ssh")])
        print(f"| | {case_title} | {cold:.3f} s | | | | {fastest_nix / cold:.2f}× |")
PY
