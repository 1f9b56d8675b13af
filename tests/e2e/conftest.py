"""The e2e tier: LayerTap installed with helm on the simulated GKE TPU cluster of simulated_gke.py,
extractions applied with kubectl and run by real controllers and real worker processes.

Fixtures:
- ``cluster`` (session): the running cluster (simulated_gke.Cluster), with the chart installed
  (operator pod run by the pod runner, worker ServiceAccount in NAMESPACE), a tiny random
  Qwen2 checkpoint and real ARC tasks uploaded to the GCS emulator;
- ``e2e`` (function): an E2E helper bound to that cluster (apply, wait, read the output).

Needs root and the binaries of tests/setup.d/10-controlplane.sh and 20-helm.sh; without them
the tier is skipped saying what is missing.
"""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
from simulated_gke import Cluster, missing, running_cluster
from workflow import E2E, install, upload_inputs


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    here = Path(__file__).parent
    for item in items:
        if here in item.path.parents:
            item.add_marker(pytest.mark.e2e)


@pytest.fixture(scope="session")
def cluster() -> Iterator[Cluster]:
    if os.geteuid() != 0:
        pytest.skip("the e2e tier needs root: network namespaces give each worker pod its own address")
    absent = missing()
    if absent:
        pytest.skip(f"e2e binaries missing ({', '.join(absent)}): run bash tests/setup.d/10-controlplane.sh")
    workdir = Path(tempfile.mkdtemp(prefix="layertap-e2e-"))
    try:
        with running_cluster(workdir) as running:
            install(running)
            upload_inputs(running, workdir / "inputs")
            yield running
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


@pytest.fixture
def e2e(cluster: Cluster, request: pytest.FixtureRequest) -> E2E:
    name = "".join(c for c in request.node.name.split("[")[0].removeprefix("test_") if c.isalnum())[:20]
    return E2E(cluster, name)
