#!/usr/bin/env bash
# The test command: everything CI checks, runnable on a fresh Debian 12 clone
# as root with no prior state.
#
#   bash tests/run-all.sh
#
# Stages:
#   deps        install missing Debian packages (tests/deps.sh)
#   build       build/       RelWithDebInfo, warnings are errors
#   test        ctest in build/
#   asan-build  build-asan/  ASan + UBSan, -O1, warnings are errors
#   asan-test   ctest in build-asan/ (leak checks on, any UBSan report fails)
#   fuzz        the framing fuzzer (clang, libFuzzer + ASan/UBSan) for 30 s
#   docs        doxygen; any warning fails
#
# For local use, skip stages with TETHER_SKIP_<STAGE>=1, e.g.
# TETHER_SKIP_ASAN=1 (both ASan stages), TETHER_SKIP_FUZZ=1, TETHER_SKIP_DOCS=1,
# TETHER_SKIP_DEPS=1, TETHER_SKIP_TEST=1. JOBS overrides the parallelism (default: nproc).
# Extra arguments are passed to every ctest run (e.g. -R framing).
# CI runs everything.
# The stage functions are called indirectly, through run_stage.
# shellcheck disable=SC2317
set -euo pipefail

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

# ---- stages ---------------------------------------------------------------

deps() {
    # shellcheck source=tests/deps.sh
    source tests/deps.sh
    tether_install_deps
}

# configure DIR CMAKE-ARGS...: (re)configures DIR, starting afresh if it was
# configured for another source tree.
configure() {
    local dir=$1
    shift
    if [[ -f $dir/CMakeCache.txt ]] &&
        ! grep -qxF "CMAKE_HOME_DIRECTORY:INTERNAL=$root" "$dir/CMakeCache.txt"; then
        echo "run-all: $dir belongs to another source tree; starting it afresh"
        rm -rf "$dir"
    fi
    cmake -S . -B "$dir" -DTETHER_WERROR=ON "$@"
}

build_args=(-DCMAKE_BUILD_TYPE=RelWithDebInfo -DTETHER_SANITIZE=OFF)
# Sanitizers want frame pointers and little inlining for readable reports;
# -O1 keeps the tests fast, and Debug keeps the library's assertions.
asan_args=(-DCMAKE_BUILD_TYPE=Debug "-DCMAKE_C_FLAGS_DEBUG=-O1 -g" -DTETHER_SANITIZE=ON)

configure_build() {
    local dir=$1
    shift
    configure "$dir" "$@"
    cmake --build "$dir" -j "$JOBS"
}

run_ctest() {
    ctest --test-dir "$1" --output-on-failure --no-tests=error -j "$JOBS" "${ctest_args[@]}"
}

run_asan_ctest() {
    export ASAN_OPTIONS=detect_leaks=1:abort_on_error=1
    export UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1
    run_ctest build-asan
}

# The framing fuzzer (tests/fuzz/), built with clang's libFuzzer and the
# sanitizers, runs for a bounded time: long enough to catch a regression in
# the decoders, short enough for CI. TETHER_FUZZ_SECONDS changes the time.
fuzz() {
    mkdir -p build-fuzz/corpus
    clang -g -O1 -fsanitize=fuzzer,address,undefined -D_GNU_SOURCE -Iinclude -Ilib \
        lib/framing.c lib/error.c tests/fuzz/fuzz_framing.c -o build-fuzz/fuzz_framing
    build-fuzz/fuzz_framing -max_total_time="${TETHER_FUZZ_SECONDS:-30}" \
        -artifact_prefix=build-fuzz/ build-fuzz/corpus
}

# The docs need a configured tree, not a successful build.
docs() {
    configure build "${build_args[@]}" >/dev/null
    cmake --build build --target docs
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

# ---- summary --------------------------------------------------------------

printf '\n==== summary\n'
for i in "${!stage_names[@]}"; do
    printf '  %-12s %-30s %5ss\n' "${stage_names[$i]}" "${stage_results[$i]}" "${stage_times[$i]}"
done
printf '  %-12s %-30s %5ss\n' total "$([[ $failed -eq 0 ]] && echo PASS || echo FAIL)" \
    "$(($(now) - total_start))"

exit "$failed"
