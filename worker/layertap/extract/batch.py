"""Host side of a step: packed rows in, what to store out. Pure numpy, no JAX.

A row holds whole samples end to end. `segment_ids` numbers them 1, 2, ... within the row
(0 is padding) and `positions` restart at 0 for each, so the model sees each sample as if
it were alone. For `last` / `mean`, pooling weights [R, K, T] let the device reduce each
sample to one vector. The host never touches an activation: it says which entries each
device keeps (`take`, gathered on device: `extract/compact.py`) and builds their index
columns from the samples.
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
    # What is stored, per data-parallel device of these rows (blocks of equal rows, in device
    # order), and `take` [blocks, capacity]: where the device gathers each entry from.
    entries: tuple[StoredEntries, ...]
    take: np.ndarray

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
    blocks: int = 1,
    capacity: int | None = None,
) -> HostBatch:
    """The step's inputs for these rows, which `blocks` data-parallel devices hold in equal
    blocks; capacity: the entries each device's compact output holds (None: the most any
    block stores)."""
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
    width = entries[1]
    per_block = len(rows) // blocks
    stored_by_block = tuple(
        stored_entries(rows[b * per_block : (b + 1) * per_block], samples, keep, width, mode) for b in range(blocks)
    )
    capacity = max(map(len, stored_by_block)) if capacity is None else capacity
    take = gather_take(stored_by_block, capacity)
    return HostBatch(
        token_ids, positions, segment_ids, weights, stored, labels, entry_positions, places, stored_by_block, take
    )


@dataclass(frozen=True)
class StoredEntries:
    """What a block of rows stores, in stored order (row by row, each sample's kept tokens or
    its one pooled entry): where each entry sits in the block's output, its index columns,
    and the provenance of its samples. The activations are gathered on device from `take`."""

    take: np.ndarray  # [n] int32: flat index into the block's [rows x width] output entries
    columns: dict[str, np.ndarray]  # the TokenRecords index columns, [n] each (cell [n, 3])
    samples: dict[int, dict]  # sample index -> meta, for the samples of these rows

    def __len__(self) -> int:
        return len(self.take)

    def records(self, activations: Mapping[str, np.ndarray]) -> TokenRecords:
        """These entries' records, with their activations (site -> [L, n, ...])."""
        return TokenRecords.of(dict(activations), **self.columns)


def stored_entries(
    rows: Sequence[Row],
    samples: Mapping[int, Sample],
    keep: Mapping[int, np.ndarray],
    width: int,
    mode: str,
) -> StoredEntries:
    """The entries these rows store. width: a row's entries in the step's output (T tokens
    for `all`, K pooled samples otherwise)."""
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

    columns = {
        "token_ids": cat(token_ids, np.int32),
        "sample_index": cat(sample_index, np.int64),
        "position": cat(position, np.int32),
        "segment": cat(segment, np.int16),
        "cell": cat(cell, np.int16, (0, 3)),
    }
    return StoredEntries(cat(flat, np.int32), columns, provenance)


def gather_take(entries: Sequence[StoredEntries], capacity: int) -> np.ndarray:
    """[blocks, capacity] int32: each block's `take`, the spare room filled with entry 0
    (gathered, moved, never stored)."""
    take = np.zeros((len(entries), capacity), np.int32)
    for block, stored in enumerate(entries):
        if len(stored) > capacity:
            raise ValueError(f"{len(stored)} entries do not fit the capacity {capacity}")
        take[block, : len(stored)] = stored.take
    return take
