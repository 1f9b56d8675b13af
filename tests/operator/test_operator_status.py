"""Observations -> status and Events: phases by level, transitions kept stable, Events only on change."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from layertap_api.resource import ActivationExtractionSpec
from layertap_operator.status import Observation, Problem, applied_spec, changed_fields, desired_status

T0 = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)


@pytest.fixture
def spec(spec_dict) -> ActivationExtractionSpec:
    return ActivationExtractionSpec.model_validate(spec_dict())


def jobset(suspend: bool = False, active: int = 0, conditions: tuple[str, ...] = (), restarts: int = 0) -> dict:
    return {
        "metadata": {"name": "qwen-arc"},
        "spec": {"suspend": suspend, "replicatedJobs": []},
        "status": {
            "restarts": restarts,
            "replicatedJobsStatus": [{"name": "worker", "active": active, "ready": active}],
            "conditions": [
                {"type": t, "status": "True", "reason": f"{t}Reason", "message": f"jobset {t}"} for t in conditions
            ],
        },
    }


@pytest.mark.parametrize(
    ("observed", "extra", "phase"),
    [
        (None, {}, "Pending"),
        (jobset(), {}, "Pending"),
        (jobset(active=16), {}, "Running"),
        (jobset(suspend=True), {"suspend": True}, "Suspended"),
        (jobset(suspend=True), {"queueName": "tpu"}, "Pending"),
        (jobset(active=3, conditions=("Completed",)), {}, "Succeeded"),
        (jobset(conditions=("Failed",)), {}, "Failed"),
    ],
)
def test_phase_follows_the_jobset(spec_dict, observed, extra, phase) -> None:
    spec = ActivationExtractionSpec.model_validate({**spec_dict(), **extra})
    status, _ = desired_status(Observation(1, spec, observed), {}, T0)
    assert status["phase"] == phase
    assert status["outputURI"] == "gs://activations/run-1"
    assert ("completionTime" in status) is (phase in ("Succeeded", "Failed"))
    assert ("startTime" in status) is (phase == "Running")


def test_transitions_keep_times_and_events_fire_once(spec) -> None:
    first, events = desired_status(Observation(1, spec, jobset()), {}, T0)
    assert [(e.reason, e.type) for e in events] == [("Starting", "Normal"), ("JobSetCreated", "Normal")]
    assert "JobSet qwen-arc runs 16 pods" in events[1].message

    again, events = desired_status(Observation(1, spec, jobset()), first, T0 + timedelta(seconds=10))
    assert events == [] and again == first

    running, events = desired_status(
        Observation(1, spec, jobset(active=16, restarts=1)), again, T0 + timedelta(minutes=1)
    )
    assert [e.reason for e in events] == ["Running"]
    assert running["startTime"] == "2026-01-02T03:05:05Z" and running["restarts"] == 1
    created = {x["type"]: x for x in running["conditions"]}["JobSetCreated"]
    assert created["lastTransitionTime"] == "2026-01-02T03:04:05Z"

    later, _ = desired_status(Observation(1, spec, jobset(conditions=("Completed",))), running, T0 + timedelta(hours=1))
    assert later["startTime"] == running["startTime"]
    assert later["completionTime"] == "2026-01-02T04:04:05Z"


def test_unappliable_change_is_a_condition_and_a_warning(spec) -> None:
    changed = ["dataset.uri", "extraction.layers"]
    status, events = desired_status(Observation(2, spec, jobset(active=1), changed_fields=changed), {}, T0)
    applied = {x["type"]: x for x in status["conditions"]}["SpecApplied"]
    assert (applied["status"], applied["reason"], applied["observedGeneration"]) == ("False", "ChangeNotApplied", 2)
    assert "dataset.uri, extraction.layers" in applied["message"]
    assert ("Warning", "SpecChangeNotApplied") in [(e.type, e.reason) for e in events]
    assert status["phase"] == "Running"  # the old spec keeps running


@pytest.mark.parametrize(
    ("problem", "phase", "phase_event"),
    [
        (Problem("NoImage", "set spec.image"), "Pending", "Normal"),
        (Problem("JobSetRejected", "the API server rejected the JobSet", terminal=True), "Failed", "Warning"),
    ],
)
def test_problem_is_reported(spec, problem, phase, phase_event) -> None:
    status, events = desired_status(Observation(1, spec, None, problem), {}, T0)
    assert status["phase"] == phase
    assert {x["type"]: x["reason"] for x in status["conditions"]}["JobSetCreated"] == problem.reason
    assert [(e.type, e.reason) for e in events] == [(phase_event, problem.reason), ("Warning", problem.reason)]


def test_status_never_touches_progress(spec) -> None:
    previous = {"phase": "Running", "progress": {"samplesDone": 5}}
    status, _ = desired_status(Observation(1, spec, jobset(active=1)), previous, T0)
    assert "progress" not in status


def test_changed_fields_ignores_suspend_and_finds_nested_changes() -> None:
    old = {"suspend": False, "dataset": {"uri": "a", "maxTokens": 10}, "extraction": {"layers": [1, 2]}}
    new = {"suspend": True, "dataset": {"uri": "a", "maxTokens": 20}, "extraction": {"layers": [1, 2, 3]}, "image": "x"}
    assert changed_fields(old, new) == ["dataset.maxTokens", "extraction.layers", "image"]
    assert changed_fields(old, {**old, "suspend": True}) == []


def test_applied_spec_reads_the_workers_environment(spec) -> None:
    from layertap_operator.builder import Owner, build_jobset

    built = build_jobset(spec, Owner("qwen-arc", "ns", "uid-1"), "image:1")
    assert applied_spec(built) == spec.to_wire()
