#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# TLS interoperability with Python's ssl module (stdlib only):
#
#   bash tests/interop/tls_python.sh ECHO_SERVER PYTHON3 CERTS_DIR
#
# examples/echo_server listens on tls://127.0.0.1:0 and
# tests/interop/tls_py_client.py, which frames messages itself (4-byte
# big-endian length + payload), checks:
#  1. two clients at once echo hundreds of messages (0 B to 256 KiB) with
#     certificate and host-name verification, then close with close_notify;
#  2. a second connection resumes the first one's session;
#  3. mutual TLS: a server with --verify-client serves a client with a
#     certificate and refuses (naming the reason on stderr) one without;
#  4. a server whose certificate is for another name is refused by Python.
# Every wait is bounded and every background process is reaped by the EXIT
# trap. Exits 0 when every check passed.
# shellcheck disable=SC2317
set -euo pipefail

if [[ $# -ne 3 ]]; then
    echo "usage: $0 ECHO_SERVER PYTHON3 CERTS_DIR" >&2
    exit 2
fi
server_bin=$1
python=$2
certs=$3
client=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)/tls_py_client.py

# shellcheck source=tests/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/../lib.sh"
th_begin tls-python

py() {
    timeout -k 5 120 "$python" "$client" "$@"
}

# server_start ARGS...: echo_server on tls://127.0.0.1:0; sets srv_pid, srv_port.
server_start() {
    srv_port=
    th_start server '^listening on tls://127\.0\.0\.1:[0-9]*$' \
        "$server_bin" --listen tls://127.0.0.1:0 "$@" || return 1
    srv_pid=$bg_pid
    srv_port=${bg_line##*:}
}

# stop: SIGTERM; echo_server must exit 0 within 10 s.
stop() {
    local _ st=0
    kill -TERM "$srv_pid"
    for _ in $(seq 100); do
        kill -0 "$srv_pid" 2>/dev/null || break
        sleep 0.1
    done
    kill -KILL "$srv_pid" 2>/dev/null || true
    wait "$srv_pid" || st=$?
    if [[ $st -eq 0 ]]; then
        pass "echo_server stopped cleanly"
    else
        fail "echo_server exited with status $st: $(cat "$tmp/server.err")"
    fi
}

if server_start --cert "$certs/server.pem" --key "$certs/server.key"; then
    st1=0
    st2=0
    py echo localhost "$srv_port" "$certs/ca.pem" --messages 300 >"$tmp/py1.out" 2>&1 &
    p1=$!
    py echo localhost "$srv_port" "$certs/ca.pem" --messages 200 >"$tmp/py2.out" 2>&1 || st2=$?
    wait "$p1" || st1=$?
    if [[ $st1 -eq 0 && $st2 -eq 0 ]] && grep -q 'ok 300' "$tmp/py1.out" && grep -q 'ok 200' "$tmp/py2.out"; then
        pass "two Python ssl clients echoed 300 + 200 messages ($(head -1 "$tmp/py1.out"))"
    else
        fail "Python echo: status $st1/$st2: $(cat "$tmp/py1.out" "$tmp/py2.out")"
    fi
    st=0
    py echo 127.0.0.1 "$srv_port" "$certs/ca.pem" --messages 20 >"$tmp/py.out" 2>&1 || st=$?
    if [[ $st -eq 0 ]]; then
        pass "Python client verifying the IP address 127.0.0.1"
    else
        fail "Python echo by IP: $(cat "$tmp/py.out")"
    fi
    st=0
    py resume localhost "$srv_port" "$certs/ca.pem" >"$tmp/py.out" 2>&1 || st=$?
    if [[ $st -eq 0 ]] && grep -q resumed "$tmp/py.out"; then
        pass "Python client resumed its session with the server's ticket"
    else
        fail "Python resume: $(cat "$tmp/py.out")"
    fi
    if [[ -s $tmp/server.err ]]; then
        fail "echo_server reported errors for good clients: $(cat "$tmp/server.err")"
    fi
    stop
fi

if server_start --cert "$certs/server.pem" --key "$certs/server.key" --ca "$certs/ca.pem" --verify-client; then
    st=0
    py echo localhost "$srv_port" "$certs/ca.pem" --messages 50 \
        --cert "$certs/client.pem" --key "$certs/client.key" >"$tmp/py.out" 2>&1 || st=$?
    if [[ $st -eq 0 ]]; then
        pass "Python client with a certificate -> echo_server --verify-client"
    else
        fail "Python mTLS: $(cat "$tmp/py.out")"
    fi
    st=0
    py echo localhost "$srv_port" "$certs/ca.pem" --messages 5 >"$tmp/py.out" 2>&1 || st=$?
    for _ in $(seq 50); do
        grep -q 'client certificate required' "$tmp/server.err" && break
        sleep 0.1
    done
    if [[ $st -ne 0 ]] && grep -q 'failed: client certificate required, but the client sent none' "$tmp/server.err"; then
        pass "Python client without a certificate refused: $(head -1 "$tmp/server.err")"
    else
        fail "Python client without a certificate: status $st, server said '$(cat "$tmp/server.err")'"
    fi
    stop
fi

if server_start --cert "$certs/wronghost.pem" --key "$certs/wronghost.key"; then
    st=0
    py reject localhost "$srv_port" "$certs/ca.pem" >"$tmp/py.out" 2>&1 || st=$?
    if [[ $st -eq 0 ]] && grep -q "Hostname mismatch" "$tmp/py.out"; then
        pass "Python refuses a certificate for another name ($(cat "$tmp/py.out"))"
    else
        fail "Python reject: $(cat "$tmp/py.out")"
    fi
    stop
fi

th_end
