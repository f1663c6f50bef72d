#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# Install test: installs a build into a temporary prefix and builds the
# consumer program against it the ways a user would:
#   (a) pkg-config, shared library (run through an rpath);
#   (b) pkg-config --static, against libtether.a;
#   (c) CMake find_package(tether), both tether::tether and tether::tether_static;
#   (d) README.md's five-minute tour, built and run with the README's own
#       commands (`cc -o server server.c $(pkg-config ...)`), with no rpath,
#       finding the library through LD_LIBRARY_PATH as the README says for
#       a prefix other than /usr/local;
# and checks the installed files: SONAME, exported symbols, no RUNPATH,
# C++ compatibility of the headers, the man pages (`man tether_conn_send`)
# and README, LICENSE and CHANGELOG under share/doc/tether.
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

step "each public header compiles on its own"
# A declaration that lives in another header than the one that documents it
# (tether_version() once did) fails here as an implicit declaration.
for h in "$prefix"/include/tether/*.h; do
    printf '#include <tether/%s>\nint main(void) { return 0; }\n' "${h##*/}" >"$tmp/hdr.c"
    "$cc" "${warn[@]}" "${cflags[@]}" -fsyntax-only "$tmp/hdr.c" || fail "tether/${h##*/} does not compile alone"
done
printf '#include <tether/version.h>\n#include <tether/framing.h>\nint main(void) { return tether_version() == 0 || tether_framer_line() == 0; }\n' >"$tmp/alone.c"
"$cc" "${warn[@]}" "${extra_flags[@]}" "${cflags[@]}" "$tmp/alone.c" -o "$tmp/alone" \
    "-L$libdir" -ltether "-Wl,-rpath,$libdir" ||
    fail "tether_version() / tether_framer_line() are not declared in version.h / framing.h"
"$tmp/alone" || fail "tether_version() or tether_framer_line() returned NULL"

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

step "(d) the README's tour with the README's commands, no rpath"
# The tour's programs and the `cc -o ...` lines of its run block, as written.
extract() {
    awk -v marker="<!-- tour:$1 -->" -v lang="$2" '
        $0 == marker { armed = 1; next }
        armed && !inside && $0 ~ "^```" lang "[[:space:]]*$" { inside = 1; next }
        inside && /^```[[:space:]]*$/ { exit }
        inside { print }
    ' "$src/README.md"
}
mkdir "$tmp/tour"
extract server c >"$tmp/tour/server.c"
extract client c >"$tmp/tour/client.c"
mapfile -t cc_lines < <(extract run sh | grep -E '^cc -o ')
[[ ${#cc_lines[@]} -eq 2 && -s $tmp/tour/server.c && -s $tmp/tour/client.c ]] ||
    fail "README.md: no tour server, client or two 'cc -o' lines after <!-- tour:run -->"
grep -qx 'ldconfig .*' <(extract run sh) || fail "README.md's tour does not run ldconfig after installing"
grep -qF "LD_LIBRARY_PATH=DIR/lib" "$src/README.md" ||
    fail "README.md does not say to set LD_LIBRARY_PATH for another prefix"
for line in "${cc_lines[@]}"; do
    # "cc" is $CC with the build's sanitizer flags, if any; the rest as written.
    (cd "$tmp/tour" && eval "\"\$cc\" \"\${extra_flags[@]}\" ${line#cc }") ||
        fail "README.md's '$line' failed against the installed tether"
done
for prog in server client; do
    if readelf -d "$tmp/tour/$prog" | grep -qE 'RPATH|RUNPATH'; then
        fail "the tour's $prog has an rpath: $(readelf -d "$tmp/tour/$prog" | grep -E 'RPATH|RUNPATH')"
    fi
done
if readelf -d "$libdir/libtether.so" | grep -qE 'RPATH|RUNPATH'; then
    fail "the installed libtether.so has an rpath"
fi
export LD_LIBRARY_PATH=$libdir
: >"$tmp/tour/server.out" # exists before the loop below reads it
"$tmp/tour/server" tcp://127.0.0.1:0 >"$tmp/tour/server.out" 2>&1 &
server_pid=$!
trap 'kill -KILL "$server_pid" 2>/dev/null || true; wait "$server_pid" 2>/dev/null || true; rm -rf "$tmp"' EXIT
url=
for ((i = 0; i < 600; i++)); do
    url=$(sed -n 's/^listening on //p' "$tmp/tour/server.out" || true)
    [[ -n $url ]] && break
    kill -0 "$server_pid" 2>/dev/null || break
    sleep 0.05
done
[[ -n $url ]] || fail "the installed tour server did not start: $(cat "$tmp/tour/server.out")"
out=$(timeout -k 5 30 "$tmp/tour/client" "$url" 2>&1) || fail "the installed tour client: $out"
[[ $out == hello ]] || fail "the installed tour client printed '$out', expected 'hello'"
kill -TERM "$server_pid" 2>/dev/null || true
wait "$server_pid" 2>/dev/null || true
unset LD_LIBRARY_PATH
printf '   server and client built as the README says, no rpath: %s\n' "$out"

step "man pages and documents"
mandir=$prefix/share/man
if [[ -d $mandir/man3 ]]; then
    for page in tether_conn_send tether_loop_new tether_conn_opts tether-conn; do
        found=$(MANPATH=$mandir man -w "$page" 2>/dev/null) || fail "man -w $page: no page under $mandir"
        [[ $found == "$mandir"/* ]] || fail "man -w $page found $found, not the installed one"
    done
    MANWIDTH=80 MANPATH=$mandir man tether_conn_send 2>/dev/null | grep -q 'int tether_conn_send (tether_conn \*c' ||
        fail "man tether_conn_send does not show the function"
    MANWIDTH=80 MANPATH=$mandir man tether_conn_send 2>/dev/null | grep -qF "$version" ||
        fail "man tether_conn_send does not show the version $version"
    for page in size len name log; do
        [[ ! -e $mandir/man3/$page.3 ]] || fail "installed $page.3, which shadows unrelated pages"
    done
    printf '   %s pages in share/man/man3; man tether_conn_send works\n' "$(find "$mandir/man3" -name '*.3' | wc -l)"
elif grep -q '^TETHER_BUILD_MAN:BOOL=ON' "$build/CMakeCache.txt"; then
    fail "TETHER_BUILD_MAN is ON but no man pages were installed"
else
    printf '   no man pages (TETHER_BUILD_MAN is OFF: doxygen was not found)\n'
fi
for f in README.md LICENSE CHANGELOG.md; do
    cmp -s "$src/$f" "$prefix/share/doc/tether/$f" || fail "share/doc/tether/$f is not installed"
done
printf '   share/doc/tether: README.md LICENSE CHANGELOG.md\n'

# Builds the consumer in mode $1 into $tmp/$2 with extra cmake arguments;
# the log goes to $tmp/$2.log. Returns cmake's status.
consumer_build() {
    local mode=$1 dir=$2
    shift 2
    {
        cmake -S "$src/tests/install" -B "$tmp/$dir" -DCMAKE_PREFIX_PATH="$prefix" \
            -DTETHER_CONSUMER_MODE="$mode" -DCMAKE_C_COMPILER="$cc" -DCMAKE_BUILD_TYPE=Release \
            -DCMAKE_C_FLAGS="-Wall -Wextra -Wpedantic -Werror $flags" \
            -DCMAKE_EXE_LINKER_FLAGS="$flags" "$@" &&
            cmake --build "$tmp/$dir"
    } >"$tmp/$dir.log" 2>&1
}

step "(e) find_package(tether) where OpenSSL and c-ares development files are hidden"
# A machine with only the runtime libraries: CMake's FindOpenSSL is shadowed
# by one that finds nothing and leaves a mark when it runs, OPENSSL_ROOT_DIR
# points nowhere, and pkg-config sees an empty directory instead of the
# system's .pc files (so libcares.pc is invisible).
mkdir -p "$tmp/hidden/modules" "$tmp/hidden/pkgconfig"
cat >"$tmp/hidden/modules/FindOpenSSL.cmake" <<'CMAKE'
file(APPEND "${CMAKE_BINARY_DIR}/openssl-looked-up" "FindOpenSSL ran\n")
set(OpenSSL_FOUND FALSE)
set(OPENSSL_FOUND FALSE)
CMAKE
hidden=(-DCMAKE_MODULE_PATH="$tmp/hidden/modules" -DOPENSSL_ROOT_DIR="$tmp/hidden/nowhere"
    -DCMAKE_FIND_PACKAGE_PREFER_CONFIG=OFF)
export_hidden() { PKG_CONFIG_LIBDIR=$tmp/hidden/pkgconfig PKG_CONFIG_PATH= "$@"; }
# The trick must really hide them: a static consumer fails, naming OpenSSL.
if export_hidden consumer_build static hidden_static "${hidden[@]}"; then
    cat "$tmp/hidden_static.log" >&2
    fail "tether::tether_static configured although OpenSSL and c-ares are hidden"
fi
grep -q "tether::tether_static needs the development files of: OpenSSL 3" \
    "$tmp/hidden_static.log" || {
    cat "$tmp/hidden_static.log" >&2
    fail "the static component's failure does not name OpenSSL"
}
grep -q "c-ares" "$tmp/hidden_static.log" || fail "the static component's failure does not name c-ares"
printf '   COMPONENTS static: refused, naming OpenSSL 3 and c-ares\n'
for mode in nodeps shared; do
    if ! export_hidden consumer_build "$mode" "hidden_$mode" "${hidden[@]}"; then
        cat "$tmp/hidden_$mode.log" >&2
        fail "a shared-library consumer ($mode) needs OpenSSL or c-ares development files"
    fi
    readelf -d "$tmp/hidden_$mode/app" | grep -q "NEEDED.*\[$soname\]" ||
        fail "hidden_$mode/app does not link $soname"
    check_run "$tmp/hidden_$mode/app"
done
[[ ! -e $tmp/hidden_shared/openssl-looked-up ]] ||
    fail "COMPONENTS shared still looked OpenSSL up"
[[ -e $tmp/hidden_nodeps/openssl-looked-up ]] ||
    fail "the hidden FindOpenSSL was not used, so the test proves nothing"

if command -v c++ >/dev/null 2>&1; then
    step "public headers compile as C++"
    c++ -std=c++11 -Wall -Wextra -Wpedantic -Werror -fsyntax-only -x c++ "${cflags[@]}" - \
        <<<'#include <tether/tether.h>
int main() { return tether_version() == nullptr; }'
fi

echo "install test: all ok"
