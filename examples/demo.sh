#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# The demo: installs what is missing of the five packages it needs
# (compiler, CMake, pkg-config, OpenSSL and c-ares; not the test tools),
# builds tether and its examples in build-demo/ (without the tests), starts
# the TLS echo server with the test certificates in certs/ and runs the echo
# client against it, verifying the server's certificate and host name.
#
#   bash examples/demo.sh
#
# Exits with the client's status. PORT overrides the port (default: any free
# port, read back from the server's "listening on" line).
# cleanup runs from the EXIT trap.
# shellcheck disable=SC2317
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"

# shellcheck source=tests/deps.sh
source tests/deps.sh
tether_install_deps "${TETHER_DEMO_PACKAGES[@]}"

# Its own build directory, so that build/ (the tests') is left as it is.
bin=build-demo/examples
echo "demo: building into build-demo/"
if ! cmake -S . -B build-demo -DTETHER_BUILD_TESTS=OFF -DTETHER_BUILD_BENCH=OFF \
    >"${TMPDIR:-/tmp}/tether-demo-cmake.log" 2>&1; then
    cat "${TMPDIR:-/tmp}/tether-demo-cmake.log" >&2
    echo "demo: cmake failed" >&2
    exit 1
fi
cmake --build build-demo -j "$(nproc)" --target echo_server echo_client

port=${PORT:-0}
tmp=$(mktemp -d "${TMPDIR:-/tmp}/tether-demo.XXXXXX")
server_pid=

cleanup() {
    if [[ -n $server_pid ]] && kill -0 "$server_pid" 2>/dev/null; then
        kill "$server_pid" 2>/dev/null || true
        wait "$server_pid" 2>/dev/null || true
    fi
    rm -rf "$tmp"
}
trap cleanup EXIT

server_args=(--listen "tls://127.0.0.1:$port" --cert certs/server.pem --key certs/server.key)
echo "demo: starting $bin/echo_server ${server_args[*]}"
"$bin/echo_server" "${server_args[@]}" >"$tmp/server.log" 2>&1 &
server_pid=$!

# Wait (at most 10 s) for the server to say it is listening.
for _ in $(seq 100); do
    if grep -q '^listening on ' "$tmp/server.log"; then
        break
    fi
    if ! kill -0 "$server_pid" 2>/dev/null; then
        break
    fi
    sleep 0.1
done
if ! grep -q '^listening on ' "$tmp/server.log"; then
    echo "demo: the echo server did not start; its output:" >&2
    cat "$tmp/server.log" >&2
    exit 1
fi
listening=$(grep -m 1 '^listening on ' "$tmp/server.log")
echo "demo: server: $listening"
port=${listening##*:}

# The client connects by name: the certificate is checked against
# "localhost" and against the test CA, as a real client would.
client_args=(--connect "tls://localhost:$port" --ca certs/ca.pem --count 1000 --size 512)
echo "demo: running $bin/echo_client ${client_args[*]}"
status=0
"$bin/echo_client" "${client_args[@]}" || status=$?

kill "$server_pid" 2>/dev/null || true
wait "$server_pid" 2>/dev/null || true
server_pid=

if [[ $status -eq 0 ]]; then
    echo "demo: success"
else
    echo "demo: the echo client failed (status $status); server output:" >&2
    cat "$tmp/server.log" >&2
fi
exit "$status"
