"""Host side of a step: packed rows in, stored records out. Pure numpy, no JAX.

A row holds whole samples end to end. `segment_ids` numbers them 1, 2, ... within the row
(0 is padding) and `positions` restart at 0 for each, so the model sees each sample as if
it were alone. For `last` / `mean`, pooling weights [R, K, T] let the device reduce each
sample to one vector before the device-to-host copy.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from layertap.data.sample import Sample
from layertap.store.records import TokenRecords

Row = tuple[int, ...]


@dataclass(frozen=True)
class HostBatch:
    token_ids: np.ndarray  # [R, T] int32
    positions: np.ndarray  # [R, T] int32
    segment_ids: np.ndarray  # [R, T] int32
    weights: np.ndarray | None  # [R, K, T] float32, pooled modes only
    # What the step stores, per entry of its output (W: T tokens for `all`, K samples pooled),
    # for the statistics computed on device: 1 where stored, and the entry's segment label and
    # position (-1 for pooled entries); `places` names each entry (sample, position, token).
    stored: np.ndarray  # [R, W] float32
    labels: np.ndarray  # [R, W] int32
    entry_positions: np.ndarray  # [R, W] int32
    places: np.ndarray  # [R, W, 3] int64: sample index, position, token id (-1: none)

    def arrays(self) -> dict[str, np.ndarray]:
        named = {"token_ids": self.token_ids, "positions": self.positions, "segment_ids": self.segment_ids}
        if self.weights is not None:
            named["weights"] = self.weights
        named |= {"stored": self.stored, "labels": self.labels, "entry_positions": self.entry_positions}
        return named


def keep_mask(sample: Sample, excluded_ids: np.ndarray, segments: frozenset[int] | None) -> np.ndarray:
    """[T] bool: the tokens whose activations are kept (before last/mean selection)."""
    keep = ~np.isin(sample.token_ids, excluded_ids)
    if segments is not None:
        keep &= np.isin(sample.segments, list(segments))
    return keep


def build_batch(
    rows: Sequence[Row],
    samples: Mapping[int, Sample],
    keep: Mapping[int, np.ndarray],
    row_length: int,
    max_per_row: int,
    mode: str,
) -> HostBatch:
    shape = (len(rows), row_length)
    token_ids = np.zeros(shape, np.int32)
    positions = np.zeros(shape, np.int32)
    segment_ids = np.zeros(shape, np.int32)
    weights = None if mode == "all" else np.zeros((len(rows), max_per_row, row_length), np.float32)
    entries = (len(rows), row_length if mode == "all" else max_per_row)
    stored = np.zeros(entries, np.float32)
    labels = np.full(entries, -1, np.int32)
    entry_positions = np.full(entries, -1, np.int32)
    places = np.full((*entries, 3), -1, np.int64)
    for r, row in enumerate(rows):
        start = 0
        for k, index in enumerate(row):
            sample = samples[index]
            ids = sample.token_ids
            end = start + len(ids)
            token_ids[r, start:end] = ids
            positions[r, start:end] = np.arange(len(ids))
            segment_ids[r, start:end] = k + 1
            kept = np.flatnonzero(keep[index])
            if weights is None:
                stored[r, start + kept] = 1.0
                labels[r, start:end] = sample.segments
                entry_positions[r, start:end] = np.arange(len(ids))
                places[r, start:end] = np.stack([np.full(len(ids), index), np.arange(len(ids)), ids], axis=1)
            else:
                if mode == "last":
                    weights[r, k, start + kept[-1]] = 1.0
                else:
                    weights[r, k, start + kept] = 1.0 / len(kept)
                stored[r, k] = 1.0
                places[r, k, 0] = index
            start = end
    return HostBatch(token_ids, positions, segment_ids, weights, stored, labels, entry_positions, places)


def select_records(
    rows: Sequence[Row],
    samples: Mapping[int, Sample],
    keep: Mapping[int, np.ndarray],
    activations: Mapping[str, np.ndarray],
    mode: str,
) -> tuple[TokenRecords, dict[int, dict]]:
    """Pick the stored rows out of a step's output for these rows: the records, and the
    provenance (meta) of the samples they hold.

    activations: site -> [L, R, T, ...] for `all` (every token of every row), [L, R, K, ...]
    for the pooled modes (one value per packed sample).
    """
    L, R, width = next(iter(activations.values())).shape[:3]
    flat, token_ids, sample_index, position, segment, cell = [], [], [], [], [], []
    provenance = {}
    for r, row in enumerate(rows):
        start = 0
        for k, index in enumerate(row):
            sample = samples[index]
            kept = np.flatnonzero(keep[index])
            if mode == "all":
                flat.append(r * width + start + kept)
                picked = kept
            else:
                flat.append(np.array([r * width + k]))
                picked = kept[-1:]
            if mode == "mean":
                for column in (token_ids, position, segment):
                    column.append(np.array([-1]))
                cell.append(np.full((1, 3), -1))
            else:
                token_ids.append(sample.token_ids[picked])
                position.append(picked)
                segment.append(sample.segments[picked])
                cell.append(sample.cells[picked] if sample.cells is not None else np.full((len(picked), 3), -1))
            sample_index.append(np.full(len(flat[-1]), index))
            provenance[index] = sample.meta
            start += len(sample.token_ids)

    def cat(parts: list[np.ndarray], dtype, shape=(0,)) -> np.ndarray:
        return np.concatenate(parts).astype(dtype) if parts else np.zeros(shape, dtype)

    take = cat(flat, np.int64)
    records = TokenRecords.of(
        {site: acts.reshape(L, R * width, *acts.shape[3:])[:, take] for site, acts in activations.items()},
        token_ids=cat(token_ids, np.int32),
        sample_index=cat(sample_index, np.int64),
        position=cat(position, np.int32),
        segment=cat(segment, np.int16),
        cell=cat(cell, np.int16, (0, 3)),
    )
    return records, provenance
