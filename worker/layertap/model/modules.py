"""The Qwen2 building blocks in Flax linen: RMSNorm, rotary embedding, attention, MLP, block.

Why linen rather than NNX: the extraction step is a pure function `(params, batch) -> taps`
that a jitted, sharded step takes as an argument. Linen's parameters already are that
pytree (a nested dict of arrays, filled straight from safetensors), with no split/merge
of stateful objects. Kernels keep their head structure (`[D, N, H]`), so the model axis
of a mesh can shard heads without reshapes.

Shape letters: B batch, T query positions, S key positions, D hidden, N query heads,
K key/value heads, G query heads per KV head (N = K * G), H head width, F MLP width.
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from layertap.model.config import Qwen2Config

Dtype = Any


def dot_precision(dtype: Dtype) -> jax.lax.Precision:
    """float32 compute means float32 dots everywhere (TPUs default to bfloat16 passes)."""
    return jax.lax.Precision.HIGHEST if jnp.dtype(dtype) == jnp.float32 else jax.lax.Precision.DEFAULT


class RMSNorm(nn.Module):
    """Hugging Face's Qwen2RMSNorm: normalise in float32, scale in the compute dtype."""

    eps: float
    dtype: Dtype

    @nn.compact
    def __call__(self, x_btd: jax.Array) -> jax.Array:
        scale_d = self.param("scale", nn.initializers.ones, (x_btd.shape[-1],))
        x32_btd = x_btd.astype(jnp.float32)
        normed_btd = x32_btd * jax.lax.rsqrt(jnp.mean(x32_btd * x32_btd, axis=-1, keepdims=True) + self.eps)
        return scale_d.astype(self.dtype) * normed_btd.astype(self.dtype)


def rotary_cos_sin(positions_bt: jax.Array, head_dim: int, theta: float, dtype: Dtype) -> tuple[jax.Array, jax.Array]:
    """cos and sin [B, T, H] of the rotary angles, computed in float32 as HF does."""
    inv_freq = 1.0 / (theta ** (jnp.arange(0, head_dim, 2, dtype=jnp.float32) / head_dim))
    angles_bth = positions_bt.astype(jnp.float32)[..., None] * inv_freq
    angles_bth = jnp.concatenate([angles_bth, angles_bth], axis=-1)
    return jnp.cos(angles_bth).astype(dtype), jnp.sin(angles_bth).astype(dtype)


def apply_rotary(x_btnh: jax.Array, cos_bth: jax.Array, sin_bth: jax.Array) -> jax.Array:
    """Rotate pairs (i, i + H/2), HF's `rotate_half` convention."""
    first, second = jnp.split(x_btnh, 2, axis=-1)
    rotated_btnh = jnp.concatenate([-second, first], axis=-1)
    return x_btnh * cos_bth[:, :, None, :] + rotated_btnh * sin_bth[:, :, None, :]


def attention_mask(segment_ids_bt: jax.Array) -> jax.Array:
    """[B, T, S] True where query t may attend key s: same segment and s <= t.

    Padding (segment 0) attends only to padding, so no row is empty and nothing is NaN.
    """
    length = segment_ids_bt.shape[1]
    same_segment_bts = segment_ids_bt[:, :, None] == segment_ids_bt[:, None, :]
    causal_ts = jnp.tril(jnp.ones((length, length), dtype=bool))
    return same_segment_bts & causal_ts


class Attention(nn.Module):
    """Grouped-query self-attention with q/k/v biases and rotary positions."""

    config: Qwen2Config
    dtype: Dtype

    @nn.compact
    def __call__(self, x_btd: jax.Array, cos_bth: jax.Array, sin_bth: jax.Array, mask_bts: jax.Array) -> jax.Array:
        cfg = self.config
        d, n, k, h = cfg.hidden_size, cfg.num_attention_heads, cfg.num_key_value_heads, cfg.head_dim
        g = cfg.queries_per_kv_head
        precision = dot_precision(self.dtype)

        def project(name: str, heads: int) -> jax.Array:
            kernel = self.param(f"{name}_kernel", nn.initializers.lecun_normal(), (d, heads, h)).astype(self.dtype)
            bias = self.param(f"{name}_bias", nn.initializers.zeros, (heads, h)).astype(self.dtype)
            return jnp.einsum("btd,dnh->btnh", x_btd, kernel, precision=precision) + bias

        q_btnh = apply_rotary(project("q", n), cos_bth, sin_bth)
        k_bskh = apply_rotary(project("k", k), cos_bth, sin_bth)
        v_bskh = project("v", k)

        # Scale queries (T x H values) rather than logits (T x S values).
        q_btkgh = (q_btnh * jnp.asarray(h**-0.5, self.dtype)).reshape(*q_btnh.shape[:2], k, g, h)
        logits_bkgts = jnp.einsum(
            "btkgh,bskh->bkgts", q_btkgh, k_bskh, precision=precision, preferred_element_type=jnp.float32
        )
        logits_bkgts = jnp.where(mask_bts[:, None, None], logits_bkgts, jnp.finfo(jnp.float32).min)
        probs_bkgts = jax.nn.softmax(logits_bkgts, axis=-1).astype(self.dtype)
        out_btkgh = jnp.einsum("bkgts,bskh->btkgh", probs_bkgts, v_bskh, precision=precision)

        o_kernel = self.param("o_kernel", nn.initializers.lecun_normal(), (n, h, d)).astype(self.dtype)
        out_btnh = out_btkgh.reshape(*out_btkgh.shape[:2], n, h)
        return jnp.einsum("btnh,nhd->btd", out_btnh, o_kernel, precision=precision)


class MLP(nn.Module):
    """SwiGLU feed-forward: down(silu(gate(x)) * up(x))."""

    config: Qwen2Config
    dtype: Dtype

    @nn.compact
    def __call__(self, x_btd: jax.Array) -> jax.Array:
        d, f = self.config.hidden_size, self.config.intermediate_size
        precision = dot_precision(self.dtype)
        gate_df = self.param("gate_kernel", nn.initializers.lecun_normal(), (d, f)).astype(self.dtype)
        up_df = self.param("up_kernel", nn.initializers.lecun_normal(), (d, f)).astype(self.dtype)
        down_fd = self.param("down_kernel", nn.initializers.lecun_normal(), (f, d)).astype(self.dtype)
        gate_btf = jnp.einsum("btd,df->btf", x_btd, gate_df, precision=precision)
        up_btf = jnp.einsum("btd,df->btf", x_btd, up_df, precision=precision)
        return jnp.einsum("btf,fd->btd", jax.nn.silu(gate_btf) * up_btf, down_fd, precision=precision)


class DecoderBlock(nn.Module):
    """Pre-norm residual block: x + attn(norm(x)), then + mlp(norm(.))."""

    config: Qwen2Config
    dtype: Dtype

    @nn.compact
    def __call__(self, x_btd: jax.Array, cos_bth: jax.Array, sin_bth: jax.Array, mask_bts: jax.Array) -> jax.Array:
        eps = self.config.rms_norm_eps
        attn_in_btd = RMSNorm(eps, self.dtype, name="input_layernorm")(x_btd)
        x_btd = x_btd + Attention(self.config, self.dtype, name="self_attn")(attn_in_btd, cos_bth, sin_bth, mask_bts)
        mlp_in_btd = RMSNorm(eps, self.dtype, name="post_attention_layernorm")(x_btd)
        return x_btd + MLP(self.config, self.dtype, name="mlp")(mlp_in_btd)
