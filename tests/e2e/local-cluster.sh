#!/usr/bin/env bash
# A simulated GKE TPU cluster on this machine, for a person (the e2e tests start their own):
#
#   sudo bash tests/e2e/local-cluster.sh up     # cluster + helm install of the chart (~1 min)
#   sudo bash tests/e2e/local-cluster.sh demo   # apply a v5e 4x4 extraction, watch it to Succeeded, read it
#   sudo bash tests/e2e/local-cluster.sh env    # the exports that point kubectl/helm at it
#   sudo bash tests/e2e/local-cluster.sh down
#
# Needs root (network namespaces) and what `bash tests/run.sh --all` sets up: .venv and the
# binaries in tests/controlplane/bin (built from pinned Go modules; see tests/e2e/simulated_gke.py).
# State lives in $LAYERTAP_E2E_DIR (default /tmp/layertap-local-cluster).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."
repo=$PWD
dir=${LAYERTAP_E2E_DIR:-/tmp/layertap-local-cluster}
python=$repo/.venv/bin/python

exports() {
  cat <<EOF
export KUBECONFIG=$dir/kubeconfig PATH=$repo/tests/controlplane/bin:\$PATH
export HELM_CACHE_HOME=$dir/helm/cache HELM_CONFIG_HOME=$dir/helm/config HELM_DATA_HOME=$dir/helm/data
export STORAGE_EMULATOR_HOST=$(test -f "$dir/cluster.json" && "$python" -c "import json,sys; print(json.load(open(sys.argv[1]))['gcs'])" "$dir/cluster.json")
EOF
}

case "${1:-}" in
  up)
    if [ -f "$dir/pid" ] && kill -0 "$(cat "$dir/pid")" 2>/dev/null; then
      echo "already up; '$0 down' first"; exit 1
    fi
    rm -rf "$dir" && mkdir -p "$dir"
    nohup "$python" tests/e2e/simulated_gke.py up "$dir" > "$dir/cluster.log" 2>&1 &
    echo $! > "$dir/pid"
    for _ in $(seq 120); do
      [ -f "$dir/cluster.json" ] && break
      kill -0 "$(cat "$dir/pid")" 2>/dev/null || { tail -20 "$dir/cluster.log"; exit 1; }
      sleep 1
    done
    eval "$(exports)"
    kubectl create namespace research
    helm install layertap charts/layertap -n layertap-system --create-namespace \
      --set operator.image.repository=layertap-operator --set worker.image.repository=layertap-worker \
      --set 'operator.watchNamespaces={research}' --wait --timeout=120s
    # A tiny random Qwen2 and 16 real ARC-AGI tasks on the emulated GCS.
    "$python" - "$dir/inputs" <<'PY'
import sys
from pathlib import Path
from layertap.demo import write_arc_tasks
from layertap.io import open_store
from layertap.model import write_random_checkpoint
root = Path(sys.argv[1])
write_random_checkpoint(root / "model", seed=0)
write_arc_tasks(root / "arc.json", 16)
for path in sorted(root.rglob("*")):
    if path.is_file():
        open_store("gs://layertap-e2e/inputs").write(str(path.relative_to(root)), path.read_bytes())
PY
    kubectl get nodes -L cloud.google.com/gke-nodepool,cloud.google.com/gke-tpu-topology
    echo "up. Point kubectl at it with: eval \"\$(sudo bash $0 env)\""
    ;;
  demo)
    eval "$(exports)"
    kubectl apply -f - <<EOF
apiVersion: layertap.dev/v1alpha1
kind: ActivationExtraction
metadata: {name: demo, namespace: research}
spec:
  model: {uri: gs://layertap-e2e/inputs/model, dtype: float32}
  dataset: {uri: gs://layertap-e2e/inputs/arc.json, format: arc-json, maxTokens: 1024, overLimit: shorten}
  extraction: {layers: [1, 3], batchSize: 16}
  output: {uri: gs://layertap-e2e/runs/demo, shardSizeMb: 1}
  resources: {accelerator: tpu-v5-lite-podslice, topology: 4x4}
EOF
    kubectl get pods -n research -o wide -w &
    watcher=$!
    timeout 300 kubectl get ae demo -n research -w &
    until [ "$(kubectl get ae demo -n research -o jsonpath='{.status.phase}')" = Succeeded ]; do
      [ "$(kubectl get ae demo -n research -o jsonpath='{.status.phase}')" = Failed ] && break
      sleep 2
    done
    kill $watcher $(jobs -p) 2>/dev/null || true
    kubectl get ae demo -n research -o wide
    cat <<EOF

Read it (the emulated GCS is on \$STORAGE_EMULATOR_HOST; see '$0 env'):
  import layertap; run = layertap.open("gs://layertap-e2e/runs/demo")
  run.read_layer(3, segments=["test-input"]).activations
EOF
    ;;
  env)
    exports
    ;;
  down)
    if [ -f "$dir/pid" ]; then
      kill "$(cat "$dir/pid")" 2>/dev/null || true
      for _ in $(seq 60); do kill -0 "$(cat "$dir/pid")" 2>/dev/null || break; sleep 1; done
    fi
    rm -rf "$dir"
    echo down
    ;;
  *)
    sed -n 2,11p "$0"; exit 2
    ;;
esac
