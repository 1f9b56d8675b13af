"""The unit every dataset reader produces and the runner consumes."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

# Segment label 0 is reserved for "other text" (chat scaffolding, instructions, plain text).
# Readers that know more (ARC prompts) use the labels listed in their `segment_names`.
OTHER_SEGMENT = 0


@dataclass(frozen=True)
class Sample:
    """One prompt, tokenized.

    index: position of the sample in the dataset's deterministic order (stable across runs
        and hosts; used for resume and stored with every activation row).
    token_ids: [T] int32.
    segments: [T] int16 segment label per token (see the reader's `segment_names`).
    meta: JSON-serialisable provenance (task id, augmentation, source row, ...).
    cells: optional [T, 3] int16 (row, col, colour) of the grid cell a token encodes,
        -1 where the token is not a grid cell.
    """

    index: int
    token_ids: np.ndarray
    segments: np.ndarray
    meta: dict = field(default_factory=dict)
    cells: np.ndarray | None = None

    def __post_init__(self) -> None:
        if self.token_ids.ndim != 1 or self.segments.shape != self.token_ids.shape:
            raise ValueError(
                f"sample {self.index}: token_ids {self.token_ids.shape} and segments "
                f"{self.segments.shape} must be equal 1-D shapes"
            )
        if self.cells is not None and self.cells.shape != (len(self.token_ids), 3):
            raise ValueError(f"sample {self.index}: cells must be [T, 3], got {self.cells.shape}")
