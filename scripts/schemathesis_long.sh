#!/usr/bin/env bash
# The long schemathesis run (docs/api.md records its result): all checks, the coverage and
# fuzzing phases, against a real `diffuserve serve` on a tiny random checkpoint.
#   scripts/schemathesis_long.sh [MAX_EXAMPLES_PER_OPERATION (default 600)] [--seed N]
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-.venv/bin/python}
exec "$PY" tests/server/schemathesis_run.py --max-examples "${1:-600}" "${@:2}"
