#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# End-to-end test of reconnection and heartbeats with the examples.
#
#   bash tests/integration/reconnect_examples.sh ECHO_SERVER ECHO_CLIENT \
#        RECONNECTING_CLIENT PYTHON
#
# - echo_client --reconnect started before its server completes once the
#   server appears, and completes its --count across a server that is
#   killed (SIGKILL) and restarted on the same port in the middle of a run;
# - echo_client --heartbeat against echo_server --heartbeat completes, and
#   against a server that accepts but never answers (a few lines of Python)
#   it fails with "heartbeat timeout" within the bound;
# - reconnecting_client prints its transitions through a server restart,
#   gets every echo but those of the messages it reports lost, and exits 0
#   on SIGTERM; it reports a heartbeat-detected loss with the count of
#   messages lost; over mutual TLS it exits 0 after --count echoes; with
#   --max-attempts against a port where nothing listens it gives up, hands
#   back what it held and exits 1.
#
# Every step waits for what the programs print, not for a fixed time (a
# loaded machine, an ASan build, may be slower than any sleep), every wait
# is bounded and every background process is reaped by the EXIT trap. Exits 0 when every check passed; each failed check prints `FAIL:`.
# shellcheck disable=SC2317
set -euo pipefail

if [[ $# -ne 4 ]]; then
    echo "usage: $0 ECHO_SERVER ECHO_CLIENT RECONNECTING_CLIENT PYTHON" >&2
    exit 2
fi
server_bin=$1
client_bin=$2
rc_bin=$3
python=$4

# shellcheck source=tests/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/../lib.sh"
th_begin reconnect

# start_server NAME ARGS...: sets server_pid and server_port once the
# server prints `listening on URL` (at most 10 s).
start_server() {
    local name=$1
    shift
    th_start "$name" '^listening on .*:[0-9]*$' "$server_bin" "$@" || return 1
    server_pid=$bg_pid
    server_port=${bg_line##*:}
}

# kill_server SIGNAL: stops the current server and reaps it.
kill_server() {
    kill -"$1" "$server_pid" 2>/dev/null || true
    wait_exit "$server_pid" 10
}

# start_bg NAME CMD...: runs CMD in the background; sets bg_pid.
start_bg() {
    local name=$1
    shift
    "$@" >"$tmp/$name.out" 2>"$tmp/$name.err" &
    bg_pid=$!
    bg_pids+=("$bg_pid")
}

# A free port: let a server pick one, then stop it.
start_server probe --listen tcp://127.0.0.1:0
port=$server_port
kill_server TERM

# ---- echo_client --reconnect ------------------------------------------------

# 1. The client starts first; the server appears once the client has found
#    nobody listening (waiting for that, not for a fixed time: a loaded
#    machine may take longer than any sleep to start the client).
start_bg late "$client_bin" --connect "tcp://127.0.0.1:$port" --reconnect --count 50 \
    --size 100 --timeout 20000
client_pid=$bg_pid
wait_line "$tmp/late.err" 'connection refused' 30 || true
start_server late_srv --listen "tcp://127.0.0.1:$port"
wait_exit "$client_pid" 25
if [[ $exit_status -eq 0 ]] && grep -qx 'ok 50' "$tmp/late.out" &&
    grep -q 'disconnected: .*connection refused.*; retrying in' "$tmp/late.err"; then
    pass "echo_client --reconnect waits for a server that starts late"
else
    fail "echo_client --reconnect with a late server: status $exit_status, $(cat "$tmp/late.out" "$tmp/late.err")"
fi
kill_server TERM

# 2. The server is killed (SIGKILL) in the middle of a paced run (once it
#    has accepted the client: --verbose says so) and restarted on the same
#    port once the client has noticed: the client still gets every echo.
start_server first --listen "tcp://127.0.0.1:$port" --verbose
start_bg restart "$client_bin" --connect "tcp://127.0.0.1:$port" --reconnect --count 150 \
    --size 64 --interval 20 --timeout 30000
client_pid=$bg_pid
wait_line "$tmp/first.out" 'echo_server: accepted ' 30 || true
kill_server KILL
wait_line "$tmp/restart.err" 'retrying in' 30 || true
start_server second --listen "tcp://127.0.0.1:$port"
wait_exit "$client_pid" 35
if [[ $exit_status -eq 0 ]] && grep -qx 'ok 150' "$tmp/restart.out" &&
    grep -q 'retrying in' "$tmp/restart.err"; then
    pass "echo_client --reconnect completes --count across a server restart"
else
    fail "echo_client --reconnect across a restart: status $exit_status, $(cat "$tmp/restart.out" "$tmp/restart.err")"
fi
kill_server TERM

# ---- heartbeats --------------------------------------------------------------

# The messages are further apart than the heartbeat interval, so pings and
# pongs fill the silences; a side gives up only after 4 silent intervals
# (4 s), far longer than a loaded machine stalls a process.
start_server hb --listen tcp://127.0.0.1:0 --heartbeat 500
start_bg hbc "$client_bin" --connect "tcp://127.0.0.1:$server_port" --heartbeat 1000 \
    --count 3 --interval 1500 --timeout 20000
wait_exit "$bg_pid" 25
if [[ $exit_status -eq 0 ]] && grep -qx 'ok 3' "$tmp/hbc.out"; then
    pass "echo_client --heartbeat against echo_server --heartbeat"
else
    fail "heartbeats between the examples: status $exit_status, $(cat "$tmp/hbc.out" "$tmp/hbc.err")"
fi
kill_server TERM
if [[ -s $tmp/hb.err ]]; then
    fail "echo_server --heartbeat wrote to stderr: $(cat "$tmp/hb.err")"
fi

# A server that accepts and reads but never answers anything.
cat >"$tmp/mute.py" <<'EOF'
import socket, sys, time
s = socket.socket()
s.bind(("127.0.0.1", 0))
s.listen(4)
print(s.getsockname()[1], flush=True)
c, _ = s.accept()
c.settimeout(0.1)
end = time.time() + 20
while time.time() < end:
    try:
        if not c.recv(65536):
            break
    except socket.timeout:
        pass
EOF
th_start mute '^[0-9][0-9]*$' "$python" "$tmp/mute.py" || true
mute_pid=$bg_pid
mute_port=$bg_line
t0=$(date +%s%N)
start_bg hbdead "$client_bin" --connect "tcp://127.0.0.1:$mute_port" --heartbeat 100 \
    --timeout 20000
wait_exit "$bg_pid" 25
took_ms=$((($(date +%s%N) - t0) / 1000000))
# Heartbeats notice the silence after 4 x 100 ms; the bound only tells
# that apart from the 20 s --timeout (the message names the cause).
if [[ $exit_status -eq 1 ]] && grep -q 'heartbeat timeout' "$tmp/hbdead.err" &&
    [[ $took_ms -lt 15000 ]]; then
    pass "echo_client --heartbeat gives up on a mute server after ${took_ms} ms: $(cat "$tmp/hbdead.err")"
else
    fail "echo_client --heartbeat against a mute server: status $exit_status after ${took_ms} ms: $(cat "$tmp/hbdead.err")"
fi
kill -KILL "$mute_pid" 2>/dev/null || true
wait_exit "$mute_pid" 5

# ---- reconnecting_client -----------------------------------------------------

# The server stops (SIGTERM) while the client streams and comes back on the
# same port. Each step waits for what the client printed, never for a fixed
# time. A message the client had written to the connection in the instant
# the server closed gets no echo and is not resent (README.md, "Which
# messages can be lost"): the client says how many in a `lost:` line. So the
# run has no --count (the count of echoes might never be reached); it is
# stopped with SIGTERM once echoes flow on the new connection, and the
# check is that every message was echoed, in order, except exactly the
# ones reported lost.
start_server rc1 --listen "tcp://127.0.0.1:$port"
start_bg rc "$rc_bin" --connect "tcp://127.0.0.1:$port" --interval 100 --initial-backoff 200
rc_pid=$bg_pid
wait_line "$tmp/rc.out" 'echo: message 2' 30 || true
kill_server TERM
wait_line "$tmp/rc.out" 'disconnected: connection refused; retrying in' 30 || true
start_server rc2 --listen "tcp://127.0.0.1:$port"
# Three echoes after the second `connected to` line (30 s at most).
for ((i = 0; i < 600; i++)); do
    awk '/^connected to / { c++ } c >= 2 && /^echo: / { n++ } END { exit !(n >= 3) }' \
        "$tmp/rc.out" && break
    kill -0 "$rc_pid" 2>/dev/null || break
    sleep 0.05
done
kill -TERM "$rc_pid" 2>/dev/null || true
wait_exit "$rc_pid" 20
# Prints `ECHOES NEXT LOST ORDERED`: the echo lines, one more than the last
# message number echoed, the sum of the `lost:` lines, and 1 if the echoes
# came in increasing order.
read -r echoes next lost ordered < <(awk '
    /^echo: message [0-9]+$/ { if ($3 + 0 <= last) bad = 1; last = $3 + 0; n++ }
    /^lost: [0-9]+ / { lost += $2 }
    BEGIN { last = -1 }
    END { print n + 0, last + 1, lost + 0, !bad }' "$tmp/rc.out")
out=$(cat "$tmp/rc.out")
if [[ $exit_status -eq 0 ]] && grep -q '^connected to 127.0.0.1:' "$tmp/rc.out" &&
    grep -q '^disconnected: connection closed by peer; retrying in ' "$tmp/rc.out" &&
    grep -q '^disconnected: connection refused; retrying in [0-9.]* s$' "$tmp/rc.out" &&
    [[ $(grep -c '^connected to ' "$tmp/rc.out") -eq 2 ]] &&
    grep -q '(1 reconnects)' "$tmp/rc.out" && grep -qx 'closed' "$tmp/rc.out" &&
    [[ $ordered -eq 1 && $echoes -ge 6 && $((next - echoes)) -eq $lost ]]; then
    pass "reconnecting_client survives a server restart: messages 0 to $((next - 1)) echoed in order but the $lost reported lost"
    sed 's/^/    /' "$tmp/rc.out" | grep -v '^    echo:' || true
else
    fail "reconnecting_client through a restart: status $exit_status, $echoes echoes in order ($ordered) up to message $((next - 1)), $lost reported lost:"
    printf '%s\n' "$out" | sed 's/^/    /' >&2
fi
kill_server TERM

start_bg giveup "$rc_bin" --connect "tcp://127.0.0.1:$port" --interval 50 --max-attempts 2 \
    --initial-backoff 300
wait_exit "$bg_pid" 20
if [[ $exit_status -eq 1 ]] && grep -q 'giving up after 2 attempts' "$tmp/giveup.out" &&
    grep -q '^undelivered (connection refused): message 0$' "$tmp/giveup.out"; then
    pass "reconnecting_client --max-attempts gives up and hands back what it held"
else
    fail "reconnecting_client --max-attempts: status $exit_status: $(cat "$tmp/giveup.out" "$tmp/giveup.err")"
fi

# A heartbeat-detected loss, without --verbose: the detail says why, and the
# messages written but never echoed are counted and pointed at the README.
th_start mute2 '^[0-9][0-9]*$' "$python" "$tmp/mute.py" || true
mute_pid=$bg_pid
mute_port=$bg_line
start_bg rchb "$rc_bin" --connect "tcp://127.0.0.1:$mute_port" --heartbeat 100 --interval 50 \
    --max-attempts 1
wait_exit "$bg_pid" 20
if grep -q '^disconnected: heartbeat timeout' "$tmp/rchb.out" &&
    grep -qE '^lost: [1-9][0-9]* messages? written to the connection got no echo and will not be resent \(see "Which messages can be lost" in README.md\)$' \
        "$tmp/rchb.out"; then
    pass "reconnecting_client reports a heartbeat loss and the messages lost:"
    grep -E '^(disconnected|lost):' "$tmp/rchb.out" | sed 's/^/    /'
else
    fail "reconnecting_client against a mute server: status $exit_status:"
    sed 's/^/    /' "$tmp/rchb.out" "$tmp/rchb.err" >&2
fi
kill -KILL "$mute_pid" 2>/dev/null || true
wait_exit "$mute_pid" 5

# Mutual TLS: a server that requires a client certificate, and the client
# flags shared with the other examples.
certs=$(cd "$(dirname "${BASH_SOURCE[0]}")/../../certs" && pwd)
if start_server mtls --listen tls://127.0.0.1:0 --cert "$certs/server.pem" \
    --key "$certs/server.key" --ca "$certs/ca.pem" --verify-client; then
    start_bg rctls "$rc_bin" --connect "tls://localhost:$server_port" --ca "$certs/ca.pem" \
        --cert "$certs/client.pem" --key "$certs/client.key" --interval 50 --count 3
    wait_exit "$bg_pid" 20
    if [[ $exit_status -eq 0 ]] && grep -qx 'echo: message 2' "$tmp/rctls.out"; then
        pass "reconnecting_client over mutual TLS (--cert/--key)"
    else
        fail "reconnecting_client over mutual TLS: status $exit_status:"
        sed 's/^/    /' "$tmp/rctls.out" "$tmp/rctls.err" >&2
    fi
    kill_server TERM
fi

# Usage errors are one line.
if "$rc_bin" --connect nope >/dev/null 2>"$tmp/bad.err"; then
    fail "reconnecting_client accepted a malformed URL"
elif grep -q "^error: invalid URL 'nope'" "$tmp/bad.err"; then
    pass "reconnecting_client names a malformed URL: $(cat "$tmp/bad.err")"
else
    fail "reconnecting_client with a malformed URL: $(cat "$tmp/bad.err")"
fi
"$rc_bin" --help | grep -q '^usage: reconnecting_client' && pass "reconnecting_client --help" ||
    fail "reconnecting_client --help"

th_end
