"""The building blocks against straightforward reference formulas."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from layertap.model.attention import block_causal_attention
from layertap.model.config import DecoderConfig
from layertap.model.modules import apply_rotary, rotary_cos_sin

from .conftest import dense_attention

HIGHEST = jax.lax.Precision.HIGHEST


@pytest.mark.parametrize("block", [pytest.param(3, marks=pytest.mark.slow), 4, 5, 16, 64])
def test_blocked_attention_equals_dense_attention(block):
    rng = np.random.default_rng(block)
    b, t, k, g, h = 2, 16, 2, 3, 8
    q = rng.normal(size=(b, k, t, g, h)).astype(np.float32)
    kv = rng.normal(size=(2, b, k, t, h)).astype(np.float32)
    # Row 0: three packed sequences and trailing padding; row 1: one sequence.
    segments = np.array([[1] * 5 + [2] * 6 + [3] * 2 + [0] * 3, [1] * 16], np.int32)
    out = block_causal_attention(*map(jnp.asarray, (q, kv[0], kv[1], segments)), HIGHEST, block=block)
    np.testing.assert_allclose(np.asarray(out), dense_attention(q, kv[0], kv[1], segments), atol=1e-5)


def test_rotary_is_hf_rotate_half_with_inverse_frequencies():
    head_dim, theta = 8, 10_000.0
    positions = jnp.array([[0, 1, 7]], jnp.int32)
    config = DecoderConfig(
        vocab_size=8,
        hidden_size=16,
        intermediate_size=8,
        num_hidden_layers=1,
        num_attention_heads=2,
        num_key_value_heads=1,
        head_dim=head_dim,
        rope_theta=theta,
    )
    cos, sin = rotary_cos_sin(positions, config, jnp.float32)
    x = np.random.default_rng(0).normal(size=(1, 3, 2, head_dim)).astype(np.float32)
    out = np.asarray(apply_rotary(jnp.asarray(x), cos, sin))

    inv_freq = theta ** (-np.arange(0, head_dim, 2) / head_dim)
    for t, position in enumerate([0, 1, 7]):
        angle = position * inv_freq
        first, second = x[0, t, :, : head_dim // 2], x[0, t, :, head_dim // 2 :]
        expected = np.concatenate(
            [first * np.cos(angle) - second * np.sin(angle), second * np.cos(angle) + first * np.sin(angle)], -1
        )
        np.testing.assert_allclose(out[0, t], expected, atol=1e-5)
    np.testing.assert_array_equal(out[0, 0], x[0, 0])  # position 0 is not rotated
