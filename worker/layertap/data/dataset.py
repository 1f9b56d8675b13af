"""Dataset spec -> the samples a run will feed, in the dataset's deterministic order."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, replace
from itertools import islice

from layertap_api.spec import DatasetSpec

from layertap.data import text
from layertap.data.sample import Sample
from layertap.errors import LayerTapError


@dataclass(frozen=True)
class Dataset:
    samples: list[Sample]
    segment_names: dict[int, str]  # segment label -> name
    limit_report: str  # what maxTokens / overLimit did, for the run's summary
    select: Callable[[list[str]], list[int]]  # extraction.segments names -> labels

    def segment_labels(self, names: list[str]) -> frozenset[int]:
        try:
            return frozenset(self.select(names))
        except ValueError as error:
            raise LayerTapError(str(error)) from None


def load_dataset(spec: DatasetSpec, tokenizer) -> Dataset:
    """Read, tokenize and limit the dataset; an empty result is an error naming the file."""
    if spec.format in text.SUFFIXES:

        def encode(value: str) -> list[int]:
            return tokenizer.encode(value, add_special_tokens=False)

        samples = islice(text.text_samples(spec.uri, encode, spec.format), spec.max_samples)
        kept, over = fit_to_limit(samples, spec.max_tokens, spec.over_limit)
        names, report = text.SEGMENT_NAMES, f"{over} over maxTokens ({spec.over_limit})" if over else ""
        select = exact_names(names)
    else:  # the ARC formats
        from layertap.arc import dataset as arc
        from layertap.arc.budget import BudgetStats

        budget = BudgetStats()
        kept = list(arc.iter_samples(spec, tokenizer, budget=budget))  # applies maxSamples and overLimit
        names, report, select = arc.segment_names, str(budget), arc.select_labels
    if not kept:
        raise LayerTapError(f"dataset {spec.uri}: no samples to extract" + (f" ({report})" if report else ""))
    return Dataset(samples=kept, segment_names=dict(names), limit_report=report, select=select)


def exact_names(names: dict[int, str]) -> Callable[[list[str]], list[int]]:
    by_name = {name: label for label, name in names.items()}

    def select(wanted: list[str]) -> list[int]:
        unknown = [name for name in wanted if name not in by_name]
        if unknown:
            raise ValueError(
                f"extraction.segments: {unknown} are not segments of this dataset; it has {sorted(by_name)}"
            )
        return [by_name[name] for name in wanted]

    return select


def fit_to_limit(samples: Iterable[Sample], max_tokens: int, policy: str) -> tuple[list[Sample], int]:
    """Apply overLimit to plain-text samples: drop long ones, or cut them to max_tokens.

    "shorten" removes ARC train pairs (the ARC reader's job); plain text has none to
    remove, so it cuts like "truncate".
    """
    kept, over = [], 0
    for sample in samples:
        if len(sample.token_ids) == 0:
            continue
        if len(sample.token_ids) > max_tokens:
            over += 1
            if policy == "drop":
                continue
            sample = truncate(sample, max_tokens)
        kept.append(sample)
    return kept, over


def truncate(sample: Sample, n: int) -> Sample:
    cells = None if sample.cells is None else sample.cells[:n]
    meta = {**sample.meta, "truncatedFrom": len(sample.token_ids)}
    return replace(sample, token_ids=sample.token_ids[:n], segments=sample.segments[:n], cells=cells, meta=meta)
