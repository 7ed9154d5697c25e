#!/bin/bash
# kill -9 of lazystore's serving process while a cold read of every file of a store path is in
# flight, on whatever kernel this runs on (meant for the lab guest: Debian 12's 6.1, which has no
# FUSE_NOTIFY_RESEND): the read must finish and every file's sha256 must equal the native one.
# A kill lands only while the mount has requests in flight (the connection's `waiting` count in
# fusectl is above 0), never on a sleep. A reader still blocked 120 s after a kill is a failure
# (the connection is then aborted, so the script always ends).
#
# Environment (what the lab provides):
#   LAZYSTORE_BIN    the daemon
#   CRASH_SOURCE     its SOURCE, e.g. 127.0.0.1:/srv/nix/store (NFSv3 to the kernel nfsd)
#   CRASH_STORE_DIR  the same store read natively, e.g. /srv/nix/store
#   CRASH_STORE_PATH the store path to read, e.g. wh62f6wkrfdwmcd91hxrgdsln6dr79ka-include
#   CRASH_OUT        a directory for the results (summary.txt, logs)
#   CRASH_KILLS      kills in all (default 20), CRASH_WORK scratch directory (default /tmp)
#   CRASH_OPTIONS    extra -o options for lazystore (optional)
# Needs root, /dev/fuse, fusectl (mounted here if it is not), bash, sha256sum, findmnt.
# Exit status 0 when every read completed with the right bytes, 1 otherwise.
set -u
: "${LAZYSTORE_BIN:?}" "${CRASH_SOURCE:?}" "${CRASH_STORE_DIR:?}" "${CRASH_STORE_PATH:?}" "${CRASH_OUT:?}"
KILLS=${CRASH_KILLS:-20}
WORK=$(mktemp -d "${CRASH_WORK:-/tmp}/crash-replay.XXXXXX")
MNT=$WORK/mnt
mkdir -p "$MNT" "$CRASH_OUT"
SUMMARY=$CRASH_OUT/summary.txt
: > "$SUMMARY"
say() { echo "$*" | tee -a "$SUMMARY"; }

mountpoint -q /sys/fs/fuse/connections || mount -t fusectl fusectl /sys/fs/fuse/connections

supervisor=
cleanup() {
  if mountpoint -q "$MNT"; then umount "$MNT" 2>/dev/null || umount -l "$MNT"; fi
  [ -n "$supervisor" ] && kill "$supervisor" 2>/dev/null
  rm -rf "$WORK"
}
trap cleanup EXIT

(cd "$CRASH_STORE_DIR/$CRASH_STORE_PATH" && find . -type f | LC_ALL=C sort) > "$WORK/files.txt"
(cd "$CRASH_STORE_DIR/$CRASH_STORE_PATH" && xargs -d '\n' sha256sum < "$WORK/files.txt") > "$CRASH_OUT/sha-native.txt"
say "crash_replay: kernel $(uname -r), $(wc -l < "$WORK/files.txt") files of $CRASH_STORE_PATH, $KILLS kills"

connection() {  # the fusectl directory of the mount
  local dev; dev=$(findmnt -n -o MAJ:MIN --target "$MNT" | tr -d " ")
  echo "/sys/fs/fuse/connections/${dev#*:}"
}
server_of() { pgrep -P "$1" | head -1; }
age_ms() {  # how long process $1 has run
  local start; start=$(awk '{print $22}' "/proc/$1/stat")
  awk -v s="$start" -v hz="$(getconf CLK_TCK)" '{printf "%d", ($1 - s / hz) * 1000}' /proc/uptime
}

kills=0 failures=0 round=0
recoveries=()
while [ "$kills" -lt "$KILLS" ]; do
  round=$((round + 1))
  rm -rf "$WORK/cache"
  log=$CRASH_OUT/lazystore-$round.log
  "$LAZYSTORE_BIN" "$CRASH_SOURCE" "$MNT" -f -o "cache=$WORK/cache,log-level=info${CRASH_OPTIONS:+,$CRASH_OPTIONS}" > "$log" 2>&1 &
  supervisor=$!
  for _ in $(seq 600); do mountpoint -q "$MNT" && break; sleep 0.05; done
  mountpoint -q "$MNT" || { say "round $round: not mounted"; failures=$((failures + 1)); break; }
  conn=$(connection)
  echo 3 > /proc/sys/vm/drop_caches
  out=$CRASH_OUT/sha-$round.txt
  (cd "$MNT/$CRASH_STORE_PATH" && xargs -d '\n' sha256sum < "$WORK/files.txt") > "$out" 2> "$CRASH_OUT/sha-$round.err" &
  reader=$!
  while [ "$kills" -lt "$KILLS" ] && kill -0 "$reader" 2>/dev/null; do
    server=$(server_of "$supervisor")
    # A young server's death counts towards the crash-loop backoff: let it serve 1.1 s first.
    if [ -z "$server" ] || [ "$(age_ms "$server")" -lt 1100 ]; then sleep 0.05; continue; fi
    [ "$(cat "$conn/waiting" 2>/dev/null || echo 0)" -gt 0 ] || { sleep 0.005; continue; }
    lines=$(wc -l < "$out")
    kill -9 "$server"
    killed=$EPOCHREALTIME
    kills=$((kills + 1))
    # Recovered once the reader makes progress again (or is done).
    for _ in $(seq 12000); do
      { [ "$(wc -l < "$out")" -gt "$lines" ] || ! kill -0 "$reader" 2>/dev/null; } && break
      sleep 0.01
    done
    if [ "$(wc -l < "$out")" -le "$lines" ] && kill -0 "$reader" 2>/dev/null; then
      say "kill $kills: the reader is STILL BLOCKED 120 s after the kill; states:" \
          "$(ps -eo stat=,wchan:32=,comm= | grep -E 'sha256|xargs' | tr -s ' ' | tr '\n' ';')"
      echo 1 > "$conn/abort"
      failures=$((failures + 1))
      break
    fi
    recoveries+=("$(echo "($EPOCHREALTIME - $killed) * 1000" | bc)")
  done
  wait "$reader"; rc=$?
  if [ "$rc" -ne 0 ] || ! cmp -s "$CRASH_OUT/sha-native.txt" "$out"; then
    say "round $round: sha256sum rc=$rc, $(wc -l < "$out") of $(wc -l < "$CRASH_OUT/sha-native.txt") lines," \
        "$(diff "$CRASH_OUT/sha-native.txt" "$out" | grep -c '^>') different; $(head -2 "$CRASH_OUT/sha-$round.err" | tr '\n' ' ')"
    failures=$((failures + 1))
  else
    say "round $round: every file read, every sha256 equal to the native one"
  fi
  umount "$MNT" || umount -l "$MNT"
  for _ in $(seq 200); do kill -0 "$supervisor" 2>/dev/null || break; sleep 0.05; done
  kill "$supervisor" 2>/dev/null; wait "$supervisor"
  supervisor=
  [ "$failures" -gt 0 ] && break
done

if [ "${#recoveries[@]}" -gt 0 ]; then
  sorted=$(printf '%s\n' "${recoveries[@]}" | sort -n)
  median=$(echo "$sorted" | awk '{a[NR]=$1} END {print a[int((NR + 1) / 2)]}')
  say "progress again after each kill: median ${median%.*} ms, max $(echo "$sorted" | tail -1 | cut -d. -f1) ms over ${#recoveries[@]} kills"
fi
say "replayed requests (servers' logs): $(cat "$CRASH_OUT"/lazystore-*.log | grep -o 'answering [0-9]* requests' | awk '{s += $2} END {print s + 0}')"
say "load average: $(cut -d' ' -f1-3 /proc/loadavg)"
if [ "$failures" -eq 0 ] && [ "$kills" -ge "$KILLS" ]; then
  say "crash_replay: PASS ($kills kills)"
  exit 0
fi
say "crash_replay: FAIL ($kills kills, $failures failures)"
exit 1
