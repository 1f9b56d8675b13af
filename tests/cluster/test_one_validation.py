"""One validation, on a real API server: every case of tests/api/test_one_validation.py (one
or more per validator of the pydantic models, a list derived from the models) is refused at
admission naming its field, and the neighbours that every rule must let through are admitted."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import yaml
from api.test_one_validation import ACCEPTED, CASES, VALID, Case, case_resource

CRD = Path(__file__).resolve().parents[2] / "charts/layertap/crds/layertap.dev_activationextractions.yaml"


@pytest.fixture(scope="module")
def crd(control_plane) -> None:
    control_plane.apply_crd(CRD)


def _dry_run(control_plane, namespace: str, resource: dict):
    return control_plane.kubectl(
        "create", "--dry-run=server", "-n", namespace, "-f", "-", input=yaml.safe_dump(resource), check=False
    )


@pytest.mark.parametrize("case", CASES, ids=lambda c: f"{c.validator}:{c.field}")
def test_each_rule_refuses_at_admission(control_plane, crd, namespace, case: Case) -> None:
    refused = _dry_run(control_plane, namespace, case_resource(case))
    assert refused.returncode != 0, f"admitted: {case}"
    where = case.field if case.field.startswith("metadata.") else f"spec.{case.field}"
    kind = "Duplicate value" if case.by_schema else "Invalid value"
    assert f"{where}" in refused.stderr and kind in refused.stderr, refused.stderr


@pytest.mark.parametrize("change", ACCEPTED)
def test_the_neighbours_are_admitted(control_plane, crd, namespace, change) -> None:
    resource = copy.deepcopy(VALID)
    change(resource["spec"])
    admitted = _dry_run(control_plane, namespace, resource)
    assert admitted.returncode == 0, admitted.stderr
