"""Progress reaches the resource status through the reporter; counts are of durable units."""

from __future__ import annotations

import argparse

import layertap
from layertap.extract import cli
from layertap.extract.cli import job_from_args
from layertap.extract.distributed import Distributed
from layertap.extract.runner import execute, prepare


class RecordingReporter:
    """Test double for the cluster's StatusReporter (no API server here): keeps what it is sent."""

    def __init__(self) -> None:
        self.updates: list[dict] = []
        self.closed = False

    def update(self, progress: dict) -> None:
        self.updates.append(dict(progress))

    def close(self) -> None:
        self.closed = True


def test_status_progress_counts_up_to_the_whole_run(checkpoint, dataset, tmp_path):
    parser = argparse.ArgumentParser()
    cli.add_arguments(parser)
    args = parser.parse_args(
        [
            "--model",
            str(checkpoint),
            "--dataset",
            str(dataset),
            "--format",
            "text-jsonl",
            "--output",
            str(tmp_path / "out"),
            "--batch-size",
            "1",
            "--shard-size-mb",
            "1",
        ]
    )
    job = job_from_args(args, env={})
    prepared = prepare(job)
    reporter = RecordingReporter()
    summary = execute(prepared, Distributed("single"), show_progress=False, reporter=reporter)

    assert reporter.closed and len(reporter.updates) >= 2
    done = [update["samplesDone"] for update in reporter.updates]
    assert done == sorted(done)  # monotone
    last = reporter.updates[-1]
    assert last["samplesDone"] == last["samplesTotal"] == len(prepared.samples)
    assert last["tokensDone"] == prepared.plan.useful_tokens and last["percent"] == 100.0
    assert last["shardsWritten"] >= 1 and last["bytesWritten"] > 0 and last["tokensPerSecond"] > 0
    assert summary.steps_run == prepared.plan.num_steps == summary.times.steps
    # the disk estimate printed at the start is close to what was written
    written = layertap.open(str(tmp_path / "out")).manifest["total_bytes"]
    assert abs(prepared.disk_bytes() - written) < 0.1 * written
