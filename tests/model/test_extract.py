"""The extraction forward against itself: packing, padding, layer subsets, where it stops."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from layertap.errors import LayerTapError
from layertap.model import make_extract_fn

from .conftest import random_ids

ALL = [0, 1, 2, 3]


def run(config, params, layers, token_ids, positions=None, segment_ids=None, **kwargs) -> np.ndarray:
    token_ids = np.atleast_2d(token_ids)
    positions = np.broadcast_to(np.arange(token_ids.shape[1]) if positions is None else positions, token_ids.shape)
    segment_ids = np.broadcast_to(1 if segment_ids is None else segment_ids, token_ids.shape)
    fn = jax.jit(make_extract_fn(config, layers, **kwargs))
    inputs = (jnp.asarray(a, jnp.int32) for a in (token_ids, positions, segment_ids))
    return np.asarray(fn(params, *inputs)["resid_post"])


def assert_close(actual, expected):
    """Same computation, different batch layout: equal up to float32 reassociation."""
    scale = np.sqrt(np.mean(np.square(expected)))
    np.testing.assert_allclose(actual, expected, rtol=0, atol=1e-5 * scale)


def test_shape_and_dtypes(tiny):
    config, params = tiny
    ids = random_ids(config.vocab_size, 3, 10)
    out = run(config, params, [1, 3], ids)
    assert out.shape == (2, 3, 10, config.hidden_size) and out.dtype == np.float32
    assert run(config, params, [1], ids, out_dtype=jnp.bfloat16).dtype == jnp.bfloat16


def test_packed_row_equals_sequences_run_alone(tiny):
    config, params = tiny
    lengths = [5, 9, 3]
    seqs = [random_ids(config.vocab_size, n, seed=i) for i, n in enumerate(lengths)]
    row = np.concatenate([*seqs, np.zeros(3, np.int32)])  # 3 tokens of padding at the end
    positions = np.concatenate([np.arange(n) for n in lengths] + [np.zeros(3, int)])
    segments = np.concatenate([np.full(n, i + 1) for i, n in enumerate(lengths)] + [np.zeros(3, int)])

    packed = run(config, params, ALL, row, positions, segments)[:, 0]
    start = 0
    for seq in seqs:
        alone = run(config, params, ALL, seq)[:, 0]
        assert_close(packed[:, start : start + len(seq)], alone)
        start += len(seq)


def test_packing_isolates_sequences(tiny):
    """Changing one packed sequence leaves its neighbours untouched (and does change itself)."""
    config, params = tiny
    row = random_ids(config.vocab_size, 12)
    segments = np.repeat([1, 2], 6)
    positions = np.tile(np.arange(6), 2)
    edited = row.copy()
    edited[2] = (row[2] + 1) % config.vocab_size
    a = run(config, params, ALL, row, positions, segments)
    b = run(config, params, ALL, edited, positions, segments)
    np.testing.assert_array_equal(a[:, :, 6:], b[:, :, 6:])
    assert not np.allclose(a[:, :, 2:6], b[:, :, 2:6])


def test_padding_does_not_change_real_tokens(tiny):
    config, params = tiny
    ids = random_ids(config.vocab_size, 7)
    alone = run(config, params, ALL, ids)
    # A batch of two rows: ours padded to 12 with arbitrary ids, and a longer neighbour.
    ours_padded = np.concatenate([ids, random_ids(config.vocab_size, 5, seed=9)])
    padded = np.stack([ours_padded, random_ids(config.vocab_size, 12, seed=3)])
    segments = np.stack([np.r_[np.ones(7), np.zeros(5)], np.ones(12)])
    out = run(config, params, ALL, padded, segment_ids=segments)
    assert np.isfinite(out).all()
    assert_close(out[:, :1, :7], alone)


def test_a_subset_of_layers_is_the_matching_slice(tiny):
    config, params = tiny
    ids = random_ids(config.vocab_size, 2, 8)
    every = run(config, params, ALL, ids)
    np.testing.assert_array_equal(run(config, params, [2, 0], ids), every[[2, 0]])
    np.testing.assert_array_equal(run(config, params, [1], ids), every[[1]])


def test_stops_after_the_last_requested_layer(tiny):
    """Layer 1 needs blocks 0-1 only: later blocks' params are not even read, no LM head is computed."""
    config, params = tiny
    ids = random_ids(config.vocab_size, 1, 8)
    first_two = {name: value for name, value in params.items() if name in ("embed_tokens", "layers_0", "layers_1")}
    np.testing.assert_array_equal(run(config, first_two, [1], ids), run(config, params, [1], ids))

    fn = make_extract_fn(config, [1])
    args = (jnp.zeros((1, 8), jnp.int32),) * 3
    jaxpr = jax.make_jaxpr(fn)(params, *args)
    dots = [eqn for eqn in jaxpr.eqns if eqn.primitive.name == "dot_general"]
    assert len(dots) == 2 * 9  # per block: q, k, v, o, gate, up, down + two attention products
    assert all(config.vocab_size not in v.aval.shape for eqn in dots for v in eqn.outvars)


def test_bfloat16_compute_is_close_to_float32(tiny_dir, tiny):
    from layertap.model import load_checkpoint

    config, params32 = tiny
    _, params16 = load_checkpoint(tiny_dir, jnp.bfloat16)
    ids = random_ids(config.vocab_size, 2, 16)
    exact = run(config, params32, ALL, ids)
    approx = run(config, params16, ALL, ids, compute_dtype=jnp.bfloat16, out_dtype=jnp.float32)
    rms = np.sqrt(np.mean(np.square(exact), axis=(1, 2, 3), keepdims=True))
    assert (np.abs(approx - exact) / rms).max() < 0.1


@pytest.mark.parametrize(
    ("layers", "message"),
    [
        ([4], r"\[4\] out of range; the model has 4 layers \(0-3\)"),
        ([-1], r"\[-1\] out of range"),
        ([1, 1], "duplicate"),
        ([], "at least one"),
    ],
)
def test_bad_layers_name_the_field(tiny, layers, message):
    config, _ = tiny
    with pytest.raises(LayerTapError, match=f"extraction.layers: {message}"):
        make_extract_fn(config, layers)
