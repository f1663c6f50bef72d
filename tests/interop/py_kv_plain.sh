#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# Interoperability of request/response calls with a peer that never
# negotiated them: examples/kv_server (calls on) against a Python client
# that knows only the LEN32 wire format (tests/interop/py_kv_plain.py).
#
#   bash tests/interop/py_kv_plain.sh KV_SERVER KV_CLIENT PYTHON3
#
#  1. the plain client's pipelined requests get plain replies, in order;
#  2. the server logs the fallback for it (--verbose): no request ids on
#     that connection, because it sent data without a HELLO;
#  3. kv_client, with calls, works against the same server at the same
#     time (and sees what the plain client stored: nothing left);
#  4. with --delay the replies to kv_client's calls come back newest first
#     and still reach their own calls;
#  5. SIGTERM: the server exits 0.
# Every wait is bounded and every background process is reaped.
# shellcheck disable=SC2317
set -euo pipefail

if [[ $# -ne 3 ]]; then
    echo "usage: $0 KV_SERVER KV_CLIENT PYTHON3" >&2
    exit 2
fi
server_bin=$1
client_bin=$2
python=$3
plain=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)/py_kv_plain.py

# shellcheck source=tests/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/../lib.sh"
th_begin pykv

th_start server '^listening on tcp://127\.0\.0\.1:[0-9]*$' \
    "$server_bin" --listen tcp://127.0.0.1:0 --delay 50 --verbose || exit 1
server_pid=$bg_pid
port=${bg_line##*:}

# 1. and 2.
check "a plain len32 client is served with plain replies" \
    timeout -k 5 60 "$python" "$plain" 127.0.0.1 "$port"
expect_line "$tmp/server.err" "no request ids on this connection (the peer sent data without a HELLO" \
    "the server logs the fallback for the plain client" 10

# 3. and 4.
status=0
out=$(timeout -k 5 60 "$client_bin" --connect "tcp://127.0.0.1:$port" \
    "set a 1" "set b 2" "get a" "get b" "del a" "get a" "get k1") || status=$?
want=$'set a 1: ok\nset b 2: ok\nget a: value 1\nget b: value 2\ndel a: ok\nget a: missing\nget k1: missing'
check "kv_client's calls get their own replies (status $status): $out" \
    test "$status" -eq 0 -a "$out" = "$want"
status=0
out=$(timeout -k 5 60 "$client_bin" --sync --connect "tcp://127.0.0.1:$port" "get b") || status=$?
check "kv_client --sync (status $status): $out" test "$status" -eq 0 -a "$out" = "get b: value 2"

# 5.
kill -TERM "$server_pid"
wait_exit "$server_pid" 10
check "the server exits 0 on SIGTERM (status $exit_status)" test "$exit_status" -eq 0

th_end
