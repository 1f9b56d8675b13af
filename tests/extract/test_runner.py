"""End to end on one process: what `layertap extract` stores equals a plain forward pass."""

from __future__ import annotations

import json

import jax.numpy as jnp
import numpy as np
import pytest

import layertap
from layertap.humanize import plural
from layertap.model import (
    load_checkpoint,
    load_tokenizer,
    make_extract_fn,
    special_token_ids,
)

from .conftest import TEXTS, extract

LAYERS = [1, 3]


@pytest.fixture(scope="module")
def reference(checkpoint):
    """sample index -> (token ids, kept mask, [L, T, D] activations of the sample run alone)."""
    config, params = load_checkpoint(checkpoint, jnp.float32)
    tokenizer = load_tokenizer(checkpoint)
    special = np.array(sorted(special_token_ids(tokenizer)))
    forward = make_extract_fn(config, LAYERS, jnp.float32)
    encoded = [np.asarray(tokenizer.encode(text, add_special_tokens=False), np.int32) for text in TEXTS]
    # One row per sample, right-padded with segment 0 (which real tokens never attend to):
    # each sample alone in its row, and one compile instead of one per length.
    width = max(map(len, encoded))
    token_ids = np.zeros((len(encoded), width), np.int32)
    segment_ids = np.zeros_like(token_ids)
    for row, ids in enumerate(encoded):
        token_ids[row, : len(ids)], segment_ids[row, : len(ids)] = ids, 1
    positions = np.broadcast_to(np.arange(width, dtype=np.int32), token_ids.shape)
    acts = np.asarray(forward(params, token_ids, positions, segment_ids)["resid_post"])
    return {index: (ids, ~np.isin(ids, special), acts[:, index, : len(ids)]) for index, ids in enumerate(encoded)}


def read_sorted(output, layer):
    """A layer's rows ordered by (sample, position): storage order is the plan's, not the dataset's."""
    batch = layertap.open(str(output)).read_layer(layer)
    order = np.lexsort((batch.position, batch.sample_index))
    return batch.activations[order], batch.token_ids[order], batch.sample_index[order], batch.position[order]


def test_all_positions_equal_each_sample_run_alone(checkpoint, dataset, tmp_path, reference):
    assert extract(checkpoint, dataset, tmp_path / "out", "--layers", "1,3", "--batch-size", "2") == 0
    for i, layer in enumerate(LAYERS):
        acts, token_ids, sample_index, position = read_sorted(tmp_path / "out", layer)
        expected_rows, expected_ids, expected_index, expected_pos = [], [], [], []
        for index, (ids, kept, ref) in reference.items():
            expected_rows.append(ref[i][kept])
            expected_ids.append(ids[kept])
            expected_index.append(np.full(kept.sum(), index))
            expected_pos.append(np.flatnonzero(kept))
        np.testing.assert_array_equal(sample_index, np.concatenate(expected_index))
        np.testing.assert_array_equal(position, np.concatenate(expected_pos))
        np.testing.assert_array_equal(token_ids, np.concatenate(expected_ids))
        expected = np.concatenate(expected_rows)
        rms = np.sqrt(np.mean(expected**2))
        np.testing.assert_allclose(acts, expected, atol=1e-5 * rms, rtol=0)


def test_special_tokens_are_excluded_unless_asked(checkpoint, dataset, tmp_path, reference):
    assert extract(checkpoint, dataset, tmp_path / "all", "--layers", "3", "--no-exclude-special-tokens") == 0
    stored = layertap.open(str(tmp_path / "all")).num_tokens
    assert stored == sum(len(ids) for ids, _, _ in reference.values())
    assert stored > sum(kept.sum() for _, kept, _ in reference.values())


@pytest.mark.parametrize("mode", ["last", "mean"])
def test_pooled_positions_equal_reference(checkpoint, dataset, tmp_path, reference, mode):
    assert extract(checkpoint, dataset, tmp_path / mode, "--layers", "1,3", "--positions", mode) == 0
    for i, layer in enumerate(LAYERS):
        acts, token_ids, sample_index, position = read_sorted(tmp_path / mode, layer)
        np.testing.assert_array_equal(sample_index, sorted(reference))
        for row, (_ids, kept, ref) in zip(acts, reference.values()):
            want = ref[i][kept][-1] if mode == "last" else ref[i][kept].mean(axis=0)
            np.testing.assert_allclose(row, want, atol=1e-5 * np.sqrt(np.mean(ref[i] ** 2)), rtol=0)
        if mode == "last":
            last = [np.flatnonzero(kept)[-1] for _, kept, _ in reference.values()]
            np.testing.assert_array_equal(position, last)
            np.testing.assert_array_equal(token_ids, [ids[p] for (ids, _, _), p in zip(reference.values(), last)])
        else:
            assert (position == -1).all() and (token_ids == -1).all()


def test_rerun_after_a_lost_commit_redoes_only_that_unit(checkpoint, dataset, tmp_path, capsys):
    """A crash before a shard's commit record lands: the rerun redoes that unit, nothing else."""
    flags = ("--layers", "2", "--batch-size", "1", "--shard-size-mb", "1")
    assert extract(checkpoint, dataset, tmp_path / "full", *flags) == 0
    assert extract(checkpoint, dataset, tmp_path / "out", *flags) == 0
    commits = sorted((tmp_path / "out" / "commits").rglob("*.json"))
    lost = json.loads(commits[-1].read_text())
    commits[-1].unlink()
    (tmp_path / "out" / "manifest.json").unlink()
    capsys.readouterr()

    assert extract(checkpoint, dataset, tmp_path / "out", *flags) == 0
    steps = {unit for unit, _, _ in lost["units"]}
    assert f"{plural(len(steps), 'step')} run" in capsys.readouterr().out
    for got, want in zip(read_sorted(tmp_path / "out", 2), read_sorted(tmp_path / "full", 2)):
        np.testing.assert_array_equal(got, want)

    capsys.readouterr()
    assert extract(checkpoint, dataset, tmp_path / "out", *flags) == 0
    out = capsys.readouterr().out
    assert "layertap extract: nothing left to run: the " in out and "steps were done already" in out
    assert "seconds per step" not in out  # had printed 0 tokens/s and 0.00 ms for every stage


def test_int8_storage_is_within_one_quantisation_step(checkpoint, dataset, tmp_path, reference):
    assert extract(checkpoint, dataset, tmp_path / "q", "--layers", "1,3", "--storage-dtype", "int8") == 0
    acts = read_sorted(tmp_path / "q", 3)[0]
    expected = np.concatenate([ref[1][kept] for _, kept, ref in reference.values()])
    step = np.abs(expected).max(axis=1, keepdims=True) / 127
    assert (np.abs(acts - expected) <= 0.5 * step + 1e-6).all()


def test_storage_dtype_and_default_layers(checkpoint, dataset, tmp_path):
    assert extract(checkpoint, dataset, tmp_path / "out", "--storage-dtype", "bfloat16", "--dtype", "bfloat16") == 0
    run = layertap.open(str(tmp_path / "out"))
    assert run.layers == [1, 2, 3]  # floor(10 * 4 / 24) = 1 .. 3: the upper part of a 4-layer model
    assert run.storage_dtype == "bfloat16"
    assert np.isfinite(run.read_layer(3).activations).all()
