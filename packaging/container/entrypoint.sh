#!/bin/bash
# Executor container entrypoint: mounts lazystore at /nix/store, runs the executor's command
# (e.g. Buildbarn's bb_runner) as its child, forwards SIGTERM/SIGINT/SIGHUP/SIGQUIT to it,
# unmounts when it ends and exits with its status.
#
#   entrypoint.sh COMMAND [ARGS...]
#
# Environment:
#   LAZYSTORE_SOURCE         required: the Nix server's store, e.g. nix-server:/nix/store,
#                            nfs://10.0.0.1/nix/store?version=4, https://cache.example/
#   LAZYSTORE_MOUNTPOINT     default /nix/store
#   LAZYSTORE_CACHE          cache directory (a volume), default /var/cache/lazystore
#   LAZYSTORE_OPTIONS        more -o options, default allow_other,default_permissions
#   LAZYSTORE_MOUNT_TIMEOUT  seconds to wait for the mount, default 60
#   LAZYSTORE_BIN            the daemon, default lazystore (on PATH)
#   LAZYSTORE_PROFILE        a profile: the files an executor that ran the actions read
#                            (`lazystore-ctl reads`), prefetched once mounted while COMMAND starts;
#                            a profile that cannot be used is said and skipped
#   LAZYSTORE_CTL_BIN        lazystore-ctl, default lazystore-ctl (on PATH)
#   LAZYSTORE_EXTERNAL=1     do not mount: wait for a sidecar's mount (mountPropagation), then run
#
# Exit status: the command's; 70 when the mount does not come up in time; 64 on usage errors.
set -uo pipefail

log() { echo "entrypoint: $*" >&2; }

[[ $# -gt 0 ]] || { log "usage: entrypoint.sh COMMAND [ARGS...]"; exit 64; }
mountpoint=${LAZYSTORE_MOUNTPOINT:-/nix/store}
cache=${LAZYSTORE_CACHE:-/var/cache/lazystore}
options=${LAZYSTORE_OPTIONS:-allow_other,default_permissions}
timeout=${LAZYSTORE_MOUNT_TIMEOUT:-60}
daemon_bin=${LAZYSTORE_BIN:-lazystore}
ctl_bin=${LAZYSTORE_CTL_BIN:-lazystore-ctl}
profile=${LAZYSTORE_PROFILE:-}
external=${LAZYSTORE_EXTERNAL:-0}
[[ $timeout =~ ^[0-9]+$ ]] || { log "LAZYSTORE_MOUNT_TIMEOUT=$timeout is not a number of seconds"; exit 64; }

# True when a FUSE file system is mounted exactly at $mountpoint (reads /proc only: never blocks
# on a hung mount).
is_mounted() {
  local real
  real=$(realpath -m "$mountpoint")
  awk -v m="$real" '$5 == m { sub(/.* - /, ""); split($0, f, " "); if (f[1] ~ /^fuse/) found = 1 } END { exit !found }' \
    /proc/self/mountinfo
}

daemon=
if [[ $external != 1 ]]; then
  [[ -n ${LAZYSTORE_SOURCE:-} ]] || { log "LAZYSTORE_SOURCE is not set (e.g. nix-server:/nix/store)"; exit 64; }
  if is_mounted; then log "$mountpoint is already a FUSE mount"; exit 70; fi
  mkdir -p "$mountpoint" "$cache"
  # A fresh volume may be writable by all (a Kubernetes emptyDir is 0777): lazystore refuses a
  # cache directory others may write to, and says so if this chmod cannot help.
  chmod 0700 "$cache" 2>/dev/null || true
  # Foreground (-f) so the daemon is our child: we see it die, and it logs to our stderr.
  "$daemon_bin" "$LAZYSTORE_SOURCE" "$mountpoint" -f -o "cache=$cache${options:+,$options}" &
  daemon=$!
fi

stop_daemon() {
  [[ -n $daemon ]] || return 0
  if is_mounted; then
    fusermount3 -u "$mountpoint" 2>/dev/null || umount "$mountpoint" 2>/dev/null
  else
    kill -TERM "$daemon" 2>/dev/null  # never mounted: nothing to unmount, ask it to stop
  fi
  local i
  for ((i = 0; i < 300; i++)); do  # 30 s for the daemon to finish after the unmount
    kill -0 "$daemon" 2>/dev/null || break
    sleep 0.1
  done
  if kill -0 "$daemon" 2>/dev/null; then
    log "lazystore did not exit after unmounting; killing it"
    kill -KILL "$daemon" 2>/dev/null
    fusermount3 -u -z "$mountpoint" 2>/dev/null
  fi
  wait "$daemon" 2>/dev/null
  daemon=
}

# Wait (bounded) until the mount is really there.
deadline=$((SECONDS + timeout))
until is_mounted; do
  if [[ -n $daemon ]] && ! kill -0 "$daemon" 2>/dev/null; then
    wait "$daemon"
    log "lazystore exited with status $? before mounting $mountpoint"
    exit 70
  fi
  if ((SECONDS >= deadline)); then
    log "$mountpoint not mounted after ${timeout} s"
    stop_daemon
    exit 70
  fi
  sleep 0.1  # polling interval, bounded by the deadline
done
log "lazystore mounted at $mountpoint; running $1"

# The profile's files are looked up now and fetched while the command starts: its first reads
# meet fetches under way instead of a round trip each. A profile is an optimisation: without it,
# or when it fails, the command runs all the same.
if [[ -n $profile ]]; then
  if [[ ! -r $profile ]]; then
    log "LAZYSTORE_PROFILE=$profile cannot be read; running without it"
  elif ! "$ctl_bin" -m "$mountpoint" --timeout "$timeout" prefetch --from "$profile" >&2; then
    log "prefetching LAZYSTORE_PROFILE=$profile failed; running without it"
  fi
fi

"$@" &
child=$!
forward() { kill -"$1" "$child" 2>/dev/null; }
for sig in TERM INT HUP QUIT; do
  # shellcheck disable=SC2064
  trap "forward $sig" "$sig"
done

# `wait` returns early (status > 128) when a trapped signal arrives: wait again until the child
# has really exited.
while :; do
  wait "$child"
  status=$?
  kill -0 "$child" 2>/dev/null || break
done
wait "$child" 2>/dev/null  # the real status, should the last wait have been interrupted
status=$?
trap - TERM INT HUP QUIT
stop_daemon
exit "$status"
