"""Running statistics of what a step stores, computed on device, one partial per row.

The constants (bins, thresholds) live with the merge, in `layertap.store.statistics`.

Each step reduces its activations over the positions of every packed row, keeping the row
axis (sharded over the data axis like the activations), so that each process holds the
partial statistics of exactly the rows it stores. The host merges them into its unit's
statistics (`layertap.store.statistics`), which are committed with the unit's shard: a
unit's statistics count once however often the run restarts, across any number of hosts.

Per row, layer and site (x: one stored token's values, flattened to W):
  count, mean [W], m2 [W] (sum of squared deviations: Chan's parallel merge is exact),
  absmax [W], extreme [W] (tokens with |x_d| > EXTREME x the token's RMS),
  a histogram of token norms over log-spaced bins, norm sums by segment label and by
  position bucket (0, 1, 2-3, 4-7, ...), and the TOP_TOKENS largest norms with their place.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from layertap.store.statistics import (
    BINS_PER_OCTAVE,
    EXTREME,
    MIN_EXPONENT,
    NORM_BINS,
    POSITION_BUCKETS,
    SEGMENT_LABELS,
    TOP_TOKENS,
)


def row_statistics(
    x_lrw_: jax.Array, stored_rw: jax.Array, labels_rw: jax.Array, positions_rw: jax.Array
) -> dict[str, jax.Array]:
    """Partial statistics per layer and row of one site's activations [L, R, W, ...] (W: the
    row's positions, or its pooled samples), over the entries where `stored_rw` is 1."""
    L, R, W = x_lrw_.shape[:3]
    x = x_lrw_.reshape(L, R, W, -1).astype(jnp.float32)
    m = stored_rw.astype(jnp.float32)
    hp = jax.lax.Precision.HIGHEST
    count_r = m.sum(axis=1)
    mean_lrd = jnp.einsum("lrwd,rw->lrd", x, m, precision=hp) / jnp.maximum(count_r, 1)[None, :, None]
    deviation = x - mean_lrd[:, :, None]
    m2_lrd = jnp.einsum("lrwd,rw->lrd", deviation * deviation, m, precision=hp)
    absmax_lrd = jnp.max(jnp.where(m[None, :, :, None] > 0, jnp.abs(x), 0.0), axis=2)
    norm_lrw = jnp.sqrt(jnp.sum(x * x, axis=-1))
    rms_lrw = norm_lrw / jnp.sqrt(x.shape[-1])
    extreme_lrd = jnp.einsum(
        "lrwd,rw->lrd", (jnp.abs(x) > EXTREME * rms_lrw[..., None]).astype(jnp.float32), m, precision=hp
    )

    bins_lrw = jnp.clip(
        jnp.floor((jnp.log2(jnp.maximum(norm_lrw, 1e-30)) - MIN_EXPONENT) * BINS_PER_OCTAVE).astype(jnp.int32) + 1,
        0,
        NORM_BINS - 1,
    )
    segment_rw = jnp.clip(labels_rw, 0, SEGMENT_LABELS - 1)
    # bucket b holds positions [2^(b-1), 2^b): the bit length of the position
    bucket_rw = jnp.clip(32 - jax.lax.clz(jnp.maximum(positions_rw, 0).astype(jnp.int32)), 0, POSITION_BUCKETS - 1)
    has_label = m * (labels_rw >= 0)
    has_position = m * (positions_rw >= 0)
    masked_norm = jnp.where(m[None] > 0, norm_lrw, -1.0)
    # a sort along the positions, not lax.top_k: the partitioner gathers top_k's rows across
    # devices, while a sort keeps each device's rows where they are
    top_index = jnp.argsort(-masked_norm, axis=-1, stable=True)[..., : min(TOP_TOKENS, W)].astype(jnp.int32)
    top_norm = jnp.take_along_axis(masked_norm, top_index, axis=-1)
    return {
        "count": jnp.broadcast_to(count_r, (L, R)),
        "mean": mean_lrd,
        "m2": m2_lrd,
        "absmax": absmax_lrd,
        "extreme": extreme_lrd,
        "norm_hist": _counts(bins_lrw, m[None] * jnp.ones_like(norm_lrw), NORM_BINS),
        "norm_sum": jnp.einsum("lrw,rw->lr", norm_lrw, m, precision=hp),
        "norm_sumsq": jnp.einsum("lrw,rw->lr", norm_lrw * norm_lrw, m, precision=hp),
        "segment_count": _counts(
            jnp.broadcast_to(segment_rw, norm_lrw.shape), jnp.broadcast_to(has_label, norm_lrw.shape), SEGMENT_LABELS
        ),
        "segment_sum": _counts(jnp.broadcast_to(segment_rw, norm_lrw.shape), has_label * norm_lrw, SEGMENT_LABELS),
        "segment_sumsq": _counts(jnp.broadcast_to(segment_rw, norm_lrw.shape), has_label * norm_lrw**2, SEGMENT_LABELS),
        "position_count": _counts(
            jnp.broadcast_to(bucket_rw, norm_lrw.shape),
            jnp.broadcast_to(has_position, norm_lrw.shape),
            POSITION_BUCKETS,
        ),
        "position_sum": _counts(jnp.broadcast_to(bucket_rw, norm_lrw.shape), has_position * norm_lrw, POSITION_BUCKETS),
        "position_sumsq": _counts(
            jnp.broadcast_to(bucket_rw, norm_lrw.shape), has_position * norm_lrw**2, POSITION_BUCKETS
        ),
        "top_norm": top_norm,
        "top_index": top_index,
    }


def _counts(index_lrw: jax.Array, weight_lrw: jax.Array, size: int) -> jax.Array:
    """[L, R, size]: the weights summed by index, per layer and row: a scatter-add batched
    over (layer, row), not a one-hot ([L, R, W, size] would dwarf the activations), and not
    one flat scatter, which would mix the rows of every device and make the partitioner
    gather them across hosts in every step."""

    def row(index_w: jax.Array, weight_w: jax.Array) -> jax.Array:
        return jnp.zeros(size, jnp.float32).at[index_w].add(weight_w)

    return jax.vmap(jax.vmap(row))(index_lrw, weight_lrw)
