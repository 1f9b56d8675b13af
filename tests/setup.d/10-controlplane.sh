#!/usr/bin/env bash
# The test control plane: kube-apiserver and etcd built from the Go modules pinned in
# tests/controlplane/go.mod, and the JobSet CRD from its Go module (tests/controlplane/build.sh).
# Needs Go >= 1.26 (k8s.io/kubernetes v1.37 asks for it). A machine without it gets the
# official toolchain from the Go module proxy (golang.org/toolchain, hash pinned below),
# cached under ~/.cache/layertap. Idempotent: a second run returns at once.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."

GO_VERSION=1.26.0
GO_TOOLCHAIN_SHA256=38461905b98c59173672814302e222ab43b652274bc0c95817b08b71ab66b705  # linux-amd64

go_is_new_enough() {
  command -v go >/dev/null && [ "$(printf '%s\n' "go$GO_VERSION" "$(go env GOVERSION)" | sort -V | head -1)" = "go$GO_VERSION" ]
}

if ! go_is_new_enough; then
  toolchain="${XDG_CACHE_HOME:-$HOME/.cache}/layertap/go$GO_VERSION"
  if [ ! -x "$toolchain/bin/go" ]; then
    [ "$(uname -sm)" = "Linux x86_64" ] || { echo "install Go >= $GO_VERSION (https://go.dev/dl/)" >&2; exit 1; }
    echo "fetching Go $GO_VERSION from the Go module proxy"
    tmp=$(mktemp -d)
    trap 'rm -rf "$tmp"' EXIT
    zip="golang.org/toolchain/@v/v0.0.1-go$GO_VERSION.linux-amd64.zip"
    python3 -c 'import sys, urllib.request; urllib.request.urlretrieve(sys.argv[1], sys.argv[2])' \
      "https://proxy.golang.org/$zip" "$tmp/go.zip"
    echo "$GO_TOOLCHAIN_SHA256  $tmp/go.zip" | sha256sum -c --quiet
    python3 -m zipfile -e "$tmp/go.zip" "$tmp/x"
    mkdir -p "$(dirname "$toolchain")"
    mv "$tmp/x/golang.org/toolchain@v0.0.1-go$GO_VERSION.linux-amd64" "$toolchain"
    chmod +x "$toolchain"/bin/* "$toolchain"/pkg/tool/*/*
  fi
  export PATH="$toolchain/bin:$PATH"
fi

# The binaries need no VCS stamp, and a machine without git can still build them.
GOFLAGS="${GOFLAGS:-} -buildvcs=false" bash tests/controlplane/build.sh
