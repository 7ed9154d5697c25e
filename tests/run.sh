#!/usr/bin/env bash
# Installs what the project needs, builds it into build/ and runs every test (meson test).
#
#   tests/run.sh                        all suites
#   tests/run.sh 'fuse unit tests'      extra arguments go to `meson test` (one test, --suite, ...)
#
# Needs no tty, no standard input and nothing from the caller's environment. Exits non-zero on any
# failure. Benchmarks (tests/bench/) are not run here.
set -euo pipefail

# Warnings are errors, here and in CI alike.
MESON_SETUP_OPTIONS=(-Dwerror=true -Dtests=enabled)

# A known environment: system tools first (Debian's python3, /usr/sbin for mount helpers),
# stable messages, a HOME even when the caller has none.
setup_environment() {
    export PATH="/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin${PATH:+:$PATH}"
    export LC_ALL=C.UTF-8
    if [[ -z "${HOME:-}" ]]; then
        HOME=$(getent passwd "$(id -u)" | cut -d: -f6)
        export HOME
    fi
}

configure() {
    if [[ -f build/meson-private/coredata.dat ]]; then
        echo "==> meson setup --reconfigure build"
        meson setup --reconfigure "${MESON_SETUP_OPTIONS[@]}" build </dev/null
    else
        echo "==> meson setup build"
        meson setup "${MESON_SETUP_OPTIONS[@]}" build </dev/null
    fi
}

# Prints "tests: N passed, N failed, N skipped" from meson's log of the run that just ended.
summarize() {
    local log=build/meson-logs/testlog.json
    [[ -f "$log" ]] || return 0
    /usr/bin/python3 - "$log" <<'EOF'
import json, sys
counts = {"passed": 0, "failed": 0, "skipped": 0}
with open(sys.argv[1]) as f:
    for line in f:
        line = line.strip()
        if not line:
            continue
        result = json.loads(line).get("result", "")
        if result in ("OK", "EXPECTEDFAIL"):
            counts["passed"] += 1
        elif result == "SKIP":
            counts["skipped"] += 1
        else:
            counts["failed"] += 1
print("tests: {passed} passed, {failed} failed, {skipped} skipped".format(**counts))
EOF
}

main() {
    cd "$(dirname "$(readlink -f "${BASH_SOURCE[0]}")")/.."
    setup_environment

    echo "==> packaging/install-deps.sh"
    bash packaging/install-deps.sh </dev/null

    configure
    echo "==> meson compile -C build"
    meson compile -C build </dev/null

    echo "==> meson test -C build --print-errorlogs --num-processes 2${*:+ ${*@Q}}"
    rm -f build/meson-logs/testlog.json
    local status=0
    meson test -C build --print-errorlogs --num-processes 2 "$@" </dev/null || status=$?
    summarize
    return "$status"
}

main "$@"
