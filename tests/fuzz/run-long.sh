#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# Builds the fuzz targets (tests/fuzz/, clang + libFuzzer + ASan/UBSan) and
# runs each for a given time, printing one line per target: executions,
# executions per second, new corpus entries and crashes.
#
#   tests/fuzz/run-long.sh SECONDS [TARGET...]
#   nice -n 19 tests/fuzz/run-long.sh 600            # 10 minutes each, idle CPU only
#   FUZZ_PARALLEL=2 tests/fuzz/run-long.sh 600 fuzz_conn fuzz_tls_server
#
# SECONDS is the time per target; targets run FUZZ_PARALLEL at a time
# (default 1). Without TARGETs, every tests/fuzz/fuzz_*.c runs. The test
# command's fuzz stage (tests/run-all.sh) is this script with a short time.
#
# Everything goes under build-fuzz/ (FUZZ_BUILD_DIR): the working corpus of
# each target in corpus/<target>/ (the committed seeds in
# tests/fuzz/corpus/<target>/ are read, never written), libFuzzer's output
# in logs/<target>.log (the build's in logs/build.log), and crashing inputs in crashes/<target>/ (replay one
# with build-fuzz/tests/fuzz/<target> <file>). A crash stops that target;
# its report, symbolized with llvm-symbolizer, is printed from the log.
# FUZZ_NO_BUILD=1 skips the build. The exit status is 0 only if every
# target ran for its time without a crash.
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
cd "$root"

usage() {
    sed -n '2,/^set -euo/p' "${BASH_SOURCE[0]}" | sed '$d; s/^# \{0,1\}//' >&2
    exit 2
}

[[ $# -ge 1 && $1 =~ ^[0-9]+$ && $1 -gt 0 ]] || usage
seconds=$1
shift
dir=${FUZZ_BUILD_DIR:-build-fuzz}
parallel=${FUZZ_PARALLEL:-1}

if [[ $# -gt 0 ]]; then
    targets=("$@")
else
    targets=()
    for f in tests/fuzz/fuzz_*.c; do
        targets+=("$(basename "$f" .c)")
    done
fi
for t in "${targets[@]}"; do
    if [[ ! -f tests/fuzz/$t.c ]]; then
        echo "run-long: no target $t (tests/fuzz/$t.c)" >&2
        exit 2
    fi
done

if [[ -z ${FUZZ_NO_BUILD:-} ]]; then
    if [[ -f $dir/CMakeCache.txt ]] &&
        ! grep -qxF "CMAKE_HOME_DIRECTORY:INTERNAL=$root" "$dir/CMakeCache.txt"; then
        rm -rf "$dir" # configured for another source tree
    fi
    mkdir -p "$dir/logs"
    # Debug keeps the library's assertions; -O1 with the sanitizers is the
    # usual libFuzzer trade-off between speed and readable reports.
    cmake -S . -B "$dir" -DCMAKE_C_COMPILER=clang -DTETHER_FUZZ=ON -DTETHER_WERROR=ON \
        -DCMAKE_BUILD_TYPE=Debug "-DCMAKE_C_FLAGS_DEBUG=-O1 -g" -DTETHER_BUILD_TESTS=OFF \
        -DTETHER_BUILD_EXAMPLES=OFF -DTETHER_BUILD_BENCH=OFF >"$dir/logs/configure.log" 2>&1 ||
        {
            cat "$dir/logs/configure.log" >&2
            exit 1
        }
    if ! cmake --build "$dir" -j "${JOBS:-$(nproc)}" --target "${targets[@]}" \
        >"$dir/logs/build.log" 2>&1; then
        tail -n 40 "$dir/logs/build.log" >&2
        exit 1
    fi
fi

# Readable crash reports: function names and lines, not addresses.
if [[ -z ${ASAN_SYMBOLIZER_PATH:-} ]] && command -v llvm-symbolizer >/dev/null 2>&1; then
    ASAN_SYMBOLIZER_PATH=$(command -v llvm-symbolizer)
fi
export ASAN_SYMBOLIZER_PATH
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}

mkdir -p "$dir/logs"

# run_one TARGET: fuzzes for $seconds; the result goes to logs/TARGET.result.
run_one() {
    local t=$1 log=$dir/logs/$1.log corpus=$dir/corpus/$1 crashes=$dir/crashes/$1
    local seeds=tests/fuzz/corpus/$1 dict=() rc=0
    mkdir -p "$corpus" "$crashes"
    [[ -f tests/fuzz/$t.dict ]] && dict=(-dict="tests/fuzz/$t.dict")
    local before
    before=$(find "$crashes" -type f | wc -l)
    # -timeout: an input running 30 s is a hang; -print_final_stats gives
    # the execution count whichever way the run ends.
    "$dir/tests/fuzz/$t" -max_total_time="$seconds" -timeout=30 -print_final_stats=1 \
        -artifact_prefix="$crashes/" "${dict[@]}" "$corpus" "$seeds" >"$log" 2>&1 || rc=$?
    local execs rate new crashes_now
    execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -n 1)
    rate=$(sed -n 's/^stat::average_exec_per_sec: *//p' "$log" | tail -n 1)
    new=$(sed -n 's/^stat::new_units_added: *//p' "$log" | tail -n 1)
    crashes_now=$(($(find "$crashes" -type f | wc -l) - before))
    printf '%s %s %s %s %s %s\n' "$t" "$rc" "${execs:-0}" "${rate:-0}" "${new:-0}" \
        "$crashes_now" >"$dir/logs/$t.result"
}

pids=()
for t in "${targets[@]}"; do
    while [[ ${#pids[@]} -ge $parallel ]]; do
        wait "${pids[0]}" || true
        pids=("${pids[@]:1}")
    done
    run_one "$t" &
    pids+=("$!")
done
for p in "${pids[@]}"; do
    wait "$p" || true
done

status=0
for t in "${targets[@]}"; do
    read -r name rc execs rate new crashes <"$dir/logs/$t.result"
    if [[ $rc -eq 0 && $crashes -eq 0 ]]; then
        printf '%-18s ok     %12s execs %8s/s %6s new inputs  0 crashes\n' \
            "$name" "$execs" "$rate" "$new"
    else
        status=1
        printf '%-18s FAILED %12s execs %8s/s %6s new inputs  %s crash(es) (status %s)\n' \
            "$name" "$execs" "$rate" "$new" "$crashes" "$rc"
        echo "---- tail of $dir/logs/$t.log"
        tail -n 60 "$dir/logs/$t.log"
        echo "---- crashing inputs: $dir/crashes/$t/"
        find "$dir/crashes/$t" -type f | tail -n 5
    fi
done
exit "$status"
