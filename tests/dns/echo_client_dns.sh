#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# echo_client's --dns-server and --connect-timeout, end to end.
#
#   bash tests/dns/echo_client_dns.sh ECHO_SERVER ECHO_CLIENT
#
# Starts dnsmasq on a free loopback port with a configuration written here
# (echo.test has ::1 and 127.0.0.1, moved.test comes from a hosts file that
# is rewritten halfway, nx.test does not exist), an echo server on
# 127.0.0.1, and checks that the client resolves through --dns-server only,
# that a moved name is found by the next run, and that DNS and connect
# failures come out as one line naming the cause, within the deadline
# given by --connect-timeout. SRV records (_echo._tcp.test) send
# tcp+srv:// URLs to a second echo server, on a port picked beforehand.
#
# Every wait is bounded; the EXIT trap kills and reaps every background
# process. Exits 0 when every check passed; each failed check prints FAIL.
# shellcheck disable=SC2317
set -euo pipefail

if [[ $# -ne 2 ]]; then
    echo "usage: $0 ECHO_SERVER ECHO_CLIENT" >&2
    exit 2
fi
server_bin=$1
client_bin=$2
dnsmasq_bin=/usr/sbin/dnsmasq

if [[ ! -x $dnsmasq_bin ]]; then
    echo "FAIL: $dnsmasq_bin not found: install the Debian package dnsmasq-base" \
        "(bash tests/run-all.sh installs it through tests/deps.sh)"
    exit 1
fi

# shellcheck source=tests/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/../lib.sh"
th_begin dns
chmod 755 "$tmp" # dnsmasq re-reads the hosts file as "nobody"

# The EXIT trap: SIGTERM first, so dnsmasq ends on its own.
cleanup() {
    local pid
    for pid in "${bg_pids[@]}"; do
        kill -TERM "$pid" 2>/dev/null || true
    done
    for pid in "${bg_pids[@]}"; do
        # dnsmasq and echo_server stop at once on SIGTERM; bounded anyway.
        for _ in $(seq 50); do
            kill -0 "$pid" 2>/dev/null || break
            sleep 0.1
        done
    done
    th_cleanup
}
trap cleanup EXIT

now_ms() {
    date +%s%3N
}

# Runs the client with a hard limit; sets out, err and status.
run_client() {
    set +e
    out=$(timeout 20 "$client_bin" "$@" 2>"$tmp/client.err")
    status=$?
    set -e
    err=$(cat "$tmp/client.err")
}

# A UDP answer from dnsmasq for an A query, as "1.2.3.4" lines; empty if none.
dns_a() {
    python3 - "$1" "$2" <<'EOF'
import socket, struct, sys
port, name = int(sys.argv[1]), sys.argv[2]
q = struct.pack(">HHHHHH", 0x1234, 0x0100, 1, 0, 0, 0)
for label in name.split("."):
    q += bytes([len(label)]) + label.encode()
q += b"\0" + struct.pack(">HH", 1, 1)
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.settimeout(0.2)
try:
    s.sendto(q, ("127.0.0.1", port))
    r = s.recv(1500)
except OSError:
    sys.exit(0)
an = struct.unpack(">H", r[6:8])[0]
o = 12
while r[o] != 0:
    o += 1 + r[o]
o += 5
for _ in range(an):
    while r[o] != 0 and (r[o] & 0xC0) != 0xC0:
        o += 1 + r[o]
    o += 2 if (r[o] & 0xC0) == 0xC0 else 1
    typ, _, _, rdlen = struct.unpack(">HHIH", r[o:o + 10])
    o += 10
    if typ == 1 and rdlen == 4:
        print(".".join(str(b) for b in r[o:o + 4]))
    o += rdlen
EOF
}

# ---- dnsmasq on a free port ----------------------------------------------------

echo "127.0.0.1 moved.test" >"$tmp/hosts"
chmod 644 "$tmp/hosts"
# The SRV records need the second echo server's port before it runs: a port
# free now, which echo_server binds below (a refusal there fails loudly).
free_tcp_port() {
    python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}
srv_echo_port=$(free_tcp_port)
dns_port=
for _ in $(seq 10); do
    port=$(python3 -c 'import socket
u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); u.bind(("127.0.0.1", 0))
p = u.getsockname()[1]
t = socket.socket(); t.bind(("127.0.0.1", p)); print(p)' 2>/dev/null) || continue
    cat >"$tmp/dnsmasq.conf" <<EOF
port=$port
listen-address=127.0.0.1
bind-interfaces
no-resolv
no-hosts
local=/test/
addn-hosts=$tmp/hosts
host-record=echo.test,127.0.0.1,::1
srv-host=_echo._tcp.test,echo.test,$srv_echo_port,1,1
log-facility=-
EOF
    "$dnsmasq_bin" --no-daemon --pid-file= --conf-file="$tmp/dnsmasq.conf" \
        >"$tmp/dnsmasq.log" 2>&1 &
    dns_pid=$!
    for _ in $(seq 50); do
        if [[ -n $(dns_a "$port" echo.test) ]]; then
            dns_port=$port
            break
        fi
        kill -0 "$dns_pid" 2>/dev/null || break
        sleep 0.1
    done
    if [[ -n $dns_port ]]; then
        bg_pids+=("$dns_pid")
        break
    fi
    kill -KILL "$dns_pid" 2>/dev/null || true
    wait "$dns_pid" 2>/dev/null || true
done
if [[ -z $dns_port ]]; then
    echo "FAIL: dnsmasq did not start; its log:"
    cat "$tmp/dnsmasq.log"
    exit 1
fi

# ---- an echo server on 127.0.0.1 -------------------------------------------------

th_start server '^listening on tcp://127\.0\.0\.1:[0-9]*$' \
    "$server_bin" --listen tcp://127.0.0.1:0 || exit 1
srv_port=${bg_line##*:}

# ---- checks --------------------------------------------------------------------

dns=127.0.0.1:$dns_port

run_client --connect "tcp://echo.test:$srv_port" --dns-server "$dns" --count 5
if [[ $status -eq 0 && $out == "ok 5" ]]; then
    pass "a name through --dns-server ($out)"
else
    fail "a name through --dns-server: status $status, stdout '$out', stderr '$err'"
fi

run_client --connect "tcp://nx.test:$srv_port" --dns-server "$dns"
want="error: connect to tcp://nx.test:$srv_port failed: host nx.test not found"
if [[ $status -eq 1 && $err == "$want" ]]; then
    pass "NXDOMAIN: $err"
else
    fail "NXDOMAIN: status $status, stderr '$err' (want '$want')"
fi

# Both addresses of echo.test refused, listed in the order tried.
closed_port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
run_client --connect "tcp://echo.test:$closed_port" --dns-server "$dns"
want="error: connect to tcp://echo.test:$closed_port failed: 2 addresses tried: [::1]:$closed_port refused; 127.0.0.1:$closed_port refused"
if [[ $status -eq 1 && $err == "$want" ]]; then
    pass "every address refused: $err"
else
    fail "every address refused: status $status, stderr '$err' (want '$want')"
fi

# A DNS server that never answers: --connect-timeout ends it, in time.
# The sink binds first and then prints its port, so once the port is known
# the socket exists: no window in which the query would meet a closed port
# (an ICMP "port unreachable" ends the lookup at once).
python3 -c 'import socket, time
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.bind(("127.0.0.1", 0))
print(s.getsockname()[1], flush=True)
time.sleep(60)' >"$tmp/sink.port" &
bg_pids+=("$!")
for _ in $(seq 200); do
    [[ -s $tmp/sink.port ]] && break
    sleep 0.05
done
sink_port=$(cat "$tmp/sink.port")
t0=$(now_ms)
run_client --connect "tcp://echo.test:$srv_port" --dns-server "127.0.0.1:$sink_port" \
    --connect-timeout 400
took=$(($(now_ms) - t0))
want="error: connect to tcp://echo.test:$srv_port failed: resolving echo.test timed out after 400 ms (connect timeout)"
if [[ $status -eq 1 && $err == "$want" && $took -lt 3000 ]]; then
    pass "--connect-timeout bounds resolution (${took} ms): $err"
else
    fail "--connect-timeout 400 with a silent DNS server: status $status after ${took} ms, stderr '$err' (want '$want')"
fi

run_client --connect "tcp://echo.test:$srv_port" --dns-server not-an-ip
if [[ $status -eq 1 && $err == "error: --dns-server: invalid value 'not-an-ip'"* ]]; then
    pass "bad --dns-server: $err"
else
    fail "bad --dns-server: status $status, stderr '$err'"
fi

run_client --connect "tcp://echo.test:$srv_port" --connect-timeout -5
if [[ $status -eq 1 && $err == "error: --connect-timeout: invalid value '-5' (expected milliseconds, at least 1)" ]]; then
    pass "bad --connect-timeout: $err"
else
    fail "bad --connect-timeout: status $status, stderr '$err'"
fi

# A moved service is found by the next connection: moved.test goes from
# 127.0.0.1 (the echo server) to 127.0.0.2 (nothing there).
run_client --connect "tcp://moved.test:$srv_port" --dns-server "$dns"
if [[ $status -eq 0 && $out == "ok 1" ]]; then
    pass "moved.test before the move"
else
    fail "moved.test before the move: status $status, stdout '$out', stderr '$err'"
fi
echo "127.0.0.2 moved.test" >"$tmp/hosts"
kill -HUP "${bg_pids[0]}"
moved=
for _ in $(seq 50); do
    if [[ $(dns_a "$dns_port" moved.test) == 127.0.0.2 ]]; then
        moved=1
        break
    fi
    sleep 0.1
done
run_client --connect "tcp://moved.test:$srv_port" --dns-server "$dns"
want="error: connect to tcp://moved.test:$srv_port failed: 1 address tried: 127.0.0.2:$srv_port refused"
if [[ -n $moved && $status -eq 1 && $err == "$want" ]]; then
    pass "moved.test after the move: $err"
else
    fail "moved.test after the move (dnsmasq reloaded: ${moved:-no}): status $status, stderr '$err' (want '$want')"
fi

# ---- DNS SRV: tcp+srv:// ----------------------------------------------------------

if th_start server2 '^listening on tcp://127\.0\.0\.1:[0-9]*$' \
    "$server_bin" --listen "tcp://127.0.0.1:$srv_echo_port"; then
    run_client --connect tcp+srv://_echo._tcp.test --dns-server "$dns" --count 3
    if [[ $status -eq 0 && $out == "ok 3" ]]; then
        pass "tcp+srv:// through --dns-server ($out)"
    else
        fail "tcp+srv://: status $status, stdout '$out', stderr '$err'"
    fi
fi

run_client --connect tcp+srv://_nx._tcp.test --dns-server "$dns"
want="error: connect to tcp+srv://_nx._tcp.test failed: no SRV records for _nx._tcp.test (the name does not exist)"
if [[ $status -eq 1 && $err == "$want" ]]; then
    pass "no SRV records: $err"
else
    fail "no SRV records: status $status, stderr '$err' (want '$want')"
fi

run_client --connect tcp+srv://_echo._tcp.test:7 --dns-server "$dns"
if [[ $status -eq 1 && $err == *"an SRV URL takes no port"* ]]; then
    pass "SRV URL with a port: $err"
else
    fail "SRV URL with a port: status $status, stderr '$err'"
fi

th_end
