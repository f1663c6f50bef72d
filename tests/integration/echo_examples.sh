#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# End-to-end test of examples/echo_server and examples/echo_client.
#
#   bash tests/integration/echo_examples.sh ECHO_SERVER ECHO_CLIENT
#
# Starts servers on 127.0.0.1 port 0 (and on ::1 and Unix sockets), learns
# each real URL from the server's `listening on` line, and checks that the
# client gets `ok N` for every framing and a range of sizes, that failures
# come out as one line naming the cause (connection refused, invalid URL,
# a timeout, a message above the server's limit), and that the server stops
# with status 0 on SIGTERM and SIGINT, also with a connection open.
#
# Every wait is bounded and every background process is reaped by the EXIT
# trap. Exits 0 when every check passed; each failed check prints `FAIL:`.
# shellcheck disable=SC2317
set -euo pipefail

if [[ $# -ne 2 ]]; then
    echo "usage: $0 ECHO_SERVER ECHO_CLIENT" >&2
    exit 2
fi
server_bin=$1
client_bin=$2

# shellcheck source=tests/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/../lib.sh"
th_begin echo

# start_server NAME ARGS...: starts echo_server with ARGS, waits at most 10 s
# for its `listening on URL` line and sets server_pid and server_url. Output
# goes to $tmp/NAME.out and $tmp/NAME.err.
start_server() {
    local name=$1
    shift
    server_url=
    th_start "$name" '^listening on ' "$server_bin" "$@" || return 1
    server_pid=$bg_pid
    server_url=${bg_line#listening on }
}

# stop_server PID NAME [SIGNAL [EXPECTED]]: sends SIGNAL (default TERM;
# "none" when the caller has sent it already: a second signal makes the
# server exit at once) and expects a clean exit (status 0) within 10 s and
# nothing on stderr except lines containing the fixed string EXPECTED.
stop_server() {
    local pid=$1 name=$2 sig=${3:-TERM} expected=${4:-}
    local unexpected
    if [[ $sig != none ]]; then
        kill -"$sig" "$pid" 2>/dev/null || true
    fi
    wait_exit "$pid" 10
    [[ $sig != none ]] || sig=TERM
    if [[ $exit_status -eq 0 ]]; then
        pass "server $name exits 0 on SIG$sig"
    elif [[ $exit_status -eq 124 ]]; then
        fail "server $name did not exit within 10 s of SIG$sig"
    else
        fail "server $name exited with status $exit_status after SIG$sig"
    fi
    if [[ -n $expected ]]; then
        unexpected=$(grep -vF -- "$expected" "$tmp/$name.err" || true)
    else
        unexpected=$(cat "$tmp/$name.err")
    fi
    if [[ -n $unexpected ]]; then
        fail "server $name wrote to stderr:"
        printf '    %s\n' "$unexpected" >&2
    fi
}

# run_client OUT ARGS...: runs echo_client (bounded by `timeout`); stdout goes
# to $tmp/OUT.out, stderr to $tmp/OUT.err; sets client_status.
run_client() {
    local out=$1
    shift
    client_status=0
    timeout -k 5 120 "$client_bin" "$@" >"$tmp/$out.out" 2>"$tmp/$out.err" || client_status=$?
}

# expect_ok URL COUNT ARGS...: the client must print exactly `ok COUNT`.
expect_ok() {
    local url=$1 count=$2
    shift 2
    local desc="--count $count $*"
    run_client client --connect "$url" --count "$count" "$@"
    if [[ $client_status -eq 0 && $(cat "$tmp/client.out") == "ok $count" &&
        ! -s $tmp/client.err ]]; then
        pass "$url $desc"
    else
        fail "$url $desc: status $client_status, stdout '$(cat "$tmp/client.out")'," \
            "stderr '$(cat "$tmp/client.err")'"
    fi
}

# expect_error DESC PATTERN ARGS...: the client must fail (status 1) with a
# single stderr line that contains PATTERN, and print nothing on stdout.
expect_error() {
    local desc=$1 pattern=$2
    shift 2
    run_client client "$@"
    local lines
    lines=$(wc -l <"$tmp/client.err")
    if [[ $client_status -eq 1 && $lines -eq 1 && ! -s $tmp/client.out ]] &&
        grep -qF -- "$pattern" "$tmp/client.err"; then
        pass "$desc: $(cat "$tmp/client.err")"
    else
        fail "$desc: expected status 1 and one line containing '$pattern'; got status" \
            "$client_status, stdout '$(cat "$tmp/client.out")', stderr '$(cat "$tmp/client.err")'"
    fi
}

# ---- every framing, many sizes --------------------------------------------

for framing in len32 varint line; do
    start_server "$framing" --listen tcp://127.0.0.1:0 --framing "$framing" || continue
    pid=$server_pid
    url=$server_url
    if [[ $framing != line ]]; then
        expect_ok "$url" 10 --framing "$framing" --size 0
    fi
    for size in 1 64 127 128 300 16383 16384 65536 100000; do
        expect_ok "$url" 20 --framing "$framing" --size "$size"
    done
    expect_ok "$url" 3 --framing "$framing" --size 1048576
    expect_ok "$url" 1 --framing "$framing" # the defaults: one 64-byte message
    stop_server "$pid" "$framing"
done

# ---- many messages, several clients at once, and the limit ----------------

if start_server bulk --listen tcp://127.0.0.1:0 --max-msg 100000; then
    pid=$server_pid
    url=$server_url
    expect_ok "$url" 100000 --size 100

    declare -a cpids=()
    for i in 1 2 3 4; do
        timeout -k 5 120 "$client_bin" --connect "$url" --count 20000 --size $((i * 100)) \
            >"$tmp/par$i.out" 2>"$tmp/par$i.err" &
        cpids+=($!)
    done
    for i in 1 2 3 4; do
        status=0
        wait "${cpids[$((i - 1))]}" || status=$?
        if [[ $status -eq 0 && $(cat "$tmp/par$i.out") == "ok 20000" ]]; then
            pass "parallel client $i of 4"
        else
            fail "parallel client $i: status $status, $(cat "$tmp/par$i.out" "$tmp/par$i.err")"
        fi
    done

    # A message above the server's --max-msg: the server drops that client
    # and says why; the client names what happened.
    expect_error "message above the server's limit" "connection closed after 0 of 1 echoes" \
        --connect "$url" --size 100001
    # Give the server a moment to log the line (it is written when the
    # connection closes, which the client may notice first).
    for ((i = 0; i < 100; i++)); do
        grep -q 'peer announced' "$tmp/bulk.err" && break
        sleep 0.05
    done
    if grep -qF 'peer announced a 100001-byte message; the limit is 100000' "$tmp/bulk.err"; then
        pass "server names the oversized message: $(cat "$tmp/bulk.err")"
    else
        fail "server stderr does not name the oversized message: '$(cat "$tmp/bulk.err")'"
    fi
    expect_ok "$url" 100 --size 100000 # still serving
    stop_server "$pid" bulk TERM 'peer announced a 100001-byte message; the limit is 100000'
fi

# ---- Unix sockets ----------------------------------------------------------

sock=$tmp/echo.sock
if start_server unix --listen "unix://$sock"; then
    pid=$server_pid
    if [[ $server_url == "unix://$sock" ]]; then
        pass "unix listener reports $server_url"
    else
        fail "unix listener reports '$server_url', expected unix://$sock"
    fi
    expect_ok "unix://$sock" 1000 --size 1000
    expect_ok "unix://$sock" 2 --size 1048576
    stop_server "$pid" unix
    if [[ -e $sock ]]; then
        fail "the socket file $sock is still there after the server stopped"
    else
        pass "the server removed its socket file"
    fi
fi

abstract=tether-echo-test-$$-$RANDOM
if start_server abstract --listen "unix://@$abstract" --framing varint; then
    pid=$server_pid
    expect_ok "unix://@$abstract" 1000 --size 1000 --framing varint
    stop_server "$pid" abstract
fi

# ---- IPv6 loopback -----------------------------------------------------------

if [[ -r /proc/net/if_inet6 ]] && grep -q '^0\{31\}1 ' /proc/net/if_inet6; then
    if start_server ipv6 --listen 'tcp://[::1]:0'; then
        pid=$server_pid
        expect_ok "$server_url" 1000 --size 500
        stop_server "$pid" ipv6
    fi
else
    echo "SKIP: no IPv6 loopback address (::1) on this host; IPv6 case not run"
fi

# ---- failures the client must name -----------------------------------------

# A port nobody listens on: one that a server had and gave up.
if start_server refused --listen tcp://127.0.0.1:0; then
    dead_url=$server_url
    stop_server "$server_pid" refused
    expect_error "connect to a closed port" "connection refused" --connect "$dead_url"
    expect_error "connect to a closed port (exact text)" \
        "error: connect to $dead_url: connection refused" --connect "$dead_url"
fi

expect_error "URL without a port" "invalid URL" --connect tcp://127.0.0.1
expect_error "URL with an unknown scheme" "invalid URL" --connect bogus://127.0.0.1:1
expect_error "no --connect" "--connect URL is required" --count 1
expect_error "bad --count" "--count" --connect tcp://127.0.0.1:1 --count abc
expect_error "unknown option" "unknown option" --connect tcp://127.0.0.1:1 --frobnicate

status=0
"$server_bin" --listen tcp://127.0.0.1 >"$tmp/badurl.out" 2>"$tmp/badurl.err" || status=$?
if [[ $status -eq 1 ]] && grep -q 'invalid URL' "$tmp/badurl.err"; then
    pass "server with a malformed URL: $(cat "$tmp/badurl.err")"
else
    fail "server with a malformed URL: status $status, stderr '$(cat "$tmp/badurl.err")'"
fi

# A peer that accepts the connection but never answers (a Python listener
# that never calls accept): the client's --timeout must end the run with a
# message, well before ctest's timeout.
check_timeout() {
    local i silent_pid silent_port start
    python3 -c '
import socket, time
s = socket.socket()
s.bind(("127.0.0.1", 0))
s.listen(8)
print(s.getsockname()[1], flush=True)
time.sleep(30)
' >"$tmp/silent.out" 2>&1 &
    silent_pid=$!
    bg_pids+=("$silent_pid")
    for ((i = 0; i < 200; i++)); do
        [[ -s $tmp/silent.out ]] && break
        sleep 0.05
    done
    silent_port=$(head -n 1 "$tmp/silent.out")
    start=$SECONDS
    expect_error "a silent server" "timed out after 500 ms with 0 of 1 echoes" \
        --connect "tcp://127.0.0.1:$silent_port" --timeout 500
    if ((SECONDS - start <= 5)); then
        pass "the timeout fired promptly"
    else
        fail "--timeout 500 took $((SECONDS - start)) s"
    fi
    kill "$silent_pid" 2>/dev/null || true
    wait_exit "$silent_pid" 5
}
check_timeout # python3: ctest runs this script only where it exists

# ---- timeouts against slow and stuck clients --------------------------------
# --frame-timeout/--frame-min-rate and --write-timeout (scaled down): a
# client trickling a message at 5 bytes/s and one that never reads its
# echoes are both closed by the server, which keeps running and serving.

check_slow_clients() {
    local out
    out=$(timeout 60 python3 -c '
import socket, sys, time
port = int(sys.argv[1])
def closed(s, limit):
    """Reads (discarding) until EOF or a reset; False after limit seconds."""
    s.settimeout(0.2)
    end = time.time() + limit
    while time.time() < end:
        try:
            if s.recv(65536) == b"":
                return True
        except socket.timeout:
            pass
        except ConnectionResetError:
            return True
    return False
# A trickler: a 100-byte message, one byte every 200 ms.
t = socket.create_connection(("127.0.0.1", port))
msg = b"\x00\x00\x00\x64" + b"x" * 100
start = time.time()
t.settimeout(0.2)
gone = False
for b in msg:
    try:
        t.send(bytes([b]))
        if t.recv(1) == b"":
            gone = True
            break
    except socket.timeout:
        continue
    except (BrokenPipeError, ConnectionResetError):
        gone = True
        break
print("trickler closed after %.1f s" % (time.time() - start) if gone else "trickler NOT closed")
# A non-reader: 8 MiB of 1 MiB messages (more than the kernel buffers
# hold, so the echoes queue up in the server), and no reads for 3 s.
n = socket.socket()
n.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
n.connect(("127.0.0.1", port))
big = (1024 * 1024).to_bytes(4, "big") + b"y" * (1024 * 1024)
n.settimeout(2)
try:
    n.sendall(big * 8)
except OSError:
    pass  # the server stopped reading (it pauses while echoes do not fit)
time.sleep(3)
print("non-reader closed" if closed(n, 30) else "non-reader NOT closed")
' "$1" 2>&1) || true
    echo "$out"
}

if start_server slow --listen tcp://127.0.0.1:0 --frame-timeout 500 --frame-min-rate 100 \
    --write-timeout 500 --idle-timeout 0; then
    pid=$server_pid
    port=${server_url##*:}
    result=$(check_slow_clients "$port")
    if grep -q '^trickler closed after' <<<"$result"; then
        pass "--frame-timeout/--frame-min-rate closed a trickling client: $(head -n 1 <<<"$result")"
    else
        fail "a trickling client was not closed: $result"
    fi
    if grep -q '^non-reader closed$' <<<"$result"; then
        pass "--write-timeout closed a client that never reads"
    else
        fail "a client that never reads was not closed: $result"
    fi
    expect_ok "$server_url" 10
    stop_server "$pid" slow TERM "timeout: "
fi
run_server_error() {
    local desc=$1 pattern=$2 status
    shift 2
    status=0
    timeout 10 "$server_bin" "$@" >"$tmp/srverr.out" 2>"$tmp/srverr.err" || status=$?
    if [[ $status -eq 1 ]] && grep -qF -- "$pattern" "$tmp/srverr.err"; then
        pass "$desc: $(cat "$tmp/srverr.err")"
    else
        fail "$desc: expected status 1 and '$pattern'; got $status, '$(cat "$tmp/srverr.err")'"
    fi
}
run_server_error "a bad --write-timeout" "error: --write-timeout: invalid value '-5'" \
    --listen tcp://127.0.0.1:0 --write-timeout -5
run_server_error "--idle-timeout below twice --heartbeat" \
    "--idle-timeout (4000) must be at least twice --heartbeat (5000)" \
    --listen tcp://127.0.0.1:0 --heartbeat 5000 --idle-timeout 4000

# ---- a plain client pointed at a TLS port -----------------------------------

certs=$(cd "$(dirname "${BASH_SOURCE[0]}")/../../certs" && pwd)
if start_server tlsport --listen tls://127.0.0.1:0 --cert "$certs/server.pem" \
    --key "$certs/server.key"; then
    expect_error "tcp:// to a TLS echo_server suggests tls://" \
        "if it speaks TLS, dial tls://${server_url#tls://}" \
        --connect "tcp://${server_url#tls://}" --count 1
    stop_server "$server_pid" tlsport TERM 'handshake'
fi
if command -v openssl >/dev/null &&
    th_start s_server '^ACCEPT ' openssl s_server -accept 127.0.0.1:0 -naccept 1 \
        -cert "$certs/server.pem" -key "$certs/server.key"; then
    port=${bg_line##*:}
    expect_error "tcp:// to openssl s_server suggests tls://" \
        "if it speaks TLS, dial tls://127.0.0.1:$port" \
        --connect "tcp://127.0.0.1:$port" --count 1
    kill "$bg_pid" 2>/dev/null || true
    wait_exit "$bg_pid" 5
fi

# ---- --max-conns and --mem-limit -------------------------------------------

if start_server limits --listen tcp://127.0.0.1:0 --max-conns 1 --mem-limit 64M; then
    pid=$server_pid
    port=${server_url##*:}
    # One client holds the only place (its echo proves it was accepted).
    exec 3<>"/dev/tcp/127.0.0.1/$port"
    printf '\x00\x00\x00\x01x' >&3
    # All 5 bytes of the echo: unread input would make our close a reset.
    timeout 10 head -c 5 <&3 >/dev/null || true
    # The next is closed at once, and the server says why, once.
    run_client client --connect "$server_url" --count 3
    if [[ $client_status -eq 1 ]] && grep -qF 'closed' "$tmp/client.err"; then
        pass "--max-conns 1: a second client is closed: $(cat "$tmp/client.err")"
    else
        fail "--max-conns 1: second client: status $client_status, $(cat "$tmp/client.err")"
    fi
    run_client client --connect "$server_url" --count 3
    n=$(grep -c 'at the limit of 1 connections' "$tmp/limits.err" || true)
    check "--max-conns 1: reported once for two rejected clients ($n)" test "$n" -eq 1
    exec 3<&-
    # The place is free again.
    sleep 0.2
    expect_ok "$server_url" 10 --size 100000
    stop_server "$pid" limits TERM 'at the limit of 1 connections'
fi

# ---- shutdown with a connection open, and SIGINT ---------------------------

if start_server idle --listen tcp://127.0.0.1:0; then
    pid=$server_pid
    port=${server_url##*:}
    # An idle client connection held by this shell: the server must close
    # it (we read EOF) and still exit 0.
    exec 3<>"/dev/tcp/127.0.0.1/$port"
    # One echoed message proves the server has accepted the connection
    # (a connection still in the listen backlog would be reset instead).
    printf '\x00\x00\x00\x01x' >&3
    read -r -d '' -t 10 -u 3 _ || true # up to the echo's first (NUL) byte
    kill -TERM "$pid"
    status=0
    read -r -t 10 -u 3 _ || status=$?
    if [[ $status -eq 1 ]]; then
        pass "the server closed an idle connection on SIGTERM"
    elif [[ $status -gt 128 ]]; then
        fail "the server did not close an idle connection within 10 s of SIGTERM"
    else
        fail "the server sent data to an idle connection"
    fi
    exec 3<&-
    stop_server "$pid" idle none
fi

# ---- WebSocket: ws:// and wss:// -------------------------------------------

certs=$(cd "$(dirname "${BASH_SOURCE[0]}")/../../certs" && pwd)
if start_server ws --listen ws://127.0.0.1:0/echo; then
    pid=$server_pid
    url=$server_url
    check "the ws:// server names its path in 'listening on'" \
        test "${url%/echo}" != "$url"
    for size in 0 1 125 126 65536 1048576; do
        expect_ok "$url" 3 --size "$size"
        expect_ok "$url" 3 --size "$size" --text
    done
    expect_ok "$url" 2000 --size 64 --text
    expect_error "ws:// to another path" "refused the WebSocket upgrade: HTTP/1.1 404" \
        --connect "${url%/echo}/other" --count 1
    expect_error "--text with tcp://" "--text needs a ws:// or wss:// URL" \
        --connect "tcp://127.0.0.1:1" --count 1 --text
    stop_server "$pid" ws TERM "request for path /other"
fi
if start_server wss --listen wss://127.0.0.1:0 --cert "$certs/server.pem" \
    --key "$certs/server.key"; then
    pid=$server_pid
    port=${server_url##*:}
    expect_ok "wss://localhost:$port/any" 50 --size 1000 --text --ca "$certs/ca.pem"
    expect_ok "wss://localhost:$port/any" 5 --size 3000000 --ca "$certs/ca.pem"
    stop_server "$pid" wss
fi

if start_server sigint --listen tcp://127.0.0.1:0; then
    pid=$server_pid
    expect_ok "$server_url" 10
    stop_server "$pid" sigint INT
fi

# ---- --threads: a loop group -------------------------------------------------

for listen in tcp://127.0.0.1:0 "unix://$tmp/threads.sock"; do
    if start_server threads --listen "$listen" --threads 3; then
        pid=$server_pid
        url=$server_url
        declare -a tpids=()
        for i in 1 2 3 4 5 6; do
            timeout -k 5 120 "$client_bin" --connect "$url" --count 2000 --size $((i * 50)) \
                >"$tmp/thr$i.out" 2>"$tmp/thr$i.err" &
            tpids+=($!)
        done
        for i in 1 2 3 4 5 6; do
            status=0
            wait "${tpids[$((i - 1))]}" || status=$?
            if [[ $status -eq 0 && $(cat "$tmp/thr$i.out") == "ok 2000" ]]; then
                pass "--threads 3 on $url: client $i of 6"
            else
                fail "--threads 3 on $url: client $i: status $status," \
                    "$(cat "$tmp/thr$i.out" "$tmp/thr$i.err")"
            fi
        done
        stop_server "$pid" threads
    fi
done

if start_server threads_idle --listen tcp://127.0.0.1:0 --threads 2; then
    pid=$server_pid
    port=${server_url##*:}
    # As above: an accepted idle connection is closed by the group's
    # graceful stop, and the server still exits 0.
    exec 3<>"/dev/tcp/127.0.0.1/$port"
    printf '\x00\x00\x00\x01x' >&3
    read -r -d '' -t 10 -u 3 _ || true
    kill -TERM "$pid"
    status=0
    read -r -t 10 -u 3 _ || status=$?
    if [[ $status -eq 1 ]]; then
        pass "--threads 2: the server closed an idle connection on SIGTERM"
    else
        fail "--threads 2: the idle connection was not closed within 10 s of SIGTERM ($status)"
    fi
    exec 3<&-
    stop_server "$pid" threads_idle none
fi

th_end
