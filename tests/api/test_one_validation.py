"""One validation: every cross-field rule of the pydantic models is also enforced by the CRD.

The list of rules is read from the models themselves (their field and model validators), so a
new validator without a counterpart here fails `test_every_validator_has_a_case`. Each case
is a resource that one validator refuses; here it is checked against pydantic and against the
CRD's CEL rules evaluated offline (cel-python), and tests/cluster/test_operator.py sends the
same cases to a real API server.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import dataclass

import celpy
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import BaseModel, ValidationError

from layertap_api import hub
from layertap_api.cel import RESOURCES_RULES, ROOT_RULES, SPEC_RULES
from layertap_api.crd import crd
from layertap_api.resource import ActivationExtraction

VALID = {
    "apiVersion": "layertap.dev/v1alpha1",
    "kind": "ActivationExtraction",
    "metadata": {"name": "rules"},
    "spec": {
        "model": {"uri": "gs://models/qwen2.5-0.5b"},
        "dataset": {"uri": "gs://data/arc.json", "format": "arc-json"},
        "output": {"uri": "gs://out/run1"},
        "resources": {"accelerator": "tpu-v5-lite-podslice", "topology": "2x4"},
    },
}


@dataclass(frozen=True)
class Case:
    """A resource one validator refuses, and where the API server says so."""

    validator: str  # the validator's qualified name
    change: Callable[[dict], object]  # applied to a copy of VALID's spec
    field: str  # the field the server names, from the spec (e.g. "dataset.split")
    words: str  # in pydantic's message
    by_schema: bool = False  # enforced by the schema itself (x-kubernetes-list-type: set), not a CEL rule

    def resource(self) -> dict:
        resource = copy.deepcopy(VALID)
        self.change(resource["spec"])
        return resource


def _set(section: str, **values) -> Callable[[dict], object]:
    return lambda spec: spec.setdefault(section, {}).update(values)


def _hf_dataset(**values) -> Callable[[dict], object]:
    return _set("dataset", **{"uri": "hf://org/corpus", "format": "parquet", **values})


CASES = [
    Case("ModelSpec._hub_uri_well_formed", _set("model", uri="hf://a/b@"), "model.uri", "revision after '@'"),
    Case("ModelSpec._hub_uri_well_formed", _set("model", uri="hf://a/b/c"), "model.uri", "not a model repository"),
    Case("ModelSpec._hub_uri_well_formed", _set("model", uri="hf://a/b--c"), "model.uri", "not a model repository"),
    Case("ModelSpec._hub_uri_well_formed", _set("model", uri="hf://a/b@../x"), "model.uri", "revision after '@'"),
    Case(
        "SelectionSpec._ids_once",
        _set("dataset", select={"ids": ["t1", "t1"]}),
        "dataset.select.ids",
        "more than once",
        by_schema=True,
    ),
    Case("DatasetSpec._hub_fields", _hf_dataset(format="arc-json"), "dataset.format", "read as text"),
    Case("DatasetSpec._hub_fields", _hf_dataset(uri="hf://org/x.git"), "dataset.uri", "not a dataset repository"),
    Case("DatasetSpec._hub_fields", _set("dataset", split="test"), "dataset.split", "only hf:// datasets"),
    Case("DatasetSpec._hub_fields", _set("dataset", config="en"), "dataset.config", "only hf:// datasets"),
    Case(
        "ExtractionSpec._layers_sane",
        _set("extraction", layers=[3, 3]),
        "extraction.layers",
        "duplicate layer",
        by_schema=True,
    ),
    Case(
        "ExtractionSpec._layers_sane",
        _set("extraction", sites=["attn_out", "attn_out"]),
        "extraction.sites",
        "duplicate sites",
        by_schema=True,
    ),
    Case(
        "JobSpec._predict_needs_arc",
        lambda s: s.update(mode="predict") or s["dataset"].update(format="text-jsonl"),
        "dataset.format",
        "mode predict answers ARC tasks",
    ),
    Case("ResourcesSpec._consistent", _set("resources", topology="3x3"), "resources.topology", "not a topology"),
    Case("ResourcesSpec._consistent", _set("resources", hosts=2), "resources.hosts", "topology decides"),
    Case(
        "ResourcesSpec._consistent", _set("resources", topology="1x1", slices=2), "resources.slices", "multislice needs"
    ),
    Case(
        "ResourcesSpec._consistent",
        _set("resources", accelerator="cpu", topology=None, slices=2),
        "resources.slices",
        "TPU only",
    ),
    Case("ResourcesSpec._consistent", _set("resources", gpusPerHost=2), "resources.gpusPerHost", "only GPU"),
    Case("ResourcesSpec._consistent", _set("resources", mesh={"model": 3}), "resources.mesh.model", "does not divide"),
    Case(
        "ResourcesSpec._consistent", _set("resources", mesh={"data": 3, "model": 2}), "resources.mesh.data", "devices"
    ),
    Case(
        "ActivationExtractionSpec._priority_needs_a_queue",
        lambda s: s.update(workloadPriorityClassName="high"),
        "workloadPriorityClassName",
        "needs queueName",
    ),
    Case(
        "ActivationExtraction._name_fits",
        lambda s: s["resources"].update(topology="8x8"),  # with a name made too long below
        "metadata.name",
        "at most",
    ),
]

# Neighbours of the cases that every rule must let through.
ACCEPTED = [
    _set("model", uri="hf://Qwen/Qwen2.5-0.5B@main"),
    _set("model", uri="hf://gpt2"),
    _set("model", uri="hf://org/name@0123456789abcdef0123456789abcdef01234567"),
    _hf_dataset(split="validation", config="en"),
    _set("dataset", uri="hf://datasets/org/corpus@refs/convert/parquet", format="text-jsonl"),
    lambda s: s.update(workloadPriorityClassName="high", queueName="tpu-queue"),
    _set("extraction", layers=[3, 4], sites=["attn_out", "resid_post"]),
]


def case_resource(case: Case) -> dict:
    resource = case.resource()
    resource["spec"]["resources"] = {k: v for k, v in resource["spec"]["resources"].items() if v is not None}
    if case.validator == "ActivationExtraction._name_fits":
        resource["metadata"]["name"] = "x" * 46  # 16 hosts: at most 45 characters
    return resource


def _validators(model: type[BaseModel], seen: set[type] | None = None) -> set[str]:
    """The qualified names of the field and model validators of `model` and every model in its fields."""
    seen = set() if seen is None else seen
    if model in seen:
        return set()
    seen.add(model)
    decorators = model.__pydantic_decorators__
    found = {
        d.func.__qualname__ for d in [*decorators.field_validators.values(), *decorators.model_validators.values()]
    }
    for name, field in model.model_fields.items():
        if model is ActivationExtraction and name == "status":
            continue  # written by the operator and the workers, not by users
        for inner in _models_in(field.annotation):
            found |= _validators(inner, seen)
    return found


def _models_in(annotation) -> list[type[BaseModel]]:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return [annotation]
    return [m for arg in getattr(annotation, "__args__", ()) for m in _models_in(arg)]


def test_every_validator_has_a_case() -> None:
    assert _validators(ActivationExtraction) == {case.validator for case in CASES}


def _failing_rules(resource: dict) -> set[str]:
    """The fieldPaths (from the spec) of the CRD rules that refuse `resource`, as the server
    evaluates them after its defaulting of `slices`."""
    env = celpy.Environment()
    spec = resource["spec"]
    resources = {"slices": 1, **spec["resources"]}
    failing = set()
    for rules, self_, prefix in (
        (ROOT_RULES, resource, ""),
        (SPEC_RULES, spec, "spec"),
        (RESOURCES_RULES, resources, "spec.resources"),
    ):
        target = celpy.json_to_cel(self_)
        for rule in rules:
            if not env.program(env.compile(rule["rule"])).evaluate({"self": target}):
                failing.add(f"{prefix}{rule['fieldPath']}".lstrip(".").removeprefix("spec."))
    return failing


@pytest.mark.parametrize("case", CASES, ids=lambda c: f"{c.validator}:{c.field}")
def test_pydantic_and_the_crd_refuse_the_same(case: Case) -> None:
    resource = case_resource(case)
    with pytest.raises(ValidationError, match=case.words):
        ActivationExtraction.model_validate(resource)
    if case.by_schema:
        node = _schema_node(case.field)
        assert node["x-kubernetes-list-type"] == "set"
    else:
        assert case.field in _failing_rules(resource)


def _schema_node(field: str) -> dict:
    node = crd()["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]
    for part in field.split("."):
        node = node["properties"][part]
    return node


@pytest.mark.parametrize("change", ACCEPTED)
def test_the_neighbours_pass_both(change) -> None:
    resource = copy.deepcopy(VALID)
    change(resource["spec"])
    ActivationExtraction.model_validate(resource)
    assert _failing_rules(resource) == set()


_HUB_RULES = {rule["fieldPath"]: rule for rule in SPEC_RULES if rule["fieldPath"] in (".model.uri", ".dataset.uri")}
_ENV = celpy.Environment()
_PROGRAMS = {field: _ENV.program(_ENV.compile(rule["rule"])) for field, rule in _HUB_RULES.items()}
_URI_ALPHABET = "ab0A_.-/@ \t:é\u00a0"
hub_uris = st.one_of(
    st.text(_URI_ALPHABET, max_size=24).map(lambda s: "hf://" + s),
    st.lists(
        st.sampled_from(["org", "name", "datasets", "a.b", "x-y", "--", "..", ".git", "/", "@", "main", " "]),
        max_size=6,
    ).map(lambda parts: "hf://" + "".join(parts)),
)


@settings(max_examples=400, deadline=None)
@given(uri=hub_uris)
def test_hub_references_python_and_cel_agree(uri: str) -> None:
    for repo_type, field in (("model", ".model.uri"), ("dataset", ".dataset.uri")):
        try:
            hub.parse_hub_uri(uri, repo_type)
            python_accepts = True
        except ValueError:
            python_accepts = False
        section = field.split(".")[1]
        spec = {"model": {"uri": "x"}, "dataset": {"uri": "x"}, section: {"uri": uri}}
        cel_accepts = bool(_PROGRAMS[field].evaluate({"self": celpy.json_to_cel(spec)}))
        assert cel_accepts == python_accepts, (repo_type, uri)


SECTIONS = ["model", "dataset", "extraction", "prediction", "output", "resources", "queueName", "image", "extration"]
FIELDS = ["uri", "format", "split", "config", "select", "ids", "layers", "sites", "accelerator", "topology", "hosts"]
FIELDS += ["mesh", "model", "data", "gpusPerHost", "slices", "views", "sampling", "topP", "maxNewTokens", "hubCache"]
JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers(-3, 5000) | st.sampled_from(["", "x", "hf://a/b@", "8x8", "cpu", "all"]),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.sampled_from(FIELDS), inner, max_size=3),
    max_leaves=6,
)


@st.composite
def resource_specs(draw) -> dict:
    spec = copy.deepcopy(VALID["spec"])
    for _ in range(draw(st.integers(1, 4))):
        section = draw(st.sampled_from(SECTIONS))
        if draw(st.booleans()) or not isinstance(spec.get(section), dict):
            spec[section] = draw(JSON_VALUES)
        else:
            spec[section][draw(st.sampled_from(FIELDS))] = draw(JSON_VALUES)
    return spec


@settings(derandomize=True, deadline=None, database=None, max_examples=300)
@given(spec=resource_specs())
def test_any_resource_spec_is_valid_or_one_line_naming_each_field(spec: dict) -> None:
    """What the operator posts for a spec the API refuses: explain()'s one line, each problem
    led by the field's path."""
    from layertap_api.resource import ActivationExtractionSpec
    from layertap_api.validation import explain

    try:
        ActivationExtractionSpec.model_validate(spec)
    except ValidationError as error:
        message = explain(error, ActivationExtractionSpec)
        assert "\n" not in message and not message.startswith(":") and "Value error" not in message, message
        for issue in error.errors():
            assert ".".join(map(str, issue["loc"])) in message, (issue, message)
