"""ResourcesSpec: derived topology facts, and the same verdict from Python and from the CRD's CEL rules."""

from __future__ import annotations

import celpy
import pytest
from pydantic import ValidationError

from layertap_api.cel import RESOURCES_RULES
from layertap_api.resource import ActivationExtractionSpec, ResourcesSpec


@pytest.mark.parametrize(
    ("resources", "processes", "devices_per_host", "mesh"),
    [
        ({"accelerator": "tpu-v5-lite-podslice", "topology": "8x8"}, 16, 4, (64, 1)),
        ({"accelerator": "tpu-v5-lite-podslice", "topology": "2x4"}, 1, 8, (8, 1)),
        ({"accelerator": "tpu-v6e-slice", "topology": "4x4", "slices": 2}, 8, 4, (32, 1)),
        ({"accelerator": "tpu-v5p-slice", "topology": "2x2x4", "mesh": {"model": 4}}, 4, 4, (4, 4)),
        ({"accelerator": "tpu-v4-podslice", "topology": "2x2x1"}, 1, 4, (4, 1)),
        (
            {"accelerator": "nvidia-h100-80gb", "hosts": 2, "gpusPerHost": 8, "mesh": {"data": 8, "model": 2}},
            2,
            8,
            (8, 2),
        ),
        ({"accelerator": "nvidia-l4"}, 1, 1, (1, 1)),
        ({"accelerator": "cpu", "hosts": 3}, 3, 1, (3, 1)),
    ],
)
def test_derived_shape(resources: dict, processes: int, devices_per_host: int, mesh: tuple[int, int]) -> None:
    spec = ResourcesSpec.model_validate(resources)
    assert spec.process_count == processes
    assert spec.devices_per_host == devices_per_host
    assert spec.mesh_shape == mesh


# (resources, the field at fault or None when valid, words the message must contain)
CASES = [
    ({"accelerator": "tpu-v5-lite-podslice", "topology": "8x8"}, None, ""),
    ({"accelerator": "cpu", "hosts": 2, "mesh": {"model": 2}}, None, ""),
    (
        {"accelerator": "tpu-v5-lite-podslice", "topology": "2x2x2"},
        "topology",
        "2x2x2 is not a topology of tpu-v5-lite-podslice",
    ),
    ({"accelerator": "tpu-v4-podslice", "topology": "8x8"}, "topology", "valid: 2x2x1"),
    ({"accelerator": "tpu-v6e-slice"}, "topology", "required for tpu-v6e-slice"),
    ({"accelerator": "cpu", "topology": "2x2"}, "topology", "only TPU"),
    ({"accelerator": "tpu-v6e-slice", "topology": "4x4", "hosts": 4}, "hosts", "topology decides"),
    ({"accelerator": "nvidia-l4", "slices": 2}, "slices", "multislice is TPU only"),
    ({"accelerator": "cpu", "gpusPerHost": 1}, "gpusPerHost", "only GPU"),
    ({"accelerator": "nvidia-l4", "gpusPerHost": 9}, "gpusPerHost", "at most 8 GPUs"),
    ({"accelerator": "tpu-v5-lite-podslice", "topology": "2x2", "mesh": {"model": 3}}, "mesh.model", "does not divide"),
    (
        {"accelerator": "tpu-v5-lite-podslice", "topology": "4x4", "mesh": {"data": 8, "model": 4}},
        "mesh.data",
        "16 devices",
    ),
]


def _failing_cel_rules(resources: dict) -> list[dict]:
    """Evaluate the CRD's rules as the API server would, after its defaulting of `slices`."""
    env = celpy.Environment()
    obj = celpy.json_to_cel({"slices": 1, **resources})
    return [r for r in RESOURCES_RULES if not env.program(env.compile(r["rule"])).evaluate({"self": obj})]


@pytest.mark.parametrize(("resources", "field", "words"), CASES)
def test_python_and_cel_agree(resources: dict, field: str | None, words: str) -> None:
    failing = _failing_cel_rules(resources)
    if field is None:
        ResourcesSpec.model_validate(resources)
        assert failing == []
        return
    with pytest.raises(ValidationError, match=f"resources.{field}: .*{words}"):
        ResourcesSpec.model_validate(resources)
    assert {r["fieldPath"] for r in failing} == {f".{field}"}


def test_cel_message_expressions_name_the_valid_choices() -> None:
    env = celpy.Environment()
    obj = celpy.json_to_cel({"accelerator": "tpu-v5-lite-podslice", "topology": "3x3", "slices": 1})
    (rule,) = _failing_cel_rules({"accelerator": "tpu-v5-lite-podslice", "topology": "3x3"})
    message = env.program(env.compile(rule["messageExpression"])).evaluate({"self": obj})
    assert message == "3x3 is not a topology of tpu-v5-lite-podslice; valid: 1x1, 2x2, 2x4, 4x4, 4x8, 8x8, 8x16, 16x16"


SPEC = {
    "model": {"uri": "gs://models/qwen2.5-0.5b"},
    "dataset": {"uri": "gs://data/arc.json", "format": "arc-json"},
    "output": {"uri": "gs://out/run1"},
    "resources": {"accelerator": "tpu-v5-lite-podslice", "topology": "8x8"},
}


def test_spec_defaults_and_worker_spec() -> None:
    spec = ActivationExtractionSpec.model_validate(SPEC)
    assert (spec.max_restarts, spec.suspend, spec.service_account_name) == (3, False, "layertap-worker")
    job = spec.worker_spec()
    assert job.output.uri == "gs://out/run1"
    assert "resources" not in job.to_wire() and job.mesh.model == 1


@pytest.mark.parametrize(
    ("change", "match"),
    [
        ({"extraction": {"layers": [3, 3]}}, "extraction.layers: duplicate"),
        ({"extraction": {"layers": [-1]}}, "extraction.layers.0"),
        ({"extraction": {"layers": [True]}}, "extraction.layers.0"),  # not layer 1
        ({"extraction": {"layers": ["3"]}}, "extraction.layers.0"),
        ({"maxRestarts": -1}, "maxRestarts"),
        ({"queueName": "Not_A_Label"}, "queueName"),
        ({"output": None}, "output"),
        ({"bogus": 1}, "bogus"),
    ],
)
def test_spec_errors_name_the_field(change: dict, match: str) -> None:
    data = {**SPEC, **change}
    data = {k: v for k, v in data.items() if v is not None}
    with pytest.raises(ValidationError, match=match):
        ActivationExtractionSpec.model_validate(data)


def _root_rules_failing(resource: dict) -> list[str]:
    """The CRD's root rules (on the whole object) as the API server evaluates them."""
    from layertap_api.cel import ROOT_RULES

    env = celpy.Environment()
    obj = celpy.json_to_cel(resource)
    failing = []
    for rule in ROOT_RULES:
        if not env.program(env.compile(rule["rule"])).evaluate({"self": obj}):
            expression = rule.get("messageExpression")
            failing.append(
                str(env.program(env.compile(expression)).evaluate({"self": obj})) if expression else rule["message"]
            )
    return failing


@pytest.mark.parametrize(
    ("name", "resources", "limit"),
    [
        ("a" * 45, {"accelerator": "tpu-v5-lite-podslice", "topology": "8x8"}, 45),  # 16 hosts: 2 digits
        ("a" * 46, {"accelerator": "tpu-v5-lite-podslice", "topology": "4x4"}, 46),  # 4 hosts: 1 digit
        ("a" * 42, {"accelerator": "tpu-v5p-slice", "topology": "16x16x24", "slices": 64}, 42),
        ("a" * 46, {"accelerator": "cpu"}, 46),
    ],
)
def test_the_name_limit_follows_the_topology(name, resources, limit) -> None:
    from layertap_api.resource import ActivationExtraction

    spec = {**SPEC, "resources": resources}
    resource = {
        "apiVersion": "layertap.dev/v1alpha1",
        "kind": "ActivationExtraction",
        "metadata": {"name": name},
        "spec": spec,
    }
    ActivationExtraction.model_validate(resource)
    assert _root_rules_failing({**resource, "spec": {**spec, "resources": {"slices": 1, **resources}}}) == []
    longer = {**resource, "metadata": {"name": name + "b"}}
    with pytest.raises(ValidationError, match=f"at most {limit} characters"):
        ActivationExtraction.model_validate(longer)
    (message,) = _root_rules_failing({**longer, "spec": {**spec, "resources": {"slices": 1, **resources}}})
    assert message.startswith(f"metadata.name must be at most {limit} characters for this topology")


@pytest.mark.parametrize("name", ["2024-arc", "run.v2", "Qwen", "arc-"])
def test_a_name_must_be_a_dns_1035_label(name) -> None:
    from layertap_api.resource import ActivationExtraction

    resource = {"metadata": {"name": name}, "spec": SPEC}
    with pytest.raises(ValidationError, match="DNS-1035 label"):
        ActivationExtraction.model_validate(resource)
    assert any(
        "DNS-1035" in m
        for m in _root_rules_failing({**resource, "spec": {**SPEC, "resources": {**SPEC["resources"], "slices": 1}}})
    )


def test_multislice_needs_a_multi_host_topology() -> None:
    single_host = {"accelerator": "tpu-v6e-slice", "topology": "2x2", "slices": 2}
    with pytest.raises(ValidationError, match="resources.slices: multislice needs a multi-host topology"):
        ResourcesSpec.model_validate(single_host)
    assert {r["fieldPath"] for r in _failing_cel_rules(single_host)} == {".slices"}
    ResourcesSpec.model_validate({**single_host, "topology": "4x4"})
    assert _failing_cel_rules({**single_host, "topology": "4x4"}) == []
