"""The decoder up to the last tapped site: no final norm, no LM head."""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

from layertap.model.config import DecoderConfig
from layertap.model.modules import DecoderBlock, Dtype, rotary_cos_sin
from layertap.model.tap import LayerTap


class Decoder(nn.Module):
    """Token ids -> the residual stream after the last block run. What the tap asks for is
    sown into the `taps` collection (`LayerTap.collect` stacks it).

    Blocks are unrolled in Python, one per layer up to the last tapped one, and that one runs
    only as far as its sites need: the compiler sees straight-line code (no per-layer weight
    slicing as in a scan), and only the captured activations stay alive.
    """

    config: DecoderConfig
    tap: LayerTap
    dtype: Dtype = jnp.float32
    fused_projections: bool = False  # q/k/v and gate/up each in one dot (modules.Attention, MLP)

    @nn.compact
    def __call__(self, token_ids_bt: jax.Array, positions_bt: jax.Array, segment_ids_bt: jax.Array) -> jax.Array:
        cfg = self.config
        embedding_vd = self.param("embed_tokens", nn.initializers.normal(0.02), (cfg.vocab_size, cfg.hidden_size))
        x_btd = jnp.take(embedding_vd.astype(self.dtype), token_ids_bt, axis=0)
        cos_bth, sin_bth = rotary_cos_sin(positions_bt, cfg, self.dtype)
        for layer in range(max(self.tap.layers) + 1):
            block = DecoderBlock(
                cfg,
                self.dtype,
                self.tap.sites_at(layer),
                self.tap.stage(layer),
                fused_projections=self.fused_projections,
                name=f"layers_{layer}",
            )
            x_btd = block(x_btd, cos_bth, sin_bth, segment_ids_bt)
        return x_btd
