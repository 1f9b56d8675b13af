"""Observations -> status and Events: phases by level, transitions kept stable, Events only on change."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import jsonschema
import pytest

from layertap_api.crd import crd
from layertap_api.resource import ActivationExtractionSpec
from layertap_api.status import Estimate, ExtractionStatus, Progress
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


RUNNING = (PodState("qwen-arc-worker-0-0-x", "Running"),)


@pytest.mark.parametrize(
    ("observed", "extra", "phase"),
    [
        (None, {}, "Pending"),
        (jobset(), {}, "Pending"),
        (jobset(active=16), {}, "Pending"),  # Jobs active, but no worker pod runs yet
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
    assert events[1].message == "JobSet qwen-arc runs 16 worker pods on tpu-v5-lite-podslice 8x8"

    again, events = desired_status(Observation(1, spec, jobset()), first, T0 + timedelta(seconds=10))
    assert events == [] and again == first

    running, events = desired_status(
        Observation(1, spec, jobset(active=16, restarts=1), pods=RUNNING), again, T0 + timedelta(minutes=1)
    )
    assert [e.reason for e in events] == ["Running"]
    assert running["startTime"] == "2026-01-02T03:05:05Z" and running["restarts"] == 1
    created = {x["type"]: x for x in running["conditions"]}["JobSetCreated"]
    assert created["lastTransitionTime"] == "2026-01-02T03:04:05Z"

    later, _ = desired_status(Observation(1, spec, jobset(conditions=("Completed",))), running, T0 + timedelta(hours=1))
    assert later["startTime"] == running["startTime"]
    assert later["completionTime"] == "2026-01-02T04:04:05Z"


def test_unappliable_change_is_a_condition_and_a_warning_each_time(spec_dict) -> None:
    running = ActivationExtractionSpec.model_validate(spec_dict())
    wire = spec_dict()
    wanted = ActivationExtractionSpec.model_validate({**wire, "resources": {**wire["resources"], "topology": "4x8"}})
    observed = Observation(
        2, wanted, jobset(active=1), changed_fields=["resources.topology"], pods=RUNNING, applied=running
    )
    status, events = desired_status(observed, {}, T0)
    applied = {x["type"]: x for x in status["conditions"]}["SpecApplied"]
    assert (applied["status"], applied["reason"], applied["observedGeneration"]) == ("False", "ChangeNotApplied", 2)
    assert "resources.topology" in applied["message"] and "new output.uri" in applied["message"]
    assert ("Warning", "SpecChangeNotApplied") in [(e.type, e.reason) for e in events]
    # what runs is described, not what was asked
    assert status["phase"] == "Running" and status["message"] == "1 of 16 worker pods is running"
    assert (status["accelerator"], status["shape"]) == ("tpu-v5-lite-podslice", "8x8")
    created = {x["type"]: x for x in status["conditions"]}["JobSetCreated"]
    assert created["message"].endswith("runs 16 worker pods on tpu-v5-lite-podslice 8x8")

    _, again = desired_status(observed, status, T0 + timedelta(seconds=10))
    assert again == []  # the same rejected change: no new event
    second = Observation(
        3, wanted, jobset(active=1), changed_fields=["resources.topology", "image"], pods=RUNNING, applied=running
    )
    _, events = desired_status(second, status, T0 + timedelta(seconds=20))
    assert [(e.type, e.reason) for e in events] == [("Warning", "SpecChangeNotApplied")]
    assert "resources.topology, image" in events[0].message


@pytest.mark.parametrize(
    ("problem", "phase"),
    [
        (Problem("NoImage", "set spec.image"), "Pending"),
        (Problem("JobSetRejected", "the API server rejected the JobSet", terminal=True), "Failed"),
    ],
)
def test_problem_is_reported_once_as_a_warning(spec, problem, phase) -> None:
    status, events = desired_status(Observation(1, spec, None, problem), {}, T0)
    assert status["phase"] == phase
    conditions = {x["type"]: x for x in status["conditions"]}
    assert conditions["JobSetCreated"]["reason"] == problem.reason
    assert (conditions["SpecApplied"]["status"], conditions["SpecApplied"]["reason"]) == ("False", problem.reason)
    assert [(e.type, e.reason) for e in events] == [("Warning", problem.reason)]


def test_no_jobset_yet_is_not_an_applied_spec(spec) -> None:
    status, _ = desired_status(Observation(1, spec, None), {}, T0)
    applied = {x["type"]: x for x in status["conditions"]}["SpecApplied"]
    assert (applied["status"], applied["reason"], applied["message"]) == ("False", "Creating", "no JobSet runs yet")


def test_a_recreated_jobset_is_a_warning(spec) -> None:
    previous, _ = desired_status(Observation(1, spec, jobset(active=1), pods=RUNNING), {}, T0)
    _, events = desired_status(Observation(1, spec, jobset(), recreated=True), previous, T0 + timedelta(seconds=5))
    assert ("Warning", "JobSetRecreated") in [(e.type, e.reason) for e in events]


def test_status_keeps_the_workers_progress_while_they_run(spec) -> None:
    previous = {
        "phase": "Running",
        "progress": {"samplesDone": 5, "tokensPerSecond": 900.0, "etaSeconds": 60, "eta": "1m"},
    }
    status, _ = desired_status(Observation(1, spec, jobset(active=1), pods=RUNNING), previous, T0)
    assert "progress" not in status


def test_a_finished_run_keeps_the_rate_it_ran_at(spec) -> None:
    previous = {
        "phase": "Running",
        "progress": {"samplesDone": 9, "tokensPerSecond": 900.0, "etaSeconds": 0, "eta": "0s"},
    }
    status, _ = desired_status(Observation(1, spec, jobset(conditions=("Completed",))), previous, T0)
    assert status["phase"] == "Succeeded" and "progress" not in status


@pytest.mark.parametrize("observed", [jobset(suspend=True), jobset(conditions=("Failed",))])
def test_rate_and_eta_go_when_the_workers_are_stopped(spec_dict, observed) -> None:
    spec = ActivationExtractionSpec.model_validate({**spec_dict(), "suspend": bool(observed["spec"]["suspend"])})
    previous = {
        "phase": "Running",
        "progress": {"samplesDone": 5, "tokensPerSecond": 900.0, "etaSeconds": 60, "eta": "1m"},
    }
    status, _ = desired_status(Observation(1, spec, observed), previous, T0)
    assert status["progress"] == {"tokensPerSecond": None, "etaSeconds": None, "eta": None}  # merge patch: removed
    after = {**previous, **status, "progress": {"samplesDone": 5}}
    again, _ = desired_status(Observation(1, spec, observed), after, T0)
    assert "progress" not in again  # nothing left to clear


def _merge_patch(target: dict, patch: dict) -> dict:
    """RFC 7386, as the API server applies a status patch: None removes a field."""
    out = dict(target)
    for key, value in patch.items():
        if value is None:
            out.pop(key, None)
        elif isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _merge_patch(out[key], value)
        else:
            out[key] = value
    return out


WORKERS_PART = {  # what the workers patch in: their progress with its estimate, and an error
    "progress": Progress(
        samples_done=5,
        samples_total=9,
        tokens_done=5120,
        tokens_per_second=900.5,
        eta_seconds=60,
        percent=55.6,
        completed="55.6%",
        eta="1m",
        update_time=T0,
        estimate=Estimate(
            samples=9,
            tokens=9216,
            padding_fraction=0.1,
            rows=9216,
            bytes=10**9,
            flops=1e12,
            seconds=12.5,
            write_seconds=3.0,
            bound="compute",
            devices=8,
            basis="8 TPU v5e chips at 197 TFLOP/s, 40% of peak",
        ),
    ).model_dump(mode="json", by_alias=True, exclude_none=True),
    "lastError": {"message": "gs://bucket: 403", "pod": "qwen-arc-worker-0-0", "time": "2026-01-02T03:04:05Z"},
}


@pytest.mark.parametrize(
    "observed",
    [
        {"jobset": None},
        {"jobset": None, "problem": Problem("NoImage", "set spec.image", terminal=True)},
        {"jobset": jobset(active=1, restarts=2), "pods": RUNNING},
        {"jobset": jobset(conditions=("Completed",))},
        {"jobset": jobset(conditions=("Failed",))},
        {"jobset": jobset(suspend=True)},
    ],
)
def test_a_status_round_trips_through_the_crd_schema(spec, observed) -> None:
    """The operator's part merged over the workers' is what the CRD admits, and reads back as the API's model."""
    schema = crd()["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["status"]
    previous = _merge_patch({"phase": "Running", "startTime": "2026-01-02T03:00:00Z"}, WORKERS_PART)
    operators, _ = desired_status(Observation(3, spec, **observed), previous, T0)
    status = _merge_patch(previous, operators)
    jsonschema.validate(status, schema)
    parsed = ExtractionStatus.model_validate(status)
    assert parsed.model_dump(mode="json", by_alias=True, exclude_none=True) == status
    assert parsed.observed_generation == 3 and parsed.progress.samples_done == 5
    assert next(c.type for c in parsed.conditions) == "JobSetCreated"


def test_changed_fields_ignores_suspend_and_finds_nested_changes() -> None:
    old = {"suspend": False, "dataset": {"uri": "a", "maxTokens": 10}, "extraction": {"layers": [1, 2]}}
    new = {"suspend": True, "dataset": {"uri": "a", "maxTokens": 20}, "extraction": {"layers": [1, 2, 3]}, "image": "x"}
    assert changed_fields(old, new) == ["dataset.maxTokens", "extraction.layers", "image"]
    assert changed_fields(old, {**old, "suspend": True}) == []


def test_applied_spec_reads_the_workers_environment(spec) -> None:
    from layertap_operator.builder import Owner, build_jobset

    built = build_jobset(spec, Owner("qwen-arc", "ns", "uid-1"), "image:1")
    assert applied_spec(built) == spec.to_wire()


def pod(phase: str = "Pending", conditions=(), container=None) -> dict:
    return {
        "metadata": {"name": "qwen-arc-worker-0-1-abcde"},
        "status": {
            "phase": phase,
            "conditions": list(conditions),
            "containerStatuses": [container] if container else [],
        },
    }


UNSCHEDULABLE = {
    "type": "PodScheduled",
    "status": "False",
    "reason": "Unschedulable",
    "message": "0/8 nodes are available: 8 node(s) didn't match Pod's node affinity/selector.",
}


@pytest.mark.parametrize(
    ("pods", "observed", "phase", "reason", "message"),
    [
        ([pod("Running"), pod()], jobset(active=1), "Running", "Running", "1 of 16 worker pods is running"),
        (
            [pod(conditions=[UNSCHEDULABLE])] * 2,
            jobset(active=1),
            "Pending",
            "Unschedulable",
            "2 of 16 worker pods cannot be scheduled: 0/8 nodes are available: 8 node(s) didn't match",
        ),
        (
            [pod(container={"state": {"waiting": {"reason": "ErrImagePull", "message": "no such image x:1"}}})],
            jobset(active=1),
            "Pending",
            "ErrImagePull",
            "cannot start: ErrImagePull: no such image x:1",
        ),
        (
            [pod(container={"state": {"waiting": {"reason": "ContainerCreating"}}})],
            jobset(active=1),
            "Pending",
            "Starting",
            "waiting for the worker pods to start",
        ),
        (
            [
                pod(
                    "Failed",
                    container={
                        "state": {
                            "terminated": {
                                "exitCode": 2,
                                "message": "layertap extract: error: extraction.layers: [30] out of range",
                            }
                        }
                    },
                )
            ],
            jobset(conditions=("Failed",)),
            "Failed",
            "FailedReason",
            "jobset Failed; worker pod qwen-arc-worker-0-1-abcde exited with code 2: layertap extract: error: "
            "extraction.layers: [30] out of range",
        ),
        (
            [pod("Failed", container={"state": {"terminated": {"exitCode": 137}}})],
            jobset(conditions=("Failed",)),
            "Failed",
            "FailedReason",
            "exited with code 137",
        ),
    ],
)
def test_the_phase_says_what_the_pods_do(spec, pods, observed, phase, reason, message) -> None:
    states = tuple(pod_state(p) for p in pods)
    status, events = desired_status(Observation(1, spec, observed, pods=states), {}, T0)
    assert (status["phase"], events[0].reason) == (phase, reason)
    assert message in events[0].message


def test_a_queued_run_says_why_kueue_holds_it(spec_dict) -> None:
    spec = ActivationExtractionSpec.model_validate({**spec_dict(), "queueName": "tpu"})
    why = "couldn't assign flavors to pod set worker: insufficient unused quota for google.com/tpu"
    status, events = desired_status(Observation(1, spec, jobset(suspend=True), admission=why), {}, T0)
    assert (status["phase"], events[0].reason) == ("Pending", "Queued")
    assert events[0].message.endswith(f"from queue tpu: {why}")


def test_a_new_reason_in_the_same_phase_is_an_event(spec) -> None:
    starting, _ = desired_status(Observation(1, spec, jobset(active=1)), {}, T0)
    stuck = (pod_state(pod(conditions=[UNSCHEDULABLE])),)
    waiting, events = desired_status(Observation(1, spec, jobset(active=1), pods=stuck), starting, T0)
    assert (starting["phase"], waiting["phase"]) == ("Pending", "Pending")
    assert [e.reason for e in events] == ["Unschedulable"]
    _again, events = desired_status(Observation(1, spec, jobset(active=1), pods=stuck), waiting, T0)
    assert events == []


def test_spec_applied_tells_whether_a_suspend_has_taken(spec_dict) -> None:
    for extra, how in (({}, "the JobSet is being suspended"), ({"queueName": "tpu"}, "Kueue is evicting it")):
        spec = ActivationExtractionSpec.model_validate({**spec_dict(), "suspend": True, **extra})
        status, _ = desired_status(Observation(2, spec, jobset(active=1), pods=RUNNING), {}, T0)
        applied = {x["type"]: x for x in status["conditions"]}["SpecApplied"]
        assert (applied["status"], applied["reason"]) == ("False", "Suspending") and how in applied["message"]
        done, _ = desired_status(Observation(2, spec, jobset(suspend=True)), status, T0)
        assert {x["type"]: x for x in done["conditions"]}["SpecApplied"]["status"] == "True"
        assert done["phase"] == "Suspended"


def test_an_invalid_spec_fails_with_one_line_posted_once(spec_dict) -> None:
    """A spec the CRD admits and the API's rules refuse: Failed, InvalidSpec, the rules' one
    line; the Warning only when it is news (a resync that finds the same posts nothing)."""
    from pydantic import ValidationError

    from layertap_api.resource import ActivationExtractionSpec
    from layertap_api.validation import explain

    schema = crd()["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["status"]
    bad = {**spec_dict(), "workloadPriorityClassName": "high"}  # needs queueName
    try:
        ActivationExtractionSpec.model_validate(bad)
    except ValidationError as error:
        message = explain(error, ActivationExtractionSpec)
    assert "\n" not in message and "queueName" in message
    status, events = invalid_spec_status(message, 4, {"phase": "Running"})
    assert status == {"phase": "Failed", "reason": "InvalidSpec", "message": message, "observedGeneration": 4}
    assert [(e.type, e.reason, e.message) for e in events] == [("Warning", "InvalidSpec", message)]
    jsonschema.validate(status, schema)
    assert invalid_spec_status(message, 4, status)[1] == []  # the next resync: nothing new to say
    assert invalid_spec_status(message + "; more", 5, status)[1] != []
