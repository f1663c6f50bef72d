#!/usr/bin/env bash
# Keeps the project's own files honest with each other:
# - README.md's Debian package list is the one tests/deps.sh installs;
# - tests/needs.sh skips (status 77) and names a missing tool;
# - `tests/run-all.sh --help` prints a usage text and exits 0 without
#   running any stage;
# - CHANGELOG.md has a section for the version in include/tether/version.h,
#   and LICENSE is the MIT license.
#
#   bash tests/integration/project_files.sh SOURCE_DIR
# shellcheck disable=SC2317
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

# ---- CHANGELOG and LICENSE -----------------------------------------------------------

version=$(awk '/#define TETHER_VERSION_(MAJOR|MINOR|PATCH) /{v = v (v == "" ? "" : ".") $3} END {print v}' \
    "$src/include/tether/version.h")
check "CHANGELOG.md has a section for $version (version.h)" \
    grep -qE "^## \[$version\]( - [0-9]{4}-[0-9]{2}-[0-9]{2})?$" "$src/CHANGELOG.md"
check "CHANGELOG.md has an Unreleased section" grep -qx '## \[Unreleased\]' "$src/CHANGELOG.md"
check "LICENSE is the MIT license" grep -qx 'MIT License' "$src/LICENSE"

th_end
