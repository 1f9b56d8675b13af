"""The operator's check of what a resource may ask for (the chart's policy values). Pure."""

from __future__ import annotations

import json

import pytest

from layertap_api.resource import ActivationExtractionSpec
from layertap_operator.policy import ENV_POLICY, Policy, violations


def spec_with(spec_dict, **fields) -> ActivationExtractionSpec:
    return ActivationExtractionSpec.model_validate(spec_dict() | fields)


def test_the_default_policy_allows_the_defaults_and_nothing_more(spec_dict) -> None:
    policy = Policy.from_environment({})
    assert violations(spec_with(spec_dict), policy) == []
    asks = {
        "privileged": {"privileged": True},
        "image": {"image": "evil.example/miner:1"},
        "serviceAccountName": {"serviceAccountName": "deployer"},
        "hubTokenSecret": {"hubTokenSecret": {"name": "prod-db", "key": "password"}},
    }
    for field, ask in asks.items():
        (problem,) = violations(spec_with(spec_dict, **ask), policy)
        assert problem.startswith(f"spec.{field}") and "policy." in problem, problem


def test_each_value_allows_what_it_names(spec_dict) -> None:
    policy = Policy.from_json(
        json.dumps(
            {
                "allowPrivileged": True,
                "allowedImagePrefixes": ["registry.example/layertap/"],
                "allowedServiceAccounts": ["layertap-worker", "gcs-reader"],
                "allowedHubTokenSecrets": ["hf-token"],
            }
        )
    )
    allowed = spec_with(
        spec_dict,
        privileged=True,
        image="registry.example/layertap/worker:2",
        serviceAccountName="gcs-reader",
        hubTokenSecret={"name": "hf-token"},
    )
    assert violations(allowed, policy) == []
    # A prefix is a prefix of the whole reference: another registry path is not under it.
    refused = spec_with(spec_dict, image="registry.example/layertap-evil/worker:2", serviceAccountName="deployer")
    problems = violations(refused, policy)
    assert [p.split(" ")[0] for p in problems] == ["spec.image", "spec.serviceAccountName"]
    assert "registry.example/layertap/" in problems[0] and "layertap-worker, gcs-reader" in problems[1]


def test_a_policy_that_is_not_the_charts_json_is_an_error_naming_it() -> None:
    with pytest.raises(ValueError, match=ENV_POLICY):
        Policy.from_json('{"allowPrivileged": "yes"}')
    with pytest.raises(ValueError, match=ENV_POLICY):
        Policy.from_json('["registry.example/"]')
    assert Policy.from_json("{}") == Policy()
