#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# End-to-end test of examples/file_send and examples/file_recv.
#
#   bash tests/integration/file_transfer.sh FILE_SEND FILE_RECV CERTS_DIR PYTHON
#
# Checks: --help; files of 0, 1 and chunk-boundary sizes and a few MB over
# TCP, and 20 MiB over mutual TLS with the test certificates, arrive byte
# for byte with the SHA-256 that sha256sum computes, and nothing but the
# output file is left behind; progress is plain lines (0 % .. 100 %) when
# stderr is not a terminal and a bar redrawn with "\r" when it is (run
# under script(1)); resuming from a PATH.part prefix sends only the rest;
# a PATH.part that does not belong to the file is caught by the SHA-256,
# reported on both sides, removed, and the retry succeeds; a sender that
# breaks off mid-file (a Python peer speaking the protocol) leaves PATH.part
# for --resume, and a second sender meanwhile is told the receiver is busy;
# failures come out as one line naming the cause.
#
# Loopback only, port 0, every wait bounded, every background process reaped
# by the EXIT trap.
# shellcheck disable=SC2317
set -euo pipefail

if [[ $# -ne 4 ]]; then
    echo "usage: $0 FILE_SEND FILE_RECV CERTS_DIR PYTHON" >&2
    exit 2
fi
send_bin=$1
recv_bin=$2
certs=$3
python=$4

# shellcheck source=tests/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/../lib.sh"
th_begin file

# start_recv NAME ARGS...: starts file_recv, waits for `listening on`, sets
# recv_pid and recv_url. Output in $tmp/NAME.out / NAME.err.
start_recv() {
    local name=$1
    shift
    th_start "$name" '^listening on ' "$recv_bin" "$@" || return 1
    recv_pid=$bg_pid
    recv_url=${bg_line#listening on }
}

# run_send NAME ARGS...: runs file_send (bounded); sets send_status.
run_send() {
    local name=$1
    shift
    send_status=0
    timeout -k 5 120 "$send_bin" "$@" >"$tmp/$name.out" 2>"$tmp/$name.err" || send_status=$?
}

sha() { sha256sum "$1" | cut -d ' ' -f 1; }

# transfer NAME FILE URL-SCHEME [RECV-ARGS] -- [SEND-ARGS]: one complete,
# successful transfer of FILE, checked on both sides.
transfer() {
    local name=$1 file=$2 scheme=$3
    shift 3
    local recv_args=() send_args=()
    while [[ $# -gt 0 && $1 != -- ]]; do
        recv_args+=("$1")
        shift
    done
    [[ $# -gt 0 ]] && shift
    send_args=("$@")
    local out=$tmp/$name.copy size sum url
    size=$(stat -c %s "$file")
    sum=$(sha "$file")
    start_recv "$name.recv" --listen "$scheme://127.0.0.1:0" --out "$out" "${recv_args[@]}" ||
        return 0
    url=$recv_url
    if [[ $scheme == tls ]]; then
        url=tls://localhost:${recv_url##*:} # verify the certificate by name
    fi
    run_send "$name.send" --connect "$url" --file "$file" "${send_args[@]}"
    wait_exit "$recv_pid" 30
    local recv_status=$exit_status
    # " (resumed)" after the size when the receiver had a prefix.
    local bytes="$size bytes"
    if grep -qF 'resuming' "$tmp/$name.recv.err"; then
        bytes="$size bytes (resumed)"
    fi
    if [[ $send_status -eq 0 && $recv_status -eq 0 ]] && cmp -s "$file" "$out" &&
        grep -qxF "received ${file##*/}: $bytes, sha256 $sum: OK" "$tmp/$name.recv.out" &&
        grep -qxF "sent ${file##*/}: $bytes, sha256 $sum; verified by the receiver" \
            "$tmp/$name.send.out" && [[ ! -e $out.part ]]; then
        pass "$name: $size bytes over $scheme, sha256 ${sum:0:16}..."
    else
        # Progress lines would hide the error: show the other lines.
        fail "$name: send status $send_status, recv status $recv_status;" \
            "send: $(cat "$tmp/$name.send.out" "$tmp/$name.send.err" | grep -v '^progress:' | tail -n 5);" \
            "recv: $(cat "$tmp/$name.recv.out" "$tmp/$name.recv.err" | grep -v '^progress:' | tail -n 5)"
    fi
}

# ---- help ------------------------------------------------------------------

for bin in "$send_bin" "$recv_bin"; do
    out=$("$bin" --help) && status=0 || status=$?
    check "${bin##*/} --help" test "$status" -eq 0 -a "${out:0:6}" == "usage:"
done

# ---- sizes over TCP ----------------------------------------------------------

for size in 0 1 65535 65536 65537 3000000; do
    head -c "$size" /dev/urandom >"$tmp/f$size.bin"
    transfer "tcp$size" "$tmp/f$size.bin" tcp --progress none -- --progress none
done
# A small chunk size: many messages.
transfer tcp-chunks "$tmp/f65537.bin" tcp -- --chunk 1000 --progress lines

# ---- 20 MiB over mutual TLS, with progress lines -------------------------------

head -c $((20 * 1024 * 1024)) /dev/urandom >"$tmp/big.bin"
transfer tls "$tmp/big.bin" tls --cert "$certs/server.pem" --key "$certs/server.key" \
    --ca "$certs/ca.pem" --verify-client -- --ca "$certs/ca.pem" --cert "$certs/client.pem" \
    --key "$certs/client.key"
want=$(for p in 0 10 20 30 40 50 60 70 80 90 100; do printf 'progress: %3d%%\n' "$p"; done)
for side in send recv; do
    got=$(grep -o '^progress: *[0-9]*%' "$tmp/tls.$side.err" || true)
    check "$side: stderr is not a terminal: progress as 11 lines, 0 % to 100 %" \
        test "$got" == "$want"
done
check "plain progress lines contain no carriage return" \
    test "$(tr -cd '\r' <"$tmp/tls.send.err" | wc -c)" -eq 0

# ---- a progress bar on a terminal ------------------------------------------------

if command -v script >/dev/null 2>&1; then
    if start_recv bar.recv --listen tcp://127.0.0.1:0 --out "$tmp/bar.copy" --progress none; then
        status=0
        timeout -k 5 60 script -qec "'$send_bin' --connect '$recv_url' --file '$tmp/big.bin'" \
            /dev/null >"$tmp/bar.tty" 2>&1 || status=$?
        wait_exit "$recv_pid" 30
        check "file_send on a terminal exits 0 (status $status)" test "$status" -eq 0
        check "on a terminal the progress is a bar redrawn with \\r" \
            grep -qF $'\r[##############################] 100%' "$tmp/bar.tty"
        check "on a terminal there are no progress lines" \
            test -z "$(grep -F 'progress:' "$tmp/bar.tty" || true)"
        check "the copy made under a terminal is intact" cmp -s "$tmp/big.bin" "$tmp/bar.copy"
    fi
else
    echo "SKIP: script(1) not found; the progress bar on a terminal is not tested"
fi

# ---- resume from a prefix --------------------------------------------------------

prefix=7000000
head -c "$prefix" "$tmp/big.bin" >"$tmp/resume.copy.part"
transfer resume "$tmp/big.bin" tcp --resume --progress none -- --progress none
check "the receiver says it resumes at byte $prefix" \
    grep -qF "at byte $prefix" "$tmp/resume.recv.err"
check "the sender resumes at byte $prefix" \
    grep -qxF "resuming at byte $prefix" "$tmp/resume.send.err"

# A PATH.part that is not a prefix of the file: caught by the SHA-256.
head -c 1000000 "$tmp/big.bin" >"$tmp/bad.part"
printf 'X' | dd of="$tmp/bad.part" bs=1 seek=500000 conv=notrunc status=none
cp "$tmp/bad.part" "$tmp/corrupt.copy.part"
if start_recv corrupt.recv --listen tcp://127.0.0.1:0 --out "$tmp/corrupt.copy" --resume \
    --progress none; then
    run_send corrupt.send --connect "$recv_url" --file "$tmp/big.bin" --progress none
    wait_exit "$recv_pid" 30
    check "a bad partial file: the receiver fails (status $exit_status): $(tail -n 1 "$tmp/corrupt.recv.err")" \
        test "$exit_status" -eq 1 -a -n "$(grep -F 'sha256 mismatch' "$tmp/corrupt.recv.err")"
    check "a bad partial file: the sender is told (status $send_status): $(tail -n 1 "$tmp/corrupt.send.err")" \
        test "$send_status" -eq 1 -a -n "$(grep -F 'the receiver rejected big.bin: sha256 mismatch' "$tmp/corrupt.send.err")"
    check "a bad partial file: no output file and no .part left" \
        test ! -e "$tmp/corrupt.copy" -a ! -e "$tmp/corrupt.copy.part"
    check "a bad partial file: the receiver says it removed it" \
        grep -qF "removed $tmp/corrupt.copy.part (it cannot be resumed)" "$tmp/corrupt.recv.err"
    # The retry starts afresh and succeeds.
    transfer corrupt "$tmp/big.bin" tcp --resume --progress none -- --progress none
fi

# ---- a sender that breaks off, a busy receiver, then resume ------------------------

if start_recv broken.recv --listen tcp://127.0.0.1:0 --out "$tmp/broken.copy" --progress none; then
    port=${recv_url##*:}
    # A peer that speaks the protocol with 4-byte big-endian length frames:
    # header, wait for the accept, two 64 KiB chunks, then it waits to be
    # killed (which makes the kernel close its socket).
    "$python" -c '
import socket, struct, sys, time
def send(s, b): s.sendall(struct.pack("!I", len(b)) + b)
def recv_exact(s, n):
    b = b""
    while len(b) < n:
        c = s.recv(n - len(b))
        if not c: sys.exit("closed")
        b += c
    return b
data = open(sys.argv[2], "rb").read()
s = socket.create_connection(("127.0.0.1", int(sys.argv[1])), timeout=10)
send(s, b"H" + struct.pack("!Q", len(data)) + b"big.bin")
n = struct.unpack("!I", recv_exact(s, 4))[0]
reply = recv_exact(s, n)
assert reply[:1] == b"A" and struct.unpack("!Q", reply[1:9])[0] == 0, reply
send(s, b"D" + data[:65536])
send(s, b"D" + data[65536:131072])
print("sent 131072", flush=True)
time.sleep(60)
' "$port" "$tmp/big.bin" >"$tmp/py.out" 2>"$tmp/py.err" &
    py_pid=$!
    bg_pids+=("$py_pid")
    if wait_line "$tmp/py.out" "sent 131072" 10; then
        # Meanwhile another sender: turned away.
        run_send busy --connect "$recv_url" --file "$tmp/f1.bin" --progress none
        check "a second sender is told the receiver is busy: $(cat "$tmp/busy.err")" \
            test "$send_status" -eq 1 -a -n "$(grep -F 'busy: another transfer is in progress' "$tmp/busy.err")"
        # Wait until the receiver has written both chunks, then cut.
        for ((i = 0; i < 200; i++)); do
            [[ $(stat -c %s "$tmp/broken.copy.part" 2>/dev/null || echo 0) -eq 131072 ]] && break
            sleep 0.05
        done
        kill -TERM "$py_pid" 2>/dev/null || true
        wait_exit "$py_pid" 10
        wait_exit "$recv_pid" 10
        check "a broken-off transfer: the receiver fails (status $exit_status): $(cat "$tmp/broken.recv.err")" \
            test "$exit_status" -eq 1 -a -n "$(grep -F 'broke off after 131072 of 20971520 bytes' "$tmp/broken.recv.err")"
        check "a broken-off transfer keeps PATH.part with what arrived" \
            test "$(stat -c %s "$tmp/broken.copy.part" 2>/dev/null || echo none)" == 131072
        check "a broken-off transfer leaves no output file" test ! -e "$tmp/broken.copy"
        transfer broken "$tmp/big.bin" tcp --resume --progress none -- --progress none
        check "the resumed transfer starts at byte 131072" \
            grep -qxF "resuming at byte 131072" "$tmp/broken.send.err"
        check "the resumed transfer reports that it was resumed" \
            grep -qF "bytes (resumed), sha256" "$tmp/broken.recv.out"
    else
        fail "the Python peer did not get going: $(cat "$tmp/py.out" "$tmp/py.err")"
    fi
fi

# ---- errors ---------------------------------------------------------------------------

if start_recv gone --listen tcp://127.0.0.1:0 --out "$tmp/gone.copy"; then
    dead_url=$recv_url
    kill -TERM "$recv_pid"
    wait_exit "$recv_pid" 10
    run_send refused --connect "$dead_url" --file "$tmp/f1.bin"
    check "connection refused, one line: $(cat "$tmp/refused.err")" \
        test "$send_status" -eq 1 -a "$(cat "$tmp/refused.err")" == \
        "error: connect to $dead_url: connection refused"
fi
run_send nofile --connect tcp://127.0.0.1:1 --file "$tmp/does-not-exist"
check "a missing file, one line: $(cat "$tmp/nofile.err")" \
    test "$send_status" -eq 1 -a "$(wc -l <"$tmp/nofile.err")" -eq 1 -a \
    -n "$(grep -F 'No such file or directory' "$tmp/nofile.err")"
run_send nourl --file "$tmp/f1.bin"
check "no --connect: $(cat "$tmp/nourl.err")" test "$send_status" -eq 1
status=0
"$recv_bin" --listen tcp://127.0.0.1:0 >/dev/null 2>"$tmp/noout.err" || status=$?
check "file_recv without --out: $(cat "$tmp/noout.err")" test "$status" -eq 1

# --out is checked before listening: directory, directory-ness, overwriting.
# recv_err NAME WANT ARGS...: file_recv must fail at once with WANT in its
# one line on stderr, and never say `listening on`.
recv_err() {
    local name=$1 want=$2 status=0
    shift 2
    timeout -k 5 30 "$recv_bin" --listen tcp://127.0.0.1:0 "$@" >"$tmp/$name.out" \
        2>"$tmp/$name.err" || status=$?
    if [[ $status -eq 1 && $(cat "$tmp/$name.err") == "$want" && ! -s $tmp/$name.out ]]; then
        pass "file_recv $*: $want"
    else
        fail "file_recv $*: status $status, stdout '$(cat "$tmp/$name.out")', stderr '$(cat "$tmp/$name.err")', want '$want'"
    fi
}
recv_err nodir "error: --out $tmp/no/such/dir/x: the directory $tmp/no/such/dir does not exist" \
    --out "$tmp/no/such/dir/x"
recv_err isdir "error: --out $tmp is a directory; give a file name" --out "$tmp"
cp "$tmp/f1.bin" "$tmp/exists.copy"
recv_err exists "error: --out $tmp/exists.copy exists; pass --force to overwrite it" \
    --out "$tmp/exists.copy"
if [[ $(id -u) -ne 0 ]]; then
    mkdir "$tmp/ro" && chmod 555 "$tmp/ro"
    recv_err readonly "error: --out $tmp/ro/x: cannot write in $tmp/ro: Permission denied" \
        --out "$tmp/ro/x"
fi
# A PATH.part from an earlier transfer, without --resume: replaced, and said.
head -c 1000 "$tmp/big.bin" >"$tmp/replace.copy.part"
transfer replace "$tmp/f1.bin" tcp --progress none -- --progress none
check "file_recv says it replaces an old PATH.part: $(grep replacing "$tmp/replace.recv.err" || true)" \
    grep -qF "replacing $tmp/replace.copy.part (1000 bytes left by an earlier transfer" \
    "$tmp/replace.recv.err"
# With --force the existing file is replaced by the transfer.
printf 'old contents' >"$tmp/force.copy"
transfer force "$tmp/f1.bin" tcp --force --progress none -- --progress none

th_end
