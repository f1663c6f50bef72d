# shellcheck shell=bash
# Installs the Debian packages tether needs to build, test and document
# itself, if any are missing. Sourced by tests/run-all.sh and examples/demo.sh:
#
#   source tests/deps.sh
#   tether_install_deps
#
# Only packages that dpkg does not report as installed are installed, so a
# machine that has everything is left alone (and needs no network).

# Everything the build, the tests and the docs use, in one place:
# compilers and build tools, OpenSSL 3 (library and CLI, for test
# certificates), c-ares, check, doxygen, python3 (test helpers), dnsmasq and
# iproute2 (integration tests for DNS and network faults), clang and its
# sanitizer/libFuzzer runtimes (fuzz targets; a Recommends of clang, which
# --no-install-recommends would skip), libuv and GLib (the embedding tests
# and examples/embed_libuv.c drive tether from those loops; never a
# dependency of libtether itself).
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
    libuv1-dev
    libglib2.0-dev
)

# Prints the packages from TETHER_APT_PACKAGES that are not installed.
tether_missing_deps() {
    local pkg
    for pkg in "${TETHER_APT_PACKAGES[@]}"; do
        if ! dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q 'install ok installed'; then
            printf '%s\n' "$pkg"
        fi
    done
}

tether_install_deps() {
    local missing sudo=()
    if ! command -v dpkg-query >/dev/null 2>&1; then
        echo "deps: dpkg-query not found; this script expects Debian 12." >&2
        echo "deps: install these by hand: ${TETHER_APT_PACKAGES[*]}" >&2
        return 1
    fi
    mapfile -t missing < <(tether_missing_deps)
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
    # Try without `apt-get update` first: it is slow and needs the network,
    # and the package lists are usually recent enough.
    if ! "${apt[@]}" "${missing[@]}" </dev/null; then
        echo "deps: install failed; running apt-get update and retrying"
        "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get -q update </dev/null
        "${apt[@]}" "${missing[@]}" </dev/null
    fi
}
