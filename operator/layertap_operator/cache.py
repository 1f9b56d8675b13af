"""What a reconcile reads from memory instead of the API server: the worker pods and Kueue's
Workloads, kept current by kopf's watches as indices.

A LIST by label selector still walks every pod (or Workload) of the namespace on the server,
on every pass of every resource; a watch costs the server one event per change. kopf holds
every handler until the indices are filled, so a pass never sees an empty cache after a
restart. The pod watch asks the server for labelled pods only (and the JobSet watch for
ours only): the operator never receives other pods. Without Kueue there is no Workload
resource to watch, and the Workload index stays empty (kopf starts its watch if the CRD
comes later).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import kopf

from layertap_operator import constants as c
from layertap_operator.status import PodState, pod_state

_INDICES: dict[str, kopf.Index] = {}


@dataclass(frozen=True)
class CachedPod:
    attempt: str | None  # its JobSet restart attempt (the label), None if unlabelled
    state: PodState


@dataclass(frozen=True)
class CachedWorkload:
    name: str
    active: bool  # spec.active: false while the run is suspended through Kueue
    admission: str  # why Kueue has not admitted it: the QuotaReserved=False message, or ""


@kopf.on.startup()
def watch_only_ours(settings: kopf.OperatorSettings, **indices: Any) -> None:
    # Server-side filters: the same as the handlers' own, but the server drops the rest.
    settings.watching.label_selectors["v1", "pods"] = c.LABEL_EXTRACTION
    settings.watching.label_selectors[c.JOBSET_GROUP, c.JOBSET_PLURAL] = f"{c.LABEL_MANAGED_BY}={c.OPERATOR_NAME}"
    # kopf hands handlers the indices as arguments; the reconcile reaches them from here.
    _INDICES.update(pods=indices["extraction_pods"], workloads=indices["kueue_workloads"])


@kopf.index("v1", "pods", labels={c.LABEL_EXTRACTION: kopf.PRESENT})
def extraction_pods(body: kopf.Body, namespace: str, labels: kopf.Labels, **_: Any) -> dict:
    """(namespace, extraction name) -> what the status needs of each of its pods."""
    return {
        (namespace, labels[c.LABEL_EXTRACTION]): CachedPod(labels.get(c.JOBSET_RESTART_ATTEMPT_LABEL), pod_state(body))
    }


@kopf.index(c.KUEUE_GROUP, c.KUEUE_VERSION, c.KUEUE_WORKLOADS)
def kueue_workloads(body: kopf.Body, namespace: str, **_: Any) -> dict:
    """(namespace, JobSet uid) -> its Workload, for the Workloads a JobSet owns (Kueue's
    others are not kept)."""
    owners = [r["uid"] for r in body["metadata"].get("ownerReferences", []) if r.get("kind") == "JobSet"]
    if not owners:
        return {}
    workload = CachedWorkload(body["metadata"]["name"], body.get("spec", {}).get("active", True), admission(body))
    return {(namespace, uid): workload for uid in owners}


def admission(workload: dict) -> str:
    for condition in workload.get("status", {}).get("conditions", []):
        if condition.get("type") == "QuotaReserved" and condition.get("status") == "False":
            return condition.get("message", "")
    return ""


def pods_of(namespace: str, extraction: str) -> tuple[CachedPod, ...]:
    """The resource's pods as last watched, by name (as a LIST returns them)."""
    # kopf updates the index on its event loop's thread; list() copies it in one step under the GIL.
    pods = list(_INDICES["pods"].get((namespace, extraction), ()))
    return tuple(sorted(pods, key=lambda pod: pod.state.name))


def workload_of(namespace: str, jobset_uid: str) -> CachedWorkload | None:
    """Kueue's Workload of the JobSet; None without Kueue or before Kueue made it."""
    return next(iter(tuple(_INDICES["workloads"].get((namespace, jobset_uid), ()))), None)
