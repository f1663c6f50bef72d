#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# table.sh: the whole benchmark table of tests/bench/README.md ("One run"),
# one compare run per row, as the README's figures were taken.
#
# usage: tests/bench/table.sh [--rounds R] [--peers | --one-core] [--list]
#
#   (default)  the 15 rows of raw, tether_bench and libevent (11 rounds),
#              with the fan-in and per-message variants of tether_bench
#   --one-core the first 12 of them (not the 19 000 and 10 000 connection
#              rows, nor fan-in, which needs two loops on two cores) with
#              every process on the last CPU (taskset): a round trip is
#              then two context switches instead of two cross-CPU wake-ups,
#              a throughput the CPU cost of both sides, and on a shared
#              VM most spreads fall from 20-200 % to 1-15 %
#   --peers    the 12 rows of all five implementations, raw, tether_bench,
#              libevent, zmq and nng (5 rounds), with counts NNG finishes
#              within a run's time limit (BENCH_TIMEOUT_S=120 here)
#   --rounds R rounds per row instead
#   --list     print the compare commands instead of running them
#
# Run it on an otherwise idle machine, after a build (build/tests/bench, or
# $BENCH_DIR). It takes about 10 minutes at 11 rounds (--peers: about 12 at
# 5). The programs that tether_bench's own flags make (--loops N,
# --per-msg, --balance reuseport) are one-line wrappers in a temporary
# directory, named as in the README's tables.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
rounds=
peers=false
one_core=false
list=false
while [[ $# -gt 0 ]]; do
    case $1 in
    --rounds)
        [[ $# -ge 2 && $2 =~ ^[1-9][0-9]*$ ]] || {
            echo "table.sh: --rounds needs a positive number" >&2
            exit 2
        }
        rounds=$2
        shift 2
        ;;
    --peers) peers=true; shift ;;
    --one-core) one_core=true; shift ;;
    --list) list=true; shift ;;
    *)
        echo "table.sh: unknown argument '$1'" >&2
        sed -n 's/^# usage: /usage: /p' "${BASH_SOURCE[0]}" >&2
        exit 2
        ;;
    esac
done

if $peers && $one_core; then
    echo "table.sh: --peers and --one-core are two tables: give one" >&2
    exit 2
fi
pin=()
if $one_core; then
    # (the highest CPU this process may run on)
    pin=(taskset -c "$(python3 -c 'import os; print(max(os.sched_getaffinity(0)))')")
fi

bench_dir=${BENCH_DIR:-$(cd "$here/../.." && pwd)/build/tests/bench}
if ! $list && [[ ! -x $bench_dir/tether_bench ]]; then
    echo "table.sh: no $bench_dir/tether_bench: build first (cmake --build build)" >&2
    exit 1
fi

wrap=$(mktemp -d)
trap 'rm -rf "$wrap"' EXIT
# wrapper NAME FLAGS...: $wrap/NAME runs tether_bench with FLAGS added.
wrapper() {
    local name=$1
    shift
    printf '#!/bin/sh\nexec %q "$@" %s\n' "$bench_dir/tether_bench" "$*" >"$wrap/$name"
    chmod +x "$wrap/$name"
}
wrapper tb_permsg --per-msg
wrapper loops1 --loops 1
wrapper loops2 --loops 2
wrapper loops2rp --loops 2 --balance reuseport
wrapper loops1pm --loops 1 --per-msg
wrapper loops2pm --loops 2 --per-msg

# row ARGS... :: IMPLS...: one compare run.
row() {
    local cmd=("${pin[@]}" "$here/compare" --rounds "$rounds" --timeout 150 -- "$@")
    if $list; then
        echo "${cmd[*]}"
    else
        "${cmd[@]}"
    fi
}

std=(:: raw tether_bench libevent)
if ! $peers; then
    rounds=${rounds:-11}
    $list || echo "# table.sh${pin[*]:+ --one-core (${pin[*]})}: $(date -u '+%Y-%m-%d %H:%M UTC'), $rounds rounds"
    row --scenario lat --transport tcp --size 64 "${std[@]}"
    row --scenario hs --transport tcp --size 64 "${std[@]}"
    row --scenario thr --transport tcp --size 64 :: raw tether_bench "$wrap/tb_permsg" libevent
    row --scenario thr --transport tcp --size 1024 "${std[@]}"
    row --scenario thr --transport tcp --size 1048576 --count 2000 "${std[@]}"
    row --scenario lat --transport tls --size 64 "${std[@]}"
    row --scenario thr --transport tls --size 64 "${std[@]}"
    row --scenario thr --transport tls --size 65536 --count 20000 "${std[@]}"
    row --scenario thr --transport tls --size 1048576 --count 1000 "${std[@]}"
    row --scenario hs --transport tls --size 64 --count 500 "${std[@]}"
    row --scenario conns --transport tcp --conns 2000 "${std[@]}"
    row --scenario conns --transport tls --conns 2000 "${std[@]}"
    $one_core && exit 0
    row --scenario conns --transport tcp --conns 19000 :: raw tether_bench
    row --scenario conns --transport tls --conns 10000 :: raw tether_bench
    row --scenario fanin --transport tcp --count 40000000 :: "$wrap/loops1" "$wrap/loops2" \
        "$wrap/loops2rp" "$wrap/loops1pm" "$wrap/loops2pm"
else
    rounds=${rounds:-5}
    export BENCH_TIMEOUT_S=120
    all=(:: raw tether_bench libevent zmq nng)
    $list || echo "# table.sh --peers: $(date -u '+%Y-%m-%d %H:%M UTC'), $rounds rounds"
    row --scenario thr --transport tcp --size 64 --count 1000000 "${all[@]}"
    row --scenario thr --transport tcp --size 1024 --count 1000000 "${all[@]}"
    row --scenario thr --transport tcp --size 1048576 --count 2000 "${all[@]}"
    row --scenario lat --transport tcp --size 64 "${all[@]}"
    row --scenario hs --transport tcp --size 64 --count 2000 "${all[@]}"
    row --scenario conns --transport tcp --conns 10000 "${all[@]}"
    row --scenario thr --transport tls --size 64 --count 200000 "${all[@]}"
    row --scenario thr --transport tls --size 65536 --count 10000 "${all[@]}"
    row --scenario thr --transport tls --size 1048576 --count 500 "${all[@]}"
    row --scenario lat --transport tls --size 64 "${all[@]}"
    row --scenario hs --transport tls --size 64 --count 300 "${all[@]}"
    row --scenario conns --transport tls --conns 2000 "${all[@]}"
fi
