#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# End-to-end test of examples/chat_server and examples/chat_client over
# mutual TLS with the test certificates.
#
#   bash tests/integration/chat.sh CHAT_SERVER CHAT_CLIENT CERTS_DIR
#
# Checks: --help and usage errors; nicknames come from the client
# certificate's CN (alice, bob; a second alice becomes alice#2); join and
# leave notices; every line reaches everyone else as `<nick> text` and not
# the sender; control characters are neutralised; clients without a
# certificate or with one from an untrusted CA are refused, on both sides,
# with a message naming why; chat_client works from a pipe and exits 0 at
# the end of stdin; and the slow-client policy: with a client stopped
# (SIGSTOP) while another floods the room, everyone else still receives
# every line, in order, and the stopped client is disconnected and the room
# told so. Finally the server stops cleanly on SIGTERM with clients
# connected. With --threads 2, clients on different loops (the server's
# `joined ... on loop N` lines say which) see each other's lines, every
# sender's in order: broadcast crosses loops through tether_ref.
#
# Loopback only, port 0, every wait bounded, every background process reaped
# by the EXIT trap (stopped ones included).
# shellcheck disable=SC2317
set -euo pipefail

if [[ $# -ne 3 ]]; then
    echo "usage: $0 CHAT_SERVER CHAT_CLIENT CERTS_DIR" >&2
    exit 2
fi
server_bin=$1
client_bin=$2
certs=$3

# shellcheck source=tests/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/../lib.sh"
th_begin chat

server_url=
server_pid=
# start_server NAME ARGS...: starts chat_server and waits for `listening on`.
start_server() {
    local name=$1
    shift
    th_start "$name" '^listening on ' "$server_bin" "$@" || return 1
    server_pid=$bg_pid
    # Connect by name: the server certificate is checked against localhost.
    server_url=tls://localhost:${bg_line##*:}
}

# start_client NAME CERT: starts chat_client as the user of certs/CERT.pem
# (none: without a certificate), reading stdin from a FIFO that this shell
# keeps open on a new descriptor (client_fd[NAME]); output goes to
# $tmp/NAME.out and $tmp/NAME.err.
declare -A client_pid=() client_fd=()
start_client() {
    local name=$1 cert=$2 fd
    local tls=(--ca "$certs/ca.pem")
    if [[ $cert != none ]]; then
        tls+=(--cert "$certs/$cert.pem" --key "$certs/$cert.key")
    fi
    mkfifo "$tmp/$name.in"
    # Read-write: never blocks, whatever the client does.
    exec {fd}<>"$tmp/$name.in"
    client_fd[$name]=$fd
    # The client must not inherit any FIFO's write end (its own included),
    # or its stdin would never end.
    (
        for fd in "${client_fd[@]}"; do
            exec {fd}>&-
        done
        exec "$client_bin" --connect "$server_url" "${tls[@]}" <"$tmp/$name.in" \
            >"$tmp/$name.out" 2>"$tmp/$name.err"
    ) &
    client_pid[$name]=$!
    bg_pids+=("$!")
}

# say NAME TEXT: the client NAME types a line.
say() {
    printf '%s\n' "$2" >&"${client_fd[$1]}"
}

# hang_up NAME: ends the client's stdin.
hang_up() {
    local fd=${client_fd[$1]}
    exec {fd}>&-
}

# ---- help and usage errors --------------------------------------------------

for bin in "$server_bin" "$client_bin"; do
    out=$("$bin" --help) && status=0 || status=$?
    if [[ $status -eq 0 && $out == usage:* ]]; then
        pass "${bin##*/} --help"
    else
        fail "${bin##*/} --help: status $status, output '$out'"
    fi
done
status=0
err=$("$server_bin" --listen tcp://127.0.0.1:0 --cert "$certs/server.pem" \
    --key "$certs/server.key" --ca "$certs/ca.pem" 2>&1) || status=$?
check "chat_server refuses a tcp:// URL: $err" \
    test "$status" -eq 1 -a -n "$(grep -F 'tls://' <<<"$err")"
status=0
err=$("$server_bin" --listen tls://127.0.0.1:0 --cert "$certs/server.pem" \
    --key "$certs/server.key" 2>&1) || status=$?
check "chat_server without --ca: $err" test "$status" -eq 1 -a -n "$(grep -F -- '--ca' <<<"$err")"
status=0
err=$("$client_bin" 2>&1) || status=$?
check "chat_client without --connect: $err" test "$status" -eq 1

# ---- a conversation -----------------------------------------------------------

if start_server room --listen tls://127.0.0.1:0 --cert "$certs/server.pem" \
    --key "$certs/server.key" --ca "$certs/ca.pem"; then
    room_pid=$server_pid

    start_client bob bob
    expect_line "$tmp/bob.out" "* welcome bob; here: nobody else yet" "bob is welcomed"
    expect_line "$tmp/room.out" "bob joined from 127.0.0.1:" "the server names bob from his certificate"

    start_client alice client
    expect_line "$tmp/alice.out" "* welcome alice; here: bob" "alice is welcomed and told who is here"
    expect_line "$tmp/bob.out" "* alice joined" "bob hears that alice joined"

    say alice "hello bob"
    expect_line "$tmp/bob.out" "<alice> hello bob" "bob gets alice's line with her nickname"
    say bob "hi alice, nice to meet you"
    expect_line "$tmp/alice.out" "<bob> hi alice, nice to meet you" "alice gets bob's line"
    # Terminal escapes do not survive; a trailing CR is removed; UTF-8 stays.
    say alice $'\e[31mred\r'
    expect_line "$tmp/bob.out" "<alice> ?[31mred" "control characters become '?'"
    # C1 controls too: CSI as a raw byte (0x9b) and as UTF-8 (U+009B, C2 9B),
    # which some terminals take as ESC [; other invalid UTF-8 becomes '?'.
    say alice $'\x9b32mraw'
    expect_line "$tmp/bob.out" "<alice> ?32mraw" "a raw C1 byte (0x9b) becomes '?'"
    say alice $'\xc2\x9b33mutf8 \xc2\x85nel'
    expect_line "$tmp/bob.out" "<alice> ?33mutf8 ?nel" "C1 characters in UTF-8 (C2 9B, C2 85) become '?'"
    say alice $'bad \xc0\xaf \xed\xa0\x80 end'
    expect_line "$tmp/bob.out" "<alice> bad ?? ??? end" "invalid UTF-8 (overlong, surrogate) becomes '?'"
    # (bob has seen no UTF-8 text yet, so any such byte would be a C1 leak)
    if od -An -v -tx1 "$tmp/bob.out" | grep -qwE '[89][0-9a-f]'; then
        fail "bob received a byte in 0x80-0x9f outside a valid UTF-8 character"
    else
        pass "no C1 byte reaches bob"
    fi
    say alice "grüße, ça va?"
    expect_line "$tmp/bob.out" "<alice> grüße, ça va?" "UTF-8 text passes unchanged"
    if grep -qF '<alice>' "$tmp/alice.out"; then
        fail "alice received her own lines"
    else
        pass "nobody receives their own lines"
    fi

    # The same certificate twice: a distinct nickname.
    start_client alice2 client
    expect_line "$tmp/alice2.out" "* welcome alice#2; here: " "a second alice becomes alice#2"
    expect_line "$tmp/bob.out" "* alice#2 joined" "bob hears of alice#2"
    hang_up alice2
    wait_exit "${client_pid[alice2]}" 10
    check "chat_client exits 0 at the end of stdin (status $exit_status)" \
        test "$exit_status" -eq 0
    expect_line "$tmp/bob.out" "* alice#2 left" "bob hears that alice#2 left"
    expect_line "$tmp/room.out" "alice#2 left" "the server logs the departure"

    # No certificate: refused during the handshake, on both sides. (stdin
    # stays open: with TLS 1.3 the client learns of the refusal only after
    # its own side of the handshake is done.)
    start_client nocert none
    wait_exit "${client_pid[nocert]}" 20
    check "a client without a certificate fails: $(cat "$tmp/nocert.err")" \
        test "$exit_status" -eq 1 -a -n "$(grep -F 'requires a client certificate' "$tmp/nocert.err")"
    hang_up nocert
    expect_line "$tmp/room.err" "client certificate required" \
        "the server reports the client without a certificate"
    # A certificate from a CA the server does not trust.
    start_client mallory untrusted-client
    wait_exit "${client_pid[mallory]}" 20
    check "a client with an untrusted certificate fails: $(cat "$tmp/mallory.err")" \
        test "$exit_status" -eq 1
    hang_up mallory
    expect_line "$tmp/room.err" "unknown CA: the client certificate 'CN=mallory" \
        "the server names the untrusted client certificate"
    if grep -qE 'mallory|anonymous' "$tmp/room.out" "$tmp/bob.out"; then
        fail "a refused client joined the room"
    else
        pass "refused clients never join the room"
    fi

    # A piped client: sends everything, then leaves, exit 0.
    status=0
    printf 'one\ntwo\nthree\n' | timeout -k 5 30 "$client_bin" --connect "$server_url" \
        --ca "$certs/ca.pem" --cert "$certs/client.pem" --key "$certs/client.key" \
        >"$tmp/piped.out" 2>"$tmp/piped.err" || status=$?
    check "a piped client exits 0 (stderr '$(cat "$tmp/piped.err")')" test "$status" -eq 0
    expect_line "$tmp/bob.out" "<alice#2> three" "every piped line arrives"
    check "piped lines arrive in order" \
        test "$(grep -F '<alice#2> ' "$tmp/bob.out" | tr '\n' ' ')" == \
        "<alice#2> one <alice#2> two <alice#2> three "

    hang_up alice
    wait_exit "${client_pid[alice]}" 10
    check "alice exits 0 after her stdin ends" test "$exit_status" -eq 0
    expect_line "$tmp/bob.out" "* alice left" "bob hears that alice left"

    # Shutdown with bob still connected: he is told, and the server exits 0.
    kill -TERM "$room_pid"
    wait_exit "$room_pid" 10
    check "the server exits 0 on SIGTERM with a client connected (status $exit_status)" \
        test "$exit_status" -eq 0
    expect_line "$tmp/bob.out" "* the server is shutting down" "bob hears of the shutdown"
    wait_exit "${client_pid[bob]}" 10
    check "bob exits 1 when the server goes away (status $exit_status)" test "$exit_status" -eq 1
    check "bob names the disconnection: $(cat "$tmp/bob.err")" \
        grep -qF "error: disconnected" "$tmp/bob.err"
    hang_up bob
    if [[ -s $tmp/room.err ]] && grep -vqE 'client certificate required|unknown CA' "$tmp/room.err"; then
        fail "unexpected server stderr: $(cat "$tmp/room.err")"
    else
        pass "the server wrote nothing unexpected on stderr"
    fi
fi

# ---- a client that stops reading does not stall the room ----------------------

# The default queue (1 MiB per client); the kernel's socket buffers take
# some hundreds of KiB more before it starts to fill.
#
# slow_client_test LOG [ARGS...]: the test with a server started with ARGS,
# its output in $tmp/LOG.out. With a loop group balanced by the acceptor,
# alice lands on loop 0, bob on loop 1 and the flooder on loop 0 (the
# least loaded loop, ties taken in turn): the flood reaches bob through
# his tether_ref, whose backpressure drops him.
slow_client_test() {
    local srv=$1 what
    shift
    what="slow test${1:+ ($*)}"
    if ! start_server "$srv" --listen tls://127.0.0.1:0 --cert "$certs/server.pem" \
        --key "$certs/server.key" --ca "$certs/ca.pem" "$@"; then
        return
    fi
    slow_pid=$server_pid
    rm -rf "$tmp"/{alice,bob}.{in,out,err} "$tmp/flood"
    start_client alice client
    expect_line "$tmp/alice.out" "* welcome alice" "$what: alice joined"
    start_client bob bob
    expect_line "$tmp/bob.out" "* welcome bob" "$what: bob joined"
    expect_line "$tmp/alice.out" "* bob joined" "$what: alice saw bob join"
    kill -STOP "${client_pid[bob]}"

    # 12 000 lines of 1 KB (12 MB): about twice what bob's socket buffers
    # (a few MB) and his queue (1 MiB) hold. Fed in bursts of 200 lines,
    # a few MB/s: a busy room, but one that a client that reads keeps up
    # with even on a loaded machine; the policy is about clients that stop.
    lines=12000
    mkdir "$tmp/flood"
    awk -v n="$lines" -v dir="$tmp/flood" 'BEGIN { pad = sprintf("%1000s", ""); gsub(/ /, "x", pad);
        for (i = 0; i < n; i++) printf "line %d %s\n", i, pad > sprintf("%s/%05d", dir, int(i / 200)) }'
    start=$SECONDS
    status=0
    for chunk in "$tmp"/flood/*; do
        cat "$chunk"
        sleep 0.03
    done | timeout -k 5 120 "$client_bin" --connect "$server_url" --ca "$certs/ca.pem" \
        --cert "$certs/client.pem" --key "$certs/client.key" \
        >"$tmp/flood.out" 2>"$tmp/flood.err" || status=$?
    check "the flooding client sends everything and exits 0 (status $status, $(cat "$tmp/flood.err"))" \
        test "$status" -eq 0
    expect_line "$tmp/$srv.out" "bob dropped: not reading fast enough" \
        "the server drops the client that stopped reading" 30
    expect_line "$tmp/alice.out" "<alice#2> line $((lines - 1)) " \
        "alice receives the whole flood while bob is stopped" 60
    got=$(grep -c '^<alice#2> line ' "$tmp/alice.out" || true)
    check "alice got all $lines lines (got $got)" test "$got" -eq "$lines"
    # shellcheck disable=SC2016
    check "alice got them in order" \
        awk -v n="$lines" '/^<alice#2> line / { if ($3 != i++) bad = 1 } END { exit bad || i != n }' \
        "$tmp/alice.out"
    expect_line "$tmp/alice.out" "* bob left (dropped: not reading fast enough)" \
        "the room is told that bob was dropped"
    echo "   (flood delivered in $((SECONDS - start)) s; server: $(grep dropped "$tmp/$srv.out"))"

    # Bob wakes up: reads what his buffers held, then finds himself
    # disconnected and says so.
    kill -CONT "${client_pid[bob]}"
    wait_exit "${client_pid[bob]}" 20
    check "bob exits 1 after being dropped (status $exit_status)" test "$exit_status" -eq 1
    check "bob says he was disconnected: $(cat "$tmp/bob.err")" \
        grep -qF "error: disconnected" "$tmp/bob.err"
    bob_got=$(grep -c '^<alice#2> line ' "$tmp/bob.out" || true)
    check "bob got only a prefix of the flood ($bob_got lines)" test "$bob_got" -lt "$lines"
    # shellcheck disable=SC2016
    check "bob's prefix is in order" \
        awk '/^<alice#2> line / { if ($3 != i++) bad = 1 } END { exit bad }' "$tmp/bob.out"
    hang_up bob
    hang_up alice
    wait_exit "${client_pid[alice]}" 10
    check "alice exits 0 (status $exit_status)" test "$exit_status" -eq 0
    kill -TERM "$slow_pid"
    wait_exit "$slow_pid" 10
    check "the server exits 0 (status $exit_status)" test "$exit_status" -eq 0
    if [[ $# -gt 0 ]]; then
        check "$what: bob on loop 1" grep -qE '^bob joined from .* on loop 1$' "$tmp/$srv.out"
        check "$what: the flooder (alice#2) on loop 0" \
            grep -qE '^alice#2 joined from .* on loop 0$' "$tmp/$srv.out"
    fi
}
slow_client_test slow
slow_client_test slow2 --threads 2 --balance acceptor


# ---- --threads 2: one room over two loops ----------------------------------------

# Clients join (alternating the two certificates) until both loops have
# some: the kernel spreads connections over the loops' SO_REUSEPORT
# sockets by a hash, so the count is bounded, not fixed (16 tries leave a
# chance of 2^-15 that one loop gets none).
if start_server mt --listen tls://127.0.0.1:0 --cert "$certs/server.pem" \
    --key "$certs/server.key" --ca "$certs/ca.pem" --threads 2; then
    mt_pid=$server_pid
    mt_clients=()
    declare -A mt_nick=()
    for ((k = 0; k < 16; k++)); do
        name=mt$k
        cert=client
        ((k % 2 == 1)) && cert=bob
        start_client "$name" "$cert"
        if ! wait_line "$tmp/$name.out" "* welcome " 20; then
            fail "$name was not welcomed"
            break
        fi
        mt_nick[$name]=$(sed -n 's/^\* welcome \([^;]*\);.*/\1/p' "$tmp/$name.out" | head -n 1)
        mt_clients+=("$name")
        wait_line "$tmp/mt.out" "${mt_nick[$name]} joined from " 10 || true
        if grep -q ' on loop 0$' "$tmp/mt.out" && grep -q ' on loop 1$' "$tmp/mt.out" &&
            ((${#mt_clients[@]} >= 3)); then
            break
        fi
    done
    loops_used=$(grep -o ' on loop [0-9]*$' "$tmp/mt.out" | sort -u | wc -l)
    check "--threads 2: clients joined on both loops ($(grep -c ' joined from ' "$tmp/mt.out") clients)" \
        test "$loops_used" -eq 2
    # Every client sends 30 numbered lines at once; every other client must
    # get them all, in order, whichever loop either is on.
    lines=30
    for name in "${mt_clients[@]}"; do
        for ((i = 1; i <= lines; i++)); do
            say "$name" "seq $i"
        done
    done
    bad=0
    for r in "${mt_clients[@]}"; do
        for s in "${mt_clients[@]}"; do
            [[ $r == "$s" ]] && continue
            if ! wait_line "$tmp/$r.out" "<${mt_nick[$s]}> seq $lines" 30; then
                bad=1
                fail "$r (${mt_nick[$r]}) did not get all of ${mt_nick[$s]}'s lines"
                continue
            fi
            got=$(grep -F "<${mt_nick[$s]}> seq " "$tmp/$r.out" | awk '{ print $3 }' | tr '\n' ' ')
            if [[ $got != "$(seq -s ' ' 1 "$lines") " ]]; then
                bad=1
                fail "${mt_nick[$r]} got ${mt_nick[$s]}'s lines as: $got"
            fi
        done
    done
    if ((bad == 0)); then
        pass "--threads 2: each of ${#mt_clients[@]} clients got every other's $lines lines, in order"
    fi
    # Somebody leaves: the others hear it, on both loops.
    first=${mt_clients[0]}
    hang_up "$first"
    wait_exit "${client_pid[$first]}" 10
    for name in "${mt_clients[@]:1}"; do
        expect_line "$tmp/$name.out" "* ${mt_nick[$first]} left" \
            "${mt_nick[$name]} hears that ${mt_nick[$first]} left"
    done
    kill -TERM "$mt_pid"
    wait_exit "$mt_pid" 20
    check "the --threads 2 server exits 0 on SIGTERM (status $exit_status)" \
        test "$exit_status" -eq 0
    for name in "${mt_clients[@]:1}"; do
        expect_line "$tmp/$name.out" "* the server is shutting down" \
            "${mt_nick[$name]} is told that the server shuts down"
        hang_up "$name"
        wait_exit "${client_pid[$name]}" 10
    done
fi

# ---- --max-line: the longest line a client may send ------------------------------

# A line of exactly --max-line bytes is relayed (behind "<nick> ", which
# makes what the server sends longer than that); one byte more closes
# the sender, and the others are told why.
if start_server maxl --listen tls://127.0.0.1:0 --cert "$certs/server.pem" \
    --key "$certs/server.key" --ca "$certs/ca.pem" --max-line 64; then
    maxl_pid=$server_pid
    start_client mlbob bob
    expect_line "$tmp/mlbob.out" "* welcome bob" "bob joins a room with --max-line 64"
    start_client mlalice client
    expect_line "$tmp/mlbob.out" "* alice joined" "alice joins it"
    line64=$(printf 'x%.0s' {1..64})
    say mlalice "$line64"
    expect_line "$tmp/mlbob.out" "<alice> $line64" "a line of exactly --max-line bytes is relayed"
    say mlalice "${line64}y"
    expect_line "$tmp/mlbob.out" "* alice left (line too long)" \
        "a line one byte longer closes its sender, and the room is told"
    expect_line "$tmp/maxl.out" "alice left: a line of 65 bytes is longer than --max-line (64)" \
        "the server names the line's length"
    wait_exit "${client_pid[mlalice]}" 10
    hang_up mlalice
    kill -TERM "$maxl_pid"
    wait_exit "$maxl_pid" 10
    wait_exit "${client_pid[mlbob]}" 10
    hang_up mlbob
fi

# ---- --verbose reports a refused client once -------------------------------------

if start_server verbose --listen tls://127.0.0.1:0 --cert "$certs/server.pem" \
    --key "$certs/server.key" --ca "$certs/ca.pem" --verbose; then
    verbose_pid=$server_pid
    start_client vnocert none
    wait_exit "${client_pid[vnocert]}" 20
    hang_up vnocert
    expect_line "$tmp/verbose.err" "client certificate required" \
        "chat_server --verbose reports the client without a certificate"
    sleep 0.5 # a duplicate would follow at once, from the same callback chain
    n=$(grep -c "client certificate required" "$tmp/verbose.err" || true)
    if [[ $n -eq 1 ]]; then
        pass "chat_server --verbose reports the refused handshake once"
    else
        fail "chat_server --verbose reports the refused handshake $n times:"
        sed 's/^/    /' "$tmp/verbose.err" >&2
    fi
    kill -TERM "$verbose_pid"
    wait_exit "$verbose_pid" 10
fi

th_end
