"""The operator <-> worker contract: every name and number both sides must agree on.

The operator writes it into each worker pod (`layertap_operator.builder`); the worker reads
it back with `WorkerEnvironment.parse(os.environ)`. Nothing else spells these keys, ports,
hostnames or exit codes. This module imports nothing heavy (the worker image has no kopf,
the operator image no JAX).

A worker pod gets (docs/architecture.md, "Operator <-> worker"):
- the validated spec as JSON (`LAYERTAP_SPEC`, the whole ActivationExtractionSpec with
  defaults filled in) and the resource it reports to (`LAYERTAP_EXTRACTION_NAME`/`_NAMESPACE`);
- where it sits in the JobSet: `JOBSET_NAME`, `REPLICATED_JOB_NAME`, `JOB_INDEX` (the slice:
  one Job per slice, from JobSet's job-index annotation through the downward API),
  `JOB_COMPLETION_INDEX` (the host in the slice, set by Kubernetes for Indexed Jobs),
  `LAYERTAP_PROCESSES_PER_JOB`, `LAYERTAP_NUM_PROCESSES`, `JAX_COORDINATOR_PORT`;
- on TPU multislice, the `MEGASCALE_*` variables libtpu reads.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass

# -- environment keys ------------------------------------------------------------------
ENV_SPEC = "LAYERTAP_SPEC"  # the validated spec, JSON, camelCase
ENV_EXTRACTION_NAME = "LAYERTAP_EXTRACTION_NAME"
ENV_EXTRACTION_NAMESPACE = "LAYERTAP_EXTRACTION_NAMESPACE"
ENV_JOBSET_NAME = "JOBSET_NAME"
ENV_REPLICATED_JOB_NAME = "REPLICATED_JOB_NAME"
ENV_JOB_INDEX = "JOB_INDEX"  # which slice (Job) the pod is in
ENV_JOB_COMPLETION_INDEX = "JOB_COMPLETION_INDEX"  # the host in the slice; Kubernetes sets it
ENV_PROCESSES_PER_JOB = "LAYERTAP_PROCESSES_PER_JOB"
ENV_NUM_PROCESSES = "LAYERTAP_NUM_PROCESSES"
ENV_COORDINATOR_PORT = "JAX_COORDINATOR_PORT"  # JAX reads it too, in its GKE TPU detection
ENV_CACHE = "LAYERTAP_CACHE"  # where the worker caches fetched checkpoints
ENV_GCS_RETRY_SECONDS = "LAYERTAP_GCS_RETRY_SECONDS"  # how long GCS calls are retried (a user's knob)
ENV_ATTENTION = "LAYERTAP_ATTENTION"  # force an attention implementation: xla, cudnn or splash (a user's knob)
# hf:// models and datasets (layertap.io.hub), huggingface_hub's own variables, read when a
# source is resolved: the cache (HF_HUB_CACHE, else HF_HOME/hub; a volume every host of a
# run mounts lets one host's download serve the others), offline (cache only) and a token.
ENV_HF_HUB_CACHE = "HF_HUB_CACHE"
ENV_HF_HOME = "HF_HOME"
ENV_XDG_CACHE_HOME = "XDG_CACHE_HOME"  # HF_HOME's default is under it
ENV_HF_HUB_OFFLINE = "HF_HUB_OFFLINE"
ENV_HF_TOKEN = "HF_TOKEN"  # private and gated repositories (from a Secret)
ENV_METRICS_PORT = "LAYERTAP_METRICS_PORT"  # the worker serves Prometheus metrics there
ENV_RESTART_ATTEMPT = "LAYERTAP_RESTART_ATTEMPT"  # the JobSet restart attempt (its pod label, downward API)
JOBSET_RESTART_ATTEMPT_LABEL = "jobset.sigs.k8s.io/restart-attempt"
ENV_JAX_PLATFORMS = "JAX_PLATFORMS"  # JAX fails instead of falling back to CPU
# Set only by a test cluster whose nodes simulate their accelerator with CPU devices (the
# e2e pod runner): the platform stood in for, e.g. "tpu". Never set on a real cluster.
ENV_SIMULATED_ACCELERATOR = "LAYERTAP_SIMULATED_ACCELERATOR"
# JAX's platform name for each accelerator kind of the catalog.
JAX_PLATFORM = {"tpu": "tpu", "gpu": "cuda", "cpu": "cpu"}
# Multislice (TPU over the data-center network): read by libtpu.
ENV_MEGASCALE_COORDINATOR = "MEGASCALE_COORDINATOR_ADDRESS"
ENV_MEGASCALE_NUM_SLICES = "MEGASCALE_NUM_SLICES"
ENV_MEGASCALE_SLICE_ID = "MEGASCALE_SLICE_ID"
ENV_MEGASCALE_PORT = "MEGASCALE_PORT"

# -- the pods ----------------------------------------------------------------------------
REPLICATED_JOB = "worker"  # the JobSet's one replicated Job
CONTAINER = "worker"
# jax.distributed's coordinator, served by process 0. 8482 is the port JAX's own GKE TPU
# detection uses (jax/_src/clusters/cloud_tpu_cluster.py), so the declared port, our JobSet
# placement and JAX's detection agree; JAX_COORDINATOR_PORT makes it explicit to both.
COORDINATOR_PORT = 8482
# The port libtpu's megascale (multislice, over the data-center network) runtime listens on;
# its default is not documented, so it is set (as KubeRay's TPU webhook sets it) and declared.
MEGASCALE_PORT = 8081
METRICS_PORT = 9400  # the worker's /metrics
# JobSet's annotation holding the Job's index within its replicated Job (sigs.k8s.io/jobset).
JOBSET_JOB_INDEX_ANNOTATION = "jobset.sigs.k8s.io/job-index"
JOB_INDEX_FIELD_PATH = f"metadata.annotations['{JOBSET_JOB_INDEX_ANNOTATION}']"

# Where a failing worker writes why (Kubernetes' default terminationMessagePath); the
# operator shows it in the resource's status.
TERMINATION_LOG = "/dev/termination-log"

# -- exit codes ----------------------------------------------------------------------------
EXIT_SUCCESS = 0
EXIT_INVALID = 2  # the spec or its inputs are wrong: a restart cannot help
EXIT_INTERRUPTED = 130  # stopped by a signal; a rerun resumes


def pod_hostname(jobset: str, job_index: int, pod_index: int, replicated_job: str = REPLICATED_JOB) -> str:
    """A JobSet pod's hostname: `<jobset>-<replicatedJob>-<jobIndex>-<podIndex>`."""
    return f"{jobset}-{replicated_job}-{job_index}-{pod_index}"


def coordinator_host(jobset: str, replicated_job: str = REPLICATED_JOB) -> str:
    """Process 0's DNS name: its hostname in the JobSet's headless service, whose name
    (the pods' subdomain) is the JobSet's name when `network.subdomain` is unset."""
    return f"{pod_hostname(jobset, 0, 0, replicated_job)}.{jobset}"


def encode_spec(wire_spec: Mapping) -> str:
    """The spec as the value of LAYERTAP_SPEC (compact JSON of its wire form)."""
    return json.dumps(wire_spec, separators=(",", ":"))


def decode_spec(text: str) -> dict:
    """LAYERTAP_SPEC back to the spec's wire form (a dict, validated by the reader)."""
    try:
        document = json.loads(text)
    except json.JSONDecodeError as error:
        raise ContractError(f"{ENV_SPEC} is not valid JSON ({error})") from None
    if not isinstance(document, dict):
        raise ContractError(f"{ENV_SPEC} must hold a JSON object (the spec)")
    return document


class ContractError(ValueError):
    """The environment does not hold what the operator writes."""


@dataclass(frozen=True)
class Placement:
    """Where one worker process sits in a JobSet run."""

    jobset: str
    replicated_job: str
    slice_id: int  # the Job within the replicated Job (JOB_INDEX)
    host: int  # the pod within the slice (JOB_COMPLETION_INDEX)
    processes_per_slice: int
    num_processes: int
    coordinator_port: int = COORDINATOR_PORT

    @property
    def process_id(self) -> int:
        return self.slice_id * self.processes_per_slice + self.host

    @property
    def coordinator(self) -> str:
        """host:port of process 0 (jax.distributed's coordinator)."""
        return f"{coordinator_host(self.jobset, self.replicated_job)}:{self.coordinator_port}"


@dataclass(frozen=True)
class WorkerEnvironment:
    """What the operator put into a worker pod's environment, parsed and checked."""

    spec_json: str | None = None  # LAYERTAP_SPEC
    extraction: tuple[str, str] | None = None  # (namespace, name) of the resource to report to
    placement: Placement | None = None  # None outside a JobSet

    @classmethod
    def parse(cls, env: Mapping[str, str]) -> WorkerEnvironment:
        name, namespace = env.get(ENV_EXTRACTION_NAME), env.get(ENV_EXTRACTION_NAMESPACE)
        return cls(
            spec_json=env.get(ENV_SPEC),
            extraction=(namespace, name) if name and namespace else None,
            placement=_placement(env),
        )


def _placement(env: Mapping[str, str]) -> Placement | None:
    if ENV_JOBSET_NAME not in env:
        return None

    def number(key: str, default: str | None = None) -> int:
        value = env.get(key, default)
        if value is None:
            raise ContractError(f"JobSet environment: {key} is not set")
        try:
            return int(value)
        except ValueError:
            raise ContractError(f"JobSet environment: {key}={value!r} is not an integer") from None

    if ENV_REPLICATED_JOB_NAME not in env:
        raise ContractError(f"JobSet environment: {ENV_REPLICATED_JOB_NAME} is not set")
    placement = Placement(
        jobset=env[ENV_JOBSET_NAME],
        replicated_job=env[ENV_REPLICATED_JOB_NAME],
        slice_id=number(ENV_JOB_INDEX, "0"),
        host=number(ENV_JOB_COMPLETION_INDEX, "0"),
        processes_per_slice=number(ENV_PROCESSES_PER_JOB, "1"),
        num_processes=number(ENV_NUM_PROCESSES),
        coordinator_port=number(ENV_COORDINATOR_PORT, str(COORDINATOR_PORT)),
    )
    if not 0 <= placement.process_id < placement.num_processes:
        raise ContractError(
            f"JobSet environment: process id {placement.process_id} is outside 0..{placement.num_processes - 1}"
        )
    return placement
