"""Every label, annotation and environment key the operator writes or reads, in one place.

The worker reads the same environment keys (`layertap.extract.distributed`,
`layertap.reporter`); this module imports nothing heavy so both sides can share it.
"""

from __future__ import annotations

from layertap_api.resource import API_VERSION, GROUP, KIND, PLURAL, VERSION

__all__ = ["API_VERSION", "GROUP", "KIND", "PLURAL", "VERSION"]

OPERATOR_NAME = "layertap-operator"
FIELD_MANAGER = OPERATOR_NAME

# JobSet API and the keys of its controller (sigs.k8s.io/jobset api/jobset/v1alpha2).
JOBSET_GROUP = "jobset.x-k8s.io"
JOBSET_VERSION = "v1alpha2"
JOBSET_PLURAL = "jobsets"
JOBSET_API_VERSION = f"{JOBSET_GROUP}/{JOBSET_VERSION}"
JOBSET_JOB_INDEX_ANNOTATION = "jobset.sigs.k8s.io/job-index"
EXCLUSIVE_TOPOLOGY_ANNOTATION = "alpha.jobset.sigs.k8s.io/exclusive-topology"
GKE_NODEPOOL_LABEL = "cloud.google.com/gke-nodepool"
REPLICATED_JOB = "worker"
CONTAINER = "worker"

# Labels on the JobSet and its pods, pointing back to the resource.
LABEL_NAME = "app.kubernetes.io/name"
LABEL_INSTANCE = "app.kubernetes.io/instance"
LABEL_COMPONENT = "app.kubernetes.io/component"
LABEL_MANAGED_BY = "app.kubernetes.io/managed-by"
LABEL_EXTRACTION = "layertap.dev/extraction"
KUEUE_QUEUE_LABEL = "kueue.x-k8s.io/queue-name"

# kopf's own bookkeeping (handler progress, last handled spec) lives in annotations
# with this prefix: the status schema has no room for it, and workers own status.progress.
KOPF_ANNOTATION_PREFIX = "operator.layertap.dev"
FINALIZER = f"{KOPF_ANNOTATION_PREFIX}/finalizer"

# Operator configuration (its Deployment's environment).
ENV_DEFAULT_WORKER_IMAGE = "LAYERTAP_WORKER_IMAGE"
ENV_RESYNC_SECONDS = "LAYERTAP_RESYNC_SECONDS"  # how often status is recomputed from the JobSet

# Worker environment: the contract of docs/architecture.md "Operator <-> worker".
ENV_SPEC = "LAYERTAP_SPEC"  # the validated spec, JSON, camelCase
ENV_EXTRACTION_NAME = "LAYERTAP_EXTRACTION_NAME"
ENV_EXTRACTION_NAMESPACE = "LAYERTAP_EXTRACTION_NAMESPACE"
ENV_JOBSET_NAME = "JOBSET_NAME"
ENV_REPLICATED_JOB_NAME = "REPLICATED_JOB_NAME"
ENV_JOB_INDEX = "JOB_INDEX"  # which slice (Job) this pod is in; JOB_COMPLETION_INDEX is the host in it
ENV_PROCESSES_PER_JOB = "LAYERTAP_PROCESSES_PER_JOB"
ENV_NUM_PROCESSES = "LAYERTAP_NUM_PROCESSES"
ENV_COORDINATOR_PORT = "LAYERTAP_COORDINATOR_PORT"
ENV_CACHE = "LAYERTAP_CACHE"
# Multislice (TPU over the data-center network): read by libtpu / JAX.
ENV_MEGASCALE_COORDINATOR = "MEGASCALE_COORDINATOR_ADDRESS"
ENV_MEGASCALE_NUM_SLICES = "MEGASCALE_NUM_SLICES"
ENV_MEGASCALE_SLICE_ID = "MEGASCALE_SLICE_ID"

COORDINATOR_PORT = 8476
WORKER_UID = 65532  # the user of Dockerfile.worker
SCRATCH_DIR = "/tmp"
