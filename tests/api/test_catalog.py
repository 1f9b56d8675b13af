"""The accelerator catalog: GKE's TPU slice facts hold for every shape."""

from __future__ import annotations

import math

import pytest

from layertap_api.catalog import ACCELERATORS, TPU_RESOURCE

TPUS = [a for a in ACCELERATORS.values() if a.kind == "tpu"]
MACHINE_PREFIX = {
    "tpu-v4-podslice": "ct4p-",
    "tpu-v5-lite-podslice": "ct5lp-",
    "tpu-v5p-slice": "ct5p-",
    "tpu-v6e-slice": "ct6e-",
}


@pytest.mark.parametrize("accelerator", TPUS, ids=lambda a: a.name)
def test_tpu_shapes(accelerator) -> None:
    assert accelerator.device_resource == TPU_RESOURCE
    for topology, shape in accelerator.topologies.items():
        chips = math.prod(int(d) for d in topology.split("x"))
        assert shape.chips == chips and shape.hosts * shape.chips_per_host == chips
        assert shape.machine_type.startswith(MACHINE_PREFIX[accelerator.name])
        assert shape.machine_type.endswith(f"-{shape.chips_per_host}t")
        if shape.hosts > 1:  # multi-host slices are built from 4-chip VMs on GKE
            assert shape.chips_per_host == 4, topology


def test_known_facts() -> None:
    v5e = ACCELERATORS["tpu-v5-lite-podslice"].topologies
    assert (v5e["8x8"].hosts, v5e["8x8"].chips_per_host, v5e["8x8"].machine_type) == (16, 4, "ct5lp-hightpu-4t")
    assert (v5e["2x4"].hosts, v5e["2x4"].machine_type) == (1, "ct5lp-hightpu-8t")
    assert ACCELERATORS["tpu-v6e-slice"].topologies["4x4"].hosts == 4
    assert ACCELERATORS["tpu-v5p-slice"].topologies["2x2x1"].hosts == 1
    assert {a.kind for a in ACCELERATORS.values()} == {"tpu", "gpu", "cpu"}
    assert ACCELERATORS["nvidia-l4"].node_label == "cloud.google.com/gke-accelerator"
    assert ACCELERATORS["cpu"].node_label is None and ACCELERATORS["cpu"].device_resource is None
