"""What each accelerator offers on GKE: node labels, device resource, slice shapes.

The catalog is plain data shared by three readers: the spec validation (pydantic), the CRD's
CEL rules (generated from it, so the API server and Python agree) and the JobSet builder.
Accelerator names are the values of GKE's node labels, so what a user writes in
`spec.resources.accelerator` is exactly what `kubectl get nodes -L ...` shows.

Sources: GKE "Plan TPUs in GKE" (machine types and topologies per TPU version; multi-host
slices use 4-chip VMs, so a v5e 8x8 slice is 16 pods of 4 chips) and GKE "About GPUs"
(`cloud.google.com/gke-accelerator` values).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Literal

TPU_ACCELERATOR_LABEL = "cloud.google.com/gke-tpu-accelerator"
TPU_TOPOLOGY_LABEL = "cloud.google.com/gke-tpu-topology"
GPU_ACCELERATOR_LABEL = "cloud.google.com/gke-accelerator"
TPU_RESOURCE = "google.com/tpu"
GPU_RESOURCE = "nvidia.com/gpu"


@dataclass(frozen=True)
class SliceShape:
    """One TPU slice: `chips` chips on `chips // chips_per_host` VMs (one pod per VM)."""

    topology: str
    machine_type: str
    chips_per_host: int

    @property
    def chips(self) -> int:
        return math.prod(int(d) for d in self.topology.split("x"))

    @property
    def hosts(self) -> int:
        return self.chips // self.chips_per_host


@dataclass(frozen=True)
class Accelerator:
    """A node-pool accelerator; `topologies` only for TPU, `max_gpus_per_host` only for GPU."""

    name: str
    kind: Literal["tpu", "gpu", "cpu"]
    topologies: dict[str, SliceShape] = field(default_factory=dict)
    max_gpus_per_host: int = 0
    # dense bfloat16 peak of one chip, from the vendor's data sheet (the cost model's basis)
    peak_tflops: float | None = None

    @property
    def node_label(self) -> str | None:
        return {"tpu": TPU_ACCELERATOR_LABEL, "gpu": GPU_ACCELERATOR_LABEL}.get(self.kind)

    @property
    def device_resource(self) -> str | None:
        return {"tpu": TPU_RESOURCE, "gpu": GPU_RESOURCE}.get(self.kind)


def _tpu(name: str, peak_tflops: float, shapes: list[tuple[str, str, int]]) -> Accelerator:
    return Accelerator(
        name=name,
        kind="tpu",
        topologies={t: SliceShape(t, machine, per_host) for t, machine, per_host in shapes},
        peak_tflops=peak_tflops,
    )


def _multi_host(machine: str, topologies: str) -> list[tuple[str, str, int]]:
    return [(t, machine, 4) for t in topologies.split()]


ACCELERATORS: dict[str, Accelerator] = {
    a.name: a
    for a in [
        _tpu(
            "tpu-v4-podslice",
            275,
            _multi_host(
                "ct4p-hightpu-4t", "2x2x1 2x2x2 2x2x4 2x4x4 4x4x4 4x4x8 4x8x8 8x8x8 8x8x12 8x8x16 8x16x16 16x16x16"
            ),
        ),
        _tpu(
            "tpu-v5-lite-podslice",
            197,
            [
                ("1x1", "ct5lp-hightpu-1t", 1),
                ("2x2", "ct5lp-hightpu-4t", 4),
                ("2x4", "ct5lp-hightpu-8t", 8),
                *_multi_host("ct5lp-hightpu-4t", "4x4 4x8 8x8 8x16 16x16"),
            ],
        ),
        _tpu(
            "tpu-v5p-slice",
            459,
            _multi_host(
                "ct5p-hightpu-4t", "2x2x1 2x2x2 2x2x4 2x4x4 4x4x4 4x4x8 4x8x8 8x8x8 8x8x16 8x16x16 16x16x16 16x16x24"
            ),
        ),
        _tpu(
            "tpu-v6e-slice",
            918,
            [
                ("1x1", "ct6e-standard-1t", 1),
                ("2x2", "ct6e-standard-4t", 4),
                ("2x4", "ct6e-standard-8t", 8),
                *_multi_host("ct6e-standard-4t", "4x4 4x8 8x8 8x16 16x16"),
            ],
        ),
        Accelerator("nvidia-tesla-t4", "gpu", max_gpus_per_host=4, peak_tflops=65),  # fp16: T4 has no bf16
        Accelerator("nvidia-l4", "gpu", max_gpus_per_host=8, peak_tflops=121),
        Accelerator("nvidia-tesla-a100", "gpu", max_gpus_per_host=16, peak_tflops=312),
        Accelerator("nvidia-a100-80gb", "gpu", max_gpus_per_host=8, peak_tflops=312),
        Accelerator("nvidia-h100-80gb", "gpu", max_gpus_per_host=8, peak_tflops=989),
        Accelerator("nvidia-h100-mega-80gb", "gpu", max_gpus_per_host=8, peak_tflops=989),
        Accelerator("nvidia-h200-141gb", "gpu", max_gpus_per_host=8, peak_tflops=989),
        Accelerator("cpu", "cpu"),
    ]
}

# The spec's `accelerator` enum; Literal over the catalog keeps one list of names.
AcceleratorName = Literal[tuple(ACCELERATORS)]  # type: ignore[valid-type]


def tpu_chips_by_topology() -> dict[str, int]:
    """Every TPU topology in the catalog -> its chip count (for the CEL mesh rule)."""
    return {t: s.chips for a in ACCELERATORS.values() for t, s in a.topologies.items()}


def tpu_hosts_by_topology() -> dict[str, dict[str, int]]:
    """accelerator -> topology -> hosts (VMs, one pod each) of every TPU slice shape."""
    return {
        a.name: {t: shape.hosts for t, shape in a.topologies.items()} for a in ACCELERATORS.values() if a.kind == "tpu"
    }
