"""Causal self-attention within packed segments: one interface, one implementation per platform.

`packed_causal_attention(q, k, v, segment_ids, precision, impl=None)` computes, for each row,
softmax(q k^T + mask) v where query t may attend key s when both are in the same segment
and s <= t (segment 0 is padding: it attends only to padding, so no row is all-masked and
nothing is NaN). Queries arrive pre-scaled by head_dim^-0.5. Layout: q [B, K, T, G, H], k and
v [B, K, S, H] (S = T), out [B, K, T, G, H]; query head k * G + g uses KV head k (HF's
repeat_kv order). Implementations:

- "xla": `block_causal_attention`, blocks of queries each against the keys up to its end,
  dots at `precision` (HIGHEST for float32). Runs everywhere; the CPU path.
- "cudnn": `jax.nn.dot_product_attention` with `is_causal=True` and a boolean [B, 1, T, S]
  same-segment mask (the public API has no segment ids; cuDNN receives the mask as an
  additive bias). Its `implementation` is "cudnn" where cuDNN can run it (a CUDA GPU and
  bfloat16/float16 operands), else "xla": the same call and the same mask through JAX's
  reference implementation (one pair of whole-sequence dots, at `precision` for float32),
  which is how CI checks this path without a GPU.
- "splash": Pallas splash attention (`jax.experimental.pallas.ops.tpu.splash_attention`),
  the GQA form of its MHA kernel (query head n reads KV head n // G) with a `CausalMask` and
  `SegmentIds`, vmapped over rows. T is padded to a multiple of 128 with segment 0 (the
  padded queries are dropped; causality keeps real queries off the padded keys); blocks of
  512, 256 or 128, the largest dividing the padded length. `custom_partitioning` runs it on
  each device's rows and KV heads under a sharded jit (a Pallas call is opaque to XLA's
  partitioner). Off TPU it runs in Pallas interpret mode (slow; for tests).

`choose_implementation` picks one: `$LAYERTAP_ATTENTION` ("xla", "cudnn", "splash") when set
(and not "auto"), else by backend and dtype: "cudnn" on a CUDA GPU (cuDNN's kernel for
bfloat16/float16; for float32, which cuDNN has no kernel for, JAX's reference attention
with HIGHEST-precision dots, as float32 parity with transformers needs), "splash" on a TPU
for bfloat16/float16, "xla" otherwise. The "xla" path is not offered on a CUDA GPU (forcing
it is a LayerTapError): its dot shapes grow with the length, one per query block, each
autotuned there; in bfloat16 it compiled for 65 s and ran at 0.72x transformers (issue 30).
"""

from __future__ import annotations

import functools
import os
from typing import Any

import jax
import jax.numpy as jnp

from layertap.errors import LayerTapError
from layertap_api.contract import ENV_ATTENTION

IMPLEMENTATIONS = ("xla", "cudnn", "splash")

# Queries per attention block: small enough that a block's logits stay in cache and few
# masked keys are multiplied, large enough for efficient matmuls. On 2 CPU cores at
# T=2048, blocks of 128 ran attention 1.5x faster than blocks of 512 (docs/benchmarks.md).
QUERY_BLOCK = 128

# Splash's sequence blocks: multiples of the TPU's 128 lanes (its segment-id masking
# requires it); the largest that divides the padded length is used.
SPLASH_LANES = 128
SPLASH_BLOCKS = (512, 256, 128)

_LOW_PRECISION = (jnp.dtype(jnp.bfloat16), jnp.dtype(jnp.float16))


def _on_cuda() -> bool:
    """A CUDA GPU is JAX's default backend (ROCm reports "gpu" too, but has no cuDNN)."""
    if jax.default_backend() != "gpu":
        return False
    version = str(getattr(getattr(jax.devices()[0], "client", None), "platform_version", "")).lower()
    return "rocm" not in version


def current_platform() -> str:
    """JAX's default backend, a GPU told apart by its runtime: "cpu", "cuda", "rocm" or "tpu"."""
    backend = jax.default_backend()
    if backend == "gpu":
        return "cuda" if _on_cuda() else "rocm"
    return backend


def choose_implementation(
    dtype: Any, head_dim: int, env: dict[str, str] | None = None, platform: str | None = None
) -> str:
    """The implementation `packed_causal_attention` runs by default (see the module docstring);
    `platform` (default `current_platform()`) as that function names it."""
    env = os.environ if env is None else env
    platform = current_platform() if platform is None else platform
    low_precision = jnp.dtype(dtype) in _LOW_PRECISION
    forced = env.get(ENV_ATTENTION, "").strip().lower()
    if forced and forced != "auto":
        if forced not in IMPLEMENTATIONS:
            raise LayerTapError(
                f"${ENV_ATTENTION}={env[ENV_ATTENTION]!r} is not an attention implementation; "
                f"use one of auto, {', '.join(IMPLEMENTATIONS)}"
            )
        if forced == "xla" and platform == "cuda":
            # Measured on an H200 (issue 30): the blocked path compiled for 65 s in bfloat16
            # (a dot shape per query block, each autotuned) and ran at 0.72x transformers.
            raise LayerTapError(
                f"${ENV_ATTENTION}=xla is not offered on a CUDA GPU: its blocked attention compiles "
                "for about a minute there and runs slower than cuDNN's fused kernel; unset "
                f"${ENV_ATTENTION} (or set auto, or cudnn) for cuDNN (float32: JAX's reference attention "
                "at HIGHEST precision)"
            )
        return forced
    if platform == "cuda" and (not low_precision or (head_dim % 8 == 0 and head_dim <= 128)):
        return "cudnn"
    if not low_precision:
        return "xla"
    if platform == "tpu":
        return "splash"
    return "xla"


def packed_causal_attention(
    q_bktgh: jax.Array,
    k_bksh: jax.Array,
    v_bksh: jax.Array,
    segment_ids_bt: jax.Array,
    precision: jax.lax.Precision,
    impl: str | None = None,
    *,
    interpret: Any = None,
) -> jax.Array:
    """Causal attention within the segments of packed rows; [B, K, T, G, H] out.

    `impl`: one of IMPLEMENTATIONS, or None for `choose_implementation`. `precision` applies
    to the "xla" path and to float32 on the "cudnn" path (the fused kernels choose their
    own). `interpret` (splash only): True, False or a `pltpu.InterpretParams`; None means
    interpret off TPU.
    """
    if impl is None:
        impl = choose_implementation(q_bktgh.dtype, q_bktgh.shape[-1])
    if impl == "xla":
        return block_causal_attention(q_bktgh, k_bksh, v_bksh, segment_ids_bt, precision)
    if impl == "cudnn":
        if jnp.dtype(q_bktgh.dtype) in _LOW_PRECISION:
            kernel = "cudnn" if _on_cuda() else "xla"
            return dot_product_attention(q_bktgh, k_bksh, v_bksh, segment_ids_bt, implementation=kernel)
        # float32: no cuDNN kernel; the reference path's dots at `precision` (a GPU's default
        # would be TensorFloat-32)
        with jax.default_matmul_precision(jax.lax.Precision(precision).name.lower()):
            return dot_product_attention(q_bktgh, k_bksh, v_bksh, segment_ids_bt, implementation="xla")
    if impl == "splash":
        if interpret is None:
            interpret = jax.default_backend() != "tpu"
        return splash_attention(q_bktgh, k_bksh, v_bksh, segment_ids_bt, interpret=interpret)
    raise ValueError(f"unknown attention implementation {impl!r}; expected one of {IMPLEMENTATIONS}")


# --- "xla": blocked attention in plain XLA ops ------------------------------------------------


def attention_mask(segment_ids_bt: jax.Array, t0: int, t1: int) -> jax.Array:
    """[B, t1 - t0, t1] True where query t in [t0, t1) may attend key s: same segment and s <= t.

    Padding (segment 0) attends only to padding, so no row is empty and nothing is NaN.
    """
    same_segment_bts = segment_ids_bt[:, t0:t1, None] == segment_ids_bt[:, None, :t1]
    causal_ts = jnp.arange(t0, t1)[:, None] >= jnp.arange(t1)[None, :]
    return same_segment_bts & causal_ts


def block_causal_attention(
    q_bktgh: jax.Array,
    k_bksh: jax.Array,
    v_bksh: jax.Array,
    segment_ids_bt: jax.Array,
    precision: jax.lax.Precision,
    block: int = QUERY_BLOCK,
) -> jax.Array:
    """softmax(q k^T + mask) v, causal within segments, one block of queries at a time.

    Queries [t0, t1) only need keys [0, t1), so later keys are never multiplied: about half
    the work of full causal attention at long T, and a block's logits stay small. (b, k)
    lead every operand so that each product is a plain batched matmul whose logits need no
    transpose; the [B, N, T, S] layout with a transposed result ran several times slower on
    XLA's CPU backend. The softmax denominator divides the [.., H] output rather than the
    [.., S] probabilities, and comes out of the same product: a column of ones appended to V
    sums the weights exactly as they multiply V (rounded to V's dtype, accumulated in
    float32). A separate sum over S made XLA's CPU backend evaluate the exponentials twice.
    With the mask as a bias as well, attention at T=1024-2048 runs 1.2-1.5x (float32) and
    1.6-1.8x (bfloat16) faster than with a select and a sum (benchmarks/bench_attention.py).
    Returns [B, K, T, G, H].
    """
    length, head_dim = q_bktgh.shape[2], q_bktgh.shape[-1]
    ones_bks1 = jnp.ones((*v_bksh.shape[:-1], 1), v_bksh.dtype)
    v_ones_bksh = jnp.concatenate([v_bksh, ones_bks1], axis=-1)  # [B, K, S, H + 1]
    out_blocks = []
    for t0 in range(0, length, block):
        t1 = min(t0 + block, length)
        logits_bktgs = jnp.einsum(
            "bktgh,bksh->bktgs",
            q_bktgh[:, :, t0:t1],
            k_bksh[:, :, :t1],
            precision=precision,
            preferred_element_type=jnp.float32,
        )
        # Masked as an added bias: a broadcast select over the logits ran slower on CPU.
        bias_bts = jnp.where(attention_mask(segment_ids_bt, t0, t1), 0.0, jnp.finfo(jnp.float32).min)
        logits_bktgs = logits_bktgs + bias_bts[:, None, :, None, :]
        weights_bktgs = jnp.exp(logits_bktgs - jnp.max(logits_bktgs, axis=-1, keepdims=True))
        out_and_total = jnp.einsum(
            "bktgs,bksh->bktgh",
            weights_bktgs.astype(v_bksh.dtype),
            v_ones_bksh[:, :, :t1],
            precision=precision,
            preferred_element_type=jnp.float32,
        )
        out_bktgh, total_bktg1 = out_and_total[..., :head_dim], out_and_total[..., head_dim:]
        out_blocks.append((out_bktgh / total_bktg1).astype(v_bksh.dtype))
    return jnp.concatenate(out_blocks, axis=2)


# --- "cudnn": jax.nn.dot_product_attention ----------------------------------------------------


def segment_mask(segment_ids_bt: jax.Array) -> jax.Array:
    """[B, 1, T, S] True where query t and key s are in the same segment (padding with padding).

    The causal part is `is_causal=True`, which cuDNN applies itself (skipping the blocks
    above the diagonal); this mask, one per row and shared by all heads, adds the segments.
    """
    return (segment_ids_bt[:, :, None] == segment_ids_bt[:, None, :])[:, None]


def dot_product_attention(
    q_bktgh: jax.Array,
    k_bksh: jax.Array,
    v_bksh: jax.Array,
    segment_ids_bt: jax.Array,
    implementation: str,
) -> jax.Array:
    """`jax.nn.dot_product_attention` in its [B, T, N, H] layout (N = K * G, head k * G + g
    on KV head k, which is also how it groups queries), with scale 1 (queries are
    pre-scaled), `is_causal=True` and `segment_mask`."""
    b, k, t, g, h = q_bktgh.shape
    q_btnh = q_bktgh.transpose(0, 2, 1, 3, 4).reshape(b, t, k * g, h)
    out_btnh = jax.nn.dot_product_attention(
        q_btnh,
        k_bksh.transpose(0, 2, 1, 3),
        v_bksh.transpose(0, 2, 1, 3),
        mask=segment_mask(segment_ids_bt),
        scale=1.0,
        is_causal=True,
        implementation=implementation,
    )
    return out_btnh.reshape(b, t, k, g, h).transpose(0, 2, 1, 3, 4)


# --- "splash": Pallas splash attention (TPU) ---------------------------------------------------


def splash_layout(length: int) -> tuple[int, int]:
    """(padded length, block) for splash: the length rounded up to 128, and the largest of
    SPLASH_BLOCKS that divides it."""
    padded = -(-length // SPLASH_LANES) * SPLASH_LANES
    return padded, next(b for b in SPLASH_BLOCKS if padded % b == 0)


@functools.lru_cache(maxsize=32)
def _splash_kernel(heads: int, padded: int, block: int, interpret: Any) -> Any:
    """The forward-only GQA splash kernel for `heads` query heads over `padded` positions.

    Built eagerly (its block tables are concrete arrays, even when first asked for inside a
    trace) and cached, so every layer and every later trace share it."""
    from jax.experimental.pallas.ops.tpu import splash_attention as splash

    mask = splash.MultiHeadMask([splash.CausalMask((padded, padded)) for _ in range(heads)])
    sizes = splash.BlockSizes(block_q=block, block_kv=block, block_kv_compute=block)
    with jax.ensure_compile_time_eval():
        return splash.make_splash_mha_single_device(mask, block_sizes=sizes, interpret=interpret)


def splash_attention(
    q_bktgh: jax.Array,
    k_bksh: jax.Array,
    v_bksh: jax.Array,
    segment_ids_bt: jax.Array,
    interpret: Any = False,
) -> jax.Array:
    """Splash attention on packed rows, partitioned per shard of rows and KV heads.

    A Pallas kernel is opaque to XLA's partitioner, which would gather a data- or
    model-sharded batch onto every device and run all of it there; `custom_partitioning`
    instead runs the kernel on each device's rows and KV heads (the mesh's `data` and
    `model` axes, as extract/mesh.py shards them), with positions and head width whole.
    The kernel's block tables travel as replicated operands (custom_partitioning takes no
    captured constants). The TPU interpreter (`pltpu.InterpretParams`, whose callbacks
    custom_partitioning cannot lower) runs unpartitioned."""
    _b, k, t, g, _h = q_bktgh.shape
    padded, block = splash_layout(t)
    kernel = _splash_kernel(k * g, padded, block, interpret)
    if not isinstance(interpret, bool):
        return _local_splash(kernel, q_bktgh, k_bksh, v_bksh, segment_ids_bt, interpret)
    tables, treedef = jax.tree_util.tree_flatten(kernel)
    partitioned = _partitioned_splash(treedef, tuple(table.ndim for table in tables), interpret)
    return partitioned(q_bktgh, k_bksh, v_bksh, segment_ids_bt, *tables)


def _local_splash(
    kernel: Any, q_bktgh: jax.Array, k_bksh: jax.Array, v_bksh: jax.Array, segment_ids_bt: jax.Array, interpret: Any
) -> jax.Array:
    """Splash per row (vmapped), its MHA kernel doing GQA: q [N, T, H] with N = K * G
    against k, v [K, T, H], query head n on KV head n // G."""
    from jax.experimental.pallas.ops.tpu.splash_attention import SegmentIds

    b, k, t, g, h = q_bktgh.shape
    padded, _ = splash_layout(t)
    q_bnth = q_bktgh.transpose(0, 1, 3, 2, 4).reshape(b, k * g, t, h)
    segments_bt = segment_ids_bt.astype(jnp.int32)
    if padded > t:  # padding segment 0 at the end: only padded queries can see it
        widths = ((0, 0), (0, 0), (0, padded - t), (0, 0))
        q_bnth, k_bksh, v_bksh = (jnp.pad(x, widths) for x in (q_bnth, k_bksh, v_bksh))
        segments_bt = jnp.pad(segments_bt, ((0, 0), (0, padded - t)))

    def row(q_nth: jax.Array, k_ksh: jax.Array, v_ksh: jax.Array, segments_t: jax.Array) -> jax.Array:
        return kernel(q_nth, k_ksh, v_ksh, SegmentIds(q=segments_t, kv=segments_t))

    if isinstance(interpret, bool):
        out_bnth = jax.vmap(row)(q_bnth, k_bksh, v_bksh, segments_bt)
    else:  # the TPU interpreter (pltpu.InterpretParams) rejects vmap's extra grid axis
        out_bnth = jax.lax.map(lambda xs: row(*xs), (q_bnth, k_bksh, v_bksh, segments_bt))
    return out_bnth[:, :, :t].reshape(b, k, g, t, h).transpose(0, 1, 3, 2, 4)


def _row_head_shardings(mesh: Any, q_sharding: Any, table_ranks: tuple[int, ...]) -> tuple[Any, tuple[Any, ...]]:
    """(out sharding, operand shardings): q's row and KV-head axes kept, the rest whole."""
    from jax.sharding import NamedSharding
    from jax.sharding import PartitionSpec as P

    spec = tuple(getattr(q_sharding, "spec", ())) + (None,) * 5
    rows, heads = spec[0], spec[1]
    q_sharding = NamedSharding(mesh, P(rows, heads, None, None, None))
    kv_sharding = NamedSharding(mesh, P(rows, heads, None, None))
    tables = tuple(NamedSharding(mesh, P(*(None,) * rank)) for rank in table_ranks)
    return q_sharding, (q_sharding, kv_sharding, kv_sharding, NamedSharding(mesh, P(rows, None)), *tables)


@functools.lru_cache(maxsize=32)
def _partitioned_splash(treedef: Any, table_ranks: tuple[int, ...], interpret: Any) -> Any:
    """`_local_splash` as a custom_partitioning op: (q, k, v, segment ids, *kernel tables)."""
    from jax.experimental.custom_partitioning import custom_partitioning

    def local(q_bktgh, k_bksh, v_bksh, segment_ids_bt, *tables):
        kernel = jax.tree_util.tree_unflatten(treedef, tables)
        return _local_splash(kernel, q_bktgh, k_bksh, v_bksh, segment_ids_bt, interpret)

    def infer(mesh, arg_shapes, result_shape):
        del result_shape
        return _row_head_shardings(mesh, arg_shapes[0].sharding, table_ranks)[0]

    def partition(mesh, arg_shapes, result_shape):
        del result_shape
        out_sharding, arg_shardings = _row_head_shardings(mesh, arg_shapes[0].sharding, table_ranks)
        return mesh, local, out_sharding, arg_shardings

    table_factors = [[f"m{i}x{j}" for j in range(rank)] for i, rank in enumerate(table_ranks)]
    operands = ["b k t g h", "b k t h", "b k t h", "b t", *(" ".join(f) for f in table_factors)]
    partitioned = custom_partitioning(local)
    partitioned.def_partition(
        partition=partition,
        infer_sharding_from_operands=infer,
        sharding_rule=", ".join(operands) + " -> b k t g h",
        need_replication_factors=("t", "g", "h", *(name for f in table_factors for name in f)),
    )
    return partitioned
