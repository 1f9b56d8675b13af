"""The checked-in CRD is the generated one, and it is a schema the API server accepts."""

from __future__ import annotations

from pathlib import Path

import yaml

from layertap_api.crd import crd, render

CRD_PATH = Path(__file__).parents[2] / "charts/layertap/crds/layertap.dev_activationextractions.yaml"


def test_checked_in_crd_is_generated() -> None:
    assert CRD_PATH.read_text() == render(), (
        "the CRD drifted from api/layertap_api: run "
        "`python -m layertap_api.crd > charts/layertap/crds/layertap.dev_activationextractions.yaml`"
    )


def _walk(node: dict, path: str):
    yield path, node
    for name, child in node.get("properties", {}).items():
        yield from _walk(child, f"{path}.{name}")
    if "items" in node:
        yield from _walk(node["items"], f"{path}[]")


def test_schema_is_structural_and_documented() -> None:
    schema = crd()["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    text = yaml.safe_dump(schema)
    for forbidden in ("$ref", "anyOf", "$defs", "additionalProperties: false", "title:", "const:", "null"):
        assert forbidden not in text, forbidden
    for path, node in [*_walk(schema["properties"]["spec"], "spec"), *_walk(schema["properties"]["status"], "status")]:
        assert "type" in node, f"{path} has no type"
        assert path.endswith("[]") or node.get("description"), f"{path} has no description"
        if node["type"] == "object" and "properties" in node:
            assert set(node.get("required", [])) <= set(node["properties"]), path


def test_defaults_reach_nested_objects() -> None:
    spec = crd()["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]
    assert spec["properties"]["extraction"]["default"]["storageDtype"] == "bfloat16"
    assert (
        spec["properties"]["dataset"]["properties"]["prompt"]["default"]["gridEncoder"] == "Shape(RowNumber(Minimal))"
    )
    assert spec["properties"]["resources"]["properties"]["slices"]["default"] == 1


def test_names_and_columns() -> None:
    version = crd()["spec"]["versions"][0]
    assert crd()["spec"]["names"]["shortNames"] == ["ae", "actx"]
    assert version["subresources"] == {"status": {}}
    columns = [c["name"] for c in version["additionalPrinterColumns"] if not c.get("priority")]
    assert columns[0] == "Phase" and columns[-1] == "Age"
    assert {"Progress", "Tokens/s"} <= set(columns)
