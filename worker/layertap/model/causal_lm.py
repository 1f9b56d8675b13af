"""The whole decoder for generation: decoder blocks with a KV cache, the final norm and
the LM head. Extraction (`transformer.Decoder`) shares its blocks and parameter names
and never builds this: only generation reads the head.
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

from layertap.model.config import DecoderConfig
from layertap.model.modules import DecoderBlock, Dtype, LayerCache, RMSNorm, dot_precision, rotary_cos_sin
from layertap.model.tap import LayerTap


class CausalLM(nn.Module):
    """Tokens in, next-token logits out, one row position at a time, the cache carried along.

    `prefill` runs a right-padded prompt batch from slot 0 and returns the logits after each
    row's last prompt token; `decode` runs one token per row at that row's position. Both
    return the blocks' new caches. With a `tap`, the blocks sow its sites into the `taps`
    collection as extraction's do (apply with mutable=["taps"]; `LayerTap.collect` stacks
    them). Logits are float32 and computed for one position per row only (a [B, T, V] tensor
    would dwarf the rest at Qwen's vocabulary).
    """

    config: DecoderConfig
    dtype: Dtype = jnp.float32
    tap: LayerTap | None = None

    def setup(self) -> None:
        cfg = self.config
        self.embed_tokens = self.param("embed_tokens", nn.initializers.normal(0.02), (cfg.vocab_size, cfg.hidden_size))
        tap = self.tap
        self.layers = [
            DecoderBlock(cfg, self.dtype, tap.sites_at(layer) if tap else frozenset())
            for layer in range(cfg.num_hidden_layers)
        ]
        self.norm = RMSNorm(cfg.rms_norm_eps, self.dtype)
        if not cfg.tie_word_embeddings:
            self.lm_head = self.param("lm_head", nn.initializers.normal(0.02), (cfg.hidden_size, cfg.vocab_size))

    def prefill(
        self, token_ids_bt: jax.Array, length_b: jax.Array, caches: tuple[LayerCache, ...]
    ) -> tuple[jax.Array, tuple[LayerCache, ...]]:
        """Prompts of `length_b` tokens (the rest of each row is padding)."""
        batch, length = token_ids_bt.shape
        positions_bt = jnp.broadcast_to(jnp.arange(length, dtype=jnp.int32), (batch, length))
        segment_ids_bt = (positions_bt < length_b[:, None]).astype(jnp.int32)  # padding: segment 0
        x_btd, caches = self._blocks(token_ids_bt, positions_bt, segment_ids_bt, caches, prefill=True)
        last_bd = x_btd[jnp.arange(batch), length_b - 1]
        return self._logits(last_bd), caches

    def decode(
        self, token_b: jax.Array, position_b: jax.Array, caches: tuple[LayerCache, ...]
    ) -> tuple[jax.Array, tuple[LayerCache, ...]]:
        """One token per row, at that row's position (its slot in the cache)."""
        x_btd, caches = self._blocks(
            token_b[:, None], position_b[:, None], jnp.ones_like(token_b)[:, None], caches, prefill=False
        )
        return self._logits(x_btd[:, 0]), caches

    def _blocks(self, token_ids_bt, positions_bt, segment_ids_bt, caches, prefill: bool):
        cfg = self.config
        x_btd = jnp.take(self.embed_tokens.astype(self.dtype), token_ids_bt, axis=0)
        cos_bth, sin_bth = rotary_cos_sin(positions_bt, cfg, self.dtype)
        new_caches = []
        for block, cache in zip(self.layers, caches, strict=True):
            x_btd, cache = block(x_btd, cos_bth, sin_bth, segment_ids_bt, cache, positions_bt, prefill)
            new_caches.append(cache)
        return x_btd, tuple(new_caches)

    def _logits(self, x_bd: jax.Array) -> jax.Array:
        h_bd = self.norm(x_bd)
        precision = dot_precision(self.dtype)
        if self.config.tie_word_embeddings:
            head = self.embed_tokens.astype(self.dtype)
            return jnp.einsum("bd,vd->bv", h_bd, head, precision=precision, preferred_element_type=jnp.float32)
        head = self.lm_head.astype(self.dtype)
        return jnp.einsum("bd,dv->bv", h_bd, head, precision=precision, preferred_element_type=jnp.float32)


def empty_caches(config: DecoderConfig, batch: int, size: int, dtype: Dtype) -> tuple[LayerCache, ...]:
    """One zeroed cache of `size` slots per block."""
    return tuple(LayerCache.zeros(config, batch, size, dtype) for _ in range(config.num_hidden_layers))
