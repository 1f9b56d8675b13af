#!/usr/bin/env bash
# Renders manifests/install.yaml, the `kubectl apply` install bundle, from charts/layertap.
# The chart's defaults: the operator serves the namespace `default`, where the worker
# ServiceAccount is, so `kubectl apply -f manifests/examples/...` works as is. tests/charts keeps it in sync.
#   bash charts/render-install-bundle.sh [HELM [OUTPUT]]
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
helm=${1:-helm}
output=${2:-manifests/install.yaml}
namespace=layertap-system

{
  echo "# LayerTap install bundle, rendered from charts/layertap by charts/render-install-bundle.sh."
  echo "#   kubectl apply --server-side -f manifests/install.yaml"
  echo "---"
  echo "apiVersion: v1"
  echo "kind: Namespace"
  echo "metadata:"
  echo "  name: $namespace"
  "$helm" template layertap charts/layertap --namespace "$namespace" --include-crds
} > "$output"
