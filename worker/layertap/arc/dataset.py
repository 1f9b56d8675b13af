"""ARC datasets as `Sample`s: the contract with the runner.

    for sample in iter_samples(spec.dataset, tokenizer): ...

Order is deterministic: tasks in reading order (invalid ones skipped and logged with
`skipInvalid`, else the first is an error naming its file and row; unsplit BARC examples
give their last `testPairs` pairs as tests), the ones `dataset.select` picks; per task
the original (copy 0) then `prompt.augmentations` augmented copies; per copy one prompt
per test input. Sample indices count the samples yielded. `segment_names` maps labels to
names (0 = other text); `select_labels(["test-input"])` gives the labels
`extraction.segments` selects.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from functools import partial
from typing import get_args

from layertap.arc.augment import augmentation_rng, random_augmentation
from layertap.arc.budget import BudgetStats, Tokenized, fit_to_budget, tokenized_prompt
from layertap.arc.encoders import build_encoder
from layertap.arc.prompts import TEMPLATES
from layertap.arc.readers import ArcFormat, read_tasks
from layertap.arc.records import Split
from layertap.arc.segments import segment_names, select_labels
from layertap.arc.task import Task
from layertap.arc.tokens import label_tokens
from layertap.data.dataset import Dataset, no_samples
from layertap.data.invalid import SKIP_HINT, InvalidRecord, ReadStats
from layertap.data.sample import Sample
from layertap.data.selection import select
from layertap.errors import LayerTapError
from layertap_api.spec import DatasetSpec

ARC_FORMATS: tuple[str, ...] = get_args(ArcFormat)
__all__ = ["ARC_FORMATS", "iter_samples", "load_arc_dataset", "segment_names", "select_labels"]

log = logging.getLogger(__name__)


def load_arc_dataset(spec: DatasetSpec, tokenizer) -> Dataset:
    """Every sample of an ARC dataset (select, maxSamples and overLimit applied), with the ARC segments."""
    budget, reading = BudgetStats(), ReadStats()
    samples = list(iter_samples(spec, tokenizer, budget=budget, reading=reading))
    report = "; ".join(part for part in (str(budget), reading.report()) if part)
    if not samples:
        raise no_samples(spec.uri, report)
    return Dataset(samples=samples, segment_names=dict(segment_names), limit_report=report, select=select_labels)


def iter_samples(
    dataset: DatasetSpec,
    tokenizer,
    *,
    budget: BudgetStats | None = None,
    reading: ReadStats | None = None,
) -> Iterator[Sample]:
    """Samples of an ARC `DatasetSpec` (formats arc-json, arc-kaggle, barc-jsonl).

    `budget` and `reading`, when given, are filled in as samples are produced (prompts
    kept/shortened/truncated/dropped; tasks read).
    """
    if dataset.format not in ARC_FORMATS:
        raise LayerTapError(f"dataset.format: {dataset.format!r} is not an ARC format ({', '.join(ARC_FORMATS)})")
    prompt = dataset.prompt
    try:
        encoder = build_encoder(prompt.grid_encoder)
    except ValueError as error:
        raise LayerTapError(f"dataset.prompt.gridEncoder: {error}") from None
    if prompt.template not in TEMPLATES:
        raise LayerTapError(f"dataset.prompt.template: unknown {prompt.template!r}; known: {', '.join(TEMPLATES)}")
    budget = budget if budget is not None else BudgetStats()
    reading = reading if reading is not None else ReadStats()
    tasks = read_tasks(
        dataset.uri, dataset.format, split=Split(dataset.test_pairs), skip_invalid=dataset.skip_invalid, stats=reading
    )
    # dataset.select picks whole tasks before any prompt is built. Every host reads the same
    # tasks in the same order and selects the same ones, so the global plan stays deterministic.
    tasks = select(tasks, lambda task: task.id, dataset.select, uri=dataset.uri, unit="task")

    def build(task: Task, test_index: int) -> Tokenized:
        return tokenized_prompt(task, test_index, encoder, tokenizer, prompt.template, prompt.variant)

    try:
        yield from _samples(tasks, dataset, build, budget)
    except InvalidRecord as error:
        raise InvalidRecord(error.where, f"{error.reason} ({SKIP_HINT})") from None
    finally:
        if reading.skipped:
            log.warning("%s: %s", dataset.uri, reading.report())


def _samples(tasks, dataset: DatasetSpec, build, budget: BudgetStats) -> Iterator[Sample]:
    prompt = dataset.prompt
    index = 0
    for task in tasks:
        for copy in range(prompt.augmentations + 1):
            augmentation = None
            view = task
            if copy:
                rng = augmentation_rng(prompt.seed, task.id, copy)
                augmentation = random_augmentation(task, rng, tuple(prompt.augment_kinds), prompt.permute_background)
                view = augmentation.apply(task)
            for test_index in range(len(view.test)):
                fitted = fit_to_budget(
                    view,
                    partial(build, test_index=test_index),
                    dataset.max_tokens,
                    dataset.over_limit,
                    budget,
                )
                if fitted is None:
                    continue
                yield _sample(index, fitted, task, test_index, copy, augmentation)
                index += 1
                if dataset.max_samples is not None and index >= dataset.max_samples:
                    return


def _sample(index, fitted: Tokenized, task: Task, test_index, copy, augmentation) -> Sample:
    labels = label_tokens(fitted.prompt, fitted.offsets)
    meta = {
        "task_id": task.id,
        "origin": task.origin,
        "test_index": test_index,
        "copy": copy,
        "augmentation": None if augmentation is None else augmentation.to_json(),
        "train_pairs": fitted.train_pairs,
        "shortened": fitted.train_pairs < len(task.train),
        "truncated": fitted.truncated,
    }
    if labels.merged_cells:
        meta["merged_cells"] = labels.merged_cells
    return Sample(
        index=index,
        token_ids=fitted.token_ids,
        segments=labels.segments,
        meta=meta,
        cells=labels.cells,
    )
