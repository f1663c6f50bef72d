#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# Every example's command line: --version names the program and tether's
# version, --help prints a usage text, and argument errors are one line
# that speaks to a command-line user (names the flag, never tether's
# structs or option fields):
#   error: --ca needs a value (see --help)
#   error: unknown option '--foo' (see --help)
#   error: tls:// needs --cert and --key (...)
#   error: --size 20000000 is above the largest message ... 16 MiB ... --max-msg
# Nothing here connects anywhere: every case fails before dialling (port 1
# on 127.0.0.1 is never reached).
#
#   bash tests/integration/examples_cli.sh EXAMPLES_DIR VERSION CERTS_DIR
# shellcheck disable=SC2317
set -euo pipefail

if [[ $# -ne 3 ]]; then
    echo "usage: $0 EXAMPLES_DIR VERSION CERTS_DIR" >&2
    exit 2
fi
dir=$1
version=$2
certs=$3

# shellcheck source=tests/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/../lib.sh"
th_begin cli

servers=(echo_server chat_server file_recv kv_server)
clients=(echo_client chat_client file_send reconnecting_client sync_client kv_client)

# run PROG ARGS...: sets status, out, err (bounded).
run() {
    local prog=$1
    shift
    status=0
    timeout -k 5 20 "$dir/$prog" "$@" >"$tmp/out" 2>"$tmp/err" || status=$?
    out=$(cat "$tmp/out")
    err=$(cat "$tmp/err")
}

# expect_err PROG WANT ARGS...: exit status 1, nothing on stdout, and
# exactly one line on stderr, equal to WANT (or matching it, if WANT starts
# with ~), which mentions no tether_* name or option field.
expect_err() {
    local prog=$1 want=$2
    shift 2
    run "$prog" "$@"
    local ok=1
    [[ $status -eq 1 && -z $out && $(wc -l <"$tmp/err") -eq 1 ]] || ok=0
    if [[ $want == '~'* ]]; then
        [[ $err =~ ${want#\~} ]] || ok=0
    else
        [[ $err == "$want" ]] || ok=0
    fi
    if grep -qE 'tether_|_opts|cert_file|key_file|ca_file|max_msg' <<<"$err"; then
        ok=0
    fi
    if [[ $ok -eq 1 ]]; then
        pass "$prog $*: $err"
    else
        fail "$prog $*: status $status, stdout '$out', stderr '$err'; want '$want'"
    fi
}

# ---- every example -----------------------------------------------------------------

for prog in "${servers[@]}" "${clients[@]}"; do
    run "$prog" --version
    check "$prog --version: $out" test "$status" -eq 0 -a "$out" = "$prog (tether $version)"
    run "$prog" --help
    check "$prog --help prints its usage and mentions --version" \
        test "$status" -eq 0 -a "${out:0:7}" = "usage: " -a -n "$(grep -F -- '--version' <<<"$out")"
    expect_err "$prog" "error: --ca needs a value (see --help)" --ca
    expect_err "$prog" "error: unknown option '--foo' (see --help)" --foo
    expect_err "$prog" "error: unknown option '--foo=1' (see --help)" --foo=1
done

# ---- servers -------------------------------------------------------------------------

out_file=$tmp/received.bin
for prog in "${servers[@]}"; do
    extra=()
    [[ $prog == file_recv ]] && extra=(--out "$out_file")
    expect_err "$prog" "~^error: tls:// needs --cert and --key" \
        --listen tls://127.0.0.1:0 "${extra[@]}"
    expect_err "$prog" "error: --cert needs --key as well (a certificate and its private key)" \
        --listen tls://127.0.0.1:0 --cert "$certs/server.pem" "${extra[@]}"
    expect_err "$prog" "error: unexpected argument 'extra' (see --help)" \
        --listen tls://127.0.0.1:0 "${extra[@]}" extra
done
for prog in echo_server file_recv; do
    extra=()
    [[ $prog == file_recv ]] && extra=(--out "$out_file")
    expect_err "$prog" "~^error: --cert, --key, --ca and --verify-client only apply to tls:// and wss:// URLs" \
        --listen tcp://127.0.0.1:0 --cert "$certs/server.pem" --key "$certs/server.key" "${extra[@]}"
    expect_err "$prog" "~^error: --verify-client needs --ca" \
        --listen tls://127.0.0.1:0 --cert "$certs/server.pem" --key "$certs/server.key" \
        --verify-client "${extra[@]}"
done
expect_err chat_server "~^error: checking client certificates needs --ca" \
    --listen tls://127.0.0.1:0 --cert "$certs/server.pem" --key "$certs/server.key"
expect_err echo_server "error: --max-msg 2000000000 is above tether's limit of 1 GiB (1073741824 bytes)" \
    --listen tcp://127.0.0.1:0 --max-msg 2000000000
expect_err echo_server "error: --framing: invalid value 'json' (expected len32, varint or line)" \
    --listen tcp://127.0.0.1:0 --framing json
expect_err echo_server "error: --drain-timeout needs --drain-on-signal" \
    --listen tcp://127.0.0.1:0 --drain-timeout 5000
expect_err echo_server "error: --drain-timeout: invalid value '0' (expected milliseconds, at least 1)" \
    --listen tcp://127.0.0.1:0 --drain-on-signal --drain-timeout 0
for prog in echo_server chat_server; do
    expect_err "$prog" "error: --mem-limit: invalid value '12X' (expected bytes with an optional K, M or G suffix)" \
        --listen tls://127.0.0.1:0 --mem-limit 12X
    expect_err "$prog" "error: --max-conns: invalid value '-1' (expected a number of connections, 0 for no limit)" \
        --listen tls://127.0.0.1:0 --max-conns -1
    expect_err "$prog" "error: --mem-limit needs a value (see --help)" --mem-limit
done
# Every example server takes the limits and the timeouts (issue 9).
for prog in echo_server chat_server file_recv; do
    expect_err "$prog" "error: --frame-timeout: invalid value 'x' (expected milliseconds, 0 for none)" \
        --listen tls://127.0.0.1:0 --frame-timeout x
done
expect_err file_recv "error: --max-conns: invalid value '-1' (expected a number of connections, 0 for no limit)" \
    --listen tls://127.0.0.1:0 --max-conns -1

# ---- clients -------------------------------------------------------------------------

for prog in "${clients[@]}"; do
    extra=()
    [[ $prog == file_send ]] && extra=(--file "$certs/ca.pem")
    expect_err "$prog" "error: --connect URL is required (see --help)" "${extra[@]}"
    expect_err "$prog" "error: --cert needs --key as well (a certificate and its private key)" \
        --connect tls://127.0.0.1:1 --cert "$certs/client.pem" "${extra[@]}"
    expect_err "$prog" "error: --key needs --cert as well (a certificate and its private key)" \
        --connect tls://127.0.0.1:1 --key "$certs/client.key" "${extra[@]}"
    if [[ $prog != chat_client ]]; then
        expect_err "$prog" \
            "error: --ca, --cert, --key, --servername and --insecure only apply to tls://, tls+srv:// and wss:// URLs, not to tcp://127.0.0.1:1" \
            --connect tcp://127.0.0.1:1 --servername localhost "${extra[@]}"
    fi
    expect_err "$prog" "~^error: .*$certs/nope.pem" \
        --connect tls://127.0.0.1:1 --ca "$certs/nope.pem" "${extra[@]}"
done
expect_err chat_client "error: --connect must be a tls:// or tls+srv:// URL: chat_server only speaks TLS" \
    --connect tcp://127.0.0.1:1
expect_err echo_client "~^error: --size 20000000 is above the largest message tether allows by default, 16 MiB \(16777216 bytes\): raise the limit with --max-msg" \
    --connect tcp://127.0.0.1:1 --size 20000000
expect_err echo_client "error: --size 2000 is above --max-msg 1000" \
    --connect tcp://127.0.0.1:1 --size 2000 --max-msg 1000
expect_err echo_client "error: --count: invalid value '-1' (expected a number of messages)" \
    --connect tcp://127.0.0.1:1 --count -1
expect_err echo_client "error: --timeout: invalid value '0' (expected milliseconds, at least 1)" \
    --connect tcp://127.0.0.1:1 --timeout 0
expect_err sync_client "error: --timeout needs a value (see --help)" --connect tcp://127.0.0.1:1 --timeout
expect_err kv_client "error: no REQUEST given, e.g. 'get KEY' (see --help)" --connect tcp://127.0.0.1:1
expect_err kv_server "error: --delay: invalid value '0' (expected milliseconds, at least 1)" \
    --listen tcp://127.0.0.1:0 --delay 0
expect_err file_send "error: --chunk: invalid value '9999999999' (expected a number of bytes from 1 to 8388608 (8 MiB))" \
    --connect tcp://127.0.0.1:1 --file "$certs/ca.pem" --chunk 9999999999

th_end
