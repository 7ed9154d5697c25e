#!/usr/bin/env bash
# Installs what the project needs, builds it into build/ and runs every test (meson test).
#
#   tests/run.sh                        all suites
#   tests/run.sh 'fuse unit tests'      extra arguments go to `meson test` (one test, --suite, ...)
#   tests/run.sh --sanitize [...]       the same with AddressSanitizer + UndefinedBehaviorSanitizer,
#                                       built into build-sanitize/ (any report fails the test)
#   tests/run.sh --strict [...]         a skipped test is a failure (always so with CI=true: in CI
#                                       a skip means an install step is missing)
#
# Needs no tty, no standard input and nothing from the caller's environment. Exits non-zero on any
# failure. Benchmarks (tests/bench/) are not run here.
set -euo pipefail

# Warnings are errors, here and in CI alike.
MESON_SETUP_OPTIONS=(-Dwerror=true -Dtests=enabled)
BUILD=build
TEST_OPTIONS=()

# --sanitize: a separate build directory with ASan + UBSan in every binary (the daemon, the
# tools, unit tests, fuzz targets). Reports go to the program's stderr: unit tests and fuzz runs
# fail on them by exit status, the integration harness on any "Sanitizer"/"runtime error:" line
# in the daemon's stderr. UBSan halts on the first report; ASan checks leaks at exit and leaves
# the FUSE daemon's own signal handling alone (SIGINT/SIGTERM unmount cleanly).
sanitize() {
    BUILD=build-sanitize
    MESON_SETUP_OPTIONS+=(-Db_sanitize=address,undefined -Db_lundef=false -Dbuildtype=debugoptimized)
    export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1:halt_on_error=1:abort_on_error=0:allocator_may_return_null=1:handle_sigint=0:handle_sigterm=0:detect_stack_use_after_return=0:print_summary=1}
    export UBSAN_OPTIONS=${UBSAN_OPTIONS:-halt_on_error=1:print_stacktrace=1}
    export LSAN_OPTIONS=${LSAN_OPTIONS:-print_suppressions=0:suppressions=$PWD/tests/lsan.supp}
    # Instrumented code is 2-3x slower: give every test more time.
    TEST_OPTIONS+=(--timeout-multiplier 3)
}

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
    if [[ -f $BUILD/meson-private/coredata.dat ]]; then
        echo "==> meson setup --reconfigure $BUILD"
        meson setup --reconfigure "${MESON_SETUP_OPTIONS[@]}" "$BUILD" </dev/null
    else
        echo "==> meson setup $BUILD"
        meson setup "${MESON_SETUP_OPTIONS[@]}" "$BUILD" </dev/null
    fi
}

# Prints "tests: N passed, N failed, N skipped" from meson's log of the run that just ended;
# returns 1 when a test was skipped and skips are failures (strict).
summarize() {
    local log=$BUILD/meson-logs/testlog.json
    [[ -f "$log" ]] || return 0
    /usr/bin/python3 - "$log" "${LAZYSTORE_STRICT:-0}" <<'EOF'
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
if counts["skipped"] and sys.argv[2] == "1":
    print("tests: a skipped test is a failure here (CI=true or --strict)")
    sys.exit(1)
EOF
}

main() {
    cd "$(dirname "$(readlink -f "${BASH_SOURCE[0]}")")/.."
    setup_environment
    export LAZYSTORE_STRICT=0
    [[ "${CI:-}" == true ]] && LAZYSTORE_STRICT=1
    while [[ $# -gt 0 ]]; do
        case "$1" in
            --sanitize) sanitize ;;
            --strict) LAZYSTORE_STRICT=1 ;;
            *) break ;;
        esac
        shift
    done

    echo "==> packaging/install-deps.sh"
    bash packaging/install-deps.sh </dev/null

    configure
    echo "==> meson compile -C $BUILD"
    meson compile -C "$BUILD" </dev/null

    echo "==> meson test -C $BUILD --print-errorlogs --num-processes 2 ${TEST_OPTIONS[*]}${*:+ ${*@Q}}"
    rm -f "$BUILD/meson-logs/testlog.json"
    local status=0
    meson test -C "$BUILD" --print-errorlogs --num-processes 2 "${TEST_OPTIONS[@]}" "$@" </dev/null || status=$?
    summarize || status=1
    return "$status"
}

main "$@"
