#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# tether servers behind the real HAProxy (Debian's haproxy, TCP mode),
# which sends them the PROXY protocol:
# - `send-proxy` (v1) and `send-proxy-v2` (with a CRC32C TLV, round robin
#   over two servers): clients bound to 127.0.0.7 and 127.0.0.8 connect
#   through HAProxy, get their echoes, and each echo_server --verbose
#   reports the client's own address and port, not HAProxy's;
# - HAProxy's v2 health checks (`check` with send-proxy-v2 sends LOCAL)
#   are accepted as LOCAL connections, and HAProxy sees the servers UP;
# - a backend without send-proxy reaches a listener that requires the
#   header: the client gets no echo and the server names the cause;
# - TLS passthrough with `send-proxy-v2-ssl` to a tls:// listener: the
#   header comes first, then the TLS handshake with the real client;
# - tether as the sender: echo_client --send-proxy v1 and v2 to a HAProxy
#   `accept-proxy` frontend, which relays the announced client (v2) to an
#   echo server that reports it.
#
#   bash tests/integration/haproxy.sh ECHO_SERVER ECHO_CLIENT CERTS_DIR
#
# HAProxy runs in the foreground (-db) with a generated configuration on
# loopback ports and is killed and reaped at the end, as every server.
# shellcheck disable=SC2317,SC2154 # tmp, bg_*: tests/lib.sh; port_*: start_echo
set -euo pipefail

if [[ $# -ne 3 ]]; then
    echo "usage: $0 ECHO_SERVER ECHO_CLIENT CERTS_DIR" >&2
    exit 2
fi
server_bin=$1
client_bin=$2
certs=$3
haproxy_bin=${HAPROXY:-/usr/sbin/haproxy}

# shellcheck source=tests/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/../lib.sh"
th_begin haproxy

# A client in Python's standard library: binds to a chosen source address,
# sends one len32 frame (over TLS with --tls), and prints
# `echo ok SRC_IP:SRC_PORT` when the same bytes come back, or
# `no echo SRC_IP:SRC_PORT: REASON`.
cat >"$tmp/client.py" <<'EOF'
import socket, ssl, struct, sys

host, port, src, msg = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4].encode()
tls_ca = sys.argv[5] if len(sys.argv) > 5 else None
s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
s.settimeout(10)
s.bind((src, 0))
s.connect((host, port))
me = "%s:%d" % s.getsockname()
try:
    if tls_ca:
        ctx = ssl.create_default_context(cafile=tls_ca)
        s = ctx.wrap_socket(s, server_hostname="localhost")
    s.sendall(struct.pack(">I", len(msg)) + msg)
    got = b""
    while len(got) < 4 + len(msg):
        chunk = s.recv(4096)
        if not chunk:
            break
        got += chunk
    if got == struct.pack(">I", len(msg)) + msg:
        print("echo ok " + me)
    else:
        print("no echo %s: got %r" % (me, got[:32]))
except (OSError, ssl.SSLError) as e:
    print("no echo %s: %s" % (me, e))
EOF

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

# start_echo NAME ARGS...: sets port_of_NAME and pid_of_NAME.
start_echo() {
    local name=$1
    shift
    th_start "$name" '^listening on ' "$server_bin" --verbose "$@" || return 1
    printf -v "pid_$name" '%s' "$bg_pid"
    printf -v "port_$name" '%s' "${bg_line##*:}"
}

start_echo s1 --listen tcp://127.0.0.1:0 --proxy-protocol
start_echo s2 --listen tcp://127.0.0.1:0 --proxy-protocol
start_echo s3 --listen tls://127.0.0.1:0 --proxy-protocol \
    --cert "$certs/server.pem" --key "$certs/server.key"
read -r fe_v1 fe_v2 fe_plain fe_tls fe_accept <<<"$(free_ports 5)"

cat >"$tmp/haproxy.cfg" <<EOF
global
    stats socket $tmp/haproxy.sock level admin

defaults
    mode tcp
    timeout connect 5s
    timeout client 30s
    timeout server 30s

frontend fe_v1
    bind 127.0.0.1:$fe_v1
    default_backend be_v1
backend be_v1
    server s1 127.0.0.1:$port_s1 send-proxy

frontend fe_v2
    bind 127.0.0.1:$fe_v2
    default_backend be_v2
backend be_v2
    balance roundrobin
    server s1 127.0.0.1:$port_s1 send-proxy-v2 proxy-v2-options crc32c,unique-id check inter 300ms
    server s2 127.0.0.1:$port_s2 send-proxy-v2 proxy-v2-options crc32c,unique-id check inter 300ms

frontend fe_plain
    bind 127.0.0.1:$fe_plain
    default_backend be_plain
backend be_plain
    server s1 127.0.0.1:$port_s1

frontend fe_tls
    bind 127.0.0.1:$fe_tls
    default_backend be_tls
backend be_tls
    server s3 127.0.0.1:$port_s3 send-proxy-v2-ssl

frontend fe_accept
    bind 127.0.0.1:$fe_accept accept-proxy
    default_backend be_relay
backend be_relay
    server s2 127.0.0.1:$port_s2 send-proxy-v2
EOF

th_start_haproxy "$haproxy_bin"

ready=0
for ((i = 0; i < 200; i++)); do
    if [[ -S $tmp/haproxy.sock ]] && haproxy_cmd "show info" >/dev/null 2>&1; then
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
pass "haproxy $("$haproxy_bin" -v | head -n 1 | awk '{print $3}') runs in front of three echo servers"

# client PORT SRC MSG [CA]: runs the client; sets reply and client_addr.
client() {
    reply=$(timeout -k 5 20 python3 "$tmp/client.py" 127.0.0.1 "$@" 2>&1 || true)
    client_addr=${reply##* }
    client_addr=${client_addr%:}
}

# ---- send-proxy (v1) --------------------------------------------------------
client "$fe_v1" 127.0.0.7 hello-v1
if [[ $reply == "echo ok 127.0.0.7:"* ]]; then
    pass "a client from 127.0.0.7 gets its echo through send-proxy (v1)"
    expect_line "$tmp/s1.out" "accepted $client_addr via 127.0.0.1:" \
        "the server reports the client's own address $client_addr, from PROXY v1"
    check "... and says it came in a v1 header" \
        grep -qE "accepted $client_addr via 127\.0\.0\.1:[0-9]+ \(PROXY v1\)" "$tmp/s1.out"

else
    fail "client through send-proxy: $reply"
fi

# ---- send-proxy-v2, two servers, CRC32C -------------------------------------
seen_s1=0
seen_s2=0
for n in 1 2 3 4; do
    src=127.0.0.$((6 + n % 2 + 1))
    client "$fe_v2" "$src" "hello-v2-$n"
    if [[ $reply != "echo ok $src:"* ]]; then
        fail "client $n from $src through send-proxy-v2: $reply"
        continue
    fi
    if wait_line "$tmp/s1.out" "accepted $client_addr via" 2; then
        grep -F "accepted $client_addr via" "$tmp/s1.out" | grep -qF "(PROXY v2)" && seen_s1=$((seen_s1 + 1))
    elif wait_line "$tmp/s2.out" "accepted $client_addr via" 2; then
        grep -F "accepted $client_addr via" "$tmp/s2.out" | grep -qF "(PROXY v2)" && seen_s2=$((seen_s2 + 1))
    else
        fail "no server reported client $client_addr (PROXY v2)"
    fi
done
if [[ $seen_s1 -ge 1 && $seen_s2 -ge 1 && $((seen_s1 + seen_s2)) -eq 4 ]]; then
    pass "send-proxy-v2 with CRC32C: 4 clients from 127.0.0.7/.8 echoed, each server reported its clients' real addresses ($seen_s1 + $seen_s2)"
else
    fail "send-proxy-v2: servers reported $seen_s1 + $seen_s2 of 4 clients by their real address"
fi

# ---- v2 LOCAL health checks -------------------------------------------------
expect_line "$tmp/s1.out" "(PROXY v2 LOCAL" "server 1 accepts HAProxy's v2 LOCAL health checks"
expect_line "$tmp/s2.out" "(PROXY v2 LOCAL" "server 2 accepts HAProxy's v2 LOCAL health checks"
sleep 1 # a few more check rounds (inter 300ms)
stat=$(haproxy_cmd "show stat" 2>&1 || true)
up=$(awk -F, '$1 == "be_v2" && ($2 == "s1" || $2 == "s2") && $18 == "UP"' <<<"$stat" | wc -l)
if [[ $up -eq 2 ]]; then
    pass "HAProxy's checks keep both servers UP"
else
    fail "HAProxy does not see both servers UP:"
    awk -F, '$1 == "be_v2" {print "    " $1 "/" $2 ": " $18 " " $37}' <<<"$stat" >&2
fi
# (HAProxy ends each check with a reset; echo_server does not report those.)
check "the health checks left nothing on server 2's stderr" \
    test ! -s "$tmp/s2.err"

# ---- no header: refused ------------------------------------------------------
client "$fe_plain" 127.0.0.7 no-header
if [[ $reply == "no echo"* ]]; then
    pass "without send-proxy, the client gets no echo ($reply)"
else
    fail "without send-proxy the client was served: $reply"
fi
expect_line "$tmp/s1.err" "no PROXY protocol header (the listener requires v1 or v2); the connection starts with 00 00 00 09" \
    "the server refuses the connection without a header and says why"

# ---- TLS passthrough with send-proxy-v2-ssl -----------------------------------
client "$fe_tls" 127.0.0.9 hello-tls "$certs/ca.pem"
if [[ $reply == "echo ok 127.0.0.9:"* ]]; then
    pass "TLS passthrough with send-proxy-v2-ssl: the client's handshake and echo work"
    expect_line "$tmp/s3.out" "accepted $client_addr via 127.0.0.1:" \
        "the tls:// server reports the TLS client's own address $client_addr"
else
    fail "TLS client through send-proxy-v2-ssl: $reply"
    sed 's/^/    /' "$tmp/s3.err" >&2
fi

# ---- tether sends, HAProxy accepts (accept-proxy) and relays ---------------
for v in 1 2; do
    src=127.0.0.1$v:432$v
    out=$(timeout -k 5 30 "$client_bin" --connect "tcp://127.0.0.1:$fe_accept" \
        --send-proxy "v$v" --proxy-source "$src" --count 3 --timeout 10000 2>&1 || true)
    if [[ $out == "ok 3" ]]; then
        pass "echo_client --send-proxy v$v through HAProxy's accept-proxy: ok 3"
        expect_line "$tmp/s2.out" "accepted $src via 127.0.0.1:" \
            "HAProxy parsed tether's v$v header: the server reports the announced $src"
    else
        fail "echo_client --send-proxy v$v through accept-proxy: $out"
    fi
done

# ---- stop everything --------------------------------------------------------
kill -TERM "$haproxy_pid" 2>/dev/null || true
wait_exit "$haproxy_pid" 10
for name in s1 s2 s3; do
    pid_var=pid_$name
    kill -TERM "${!pid_var}" 2>/dev/null || true
    wait_exit "${!pid_var}" 10
    check "echo server $name exits 0 on SIGTERM" test "$exit_status" -eq 0
done
th_end
