#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# TLS interoperability with OpenSSL's own command-line peers:
#
#   bash tests/interop/tls_openssl.sh ECHO_SERVER ECHO_CLIENT OPENSSL CERTS_DIR
#
# 1. Our client against `openssl s_server`. s_server has no echo mode, so
#    its stdin and stdout are joined through a FIFO: whatever it receives it
#    sends back, which is exactly an echo server for echo_client's checked
#    messages. Our client must verify it (CA, host name), talk TLS 1.3 and
#    1.2, present a client certificate when asked, and name the reason when
#    it refuses (unknown CA, host name mismatch, missing client certificate).
# 2. `openssl s_client -verify_return_error` against examples/echo_server:
#    "Verify return code: 0 (ok)", a len32 message echoed, both versions,
#    session resumption (-sess_out, -sess_in), mutual TLS with and without a client
#    certificate (the server names the refused peer on stderr).
#
# Servers listen on 127.0.0.1: echo_server on port 0, s_server on a free port
# found by the kernel just before. Every wait is bounded and every background
# process is reaped by the EXIT trap. Exits 0 when every check passed.
# shellcheck disable=SC2317
set -euo pipefail

if [[ $# -ne 4 ]]; then
    echo "usage: $0 ECHO_SERVER ECHO_CLIENT OPENSSL CERTS_DIR" >&2
    exit 2
fi
server_bin=$1
client_bin=$2
openssl=$3
certs=$4

# shellcheck source=tests/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/../lib.sh"
th_begin tls-openssl

free_port() {
    python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

# wait_listening PORT PID: until something listens on 127.0.0.1:PORT (30 s).
wait_listening() {
    local _
    for _ in $(seq 600); do
        if ss -Hltn "sport = :$1" | grep -q .; then
            return 0
        fi
        if ! kill -0 "$2" 2>/dev/null; then
            return 1
        fi
        sleep 0.05
    done
    return 1
}

# stop PID: SIGTERM, then reap (at most 10 s, then SIGKILL).
stop() {
    local _
    kill -TERM "$1" 2>/dev/null || true
    for _ in $(seq 100); do
        kill -0 "$1" 2>/dev/null || break
        sleep 0.1
    done
    kill -KILL "$1" 2>/dev/null || true
    wait "$1" 2>/dev/null || true
}

# ---- 1. our client against openssl s_server --------------------------------

# s_server_start NAME [EXTRA ARGS...]: an echoing s_server with certificate
# NAME.pem; sets ssrv_pid and ssrv_port.
s_server_start() {
    local name=$1
    shift
    ssrv_port=$(free_port)
    rm -f "$tmp/fifo"
    mkfifo "$tmp/fifo"
    # <> opens the FIFO read-write, so neither redirection blocks; reading
    # and writing the same FIFO is the point (an echo).
    # shellcheck disable=SC2094
    "$openssl" s_server -quiet -accept "127.0.0.1:$ssrv_port" \
        -cert "$certs/$name.pem" -key "$certs/$name.key" "$@" \
        <>"$tmp/fifo" >"$tmp/fifo" 2>"$tmp/s_server.err" &
    ssrv_pid=$!
    bg_pids+=("$ssrv_pid")
    if ! wait_listening "$ssrv_port" "$ssrv_pid"; then
        fail "openssl s_server $name did not start: $(head -c 300 "$tmp/s_server.err")"
        return 1
    fi
}

# client_expect DESC PATTERN ARGS...: echo_client must print PATTERN on
# stdout (success) or, for an "error:" pattern, exit 1 with one stderr line
# containing it.
client_expect() {
    local desc=$1 pattern=$2
    shift 2
    local st=0
    timeout -k 5 60 "$client_bin" "$@" >"$tmp/c.out" 2>"$tmp/c.err" || st=$?
    if [[ $pattern == error:* ]]; then
        if [[ $st -eq 1 && $(wc -l <"$tmp/c.err") -eq 1 ]] && grep -qF -- "$pattern" "$tmp/c.err"; then
            pass "$desc: $(cat "$tmp/c.err")"
        else
            fail "$desc: status $st, stdout '$(cat "$tmp/c.out")', stderr '$(cat "$tmp/c.err")'"
        fi
    elif [[ $st -eq 0 ]] && grep -qxF -- "$pattern" "$tmp/c.out"; then
        pass "$desc"
    else
        fail "$desc: status $st, stdout '$(cat "$tmp/c.out")', stderr '$(cat "$tmp/c.err")'"
    fi
}

if s_server_start server; then
    url="tls://localhost:$ssrv_port"
    client_expect "client -> s_server, TLS 1.3, verified" "ok 100" \
        --connect "$url" --ca "$certs/ca.pem" --count 100 --size 3000
    client_expect "client -> s_server, 1 MiB messages" "ok 4" \
        --connect "$url" --ca "$certs/ca.pem" --count 4 --size 1048576
    client_expect "client -> s_server by IP address" "ok 10" \
        --connect "tls://127.0.0.1:$ssrv_port" --ca "$certs/ca.pem" --count 10
    client_expect "client -> s_server, system trust only" "error: connect to $url: certificate verify failed: unknown CA" \
        --connect "$url" --count 1 --servername localhost
    client_expect "client -> s_server, wrong --servername" "error: connect to $url: certificate verify failed: host name mismatch: the server certificate is not valid for 'db.example'" \
        --connect "$url" --ca "$certs/ca.pem" --servername db.example
    stop "$ssrv_pid"
fi

if s_server_start server -tls1_2; then
    client_expect "client -> s_server, TLS 1.2" "ok 50" \
        --connect "tls://localhost:$ssrv_port" --ca "$certs/ca.pem" --count 50 --size 20000
    stop "$ssrv_pid"
fi

if s_server_start untrusted; then
    client_expect "client -> s_server with an untrusted CA" "error: connect to tls://localhost:$ssrv_port: certificate verify failed: unknown CA: the server certificate 'CN=localhost (untrusted),O=tether' is issued by 'CN=tether untrusted CA,O=tether'" \
        --connect "tls://localhost:$ssrv_port" --ca "$certs/ca.pem"
    client_expect "client -> s_server with an untrusted CA, --insecure" "ok 5" \
        --connect "tls://localhost:$ssrv_port" --insecure --count 5
    stop "$ssrv_pid"
fi

if s_server_start expired; then
    client_expect "client -> s_server with an expired certificate" "error: connect to tls://localhost:$ssrv_port: certificate verify failed: the server certificate 'CN=localhost (expired),O=tether' has expired" \
        --connect "tls://localhost:$ssrv_port" --ca "$certs/ca.pem"
    stop "$ssrv_pid"
fi

# s_server asks for a client certificate and fails without one (-Verify).
if s_server_start server -Verify 1 -CAfile "$certs/ca.pem" -verify_return_error; then
    client_expect "client with certificate -> s_server -Verify" "ok 20" \
        --connect "tls://localhost:$ssrv_port" --ca "$certs/ca.pem" \
        --cert "$certs/client.pem" --key "$certs/client.key" --count 20
    # TLS 1.3: our handshake ends before the server judges it, so the
    # client waits for the server's verdict (its tickets, or the alert):
    # the refusal fails the connect, as with TLS 1.2, and the accepted
    # client above got through on s_server's tickets.
    client_expect "client without certificate -> s_server -Verify" "error: connect to tls://localhost:$ssrv_port: the server requires a client certificate" \
        --connect "tls://localhost:$ssrv_port" --ca "$certs/ca.pem"
    stop "$ssrv_pid"
fi
if s_server_start server -tls1_2 -Verify 1 -CAfile "$certs/ca.pem" -verify_return_error; then
    client_expect "client without certificate -> s_server -Verify, TLS 1.2" "error: connect to tls://localhost:$ssrv_port: the server requires a client certificate" \
        --connect "tls://localhost:$ssrv_port" --ca "$certs/ca.pem"
    stop "$ssrv_pid"
fi

# ---- 2. openssl s_client against our echo_server ----------------------------

# server_start ARGS...: echo_server on tls://127.0.0.1:0; sets srv_pid, srv_port.
server_start() {
    srv_port=
    th_start server '^listening on tls://127\.0\.0\.1:[0-9]*$' \
        "$server_bin" --listen tls://127.0.0.1:0 "$@" || return 1
    srv_pid=$bg_pid
    srv_port=${bg_line##*:}
}

# s_client ARGS...: one len32 message "hello tether" through s_client; its
# output (summary and the echoed bytes) in $tmp/s_client.out.
s_client() {
    local st=0
    { printf '\000\000\000\014hello tether'; sleep 1; } |
        timeout -k 5 20 "$openssl" s_client -connect "127.0.0.1:$srv_port" -CAfile "$certs/ca.pem" \
            -verify_return_error -verify_hostname localhost -servername localhost "$@" \
            >"$tmp/s_client.out" 2>&1 || st=$?
    return $st
}

if server_start --cert "$certs/server.pem" --key "$certs/server.key"; then
    for v in -tls1_3 -tls1_2; do
        st=0
        s_client "$v" || st=$?
        if [[ $st -eq 0 ]] && grep -q 'Verify return code: 0 (ok)' "$tmp/s_client.out" &&
            grep -aq 'hello tether' "$tmp/s_client.out"; then
            pass "s_client $v -> echo_server: verify return code 0, message echoed"
        else
            fail "s_client $v -> echo_server: status $st: $(tail -c 600 "$tmp/s_client.out")"
        fi
    done
    # Resumption: the session (a TLS 1.3 ticket, read while the first
    # connection stays open) saved by one s_client and offered by the next.
    # (-reconnect cannot show it for TLS 1.3: it reconnects before any
    # ticket has arrived.)
    for v in -tls1_3 -tls1_2; do
        st=0
        rm -f "$tmp/sess"
        s_client "$v" -sess_out "$tmp/sess" || st=$?
        [[ $st -eq 0 ]] && s_client "$v" -sess_in "$tmp/sess" || st=$?
        if [[ $st -eq 0 ]] && grep -aq '^Reused, ' "$tmp/s_client.out" &&
            grep -aq 'hello tether' "$tmp/s_client.out"; then
            pass "s_client $v -> echo_server: session resumed"
        else
            fail "s_client $v: no resumed session (status $st): $(grep -aE '^(New|Reused)' "$tmp/s_client.out" | head -3)"
        fi
    done
    stop "$srv_pid"
fi

if server_start --cert "$certs/server.pem" --key "$certs/server.key" --ca "$certs/ca.pem" --verify-client; then
    st=0
    s_client -cert "$certs/client.pem" -key "$certs/client.key" || st=$?
    if [[ $st -eq 0 ]] && grep -q 'Verify return code: 0 (ok)' "$tmp/s_client.out" &&
        grep -aq 'hello tether' "$tmp/s_client.out"; then
        pass "s_client with certificate -> echo_server --verify-client"
    else
        fail "s_client with certificate -> echo_server --verify-client: status $st: $(tail -c 600 "$tmp/s_client.out")"
    fi
    st=0
    s_client || st=$?
    if grep -aq 'hello tether' "$tmp/s_client.out"; then
        fail "s_client without certificate got an echo from echo_server --verify-client"
    else
        for _ in $(seq 50); do
            grep -q 'client certificate required' "$tmp/server.err" && break
            sleep 0.1
        done
        if grep -q 'TLS handshake with 127.0.0.1:[0-9]* failed: client certificate required, but the client sent none' "$tmp/server.err"; then
            pass "s_client without certificate refused: $(head -1 "$tmp/server.err")"
        else
            fail "echo_server --verify-client did not name the refusal: '$(cat "$tmp/server.err")'"
        fi
    fi
    stop "$srv_pid"
fi

th_end
