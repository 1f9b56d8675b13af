"""CEL rules (`x-kubernetes-validations`) of the CRD, generated from the accelerator catalog.

They mirror the Python validators of `ResourcesSpec` so that the API server rejects at
`kubectl apply` what the operator's validation would reject, with the same field named
(`fieldPath`). Only standard CEL is used (no Kubernetes extension libraries), so tests can
evaluate the rules with a plain CEL interpreter as well as on a real API server.
"""

from __future__ import annotations

import json

from layertap_api import hub
from layertap_api.catalog import ACCELERATORS, tpu_chips_by_topology, tpu_hosts_by_topology
from layertap_api.spec import ARC_FORMATS

# The JobSet's pods are named <name>-worker-<slice>-<host>-<5 random characters>, and the
# JobSet webhook requires that to be a DNS-1035 label of at most 63 characters: the name gets
# 63 - 15 = 48 characters, less the digits of the last slice and host index (names.py).
NAME_BUDGET = 48


def _literal(value: object) -> str:
    """A CEL literal for a str / int / list / dict (CEL string literals accept JSON escapes)."""
    if isinstance(value, dict):
        return "{" + ", ".join(f"{_literal(k)}: {_literal(v)}" for k, v in value.items()) + "}"
    if isinstance(value, list):
        return "[" + ", ".join(_literal(v) for v in value) + "]"
    return json.dumps(value)


def _rule(rule: str, field: str | None, message: str, message_expression: str | None = None) -> dict:
    out = {"rule": rule, "message": message, "reason": "FieldValueInvalid"}
    if field:
        out["fieldPath"] = field
    if message_expression:
        out["messageExpression"] = message_expression
    return out


_TPU = "self.accelerator.startsWith('tpu-')"
_TOPOLOGIES = _literal({a.name: list(a.topologies) for a in ACCELERATORS.values() if a.kind == "tpu"})
_TOPOLOGY_LISTS = _literal({a.name: ", ".join(a.topologies) for a in ACCELERATORS.values() if a.kind == "tpu"})
_MAX_GPUS = _literal({a.name: a.max_gpus_per_host for a in ACCELERATORS.values() if a.kind == "gpu"})
_CHIPS = _literal(tpu_chips_by_topology())
_HOSTS = _literal(tpu_hosts_by_topology())
# Device count; 0 for an invalid topology (reported by its own rule, and the mesh rules pass).
_DEVICES = (
    f"({_TPU} ? ((has(self.topology) && self.topology in {_CHIPS}) ? {_CHIPS}[self.topology] * self.slices : 0)"
    " : (has(self.hosts) ? self.hosts : 1) * (has(self.gpusPerHost) ? self.gpusPerHost : 1))"
)

RESOURCES_RULES: list[dict] = [
    _rule(
        f"!{_TPU} || has(self.topology)",
        ".topology",
        "topology is required for TPU accelerators",
        f"'topology is required for ' + self.accelerator + '; one of ' + {_TOPOLOGY_LISTS}[self.accelerator]",
    ),
    _rule(
        f"!{_TPU} || !has(self.topology) || self.topology in {_TOPOLOGIES}[self.accelerator]",
        ".topology",
        "topology is not valid for the accelerator",
        "self.topology + ' is not a topology of ' + self.accelerator + '; valid: ' + "
        f"{_TOPOLOGY_LISTS}[self.accelerator]",
    ),
    _rule(f"{_TPU} || !has(self.topology)", ".topology", "only TPU accelerators have a topology; use hosts"),
    _rule(f"!{_TPU} || !has(self.hosts)", ".hosts", "on TPU the topology decides the hosts; remove hosts"),
    _rule(f"{_TPU} || self.slices == 1", ".slices", "multislice is TPU only; use hosts"),
    _rule(
        f"self.slices == 1 || !{_TPU} || !has(self.topology) || !(self.accelerator in {_HOSTS})"
        f" || !(self.topology in {_HOSTS}[self.accelerator]) || {_HOSTS}[self.accelerator][self.topology] > 1",
        ".slices",
        "multislice needs a multi-host topology: GKE runs multislice only on multi-host TPU node pools",
    ),
    _rule(
        f"!has(self.gpusPerHost) || self.accelerator in {_MAX_GPUS}",
        ".gpusPerHost",
        "only GPU accelerators have gpusPerHost",
    ),
    _rule(
        f"!has(self.gpusPerHost) || !(self.accelerator in {_MAX_GPUS}) || self.gpusPerHost <= "
        f"{_MAX_GPUS}[self.accelerator]",
        ".gpusPerHost",
        "more GPUs per host than one node of the accelerator has",
        # A map of whole messages: the server's cost estimate cannot bound string(int).
        _literal(
            {
                a.name: f"a {a.name} node has at most {a.max_gpus_per_host} GPUs"
                for a in ACCELERATORS.values()
                if a.kind == "gpu"
            }
        )
        + "[self.accelerator]",
    ),
    _rule(
        f"!has(self.mesh) || {_DEVICES} % self.mesh.model == 0",
        ".mesh.model",
        "mesh.model must divide the number of devices (chips or GPUs per host x hosts x slices)",
    ),
    _rule(
        f"!has(self.mesh) || !has(self.mesh.data) || {_DEVICES} == 0 || self.mesh.data * self.mesh.model == {_DEVICES}",
        ".mesh.data",
        "mesh.data x mesh.model must equal the number of devices (chips or GPUs per host x hosts x slices)",
    ),
]


def _hub_uri_rule(uri: str, repo_type: hub.RepoType, field: str) -> dict:
    """An hf:// reference must be well formed (hub.parse_hub_uri's rules, by its own patterns)."""
    return _rule(
        f"!{uri}.startsWith({_literal(hub.HF_SCHEME)}) || ({uri}.matches({_literal(hub.URI_PATTERNS[repo_type])})"
        f" && !{uri}.matches({_literal(hub.DOUBLE_DASH_IN_REPO)}) && !{uri}.matches({_literal(hub.GIT_SUFFIX)})"
        f" && !{uri}.contains('..'))",
        field,
        f"not a Hugging Face Hub {repo_type} reference: expected {hub.FORM}, without '--', '..' or a '.git' ending",
    )


_HF_DATASET = f"self.dataset.uri.startsWith({_literal(hub.HF_SCHEME)})"

# On the spec: the cross-field rules of the job sections (spec.py) and of the cluster fields.
SPEC_RULES: list[dict] = [
    _hub_uri_rule("self.model.uri", "model", ".model.uri"),
    _hub_uri_rule("self.dataset.uri", "dataset", ".dataset.uri"),
    _rule(
        f"!{_HF_DATASET} || !(self.dataset.format in {_literal(list(ARC_FORMATS))})",
        ".dataset.format",
        "an hf:// dataset is read as text: dataset.format must be parquet or text-jsonl",
    ),
    _rule(
        f"{_HF_DATASET} || !has(self.dataset.split) || self.dataset.split == 'train'",
        ".dataset.split",
        "only hf:// datasets have splits; remove dataset.split",
    ),
    _rule(
        f"{_HF_DATASET} || !has(self.dataset.config)",
        ".dataset.config",
        "only hf:// datasets have configs; remove dataset.config",
    ),
    _rule(
        "!has(self.workloadPriorityClassName) || has(self.queueName)",
        ".workloadPriorityClassName",
        "a Kueue priority needs queueName (the run must be queued)",
    ),
]


def name_too_long(limit: int) -> str:
    """The message for a name over `limit` characters (Python and the CRD say the same)."""
    return (
        f"metadata.name must be at most {limit} characters for this topology: the JobSet names its pods "
        "NAME-worker-SLICE-HOST-xxxxx, which must fit a 63-character DNS label"
    )


def _digits(n: str) -> str:
    """CEL for the number of decimal digits of a non-negative int below 10,000."""
    return f"({n} < 10 ? 1 : {n} < 100 ? 2 : {n} < 1000 ? 3 : 4)"


_RES = "self.spec.resources"
_HOSTS_PER_SLICE = (
    f"((has({_RES}.topology) && {_RES}.accelerator in {_HOSTS} && {_RES}.topology in {_HOSTS}[{_RES}.accelerator])"
    f" ? {_HOSTS}[{_RES}.accelerator][{_RES}.topology] : (has({_RES}.hosts) ? {_RES}.hosts : 1))"
)
_SLICES = f"(has({_RES}.slices) ? {_RES}.slices : 1)"
MAX_NAME = f"({NAME_BUDGET} - {_digits(f'({_SLICES} - 1)')} - {_digits(f'({_HOSTS_PER_SLICE} - 1)')})"

ROOT_RULES: list[dict] = [
    _rule(
        "!has(self.spec.mode) || self.spec.mode != 'predict' || self.spec.dataset.format in "
        + _literal(list(ARC_FORMATS)),
        ".spec.dataset.format",
        "mode predict answers ARC tasks: dataset.format must be one of " + ", ".join(ARC_FORMATS),
    ),
    _rule(
        "self.metadata.name.matches('^[a-z]([-a-z0-9]*[a-z0-9])?$')",
        ".metadata.name",
        "metadata.name must be a DNS-1035 label (lower-case letters, digits and '-', starting with a letter): "
        "it names the JobSet, its pods and their hostnames",
    ),
    _rule(
        f"size(self.metadata.name) <= {MAX_NAME}",
        ".metadata.name",
        "metadata.name is too long for this topology: the JobSet's pod names must fit 63 characters",
        # One literal per possible limit: the server's cost estimate cannot bound string(int).
        "".join(f"{MAX_NAME} == {n} ? {_literal(name_too_long(n))} : " for n in range(NAME_BUDGET - 8, NAME_BUDGET))
        + _literal(name_too_long(NAME_BUDGET)),
    ),
]
