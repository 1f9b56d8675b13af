"""manifests/install.yaml is exactly what charts/render-install-bundle.sh makes from the chart."""

from __future__ import annotations

import subprocess
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[2]


def test_bundle_matches_the_chart(helm, tmp_path):
    fresh = tmp_path / "install.yaml"
    helm_binary = REPO / "tests" / "controlplane" / "bin" / "helm"
    subprocess.run(
        ["bash", str(REPO / "charts" / "render-install-bundle.sh"), str(helm_binary), str(fresh)], check=True
    )
    assert (REPO / "manifests" / "install.yaml").read_text() == fresh.read_text(), (
        "manifests/install.yaml is stale: run bash charts/render-install-bundle.sh tests/controlplane/bin/helm"
    )


def test_bundle_creates_its_namespace_first_and_holds_the_crd():
    docs = [doc for doc in yaml.safe_load_all((REPO / "manifests" / "install.yaml").read_text()) if doc]
    assert docs[0] == {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "layertap-system"}}
    (crd,) = [doc for doc in docs if doc["kind"] == "CustomResourceDefinition"]
    assert crd == yaml.safe_load(
        (REPO / "charts" / "layertap" / "crds" / "layertap.dev_activationextractions.yaml").read_text()
    )
