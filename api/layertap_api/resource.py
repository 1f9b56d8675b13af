"""The ActivationExtraction resource: the worker's JobSpec plus where and how to run it.

`ActivationExtractionSpec` is what `spec:` holds. It adds the cluster fields (accelerator,
image, restarts, Kueue, deadlines) to `JobSpec`, which stays the part the worker runs.
Every cross-field rule checked here in Python is also a CEL rule in the CRD (see `cel.py`),
so `kubectl apply` rejects what the operator's validation would. The workers run
`worker_spec()`: the JobSpec sections and `resources.mesh`.
"""

from __future__ import annotations

import re
from typing import Any

from pydantic import Field, model_validator

from layertap_api.catalog import ACCELERATORS, Accelerator, AcceleratorName, SliceShape
from layertap_api.cel import NAME_BUDGET, RESOURCES_RULES, SPEC_RULES, name_too_long
from layertap_api.spec import ApiModel, ExpectedDevices, JobSpec, MeshSpec, WorkerSpec
from layertap_api.status import ExtractionStatus

GROUP = "layertap.dev"
VERSION = "v1alpha1"
KIND = "ActivationExtraction"
PLURAL = "activationextractions"
SINGULAR = "activationextraction"
SHORT_NAMES = ["ae", "actx"]
API_VERSION = f"{GROUP}/{VERSION}"

QUANTITY_PATTERN = r"^[0-9]+(\.[0-9]+)?(m|k|Ki|M|Mi|G|Gi|T|Ti)?$"
DNS_LABEL_PATTERN = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"
DNS_1035_PATTERN = r"^[a-z]([-a-z0-9]*[a-z0-9])?$"  # what JobSet requires of its pod names


# A CPU pool's worker pod requests, when the spec sets none.
DEFAULT_CPU = "4"
DEFAULT_MEMORY = "8Gi"


class ResourcesSpec(ApiModel):
    """Where the workers run: the accelerator and how many of them."""

    model_config = ApiModel.model_config | {"json_schema_extra": {"x-kubernetes-validations": RESOURCES_RULES}}

    accelerator: AcceleratorName = Field(
        json_schema_extra={"maxLength": 32},  # bounds the CEL cost estimate of messages that quote it
        description=(
            "Node-pool accelerator, as GKE labels it: tpu-v5-lite-podslice, tpu-v6e-slice, tpu-v5p-slice, "
            "tpu-v4-podslice, nvidia-l4, ..., or cpu."
        ),
    )
    topology: str | None = Field(
        default=None,
        pattern=r"^[0-9]+x[0-9]+(x[0-9]+)?$",
        max_length=16,
        description=(
            "TPU slice topology, e.g. 8x8 (v5e, v6e) or 2x2x4 (v4, v5p). Required for TPU, not allowed otherwise."
        ),
    )
    slices: int = Field(
        default=1,
        ge=1,
        le=64,
        description="Number of TPU slices (multislice over the data-center network). TPU only.",
    )
    hosts: int | None = Field(
        default=None,
        ge=1,
        le=1024,
        description="Number of worker pods on GPU or CPU node pools (default 1). On TPU the topology decides.",
    )
    gpus_per_host: int | None = Field(
        default=None,
        ge=1,
        le=16,
        description="GPUs per worker pod (default 1), at most what one node of the accelerator has. GPU only.",
    )
    mesh: MeshSpec | None = Field(default=None, description="Device mesh; unset means data parallel over every device.")
    cpu: str | None = Field(
        default=None,
        pattern=QUANTITY_PATTERN,
        max_length=16,
        description="CPU request of each worker pod (Kubernetes quantity). Unset: 4 on CPU pools, nothing on TPU/GPU.",
    )
    memory: str | None = Field(
        default=None,
        pattern=QUANTITY_PATTERN,
        max_length=16,
        description=(
            "Memory request of each worker pod (Kubernetes quantity). Unset: 8Gi on CPU pools, nothing on TPU/GPU."
        ),
    )

    @property
    def info(self) -> Accelerator:
        return ACCELERATORS[self.accelerator]

    @property
    def slice_shape(self) -> SliceShape | None:
        return self.info.topologies.get(self.topology or "")

    @property
    def hosts_per_slice(self) -> int:
        shape = self.slice_shape
        return shape.hosts if shape else (self.hosts or 1)

    @property
    def devices_per_host(self) -> int:
        shape = self.slice_shape
        if shape:
            return shape.chips_per_host
        return (self.gpus_per_host or 1) if self.info.kind == "gpu" else 1

    @property
    def process_count(self) -> int:
        return self.hosts_per_slice * self.slices

    @property
    def devices(self) -> int:
        return self.process_count * self.devices_per_host

    @property
    def shape(self) -> str:
        """What runs, for people: `8x8`, `2x4x4` (2 slices of 4x4), `2x(8 GPU)`, `1x(4 CPU)`."""
        if self.topology:
            return self.topology if self.slices == 1 else f"{self.slices}x{self.topology}"
        per_host = f"{self.devices_per_host} GPU" if self.info.kind == "gpu" else f"{self.cpu or DEFAULT_CPU} CPU"
        return f"{self.hosts_per_slice}x({per_host})"

    @property
    def max_name_length(self) -> int:
        """The longest resource name whose JobSet pod names (NAME-worker-SLICE-HOST-xxxxx) fit a
        63-character DNS label, as JobSet's webhook requires (cel.py has the same rule)."""
        return NAME_BUDGET - len(str(self.slices - 1)) - len(str(self.hosts_per_slice - 1))

    @property
    def mesh_shape(self) -> tuple[int, int]:
        """(data, model) of the device mesh."""
        model = self.mesh.model if self.mesh else 1
        data = self.mesh.data if self.mesh and self.mesh.data else self.devices // model
        return data, model

    @model_validator(mode="after")
    def _consistent(self) -> ResourcesSpec:
        info = self.info
        if info.kind == "tpu":
            valid = ", ".join(info.topologies)
            if self.topology is None:
                raise ValueError(f"resources.topology: required for {self.accelerator}; one of {valid}")
            if self.topology not in info.topologies:
                raise ValueError(
                    f"resources.topology: {self.topology} is not a topology of {self.accelerator}; valid: {valid}"
                )
            if self.hosts is not None:
                raise ValueError("resources.hosts: on TPU the topology decides the hosts; remove hosts")
            if self.slices > 1 and self.hosts_per_slice == 1:
                raise ValueError(
                    f"resources.slices: multislice needs a multi-host topology: GKE runs multislice only on "
                    f"multi-host TPU node pools, and {self.topology} is one host; use a larger topology"
                )
        else:
            if self.topology is not None:
                raise ValueError("resources.topology: only TPU accelerators have a topology; use hosts")
            if self.slices != 1:
                raise ValueError("resources.slices: multislice is TPU only; use hosts")
        if self.gpus_per_host is not None:
            if info.kind != "gpu":
                raise ValueError("resources.gpusPerHost: only GPU accelerators have gpusPerHost")
            if self.gpus_per_host > info.max_gpus_per_host:
                raise ValueError(
                    f"resources.gpusPerHost: a {self.accelerator} node has at most {info.max_gpus_per_host} GPUs"
                )
        if self.mesh:
            if self.devices % self.mesh.model:
                raise ValueError(f"resources.mesh.model: {self.mesh.model} does not divide the {self.devices} devices")
            if self.mesh.data is not None and self.mesh.data * self.mesh.model != self.devices:
                raise ValueError(
                    f"resources.mesh.data: data x model = {self.mesh.data * self.mesh.model}, "
                    f"but the resources have {self.devices} devices"
                )
        return self


class SecretKey(ApiModel):
    """One key of a Secret in the resource's namespace."""

    name: str = Field(pattern=r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$", max_length=253, description="The Secret's name.")
    key: str = Field(default="token", min_length=1, max_length=253, description="The key holding the value.")


class ActivationExtractionSpec(JobSpec):
    """What `spec:` of an ActivationExtraction holds."""

    model_config = JobSpec.model_config | {"json_schema_extra": {"x-kubernetes-validations": SPEC_RULES}}

    resources: ResourcesSpec = Field(description="Accelerator, topology and number of slices or hosts.")
    image: str | None = Field(
        default=None,
        min_length=1,
        max_length=512,
        description="Worker container image. Unset: the operator's default worker image.",
    )
    service_account_name: str = Field(
        default="layertap-worker",
        pattern=DNS_LABEL_PATTERN,
        max_length=63,
        description=(
            "ServiceAccount of the worker pods: it needs GCS access (Workload Identity) and may patch this resource's "
            "status."
        ),
    )
    suspend: bool = Field(
        default=False,
        description="Suspend the run (pods are deleted, committed shards are kept); set back to false to resume.",
    )
    queue_name: str | None = Field(
        default=None,
        pattern=DNS_LABEL_PATTERN,
        max_length=63,
        description="Kueue LocalQueue to submit to; the JobSet starts suspended and Kueue admits it.",
    )
    max_restarts: int = Field(
        default=3,
        ge=0,
        le=100,
        description=(
            "How often the whole JobSet may restart after a pod fails (pre-emption, host error); each restart resumes "
            "from committed shards."
        ),
    )
    active_deadline_seconds: int | None = Field(
        default=None,
        ge=1,
        description="Fail the run if it has not finished this many seconds after it started.",
    )
    ttl_seconds_after_finished: int | None = Field(
        default=None,
        ge=0,
        description=(
            "Delete the JobSet (and its pods) this many seconds after it finished; the resource and its status stay."
        ),
    )
    termination_grace_period_seconds: int | None = Field(
        default=None,
        ge=1,
        le=3600,
        description=(
            "How long a worker may take to stop when its pod is deleted (suspend, restart, preemption): it stops at "
            "the next step boundary and commits what it computed. Unset: Kubernetes' 30 seconds."
        ),
    )
    priority_class_name: str | None = Field(
        default=None,
        pattern=DNS_LABEL_PATTERN,
        max_length=253,
        description="PriorityClass of the worker pods (scheduling and preemption among pods).",
    )
    workload_priority_class_name: str | None = Field(
        default=None,
        pattern=DNS_LABEL_PATTERN,
        max_length=253,
        description=(
            "Kueue WorkloadPriorityClass of the run (admission order and preemption among queued runs); needs "
            "queueName."
        ),
    )
    hub_token_secret: SecretKey | None = Field(
        default=None,
        description=(
            "A Secret key holding a Hugging Face token, given to the workers as HF_TOKEN: needed for hf:// "
            "sources in private or gated repositories (e.g. Llama 3). The token never enters the spec or the logs."
        ),
    )
    privileged: bool = Field(
        default=False,
        description=(
            "Run the worker containers privileged, as root. Only for TPU node pools on GKE before 1.28, where "
            "containers needed it to reach the TPUs; from 1.28 GKE needs neither (docs/gke.md)."
        ),
    )

    @model_validator(mode="after")
    def _priority_needs_a_queue(self) -> ActivationExtractionSpec:
        if self.workload_priority_class_name and not self.queue_name:
            raise ValueError("workloadPriorityClassName: a Kueue priority needs queueName (the run must be queued)")
        return self

    def worker_spec(self) -> WorkerSpec:
        """What the workers run: the job sections and the device mesh, without the other cluster fields."""
        job = {name: getattr(self, name) for name in JobSpec.model_fields}
        res = self.resources
        devices = ExpectedDevices(platform=res.info.kind, per_host=res.devices_per_host, accelerator=res.accelerator)
        return WorkerSpec.model_validate({**job, "mesh": res.mesh or MeshSpec(), "devices": devices})


class ActivationExtraction(ApiModel):
    """A whole resource as `kubectl get -o yaml` shows it."""

    model_config = ApiModel.model_config | {"extra": "ignore"}

    api_version: str = Field(default=API_VERSION, description="layertap.dev/v1alpha1")
    kind: str = Field(default=KIND, description="ActivationExtraction")
    metadata: dict[str, Any] = Field(default_factory=dict, description="Standard object metadata.")
    spec: ActivationExtractionSpec = Field(description="What to extract, from what, and where to run it.")
    status: ExtractionStatus | None = Field(
        default=None, description="Observed state, written by the operator and the workers."
    )

    @model_validator(mode="after")
    def _name_fits(self) -> ActivationExtraction:
        problem = name_problem(self.metadata.get("name", ""), self.spec.resources)
        if problem:
            raise ValueError(problem)
        return self


def name_problem(name: str, resources: ResourcesSpec) -> str:
    """Why `name` cannot name a resource with these resources ('' if it can): the CRD's rules."""
    if not re.fullmatch(DNS_1035_PATTERN, name):
        return (
            f"metadata.name {name!r} must be a DNS-1035 label (lower-case letters, digits and '-', starting "
            "with a letter): it names the JobSet, its pods and their hostnames"
        )
    limit = resources.max_name_length
    if len(name) > limit:
        return name_too_long(limit)
    return ""
