#!/usr/bin/env bash
# Builds the fuzz targets of tests/fuzz with clang and libFuzzer (coverage-guided), AddressSanitizer
# and UndefinedBehaviorSanitizer into build-libfuzzer/, and runs each for RUNS inputs (default
# 1,000,000) from its seed corpus. Offline; not part of `meson test` (it takes minutes).
#
#   tests/fuzz/run_libfuzzer.sh                     every target, 1,000,000 inputs each
#   tests/fuzz/run_libfuzzer.sh nar narinfo         some targets
#   RUNS=100000 JOBS=1 tests/fuzz/run_libfuzzer.sh
#
# New inputs libFuzzer finds go to build-libfuzzer/fuzz-corpus/<target>/ (the seed corpus in the
# source tree is not touched); a crash is written to build-libfuzzer/fuzz-artifacts/<target>/ and
# makes the script exit non-zero. Needs clang and libclang-rt-14-dev (packaging/install-deps.sh).
set -euo pipefail

RUNS=${RUNS:-1000000}
SEED=${SEED:-1}
MAX_LEN=${MAX_LEN:-8192}
TARGETS=(store_path nar narinfo nar_listing manifest serve_protocol worker_protocol)

main() {
    cd "$(dirname "$(readlink -f "${BASH_SOURCE[0]}")")/../.."
    export LC_ALL=C.UTF-8
    local build=build-libfuzzer
    local -a targets=("$@")
    ((${#targets[@]})) || targets=("${TARGETS[@]}")

    if [[ ! -f $build/meson-private/coredata.dat ]]; then
        CC=clang CXX=clang++ meson setup "$build" -Dlibfuzzer=true -Dtests=enabled \
            -Db_sanitize=address,undefined -Db_lundef=false -Dwerror=true </dev/null
    fi
    local -a names=()
    for t in "${targets[@]}"; do names+=("${t}_fuzz"); done
    meson compile -C "$build" "${names[@]}" </dev/null

    export ASAN_OPTIONS=${ASAN_OPTIONS:-abort_on_error=1:detect_leaks=1:allocator_may_return_null=1}
    export UBSAN_OPTIONS=${UBSAN_OPTIONS:-halt_on_error=1:print_stacktrace=1}
    local failed=0 results=$build/fuzz-results.txt
    : >"$results"
    for t in "${targets[@]}"; do
        local work=$build/fuzz-corpus/$t artifacts=$build/fuzz-artifacts/$t log=$build/fuzz-$t.log
        mkdir -p "$work" "$artifacts"
        echo "==> $t: $RUNS inputs (seed $SEED, max_len $MAX_LEN)"
        local start=$SECONDS status=0
        "$build/tests/fuzz/${t}_fuzz" -runs="$RUNS" -seed="$SEED" -max_len="$MAX_LEN" \
            -rss_limit_mb=2048 -timeout=10 -print_final_stats=1 \
            -artifact_prefix="$artifacts/" "$work" "tests/fuzz/corpus/$t" >"$log" 2>&1 || status=$?
        local seconds=$((SECONDS - start))
        local execs eps cov
        execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -1)
        eps=$(sed -n 's/^stat::average_exec_per_sec: *//p' "$log" | tail -1)
        cov=$(grep -o 'cov: [0-9]*' "$log" | tail -1 | cut -d' ' -f2)
        local verdict="no finding"
        if ((status != 0)); then
            verdict="FINDING (exit $status): $(ls "$artifacts" | tr '\n' ' ')— see $log"
            failed=1
        fi
        printf '%-15s %9s inputs  %5s s  %6s exec/s  cov %5s  %s\n' "$t" "${execs:-?}" "$seconds" \
            "${eps:-?}" "${cov:-?}" "$verdict" | tee -a "$results"
    done
    echo "==> results in $results"
    return "$failed"
}

main "$@"
