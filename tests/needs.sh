#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# Runs a test only if the tools it needs are there; otherwise says which
# one is missing and exits with 77, which ctest reports as "Skipped" (the
# tests that use it have SKIP_RETURN_CODE 77). So a test is never dropped
# silently: `ctest` lists it as skipped and `tests/run-all.sh` prints the
# reason.
#
#   bash tests/needs.sh TOOL=PACKAGE... -- COMMAND ARGS...
#
# TOOL is a command name or an absolute path; PACKAGE is the Debian package
# that provides it (tests/deps.sh installs them all). The check runs when
# the test runs, so installing the tool later needs no new cmake run.
set -euo pipefail

while [[ $# -gt 0 && $1 != -- ]]; do
    tool=${1%%=*}
    pkg=${1#*=}
    shift
    if [[ $tool == /* ]]; then
        [[ -x $tool ]] && continue
    elif command -v "$tool" >/dev/null 2>&1; then
        continue
    fi
    echo "SKIPPED: needs $tool (Debian package $pkg; tests/deps.sh installs it)"
    exit 77
done
if [[ $# -lt 2 || $1 != -- ]]; then
    echo "usage: $0 TOOL=PACKAGE... -- COMMAND ARGS..." >&2
    exit 2
fi
shift
exec "$@"
