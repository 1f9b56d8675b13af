"""kopf handlers: observe, call the pure builders, write back. Run with

    kopf run -m layertap_operator.handlers --all-namespaces     (or -n NAMESPACE ...)

Every handler is the same level-based reconcile: on create, resume and spec change for a
fast reaction, and on a timer so status follows the JobSet even when no event arrives.

The Kubernetes permissions it needs, and the workers', are listed in docs/operator.md
("RBAC") and granted by the chart's templates/operator/rbac.yaml and worker/rbac.yaml.
"""

from __future__ import annotations

import collections
import json
import logging
import os
import threading
import time
from datetime import UTC, datetime
from typing import Any

import kopf
import kubernetes
from kubernetes.client.exceptions import ApiException
from pydantic import ValidationError

from layertap_api.resource import ActivationExtractionSpec
from layertap_api.validation import explain
from layertap_operator import cache
from layertap_operator import constants as c
from layertap_operator.builder import Owner, build_jobset
from layertap_operator.metrics import METRICS
from layertap_operator.policy import Policy, violations
from layertap_operator.status import (
    Observation,
    PodState,
    Problem,
    applied_spec,
    changed_fields,
    desired_status,
    invalid_spec_status,
    pod_state,
)

RESOURCE = (c.GROUP, c.VERSION, c.PLURAL)
RESYNC_SECONDS = float(os.environ.get(c.ENV_RESYNC_SECONDS, "10"))
REQUEST_TIMEOUT_S = 30  # no call of ours may hang a handler (and with it the resync timer)
POLICY = Policy.from_environment(os.environ)  # what a resource may ask for: the chart's policy values
log = logging.getLogger(__name__)


@kopf.on.startup()
def configure(settings: kopf.OperatorSettings, **_: Any) -> None:
    # A watch can go silent without closing (a proxy or load balancer dropping idle
    # connections); the server ends each watch after 5 minutes and the client gives up a
    # little later, so kopf re-watches instead of waiting forever.
    settings.watching.server_timeout = 300
    settings.watching.client_timeout = 330
    settings.watching.connect_timeout = 30
    # A single create/patch must fail and be retried rather than hang a handler.
    settings.networking.request_timeout = 30
    # kopf's bookkeeping goes into our annotations: the status schema has no place for it.
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix=c.KOPF_ANNOTATION_PREFIX)
    settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(prefix=c.KOPF_ANNOTATION_PREFIX)
    # kopf holds each resource with a finalizer while its timer runs, to stop the timer
    # before the resource goes; the JobSet itself goes by garbage collection.
    settings.persistence.finalizer = c.FINALIZER
    # One replica (Recreate): no peering objects to create, no RBAC for them.
    settings.peering.standalone = True
    settings.posting.level = logging.INFO
    settings.posting.reporting_component = c.OPERATOR_NAME  # the "From" of kubectl describe's events
    try:
        kubernetes.config.load_incluster_config()
    except kubernetes.config.ConfigException:
        kubernetes.config.load_kube_config()
    if port := METRICS.serve():
        log.info("serving Prometheus metrics on :%d/metrics", port)


@kopf.on.create(*RESOURCE)
@kopf.on.resume(*RESOURCE)
@kopf.on.update(*RESOURCE, field="spec")
def on_change(name: str, namespace: str, **_: Any) -> None:
    measured_reconcile(namespace, name)


# The first pass waits one interval: creation is the create handler's.
@kopf.timer(*RESOURCE, interval=RESYNC_SECONDS, initial_delay=RESYNC_SECONDS)
def resync(name: str, namespace: str, **_: Any) -> None:
    measured_reconcile(namespace, name)


# The JobSets it made: any change (pods started, finished, failed, the JobSet deleted)
# reaches the resource's status at once instead of at the next resync.
@kopf.on.event(c.JOBSET_GROUP, c.JOBSET_VERSION, c.JOBSET_PLURAL, labels={c.LABEL_MANAGED_BY: c.OPERATOR_NAME})
def on_jobset(body: kopf.Body, namespace: str, **_: Any) -> None:
    owner = (body["metadata"].get("labels") or {}).get(c.LABEL_EXTRACTION)
    if owner:
        measured_reconcile(namespace, owner)


# optional: deletion never waits on this handler (the JobSet goes by garbage collection).
@kopf.on.delete(*RESOURCE, optional=True)
def on_delete(name: str, namespace: str, **_: Any) -> None:
    with _passes[(namespace, name)]:  # after a pass in flight, which would count it again
        METRICS.forget(namespace, name)


# One pass at a time per resource: the resource's handlers and its JobSet's events would
# otherwise race on the same transition and post its Event twice.
_passes: collections.defaultdict[tuple[str, str], threading.Lock] = collections.defaultdict(threading.Lock)


def measured_reconcile(namespace: str, name: str) -> None:
    """One reconcile pass on the resource as the API server has it now, counted by outcome and
    timed for the operator's /metrics. The status goes in with a merge patch, and only when it changed."""
    started, outcome = time.perf_counter(), "error"
    try:
        with _passes[(namespace, name)]:
            body = _get_resource(namespace, name)
            if body is None:  # deleted: also undoes a pass that counted it while on_delete ran
                METRICS.forget(namespace, name)
                outcome = "gone"
                return
            patch = kopf.Patch()
            outcome = reconcile(body, patch)
            if patch:
                _custom_objects().patch_namespaced_custom_object_status(
                    c.GROUP, c.VERSION, namespace, c.PLURAL, name, dict(patch), _request_timeout=REQUEST_TIMEOUT_S
                )
    finally:
        METRICS.reconciles.labels(outcome).inc()
        METRICS.reconcile_seconds.observe(time.perf_counter() - started)


def _custom_objects() -> kubernetes.client.CustomObjectsApi:
    """The API of custom resources: ours, JobSets and Kueue's Workloads alike."""
    return kubernetes.client.CustomObjectsApi()


def _get_resource(namespace: str, name: str) -> dict | None:
    try:
        return _custom_objects().get_namespaced_custom_object(
            c.GROUP, c.VERSION, namespace, c.PLURAL, name, _request_timeout=REQUEST_TIMEOUT_S
        )
    except ApiException as error:
        if error.status == 404:
            return None
        raise kopf.TemporaryError(f"reading the resource: {_reason(error)}", delay=5) from None


def reconcile(body: dict, patch: kopf.Patch) -> str:
    """Make the JobSet match the spec as far as it can, then write what is observed.
    Returns the outcome: "ok", "problem" when a condition needs the user, or "invalid" for a
    spec the CRD admitted and the API's rules refuse (Failed, InvalidSpec: the user's to fix)."""
    previous = dict(body.get("status") or {})
    meta = body["metadata"]
    if meta.get("deletionTimestamp"):
        METRICS.forget(meta["namespace"], meta["name"])
        return "ok"  # going: garbage collection takes the JobSet, which must not come back
    if previous.get("phase") in ("Succeeded", "Failed") and previous.get("jobSetName"):
        METRICS.saw(meta["namespace"], meta["name"], previous["phase"])
        return "ok"  # finished; its JobSet may be gone (ttlSecondsAfterFinished) and must not come back
    owner = Owner(meta["name"], meta["namespace"], meta["uid"])
    try:
        spec = ActivationExtractionSpec.model_validate(dict(body["spec"]))
    except ValidationError as error:
        status, events = invalid_spec_status(
            explain(error, ActivationExtractionSpec), meta.get("generation", 0), previous
        )
        if any(previous.get(key) != value for key, value in status.items()):
            patch.status.update(status)
        for event in events:
            kopf.event(body, type=event.type, reason=event.reason, message=event.message)
        METRICS.saw(owner.namespace, owner.name, "Failed")
        return "invalid"
    jobset, problem, created = ensure_jobset(spec, owner)
    applied = applied_spec(jobset) if jobset else None
    changed = changed_fields(applied or {}, spec.to_wire()) if jobset else []
    if jobset:
        jobset = follow_suspend(jobset, spec, owner)
    pods = observed_pods(owner, jobset) if jobset else ()
    if jobset and not pods and not problem and not jobset["spec"].get("suspend"):  # pods are due, yet none came
        problem = missing_service_account(spec, owner)
    queued = jobset and spec.queue_name and jobset["spec"].get("suspend")
    admission = kueue_admission(owner, jobset) if queued else ""
    observation = Observation(
        meta.get("generation", 0),
        spec,
        jobset,
        problem,
        changed,
        pods,
        admission,
        applied=_parsed(applied),
        recreated=created and bool(previous.get("jobSetName")),
    )
    status, events = desired_status(observation, previous, datetime.now(UTC))
    if any(previous.get(key) != value for key, value in status.items()):
        patch.status.update(status)  # only on change: a resync that sees nothing new writes nothing
    for event in events:
        kopf.event(body, type=event.type, reason=event.reason, message=event.message)
    METRICS.saw(owner.namespace, owner.name, status.get("phase"))
    return "problem" if problem else "ok"


def observed_pods(owner: Owner, jobset: dict) -> tuple[PodState, ...]:
    """The worker pods of the JobSet's current attempt, from the watch's cache (no request);
    on the pass that sees the JobSet failed, from the API server instead: that pass writes the
    final status once, with the failed worker's own message, and the pod watch may be a moment
    behind the JobSet's (one LIST of this resource's pods, once per run)."""
    attempt = str(jobset.get("status", {}).get("restarts", 0))
    failed = any(
        x.get("type") == "Failed" and x.get("status") == "True" for x in jobset.get("status", {}).get("conditions", [])
    )
    pods = _listed_pods(owner) if failed else cache.pods_of(owner.namespace, owner.name)
    return tuple(pod.state for pod in pods if (attempt if pod.attempt is None else pod.attempt) == attempt)


def _listed_pods(owner: Owner) -> tuple[cache.CachedPod, ...]:
    """The resource's pods as the API server has them now (the cache's, should the LIST fail)."""
    api = kubernetes.client.CoreV1Api()
    try:
        listed = api.list_namespaced_pod(
            owner.namespace, label_selector=f"{c.LABEL_EXTRACTION}={owner.name}", _request_timeout=REQUEST_TIMEOUT_S
        ).items
    except (ApiException, OSError) as error:
        log.warning("listing the pods of %s/%s: %s", owner.namespace, owner.name, error)
        return cache.pods_of(owner.namespace, owner.name)
    serialize = api.api_client.sanitize_for_serialization
    pods = [
        cache.CachedPod((pod.metadata.labels or {}).get(c.JOBSET_RESTART_ATTEMPT_LABEL), pod_state(serialize(pod)))
        for pod in listed
    ]
    return tuple(sorted(pods, key=lambda pod: pod.state.name))


def set_workload_active(owner: Owner, jobset: dict, active: bool) -> None:
    workload = cache.workload_of(owner.namespace, jobset["metadata"].get("uid"))
    if workload is None or workload.active == active:
        return
    try:
        _custom_objects().patch_namespaced_custom_object(
            c.KUEUE_GROUP,
            c.KUEUE_VERSION,
            owner.namespace,
            c.KUEUE_WORKLOADS,
            workload.name,
            {"spec": {"active": active}},
            _request_timeout=REQUEST_TIMEOUT_S,
        )
    except ApiException as error:
        raise kopf.TemporaryError(
            f"{'activating' if active else 'deactivating'} the Kueue workload: {_reason(error)}", delay=5
        ) from None


def kueue_admission(owner: Owner, jobset: dict) -> str:
    """Why Kueue has not admitted the JobSet yet: its Workload's QuotaReserved message
    ('' without Kueue: the phase says "queued" alone)."""
    workload = cache.workload_of(owner.namespace, jobset["metadata"].get("uid"))
    return workload.admission if workload else ""


def _parsed(applied: dict | None) -> ActivationExtractionSpec | None:
    """The applied spec as a model; None if absent or written by an operator of another schema."""
    try:
        return ActivationExtractionSpec.model_validate(applied) if applied else None
    except ValidationError:
        return None


def ensure_jobset(spec: ActivationExtractionSpec, owner: Owner) -> tuple[dict | None, Problem | None, bool]:
    """The resource's JobSet, created if absent (the flag: by this call). Its fixed name makes a
    repeated create a conflict, so an operator restarted mid-reconcile finds the JobSet instead
    of making a second one."""
    api = _custom_objects()
    jobset, created = _get_jobset(api, owner), False
    if jobset is None:
        # Checked before creating only: a JobSet made under an earlier policy is left to run.
        if denied := violations(spec, POLICY):
            return None, Problem("PolicyDenied", "; ".join(denied), terminal=True), False
        default = c.ENV_DEFAULT_GPU_WORKER_IMAGE if spec.resources.info.kind == "gpu" else c.ENV_DEFAULT_WORKER_IMAGE
        image = spec.image or os.environ.get(default)
        if not image:
            return None, Problem("NoImage", f"set spec.image: the operator has no default ({default})"), False
        try:
            jobset = api.create_namespaced_custom_object(
                c.JOBSET_GROUP,
                c.JOBSET_VERSION,
                owner.namespace,
                c.JOBSET_PLURAL,
                build_jobset(spec, owner, image),
                field_manager=c.FIELD_MANAGER,
                _request_timeout=REQUEST_TIMEOUT_S,
            )
            METRICS.jobsets_created.inc()
            created = True
        except ApiException as error:
            if error.status == 409:
                jobset = _get_jobset(api, owner)
            elif error.status in (400, 403, 422):
                return (
                    None,
                    Problem("JobSetRejected", f"the API server rejected the JobSet: {_reason(error)}", terminal=True),
                    False,
                )
            else:
                raise kopf.TemporaryError(f"creating the JobSet: {_reason(error)}", delay=10) from None
    owners = [ref.get("uid") for ref in (jobset or {}).get("metadata", {}).get("ownerReferences", [])]
    if jobset is not None and owner.uid not in owners:
        return (
            None,
            Problem(
                "JobSetNameTaken",
                f"a JobSet named {owner.name} exists and belongs to something else: "
                "delete that JobSet, or re-create this resource under another name",
            ),
            False,
        )
    return jobset, None, created


def missing_service_account(spec: ActivationExtractionSpec, owner: Owner) -> Problem | None:
    """Without its ServiceAccount the Job controller cannot create a single worker pod."""
    try:
        kubernetes.client.CoreV1Api().read_namespaced_service_account(
            spec.service_account_name, owner.namespace, _request_timeout=REQUEST_TIMEOUT_S
        )
    except ApiException as error:
        if error.status == 404:
            return Problem(
                "ServiceAccountMissing",
                f"spec.serviceAccountName {spec.service_account_name} does not exist in namespace {owner.namespace}, "
                "so no worker pod can be created: install the chart with this namespace in worker.namespaces, or "
                "name an existing ServiceAccount",
            )
    except OSError:
        pass
    return None


def follow_suspend(jobset: dict, spec: ActivationExtractionSpec, owner: Owner) -> dict:
    """Suspend or resume the JobSet as spec.suspend says. With Kueue, the way Kueue provides:
    its Workload is deactivated (Kueue then evicts and suspends the JobSet) or activated."""
    if spec.queue_name:
        set_workload_active(owner, jobset, active=not spec.suspend)
        return jobset
    if bool(jobset["spec"].get("suspend")) == spec.suspend:
        return jobset
    meta = jobset["metadata"]
    try:
        return _custom_objects().patch_namespaced_custom_object(
            c.JOBSET_GROUP,
            c.JOBSET_VERSION,
            meta["namespace"],
            c.JOBSET_PLURAL,
            meta["name"],
            {"spec": {"suspend": spec.suspend}},
            field_manager=c.FIELD_MANAGER,
            _request_timeout=REQUEST_TIMEOUT_S,
        )
    except ApiException as error:
        raise kopf.TemporaryError(
            f"{'suspending' if spec.suspend else 'resuming'} the JobSet: {_reason(error)}", delay=5
        ) from None


def _get_jobset(api: kubernetes.client.CustomObjectsApi, owner: Owner) -> dict | None:
    try:
        return api.get_namespaced_custom_object(
            c.JOBSET_GROUP,
            c.JOBSET_VERSION,
            owner.namespace,
            c.JOBSET_PLURAL,
            owner.name,
            _request_timeout=REQUEST_TIMEOUT_S,
        )
    except ApiException as error:
        if error.status == 404:
            return None
        raise kopf.TemporaryError(f"reading the JobSet: {_reason(error)}", delay=10) from None


def _reason(error: ApiException) -> str:
    try:
        return json.loads(error.body)["message"]
    except (TypeError, ValueError, KeyError):
        return f"{error.status} {error.reason}"
