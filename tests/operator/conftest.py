"""Shared by the operator tests: example specs and the real JobSet CRD's schema as a validator."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import jsonschema
import pytest
import yaml

# Copied from the sigs.k8s.io/jobset Go module by tests/setup.d/10-controlplane.sh.
JOBSET_CRD = Path(__file__).parents[2] / "tests/controlplane/bin/crds/jobset.x-k8s.io_jobsets.yaml"


def _spec_dict(**resources) -> dict:
    return {
        "model": {"uri": "gs://models/qwen2.5-0.5b"},
        "dataset": {"uri": "gs://data/arc-agi/evaluation.json", "format": "arc-json"},
        "extraction": {"layers": list(range(10, 24))},
        "output": {"uri": "gs://activations/run-1"},
        "resources": resources or {"accelerator": "tpu-v5-lite-podslice", "topology": "8x8"},
    }


@pytest.fixture(scope="session")
def spec_dict() -> Callable[..., dict]:
    """A valid spec (as on the wire) with the given resources; v5e 8x8 by default."""
    return _spec_dict


def unknown_fields(obj: object, schema: dict, path: str = "") -> list[str]:
    """Fields the schema does not declare: the API server would prune them silently."""
    if schema.get("x-kubernetes-preserve-unknown-fields"):
        return []
    if isinstance(obj, dict):
        if "properties" not in schema:
            extra = schema.get("additionalProperties")
            if isinstance(extra, dict):
                return [p for k, v in obj.items() for p in unknown_fields(v, extra, f"{path}.{k}")]
            return []
        props = schema["properties"]
        return [f"{path}.{k}" for k in obj if k not in props] + [
            p for k, v in obj.items() if k in props for p in unknown_fields(v, props[k], f"{path}.{k}")
        ]
    if isinstance(obj, list) and "items" in schema:
        return [p for i, v in enumerate(obj) for p in unknown_fields(v, schema["items"], f"{path}[{i}]")]
    return []


@pytest.fixture(scope="session")
def validate_jobset() -> Callable[[dict], list[str]]:
    """Problems of a JobSet under the real JobSet CRD schema (types, enums, required, unknown fields)."""
    if not JOBSET_CRD.exists():
        pytest.skip(f"{JOBSET_CRD} missing: run tests/setup.d/15-jobset-crd.sh (needs Go)")
    crd = yaml.safe_load(JOBSET_CRD.read_text())
    (version,) = [v for v in crd["spec"]["versions"] if v["name"] == "v1alpha2"]
    schema = version["schema"]["openAPIV3Schema"]
    validator = jsonschema.Draft4Validator(schema)

    def problems(jobset: dict) -> list[str]:
        errors = [f"{'.'.join(map(str, e.absolute_path))}: {e.message}" for e in validator.iter_errors(jobset)]
        return errors + [f"{p}: unknown field" for p in unknown_fields(jobset, schema)]

    return problems
