#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# End-to-end test of examples/sync_client (the blocking API) against
# examples/echo_server.
#
#   bash tests/integration/sync_client.sh SYNC_CLIENT ECHO_SERVER CERTS_DIR PYTHON
#
# Checks: --help; the echo over tcp:// and over tls:// verified with the
# test CA (by name and by IP address), with a client certificate, and with
# --servername; and that each failure is one line
# naming the cause and comes within the timeout: connection refused, a
# server whose certificate we do not trust, a server that accepts but never
# answers (receive timeout), a server that never completes the TLS
# handshake (connect timeout), and usage errors.
#
# Loopback only, port 0, every wait bounded, every background process reaped
# by the EXIT trap.
# shellcheck disable=SC2317
set -euo pipefail

if [[ $# -ne 4 ]]; then
    echo "usage: $0 SYNC_CLIENT ECHO_SERVER CERTS_DIR PYTHON" >&2
    exit 2
fi
client_bin=$1
server_bin=$2
certs=$3
python=$4

# shellcheck source=tests/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/../lib.sh"
th_begin sync

# run NAME ARGS...: runs sync_client (bounded by timeout(1)); sets status and
# elapsed (whole seconds).
run() {
    local name=$1 start=$SECONDS
    shift
    status=0
    timeout -k 5 60 "$client_bin" "$@" >"$tmp/$name.out" 2>"$tmp/$name.err" || status=$?
    elapsed=$((SECONDS - start))
}

# expect_echo NAME WANT ARGS...
expect_echo() {
    local name=$1 want=$2
    shift 2
    run "$name" "$@"
    if [[ $status -eq 0 && $(cat "$tmp/$name.out") == "$want" && ! -s $tmp/$name.err ]]; then
        pass "$name: $* -> $want"
    else
        fail "$name: status $status, stdout '$(cat "$tmp/$name.out")', stderr '$(cat "$tmp/$name.err")'"
    fi
}

# expect_error NAME PATTERN MAX-SECONDS ARGS...: status 1, one stderr line
# containing PATTERN, nothing on stdout, within MAX-SECONDS.
expect_error() {
    local name=$1 pattern=$2 max=$3
    shift 3
    run "$name" "$@"
    if [[ $status -eq 1 && $(wc -l <"$tmp/$name.err") -eq 1 && ! -s $tmp/$name.out ]] &&
        grep -qF -- "$pattern" "$tmp/$name.err" && ((elapsed <= max)); then
        pass "$name: $(cat "$tmp/$name.err")"
    else
        fail "$name: expected status 1 and one line with '$pattern' within $max s; got status" \
            "$status after ${elapsed}s, stdout '$(cat "$tmp/$name.out")', stderr '$(cat "$tmp/$name.err")'"
    fi
}

out=$("$client_bin" --help) && status=0 || status=$?
if [[ $status -eq 0 && $out == usage:* ]]; then
    pass "--help"
else
    fail "--help: status $status, '$out'"
fi

# ---- echoes ---------------------------------------------------------------------

if th_start tcp '^listening on ' "$server_bin" --listen tcp://127.0.0.1:0; then
    url=${bg_line#listening on }
    expect_echo tcp "hello" --connect "$url"
    expect_echo tcp-spaces "hello, blocking world" --connect "$url" \
        --message "hello, blocking world" --timeout 2000
    kill -TERM "$bg_pid"
    wait "$bg_pid" || true
    expect_error refused "error: connect to $url: connection refused" 5 --connect "$url"
fi

if th_start tls '^listening on ' "$server_bin" --listen tls://127.0.0.1:0 \
    --cert "$certs/server.pem" --key "$certs/server.key"; then
    port=${bg_line##*:}
    expect_echo tls-name "hello" --connect "tls://localhost:$port" --ca "$certs/ca.pem"
    expect_echo tls-ip "hello" --connect "tls://127.0.0.1:$port" --ca "$certs/ca.pem"
    # Without --ca the system's trust store does not know the test CA.
    expect_error untrusted "certificate verify failed: unknown CA" 10 \
        --connect "tls://localhost:$port"
fi

# Mutual TLS: a server that requires a client certificate.
if th_start mtls '^listening on ' "$server_bin" --listen tls://127.0.0.1:0 \
    --cert "$certs/server.pem" --key "$certs/server.key" --ca "$certs/ca.pem" --verify-client; then
    port=${bg_line##*:}
    expect_echo mtls "hello" --connect "tls://localhost:$port" --ca "$certs/ca.pem" \
        --cert "$certs/client.pem" --key "$certs/client.key"
    expect_error mtls-nocert "requires a client certificate" 10 \
        --connect "tls://localhost:$port" --ca "$certs/ca.pem"
fi
# --servername: verify a name other than the URL's host.
if th_start sni '^listening on ' "$server_bin" --listen tls://127.0.0.1:0 \
    --cert "$certs/wronghost.pem" --key "$certs/wronghost.key"; then
    port=${bg_line##*:}
    expect_echo servername "hello" --connect "tls://127.0.0.1:$port" --ca "$certs/ca.pem" \
        --servername wrong.example
    expect_error no-servername "address mismatch" 10 \
        --connect "tls://127.0.0.1:$port" --ca "$certs/ca.pem"
fi

# ---- timeouts ---------------------------------------------------------------------

# A listener that never accepts and never reads: TCP connects (the kernel
# completes the handshake from the backlog), but no reply ever comes, and a
# TLS handshake never completes.
if th_start silent '^port ' "$python" -c '
import socket, time
s = socket.socket()
s.bind(("127.0.0.1", 0))
s.listen(8)
print("port", s.getsockname()[1], flush=True)
time.sleep(60)
'; then
    port=${bg_line#port }
    expect_error recv-timeout "error: no message within 500 ms" 5 \
        --connect "tcp://127.0.0.1:$port" --timeout 500
    expect_error tls-timeout "timed out" 5 --connect "tls://127.0.0.1:$port" \
        --ca "$certs/ca.pem" --timeout 500
fi

# ---- usage errors -------------------------------------------------------------------

expect_error no-args "error: --connect URL is required (see --help)" 5
expect_error bad-url "invalid URL" 5 --connect "tcp://127.0.0.1"
expect_error extra-arg "error: unexpected argument 'hello' (see --help)" 5 \
    --connect "tcp://127.0.0.1:1" "hello"

th_end
