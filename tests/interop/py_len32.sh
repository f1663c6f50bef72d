#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
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

# shellcheck source=tests/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/../lib.sh"
th_begin pylen32

# py ARGS...: runs the Python client, bounded; its output is shown as is.
py() {
    timeout -k 5 120 "$python" "$client" "$@"
}

echo "seed $seed (rerun with: bash $0 ECHO_SERVER PYTHON3 $seed)"

th_start server '^listening on tcp://127\.0\.0\.1:[0-9]*$' \
    "$server_bin" --listen tcp://127.0.0.1:0 --max-msg "$limit" || exit 1
server_pid=$bg_pid
port=${bg_line##*:}
echo "server: ${bg_line#listening on }"

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
    check "echo client $c exits 0 (status $status)" test "$status" -eq 0
    forget_pid "$pid"
done

# 2. Announcements above the limit, one just above and one absurd.
for size in $((limit + 1)) 4294967295; do
    check "oversize announcement of $size bytes" py oversize 127.0.0.1 "$port" "$size"
    # The server logs when it closes, which the client may notice first.
    expect_line "$tmp/server.err" "peer announced a $size-byte message; the limit is $limit" \
        "the server names the announced size and the limit" 5
done

# 3. Still serving.
check "echo client after the oversize announcements" \
    py echo 127.0.0.1 "$port" --seed $((seed + 2)) --messages 300

# 4. SIGTERM: a clean exit, promptly.
kill -TERM "$server_pid"
wait_exit "$server_pid" 10
if [[ $exit_status -eq 124 ]]; then
    fail "the server did not exit within 10 s of SIGTERM"
else
    check "the server exits 0 on SIGTERM (status $exit_status)" test "$exit_status" -eq 0
fi
# Only the two expected lines may be on the server's stderr.
unexpected=$(grep -v 'peer announced a' "$tmp/server.err" || true)
check "no unexpected server stderr: $unexpected" test -z "$unexpected"

[[ $failures -eq 0 ]] || echo "rerun with seed $seed"
th_end
