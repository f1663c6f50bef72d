#!/usr/bin/env bash
# Interoperability: examples/echo_server against a Python client that knows
# only the LEN32 wire format (tests/interop/py_len32_client.py).
#
#   bash tests/interop/py_len32.sh ECHO_SERVER PYTHON3 [SEED]
#
# Starts the server on 127.0.0.1 port 0 with --max-msg 2000000, then:
#  1. two Python clients at once echo thousands of messages whose bytes go
#     out in random-sized chunks (1-byte chunks, split headers, 0 bytes,
#     1 MiB), each verified by the client's own reassembly;
#  2. a client announcing 2000001 bytes, then one announcing 4294967295:
#     each must have its connection closed, and the server's stderr must
#     name the announced size and the limit;
#  3. a normal client again, to show the server kept serving;
#  4. SIGTERM: the server must exit 0 within 10 s.
# SEED (default: random, printed) makes the first client's run repeatable;
# the second uses SEED + 1. Every wait is bounded and every background
# process is reaped by the EXIT trap.
# cleanup runs from the EXIT trap.
# shellcheck disable=SC2317
set -euo pipefail

if [[ $# -lt 2 || $# -gt 3 ]]; then
    echo "usage: $0 ECHO_SERVER PYTHON3 [SEED]" >&2
    exit 2
fi
server_bin=$1
python=$2
seed=${3:-$((RANDOM * 32768 + RANDOM))}
client=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)/py_len32_client.py
limit=2000000

tmp=$(mktemp -d "${TMPDIR:-/tmp}/tether-pylen32.XXXXXX")
declare -a bg_pids=()
failures=0

cleanup() {
    local pid
    for pid in "${bg_pids[@]}"; do
        kill -KILL "$pid" 2>/dev/null || true
        wait "$pid" 2>/dev/null || true
    done
    rm -rf "$tmp"
}
trap cleanup EXIT

fail() {
    failures=$((failures + 1))
    echo "FAIL: $*" >&2
}

# py ARGS...: runs the Python client, bounded; its output is shown as is.
py() {
    timeout -k 5 120 "$python" "$client" "$@"
}

echo "seed $seed (rerun with: bash $0 ECHO_SERVER PYTHON3 $seed)"

"$server_bin" --listen tcp://127.0.0.1:0 --max-msg "$limit" >"$tmp/server.out" 2>"$tmp/server.err" &
server_pid=$!
bg_pids+=("$server_pid")
for ((i = 0; i < 200; i++)); do
    grep -q '^listening on ' "$tmp/server.out" && break
    kill -0 "$server_pid" 2>/dev/null || break
    sleep 0.05
done
url=$(sed -n 's/^listening on //p' "$tmp/server.out" | head -n 1)
if [[ ! $url =~ ^tcp://127\.0\.0\.1:([0-9]+)$ ]]; then
    echo "FAIL: the server did not start; stderr:" >&2
    cat "$tmp/server.err" >&2
    exit 1
fi
port=${BASH_REMATCH[1]}
echo "server: $url"

# 1. Two clients at once, with different seeds.
py echo 127.0.0.1 "$port" --seed "$seed" >"$tmp/c1.log" 2>&1 &
c1=$!
py echo 127.0.0.1 "$port" --seed $((seed + 1)) >"$tmp/c2.log" 2>&1 &
c2=$!
bg_pids+=("$c1" "$c2")
for c in 1 2; do
    pid=$([[ $c -eq 1 ]] && echo "$c1" || echo "$c2")
    status=0
    wait "$pid" || status=$?
    sed "s/^/client $c: /" "$tmp/c$c.log"
    if [[ $status -ne 0 ]]; then
        fail "echo client $c exited with status $status"
    fi
done
bg_pids=("$server_pid")

# 2. Announcements above the limit, one just above and one absurd.
for size in $((limit + 1)) 4294967295; do
    if ! py oversize 127.0.0.1 "$port" "$size"; then
        fail "oversize announcement of $size bytes"
    fi
    expected="peer announced a $size-byte message; the limit is $limit"
    # The server logs when it closes, which the client may notice first.
    for ((i = 0; i < 100; i++)); do
        grep -qF "$expected" "$tmp/server.err" && break
        sleep 0.05
    done
    if grep -qF "$expected" "$tmp/server.err"; then
        echo "server: $(grep -F "$expected" "$tmp/server.err")"
    else
        fail "server stderr lacks '$expected'; it has: '$(cat "$tmp/server.err")'"
    fi
done

# 3. Still serving.
if ! py echo 127.0.0.1 "$port" --seed $((seed + 2)) --messages 300; then
    fail "echo client after the oversize announcements"
fi

# 4. SIGTERM: a clean exit, promptly.
kill -TERM "$server_pid"
for ((i = 0; i < 200; i++)); do
    kill -0 "$server_pid" 2>/dev/null || break
    sleep 0.05
done
if kill -0 "$server_pid" 2>/dev/null; then
    fail "the server did not exit within 10 s of SIGTERM"
else
    status=0
    wait "$server_pid" || status=$?
    bg_pids=()
    if [[ $status -ne 0 ]]; then
        fail "the server exited with status $status after SIGTERM"
    fi
fi
# Only the two expected lines may be on the server's stderr.
unexpected=$(grep -v 'peer announced a' "$tmp/server.err" || true)
if [[ -n $unexpected ]]; then
    fail "unexpected server stderr: $unexpected"
fi

if [[ $failures -eq 0 ]]; then
    echo "all passed"
else
    echo "$failures failed (seed $seed)"
fi
[[ $failures -eq 0 ]]
