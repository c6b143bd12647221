#!/usr/bin/env bash
# Install Headwater with its test dependencies into .venv and run the test suite.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
echo "test.sh: installing Headwater and its test dependencies into .venv (pip), then, if missing," \
  "prometheus and chromium from Debian (apt-get, system-wide; see scripts/install-test-deps.sh)" >&2
if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
fi
.venv/bin/python -m pip install --quiet --upgrade pip
.venv/bin/python -m pip install --quiet -e '.[test]'
./scripts/install-test-deps.sh
# the dependency direction between packages (pyproject.toml, [tool.importlinter])
.venv/bin/lint-imports --no-cache
export HYPOTHESIS_PROFILE=${HYPOTHESIS_PROFILE:-ci}  # example counts sized for CI (tests/examples.py)
# Four workers on two cores: most tests wait on servers, brokers and browsers, not on the
# CPU. A test file stays on one worker (its servers and brokers are started once).
exec .venv/bin/python -m pytest -q -p no:cacheprovider -n 4 --dist loadfile "$@"
