"""manifests/examples/: each is a valid ActivationExtraction and runs what its name promises."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from layertap_api.resource import ActivationExtraction

EXAMPLES = Path(__file__).resolve().parents[2] / "manifests" / "examples"

# file -> (accelerator, topology, slices, worker pods, devices)
EXPECTED = {
    "tpu-v5e-8x8-arc.yaml": ("tpu-v5-lite-podslice", "8x8", 1, 16, 64),
    "tpu-v6e-multislice.yaml": ("tpu-v6e-slice", "4x4", 2, 8, 32),
    "gpu-l4.yaml": ("nvidia-l4", None, 1, 2, 8),
    "cpu-small.yaml": ("cpu", None, 1, 1, 1),
}


def load(name: str) -> ActivationExtraction:
    return ActivationExtraction.model_validate(yaml.safe_load((EXAMPLES / name).read_text()))


def test_every_example_is_listed():
    assert sorted(p.name for p in EXAMPLES.glob("*.yaml")) == sorted(EXPECTED)


@pytest.mark.parametrize("name", EXPECTED)
def test_example_runs_on_what_it_says(name):
    spec = load(name).spec
    accelerator, topology, slices, pods, devices = EXPECTED[name]
    resources = spec.resources
    assert (resources.accelerator, resources.topology, resources.slices) == (accelerator, topology, slices)
    assert (resources.process_count, resources.devices) == (pods, devices)
    data, _ = resources.mesh_shape
    assert spec.extraction.batch_size % data == 0, "every data-parallel device gets whole sequences"
    assert spec.output.uri.startswith("gs://")


def test_flagship_example_is_qwen_layers_10_to_23_on_arc():
    spec = load("tpu-v5e-8x8-arc.yaml").spec
    assert "Qwen2.5-0.5B" in spec.model.uri
    assert spec.extraction.layers == list(range(10, 24))
    assert spec.dataset.format == "arc-json"
