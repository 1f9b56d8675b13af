"""Progress reaches the resource status through the reporter (counts are of durable units),
and Prometheus through the worker's /metrics endpoint."""

from __future__ import annotations

import socket
import urllib.request

import pytest
from prometheus_client.parser import text_string_to_metric_families

import layertap
from layertap.extract.runner import execute
from layertap.humanize import human_duration
from layertap.run.context import RunContext
from layertap.run.metrics import WorkerMetrics

from .conftest import flags, prepared_by_flags


class RecordingReporter:
    """Test double for the cluster's StatusReporter (no API server here): keeps what it is sent."""

    def __init__(self) -> None:
        self.updates: list[dict] = []
        self.closed = False

    def update(self, progress) -> None:
        self.updates.append(progress.model_dump(by_alias=True, exclude_unset=True))

    def close(self) -> None:
        self.closed = True


def _prepared(checkpoint, dataset, out):
    return prepared_by_flags(*flags(checkpoint, dataset, out), "--batch-size", "1", "--shard-size-mb", "1")


def test_status_progress_counts_up_to_the_whole_run(checkpoint, dataset, tmp_path):
    prepared = _prepared(checkpoint, dataset, tmp_path / "out")
    reporter = RecordingReporter()
    summary = execute(prepared, RunContext(show_progress=False, reporter=reporter))

    assert reporter.closed and len(reporter.updates) >= 3
    estimate, *updates = reporter.updates
    assert list(estimate) == ["estimate"] and estimate["estimate"]["samples"] == len(prepared.samples)  # first
    done = [update["samplesDone"] for update in updates]
    assert done == sorted(done)  # monotone
    last = reporter.updates[-1]
    assert last["samplesDone"] == last["samplesTotal"] == len(prepared.samples)
    assert last["tokensDone"] == prepared.plan.useful_tokens and last["percent"] == 100.0
    assert last["completed"] == "100.0%" and last["eta"] == "0s"  # the PROGRESS and ETA columns
    assert last["shardsWritten"] >= 1 and last["bytesWritten"] > 0 and last["tokensPerSecond"] > 0
    assert summary.steps_run == prepared.plan.num_steps == summary.times.steps
    # the disk estimate printed at the start is close to what was written
    written = layertap.open(str(tmp_path / "out")).manifest["total_bytes"]
    assert abs(prepared.disk_bytes() - written) < 0.1 * written


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _scrape(port: int) -> dict[str, float]:
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    return {s.name: s.value for family in text_string_to_metric_families(text) for s in family.samples}


def test_the_worker_serves_its_progress_as_prometheus_metrics(checkpoint, dataset, tmp_path):
    prepared = _prepared(checkpoint, dataset, tmp_path / "out")
    metrics = WorkerMetrics()
    assert metrics.serve(env={}) is None  # no port asked for: nothing listens
    port = _free_port()
    assert metrics.serve(env={"LAYERTAP_METRICS_PORT": str(port), "LAYERTAP_RESTART_ATTEMPT": "2"}) == port
    before = _scrape(port)
    assert before["layertap_worker_tokens_total"] == 0 and before["layertap_worker_restart_attempt"] == 2

    execute(prepared, RunContext(show_progress=False, metrics=metrics))

    after = _scrape(port)
    plan = prepared.plan
    assert after["layertap_worker_tokens_total"] == plan.useful_tokens
    assert after["layertap_worker_committed_tokens_total"] == plan.useful_tokens
    assert after["layertap_worker_steps_total"] == after["layertap_worker_step_seconds_count"] == plan.num_steps
    assert after["layertap_worker_step_seconds_sum"] > 0
    written = layertap.open(str(tmp_path / "out")).manifest["total_bytes"]
    assert 0 < after["layertap_worker_bytes_written"] <= written + 4096


@pytest.mark.parametrize(
    ("seconds", "shown"),
    [
        (0, "0s"),
        (45, "45s"),
        (60, "1m"),
        (450, "7m30s"),
        (2520, "42m"),
        (7980, "2h13m"),
        (86400, "1d"),
        (100800, "1d4h"),
    ],
)
def test_eta_reads_like_a_kubectl_age(seconds, shown):
    assert human_duration(seconds) == shown


def test_every_progress_field_can_be_reported():
    """The reporter accepts each field of status.progress by its wire name (a model built
    before a field's type was defined once left `estimate` without one)."""
    from layertap.run.reporter import PROGRESS_FIELDS
    from layertap_api.status import Progress

    assert {to_camel(name) for name in Progress.model_fields} == PROGRESS_FIELDS


def to_camel(name: str) -> str:
    first, *rest = name.split("_")
    return first + "".join(part.title() for part in rest)


def test_the_first_non_finite_place_reaches_the_status_once():
    from layertap.run.progress import Progress

    reporter = RecordingReporter()
    progress = Progress(samples_total=4, tokens_total=100, show_bar=False, reporter=reporter)
    assert "nonFinite" not in progress.as_status().model_dump(by_alias=True, exclude_none=True)
    progress.saw_non_finite("layer 3 resid_post from step 0")
    progress.saw_non_finite("layer 5 resid_post from step 2")
    assert [u.get("nonFinite") for u in reporter.updates] == ["layer 3 resid_post from step 0"]
    progress.committed(1, 10, 1, 100)
    assert reporter.updates[-1]["nonFinite"] == "layer 3 resid_post from step 0"
