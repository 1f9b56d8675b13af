#!/usr/bin/env bash
# Builds the test cluster into tests/controlplane/bin/, every piece from a pinned Go module:
# - from k8s.io/kubernetes (go.mod here): kube-apiserver, kube-controller-manager,
#   kube-scheduler, and etcd at the version that release pins;
# - from their own modules, each pinned with its released dependency set (one go.mod each:
#   Kueue does not compile against the Kubernetes libraries of the others): the JobSet
#   controller (jobset/), Kueue (kueue/) and kwok (kwok/);
# - their manifests from the same module sources: the JobSet and Kueue CRDs and webhook
#   configurations, kwok's node stages.
# Cached: skipped when bin/ was made from the current go.mod/go.sum files and this script;
# Go's module and build caches (GOMODCACHE, GOCACHE) make a rebuild after a pin change cheap.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")"

JOBSET_VERSION=v0.12.0
KUEUE_VERSION=v0.17.0
KWOK_VERSION=v0.8.0
MODULES=(jobset kueue kwok)

stamp=$(cat go.mod go.sum build.sh "${MODULES[@]/%//go.mod}" "${MODULES[@]/%//go.sum}" | sha256sum | cut -d' ' -f1)
if [ "$(cat bin/.stamp 2>/dev/null)" = "$stamp" ]; then
  exit 0
fi

bin=$PWD/bin
manifests=$bin/manifests
mkdir -p "$bin/crds" "$manifests/kueue/crds" "$manifests/jobset" "$manifests/kwok"
start=$SECONDS
# Static binaries without local paths or debug tables: smaller, and the same on every machine.
export CGO_ENABLED=0
build() { go build -mod=readonly -trimpath -ldflags="-s -w ${3:-}" -o "$bin/$1" "$2"; echo "  $1 built at $((SECONDS - start))s"; }
module_dir() { go mod download -json "$1" | python3 -c 'import json,sys; print(json.load(sys.stdin)["Dir"])'; }

# Kubernetes' own build stamps the release into /version; clients (kubectl, helm's
# kubeVersion check) read it, so do the same.
k8s=$(go list -mod=readonly -m -f '{{.Version}}' k8s.io/kubernetes)
minor=${k8s#v*.}
version_pkg=k8s.io/component-base/version
k8s_version="-X $version_pkg.gitVersion=$k8s -X $version_pkg.gitMajor=1 -X $version_pkg.gitMinor=${minor%%.*} -X $version_pkg.gitTreeState=clean"
build kube-apiserver k8s.io/kubernetes/cmd/kube-apiserver "$k8s_version"
build etcd go.etcd.io/etcd/server/v3
build kube-controller-manager k8s.io/kubernetes/cmd/kube-controller-manager "$k8s_version"
build kube-scheduler k8s.io/kubernetes/cmd/kube-scheduler "$k8s_version"

(
  cd jobset
  build jobset sigs.k8s.io/jobset "-X sigs.k8s.io/jobset/pkg/version.GitVersion=$JOBSET_VERSION"
  src=$(module_dir "sigs.k8s.io/jobset@$JOBSET_VERSION")
  # The CRD every JobSet the operator builds is validated against, and the controller's webhooks.
  cp "$src/config/components/crd/bases/jobset.x-k8s.io_jobsets.yaml" "$bin/crds/"
  cp "$src/config/components/webhook/manifests.yaml" "$manifests/jobset/webhooks.yaml"
)
(
  cd kueue
  build kueue sigs.k8s.io/kueue/cmd/kueue "-X sigs.k8s.io/kueue/pkg/version.GitVersion=$KUEUE_VERSION"
  src=$(module_dir "sigs.k8s.io/kueue@$KUEUE_VERSION")
  cp "$src"/config/components/crd/bases/*.yaml "$manifests/kueue/crds/"
  cp "$src/config/components/webhook/manifests.yaml" "$manifests/kueue/webhooks.yaml"
)
(
  cd kwok
  build kwok sigs.k8s.io/kwok/cmd/kwok
  src=$(module_dir "sigs.k8s.io/kwok@$KWOK_VERSION")
  # Node stages only (Ready, and leases kept fresh): pods are the test pod runner's.
  { cat "$src/kustomize/stage/node/fast/node-initialize.yaml"; echo "---";
    cat "$src/kustomize/stage/node/heartbeat-with-lease/node-heartbeat-with-lease.yaml"; } > "$manifests/kwok/stages.yaml"
)
chmod -R u+w,a+r "$bin"

echo "$stamp" > bin/.stamp
echo "control plane built in $((SECONDS - start))s: $(bin/kube-apiserver --version), $(bin/etcd --version | head -1)," \
  "jobset $JOBSET_VERSION, kueue $KUEUE_VERSION, $(bin/kwok --version)"
