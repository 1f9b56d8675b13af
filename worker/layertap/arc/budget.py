"""Token budget: a prompt over `max_tokens` is dropped, truncated, or shortened by removing
train pairs (from the last) until it fits."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Literal

import numpy as np

from layertap.arc.prompts import Prompt
from layertap.arc.task import Task
from layertap.humanize import plural

OverLimit = Literal["drop", "truncate", "shorten"]


@dataclass(frozen=True)
class Tokenized:
    prompt: Prompt
    token_ids: np.ndarray  # [T] int32
    offsets: np.ndarray  # [T, 2] character spans in prompt.text
    train_pairs: int  # train pairs the prompt shows
    truncated: bool = False


def tokenized_prompt(task: Task, test_index: int, encoder, tokenizer, template: str, variant) -> Tokenized:
    """The prompt for `task.test[test_index]`, tokenized with each token's character span."""
    from layertap.arc.prompts import render_prompt

    rendered = render_prompt(task, test_index, encoder, tokenizer, template, variant)
    encoding = tokenizer(rendered.text, add_special_tokens=False, return_offsets_mapping=True)
    return Tokenized(
        rendered,
        np.asarray(encoding["input_ids"], dtype=np.int32),
        np.asarray(encoding["offset_mapping"], dtype=np.int64).reshape(-1, 2),
        len(task.train),
    )


@dataclass
class BudgetStats:
    """Prompts kept as they were, shortened (train pairs removed), truncated, and dropped."""

    kept: int = 0
    shortened: int = 0
    truncated: int = 0
    dropped: int = 0

    def __str__(self) -> str:
        return (
            f"{plural(self.kept, 'prompt')} kept, {self.shortened} shortened, "
            f"{self.truncated} truncated, {self.dropped} dropped over the token limit"
        )


def fit_to_budget(
    task: Task,
    build: Callable[[Task], Tokenized],
    max_tokens: int,
    over_limit: OverLimit,
    stats: BudgetStats,
) -> Tokenized | None:
    """The tokenized prompt of `task` within `max_tokens`, or None when it is dropped."""
    tokenized = build(task)
    if len(tokenized.token_ids) <= max_tokens:
        stats.kept += 1
        return tokenized
    if over_limit == "truncate":
        stats.truncated += 1
        return Tokenized(
            tokenized.prompt,
            tokenized.token_ids[:max_tokens],
            tokenized.offsets[:max_tokens],
            tokenized.train_pairs,
            truncated=True,
        )
    if over_limit == "shorten":
        for keep in range(len(task.train) - 1, 0, -1):
            tokenized = build(replace(task, train=task.train[:keep]))
            if len(tokenized.token_ids) <= max_tokens:
                stats.shortened += 1
                return tokenized
    stats.dropped += 1
    return None
