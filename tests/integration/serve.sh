# shellcheck shell=bash
# The test library's servers for bash (sourced by packaging/demo.sh and tests/push/lib.sh): the
# shell side of serve.py, so that a script starts the same sshd, nfs-ganesha, nginx and lazystore
# mount as the Python tests, from one implementation.
#
#   serve_start NAME LOG COMMAND ARGS...
#       runs `serve.py COMMAND ARGS...` in the background (its stderr appended to LOG), waits
#       until it is ready (SERVE_DEADLINE seconds, default 60) and sets, for every KEY=VALUE it
#       printed, the variable NAME_KEY (e.g. SSHD_PORT, SSHD_PID: sshd's own pid), and
#       NAME_SERVE_PID (serve.py's pid). Returns 1, with LOG on stderr, when it did not start.
#   serve_stop NAME [SECONDS]
#       SIGTERM to serve.py, which stops its server (a mount: unmounted, the daemon's status and
#       stderr checked), and waits for it (deadline, default 60 s); returns its exit status:
#       0 a clean stop, 1 problems (in LOG), 124 still running at the deadline (then SIGKILLed).
#       Does nothing and returns 0 when NAME was not started or is already stopped.
#   serve_free_port
#       prints a free TCP port of 127.0.0.1 (lazystore_testlib.free_port).
#
# serve.py runs in a process group of its own: a terminal's Ctrl-C reaches only the script,
# which decides what to stop and when. serve.py also stops its server when the script dies.

SERVE_PY=${SERVE_PY:-$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)/serve.py}

serve_start() {
  local name=$1 log=$2
  shift 2
  local fd pid line key value status=0
  local deadline=$((SECONDS + ${SERVE_DEADLINE:-60}))
  exec {fd}< <(exec /usr/bin/python3 "$SERVE_PY" "$@" 2>>"$log")
  pid=$!
  printf -v "${name}_SERVE_PID" '%s' "$pid"
  while :; do
    if ! IFS= read -r -t "$((deadline > SECONDS ? deadline - SECONDS : 1))" -u "$fd" line; then
      status=1
      break
    fi
    [[ $line == READY ]] && break
    key=${line%%=*}
    value=${line#*=}
    [[ $key =~ ^[A-Z_][A-Z0-9_]*$ && $line == *=* ]] || { status=1; break; }
    printf -v "${name}_${key}" '%s' "$value"
  done
  exec {fd}<&-
  if ((status != 0)); then
    serve_stop "$name" 10 >/dev/null 2>&1 || true
    echo "serve.py $1 did not start (log: $log):" >&2
    tail -n 30 "$log" >&2 || true
    return 1
  fi
}

serve_stop() {
  local name=$1 seconds=${2:-60}
  local var="${name}_SERVE_PID"
  local pid=${!var:-}
  [[ -n $pid ]] || return 0
  printf -v "$var" '%s' ""
  kill -TERM "$pid" 2>/dev/null || true
  local deadline=$((SECONDS + seconds))
  while kill -0 "$pid" 2>/dev/null; do
    if ((SECONDS >= deadline)); then
      kill -KILL "$pid" 2>/dev/null || true
      wait "$pid" 2>/dev/null || true
      return 124
    fi
    sleep 0.05  # polling interval, bounded by the deadline
  done
  local status=0
  wait "$pid" 2>/dev/null || status=$?
  return "$status"
}

serve_free_port() { /usr/bin/python3 "$SERVE_PY" free-port; }
