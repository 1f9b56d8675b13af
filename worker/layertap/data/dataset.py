"""Dataset spec -> the samples a run will feed, in the dataset's deterministic order."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, replace
from itertools import islice
from pathlib import Path

from layertap_api.spec import DatasetSpec

from layertap.data import text
from layertap.data.sample import Sample
from layertap.errors import LayerTapError

ARC_FORMATS = ("arc-json", "arc-kaggle", "barc-jsonl")


@dataclass(frozen=True)
class Dataset:
    samples: list[Sample]
    segment_names: dict[int, str]  # segment label -> name
    over_limit: int  # samples dropped or cut because they exceeded maxTokens


def load_dataset(spec: DatasetSpec, tokenizer, encode: Callable[[str], list[int]]) -> Dataset:
    """Read, tokenize and limit the dataset; an empty result is an error naming the file."""
    if spec.format == "text-jsonl":
        path = local_path(spec.uri, "dataset.uri")
        samples, names = text.text_samples(path, encode), text.SEGMENT_NAMES
    elif spec.format in ARC_FORMATS:
        from layertap.arc import dataset as arc

        samples, names = arc.samples(spec, tokenizer), arc.segment_names(spec)
    else:
        raise LayerTapError(f"dataset.format: {spec.format!r} is not supported by this worker yet")

    kept, over = fit_to_limit(islice(samples, spec.max_samples), spec.max_tokens, spec.over_limit)
    if not kept:
        reason = f" ({over} over maxTokens={spec.max_tokens})" if over else ""
        raise LayerTapError(f"dataset {spec.uri}: no samples to extract{reason}")
    return Dataset(samples=kept, segment_names=dict(names), over_limit=over)


def fit_to_limit(samples: Iterable[Sample], max_tokens: int, policy: str) -> tuple[list[Sample], int]:
    """Apply overLimit: drop long samples, or cut them to max_tokens.

    "shorten" (remove ARC train pairs) is the ARC reader's job; a sample still too long
    after it is cut like "truncate".
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


def local_path(uri: str, field: str) -> Path:
    if uri.startswith("gs://"):
        raise LayerTapError(f"{field}: {uri}: reading datasets from gs:// is not supported yet; copy it locally")
    path = Path(uri)
    if not path.is_file():
        raise LayerTapError(f"{field}: {uri}: no such file")
    return path

