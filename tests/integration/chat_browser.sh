#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# A real browser joins the chat: headless Chromium loads examples/chat.html
# from a tiny static server (python3 -m http.server on 127.0.0.1), joins
# examples/chat_server over ws:// on loopback, and talks with a TLS
# chat_client:
#
#   bash tests/integration/chat_browser.sh CHAT_SERVER CHAT_CLIENT CHROMIUM PYTHON3 CERTS_DIR
#
# The page (chat.html?server=...&nick=carol&say=...&ack=1) says a line
# after its welcome, which must reach the TLS client as "<~carol> ...";
# the TLS client's line must reach the page, which proves it by answering
# "got: <alice> ...". Chromium is kept on loopback: every other host name
# fails to resolve and every non-loopback request goes to a closed
# loopback proxy port; background networking, component updates and
# reporting are off. Every wait is bounded, every process reaped.
# shellcheck disable=SC2317
set -euo pipefail

if [[ $# -ne 5 ]]; then
    echo "usage: $0 CHAT_SERVER CHAT_CLIENT CHROMIUM PYTHON3 CERTS_DIR" >&2
    exit 2
fi
server_bin=$1
client_bin=$2
chromium=$3
python=$4
certs=$5
examples=$(cd "$(dirname "${BASH_SOURCE[0]}")/../../examples" && pwd)

# shellcheck source=tests/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/../lib.sh"
th_begin chatbrowser

th_start server '^listening on ws://' "$server_bin" --listen tls://127.0.0.1:0 \
    --cert "$certs/server.pem" --key "$certs/server.key" --ca "$certs/ca.pem" \
    --ws ws://127.0.0.1:0/chat || exit 1
server_pid=$bg_pid
ws_url=${bg_line#listening on }
tls_port=$(sed -n 's|^listening on tls://127.0.0.1:||p' "$tmp/server.out")

# The static server: the examples folder, on a port the kernel picks.
th_start web 'port [0-9]' "$python" -u -m http.server --bind 127.0.0.1 --directory "$examples" 0 ||
    exit 1
web_port=$(sed -n 's/.* port \([0-9]*\) .*/\1/p' "$tmp/web.out" | head -n 1)
check "the static server serves chat.html" \
    "$python" -c "import urllib.request,sys; sys.exit(0 if b'WebSocket' in urllib.request.urlopen('http://127.0.0.1:$web_port/chat.html', timeout=10).read() else 1)"

# alice, the TLS client, reads its stdin from a FIFO held open here.
mkfifo "$tmp/alice.in"
exec {alice_fd}<>"$tmp/alice.in"
(
    exec {alice_fd}>&-
    exec "$client_bin" --connect "tls://localhost:$tls_port" --ca "$certs/ca.pem" \
        --cert "$certs/client.pem" --key "$certs/client.key" <"$tmp/alice.in" \
        >"$tmp/alice.out" 2>"$tmp/alice.err"
) &
alice_pid=$!
bg_pids+=("$alice_pid")
expect_line "$tmp/alice.out" "* welcome alice; here: nobody else yet" "alice (TLS) joined"

page="http://127.0.0.1:$web_port/chat.html?server=$ws_url&nick=carol&say=hello%20from%20chromium&ack=1"
"$chromium" --headless=new --no-sandbox --disable-gpu --no-first-run \
    --no-default-browser-check --user-data-dir="$tmp/profile" \
    --disable-background-networking --disable-component-update --disable-sync \
    --disable-default-apps --disable-extensions --disable-breakpad \
    --disable-domain-reliability --metrics-recording-only --no-pings \
    --host-resolver-rules="MAP * ~NOTFOUND , EXCLUDE 127.0.0.1" \
    --proxy-server="http://127.0.0.1:9" --proxy-bypass-list="127.0.0.1" \
    "$page" >"$tmp/chromium.out" 2>"$tmp/chromium.err" &
chromium_pid=$!
bg_pids+=("$chromium_pid")

expect_line "$tmp/alice.out" "* ~carol joined" "the browser joined as ~carol" 60
expect_line "$tmp/alice.out" "<~carol> hello from chromium" \
    "the browser's line reached the TLS client" 30
printf '%s\n' "hi carol" >&"$alice_fd"
expect_line "$tmp/alice.out" "<~carol> got: <alice> hi carol" \
    "the TLS client's line reached the browser (it answered)" 30
expect_line "$tmp/server.out" "~carol joined from 127.0.0.1:" "the server saw the browser" 5

kill -TERM "$chromium_pid" 2>/dev/null || true
wait_exit "$chromium_pid" 20
expect_line "$tmp/alice.out" "* ~carol left" "the browser's departure was announced" 20
exec {alice_fd}>&-
wait_exit "$alice_pid" 10
check "alice exits 0 at the end of stdin (status $exit_status)" test "$exit_status" -eq 0
kill -TERM "$server_pid" 2>/dev/null || true
wait_exit "$server_pid" 10
check "chat_server exits 0 on SIGTERM (status $exit_status)" test "$exit_status" -eq 0
if [[ $failures -ne 0 ]]; then
    sed 's/^/    server: /' "$tmp/server.out"
    sed 's/^/    alice: /' "$tmp/alice.out"
    tail -n 20 "$tmp/chromium.err" | sed 's/^/    chromium: /'
fi
th_end
