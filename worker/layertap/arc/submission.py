"""The Kaggle ARC Prize (2024, 2025) submission file: two attempts per test input.

    {"task_id": [{"attempt_1": grid, "attempt_2": grid}, ...one per test input, in order]}

Kaggle rejects a file where any test input lacks either attempt, so a missing attempt is
filled (the first again, or [[0]]), and the file is written atomically (a Store write) so
that a crash never leaves half a submission behind.
"""

from __future__ import annotations

import json
from collections.abc import Sequence

from layertap.arc.grids import GridError, to_grid
from layertap.arc.vote import Ranked
from layertap.errors import LayerTapError
from layertap.io.store import Store

ATTEMPT_KEYS = ("attempt_1", "attempt_2")
SUBMISSION_KEY = "submission.json"
EMPTY_GRID = [[0]]

Grid = list[list[int]]
Entry = list[dict[str, Grid]]  # one {"attempt_1", "attempt_2"} per test input


def attempts(ranked: Sequence[Ranked]) -> tuple[Grid, Grid]:
    """The two best grids; the first twice when there is one, [[0]] twice when there is none."""
    grids = [r.grid.tolist() for r in ranked[:2]] or [EMPTY_GRID]
    return grids[0], grids[-1]


def submission_entry(ranked_per_test: Sequence[Sequence[Ranked]]) -> Entry:
    """A task's entry from its ranked grids, one list per test input in order."""
    return [dict(zip(ATTEMPT_KEYS, attempts(ranked))) for ranked in ranked_per_test]


def check_submission(submission: object, where: str = "submission") -> dict[str, Entry]:
    """Raise LayerTapError naming the task, test input and attempt unless `submission` has
    the Kaggle form; return it with every grid as plain lists."""
    if not isinstance(submission, dict):
        raise LayerTapError(f"{where}: expected an object {{task_id: [attempts]}}, not {type(submission).__name__}")
    checked = {}
    for task_id, entry in submission.items():
        if not isinstance(entry, list) or not entry:
            raise LayerTapError(f"{where}: task {task_id}: expected a non-empty list, one item per test input")
        checked[str(task_id)] = [
            _check_attempts(item, f"{where}: task {task_id}: test input {i}") for i, item in enumerate(entry)
        ]
    return checked


def write_submission(store: Store, entries: dict[str, Entry], key: str = SUBMISSION_KEY) -> str:
    """Check `entries` and write them as JSON (a Store write is atomic: all of it or nothing).
    Returns the file's URI."""
    store.write(key, json.dumps(check_submission(entries), separators=(",", ":")).encode())
    return f"{store.uri.rstrip('/')}/{key}"


def read_submission(store: Store, key: str = SUBMISSION_KEY) -> dict[str, Entry]:
    """A submission file, checked; errors name the file and the task at fault."""
    where = f"{store.uri.rstrip('/')}/{key}"
    try:
        value = json.loads(store.read(key))
    except FileNotFoundError:
        raise LayerTapError(f"{where}: no submission there") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise LayerTapError(f"{where}: not valid JSON ({error})") from None
    return check_submission(value, where)


def _check_attempts(item: object, where: str) -> dict[str, Grid]:
    if not isinstance(item, dict) or set(item) != set(ATTEMPT_KEYS):
        keys = sorted(item) if isinstance(item, dict) else type(item).__name__
        raise LayerTapError(f"{where}: expected exactly the keys {list(ATTEMPT_KEYS)}, got {keys}")
    checked = {}
    for key in ATTEMPT_KEYS:
        try:
            checked[key] = to_grid(item[key]).tolist()
        except GridError as error:
            raise LayerTapError(f"{where}: {key}: {error}") from None
    return checked
