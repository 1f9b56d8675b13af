#!/usr/bin/env bash
# The JobSet CRD alone, for the fast tier's JobSet schema checks (tests/operator): the same
# file tests/controlplane/build.sh copies, from the same pinned module source, fetched with
# `go mod download` (checked against jobset/go.sum; nothing is compiled). Without Go it says
# so and those tests skip. Idempotent: a second run returns at once.
# fast tier: yes
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../controlplane"

crd=bin/crds/jobset.x-k8s.io_jobsets.yaml
[ -s "$crd" ] && exit 0
if ! command -v go >/dev/null; then
  echo "no Go on PATH: the JobSet schema tests will skip (bash tests/run.sh --all installs Go)"
  exit 0
fi
version=$(sed -n 's/^JOBSET_VERSION=//p' build.sh)
src=$(cd jobset && go mod download -json "sigs.k8s.io/jobset@$version" | python3 -c 'import json,sys; print(json.load(sys.stdin)["Dir"])')
# install, not cp: the module cache is read-only, and build.sh later copies over this file.
install -D -m 0644 "$src/config/components/crd/bases/jobset.x-k8s.io_jobsets.yaml" "$crd"
echo "JobSet $version CRD from its module source"
