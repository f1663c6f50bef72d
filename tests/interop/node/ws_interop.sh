#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# Interoperability of ws:// and wss:// with Node's ws package (installed in
# tests/interop/node/node_modules by tests/deps.sh from package-lock.json):
#
#   bash tests/interop/node/ws_interop.sh WS_PEER NODE CERTS_DIR
#
# For ws:// and then wss:// (certificates from CERTS_DIR):
#  1. tether server (WS_PEER server) <- ws client (ws_peer.mjs client): the
#     echo matrix of 0 B to 16 MiB, binary and text, whole and fragmented;
#     2000 small messages the server sends with tether_conn_send_batch();
#     subprotocol choice; ping/pong both ways; close codes both ways;
#     invalid UTF-8 (1007); a fragmented message over max_msg (1009); a
#     refused origin (403); the health check. The tether server's log must
#     show the client's close code and reason, pongs to its heartbeats, the
#     1007 and 1009 closes and the 403.
#  2. ws server (ws_peer.mjs server) <- tether client (WS_PEER client):
#     binary and text echoes of 0 B to 16 MiB that the ws server sends back
#     fragmented, then of 2000 small messages sent with
#     tether_conn_send_batch(), tether's heartbeat pings answered, the server's ping
#     answered by tether, and the server's close code 4002 with its reason
#     reaching on_close.
# Every process is bounded and reaped (tests/lib.sh).
# shellcheck disable=SC2317
set -euo pipefail

if [[ $# -ne 3 ]]; then
    echo "usage: $0 WS_PEER NODE CERTS_DIR" >&2
    exit 2
fi
peer=$1
node=$2
certs=$3
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
if [[ ! -f $here/node_modules/ws/package.json ]]; then
    echo "SKIPPED: Node's ws package is not installed in $here/node_modules" \
        "(tests/deps.sh runs npm ci there)"
    exit 77
fi

# shellcheck source=tests/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/../../lib.sh"
th_begin wsinterop

# has FILE PATTERN DESC: pass if the log has a line matching PATTERN.
has() {
    if grep -q -- "$2" "$1"; then
        pass "$3"
    else
        fail "$3 (no line matching '$2' in $(basename "$1")):"
        sed 's/^/    /' "$1" >&2
    fi
}

for scheme in ws wss; do
    host=127.0.0.1
    [[ $scheme == wss ]] && host=localhost
    echo "== $scheme: tether server, ws client"
    th_start "srv_$scheme" '^listening on ' "$peer" server "$scheme://127.0.0.1:0" "$certs" ||
        exit 1
    srv=$bg_pid
    port=${bg_line##*:}
    status=0
    timeout -k 5 180 "$node" "$here/ws_peer.mjs" client "$scheme://$host:$port" "$certs/ca.pem" \
        >"$tmp/nodecli_$scheme.log" 2>&1 || status=$?
    sed 's/^/    node: /' "$tmp/nodecli_$scheme.log"
    if [[ $status -eq 0 ]] && grep -q '^node client ok$' "$tmp/nodecli_$scheme.log"; then
        pass "$scheme: every check of the ws client passed"
    else
        fail "$scheme: the ws client failed (status $status)"
    fi
    # Listener shutdown (SIGUSR1 -> tether_listener_shutdown(), 60 s
    # deadline): the idle ws client gets close 1001 at once and the drain
    # ends with TETHER_OK, not at the deadline.
    if th_start "hold_$scheme" '^held$' "$node" "$here/ws_peer.mjs" hold "$scheme://$host:$port" \
        "$certs/ca.pem"; then
        hold=$bg_pid
        kill -USR1 "$srv" 2>/dev/null || true
        status=0
        wait "$hold" || status=$?
        forget_pid "$hold"
        sed 's/^/    node: /' "$tmp/hold_$scheme.out"
        if [[ $status -eq 0 ]]; then
            pass "$scheme: the held ws client exited 0"
        else
            fail "$scheme: the held ws client exited $status"
        fi
        has "$tmp/hold_$scheme.out" '^closed code=1001 reason=server shutting down$' \
            "$scheme: listener shutdown closed the ws client with 1001"
    fi
    kill -TERM "$srv" 2>/dev/null || true
    status=0
    wait "$srv" || status=$?
    forget_pid "$srv"
    log=$tmp/srv_$scheme.out
    sed 's/^/    tether: /' "$log"
    if [[ $status -eq 0 ]]; then
        pass "$scheme: tether server exited 0 on SIGTERM"
    else
        fail "$scheme: tether server exited $status"
    fi
    has "$log" '^shutdown status=TETHER_OK$' "$scheme: the shutdown drained before its deadline"
    has "$log" '^accept path=/echo?n=1 origin=http://interop.test protocol=echo.v1$' \
        "$scheme: path, origin and subprotocol seen in on_accept"
    has "$log" '^close reason=TETHER_EOF code=4001 pongs=[1-9][0-9]* msgs=32 detail=peer closed the WebSocket with 4001: "client done"$' \
        "$scheme: 32 messages, heartbeat pongs, the client's close code and reason"
    has "$tmp/nodecli_$scheme.log" '^ok: 2000 batched messages from tether, in order' \
        "$scheme: 2000 messages of tether_conn_send_batch() read by ws, in order"
    has "$log" 'reason=TETHER_EPROTO .*invalid UTF-8.*(closed with 1007)' "$scheme: 1007 logged"
    has "$log" 'reason=TETHER_EMSGSIZE .*(closed with 1009)' "$scheme: 1009 logged"
    has "$log" '^listener error=TETHER_EPROTO .*origin http://evil.test is not allowed (answered 403)' \
        "$scheme: refused origin reported to on_error"

    echo "== $scheme: ws server, tether client"
    if [[ $scheme == wss ]]; then
        th_start "nodesrv_$scheme" '^listening on ' "$node" "$here/ws_peer.mjs" server \
            "$certs/server.pem" "$certs/server.key" || exit 1
    else
        th_start "nodesrv_$scheme" '^listening on ' "$node" "$here/ws_peer.mjs" server - - ||
            exit 1
    fi
    nsrv=$bg_pid
    port=${bg_line##* }
    status=0
    timeout -k 5 180 "$peer" client "$scheme://$host:$port/chat" "$certs" \
        >"$tmp/cli_$scheme.log" 2>&1 || status=$?
    sed 's/^/    tether: /' "$tmp/cli_$scheme.log"
    if [[ $status -eq 0 ]]; then
        pass "$scheme: tether client passed"
    else
        fail "$scheme: tether client exited $status"
    fi
    has "$tmp/cli_$scheme.log" '^connected protocol=echo.v1$' "$scheme: subprotocol echo.v1"
    has "$tmp/cli_$scheme.log" '^echoes ok: 18 messages; pongs=[1-9]' \
        "$scheme: 18 echoes checked, tether's pings answered by ws"
    has "$tmp/cli_$scheme.log" '^batch echoes ok: 2000 messages$' \
        "$scheme: 2000 messages of tether_conn_send_batch() echoed by ws, in order"
    has "$tmp/cli_$scheme.log" '^close reason=TETHER_EOF code=4002 detail=peer closed the WebSocket with 4002: "bye from node"$' \
        "$scheme: the server's close code and reason reached on_close"
    kill -TERM "$nsrv" 2>/dev/null || true
    wait "$nsrv" || true
    forget_pid "$nsrv"
    log=$tmp/nodesrv_$scheme.out
    sed 's/^/    node: /' "$log"
    has "$log" '^connection origin=http://interop.test x-interop=tether$' \
        "$scheme: Origin and the extra header reached ws"
    has "$log" '^pong from client: hello-tether$' "$scheme: tether answered the ws server's ping"
    has "$log" '^closed code=4002' "$scheme: ws saw its close answered"
done
th_end
