"""Rewrite ARC-style data as ARC-AGI JSON: one file per task plus Kaggle-layout solutions.

Streams its input (one task in memory at a time); dedupes by content; keeps source ids
and gives id-less tasks (BARC rows) an id derived from their content, so reruns agree.
Atomic: everything is written into a temporary directory beside the output, renamed into
place only when the whole input was read; a failure leaves no partial output. An output
that holds something already is refused unless `overwrite`.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import tempfile
from collections.abc import Iterable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Literal

from layertap.arc.task import Task
from layertap.errors import LayerTapError
from layertap.humanize import plural

Layout = Literal["files", "kaggle"]
_SAFE_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,127}")


@dataclass
class TransformStats:
    written: int = 0
    duplicates: int = 0

    def __str__(self) -> str:
        return f"{plural(self.written, 'task')} written, {plural(self.duplicates, 'duplicate')} dropped"


class _JsonObjectWriter:
    """Writes {"key": value, ...} one entry at a time."""

    def __init__(self, path: Path):
        self.file = path.open("w", encoding="utf-8")
        self.file.write("{")
        self.first = True

    def add(self, key: str, value: object) -> None:
        self.file.write(
            ("" if self.first else ",\n") + json.dumps(key) + ": " + json.dumps(value, separators=(",", ":"))
        )
        self.first = False

    def close(self) -> None:
        self.file.write("}\n")
        self.file.close()


def write_tasks(
    tasks: Iterable[Task],
    out_dir: Path,
    *,
    layout: Layout = "files",
    dedupe: bool = True,
    max_tasks: int | None = None,
    overwrite: bool = False,
) -> TransformStats:
    """files: `out_dir/tasks/<id>.json` (ARC-AGI form, test outputs included when known) and
    `out_dir/solutions.json`; kaggle: `out_dir/challenges.json` (no test outputs) and
    `out_dir/solutions.json`. Solutions map each id to its test outputs, in test order."""
    out_dir = Path(out_dir)
    if out_dir.exists() and not out_dir.is_dir():
        raise LayerTapError(f"{out_dir} is a file: the output must be a directory")
    if out_dir.is_dir() and any(out_dir.iterdir()) and not overwrite:
        raise LayerTapError(
            f"{out_dir} is not empty: write to a new directory, or pass --overwrite to replace what it holds"
        )
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.partial-", dir=out_dir.parent))
    try:
        stats = _write_all(tasks, staging, layout, dedupe, max_tasks)
        _swap_into_place(staging, out_dir)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return stats


def _swap_into_place(staging: Path, out_dir: Path) -> None:
    """Rename the finished directory to `out_dir`, replacing what was there."""
    old = None
    if out_dir.exists():
        old = out_dir.with_name(f".{out_dir.name}.old-{os.getpid()}")
        os.replace(out_dir, old)
    os.replace(staging, out_dir)
    if old is not None:
        shutil.rmtree(old)


def _write_all(
    tasks: Iterable[Task], out_dir: Path, layout: Layout, dedupe: bool, max_tasks: int | None
) -> TransformStats:
    if layout == "files":
        (out_dir / "tasks").mkdir()
    writers = {"solutions": _JsonObjectWriter(out_dir / "solutions.json")}
    if layout == "kaggle":
        writers["challenges"] = _JsonObjectWriter(out_dir / "challenges.json")
    stats = TransformStats()
    seen_content: set[bytes] = set()
    copies: dict[str, int] = {}  # id -> times seen
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
