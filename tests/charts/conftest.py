"""Helpers for the chart tests: the real helm binary that tests/setup.d/20-helm.sh installs."""

from __future__ import annotations

import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
CHART = REPO / "charts" / "layertap"
HELM = REPO / "tests" / "controlplane" / "bin" / "helm"

Render = Callable[..., list[dict]]


@pytest.fixture(scope="session")
def helm(tmp_path_factory: pytest.TempPathFactory) -> Callable[..., subprocess.CompletedProcess[str]]:
    if not HELM.exists():
        pytest.skip(f"helm not installed in {HELM.parent}: run bash tests/setup.d/20-helm.sh")
    home = tmp_path_factory.mktemp("helm-home")
    env = {
        "HELM_CACHE_HOME": str(home / "cache"),
        "HELM_CONFIG_HOME": str(home / "config"),
        "HELM_DATA_HOME": str(home / "data"),
        "PATH": "/usr/bin:/bin",
    }

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([str(HELM), *args], capture_output=True, text=True, env=env, timeout=60)

    return run


@pytest.fixture(scope="session")
def render(helm) -> Render:
    """`helm template` of the chart with `--set` values; returns the documents (CRDs included)."""

    def run(*sets: str, release: str = "layertap", namespace: str = "layertap-system") -> list[dict]:
        args = ["template", release, str(CHART), "--namespace", namespace, "--include-crds"]
        for value in sets:
            args += ["--set", value]
        result = helm(*args)
        assert result.returncode == 0, result.stderr
        return [doc for doc in yaml.safe_load_all(result.stdout) if doc]

    return run
