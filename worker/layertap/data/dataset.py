"""What every dataset reader hands the runner: the samples in order, and their segments."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from layertap.errors import LayerTapError


@dataclass(frozen=True)
class Dataset:
    samples: list  # [Sample], in the dataset's deterministic order
    segment_names: dict[int, str]  # segment label -> name
    limit_report: str  # what maxTokens / overLimit did, for the run's summary
    select: Callable[[list[str]], list[int]]  # extraction.segments names -> labels
    files: dict[str, dict] = field(default_factory=dict)  # each file read -> {"bytes", "crc32c"}

    def segment_labels(self, names: list[str]) -> frozenset[int]:
        try:
            return frozenset(self.select(names))
        except ValueError as error:
            raise LayerTapError(str(error)) from None


def no_samples(uri: str, report: str) -> LayerTapError:
    """The error of a dataset that yields nothing to extract."""
    return LayerTapError(f"dataset {uri}: no samples to extract" + (f" ({report})" if report else ""))
