#!/usr/bin/env bash
# Install diffuserve with its test dependencies into .venv and run the whole test suite.
# This is the README's test command and what CI runs (.ci/run). Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
[ -x .venv/bin/python ] || python3 -m venv .venv
export PATH="$PWD/.venv/bin:$PATH"
# torch first and pinned: 2.13.0 is the CPU build CI machines carry; an unpinned torch
# would pull a multi-GB CUDA build.
python -m pip install -q torch==2.13.0
# The same install script the Docker image runs.
PYTHON=python sh docker/install.sh dev --editable
# The metrics tests scrape the server with a real Prometheus (Debian package).
if ! command -v prometheus >/dev/null 2>&1 && command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" = 0 ]; then
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq prometheus >/dev/null
fi
python -m pytest -q "$@"
