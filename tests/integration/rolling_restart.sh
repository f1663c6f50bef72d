#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# Rolling restart without loss (issue #13): three echo servers behind the
# real HAProxy (Debian's haproxy, TCP mode, round robin, redispatch), 50
# reconnecting clients (tests/rolling_client.c) streaming numbered
# messages. Each server in turn gets SIGTERM: with --drain-on-signal it
# stops accepting and asks every client to drain (GOAWAY); the clients
# dial a new connection through HAProxy (to another server) before the
# old one closes, and the old one delivers every echo still due. The
# server exits once its clients are gone and is started again on the same
# port while traffic flows. At the end every message that
# tether_client_send() accepted must have come back: the client prints
# `lost 0` and the count.
#
#   bash tests/integration/rolling_restart.sh ECHO_SERVER ROLLING_CLIENT [THREADS]
#
# With THREADS, every server is a loop group (--threads THREADS) whose
# drain on SIGTERM is tether_loop_group_shutdown(): every loop drains its
# own connections; --verbose logs the loop of each accepted connection, and
# the test checks that every loop of the first servers got connections.
#
# HAProxy runs in the foreground (-db) with a generated configuration on
# loopback ports and is killed and reaped at the end, as every process.
# shellcheck disable=SC2317,SC2154 # tmp, bg_*: tests/lib.sh
set -euo pipefail

if [[ $# -ne 2 && $# -ne 3 ]]; then
    echo "usage: $0 ECHO_SERVER ROLLING_CLIENT [THREADS]" >&2
    exit 2
fi
server_bin=$1
client_bin=$2
threads=${3:-}
server_args=()
if [[ -n $threads ]]; then
    server_args=(--threads "$threads" --verbose)
fi
haproxy_bin=${HAPROXY:-/usr/sbin/haproxy}
clients=50
interval_ms=5

# shellcheck source=tests/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/../lib.sh"
th_begin rolling

# free_ports N: prints N loopback ports nobody listens on right now.
free_ports() {
    python3 - "$1" <<'EOF'
import socket, sys
socks = []
for _ in range(int(sys.argv[1])):
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    socks.append(s)
print(" ".join(str(s.getsockname()[1]) for s in socks))
EOF
}

read -r p1 p2 p3 fe <<<"$(free_ports 4)"
declare -A port=([s1]=$p1 [s2]=$p2 [s3]=$p3)
declare -A pid=()

# start_server NAME LOGNAME: an echo server on its fixed port.
start_server() {
    th_start "$2" '^listening on ' "$server_bin" --listen "tcp://127.0.0.1:${port[$1]}" \
        --drain-on-signal --drain-timeout 10000 ${server_args[@]+"${server_args[@]}"} || return 1
    pid[$1]=$bg_pid
}

for s in s1 s2 s3; do
    start_server "$s" "$s" || {
        th_end
        exit 1
    }
done

cat >"$tmp/haproxy.cfg" <<EOF
global
    stats socket $tmp/haproxy.sock level admin

defaults
    mode tcp
    timeout connect 2s
    timeout client 60s
    timeout server 60s
    retries 3
    option redispatch

frontend fe
    bind 127.0.0.1:$fe
    default_backend be
backend be
    balance roundrobin
    server s1 127.0.0.1:$p1 check inter 200ms fall 1 rise 1
    server s2 127.0.0.1:$p2 check inter 200ms fall 1 rise 1
    server s3 127.0.0.1:$p3 check inter 200ms fall 1 rise 1
EOF

th_start_haproxy "$haproxy_bin"
ready=0
for ((i = 0; i < 200; i++)); do
    if python3 -c "import socket,sys; socket.create_connection(('127.0.0.1', $fe), 1).close()" \
        2>/dev/null; then
        ready=1
        break
    fi
    kill -0 "$haproxy_pid" 2>/dev/null || break
    sleep 0.05
done
if [[ $ready -ne 1 ]]; then
    fail "haproxy did not start; stderr:"
    sed 's/^/    /' "$tmp/haproxy.err" >&2
    th_end
    exit 1
fi
pass "haproxy runs in front of three echo servers (--drain-on-signal${threads:+ --threads $threads})"

if ! th_start client '^running' "$client_bin" "tcp://127.0.0.1:$fe" "$clients" "$interval_ms"; then
    th_end
    exit 1
fi
client_pid=$bg_pid
pass "$clients reconnecting clients are streaming through haproxy"
sleep 1.5

# Each server in turn, as a rolling restart behind a load balancer is
# done: out of HAProxy's rotation first (admin state DRAIN: no new
# connections, the established ones go on), then SIGTERM; wait for it to
# exit, start it again and put it back (READY). Without the first step,
# HAProxy keeps opening connections to the server until its health check
# fails, and one that the kernel completes on a listening socket in the
# moment before it is closed is reset with the client's first messages
# already forwarded. tether's drain does not close that window (the
# kernel's tcp_migrate_req does, for a socket group that lives on, and a
# filter that drops new SYNs on the closing socket might).
# set_state SERVER STATE: HAProxy answers a command it took with nothing.
set_state() {
    local out
    if ! out=$(haproxy_cmd "set server be/$1 state $2" 2>&1) || [[ -n ${out//[[:space:]]/} ]]; then
        fail "haproxy: set server be/$1 state $2: ${out:-no answer}"
    fi
}
for s in s1 s2 s3; do
    set_state "$s" drain
    kill -TERM "${pid[$s]}"
    wait_exit "${pid[$s]}" 30
    check "$s drained and exited with status 0 (got $exit_status)" test "$exit_status" -eq 0
    expect_line "$tmp/$s.out" "drained" "$s reports its clients drained" 1
    if grep -q "deadline passed" "$tmp/$s.out"; then
        fail "$s had to close clients at the drain deadline"
    fi
    for ((i = 0; i < ${threads:-0}; i++)); do
        n=$(grep -c "^echo_server (loop $i): accepted " "$tmp/$s.out" || true)
        check "$s: loop $i of $threads accepted connections ($n)" test "$n" -gt 0
    done
    start_server "$s" "$s-restarted" || break
    set_state "$s" ready
    pass "$s restarted on port ${port[$s]} while traffic flows"
    sleep 1.5
done

# Stop sending; the client waits (at most 30 s) for every echo.
kill -TERM "$client_pid"
wait_exit "$client_pid" 45
summary=$(grep -m 1 '^sent ' "$tmp/client.out" || true)
echo "rolling restart: ${summary:-no summary}"
grep '^lost ' "$tmp/client.out" || true
check "every message tether_client_send() accepted came back (client exit $exit_status)" \
    grep -qx 'lost 0' "$tmp/client.out"
check "the client exited with status 0 (got $exit_status)" test "$exit_status" -eq 0
drains=$(sed -n 's/.* drains \([0-9]*\)$/\1/p' <<<"$summary")
check "the clients moved to new connections on GOAWAY ($drains drains)" test "${drains:-0}" -gt 0
if [[ -s $tmp/client.err ]]; then
    echo "client stderr:" >&2
    sed 's/^/    /' "$tmp/client.err" | head -n 20 >&2
fi
th_end
