#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# The test command: everything CI checks, runnable on a fresh Debian 12 clone
# as root with no prior state. `bash tests/run-all.sh --help` prints the
# usage text below.
# The stage functions are called indirectly, through run_stage.
# shellcheck disable=SC2317
set -euo pipefail

usage() {
    cat <<'USAGE'
usage: bash tests/run-all.sh [--help] [CTEST-ARGS...]

The test command: everything CI checks, on a fresh Debian 12 clone, as root.
Runs these stages in order and ends with a summary table; exits non-zero if
any stage failed.

  deps        install missing Debian packages (tests/deps.sh)
  build       build/       RelWithDebInfo, warnings are errors
  test        ctest in build/
  asan-build  build-asan/  ASan + UBSan, -O1, warnings are errors
  asan-test   ctest in build-asan/ (leak checks on, any UBSan report fails)
  tsan-build  build-tsan/  ThreadSanitizer (TETHER_TSAN), -O1: the library and
              the tests that use threads only
  tsan-test   those tests in build-tsan/ (ctest -R '$TSAN_TESTS'); any
              ThreadSanitizer report fails. CTEST-ARGS do not apply here.
  fuzz        build-fuzz/  every libFuzzer target in tests/fuzz/ (clang, ASan +
              UBSan) for TETHER_FUZZ_SECONDS each (default 25), two at a time:
              about a minute; one line per target with its executions, the
              symbolized crash report on a failure (build-fuzz/logs/ has the
              rest; tests/fuzz/run-long.sh SECONDS runs them for longer)
  docs        doxygen (any warning fails) and a check of the generated HTML
  release     build-release/  the library alone, Release (-O3), warnings are
              errors: what optimises differently at -O3 (GCC 12's loop
              warnings) breaks a user's release build

Each stage prints one line when it passes; its full output goes to a log
file (named in that line) under build/ or build-asan/, and a failing stage
prints the end of its log.

Arguments (other than --help) are passed to every ctest run, e.g. -R framing.

Environment:
  TETHER_SKIP_<STAGE>=1  skip stages: DEPS, BUILD, TEST (both ctest stages),
                         ASAN (both ASan stages), TSAN (both TSan stages),
                         FUZZ, DOCS, RELEASE. Ignored when
                         CI=true: CI runs everything.
  JOBS=N                 parallelism (default: nproc)
  TETHER_VERBOSE=1       print every stage's output as it runs
USAGE
}

case ${1:-} in
-h | --help)
    usage
    exit 0
    ;;
esac

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"

JOBS=${JOBS:-$(nproc)}
ctest_args=("$@")

if [[ ${CI:-} == true ]]; then
    for v in $(compgen -v TETHER_SKIP_); do
        if [[ -n ${!v} && ${!v} != 0 ]]; then
            echo "run-all: CI=true: ignoring $v" >&2
        fi
        unset "$v"
    done
fi

# ---- stage bookkeeping ----------------------------------------------------

declare -a stage_names=() stage_results=() stage_times=()
failed=0

now() { date +%s; }

record() {
    stage_names+=("$1")
    stage_results+=("$2")
    stage_times+=("$3")
}

# skip_requested NAME...: true if any TETHER_SKIP_<NAME> is set (and not 0).
skip_requested() {
    local n var
    for n in "$@"; do
        var=TETHER_SKIP_$n
        if [[ -n ${!var:-} && ${!var} != 0 ]]; then
            return 0
        fi
    done
    return 1
}

# run_stage NAME COMMAND...: runs COMMAND in a subshell with errexit on,
# records PASS or FAIL and the elapsed time, and returns the status (the
# caller decides whether later stages still make sense).
run_stage() {
    local name=$1 start rc elapsed
    shift
    printf '\n==== %s: %s\n' "$name" "${*@Q}"
    start=$(now)
    set +e
    ("$@")
    rc=$?
    set -e
    elapsed=$(($(now) - start))
    if [[ $rc -eq 0 ]]; then
        record "$name" PASS "$elapsed"
        printf '==== %s: passed in %ss\n' "$name" "$elapsed"
    else
        record "$name" FAIL "$elapsed"
        failed=1
        printf '==== %s: FAILED (status %s) after %ss\n' "$name" "$rc" "$elapsed"
    fi
    return "$rc"
}

skip_stage() {
    record "$1" "SKIPPED ($2)" 0
    printf '\n==== %s: skipped (%s)\n' "$1" "$2"
}

# A stage that cannot run because an earlier one failed.
blocked() {
    record "$1" "NOT RUN ($2 failed)" 0
    failed=1
}

# quietly LOG COMMAND...: runs COMMAND with its output in LOG (shown as it
# runs with TETHER_VERBOSE=1). On failure prints the last lines of LOG.
quietly() {
    local log=$1 rc=0
    shift
    mkdir -p "$(dirname "$log")"
    if [[ -n ${TETHER_VERBOSE:-} && ${TETHER_VERBOSE} != 0 ]]; then
        "$@" 2>&1 | tee "$log"
        rc=${PIPESTATUS[0]}
    else
        "$@" >"$log" 2>&1 || rc=$?
    fi
    if [[ $rc -ne 0 ]]; then
        printf -- '---- the last 150 lines of %s:\n' "${log#"$root"/}"
        tail -n 150 "$log"
        printf -- '---- end of %s\n' "${log#"$root"/}"
    else
        printf '  log: %s\n' "${log#"$root"/}"
    fi
    return "$rc"
}

# ---- stages ---------------------------------------------------------------

deps() {
    # shellcheck source=tests/deps.sh
    source tests/deps.sh
    quietly "$root/build/run-all-deps.log" tether_install_deps
    quietly "$root/build/run-all-deps-node.log" tether_install_node_deps
}

# fresh_if_foreign DIR: removes DIR if it was configured for another source
# tree.
fresh_if_foreign() {
    local dir=$1
    if [[ -f $dir/CMakeCache.txt ]] &&
        ! grep -qxF "CMAKE_HOME_DIRECTORY:INTERNAL=$root" "$dir/CMakeCache.txt"; then
        echo "run-all: $dir belongs to another source tree; starting it afresh"
        rm -rf "$dir"
    fi
}

# configure DIR CMAKE-ARGS...: (re)configures DIR.
configure() {
    local dir=$1
    shift
    cmake -S . -B "$dir" -DTETHER_WERROR=ON "$@"
}

# Tests, examples and benchmarks explicitly on, whatever an earlier
# configuration of the same directory chose.
all_on=(-DTETHER_BUILD_TESTS=ON -DTETHER_BUILD_EXAMPLES=ON -DTETHER_BUILD_BENCH=ON)
build_args=(-DCMAKE_BUILD_TYPE=RelWithDebInfo -DTETHER_SANITIZE=OFF "${all_on[@]}")
# Sanitizers want frame pointers and little inlining for readable reports;
# -O1 keeps the tests fast, and Debug keeps the library's assertions.
asan_args=(-DCMAKE_BUILD_TYPE=Debug "-DCMAKE_C_FLAGS_DEBUG=-O1 -g" -DTETHER_SANITIZE=ON "${all_on[@]}")

# ThreadSanitizer: its own tree (it cannot be combined with ASan), and only
# what runs several threads, to keep its CI time small: the thread-safe
# references (eight sender threads), the loop's cross-thread post, wakeup
# and ref/unref, and the logging hook called from several threads.
tsan_tests='^(conn_ref|group|loop|log)$'
tsan_targets=(test_conn_ref test_group test_loop test_log)
tsan_args=(-DCMAKE_BUILD_TYPE=Debug "-DCMAKE_C_FLAGS_DEBUG=-O1 -g" -DTETHER_SANITIZE=OFF -DTETHER_TSAN=ON
    -DTETHER_BUILD_TESTS=ON -DTETHER_BUILD_EXAMPLES=OFF -DTETHER_BUILD_BENCH=OFF)

# The library as a user's release build makes it.
release_args=(-DCMAKE_BUILD_TYPE=Release -DTETHER_SANITIZE=OFF -DTETHER_BUILD_TESTS=OFF
    -DTETHER_BUILD_EXAMPLES=OFF -DTETHER_BUILD_BENCH=OFF)

# configure_build DIR CMAKE-ARGS...: configures and builds DIR, the output in
# DIR/run-all-build.log.
configure_build() {
    local dir=$1
    shift
    fresh_if_foreign "$dir"
    quietly "$root/$dir/run-all-build.log" configure_and_build "$dir" "$@"
}

configure_and_build() {
    local dir=$1
    shift
    configure "$dir" "$@" && cmake --build "$dir" -j "$JOBS"
}

# run_ctest DIR: ctest with its output in DIR/run-all-ctest.log; prints the
# summary line and every skipped test with the reason it gave (a test that
# lacks a tool prints "SKIPPED: needs ..."), or the log's end on failure.
run_ctest() {
    local dir=$1 log=$root/$1/run-all-ctest.log rc=0
    quietly "$log" ctest --test-dir "$dir" --output-on-failure --no-tests=error -j "$JOBS" \
        "${ctest_args[@]}" || rc=$?
    if [[ $rc -eq 0 ]]; then
        grep -E 'tests passed|Skipped' "$log" | sed 's/^/  /' || true
        grep -hE '^SKIPPED: ' "$dir"/Testing/Temporary/LastTest.log 2>/dev/null |
            sort -u | sed 's/^/  /' || true
    fi
    return "$rc"
}

configure_build_tsan() {
    fresh_if_foreign build-tsan
    quietly "$root/build-tsan/run-all-build.log" configure_and_build_tsan
}

configure_and_build_tsan() {
    configure build-tsan "${tsan_args[@]}" &&
        cmake --build build-tsan -j "$JOBS" --target "${tsan_targets[@]}"
}

# Any report fails the test (exit code 66), with both stacks of a race.
run_tsan_ctest() {
    local log=$root/build-tsan/run-all-ctest.log rc=0
    # tests/tsan.supp: OpenSSL's own reference counting, which TSan cannot see.
    export TSAN_OPTIONS=halt_on_error=1:second_deadlock_stack=1:suppressions=$root/tests/tsan.supp
    quietly "$log" ctest --test-dir build-tsan --output-on-failure --no-tests=error \
        -j "$JOBS" -R "$tsan_tests" || rc=$?
    if [[ $rc -eq 0 ]]; then
        grep -E 'tests passed' "$log" | sed 's/^/  /' || true
    fi
    return "$rc"
}

run_asan_ctest() {
    export ASAN_OPTIONS=detect_leaks=1:abort_on_error=1
    export UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1
    run_ctest build-asan
}

# The fuzz targets (tests/fuzz/), built with clang's libFuzzer and the
# sanitizers, each for a bounded time: long enough to catch a regression in
# the parsers, short enough for CI. tests/fuzz/run-long.sh does the work;
# it keeps libFuzzer's output in build-fuzz/logs/ and prints one line per
# target, or the symbolized crash report. TETHER_FUZZ_SECONDS changes the
# time per target.
fuzz() {
    FUZZ_PARALLEL=${FUZZ_PARALLEL:-$JOBS} tests/fuzz/run-long.sh "${TETHER_FUZZ_SECONDS:-25}"
}

# The docs need a configured tree, not a successful build. The docs target
# also checks the generated HTML (cmake/check-docs-html.sh).
docs() {
    fresh_if_foreign build
    quietly "$root/build/run-all-docs.log" configure_and_docs
}

configure_and_docs() {
    configure build "${build_args[@]}" && cmake --build build --target docs
}

# ---- run ------------------------------------------------------------------

total_start=$(now)

if skip_requested DEPS; then
    skip_stage deps TETHER_SKIP_DEPS
else
    run_stage deps deps || true
fi

# build/ then its tests.
if skip_requested BUILD; then
    skip_stage build TETHER_SKIP_BUILD
    build_ok=1
elif run_stage build configure_build build "${build_args[@]}"; then
    build_ok=1
else
    build_ok=0
fi
if skip_requested TEST; then
    skip_stage test TETHER_SKIP_TEST
elif [[ $build_ok -eq 1 ]]; then
    run_stage test run_ctest build || true
else
    blocked test build
fi

# build-asan/ then its tests.
if skip_requested ASAN; then
    skip_stage asan-build TETHER_SKIP_ASAN
    skip_stage asan-test TETHER_SKIP_ASAN
else
    if run_stage asan-build configure_build build-asan "${asan_args[@]}"; then
        if skip_requested TEST; then
            skip_stage asan-test TETHER_SKIP_TEST
        else
            run_stage asan-test run_asan_ctest || true
        fi
    else
        blocked asan-test asan-build
    fi
fi

# build-tsan/ then its tests.
if skip_requested TSAN; then
    skip_stage tsan-build TETHER_SKIP_TSAN
    skip_stage tsan-test TETHER_SKIP_TSAN
else
    if run_stage tsan-build configure_build_tsan; then
        if skip_requested TEST; then
            skip_stage tsan-test TETHER_SKIP_TEST
        else
            run_stage tsan-test run_tsan_ctest || true
        fi
    else
        blocked tsan-test tsan-build
    fi
fi

if skip_requested FUZZ; then
    skip_stage fuzz TETHER_SKIP_FUZZ
else
    run_stage fuzz fuzz || true
fi

if skip_requested DOCS; then
    skip_stage docs TETHER_SKIP_DOCS
else
    run_stage docs docs || true
fi

if skip_requested RELEASE; then
    skip_stage release TETHER_SKIP_RELEASE
else
    run_stage release configure_build build-release "${release_args[@]}" || true
fi

# ---- summary --------------------------------------------------------------

printf '\n==== summary\n'
for i in "${!stage_names[@]}"; do
    printf '  %-12s %-30s %5ss\n' "${stage_names[$i]}" "${stage_results[$i]}" "${stage_times[$i]}"
done
printf '  %-12s %-30s %5ss\n' total "$([[ $failed -eq 0 ]] && echo PASS || echo FAIL)" \
    "$(($(now) - total_start))"

exit "$failed"
