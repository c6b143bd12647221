#!/usr/bin/env bash
# Install Headwater with its test dependencies into .venv and run the test suite.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
fi
.venv/bin/python -m pip install --quiet --upgrade pip
.venv/bin/python -m pip install --quiet -e '.[test]'
./scripts/install-test-deps.sh
exec .venv/bin/python -m pytest -q -p no:cacheprovider "$@"
