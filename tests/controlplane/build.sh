#!/usr/bin/env bash
# Builds the test control plane into tests/controlplane/bin/: kube-apiserver and etcd from
# the versions pinned in go.mod, and the JobSet CRD from the sigs.k8s.io/jobset module.
# Cached: skipped when bin/ was made from the current go.mod, go.sum and this script; Go's
# module and build caches (GOMODCACHE, GOCACHE) make a rebuild after a pin change cheap.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")"

JOBSET_VERSION=v0.12.0

stamp=$(cat go.mod go.sum build.sh | sha256sum | cut -d' ' -f1)
if [ "$(cat bin/.stamp 2>/dev/null)" = "$stamp" ]; then
  exit 0
fi

mkdir -p bin/crds
start=$SECONDS
# Static binaries without local paths or debug tables: smaller, and the same on every machine.
export CGO_ENABLED=0
build() { go build -mod=readonly -trimpath -ldflags="-s -w ${3:-}" -o "bin/$1" "$2"; }
# Kubernetes' own build stamps the release into /version; clients (kubectl, helm's
# kubeVersion check) read it, so do the same.
k8s=$(go list -mod=readonly -m -f '{{.Version}}' k8s.io/kubernetes)
minor=${k8s#v*.}
version_pkg=k8s.io/component-base/version
build kube-apiserver k8s.io/kubernetes/cmd/kube-apiserver \
  "-X $version_pkg.gitVersion=$k8s -X $version_pkg.gitMajor=1 -X $version_pkg.gitMinor=${minor%%.*} -X $version_pkg.gitTreeState=clean"
build etcd go.etcd.io/etcd/server/v3

# The JobSet CRD the operator's JobSets are validated against, from the released module
# (checked against the Go checksum database like every other module here).
jobset_dir=$(go mod download -json "sigs.k8s.io/jobset@$JOBSET_VERSION" | python3 -c 'import json,sys; print(json.load(sys.stdin)["Dir"])')
cp "$jobset_dir/config/components/crd/bases/jobset.x-k8s.io_jobsets.yaml" bin/crds/
chmod 644 bin/crds/*.yaml

echo "$stamp" > bin/.stamp
echo "control plane built in $((SECONDS - start))s: $(bin/kube-apiserver --version), $(bin/etcd --version | head -1)"
