"""The ARC Prize metric, by the benchmark's rules: a test output is solved when either attempt
equals it exactly (shape and values); a task scores the fraction of its test outputs solved.
Two totals: the mean of the task scores over the tasks that have solutions (the leaderboard's
figure; a task missing from the submission scores 0), and the fraction of all test outputs
solved (what papers often report). An attempt that is not a grid (empty, ragged, not numbers
0..9, absent) is wrong, not an error, and is reported, as arc-agi-benchmarking counts an
empty answer wrong. Errors are kept for what makes scoring impossible: arguments of the wrong
type, solutions that are not grids, a task with another number of test outputs."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

from layertap.arc.grids import GridError, to_grid
from layertap.arc.submission import ATTEMPT_KEYS
from layertap.errors import LayerTapError


class ScoreTypeError(LayerTapError, TypeError):
    """An argument of score() of the wrong type."""


class ScoreValueError(LayerTapError, ValueError):
    """Solutions that cannot be scored against, or a task that cannot be lined up with them."""


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
class NotAGrid:
    """An attempt counted wrong because it is no grid."""

    task_id: str
    test_index: int
    attempt: str
    reason: str

    def __str__(self) -> str:
        return f"task {self.task_id}: test output {self.test_index}: {self.attempt}: {self.reason}"


@dataclass(frozen=True)
class Score:
    """`tasks` in the solutions' order; `missing`: tasks with solutions but no submission
    (each scored 0); `unscored`: submitted tasks without a solution (not counted);
    `not_grids`: attempts counted wrong because they are no grid."""

    tasks: tuple[TaskScore, ...]
    missing: tuple[str, ...]
    unscored: tuple[str, ...]
    not_grids: tuple[NotAGrid, ...] = ()

    @property
    def per_task_mean(self) -> float:
        return sum(t.score for t in self.tasks) / len(self.tasks)

    @property
    def per_test_output(self) -> float:
        return sum(sum(t.solved) for t in self.tasks) / sum(len(t.matched) for t in self.tasks)

    def to_json(self) -> dict:
        return {
            "per_task_mean": self.per_task_mean,
            "per_test_output": self.per_test_output,
            "task_scores": {t.task_id: t.score for t in self.tasks},
            "tasks": {t.task_id: {"solved": list(t.solved), "matched": list(t.matched)} for t in self.tasks},
            "missing": list(self.missing),
            "unscored": list(self.unscored),
            "not_grids": [str(n) for n in self.not_grids],
        }


def score(submission: Mapping[str, list], solutions: Mapping[str, list]) -> Score:
    """Score a submission ({task_id: [{"attempt_1": grid, "attempt_2": grid}, ...]}) against
    solutions in Kaggle's `*_solutions.json` form ({task_id: [grid, ...]}, one grid per test
    output, in order)."""
    if not isinstance(submission, Mapping):
        raise ScoreTypeError(f"submission: expected an object {{task_id: [attempts, ...]}}, got {_kind(submission)}")
    if not isinstance(solutions, Mapping):
        raise ScoreTypeError(f"solutions: expected an object {{task_id: [grid, ...]}}, got {_kind(solutions)}")
    if not solutions:
        raise ScoreValueError("solutions: no tasks to score against")
    tasks, not_grids = [], []
    for task_id, expected in solutions.items():
        truths = _solution_grids(str(task_id), expected)
        if task_id not in submission:
            tasks.append(TaskScore(str(task_id), (None,) * len(truths)))
            continue
        entry = submission[task_id]
        if not isinstance(entry, list) or len(entry) != len(truths):
            got = f"{len(entry)} test outputs" if isinstance(entry, list) else _kind(entry)
            raise ScoreValueError(
                f"submission: task {task_id}: expected a list of {len(truths)} test outputs' attempts "
                f"(the solutions have {len(truths)}), got {got}"
            )
        matched = []
        for i, (item, truth) in enumerate(zip(entry, truths)):
            grids = _attempt_grids(str(task_id), i, item, not_grids)
            matched.append(next((n for n, grid in enumerate(grids, 1) if np.array_equal(grid, truth)), None))
        tasks.append(TaskScore(str(task_id), tuple(matched)))
    return Score(
        tasks=tuple(tasks),
        missing=tuple(str(task_id) for task_id in solutions if task_id not in submission),
        unscored=tuple(str(task_id) for task_id in submission if task_id not in solutions),
        not_grids=tuple(not_grids),
    )


def _attempt_grids(task_id: str, test_index: int, item: object, not_grids: list[NotAGrid]) -> list:
    """Each attempt as a grid, or None (counted wrong, and reported in `not_grids`)."""
    grids = []
    for key in ATTEMPT_KEYS:
        if not isinstance(item, Mapping):
            reason = f"the test output's entry is {_kind(item)}, not an object of attempts"
        elif key not in item:
            reason = "absent"
        else:
            try:
                grids.append(to_grid(item[key]))
                continue
            except GridError as error:
                reason = str(error)
        not_grids.append(NotAGrid(task_id, test_index, key, reason))
        grids.append(None)
    return grids


def _solution_grids(task_id: str, expected: object) -> list[np.ndarray]:
    if not isinstance(expected, list) or not expected:
        raise ScoreValueError(f"solutions: task {task_id}: expected a non-empty list of grids, one per test output")
    grids = []
    for i, grid in enumerate(expected):
        try:
            grids.append(to_grid(grid))
        except GridError as error:
            raise ScoreValueError(f"solutions: task {task_id}: test output {i}: {error}") from None
    return grids


def _kind(value: object) -> str:
    return "null" if value is None else type(value).__name__
