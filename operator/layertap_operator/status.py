"""Observations -> the operator's part of the status, and the Events worth posting. Pure.

Level-based: the status is recomputed from what is observed now (the JobSet, its pods,
Kueue's workload, problems met while reconciling) and the previous status only keeps
transition times and start/end times stable. Events are emitted on transitions only, so a
periodic pass adds none. `status.progress` is the workers'; nothing here reads or writes it.

The phase says what runs, not what was asked: Running only while a worker pod runs; a run
that waits says why (the scheduler's message, Kueue's, a container that cannot start); a
failed run says what failed (the worker's termination message).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Literal, get_args

from layertap_api import contract as wire
from layertap_api.resource import ActivationExtractionSpec
from layertap_api.status import Condition, ExtractionStatus, Phase, Progress

# Spec fields a running JobSet can follow; any other change needs a new JobSet.
APPLIABLE_FIELDS = frozenset({"suspend"})
# Reasons that are the normal course of a run; any other is worth a Warning event.
NORMAL_REASONS = frozenset({"Creating", "Starting", "Queued", "Running", "Suspended", "Completed"})


@dataclass(frozen=True)
class Problem:
    """Why the operator could not get a JobSet running for the spec."""

    reason: str  # CamelCase, e.g. NoImage, JobSetNameTaken
    message: str
    terminal: bool = False  # nothing but a new resource helps


@dataclass(frozen=True)
class PodState:
    """What the status needs of one worker pod."""

    name: str
    phase: str  # Pending, Running, Succeeded, Failed
    unschedulable: str = ""  # the scheduler's message while the pod cannot be placed
    waiting: tuple[str, str] | None = None  # (reason, message) of a container that cannot start
    exit_code: int | None = None  # of a terminated container
    message: str = ""  # its termination message (or log tail)


# Container waiting reasons that are not just "starting" (the kubelet's names).
STUCK_REASONS = frozenset(
    {
        "ErrImagePull",
        "ImagePullBackOff",
        "InvalidImageName",
        "CreateContainerConfigError",
        "CreateContainerError",
        "RunContainerError",
        "CrashLoopBackOff",
    }
)


def pod_state(pod: dict) -> PodState:
    """The status-relevant part of a pod as the API returns it."""
    status = pod.get("status") or {}
    scheduled = next((c for c in status.get("conditions") or [] if c.get("type") == "PodScheduled"), {})
    unschedulable = scheduled.get("message", "") if scheduled.get("reason") == "Unschedulable" else ""
    waiting, exit_code, message = None, None, ""
    for container in status.get("containerStatuses") or []:
        state = container.get("state") or {}
        if "waiting" in state and state["waiting"].get("reason") in STUCK_REASONS:
            waiting = (state["waiting"]["reason"], state["waiting"].get("message", ""))
        if "terminated" in state:
            exit_code = state["terminated"].get("exitCode")
            message = state["terminated"].get("message", "")
    return PodState(pod["metadata"]["name"], status.get("phase", "Pending"), unschedulable, waiting, exit_code, message)


@dataclass(frozen=True)
class Observation:
    generation: int
    spec: ActivationExtractionSpec
    jobset: dict | None = None
    problem: Problem | None = None
    changed_fields: list[str] = field(default_factory=list)
    pods: tuple[PodState, ...] = ()  # the worker pods of the JobSet's current attempt
    admission: str = ""  # while Kueue holds the run: why (its workload's QuotaReserved message)
    applied: ActivationExtractionSpec | None = None  # the spec the JobSet was built from
    recreated: bool = False  # the resource had a JobSet, it was gone, and a new one was made

    @property
    def running(self) -> ActivationExtractionSpec:
        """The spec that runs: the JobSet's until a change is applied (only suspend ever is)."""
        return self.applied or self.spec


@dataclass(frozen=True)
class Event:
    type: Literal["Normal", "Warning"]
    reason: str
    message: str


def applied_spec(jobset: dict) -> dict | None:
    """The spec a JobSet was built from (its workers' LAYERTAP_SPEC)."""
    for job in jobset.get("spec", {}).get("replicatedJobs", []):
        for container in job["template"]["spec"]["template"]["spec"].get("containers", []):
            for var in container.get("env", []):
                if var.get("name") == wire.ENV_SPEC and "value" in var:
                    return wire.decode_spec(var["value"])
    return None


def changed_fields(applied: dict, current: dict, prefix: str = "") -> list[str]:
    """Dotted paths of the fields that differ, leaving out those a JobSet can follow."""
    out = []
    for key in sorted(set(applied) | set(current)):
        path = f"{prefix}{key}"
        old, new = applied.get(key), current.get(key)
        if path in APPLIABLE_FIELDS or old == new:
            continue
        if isinstance(old, dict) and isinstance(new, dict):
            out += changed_fields(old, new, f"{path}.")
        else:
            out.append(path)
    return out


def _jobset_conditions(jobset: dict) -> dict[str, dict]:
    return {x["type"]: x for x in jobset.get("status", {}).get("conditions", []) if x.get("status") == "True"}


PHASES: tuple[str, ...] = get_args(Phase)  # the API's phases, for metrics by phase


def phase_of(obs: Observation) -> tuple[str, str, str]:
    """(phase, reason, message)."""
    js = obs.jobset
    if obs.problem:
        return ("Failed" if obs.problem.terminal else "Pending"), obs.problem.reason, obs.problem.message
    if js is None:
        return "Pending", "Creating", "creating the JobSet"
    done = _jobset_conditions(js)
    if "Completed" in done:
        return "Succeeded", "Completed", done["Completed"].get("message") or "all workers finished"
    if "Failed" in done:
        return "Failed", done["Failed"].get("reason") or "Failed", _failure(done["Failed"], obs.pods)
    if js.get("spec", {}).get("suspend"):
        if obs.spec.suspend:
            return "Suspended", "Suspended", "spec.suspend is true: set it to false to resume"
        why = f": {obs.admission}" if obs.admission else ""
        return "Pending", "Queued", f"waiting for Kueue to admit it from queue {obs.spec.queue_name}{why}"
    pods = obs.pods
    total = obs.running.resources.process_count
    if any(p.phase == "Running" for p in pods):
        running = sum(p.phase == "Running" for p in pods)
        return "Running", "Running", f"{running} of {_pods(total)} {'is' if running == 1 else 'are'} running"
    unschedulable = [p for p in pods if p.unschedulable]
    if unschedulable:
        return (
            "Pending",
            "Unschedulable",
            f"{len(unschedulable)} of {_pods(total)} cannot be scheduled: {unschedulable[0].unschedulable}",
        )
    stuck = next((p for p in pods if p.waiting), None)
    if stuck is not None:
        reason, message = stuck.waiting
        return "Pending", reason, f"worker pod {stuck.name} cannot start: {reason}: {message}"
    return "Pending", "Starting", "waiting for the worker pods to start"


def _pods(n: int) -> str:
    return f"{n} worker pod{'' if n == 1 else 's'}"


def _failure(condition: dict, pods: tuple[PodState, ...]) -> str:
    """The JobSet's failure, with the cause the failed worker gave (its last message line)."""
    message = condition.get("message") or "the JobSet failed"
    failed = next((p for p in pods if p.exit_code and p.message.strip()), None)
    if failed is None:
        failed = next((p for p in pods if p.exit_code), None)
        return message if failed is None else f"{message}; worker pod {failed.name} exited with code {failed.exit_code}"
    cause = failed.message.strip().splitlines()[-1]
    return f"{message}; worker pod {failed.name} exited with code {failed.exit_code}: {cause}"


def _conditions(obs: Observation, phase_message: str) -> list[tuple[str, str, str, str]]:
    """(type, status, reason, message) of each condition the operator owns."""
    js, spec = obs.jobset, obs.spec
    out = []
    if js is not None:
        res = obs.running.resources
        pods = f"{res.slices} slices x {_pods(res.hosts_per_slice)}" if res.slices > 1 else _pods(res.hosts_per_slice)
        out.append(
            (
                "JobSetCreated",
                "True",
                "Created",
                f"JobSet {js['metadata']['name']} runs {pods} on {res.accelerator} {res.shape}",
            )
        )
    elif obs.problem:
        out.append(("JobSetCreated", "False", obs.problem.reason, obs.problem.message))
    else:
        out.append(("JobSetCreated", "False", "Creating", "creating the JobSet"))
    if obs.changed_fields:
        out.append(
            (
                "SpecApplied",
                "False",
                "ChangeNotApplied",
                (
                    f"a running JobSet cannot follow changes to {', '.join(obs.changed_fields)}: it still runs "
                    "the spec it was made from. To apply them, delete the resource and create it again with a new "
                    "output.uri (an output holds one run's settings; the worker refuses to mix them)"
                ),
            )
        )
    elif js is not None and spec.suspend and not js.get("spec", {}).get("suspend"):
        how = (
            "Kueue is evicting it (its Workload is deactivated)" if spec.queue_name else "the JobSet is being suspended"
        )
        out.append(("SpecApplied", "False", "Suspending", f"spec.suspend is true and the workers still run: {how}"))
    elif js is None:
        why = obs.problem.reason if obs.problem else "Creating"
        out.append(("SpecApplied", "False", why, "no JobSet runs yet"))
    else:
        out.append(("SpecApplied", "True", "Applied", "the JobSet runs the current spec"))
    if js is not None:
        suspended = bool(js.get("spec", {}).get("suspend"))
        reason = ("Suspended" if spec.suspend else "Queued") if suspended else "Resumed"
        out.append(("Suspended", "True" if suspended else "False", reason, phase_message if suspended else ""))
        done = _jobset_conditions(js)
        if "Completed" in done:
            out.append(
                (
                    "Completed",
                    "True",
                    done["Completed"].get("reason") or "Completed",
                    done["Completed"].get("message", ""),
                )
            )
        if "Failed" in done:  # with the cause the failed worker gave
            out.append(("Failed", "True", done["Failed"].get("reason") or "Failed", phase_message))
    return out


# status.progress fields that describe workers running now (the rest stays true afterwards);
# a Succeeded run keeps its last rate (what it ran at) and an ETA of 0s.
LIVE_PROGRESS = ("tokens_per_second", "eta_seconds", "eta")


def desired_status(obs: Observation, previous: dict, now: datetime) -> tuple[dict, list[Event]]:
    """The status fields the operator owns (as the API's wire form), and the Events for what
    changed since `previous` (the status as read back from the API server)."""
    before = {x["type"]: x for x in previous.get("conditions", [])}
    phase, reason, message = phase_of(obs)
    conditions = []
    for type_, state, why, text in _conditions(obs, message):
        old = before.get(type_)
        unchanged = old is not None and old.get("status") == state
        conditions.append(
            Condition(
                type=type_,
                status=state,
                reason=why,
                message=text,
                last_transition_time=old["lastTransitionTime"] if unchanged else now,
                observed_generation=obs.generation,
            )
        )
    fields = {}
    if obs.jobset is not None:
        fields["job_set_name"] = obs.jobset["metadata"]["name"]
        fields["restarts"] = obs.jobset.get("status", {}).get("restarts", 0)
    if start := previous.get("startTime") or (now if phase == "Running" else None):
        fields["start_time"] = start
    if phase in ("Succeeded", "Failed"):
        fields["completion_time"] = previous.get("completionTime") or now
    reported = previous.get("progress") or {}
    live = {name: None for name in LIVE_PROGRESS if reported.get(Progress.model_fields[name].alias) is not None}
    if phase in ("Suspended", "Failed") and live:
        fields["progress"] = Progress(**live)  # a merge patch: drops the rate and ETA of workers stopped for good
    model = ExtractionStatus(
        phase=phase,
        reason=reason,
        message=message,
        conditions=conditions,
        observed_generation=obs.generation,
        output_uri=obs.running.output.uri,
        accelerator=obs.running.resources.accelerator,
        shape=obs.running.resources.shape,
        **fields,
    )
    # Only what was set: a field left out is not the operator's to write, a None is a removal.
    status = model.model_dump(mode="json", by_alias=True, exclude_unset=True)

    events = []
    if obs.recreated:
        events.append(
            Event(
                "Warning",
                "JobSetRecreated",
                "the JobSet was deleted while the run was not finished; a new one resumes it from the committed shards",
            )
        )
    if (phase, reason) != (previous.get("phase"), previous.get("reason")):  # e.g. Starting -> Unschedulable
        warning = phase == "Failed" or reason not in NORMAL_REASONS
        events.append(Event("Warning" if warning else "Normal", reason, f"{phase}: {message}"))
    for cond in conditions:
        old = before.get(cond.type) or {}
        if cond.type == "JobSetCreated" and cond.status == "True" and old.get("status") != "True":
            events.append(Event("Normal", "JobSetCreated", cond.message))
        # each rejected change once, naming its fields (a second change is a new message)
        if cond.reason == "ChangeNotApplied" and old.get("message") != cond.message:
            events.append(Event("Warning", "SpecChangeNotApplied", cond.message))
    return status, events


def invalid_spec_status(message: str, generation: int, previous: dict) -> tuple[dict, list[Event]]:
    """A spec the CRD admitted but the API's rules refuse: Failed, InvalidSpec, and the rules'
    one-line explanation; the Warning only when that is news (not on every resync)."""
    status = ExtractionStatus(phase="Failed", reason="InvalidSpec", message=message, observed_generation=generation)
    fields = status.model_dump(mode="json", by_alias=True, exclude_unset=True)
    known = previous.get("reason") == "InvalidSpec" and previous.get("message") == message
    return fields, [] if known else [Event("Warning", "InvalidSpec", message)]
