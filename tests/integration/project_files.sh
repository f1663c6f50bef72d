#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# Keeps the project's own files honest with each other:
# - README.md's Debian package list is the one tests/deps.sh installs;
# - tests/needs.sh skips (status 77) and names a missing tool;
# - `tests/run-all.sh --help` prints a usage text and exits 0 without
#   running any stage;
# - cmake/check-docs-html.py (the docs target's check) fails on broken
#   bold and passes clean pages;
# - CHANGELOG.md has a section for the version in include/tether/version.h,
#   and LICENSE is the MIT license;
# - every source, script and build file names its license (an SPDX line in
#   its first two lines).
#
#   bash tests/integration/project_files.sh SOURCE_DIR
# shellcheck disable=SC2317,SC2016
set -euo pipefail

if [[ $# -ne 1 ]]; then
    echo "usage: $0 SOURCE_DIR" >&2
    exit 2
fi
src=$(cd "$1" && pwd)

# shellcheck source=tests/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/../lib.sh"
th_begin project

# ---- README's dependency list = tests/deps.sh ------------------------------------

# The words after `apt-get install` in the ```sh block after the deps marker,
# backslash continuations joined.
readme_pkgs=$(awk '
    /^<!-- deps:/ { armed = 1; next }
    armed && /^```sh/ { inside = 1; next }
    inside && /^```/ { exit }
    inside { sub(/\\$/, ""); printf "%s ", $0 }
' "$src/README.md" | sed -n 's/.*apt-get install //p' | tr -s ' ' '\n' | sed '/^$/d' | sort)
deps_pkgs=$(
    # shellcheck source=tests/deps.sh
    source "$src/tests/deps.sh"
    printf '%s\n' "${TETHER_APT_PACKAGES[@]}" | sort
)
demo_pkgs=$(
    # shellcheck source=tests/deps.sh
    source "$src/tests/deps.sh"
    printf '%s\n' "${TETHER_DEMO_PACKAGES[@]}" | sort
)
if [[ -z $readme_pkgs ]]; then
    fail "README.md has no \`apt-get install\` block after a '<!-- deps:' marker"
elif [[ $readme_pkgs == "$deps_pkgs" ]]; then
    pass "README.md lists the $(wc -l <<<"$deps_pkgs") packages of tests/deps.sh"
else
    fail "README.md's package list differs from tests/deps.sh (< README, > deps.sh):"
    diff <(echo "$readme_pkgs") <(echo "$deps_pkgs") | grep '^[<>]' | sed 's/^/    /' >&2 || true
fi
extra=$(comm -23 <(echo "$demo_pkgs") <(echo "$deps_pkgs"))
check "the demo's packages are a subset of the full list${extra:+ (not: $extra)}" test -z "$extra"

# ---- tests/needs.sh -------------------------------------------------------------------

status=0
out=$(bash "$src/tests/needs.sh" /nonexistent/tool=some-package true=coreutils -- true) ||
    status=$?
check "needs.sh without the tool exits 77 and names it: $out" \
    test "$status" -eq 77 -a "$out" = \
    "SKIPPED: needs /nonexistent/tool (Debian package some-package; tests/deps.sh installs it)"
status=0
out=$(bash "$src/tests/needs.sh" bash=bash -- echo ran) || status=$?
check "needs.sh with the tool runs the command" test "$status" -eq 0 -a "$out" = ran

# ---- run-all.sh --help ---------------------------------------------------------------

for arg in --help -h; do
    status=0
    out=$(timeout -k 5 30 bash "$src/tests/run-all.sh" "$arg" 2>&1) || status=$?
    if [[ $status -eq 0 && $out == "usage: bash tests/run-all.sh "* ]] &&
        grep -q 'TETHER_SKIP_' <<<"$out" && ! grep -q '^====' <<<"$out"; then
        pass "run-all.sh $arg prints its usage ($(wc -l <<<"$out") lines) and runs nothing"
    else
        fail "run-all.sh $arg: status $status, output:"
        head -n 5 <<<"$out" | sed 's/^/    /' >&2
    fi
done

# ---- cmake/check-docs-html.py catches what doxygen 1.9.4 renders wrong --------------

if command -v python3 >/dev/null 2>&1; then
    mkdir -p "$tmp/html-good" "$tmp/html-bad" "$tmp/html-runaway"
    cat >"$tmp/html-good/index.html" <<'HTML'
<html><body><div id="projectname">tether<span id="projectnumber">&#160;1.2.3</span></div>
<ul><li><b>Heartbeats</b> (<code>heartbeat_ms</code>): pings.</li></ul>
<div class="fragment">int main(int argc, char **argv)</div>
<table><tr><td class="memname">int tether_loop_new</td><td class="paramtype">tether_loop **&#160;</td></tr></table>
</body></html>
HTML
    cat >"$tmp/html-bad/index.html" <<'HTML'
<html><body><ul><li>**Heartbeats (<code>heartbeat_ms</code>):** pings.</li></ul></body></html>
HTML
    cat >"$tmp/html-runaway/index.html" <<'HTML'
<html><body><p><b>1. Held by the client.</p><p>More text</b> in the next paragraph.</p></body></html>
HTML
    check "check-docs-html.py passes clean HTML with C pointers in code" \
        python3 "$src/cmake/check-docs-html.py" --version 1.2.3 "$tmp/html-good"
    check "check-docs-html.py fails on a wrong version" \
        bash -c '! python3 "$0" --version 9.9.9 "$1" >/dev/null 2>&1' \
        "$src/cmake/check-docs-html.py" "$tmp/html-good"
    check "check-docs-html.py fails on a literal **" \
        bash -c '! python3 "$0" "$1" >/dev/null 2>&1' "$src/cmake/check-docs-html.py" "$tmp/html-bad"
    check "check-docs-html.py fails on bold that crosses a paragraph" \
        bash -c '! python3 "$0" "$1" >/dev/null 2>&1' "$src/cmake/check-docs-html.py" "$tmp/html-runaway"
fi

# ---- CHANGELOG and LICENSE -----------------------------------------------------------

version=$(awk '/#define TETHER_VERSION_(MAJOR|MINOR|PATCH) /{v = v (v == "" ? "" : ".") $3} END {print v}' \
    "$src/include/tether/version.h")
check "CHANGELOG.md has a section for $version (version.h)" \
    grep -qE "^## \[$version\]( - [0-9]{4}-[0-9]{2}-[0-9]{2})?$" "$src/CHANGELOG.md"
check "CHANGELOG.md has an Unreleased section" grep -qx '## \[Unreleased\]' "$src/CHANGELOG.md"
check "LICENSE is the MIT license" grep -qx 'MIT License' "$src/LICENSE"

# ---- SPDX identifiers -------------------------------------------------------------------

# Every tracked C file, header, script and build file carries
# "SPDX-License-Identifier: MIT" in its first two lines (after a shebang).
missing=()
if git -C "$src" rev-parse --git-dir >/dev/null 2>&1; then
    while IFS= read -r f; do
        case $f in
        *.c | *.h | *.sh | *.py | *CMakeLists.txt | *.cmake | *.cmake.in | .ci/run) ;;
        *) continue ;;
        esac
        if ! head -n 2 "$src/$f" | grep -q 'SPDX-License-Identifier: MIT'; then
            missing+=("$f")
        fi
    done < <(git -C "$src" ls-files)
    check "every source and build file has an SPDX line${missing[0]:+ (not: ${missing[*]:0:5})}" \
        test ${#missing[@]} -eq 0
fi

th_end
