"""The ARC Prize metric: a test output is solved when either attempt equals it exactly (shape
and values); a task scores the fraction of its test outputs solved; the total is the mean
over the tasks that have solutions (a task missing from the submission scores 0)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

from layertap.arc.grids import GridError, to_grid
from layertap.arc.submission import ATTEMPT_KEYS, check_submission
from layertap.errors import LayerTapError


@dataclass(frozen=True)
class TaskScore:
    """`matched[i]`: the first attempt (1 or 2) that equals test output i, or None (always
    None for a task missing from the submission)."""

    task_id: str
    matched: tuple[int | None, ...]

    @property
    def solved(self) -> tuple[bool, ...]:
        return tuple(attempt is not None for attempt in self.matched)

    @property
    def score(self) -> float:
        return sum(self.solved) / len(self.matched)


@dataclass(frozen=True)
class Score:
    """`tasks` in the solutions' order; `missing`: tasks with solutions but no submission
    (each scored 0); `unscored`: submitted tasks without a solution (not counted)."""

    total: float
    tasks: tuple[TaskScore, ...]
    missing: tuple[str, ...]
    unscored: tuple[str, ...]

    def to_json(self) -> dict:
        return {
            "total": self.total,
            "tasks": {
                t.task_id: {"score": t.score, "solved": list(t.solved), "matched": list(t.matched)} for t in self.tasks
            },
            "missing": list(self.missing),
            "unscored": list(self.unscored),
        }


def score(submission: Mapping[str, list], solutions: Mapping[str, list]) -> Score:
    """Score a submission ({task_id: [{"attempt_1", "attempt_2"}, ...]}) against solutions in
    Kaggle's `*_solutions.json` form ({task_id: [grid, ...]}, one grid per test input)."""
    submission = check_submission(dict(submission))
    if not solutions:
        raise LayerTapError("no solutions to score against")
    tasks = []
    for task_id, expected in solutions.items():
        truths = _solution_grids(task_id, expected)
        if task_id not in submission:
            tasks.append(TaskScore(task_id, (None,) * len(truths)))
            continue
        entry = submission[task_id]
        if len(entry) != len(truths):
            raise LayerTapError(
                f"task {task_id}: the submission has {len(entry)} test input(s), the solutions have {len(truths)}"
            )
        tasks.append(TaskScore(task_id, tuple(_match(item, truth) for item, truth in zip(entry, truths))))
    return Score(
        total=sum(t.score for t in tasks) / len(tasks),
        tasks=tuple(tasks),
        missing=tuple(task_id for task_id in solutions if task_id not in submission),
        unscored=tuple(task_id for task_id in submission if task_id not in solutions),
    )


def _match(item: dict, truth: np.ndarray) -> int | None:
    """The first attempt (1 or 2) equal to `truth`; np.array_equal is False for another shape."""
    return next((n for n, key in enumerate(ATTEMPT_KEYS, 1) if np.array_equal(np.asarray(item[key]), truth)), None)


def _solution_grids(task_id: str, expected: object) -> list[np.ndarray]:
    if not isinstance(expected, list) or not expected:
        raise LayerTapError(f"task {task_id}: solutions must be a non-empty list of grids, one per test input")
    grids = []
    for i, grid in enumerate(expected):
        try:
            grids.append(to_grid(grid))
        except GridError as error:
            raise LayerTapError(f"task {task_id}: solution {i}: {error}") from None
    return grids
