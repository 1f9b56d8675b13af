"""The decoder's building blocks in Flax linen: RMSNorm, rotary embedding, attention, MLP,
block; Qwen2, and Qwen3 and Llama 3 where their configs say how they differ.

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
import flax.struct
import jax
import jax.numpy as jnp

from layertap.model.attention import packed_causal_attention
from layertap.model.config import DecoderConfig

Dtype = Any


def sow_site(module: nn.Module, site: str, value: jax.Array) -> None:
    """Keep `value` in the `taps` collection as `site` (LayerTap.collect reads it back)."""
    module.sow("taps", site, value, init_fn=lambda: None, reduce_fn=lambda _, new: new)


def dot_precision(dtype: Dtype) -> jax.lax.Precision:
    """float32 compute means float32 dots everywhere (TPUs default to bfloat16 passes)."""
    return jax.lax.Precision.HIGHEST if jnp.dtype(dtype) == jnp.float32 else jax.lax.Precision.DEFAULT


def contract(spec: str, x: jax.Array, kernel: jax.Array, precision: jax.lax.Precision) -> jax.Array:
    """einsum accumulated in float32 and rounded to x's dtype, as torch's bfloat16 linear does.

    Asking for the float32 result is also what makes bfloat16 fast on CPU: XLA's CPU backend
    runs bf16 x bf16 -> f32 dots on the CPU's bf16 instructions (1.7x its float32 dots on
    Zen 4, benchmarks/bench_cpu_dots.py), but computes a bf16 -> bf16 dot in float32 at float32 speed, plus conversions.
    """
    out = jnp.einsum(spec, x, kernel, precision=precision, preferred_element_type=jnp.float32)
    return out.astype(x.dtype)


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


def rotary_inv_freq(config: DecoderConfig) -> jax.Array:
    """[H/2] rotary frequencies in float32, as HF computes them (default, or llama3 scaling:
    long wavelengths slowed by `factor`, short ones kept, a smooth blend between)."""
    h = config.head_dim
    inv_freq = 1.0 / (config.rope_theta ** (jnp.arange(0, h, 2, dtype=jnp.float32) / h))
    if config.rope_type == "default":
        return inv_freq
    old_context = config.rope_original_max_positions
    low_wavelen, high_wavelen = old_context / config.rope_low_freq_factor, old_context / config.rope_high_freq_factor
    wavelen = 2 * jnp.pi / inv_freq
    scaled = jnp.where(wavelen > low_wavelen, inv_freq / config.rope_factor, inv_freq)
    smooth = (old_context / wavelen - config.rope_low_freq_factor) / (
        config.rope_high_freq_factor - config.rope_low_freq_factor
    )
    smoothed = (1 - smooth) * scaled / config.rope_factor + smooth * scaled
    medium = (wavelen >= high_wavelen) & (wavelen <= low_wavelen)
    return jnp.where(medium, smoothed, scaled)


def rotary_cos_sin(positions_bt: jax.Array, config: DecoderConfig, dtype: Dtype) -> tuple[jax.Array, jax.Array]:
    """cos and sin [B, T, H] of the rotary angles, computed in float32 as HF does."""
    angles_bth = positions_bt.astype(jnp.float32)[..., None] * rotary_inv_freq(config)
    angles_bth = jnp.concatenate([angles_bth, angles_bth], axis=-1)
    return jnp.cos(angles_bth).astype(dtype), jnp.sin(angles_bth).astype(dtype)


def apply_rotary(x_btnh: jax.Array, cos_bth: jax.Array, sin_bth: jax.Array) -> jax.Array:
    """Rotate pairs (i, i + H/2), HF's `rotate_half` convention."""
    first, second = jnp.split(x_btnh, 2, axis=-1)
    rotated_btnh = jnp.concatenate([-second, first], axis=-1)
    return x_btnh * cos_bth[:, :, None, :] + rotated_btnh * sin_bth[:, :, None, :]


@flax.struct.dataclass
class LayerCache:
    """One block's keys and values for generation, [B, K, S, H] each (S: the cache size).

    Slot s holds position s of the row's sequence: the prompt from slot 0, then each
    generated token. Slots past a row's current position hold stale values that the mask
    hides (a short prompt's padding slots are overwritten by its generated tokens).
    """

    k_bksh: jax.Array
    v_bksh: jax.Array

    @classmethod
    def zeros(cls, config: DecoderConfig, batch: int, size: int, dtype: Dtype) -> LayerCache:
        shape = (batch, config.num_key_value_heads, size, config.head_dim)
        return cls(jnp.zeros(shape, dtype), jnp.zeros(shape, dtype))

    def written(self, k_btkh: jax.Array, v_btkh: jax.Array, start_b: jax.Array) -> LayerCache:
        """The cache with row b's T new keys/values written at slots [start_b, start_b + T)."""

        def write(cache_ksh: jax.Array, new_tkh: jax.Array, start: jax.Array) -> jax.Array:
            return jax.lax.dynamic_update_slice(
                cache_ksh, new_tkh.transpose(1, 0, 2).astype(cache_ksh.dtype), (0, start, 0)
            )

        return LayerCache(jax.vmap(write)(self.k_bksh, k_btkh, start_b), jax.vmap(write)(self.v_bksh, v_btkh, start_b))


def cached_attention(
    q_bktgh: jax.Array, cache: LayerCache, position_bt: jax.Array, precision: jax.lax.Precision
) -> jax.Array:
    """Queries at positions `position_bt` over the cache's slots 0..position (decode steps:
    T is 1, and every slot up to the position holds this row's own sequence)."""
    logits_bktgs = jnp.einsum(
        "bktgh,bksh->bktgs", q_bktgh, cache.k_bksh, precision=precision, preferred_element_type=jnp.float32
    )
    visible_bts = jnp.arange(cache.k_bksh.shape[2])[None, None, :] <= position_bt[:, :, None]
    logits_bktgs = jnp.where(visible_bts[:, None, :, None, :], logits_bktgs, jnp.finfo(jnp.float32).min)
    weights_bktgs = jax.nn.softmax(logits_bktgs, axis=-1)
    out_bktgh = jnp.einsum(
        "bktgs,bksh->bktgh",
        weights_bktgs.astype(cache.v_bksh.dtype),
        cache.v_bksh,
        precision=precision,
        preferred_element_type=jnp.float32,
    )
    return out_bktgh.astype(cache.v_bksh.dtype)


class Attention(nn.Module):
    """Grouped-query self-attention with q/k/v biases and rotary positions.

    Without a cache (extraction) it attends within the given tokens. With one (generation)
    it writes the tokens' keys and values at their positions and returns the new cache as
    well: a prefill (`prefill=True`, tokens from slot 0) attends within the prompt as
    extraction does; a decode step attends over the cache up to each row's position.
    """

    config: DecoderConfig
    dtype: Dtype
    capture_z: bool = False  # sow attn_z: each head's output before o_proj, [B, T, N, H]
    fused_projections: bool = False  # q, k and v in one dot (issue 30: measured per platform)

    @nn.compact
    def __call__(
        self,
        x_btd: jax.Array,
        cos_bth: jax.Array,
        sin_bth: jax.Array,
        segment_ids_bt: jax.Array,
        cache: LayerCache | None = None,
        positions_bt: jax.Array | None = None,
        prefill: bool = False,
    ) -> jax.Array | tuple[jax.Array, LayerCache]:
        cfg = self.config
        d, n, k, h = cfg.hidden_size, cfg.num_attention_heads, cfg.num_key_value_heads, cfg.head_dim
        g = cfg.queries_per_kv_head
        precision = dot_precision(self.dtype)

        def kernel(name: str, heads: int) -> jax.Array:
            return self.param(f"{name}_kernel", nn.initializers.lecun_normal(), (d, heads, h)).astype(self.dtype)

        def bias(name: str, heads: int) -> jax.Array:
            return self.param(f"{name}_bias", nn.initializers.zeros, (heads, h)).astype(self.dtype)

        if self.fused_projections:
            # One dot for q, k and v: kernels (and biases) stacked per KV head as [.., K, G + 2, H]
            # (that head's G query heads, its key, its value), so a mesh that shards K shards it too.
            def per_kv_head(parameter) -> jax.Array:
                q_, k_, v_ = parameter("q", n), parameter("k", k), parameter("v", k)
                q_ = q_.reshape(*q_.shape[:-2], k, g, h)
                return jnp.concatenate([q_, k_[..., None, :], v_[..., None, :]], axis=-2)

            qkv_btkjh = contract("btd,dkjh->btkjh", x_btd, per_kv_head(kernel), precision)
            if cfg.qkv_bias:
                qkv_btkjh = qkv_btkjh + per_kv_head(bias)
            q_btnh = qkv_btkjh[:, :, :, :g].reshape(*x_btd.shape[:2], n, h)
            k_btkh, v_btkh = qkv_btkjh[:, :, :, g], qkv_btkjh[:, :, :, g + 1]
        else:

            def project(name: str, heads: int) -> jax.Array:
                out_btnh = contract("btd,dnh->btnh", x_btd, kernel(name, heads), precision)
                return out_btnh + bias(name, heads) if cfg.qkv_bias else out_btnh

            q_btnh, k_btkh, v_btkh = project("q", n), project("k", k), project("v", k)
        if cfg.qk_norm:  # Qwen3: each head normalised before rotary
            q_btnh = RMSNorm(cfg.rms_norm_eps, self.dtype, name="q_norm")(q_btnh)
            k_btkh = RMSNorm(cfg.rms_norm_eps, self.dtype, name="k_norm")(k_btkh)
        q_btnh = apply_rotary(q_btnh, cos_bth, sin_bth)
        k_btkh = apply_rotary(k_btkh, cos_bth, sin_bth)

        # Scale queries (T x H values) rather than logits (T x S values). Query head
        # k * G + j shares KV head k, as in HF's repeat_kv.
        q_btnh = q_btnh * jnp.asarray(h**-0.5, self.dtype)
        q_bktgh = q_btnh.reshape(*q_btnh.shape[:2], k, g, h).transpose(0, 2, 1, 3, 4)
        if cache is not None:
            cache = cache.written(k_btkh, v_btkh, positions_bt[:, 0])
        if cache is None or prefill:
            out_bktgh = packed_causal_attention(  # per platform: attention.choose_implementation
                q_bktgh, k_btkh.transpose(0, 2, 1, 3), v_btkh.transpose(0, 2, 1, 3), segment_ids_bt, precision
            )
        else:
            out_bktgh = cached_attention(q_bktgh, cache, positions_bt, precision)
        if self.capture_z:  # query head k * G + g, as HF's o_proj input orders them
            sow_site(self, "attn_z", out_bktgh.transpose(0, 2, 1, 3, 4).reshape(*out_bktgh.shape[:1], -1, n, h))
        o_kernel = self.param("o_kernel", nn.initializers.lecun_normal(), (n, h, d)).astype(self.dtype)
        out_btd = contract("bktgh,kghd->btd", out_bktgh, o_kernel.reshape(k, g, h, d), precision)
        if cfg.o_bias:
            out_btd = out_btd + self.param("o_bias", nn.initializers.zeros, (d,)).astype(self.dtype)
        return out_btd if cache is None else (out_btd, cache)


class MLP(nn.Module):
    """SwiGLU feed-forward: down(silu(gate(x)) * up(x))."""

    config: DecoderConfig
    dtype: Dtype
    capture_hidden: bool = False  # sow mlp_hidden: silu(gate(x)) * up(x), [B, T, F]
    fused_projections: bool = False  # gate and up in one dot, their kernels stacked [D, 2, F]

    @nn.compact
    def __call__(self, x_btd: jax.Array) -> jax.Array:
        d, f = self.config.hidden_size, self.config.intermediate_size
        precision = dot_precision(self.dtype)
        gate_df = self.param("gate_kernel", nn.initializers.lecun_normal(), (d, f)).astype(self.dtype)
        up_df = self.param("up_kernel", nn.initializers.lecun_normal(), (d, f)).astype(self.dtype)
        down_fd = self.param("down_kernel", nn.initializers.lecun_normal(), (f, d)).astype(self.dtype)
        if self.fused_projections:
            both_btcf = contract("btd,dcf->btcf", x_btd, jnp.stack([gate_df, up_df], axis=1), precision)
            gate_btf, up_btf = both_btcf[:, :, 0], both_btcf[:, :, 1]
        else:
            gate_btf = contract("btd,df->btf", x_btd, gate_df, precision)
            up_btf = contract("btd,df->btf", x_btd, up_df, precision)
        hidden_btf = jax.nn.silu(gate_btf) * up_btf
        if self.capture_hidden:
            sow_site(self, "mlp_hidden", hidden_btf)
        return contract("btf,fd->btd", hidden_btf, down_fd, precision)


class DecoderBlock(nn.Module):
    """Pre-norm residual block: x + attn(norm(x)), then + mlp(norm(.)). With a cache
    (generation, see `Attention`) it returns the block's new cache as well.

    `sites` (extraction) are sown where the block computes them (`tap.py` names them);
    `stage` < 2 stops the block early (1: after attention, 0: before it), when nothing
    after that point is captured."""

    config: DecoderConfig
    dtype: Dtype
    sites: frozenset[str] = frozenset()
    stage: int = 2
    fused_projections: bool = False  # q/k/v and gate/up each in one dot (`Attention`, `MLP`)

    @nn.compact
    def __call__(
        self,
        x_btd: jax.Array,
        cos_bth: jax.Array,
        sin_bth: jax.Array,
        segment_ids_bt: jax.Array,
        cache: LayerCache | None = None,
        positions_bt: jax.Array | None = None,
        prefill: bool = False,
    ) -> jax.Array | tuple[jax.Array, LayerCache]:
        eps = self.config.rms_norm_eps
        self._capture("resid_pre", x_btd)
        if self.stage == 0:
            return x_btd
        attn_in_btd = RMSNorm(eps, self.dtype, name="input_layernorm")(x_btd)
        attended = Attention(
            self.config, self.dtype, "attn_z" in self.sites, fused_projections=self.fused_projections, name="self_attn"
        )(attn_in_btd, cos_bth, sin_bth, segment_ids_bt, cache, positions_bt, prefill)
        attn_out_btd, cache = attended if cache is not None else (attended, None)
        self._capture("attn_out", attn_out_btd)
        x_btd = x_btd + attn_out_btd
        self._capture("resid_mid", x_btd)
        if self.stage == 1:
            return x_btd
        mlp_in_btd = RMSNorm(eps, self.dtype, name="post_attention_layernorm")(x_btd)
        mlp_out_btd = MLP(
            self.config, self.dtype, "mlp_hidden" in self.sites, fused_projections=self.fused_projections, name="mlp"
        )(mlp_in_btd)
        self._capture("mlp_out", mlp_out_btd)
        x_btd = x_btd + mlp_out_btd
        self._capture("resid_post", x_btd)
        return x_btd if cache is None else (x_btd, cache)

    def _capture(self, site: str, value: jax.Array) -> None:
        if site in self.sites:
            sow_site(self, site, value)
