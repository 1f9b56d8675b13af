"""The Qwen2 decoder up to the last tapped layer: no final norm, no LM head."""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

from layertap.model.config import Qwen2Config
from layertap.model.modules import DecoderBlock, Dtype, rotary_cos_sin
from layertap.model.tap import LayerTap


class Qwen2Decoder(nn.Module):
    """Token ids -> the residual streams named by `tap`, [len(tap.layers), B, T, D].

    Blocks are unrolled in Python, one per layer up to the last tapped one: the compiler
    sees straight-line code (no per-layer weight slicing as in a scan), and only the
    tapped streams stay alive.
    """

    config: Qwen2Config
    tap: LayerTap
    dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, token_ids_bt: jax.Array, positions_bt: jax.Array, segment_ids_bt: jax.Array) -> jax.Array:
        cfg = self.config
        embedding_vd = self.param("embed_tokens", nn.initializers.normal(0.02), (cfg.vocab_size, cfg.hidden_size))
        x_btd = jnp.take(embedding_vd.astype(self.dtype), token_ids_bt, axis=0)
        cos_bth, sin_bth = rotary_cos_sin(positions_bt, cfg, self.dtype)

        taps: dict[int, jax.Array] = {}
        for layer in range(self.tap.blocks_to_run):
            x_btd = DecoderBlock(cfg, self.dtype, name=f"layers_{layer}")(x_btd, cos_bth, sin_bth, segment_ids_bt)
            self.tap.maybe_tap(layer, x_btd, taps)
        return self.tap.stack(taps)
