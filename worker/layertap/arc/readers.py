"""Read ARC tasks from files: ARC-AGI JSON, the Kaggle layout, and BARC / Hugging Face rows.

Every reader streams: one task file, one jsonl line or one parquet batch at a time.
A bad record raises `InvalidRecord` naming the file, the row and the reason, or with
`skip_invalid` is counted in `ReadStats` and skipped.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Literal

from layertap.arc.grids import GridError
from layertap.arc.records import Split, task_from_record
from layertap.arc.task import Task, task_from_json
from layertap.data.invalid import InvalidRecord, ReadStats
from layertap.io.sources import Source, iter_lines, list_sources, open_parquet

ArcFormat = Literal["arc-json", "arc-kaggle", "barc-jsonl"]
ROW_SUFFIXES = (".jsonl", ".jsonl.gz", ".parquet")
LAST_PAIR_IS_TEST = Split(test_pairs=1)


def read_tasks(
    uri: str | Path,
    format: ArcFormat,
    *,
    split: Split = LAST_PAIR_IS_TEST,
    skip_invalid: bool = False,
    stats: ReadStats | None = None,
) -> Iterator[Task]:
    """Tasks in file order (directories: sorted file names). Raises InvalidRecord on the first
    bad record unless `skip_invalid`, which counts it in `stats` instead."""
    uri = str(uri)
    stats = stats if stats is not None else ReadStats()
    records = {
        "arc-json": _arc_json,
        "arc-kaggle": _kaggle,
        "barc-jsonl": lambda p: _rows(p, split),
    }[format](uri)
    for record in records:
        if isinstance(record, InvalidRecord):
            if not skip_invalid:
                raise record
            stats.skip(record)
            continue
        stats.read += 1
        yield record


def _load_json(source: Source) -> object:
    try:
        with source.open() as f:
            return json.load(f)
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise InvalidRecord(source.name, f"not valid JSON ({error})") from None


def _arc_json(uri: str) -> Iterator[Task | InvalidRecord]:
    """A directory of one-task files (id = file stem), one task file, or one combined
    {id: task} file."""
    for source in list_sources(uri, (".json",), "ARC JSON"):
        try:
            value = _load_json(source)
        except InvalidRecord as error:
            yield error
            continue
        if isinstance(value, dict) and isinstance(value.get("train"), list):
            yield _task_or_error(value, source.file_name.removesuffix(".json"), source.name)
        elif isinstance(value, dict):
            for task_id, task in value.items():
                yield _task_or_error(task, task_id, f"{source.name}, task {task_id}")
        else:
            yield InvalidRecord(source.name, "expected a task or an {id: task} object")


def _task_or_error(value: object, task_id: str, where: str) -> Task | InvalidRecord:
    try:
        return replace(task_from_json(value, task_id), origin=where)
    except GridError as error:
        return InvalidRecord(where, str(error))


def _kaggle(uri: str) -> Iterator[Task | InvalidRecord]:
    """`*_challenges.json` files with their `*_solutions.json` neighbours (when present)."""
    for challenges in list_sources(uri, ("challenges.json",), "Kaggle *_challenges.json"):
        value = _load_json(challenges)
        if not isinstance(value, dict):
            raise InvalidRecord(challenges.name, "expected an {id: task} object")
        name = challenges.file_name
        # the neighbour's name is the challenges file's with "solutions" for "challenges": a
        # file named otherwise has none (it would have been paired with itself)
        solutions_source = challenges.sibling(name.replace("challenges", "solutions")) if "challenges" in name else None
        solutions = {} if solutions_source is None else _load_json(solutions_source)
        if not isinstance(solutions, dict):
            raise InvalidRecord(solutions_source.name, "expected an {id: [grid, ...]} object")
        for task_id, task in value.items():
            if task_id in solutions:
                task = _with_solutions(task, solutions[task_id])
                if isinstance(task, str):
                    yield InvalidRecord(f"{solutions_source.name}, task {task_id}", task)
                    continue
            yield _task_or_error(task, task_id, f"{challenges.name}, task {task_id}")


def _with_solutions(task: object, outputs: object) -> dict | str:
    if not isinstance(task, dict) or not isinstance(task.get("test"), list):
        return "its challenge has no 'test' list"
    if not isinstance(outputs, list) or len(outputs) != len(task["test"]):
        count = len(outputs) if isinstance(outputs, list) else "no list of"
        return f"{count} solutions for {len(task['test'])} test inputs"
    test = [
        {**pair, "output": output} if isinstance(pair, dict) else pair for pair, output in zip(task["test"], outputs)
    ]
    return {**task, "test": test}


def _rows(uri: str, split: Split) -> Iterator[Task | InvalidRecord]:
    """jsonl (optionally gzipped) lines or parquet rows, in the schemas of `records`."""
    for source in list_sources(uri, ROW_SUFFIXES, "jsonl or parquet"):
        rows = _parquet_rows(source) if source.name.endswith(".parquet") else _jsonl_rows(source)
        for where, row in rows:
            if isinstance(row, InvalidRecord):
                yield row
                continue
            try:
                yield replace(task_from_record(row, split), origin=where)
            except GridError as error:
                yield InvalidRecord(where, str(error))


def _jsonl_rows(source: Source) -> Iterator[tuple[str, object]]:
    for number, line in iter_lines(source):
        where = f"{source.name}, line {number}"
        if line is None:
            yield where, InvalidRecord(where, "not valid UTF-8")
            continue
        if not line.strip():
            continue
        try:
            yield where, json.loads(line)
        except json.JSONDecodeError as error:
            yield where, InvalidRecord(where, f"not valid JSON ({error.msg})")


def _parquet_rows(source: Source) -> Iterator[tuple[str, object]]:
    with open_parquet(source) as parquet:
        index = 0
        for batch in parquet.iter_batches(batch_size=256):
            for row in batch.to_pylist():
                yield f"{source.name}, row {index}", row
                index += 1
