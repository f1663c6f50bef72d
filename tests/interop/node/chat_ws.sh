#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# examples/chat_server with --ws: a WebSocket client (Node's ws package,
# tests/interop/node/chat_peer.mjs, standing in for examples/chat.html)
# and a TLS chat_client share one room.
#
#   bash tests/interop/node/chat_ws.sh CHAT_SERVER CHAT_CLIENT NODE CERTS_DIR
#
# For ws:// and wss://: the web client names itself with ?nick=dave and is
# announced as ~dave; its line reaches the TLS client as "<~dave> ...",
# the TLS client's line reaches it as one text message "<alice> ...", and
# its departure is announced. The server stops with status 0 on SIGTERM.
# Every wait is bounded and every background process reaped (tests/lib.sh).
# shellcheck disable=SC2317
set -euo pipefail

if [[ $# -ne 4 ]]; then
    echo "usage: $0 CHAT_SERVER CHAT_CLIENT NODE CERTS_DIR" >&2
    exit 2
fi
server_bin=$1
client_bin=$2
node=$3
certs=$4
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
if [[ ! -f $here/node_modules/ws/package.json ]]; then
    echo "SKIPPED: Node's ws package is not installed in $here/node_modules" \
        "(tests/deps.sh runs npm ci there)"
    exit 77
fi

# shellcheck source=tests/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/../../lib.sh"
th_begin chatws

# start_fed NAME COMMAND...: runs COMMAND with stdin from a FIFO this shell
# holds open (fd in feed[NAME]); output in $tmp/NAME.out and .err.
declare -A feed=() pid_of=()
start_fed() {
    local name=$1 fd
    shift
    mkfifo "$tmp/$name.in"
    exec {fd}<>"$tmp/$name.in"
    feed[$name]=$fd
    (
        for fd in "${feed[@]}"; do
            exec {fd}>&-
        done
        exec "$@" <"$tmp/$name.in" >"$tmp/$name.out" 2>"$tmp/$name.err"
    ) &
    pid_of[$name]=$!
    bg_pids+=("$!")
}

say() {
    printf '%s\n' "$2" >&"${feed[$1]}"
}

hang_up() {
    local fd=${feed[$1]}
    exec {fd}>&-
    unset "feed[$1]"
}

for scheme in ws wss; do
    echo "== $scheme"
    th_start "server_$scheme" '^listening on ws' "$server_bin" --listen tls://127.0.0.1:0 \
        --cert "$certs/server.pem" --key "$certs/server.key" --ca "$certs/ca.pem" \
        --ws "$scheme://127.0.0.1:0/chat" || exit 1
    spid=$bg_pid
    wsport=${bg_line##*:}
    wsport=${wsport%/chat}
    tlsport=$(sed -n 's|^listening on tls://127.0.0.1:||p' "$tmp/server_$scheme.out")
    host=127.0.0.1
    ca=()
    if [[ $scheme == wss ]]; then
        host=localhost
        ca=("$certs/ca.pem")
    fi
    start_fed "alice_$scheme" "$client_bin" --connect "tls://localhost:$tlsport" \
        --ca "$certs/ca.pem" --cert "$certs/client.pem" --key "$certs/client.key"
    expect_line "$tmp/alice_$scheme.out" "* welcome alice; here: nobody else yet" \
        "$scheme: alice (TLS) joined"
    start_fed "dave_$scheme" "$node" "$here/chat_peer.mjs" \
        "$scheme://$host:$wsport/chat?nick=dave" "${ca[@]}"
    expect_line "$tmp/dave_$scheme.out" "* welcome ~dave; here: alice" \
        "$scheme: the web client is welcomed as ~dave"
    expect_line "$tmp/alice_$scheme.out" "* ~dave joined" "$scheme: alice hears that ~dave joined"
    say "dave_$scheme" "hello from the web"
    expect_line "$tmp/alice_$scheme.out" "<~dave> hello from the web" \
        "$scheme: the web client's line reached the TLS client"
    say "alice_$scheme" "hi dave"
    expect_line "$tmp/dave_$scheme.out" "<alice> hi dave" \
        "$scheme: the TLS client's line reached the web client"
    if grep -q '^(binary)' "$tmp/dave_$scheme.out"; then
        fail "$scheme: the web client got binary messages"
    else
        pass "$scheme: every message to the web client was text"
    fi
    hang_up "dave_$scheme"
    expect_line "$tmp/alice_$scheme.out" "* ~dave left" "$scheme: ~dave's departure announced"
    wait_exit "${pid_of[dave_$scheme]}" 10
    check "$scheme: the web client exited 0 (status $exit_status)" test "$exit_status" -eq 0
    hang_up "alice_$scheme"
    wait_exit "${pid_of[alice_$scheme]}" 10
    kill -TERM "$spid" 2>/dev/null || true
    wait_exit "$spid" 10
    check "$scheme: chat_server exits 0 on SIGTERM (status $exit_status)" test "$exit_status" -eq 0
    sed 's/^/    server: /' "$tmp/server_$scheme.out"
done
th_end
