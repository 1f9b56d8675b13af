"""Prediction units: one prompt per (task, test input, view), in a fixed order.

A unit's key ("TASK/TEST/VIEW") is what a commit records, so a restart regenerates only
the units no commit names. Prompts are the arc24 inference prompts of the view's task
(which keeps only the one test input), fitted to `dataset.maxTokens` as extraction fits
them: dropped, or shortened by removing train pairs.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np

from layertap.arc.budget import BudgetStats, Tokenized, fit_to_budget, tokenized_prompt
from layertap.arc.encoders import GridEncoder
from layertap.arc.task import Task
from layertap.arc.tokens import label_tokens
from layertap.arc.views import View, prediction_views, view_task
from layertap.errors import LayerTapError
from layertap_api.spec import DatasetSpec, ViewsSpec


@dataclass(frozen=True)
class Unit:
    """One prompt to answer: `view` of test input `view.test_index` of task `view.task_id`,
    with each prompt token's segment label and grid cell (as extraction stores them)."""

    index: int  # its place in the run's unit order: the sample index of its activations
    view: View
    token_ids: np.ndarray  # [T] int32
    train_pairs: int  # train pairs the prompt shows (fewer than the task's when shortened)
    segments: np.ndarray  # [T] int16
    cells: np.ndarray  # [T, 3] int16, (row, col, colour) or -1

    @property
    def key(self) -> str:
        return unit_key(self.view.task_id, self.view.test_index, self.view.index)


def unit_key(task_id: str, test_index: int, view_index: int) -> str:
    return f"{task_id}/{test_index}/{view_index}"


@dataclass
class Dropped:
    """Views that no prompt within maxTokens could show, by (task id, test index)."""

    views: dict[tuple[str, int], int]

    def total(self) -> int:
        return sum(self.views.values())


def check_dataset(dataset: DatasetSpec) -> None:
    """What prediction cannot run on with this dataset, said before anything is read."""
    if dataset.prompt.variant != "inference":
        raise LayerTapError(
            "dataset.prompt.variant: prediction writes inference prompts (the answer is what it generates); "
            "set it to inference"
        )
    if dataset.over_limit == "truncate":
        raise LayerTapError(
            "dataset.overLimit: truncate would cut off the test input; prediction takes drop or shorten"
        )


def build_units(
    tasks: Iterable[Task],
    dataset: DatasetSpec,
    views: ViewsSpec,
    encoder: GridEncoder,
    tokenizer,
    budget: BudgetStats,
) -> tuple[list[Unit], Dropped]:
    """Every unit of `tasks`: task order, then test input, then view index."""
    prompt = dataset.prompt

    def build(task: Task) -> Tokenized:  # a view's task holds only its one test input
        return tokenized_prompt(task, 0, encoder, tokenizer, prompt.template, "inference")

    units, dropped = [], Dropped({})
    for task in tasks:
        for test_index in range(len(task.test)):
            for view in prediction_views(
                task,
                test_index,
                dihedral=views.dihedral,
                colour_permutations=views.colour_permutations,
                reorder_examples=views.reorder_examples,
                seed=views.seed,
            ):
                fitted = fit_to_budget(view_task(task, view), build, dataset.max_tokens, dataset.over_limit, budget)
                if fitted is None:
                    dropped.views[task.id, test_index] = dropped.views.get((task.id, test_index), 0) + 1
                    continue
                labels = label_tokens(fitted.prompt, fitted.offsets)
                units.append(
                    Unit(len(units), view, fitted.token_ids, fitted.train_pairs, labels.segments, labels.cells)
                )
    return units, dropped
