"""The extraction forward: a pure function from a batch to the tapped residual streams."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import jax
import jax.numpy as jnp

from layertap.model.config import DecoderConfig
from layertap.model.modules import Dtype
from layertap.model.tap import LayerTap
from layertap.model.transformer import Decoder

ExtractFn = Callable[[dict, jax.Array, jax.Array, jax.Array], dict[str, jax.Array]]


def make_extract_fn(
    config: DecoderConfig,
    layers: LayerTap | Sequence[int],
    compute_dtype: Dtype = jnp.float32,
    out_dtype: Dtype | None = None,
    fused_projections: bool = False,
) -> ExtractFn:
    """`(params, token_ids[B,T], positions[B,T], segment_ids[B,T]) -> {site: [len(layers), B, T, ...]}`.

    token_ids, positions and segment_ids are int32. segment_ids is 0 for padding and
    1, 2, ... for the sequences packed in a row; attention is causal within a segment and
    positions restart at 0 for each sequence. The output holds each of the tap's sites
    (`tap.py`; default resid_post only), its i-th entry taken at block `layers[i]`
    (resid_post is HF hidden_states[layers[i] + 1], before the final norm), of shape
    `site_shape` per token, in `out_dtype` (default: the compute dtype). `layers` is a
    LayerTap, or layer indices (resid_post) checked against the config. `fused_projections`
    runs q/k/v and gate/up each as one dot over stacked kernels (the same values; which is
    faster depends on the platform: benchmarks/gpu_forward.py measures both). The function
    is pure and not yet jitted, so the caller chooses shardings and donation.
    """
    tap = layers if isinstance(layers, LayerTap) else LayerTap.validated(layers, config.num_hidden_layers)
    compute_dtype = jnp.dtype(compute_dtype)
    if compute_dtype not in (jnp.float32, jnp.bfloat16):
        raise ValueError(f"compute dtype must be float32 or bfloat16, got {compute_dtype}")
    out_dtype = jnp.dtype(out_dtype or compute_dtype)
    decoder = Decoder(config, tap, compute_dtype, fused_projections=fused_projections)

    def extract(
        params: dict, token_ids_bt: jax.Array, positions_bt: jax.Array, segment_ids_bt: jax.Array
    ) -> dict[str, jax.Array]:
        _, sown = decoder.apply({"params": params}, token_ids_bt, positions_bt, segment_ids_bt, mutable=["taps"])
        return {site: taps.astype(out_dtype) for site, taps in tap.collect(sown["taps"]).items()}

    return extract
