"""The labels, annotations and settings of the operator's side, in one place.

What the worker reads (environment keys, ports, hostnames, exit codes) is the contract in
`layertap_api.contract`, shared by both sides.
"""

from __future__ import annotations

from layertap_api.contract import JOBSET_RESTART_ATTEMPT_LABEL
from layertap_api.resource import API_VERSION, GROUP, KIND, PLURAL, VERSION

__all__ = ["API_VERSION", "GROUP", "JOBSET_RESTART_ATTEMPT_LABEL", "KIND", "PLURAL", "VERSION"]

OPERATOR_NAME = "layertap-operator"
FIELD_MANAGER = OPERATOR_NAME

# JobSet API and the keys of its controller (sigs.k8s.io/jobset api/jobset/v1alpha2).
JOBSET_GROUP = "jobset.x-k8s.io"
JOBSET_VERSION = "v1alpha2"
JOBSET_PLURAL = "jobsets"
JOBSET_API_VERSION = f"{JOBSET_GROUP}/{JOBSET_VERSION}"
EXCLUSIVE_TOPOLOGY_ANNOTATION = "alpha.jobset.sigs.k8s.io/exclusive-topology"
GKE_NODEPOOL_LABEL = "cloud.google.com/gke-nodepool"

# Labels on the JobSet and its pods, pointing back to the resource.
LABEL_NAME = "app.kubernetes.io/name"
LABEL_INSTANCE = "app.kubernetes.io/instance"
LABEL_COMPONENT = "app.kubernetes.io/component"
LABEL_MANAGED_BY = "app.kubernetes.io/managed-by"
LABEL_EXTRACTION = "layertap.dev/extraction"
KUEUE_QUEUE_LABEL = "kueue.x-k8s.io/queue-name"
KUEUE_PRIORITY_LABEL = "kueue.x-k8s.io/priority-class"  # a WorkloadPriorityClass
KUEUE_GROUP = "kueue.x-k8s.io"
KUEUE_VERSION = "v1beta2"
KUEUE_WORKLOADS = "workloads"

# kopf's own bookkeeping (handler progress, last handled spec) lives in annotations
# with this prefix: the status schema has no room for it, and workers own status.progress.
KOPF_ANNOTATION_PREFIX = "operator.layertap.dev"
FINALIZER = f"{KOPF_ANNOTATION_PREFIX}/finalizer"

# Operator configuration (its Deployment's environment).
ENV_DEFAULT_WORKER_IMAGE = "LAYERTAP_WORKER_IMAGE"  # TPU and CPU node pools
ENV_DEFAULT_GPU_WORKER_IMAGE = "LAYERTAP_WORKER_GPU_IMAGE"  # NVIDIA GPU node pools (CUDA)
ENV_RESYNC_SECONDS = "LAYERTAP_RESYNC_SECONDS"  # how often status is recomputed from the JobSet
ENV_METRICS_PORT = "LAYERTAP_METRICS_PORT"  # where the operator serves /metrics (unset: nowhere)

WORKER_UID = 65532  # the user of Dockerfile.worker
SCRATCH_DIR = "/tmp"
