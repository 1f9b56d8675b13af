#!/usr/bin/env bash
# The test command: sets up everything the tests need from this repository's own files
# (virtualenv, Python packages, the test control plane, emulators), then runs pytest.
# Idempotent and cached: a second run only runs the tests. Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

if [ ! -x .venv/bin/python ]; then
  python3 -m venv .venv
fi
.venv/bin/python -m pip install -q --upgrade pip
.venv/bin/python -m pip install -q -e '.[worker,operator,test,parity]'

# Each tier that needs more than Python packages brings its own setup script.
for step in tests/setup.d/*.sh; do
  [ -e "$step" ] || continue
  echo "== setup: $step"
  bash "$step"
done

exec .venv/bin/python -m pytest "$@"
