#!/usr/bin/env bash
# Install test: installs a build into a temporary prefix and builds the
# consumer program against it the ways a user would:
#   (a) pkg-config, shared library (run through an rpath);
#   (b) pkg-config --static, against libtether.a;
#   (c) CMake find_package(tether), both tether::tether and tether::tether_static;
# and checks the installed files: SONAME, exported symbols, C++ compatibility
# of the headers.
#
# Usage: run.sh SOURCE_DIR BUILD_DIR
# Environment: CC (default cc), TETHER_CONSUMER_FLAGS (extra compile and link
# flags, e.g. the sanitizer flags the library was built with).
set -euo pipefail

if [[ $# -ne 2 ]]; then
    echo "usage: $0 SOURCE_DIR BUILD_DIR" >&2
    exit 2
fi
src=$(cd "$1" && pwd)
build=$(cd "$2" && pwd)
cc=${CC:-cc}
read -r -a extra_flags <<<"${TETHER_CONSUMER_FLAGS:-}"

tmp=$(mktemp -d "${TMPDIR:-/tmp}/tether-install.XXXXXX")
trap 'rm -rf "$tmp"' EXIT
prefix=$tmp/prefix

step() { printf '== %s\n' "$*"; }
fail() {
    printf 'FAIL: %s\n' "$*" >&2
    exit 1
}

# Runs a consumer binary and checks its one line of output.
check_run() {
    local bin=$1 out
    if ! out=$("$bin" 2>&1); then
        printf '%s\n' "$out" >&2
        fail "$bin exited with an error"
    fi
    [[ $out == "consumer ok $version" ]] || fail "$bin printed '$out', expected 'consumer ok $version'"
    printf '   %s: %s\n' "${bin##*/}" "$out"
}

step "install into a temporary prefix"
cmake --install "$build" --prefix "$prefix" >"$tmp/install.log" 2>&1 || {
    cat "$tmp/install.log" >&2
    fail "cmake --install"
}

pc=$(find "$prefix" -name tether.pc -path '*/pkgconfig/*' | head -n 1)
[[ -n $pc ]] || fail "tether.pc was not installed"
libdir=$(dirname "$(dirname "$pc")")
export PKG_CONFIG_PATH=${pc%/*}
version=$(pkg-config --modversion tether)

for f in "$prefix/include/tether/tether.h" "$libdir/libtether.so" "$libdir/libtether.a" \
    "$libdir/cmake/tether/tetherConfig.cmake" "$libdir/cmake/tether/tetherConfigVersion.cmake" \
    "$libdir/cmake/tether/tetherTargets.cmake"; do
    [[ -e $f ]] || fail "not installed: ${f#"$prefix"/}"
done
[[ $(pkg-config --variable=libdir tether) -ef $libdir ]] || fail "tether.pc libdir is not $libdir"

step "shared library: SONAME and exported symbols"
soname=$(readelf -d "$libdir/libtether.so" | sed -n 's/.*(SONAME).*\[\(.*\)\]/\1/p')
[[ $soname == "libtether.so.${version%%.*}" ]] || fail "SONAME is '$soname'"
# Only the public API may be exported: tether_* but never the internal tether__*.
bad=$(nm -D --defined-only "$libdir/libtether.so" | awk '{print $3}' |
    grep -v -E '^tether_[a-z0-9]' || true)
if [[ -n $bad ]]; then
    printf '%s\n' "$bad" >&2
    fail "libtether.so exports symbols outside the public API"
fi
printf '   %s, %s public symbols\n' "$soname" \
    "$(nm -D --defined-only "$libdir/libtether.so" | wc -l)"

warn=(-std=c11 -Wall -Wextra -Wpedantic -Werror)
read -r -a cflags <<<"$(pkg-config --cflags tether)"

step "(a) pkg-config, shared"
read -r -a libs <<<"$(pkg-config --libs tether)"
"$cc" "${warn[@]}" "${extra_flags[@]}" "${cflags[@]}" "$src/tests/install/consumer.c" \
    -o "$tmp/app_pc" "${libs[@]}" "-Wl,-rpath,$libdir"
readelf -d "$tmp/app_pc" | grep -q "NEEDED.*\[$soname\]" || fail "app_pc does not link $soname"
check_run "$tmp/app_pc"

step "(b) pkg-config --static, libtether.a"
read -r -a libs <<<"$(pkg-config --static --libs tether)"
for i in "${!libs[@]}"; do
    [[ ${libs[$i]} == -ltether ]] && libs[i]=-l:libtether.a
done
"$cc" "${warn[@]}" "${extra_flags[@]}" "${cflags[@]}" "$src/tests/install/consumer.c" \
    -o "$tmp/app_pc_static" "${libs[@]}"
if readelf -d "$tmp/app_pc_static" | grep -q 'NEEDED.*libtether'; then
    fail "app_pc_static links libtether dynamically"
fi
check_run "$tmp/app_pc_static"

step "(c) CMake find_package(tether)"
flags="${TETHER_CONSUMER_FLAGS:-}"
if ! {
    cmake -S "$src/tests/install" -B "$tmp/consumer" -DCMAKE_PREFIX_PATH="$prefix" \
        -DCMAKE_C_COMPILER="$cc" -DCMAKE_BUILD_TYPE=Release \
        -DCMAKE_C_FLAGS="-Wall -Wextra -Wpedantic -Werror $flags" \
        -DCMAKE_EXE_LINKER_FLAGS="$flags" &&
        cmake --build "$tmp/consumer"
} >"$tmp/consumer.log" 2>&1; then
    cat "$tmp/consumer.log" >&2
    fail "building the CMake consumer"
fi
readelf -d "$tmp/consumer/app" | grep -q "NEEDED.*\[$soname\]" || fail "app does not link $soname"
if readelf -d "$tmp/consumer/app_static" | grep -q 'NEEDED.*libtether'; then
    fail "app_static links libtether dynamically"
fi
check_run "$tmp/consumer/app"
check_run "$tmp/consumer/app_static"

if command -v c++ >/dev/null 2>&1; then
    step "public headers compile as C++"
    c++ -std=c++11 -Wall -Wextra -Wpedantic -Werror -fsyntax-only -x c++ "${cflags[@]}" - \
        <<<'#include <tether/tether.h>
int main() { return tether_version() == nullptr; }'
fi

echo "install test: all ok"
