"""Augmented views of one ARC test input, for test-time prediction with voting.

Each view asks the model the same question in a different frame (a dihedral transform,
a colour permutation, a train-pair order); its `Augmentation` maps the answer back.
Views are numbered so that view `index` is the same whatever the other arguments add:
index = colour_copy * n_dihedral + dihedral_position, and view 0 is the task unchanged.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

import numpy as np

from layertap.arc.augment import DIHEDRAL, Augmentation, augmentation_rng
from layertap.arc.grids import NUM_COLOURS
from layertap.arc.task import Task
from layertap.errors import LayerTapError

IDENTITY_COLOURS = tuple(range(NUM_COLOURS))
MAX_COLOUR_PERMUTATIONS = math.factorial(NUM_COLOURS - 1) - 1  # every other permutation that keeps 0


@dataclass(frozen=True)
class View:
    """View `index` of test input `test_index` of task `task_id`; `augmentation` applies to
    the whole task (its pair_order never moves a test pair)."""

    task_id: str
    test_index: int
    index: int
    augmentation: Augmentation

    def to_json(self) -> dict:
        fields = {"task_id": self.task_id, "test_index": self.test_index, "index": self.index}
        return {**fields, "augmentation": self.augmentation.to_json()}

    @classmethod
    def from_json(cls, value: dict) -> View:
        try:
            augmentation = Augmentation.from_json(value["augmentation"])
            return cls(str(value["task_id"]), int(value["test_index"]), int(value["index"]), augmentation)
        except (KeyError, TypeError, ValueError) as error:
            raise LayerTapError(f"not a prediction view ({type(error).__name__}: {error}): {value!r}") from None


def prediction_views(
    task: Task,
    test_index: int,
    *,
    dihedral: bool = True,
    colour_permutations: int = 0,
    reorder_examples: bool = False,
    seed: int = 0,
) -> list[View]:
    """The views of `task`'s test input `test_index`: every DIHEDRAL transform (in DIHEDRAL
    order) or only the identity, times the identity colours plus `colour_permutations`
    distinct random ones that keep colour 0 (the background). With `reorder_examples` every
    view but view 0 shows the train pairs in its own random order. Random choices depend only
    on (seed, task id, colour copy or view index), never on other tasks or call order."""
    _check_test_index(task, test_index)
    if not 0 <= colour_permutations <= MAX_COLOUR_PERMUTATIONS:
        raise LayerTapError(f"task {task.id}: colour_permutations must be 0..{MAX_COLOUR_PERMUTATIONS}")
    names = DIHEDRAL if dihedral else DIHEDRAL[:1]
    views = []
    for colours in _colour_permutations(task.id, colour_permutations, seed):
        for name in names:
            index = len(views)
            order = _train_order(task, index, seed) if reorder_examples and index > 0 else None
            views.append(View(task.id, test_index, index, Augmentation(name, colours, order)))
    return views


def view_task(task: Task, view: View) -> Task:
    """The task as `view` shows it, with only test input `view.test_index` left as its test
    (so that a prompt renderer asks for test 0)."""
    if view.task_id != task.id:
        raise LayerTapError(f"task {task.id}: view {view.index} belongs to task {view.task_id}")
    _check_test_index(task, view.test_index)
    augmented = view.augmentation.apply(task)
    return replace(augmented, test=(augmented.test[view.test_index],))


def _check_test_index(task: Task, test_index: int) -> None:
    if not 0 <= test_index < len(task.test):
        raise LayerTapError(f"task {task.id}: test input {test_index} does not exist (it has {len(task.test)})")


def _colour_permutations(task_id: str, count: int, seed: int) -> list[tuple[int, ...]]:
    """The identity, then `count` distinct permutations keeping 0; copy c draws from its own generator."""
    chosen = [IDENTITY_COLOURS]
    for copy in range(1, count + 1):
        rng = augmentation_rng(seed, task_id, copy)
        colours = IDENTITY_COLOURS
        while colours in chosen:  # a repeat would only duplicate votes
            colours = (0, *(int(c) for c in rng.permutation(np.arange(1, NUM_COLOURS))))
        chosen.append(colours)
    return chosen


def _train_order(task: Task, index: int, seed: int) -> tuple[int, ...] | None:
    """A pair_order that shuffles the train pairs and leaves every test pair where it is."""
    rng = augmentation_rng(seed, f"{task.id}\0train-order", index)
    n_train = len(task.train)
    order = [int(i) for i in rng.permutation(n_train)] + list(range(n_train, n_train + len(task.test)))
    return None if order == sorted(order) else tuple(order)
