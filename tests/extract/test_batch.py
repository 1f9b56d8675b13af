from __future__ import annotations

import jax
import numpy as np
import pytest
from jax.sharding import Mesh

from layertap.data.sample import Sample
from layertap.extract.batch import build_batch, keep_mask
from layertap.extract.compact import Gather, host_parts
from layertap.store.records import TokenRecords


def sample(index: int, ids: list[int], segments: list[int] | None = None, cells=None) -> Sample:
    ids_arr = np.asarray(ids, np.int32)
    segs = np.asarray(segments if segments is not None else [0] * len(ids), np.int16)
    cells = None if cells is None else np.asarray(cells, np.int16)
    return Sample(index=index, token_ids=ids_arr, segments=segs, meta={"id": index}, cells=cells)


GRID_CELLS = [[-1, -1, -1], [0, 0, 5], [0, 1, 6], [-1, -1, -1]]
SAMPLES = {3: sample(3, [100, 5, 6, 7], [0, 1, 1, 2], GRID_CELLS), 7: sample(7, [8, 9, 100]), 9: sample(9, [10, 11])}
SPECIAL = np.array([100], np.int32)
KEEP = {i: keep_mask(s, SPECIAL, None) for i, s in SAMPLES.items()}
ROWS = [(3, 7), (9,)]


def test_keep_mask_drops_special_tokens_and_filters_segments():
    np.testing.assert_array_equal(KEEP[3], [False, True, True, True])
    np.testing.assert_array_equal(keep_mask(SAMPLES[3], SPECIAL, frozenset({1})), [False, True, True, False])


def test_rows_pack_samples_with_restarting_positions_and_numbered_segments():
    batch = build_batch(ROWS, SAMPLES, KEEP, row_length=8, max_per_row=2, mode="all")
    np.testing.assert_array_equal(batch.token_ids[0], [100, 5, 6, 7, 8, 9, 100, 0])
    np.testing.assert_array_equal(batch.positions[0], [0, 1, 2, 3, 0, 1, 2, 0])
    np.testing.assert_array_equal(batch.segment_ids[0], [1, 1, 1, 1, 2, 2, 2, 0])
    np.testing.assert_array_equal(batch.segment_ids[1], [1, 1, 0, 0, 0, 0, 0, 0])
    assert batch.weights is None and "weights" not in batch.arrays()
    # what the statistics see: the stored (kept) tokens, their labels, positions and places
    np.testing.assert_array_equal(batch.stored[0], [0, 1, 1, 1, 1, 1, 0, 0])
    np.testing.assert_array_equal(batch.labels[0], [0, 1, 1, 2, 0, 0, 0, -1])
    np.testing.assert_array_equal(batch.entry_positions[1], [0, 1, -1, -1, -1, -1, -1, -1])
    np.testing.assert_array_equal(batch.places[0, 5], [7, 1, 9])  # sample 7, position 1, token 9


def test_pooled_entries_are_samples():
    batch = build_batch(ROWS, SAMPLES, KEEP, row_length=8, max_per_row=2, mode="mean")
    np.testing.assert_array_equal(batch.stored, [[1, 1], [1, 0]])
    assert (batch.labels == -1).all() and (batch.entry_positions == -1).all()
    np.testing.assert_array_equal(batch.places[..., 0], [[3, 7], [9, -1]])


@pytest.mark.parametrize("mode", ["last", "mean"])
def test_pooling_weights_select_the_kept_tokens_of_each_sample(mode):
    weights = build_batch(ROWS, SAMPLES, KEEP, row_length=8, max_per_row=2, mode=mode).weights
    assert weights.shape == (2, 2, 8)
    if mode == "last":
        np.testing.assert_array_equal(np.argmax(weights[0], axis=1), [3, 5])  # 7 is sample 3's last kept, 9 is 7's
    else:
        np.testing.assert_allclose(weights[0, 0], [0, 1 / 3, 1 / 3, 1 / 3, 0, 0, 0, 0])
        np.testing.assert_allclose(weights[0, 1], [0, 0, 0, 0, 0.5, 0.5, 0, 0])
    np.testing.assert_allclose(weights.sum(-1), [[1, 1], [1, 0]])


def gathered(rows, mode: str, acts: dict, blocks: int = 1, capacity: int | None = None):
    """The stored records of these rows as the runner makes them: take indices from the host,
    the gather on the device (one CPU device: one block; `blocks` > 1: the rows split as that
    many devices would hold them, gathered block by block), views of its output per block."""
    next(iter(acts.values())).shape[2]
    batch = build_batch(rows, SAMPLES, KEEP, row_length=8, max_per_row=2, mode=mode, blocks=blocks, capacity=capacity)
    assert all(e.take.dtype == np.int32 for e in batch.entries)
    mesh = Mesh(np.array(jax.devices()[:1]).reshape(1, 1), ("data", "model"))
    gather = Gather(mesh)
    per_block = len(rows) // blocks
    parts = []
    for b, entries in enumerate(batch.entries):
        block = {site: a[:, b * per_block : (b + 1) * per_block] for site, a in acts.items()}
        out = gather(block, batch.take[b : b + 1])
        assert all(x.shape[:3] == (a.shape[0], 1, batch.take.shape[1]) for x, a in zip(out.values(), acts.values()))
        parts.append(entries.records(host_parts(out, {0: len(entries)})[0]))
    samples = {i: m for e in batch.entries for i, m in e.samples.items()}
    return joined(parts), samples, batch


def joined(parts: list[TokenRecords]) -> TokenRecords:
    """A unit's parts end to end, as the writer stores them."""
    sites = parts[0].activations
    activations = {site: np.concatenate([p.activations[site] for p in parts], axis=1) for site in sites}
    columns = {name: np.concatenate([getattr(p, name) for p in parts]) for name in parts[0].columns()}
    return TokenRecords.of(activations, **columns)


def test_all_keeps_the_kept_tokens_with_their_index_columns():
    acts = np.arange(3 * 2 * 8 * 4, dtype=np.float32).reshape(3, 2, 8, 4)  # [L, R, T, D]
    heads = np.arange(3 * 2 * 8 * 6, dtype=np.float32).reshape(3, 2, 8, 2, 3)  # [L, R, T, N, H]
    records, samples, _ = gathered(ROWS, "all", {"resid_post": acts, "attn_z": heads})
    np.testing.assert_array_equal(records.sample_index, [3, 3, 3, 7, 7, 9, 9])
    np.testing.assert_array_equal(records.position, [1, 2, 3, 0, 1, 0, 1])
    np.testing.assert_array_equal(records.token_ids, [5, 6, 7, 8, 9, 10, 11])
    np.testing.assert_array_equal(records.segment, [1, 1, 2, 0, 0, 0, 0])
    np.testing.assert_array_equal(
        records.activations["resid_post"], acts[:, [0, 0, 0, 0, 0, 1, 1], [1, 2, 3, 4, 5, 0, 1]]
    )
    np.testing.assert_array_equal(records.activations["attn_z"], heads[:, [0, 0, 0, 0, 0, 1, 1], [1, 2, 3, 4, 5, 0, 1]])
    np.testing.assert_array_equal(records.cell[:3], GRID_CELLS[1:])
    assert (records.cell[3:] == -1).all() and records.cell.shape == (7, 3)
    assert samples == {3: {"id": 3}, 7: {"id": 7}, 9: {"id": 9}}


def test_blocks_and_spare_capacity_store_the_same_entries():
    acts = {"resid_post": np.random.default_rng(1).normal(size=(2, 2, 8, 4)).astype(np.float32)}
    whole, _, batch = gathered(ROWS, "all", acts)
    assert batch.take.shape == (1, 7)  # capacity: exactly what the one block stores
    for blocks, capacity in ((1, 16), (2, 8)):
        split, _, batch = gathered(ROWS, "all", acts, blocks, capacity)
        assert batch.take.shape == (blocks, capacity)
        assert [len(e) for e in batch.entries] == ([7] if blocks == 1 else [5, 2])
        np.testing.assert_array_equal(split.activations["resid_post"], whole.activations["resid_post"])
        np.testing.assert_array_equal(split.sample_index, whole.sample_index)


def test_a_capacity_too_small_is_refused():
    with pytest.raises(ValueError, match="7 entries do not fit the capacity 6"):
        build_batch(ROWS, SAMPLES, KEEP, row_length=8, max_per_row=2, mode="all", capacity=6)


def test_pooled_modes_keep_one_vector_per_sample():
    acts = np.random.default_rng(0).normal(size=(2, 2, 2, 4)).astype(np.float32)  # [L, R, K, D]
    last, _, batch = gathered(ROWS, "last", {"resid_post": acts})
    assert batch.take.shape == (1, 3)  # the empty slot of row 1 never leaves the device
    np.testing.assert_array_equal(last.sample_index, [3, 7, 9])
    np.testing.assert_array_equal(last.position, [3, 1, 1])
    np.testing.assert_array_equal(last.token_ids, [7, 9, 11])
    np.testing.assert_array_equal(last.activations["resid_post"], acts[:, [0, 0, 1], [0, 1, 0]])
    mean, _, _ = gathered(ROWS, "mean", {"resid_post": acts})
    assert (mean.position == -1).all() and (mean.token_ids == -1).all() and (mean.segment == -1).all()
    assert mean.cell.shape == (3, 3) and (mean.cell == -1).all()
    np.testing.assert_array_equal(last.cell[0], [-1, -1, -1])  # sample 3's last kept token (7) is no grid cell


def test_padding_rows_store_nothing():
    records, samples, _batch = gathered([(), ()], "all", {"resid_post": np.zeros((1, 2, 8, 4), np.float32)}, capacity=8)
    assert records.activations["resid_post"].shape == (1, 0, 4) and len(records.sample_index) == 0
    assert records.cell.shape == (0, 3) and samples == {}
