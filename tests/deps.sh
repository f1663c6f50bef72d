# SPDX-License-Identifier: MIT
# shellcheck shell=bash
# Installs the Debian packages tether needs, if any are missing. Sourced by
# tests/run-all.sh and examples/demo.sh:
#
#   source tests/deps.sh
#   tether_install_deps                                # everything
#   tether_install_deps "${TETHER_DEMO_PACKAGES[@]}"   # only these
#
# Only packages that dpkg does not report as installed are installed, so a
# machine that has everything is left alone (and needs no network).
# README.md's dependency list is checked against TETHER_APT_PACKAGES by
# tests/integration/project_files.sh: change both together.

# Everything the build, the tests and the docs use, in one place:
# compilers and build tools, OpenSSL 3 (library and CLI, for test
# certificates), c-ares, check, doxygen, python3 (test helpers), dnsmasq and
# iproute2 (integration tests for DNS and network faults), clang and its
# sanitizer/libFuzzer runtimes (fuzz targets; a Recommends of clang, which
# --no-install-recommends would skip), llvm for llvm-symbolizer (function
# names and lines in the fuzz targets' crash reports), libuv and GLib (the
# embedding tests and examples/embed_libuv.c drive tether from those loops;
# never a dependency of libtether itself), haproxy (the PROXY protocol
# test puts the real load balancer in front of tether servers), libevent,
# ZeroMQ and NNG (tests/bench/peers/: the comparison peers; valgrind and strace,
# which tests/bench/instr.py uses, are optional), chromium (headless, for
# tests/integration/chat_browser.sh: a real browser runs
# examples/chat.html).
TETHER_APT_PACKAGES=(
    build-essential
    cmake
    pkg-config
    libssl-dev
    openssl
    libc-ares-dev
    check
    doxygen
    python3
    dnsmasq-base
    iproute2
    clang
    libclang-rt-dev
    llvm
    libuv1-dev
    libglib2.0-dev
    haproxy
    libevent-dev
    libzmq3-dev
    libnng-dev
    chromium
)

# What examples/demo.sh needs to build the library and the examples (no
# tests, no docs): a compiler, CMake, pkg-config, OpenSSL and c-ares.
# shellcheck disable=SC2034 # used by examples/demo.sh
TETHER_DEMO_PACKAGES=(
    build-essential
    cmake
    pkg-config
    libssl-dev
    libc-ares-dev
)

# tether_missing_deps [PACKAGE...]: prints those of the packages (default:
# TETHER_APT_PACKAGES) that are not installed.
tether_missing_deps() {
    local pkg
    if [[ $# -eq 0 ]]; then
        set -- "${TETHER_APT_PACKAGES[@]}"
    fi
    for pkg in "$@"; do
        if ! dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q 'install ok installed'; then
            printf '%s\n' "$pkg"
        fi
    done
}

# tether_install_deps [PACKAGE...]: installs those of the packages
# (default: TETHER_APT_PACKAGES) that are missing.
tether_install_deps() {
    local missing sudo=()
    if [[ $# -eq 0 ]]; then
        set -- "${TETHER_APT_PACKAGES[@]}"
    fi
    if ! command -v dpkg-query >/dev/null 2>&1; then
        echo "deps: dpkg-query not found; this script expects Debian 12." >&2
        echo "deps: install these by hand: $*" >&2
        return 1
    fi
    mapfile -t missing < <(tether_missing_deps "$@")
    if [[ ${#missing[@]} -eq 0 ]]; then
        return 0
    fi
    if [[ $(id -u) -ne 0 ]]; then
        if command -v sudo >/dev/null 2>&1; then
            sudo=(sudo)
        else
            echo "deps: missing packages: ${missing[*]}; run as root to install them." >&2
            return 1
        fi
    fi
    echo "deps: installing ${missing[*]}"
    local apt=("${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get -y -q
        -o Dpkg::Use-Pty=0 install --no-install-recommends)
    # A fresh image may have no package lists at all: every install would
    # fail with "Unable to locate package", so fetch them first, quietly.
    if ! compgen -G '/var/lib/apt/lists/*_Packages' >/dev/null; then
        echo "deps: no apt package lists yet; running apt-get update"
        "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get -qq update </dev/null >/dev/null
    fi
    # Otherwise try without `apt-get update` first: it is slow and needs the
    # network, and the package lists are usually recent enough.
    if ! "${apt[@]}" "${missing[@]}" </dev/null; then
        echo "deps: install failed; running apt-get update and retrying"
        "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get -q update </dev/null
        "${apt[@]}" "${missing[@]}" </dev/null
    fi
}

# Node's ws package, the peer of the WebSocket interoperability test
# (tests/interop/node/ws_interop.sh): installed from the npm registry at
# the version tests/interop/node/package-lock.json pins, into
# tests/interop/node/node_modules (git-ignored). It needs node and npm;
# when either command is missing, Debian's nodejs and npm packages are
# installed (a node from elsewhere, such as NodeSource's, which bundles
# npm, is used as it is, so that the two never conflict).
tether_install_node_deps() {
    local dir missing=()
    dir="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)/interop/node"
    command -v node >/dev/null 2>&1 || missing+=(nodejs)
    command -v npm >/dev/null 2>&1 || missing+=(npm)
    if [[ ${#missing[@]} -gt 0 ]]; then
        tether_install_deps "${missing[@]}" || return 1
    fi
    if [[ -f $dir/node_modules/ws/package.json ]]; then
        return 0
    fi
    echo "deps: npm ci in ${dir} (Node's ws package)"
    (cd "$dir" && npm ci --no-audit --no-fund --loglevel=error)
}
