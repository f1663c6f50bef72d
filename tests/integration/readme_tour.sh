#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# Keeps README.md true: extracts the five-minute tour's server and client
# (the ```c blocks after the <!-- tour:server --> and <!-- tour:client -->
# markers), compiles them against the library like a user would, runs the
# server on a free loopback port and the client against it, and checks that
# the client prints the echo. Also checks that the README still opens with
# a title, one line saying what tether is, and the two commands, and that
# the tour stays short.
#
#   bash tests/integration/readme_tour.sh README.md INCLUDE_DIR LIBTETHER
#
# Environment: CC (default cc); TETHER_CONSUMER_FLAGS, extra compile and
# link flags (the sanitizer flags of an ASan build).
# shellcheck disable=SC2317
set -euo pipefail

if [[ $# -ne 3 ]]; then
    echo "usage: $0 README.md INCLUDE_DIR LIBTETHER" >&2
    exit 2
fi
readme=$1
include=$2
lib=$3
cc=${CC:-cc}
read -r -a extra_flags <<<"${TETHER_CONSUMER_FLAGS:-}"

# shellcheck source=tests/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/../lib.sh"
th_begin tour

# ---- the README opens with a title, one line, and the two commands -----------

if [[ $(sed -n 1p "$readme") =~ ^#\ [^#] ]]; then
    pass "README.md starts with a title: $(sed -n 1p "$readme")"
else
    fail "README.md does not start with a '# title' line: $(sed -n 1p "$readme")"
fi
if [[ -z $(sed -n 2p "$readme") && -n $(sed -n 3p "$readme") && -z $(sed -n 4p "$readme") &&
    $(sed -n 3p "$readme") != '```'* ]]; then
    pass "README.md says in one line what tether is: $(sed -n 3p "$readme" | cut -c 1-60)..."
else
    fail "README.md line 3 should be one line saying what tether is, between blank lines"
fi
want=$'```sh\nbash examples/demo.sh\n```\n\n```sh\nbash tests/run-all.sh\n```'
if [[ $(sed -n 5,11p "$readme") == "$want" ]]; then
    pass "README.md continues with the demo and test commands"
else
    fail "README.md lines 5-11 are not the two commands; they are:"
    sed -n 5,11p "$readme" | sed 's/^/    /' >&2
fi

# ---- extract ----------------------------------------------------------------------

# extract NAME: the first ```c block after <!-- tour:NAME -->.
extract() {
    awk -v marker="<!-- tour:$1 -->" '
        $0 == marker { armed = 1; next }
        armed && !inside && /^```c[[:space:]]*$/ { inside = 1; next }
        inside && /^```[[:space:]]*$/ { exit }
        inside { print }
    ' "$readme"
}

for part in server client; do
    extract "$part" >"$tmp/$part.c"
    if [[ ! -s $tmp/$part.c ]]; then
        fail "no \`\`\`c block after <!-- tour:$part --> in README.md"
        continue
    fi
    # "A server in about 20 lines, a client in about 15": lines of code,
    # not counting blank lines, #include lines and lone braces. Keep it so.
    lines=$(grep -cvE '^[[:space:]]*$|^#include|^[[:space:]]*[{}][[:space:]]*$' "$tmp/$part.c" ||
        true)
    limit=$([[ $part == server ]] && echo 24 || echo 18)
    if ((lines <= limit)); then
        pass "the tour's $part has $lines lines of code (at most $limit)"
    else
        fail "the tour's $part has grown to $lines lines of code (limit $limit)"
    fi
    if "$cc" -std=c11 -Wall -Wextra -Wpedantic -Werror "${extra_flags[@]}" -I"$include" \
        -o "$tmp/$part" "$tmp/$part.c" "$lib" "-Wl,-rpath,$(dirname "$lib")" \
        2>"$tmp/$part.cc.err"; then
        pass "the tour's $part compiles with -Wall -Wextra -Wpedantic -Werror"
    else
        fail "the tour's $part does not compile:"
        sed 's/^/    /' "$tmp/$part.cc.err" >&2
    fi
done

# ---- run -----------------------------------------------------------------------------

if [[ -x $tmp/server && -x $tmp/client ]]; then
    if th_start server '^listening on ' "$tmp/server" tcp://127.0.0.1:0; then
        server_pid=$bg_pid
        url=${bg_line#listening on }
        pass "the tour's server is listening on $url"
        status=0
        timeout -k 5 30 "$tmp/client" "$url" >"$tmp/client.out" 2>"$tmp/client.err" || status=$?
        if [[ $status -eq 0 && $(cat "$tmp/client.out") == hello ]]; then
            pass "the tour's client prints the echo: $(cat "$tmp/client.out")"
        else
            fail "the tour's client: status $status, stdout '$(cat "$tmp/client.out")'," \
                "stderr '$(cat "$tmp/client.err")'"
        fi
        # And names the problem when nobody listens.
        kill -TERM "$server_pid" 2>/dev/null || true
        wait_exit "$server_pid" 10
        status=0
        timeout -k 5 30 "$tmp/client" "$url" >"$tmp/refused.out" 2>"$tmp/refused.err" || status=$?
        if [[ $status -ne 0 && $(cat "$tmp/refused.err") == "error: connect to $url: connection refused" ]]; then
            pass "the tour's client without a server: $(cat "$tmp/refused.err")"
        else
            fail "the tour's client without a server: status $status, '$(cat "$tmp/refused.err")'"
        fi
    fi
fi

th_end
