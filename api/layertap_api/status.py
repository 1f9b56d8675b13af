"""The ActivationExtraction status: written by two owners that never overwrite each other.

The operator writes everything but `progress` (phase, conditions, JobSet, times, restarts);
the workers merge-patch `progress` only. Both go through the status subresource.
"""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import Field

from layertap_api.spec import ApiModel

Phase = Literal["Pending", "Running", "Succeeded", "Failed", "Suspended"]


class Condition(ApiModel):
    """One aspect of the state, as Kubernetes conditions are (metav1.Condition)."""

    type: str = Field(
        max_length=316, description="What the condition is about, e.g. JobSetCreated, SpecApplied, Completed."
    )
    status: Literal["True", "False", "Unknown"] = Field(description="Whether the condition holds.")
    reason: str = Field(
        max_length=1024,
        pattern=r"^[A-Za-z]([A-Za-z0-9_,:]*[A-Za-z0-9_])?$",
        description="CamelCase reason for the last transition, for machines.",
    )
    message: str = Field(default="", max_length=32768, description="Human-readable details.")
    last_transition_time: datetime = Field(description="When status last changed.")
    observed_generation: int | None = Field(
        default=None, ge=0, description="The resource generation the condition was computed from."
    )


class Estimate(ApiModel):
    """What the run will take, computed by the workers before the first step (docs/estimate.md)."""

    samples: int = Field(ge=0, description="Samples (prompts) to run.")
    tokens: int = Field(ge=0, description="Their tokens.")
    padding_fraction: float = Field(ge=0, le=1, description="Share of the computed positions that are padding.")
    rows: int = Field(ge=0, description="Activation rows to store (tokens, or samples for positions last/mean).")
    bytes: int = Field(ge=0, description="Bytes to write.")
    flops: float = Field(ge=0, description="Floating-point operations of the forward passes, padding included.")
    seconds: float | None = Field(
        default=None,
        ge=0,
        description=(
            "Expected run time on these devices: the longest of compute, transfer and writing (unset: the devices' "
            "throughput is unknown)."
        ),
    )
    chip_hours: float | None = Field(
        default=None, ge=0, description="Expected device-hours (seconds x devices / 3600)."
    )
    compute_seconds: float | None = Field(default=None, ge=0, description="Expected time of the forward passes alone.")
    transfer_seconds: float = Field(
        default=0.0,
        ge=0,
        description="Expected time for the stored values to cross from the devices to their hosts (0 on CPU).",
    )
    write_seconds: float = Field(ge=0, description="Expected time to write the bytes.")
    bound: Literal["compute", "transfer", "writing"] | None = Field(
        default=None, description="The longest of the three, which sets the run's time (they overlap)."
    )
    devices: int = Field(ge=1, description="Devices running the forward.")
    basis: str = Field(
        max_length=512, description="The cost model: the devices' throughput and the efficiency assumed."
    )


class Progress(ApiModel):
    """How far the workers are; written only by the workers."""

    samples_done: int | None = Field(
        default=None,
        ge=0,
        description="Samples (prompts) whose activations are committed; mode predict: answers committed.",
    )
    samples_total: int | None = Field(default=None, ge=0, description="Samples in the run after filtering.")
    tokens_done: int | None = Field(default=None, ge=0, description="Tokens whose activations are committed.")
    shards_written: int | None = Field(default=None, ge=0, description="Shards durably written.")
    bytes_written: int | None = Field(default=None, ge=0, description="Bytes durably written.")
    tokens_per_second: float | None = Field(default=None, ge=0, description="Recent throughput over all hosts.")
    eta_seconds: int | None = Field(default=None, ge=0, description="Estimated seconds until done.")
    percent: float | None = Field(default=None, ge=0, le=100, description="samplesDone / samplesTotal in percent.")
    completed: str | None = Field(
        default=None, max_length=16, description="The same for people, e.g. 45.2% (the PROGRESS column)."
    )
    eta: str | None = Field(
        default=None,
        max_length=32,
        description="etaSeconds for people, e.g. 2h13m (the ETA column); gone when no worker runs.",
    )
    update_time: datetime | None = Field(default=None, description="When the workers last reported.")
    tasks_done: int | None = Field(
        default=None, ge=0, description="Mode predict: tasks whose every answer is committed."
    )
    tasks_total: int | None = Field(default=None, ge=0, description="Mode predict: tasks in the run.")
    estimate: Estimate | None = Field(
        default=None, description="The pre-flight estimate, kept beside the measured figures after the run."
    )
    non_finite: str | None = Field(
        default=None,
        max_length=1024,
        description="Where stored values were first NaN or infinite (extraction.onNonFinite: warn), e.g. layer 12 "
        "resid_post from step 3.",
    )
    score: float | None = Field(
        default=None,
        ge=0,
        le=1,
        description="Mode predict with solutions: the ARC Prize score over the tasks done so far (mean over tasks).",
    )


class LastError(ApiModel):
    """The last error a worker met, as it said it; written only by the workers."""

    message: str = Field(max_length=4096, description="One line: what failed, the field or file, what to do.")
    pod: str | None = Field(default=None, description="The worker pod that failed.")
    time: datetime | None = Field(default=None, description="When.")


class ExtractionStatus(ApiModel):
    """Observed state of an ActivationExtraction."""

    phase: Phase | None = Field(default=None, description="Pending, Running, Succeeded, Failed or Suspended.")
    reason: str | None = Field(
        default=None,
        max_length=1024,
        description="Why the phase is what it is, CamelCase: e.g. Starting, Unschedulable, Queued, Running, Completed.",
    )
    message: str | None = Field(
        default=None,
        max_length=32768,
        description=(
            "The same for people: what the workers do, why they wait (the scheduler's or Kueue's words), or what "
            "failed."
        ),
    )
    conditions: list[Condition] | None = Field(
        default=None,
        max_length=16,
        description="Latest observations: JobSetCreated, SpecApplied, Suspended, Completed, Failed.",
        json_schema_extra={"x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["type"]},
    )
    observed_generation: int | None = Field(
        default=None, ge=0, description="The spec generation the operator last acted on."
    )
    job_set_name: str | None = Field(default=None, description="Name of the JobSet running this extraction.")
    start_time: datetime | None = Field(default=None, description="When the JobSet first ran.")
    completion_time: datetime | None = Field(default=None, description="When the run succeeded or failed.")
    restarts: int | None = Field(default=None, ge=0, description="How often the JobSet restarted.")
    progress: Progress | None = Field(default=None, description="Progress reported by the workers.")
    last_error: LastError | None = Field(default=None, description="The last error a worker reported.")
    output_uri: str | None = Field(default=None, alias="outputURI", description="Where the run is written.")
    accelerator: str | None = Field(default=None, description="The accelerator the JobSet runs on.")
    shape: str | None = Field(
        default=None,
        description=(
            "What the JobSet runs, e.g. 8x8, 2x4x4 (2 slices of 4x4), 2x(8 GPU): the applied spec's, until a change is "
            "applied."
        ),
    )
