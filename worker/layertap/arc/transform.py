"""Rewrite ARC-style data as ARC-AGI JSON: one file per task plus Kaggle-layout solutions.

Streams its input (one task in memory at a time); dedupes by content; keeps source ids
and gives id-less tasks (BARC rows) an id derived from their content, so reruns agree.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Literal

from layertap.arc.task import Task
from layertap.errors import LayerTapError

Layout = Literal["files", "kaggle"]
_SAFE_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,127}")


@dataclass
class TransformStats:
    written: int = 0
    duplicates: int = 0

    def __str__(self) -> str:
        return f"{self.written} tasks written, {self.duplicates} duplicates dropped"


class _JsonObjectWriter:
    """Writes {"key": value, ...} one entry at a time, to a temporary file renamed on close."""

    def __init__(self, path: Path):
        self.path, self.partial = path, path.with_name(path.name + ".partial")
        self.file = self.partial.open("w", encoding="utf-8")
        self.file.write("{")
        self.first = True

    def add(self, key: str, value: object) -> None:
        self.file.write(("" if self.first else ",\n") + json.dumps(key) + ": " + json.dumps(value, separators=(",", ":")))
        self.first = False

    def close(self) -> None:
        self.file.write("}\n")
        self.file.close()
        os.replace(self.partial, self.path)

    def abort(self) -> None:
        self.file.close()
        self.partial.unlink(missing_ok=True)


def write_tasks(
    tasks: Iterable[Task],
    out_dir: Path,
    *,
    layout: Layout = "files",
    dedupe: bool = True,
    max_tasks: int | None = None,
) -> TransformStats:
    """files: `out_dir/tasks/<id>.json` (ARC-AGI form, test outputs included when known) and
    `out_dir/solutions.json`; kaggle: `out_dir/challenges.json` (no test outputs) and
    `out_dir/solutions.json`. Solutions map each id to its test outputs, in test order."""
    out_dir.mkdir(parents=True, exist_ok=True)
    if layout == "files":
        (out_dir / "tasks").mkdir(exist_ok=True)
    writers = {"solutions": _JsonObjectWriter(out_dir / "solutions.json")}
    if layout == "kaggle":
        writers["challenges"] = _JsonObjectWriter(out_dir / "challenges.json")
    stats = TransformStats()
    seen_content: set[bytes] = set()
    copies: dict[str, int] = {}  # id -> times seen
    try:
        for task in tasks:
            if max_tasks is not None and stats.written >= max_tasks:
                break
            digest = bytes.fromhex(task.content_hash())[:16]
            if dedupe and digest in seen_content:
                stats.duplicates += 1
                continue
            seen_content.add(digest)
            _write(_unique_id(task, copies, dedupe), out_dir, writers)
            stats.written += 1
    except BaseException:
        for writer in writers.values():
            writer.abort()
        raise
    for writer in writers.values():
        writer.close()
    return stats


def _unique_id(task: Task, copies: dict[str, int], dedupe: bool) -> Task:
    """The task, checked to have a safe id; a kept duplicate (no dedupe) gets `<id>.<n>`."""
    if not _SAFE_ID.fullmatch(task.id):
        raise LayerTapError(f"task id {task.id!r} is not a safe file name ([A-Za-z0-9_.-], at most 128)")
    seen = copies.get(task.id, 0)
    copies[task.id] = seen + 1
    if not seen:
        return task
    if dedupe:
        raise LayerTapError(f"task id {task.id!r} appears twice with different grids")
    return replace(task, id=f"{task.id}.{seen}")


def _write(task: Task, out_dir: Path, writers: dict[str, _JsonObjectWriter]) -> None:
    if "challenges" in writers:
        writers["challenges"].add(task.id, task.to_json(test_outputs=False))
    else:
        (out_dir / "tasks" / f"{task.id}.json").write_text(json.dumps(task.to_json(), separators=(",", ":")))
    if all(p.output is not None for p in task.test):
        writers["solutions"].add(task.id, [p.output.tolist() for p in task.test])
