#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# tether's stress suite: one command for every attack (tests/stress/README.md).
#
#   tests/stress/run.sh [--short | --long] [--minutes M] [--only NAME,...]
#                       [--server PATH] [--bin-dir DIR] [--asan] [--strict]
#                       [--list] [--keep]
#
# --short (the default, <= 2 minutes) is the ctest test stress_short;
# --long runs issue #9's full counts and windows (about 8 minutes plus the
# soak's --minutes). The examples come from build/examples unless --bin-dir
# or --server say otherwise. PYTHON3 picks the interpreter. The suite itself
# (stress.py) reaps every process it starts and bounds every attack.
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
exec "${PYTHON3:-python3}" "$here/stress.py" "$@"
