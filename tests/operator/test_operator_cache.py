"""What the watched caches keep of a pod and of a Kueue Workload (the index functions, pure)."""

from __future__ import annotations

from layertap_operator.cache import CachedPod, CachedWorkload, extraction_pods, kueue_workloads
from layertap_operator.status import PodState


def test_a_pod_is_kept_under_its_extraction_with_its_attempt() -> None:
    labels = {"layertap.dev/extraction": "qwen-arc", "jobset.sigs.k8s.io/restart-attempt": "2"}
    pod = {
        "metadata": {"name": "qwen-arc-worker-0-0-x", "labels": labels},
        "status": {
            "phase": "Failed",
            "containerStatuses": [{"state": {"terminated": {"exitCode": 2, "message": "bad layers\n"}}}],
        },
    }
    assert extraction_pods(body=pod, namespace="research", labels=labels) == {
        ("research", "qwen-arc"): CachedPod(
            "2", PodState("qwen-arc-worker-0-0-x", "Failed", exit_code=2, message="bad layers\n")
        )
    }


def test_a_workload_is_kept_under_its_jobsets_uid_with_why_it_waits() -> None:
    workload = {
        "metadata": {"name": "jobset-qwen-arc-1a2b3", "ownerReferences": [{"kind": "JobSet", "uid": "u-1"}]},
        "spec": {"active": False},
        "status": {
            "conditions": [
                {"type": "QuotaReserved", "status": "False", "message": "couldn't assign flavors: insufficient quota"}
            ]
        },
    }
    assert kueue_workloads(body=workload, namespace="research") == {
        ("research", "u-1"): CachedWorkload(
            "jobset-qwen-arc-1a2b3", False, "couldn't assign flavors: insufficient quota"
        )
    }
    admitted = {**workload, "spec": {}, "status": {"conditions": [{"type": "QuotaReserved", "status": "True"}]}}
    assert kueue_workloads(body=admitted, namespace="research")[("research", "u-1")] == CachedWorkload(
        "jobset-qwen-arc-1a2b3", True, ""
    )


def test_workloads_of_other_kinds_are_not_kept() -> None:
    workload = {"metadata": {"name": "job-train-1", "ownerReferences": [{"kind": "Job", "uid": "u-2"}]}}
    assert kueue_workloads(body=workload, namespace="research") == {}
