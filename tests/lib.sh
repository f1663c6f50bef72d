# SPDX-License-Identifier: MIT
# Helpers shared by the script tests (integration, interop, dns). Sourced,
# never run:
#
#   source "$(dirname "${BASH_SOURCE[0]}")/../lib.sh"
#   th_begin NAME      # $tmp, bg_pids, the counters and the EXIT trap
#   ...checks calling pass / fail / check...
#   th_end             # prints the tally; its status is the script's
#
# Every process a script starts in the background goes into bg_pids; the
# EXIT trap kills (SIGKILL, so stopped ones too) and reaps them all. Set
# TETHER_TEST_KEEP=1 to keep $tmp for a look afterwards.
# shellcheck shell=bash disable=SC2034,SC2317

# th_begin NAME: makes $tmp (tether-NAME.XXXXXX) and installs the EXIT trap.
th_begin() {
    tmp=$(mktemp -d "${TMPDIR:-/tmp}/tether-$1.XXXXXX")
    bg_pids=()
    failures=0
    checks=0
    trap th_cleanup EXIT
}

# th_cleanup: the EXIT trap.
th_cleanup() {
    local pid
    for pid in "${bg_pids[@]}"; do
        kill -KILL "$pid" 2>/dev/null || true
        wait "$pid" 2>/dev/null || true
    done
    if [[ -n ${TETHER_TEST_KEEP:-} ]]; then
        echo "kept $tmp" >&2
    else
        rm -rf "$tmp"
    fi
}

# th_end: the last command of a script.
th_end() {
    echo "$checks checks, $failures failed"
    [[ $failures -eq 0 ]]
}

pass() {
    checks=$((checks + 1))
    echo "ok: $*"
}

fail() {
    checks=$((checks + 1))
    failures=$((failures + 1))
    echo "FAIL: $*" >&2
}

# check DESC COMMAND...: pass if COMMAND succeeds.
check() {
    local desc=$1
    shift
    if "$@"; then
        pass "$desc"
    else
        fail "$desc"
    fi
}

forget_pid() {
    local keep=() p
    for p in "${bg_pids[@]}"; do
        [[ $p == "$1" ]] || keep+=("$p")
    done
    bg_pids=("${keep[@]}")
}

# wait_exit PID SECONDS: waits at most SECONDS; sets exit_status (124 after a
# SIGKILL when it did not exit in time).
wait_exit() {
    local pid=$1 limit=$2 i
    for ((i = 0; i < limit * 20; i++)); do
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.05
    done
    if kill -0 "$pid" 2>/dev/null; then
        kill -KILL "$pid" 2>/dev/null || true
        wait "$pid" 2>/dev/null || true
        exit_status=124
    else
        exit_status=0
        wait "$pid" || exit_status=$?
    fi
    forget_pid "$pid"
}

# wait_line FILE FIXED-STRING [SECONDS]: waits (default 10 s) until a line of
# FILE contains the string.
wait_line() {
    local file=$1 want=$2 limit=${3:-10} i
    for ((i = 0; i < limit * 20; i++)); do
        if [[ -f $file ]] && grep -qF -- "$want" "$file"; then
            return 0
        fi
        sleep 0.05
    done
    return 1
}

# expect_line FILE FIXED-STRING DESC [SECONDS]
expect_line() {
    if wait_line "$1" "$2" "${4:-10}"; then
        pass "$3"
    else
        fail "$3: no line with '$2' in ${1##*/}:"
        { sed 's/^/    /' "$1" | head -n 20 | cut -c 1-160; } >&2 || true
    fi
}

# th_start NAME READY COMMAND...: runs COMMAND in the background with its
# output in $tmp/NAME.out and .err, and waits (30 s at most, for an ASan
# build on a busy machine; less if it dies) for a line of its stdout that
# matches the regex READY. Sets bg_pid, and bg_line to that line. If none
# came, fails showing its stderr and ends the process, which could
# otherwise still print into the next run's NAME.out.
th_start() {
    local name=$1 ready=$2 i
    shift 2
    : >"$tmp/$name.out"
    "$@" >"$tmp/$name.out" 2>"$tmp/$name.err" &
    bg_pid=$!
    bg_pids+=("$bg_pid")
    for ((i = 0; i < 600; i++)); do
        if bg_line=$(grep -m 1 -- "$ready" "$tmp/$name.out"); then
            return 0
        fi
        kill -0 "$bg_pid" 2>/dev/null || break
        sleep 0.05
    done
    if bg_line=$(grep -m 1 -- "$ready" "$tmp/$name.out"); then
        return 0 # it printed the line and exited
    fi
    bg_line=
    fail "$name ($*) did not start: no line matching '$ready'; stderr:"
    sed 's/^/    /' "$tmp/$name.err" >&2
    kill -KILL "$bg_pid" 2>/dev/null || true
    wait "$bg_pid" 2>/dev/null || true
    forget_pid "$bg_pid"
    return 1
}

# th_start_haproxy BIN: checks $tmp/haproxy.cfg with BIN -c (failing and
# ending the test with haproxy's own words if it is rejected), then starts
# BIN in the foreground mode (-db) in the background, its output in
# $tmp/haproxy.out and .err. Sets haproxy_pid (reaped by th_cleanup).
th_start_haproxy() {
    local bin=$1
    if ! "$bin" -c -f "$tmp/haproxy.cfg" >"$tmp/check.out" 2>&1; then
        fail "haproxy rejects the generated configuration:"
        sed 's/^/    /' "$tmp/check.out" >&2
        th_end
        exit 1
    fi
    "$bin" -db -f "$tmp/haproxy.cfg" >"$tmp/haproxy.out" 2>"$tmp/haproxy.err" &
    haproxy_pid=$!
    bg_pids+=("$haproxy_pid")
}

# haproxy_cmd CMD: one command on the stats socket $tmp/haproxy.sock
# (bounded: 5 s), its answer on stdout.
haproxy_cmd() {
    python3 - "$tmp/haproxy.sock" "$1" <<'EOF'
import socket, sys
s = socket.socket(socket.AF_UNIX)
s.settimeout(5)
s.connect(sys.argv[1])
s.sendall(sys.argv[2].encode() + b"\n")
out = b""
while True:
    chunk = s.recv(65536)
    if not chunk:
        break
    out += chunk
sys.stdout.write(out.decode())
EOF
}
