#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# At-least-once streams (issue 14) end to end with the examples, and
# their fallback against a peer that does not acknowledge:
#
#   bash tests/interop/py_alo.sh ECHO_SERVER RECONNECTING_CLIENT PYTHON3
#
#  1. reconnecting_client --at-least-once --interval 0 against
#     examples/echo_server (no flag: HELLO negotiates acknowledgements):
#     100 000 numbered messages, `ok 100000 exactly-once`, all of them
#     acknowledged;
#  2. the same client against tests/interop/py_alo_peer.py, a Python echo
#     server whose HELLO announces no capabilities (a tether peer older than
#     acknowledgements): the client falls back, logs `no acknowledgements
#     on this connection`, never sends ACK or RESUME (the peer would exit
#     3), and still gets every echo once;
#  3. a plain length-prefixed Python client (py_len32_client.py, which
#     never sends HELLO) is served by the same echo_server as before;
#  4. the client against tests/interop/py_len32_plain.py, a plain len32
#     echo server with no control frames at all, in both of its modes:
#     `close` (the HELLO reads as an oversized length: it closes) and
#     `wait` (it waits for the 4 GB the HELLO announces; the client's
#     HELLO deadline, 3 s without heartbeats, ends each probe). Either
#     way, after 3 probes in a row, the client logs `falling back to plain
#     len32 without acknowledgements`, reconnects without HELLO and gets
#     every echo once; the server saw no data before the 4th connection.
# Every wait is bounded and every background process is reaped.
# shellcheck disable=SC2317
set -euo pipefail

if [[ $# -ne 3 ]]; then
    echo "usage: $0 ECHO_SERVER RECONNECTING_CLIENT PYTHON3" >&2
    exit 2
fi
server_bin=$1
client_bin=$2
python=$3
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)

# shellcheck source=tests/lib.sh
source "$here/../lib.sh"
th_begin pyalo

th_start server '^listening on tcp://127\.0\.0\.1:[0-9]*$' \
    "$server_bin" --listen tcp://127.0.0.1:0 || exit 1
server_pid=$bg_pid
port=${bg_line##*:}

# 1.
status=0
timeout -k 5 60 "$client_bin" --connect "tcp://127.0.0.1:$port" --at-least-once \
    --interval 0 --count 100000 >"$tmp/c1.out" 2>"$tmp/c1.err" || status=$?
check "against echo_server: exit 0 (status $status)" test "$status" -eq 0
expect_line "$tmp/c1.out" "ok 100000 exactly-once" "every echo exactly once, in order" 1
expect_line "$tmp/c1.out" "100000 acknowledged, 0 resent, 0 unacknowledged" \
    "echo_server acknowledged all of them (no flag)" 1

# 2.
"$python" "$here/py_alo_peer.py" "$tmp/peer.port" 2>"$tmp/peer.err" &
peer_pid=$!
bg_pids+=("$peer_pid")
wait_line "$tmp/peer.port" "" 10 || true
peer_port=$(cat "$tmp/peer.port" 2>/dev/null || echo 0)
status=0
timeout -k 5 60 "$client_bin" --connect "tcp://127.0.0.1:$peer_port" --at-least-once \
    --interval 0 --count 20000 >"$tmp/c2.out" 2>"$tmp/c2.err" || status=$?
check "against a peer without acknowledgements: exit 0 (status $status)" test "$status" -eq 0
expect_line "$tmp/c2.out" "ok 20000 exactly-once" "the fallback still echoes every message once" 1
expect_line "$tmp/c2.err" "no acknowledgements on this connection" \
    "the client logs the fallback" 1
check "the peer saw no ACK or RESUME and is still running" kill -0 "$peer_pid"

# 3.
check "a plain len32 client is served by the same echo_server" \
    timeout -k 5 60 "$python" "$here/py_len32_client.py" echo 127.0.0.1 "$port" --seed 7 --messages 200

# 4.
for mode in close wait; do
    "$python" "$here/py_len32_plain.py" "$tmp/plain-$mode.port" "$mode" 2>"$tmp/plain-$mode.err" &
    plain_pid=$!
    bg_pids+=("$plain_pid")
    wait_line "$tmp/plain-$mode.port" "" 10 || true
    plain_port=$(cat "$tmp/plain-$mode.port" 2>/dev/null || echo 0)
    status=0
    timeout -k 5 60 "$client_bin" --connect "tcp://127.0.0.1:$plain_port" --at-least-once \
        --interval 0 --count 20000 >"$tmp/c4-$mode.out" 2>"$tmp/c4-$mode.err" || status=$?
    check "against a plain len32 server ($mode): exit 0 (status $status)" test "$status" -eq 0
    expect_line "$tmp/c4-$mode.out" "ok 20000 exactly-once" \
        "plain server ($mode): every echo exactly once after the fallback" 1
    expect_line "$tmp/c4-$mode.err" \
        "falling back to plain len32 without acknowledgements" \
        "plain server ($mode): the client logs the fallback" 1
    expect_line "$tmp/plain-$mode.err" "plain: 4 connections, 20000 messages echoed" \
        "plain server ($mode): the 3 probes carried no data, the plain connection all of it" 1
    kill -TERM "$plain_pid" 2>/dev/null || true
    wait "$plain_pid" 2>/dev/null || true
done

kill -TERM "$server_pid"
wait_exit "$server_pid" 10
check "the server exits 0 on SIGTERM (status $exit_status)" test "$exit_status" -eq 0

th_end
