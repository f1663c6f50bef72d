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
#     never sends HELLO) is served by the same echo_server as before.
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

kill -TERM "$server_pid"
wait_exit "$server_pid" 10
check "the server exits 0 on SIGTERM (status $exit_status)" test "$exit_status" -eq 0

th_end
