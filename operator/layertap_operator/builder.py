"""ActivationExtraction spec -> JobSet manifest. Pure: no client calls, same input, same dict.

One replicated Job per slice (`replicas = slices`), one pod per host (`parallelism =
completions = hosts`, Indexed), `backoffLimit: 0`: a failed host fails its Job and the
JobSet restarts the whole group (`failurePolicy.maxRestarts`), because a JAX program
cannot lose a process and go on. The workers resume from committed shards.

Failures are told apart (the exit codes of `layertap_api.contract`): a worker that exits
with EXIT_INVALID (the spec or its inputs are wrong) fails its Job at once through the
Job's `podFailurePolicy`, and the JobSet fails without a restart; a pod disrupted by the
cluster (preemption, maintenance: the `DisruptionTarget` condition) restarts the JobSet
without counting against `maxRestarts`; any other failure restarts it and counts.
"""

from __future__ import annotations

from dataclasses import dataclass

from layertap_api import contract as wire
from layertap_api.catalog import TPU_TOPOLOGY_LABEL
from layertap_api.resource import DEFAULT_CPU, DEFAULT_MEMORY, ActivationExtractionSpec
from layertap_operator import constants as c

# The JobSet's reaction to a failed Job, by the podFailurePolicy rule that failed it (the
# Job controller's message names the rule's index: "... matching FailJob rule at index N").
INVALID_SPEC_RULE = "InvalidSpec"
DISRUPTED_RULE = "Disrupted"
FAILURE_RULES = [
    {
        "name": INVALID_SPEC_RULE,
        "action": "FailJobSet",
        "onJobFailureReasons": ["PodFailurePolicy"],
        "onJobFailureMessagePatterns": ["rule at index 0"],
    },
    {
        "name": DISRUPTED_RULE,
        "action": "RestartJobSetAndIgnoreMaxRestarts",
        "onJobFailureReasons": ["PodFailurePolicy"],
        "onJobFailureMessagePatterns": ["rule at index 1"],
    },
]


@dataclass(frozen=True)
class Owner:
    """The resource a JobSet belongs to."""

    name: str
    namespace: str
    uid: str


def labels(owner: Owner) -> dict[str, str]:
    return {
        c.LABEL_NAME: "layertap",
        c.LABEL_INSTANCE: owner.name,
        c.LABEL_COMPONENT: "worker",
        c.LABEL_MANAGED_BY: c.OPERATOR_NAME,
        c.LABEL_EXTRACTION: owner.name,
    }


def owner_reference(owner: Owner) -> dict:
    return {
        "apiVersion": c.API_VERSION,
        "kind": c.KIND,
        "name": owner.name,
        "uid": owner.uid,
        "controller": True,
        "blockOwnerDeletion": True,
    }


def build_jobset(spec: ActivationExtractionSpec, owner: Owner, image: str) -> dict:
    """The JobSet that runs `spec`; named like the resource, so creating it twice is a conflict."""
    res = spec.resources
    metadata: dict = {
        "name": owner.name,
        "namespace": owner.namespace,
        "labels": labels(owner)
        | ({c.KUEUE_QUEUE_LABEL: spec.queue_name} if spec.queue_name else {})
        | ({c.KUEUE_PRIORITY_LABEL: spec.workload_priority_class_name} if spec.workload_priority_class_name else {}),
        "ownerReferences": [owner_reference(owner)],
    }
    if res.info.kind == "tpu" and res.hosts_per_slice > 1:
        # Each multi-host slice is a whole node pool: one Job per pool, never two sharing one.
        metadata["annotations"] = {c.EXCLUSIVE_TOPOLOGY_ANNOTATION: c.GKE_NODEPOOL_LABEL}
    job_spec: dict = {
        "parallelism": res.hosts_per_slice,
        "completions": res.hosts_per_slice,
        "completionMode": "Indexed",
        "backoffLimit": 0,
        "podFailurePolicy": {
            "rules": [
                # Rule 0: the worker says its spec or inputs are wrong: no retry can help.
                {
                    "action": "FailJob",
                    "onExitCodes": {"containerName": wire.CONTAINER, "operator": "In", "values": [wire.EXIT_INVALID]},
                },
                # Rule 1: the cluster took the pod away (preemption, maintenance, eviction).
                {"action": "FailJob", "onPodConditions": [{"type": "DisruptionTarget", "status": "True"}]},
            ]
        },
        "template": {"metadata": {"labels": labels(owner)}, "spec": _pod_spec(spec, owner, image)},
    }
    if spec.active_deadline_seconds is not None:
        job_spec["activeDeadlineSeconds"] = spec.active_deadline_seconds
    jobset_spec: dict = {
        # With Kueue, the JobSet waits suspended until Kueue admits it.
        "suspend": spec.suspend or spec.queue_name is not None,
        "failurePolicy": {"maxRestarts": spec.max_restarts, "rules": FAILURE_RULES},
        # Process 0 is the JAX coordinator, reached by its hostname before it is Ready.
        "network": {"enableDNSHostnames": True, "publishNotReadyAddresses": True},
        "replicatedJobs": [
            {
                "name": wire.REPLICATED_JOB,
                "replicas": res.slices,
                "template": {"metadata": {"labels": labels(owner)}, "spec": job_spec},
            }
        ],
    }
    if spec.ttl_seconds_after_finished is not None:
        jobset_spec["ttlSecondsAfterFinished"] = spec.ttl_seconds_after_finished
    return {"apiVersion": c.JOBSET_API_VERSION, "kind": "JobSet", "metadata": metadata, "spec": jobset_spec}


def _pod_spec(spec: ActivationExtractionSpec, owner: Owner, image: str) -> dict:
    res, info = spec.resources, spec.resources.info
    # Non-root and unprivileged: GKE (1.28 and later) needs neither for TPUs. `spec.privileged`
    # is for older clusters, where TPU containers had to be privileged.
    user = 0 if spec.privileged else c.WORKER_UID
    pod: dict = {
        "restartPolicy": "Never",
        "serviceAccountName": spec.service_account_name,
        "securityContext": {
            "runAsNonRoot": not spec.privileged,
            "runAsUser": user,
            "runAsGroup": user,
            "fsGroup": c.WORKER_UID,
            "seccompProfile": {"type": "RuntimeDefault"},
        },
        "containers": [
            {
                "name": wire.CONTAINER,
                "image": image,
                "command": ["layertap", spec.mode],  # the subcommand of the same name runs each mode
                # The worker writes why it failed to /dev/termination-log; a crash leaves its log tail.
                "terminationMessagePolicy": "FallbackToLogsOnError",
                # The spec (mesh included) comes in LAYERTAP_SPEC; progress goes to the status.
                "args": ["--no-progress"],
                "env": _env(spec, owner),
                "ports": _ports(spec),
                "resources": _container_resources(spec),
                "securityContext": {"privileged": True}
                if spec.privileged
                else {
                    "allowPrivilegeEscalation": False,
                    "readOnlyRootFilesystem": True,
                    "capabilities": {"drop": ["ALL"]},
                },
                "volumeMounts": [{"name": "scratch", "mountPath": c.SCRATCH_DIR}],
            }
        ],
        # JAX compile cache, the downloaded checkpoint, and shards before upload.
        "volumes": [{"name": "scratch", "emptyDir": {}}],
    }
    if spec.termination_grace_period_seconds is not None:
        pod["terminationGracePeriodSeconds"] = spec.termination_grace_period_seconds
    if spec.priority_class_name:
        pod["priorityClassName"] = spec.priority_class_name
    if info.kind == "tpu":
        pod["nodeSelector"] = {info.node_label: res.accelerator, TPU_TOPOLOGY_LABEL: res.topology}
    elif info.kind == "gpu":
        pod["nodeSelector"] = {info.node_label: res.accelerator}
    if info.device_resource:
        pod["tolerations"] = [{"key": info.device_resource, "operator": "Exists", "effect": "NoSchedule"}]
    return pod


def _ports(spec: ActivationExtractionSpec) -> list[dict]:
    """The ports the workers listen on: JAX's coordinator (process 0), and on TPU multislice
    the megascale port libtpu talks over between slices."""
    ports = [
        {"name": "coordinator", "containerPort": wire.COORDINATOR_PORT, "protocol": "TCP"},
        {"name": "metrics", "containerPort": wire.METRICS_PORT, "protocol": "TCP"},
    ]
    if spec.resources.info.kind == "tpu" and spec.resources.slices > 1:
        ports.append({"name": "megascale", "containerPort": wire.MEGASCALE_PORT, "protocol": "TCP"})
    return ports


def _container_resources(spec: ActivationExtractionSpec) -> dict:
    res, info = spec.resources, spec.resources.info
    requests: dict[str, str] = {}
    limits: dict[str, str] = {}
    if info.device_resource:
        requests[info.device_resource] = limits[info.device_resource] = str(res.devices_per_host)
    cpu = res.cpu or (DEFAULT_CPU if info.kind == "cpu" else None)
    memory = res.memory or (DEFAULT_MEMORY if info.kind == "cpu" else None)
    if cpu:
        requests["cpu"] = cpu
    if memory:
        requests["memory"] = limits["memory"] = memory
    return {k: v for k, v in (("requests", requests), ("limits", limits)) if v}


def _env(spec: ActivationExtractionSpec, owner: Owner) -> list[dict]:
    res = spec.resources
    job_index = {"fieldRef": {"fieldPath": wire.JOB_INDEX_FIELD_PATH}}
    env = [
        {"name": wire.ENV_SPEC, "value": wire.encode_spec(spec.to_wire())},
        {"name": wire.ENV_EXTRACTION_NAME, "value": owner.name},
        {"name": wire.ENV_EXTRACTION_NAMESPACE, "value": owner.namespace},
        {"name": wire.ENV_JOBSET_NAME, "value": owner.name},
        {"name": wire.ENV_REPLICATED_JOB_NAME, "value": wire.REPLICATED_JOB},
        {"name": wire.ENV_JOB_INDEX, "valueFrom": job_index},
        {"name": wire.ENV_PROCESSES_PER_JOB, "value": str(res.hosts_per_slice)},
        {"name": wire.ENV_NUM_PROCESSES, "value": str(res.process_count)},
        {"name": wire.ENV_COORDINATOR_PORT, "value": str(wire.COORDINATOR_PORT)},
        {"name": wire.ENV_JAX_PLATFORMS, "value": wire.JAX_PLATFORM[res.info.kind]},
        {"name": wire.ENV_METRICS_PORT, "value": str(wire.METRICS_PORT)},
        {
            "name": wire.ENV_RESTART_ATTEMPT,
            "valueFrom": {"fieldRef": {"fieldPath": f"metadata.labels['{wire.JOBSET_RESTART_ATTEMPT_LABEL}']"}},
        },
        {"name": "HOME", "value": c.SCRATCH_DIR},
        {"name": wire.ENV_CACHE, "value": f"{c.SCRATCH_DIR}/layertap-cache"},
    ]
    if spec.hub_token_secret is not None:
        secret = spec.hub_token_secret
        env.append({"name": wire.ENV_HF_TOKEN, "valueFrom": {"secretKeyRef": {"name": secret.name, "key": secret.key}}})
    if res.info.kind == "tpu" and res.slices > 1:
        env += [
            {"name": wire.ENV_MEGASCALE_COORDINATOR, "value": wire.coordinator_host(owner.name)},
            {"name": wire.ENV_MEGASCALE_PORT, "value": str(wire.MEGASCALE_PORT)},
            {"name": wire.ENV_MEGASCALE_NUM_SLICES, "value": str(res.slices)},
            {"name": wire.ENV_MEGASCALE_SLICE_ID, "valueFrom": job_index},
        ]
    return env
