"""Tokens/s and MFU of LayerTap's extraction forward on one GPU, at the Qwen2.5-0.5B shapes.

Needs a CUDA build of JAX (`pip install -U "jax[cuda12]"` next to `.[worker]`). Writes a
random checkpoint with the real shapes (as bench_forward.py does), extracts layers 10-23
(all 24 blocks run) in float32 and bfloat16 at T=512 and T=2048, and reports the median
step time over `--repeats` steps after compilation.

Model FLOPs per token (the useful work; norms, rotary, softmax and the embedding gather
are left out, and causal attention counts only the keys at or before each query):

    FLOPs/token = 2 * P  +  2 * L * N * H * (T + 1)
    P = L * (D * (N + 2K) * H + N * H * D + 3 * D * F)   (q/k/v/o and MLP weights of the L blocks run)

(QK^T and PV each cost 2 * N * H FLOPs per key; a query at position t sees t + 1 keys,
(T + 1) / 2 on average.) MFU = FLOPs/token * tokens/s / peak, where peak is the device's
dense peak for the compute dtype: bf16 tensor cores for bfloat16, and plain FP32 (not TF32)
for float32, since float32 compute runs its dots at HIGHEST precision.

Attention runs what `layertap.model.attention.choose_implementation` picks: "cudnn", which
is cuDNN's fused attention for bfloat16 and, for float32 (cuDNN has no float32 kernel),
jax.nn.dot_product_attention's XLA implementation with HIGHEST-precision dots. The blocked
"xla" path is not offered on a CUDA GPU (issue 30: it compiled for 65 s in bfloat16). The
compile column is the figure issue 30 asks of float32 (under 20 s). Every row is one
sequence (no packing), so the cuDNN path's segment mask is all True but still built and
applied.

    .venv/bin/python benchmarks/gpu_forward.py
    .venv/bin/python benchmarks/gpu_forward.py --peak-tflops 989 --dtypes bfloat16
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

from bench_forward import LAYERS, QWEN25_05B

# Dense peak TFLOP/s by device kind (vendor datasheets, SXM parts): (float32, bfloat16).
PEAK_TFLOPS = {
    "H100": (67.0, 989.0),
    "H200": (67.0, 989.0),
    "A100": (19.5, 312.0),
    "L4": (30.3, 121.0),
}


def flops_per_token(config, blocks: int, length: int) -> float:
    attention = 2 * config.num_attention_heads * config.head_dim * (length + 1)
    return blocks * (2 * config.block_matmul_params + attention)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dtypes", nargs="+", default=["float32", "bfloat16"], choices=["float32", "bfloat16"])
    parser.add_argument("--lengths", nargs="+", type=int, default=[512, 2048])
    parser.add_argument("--tokens-per-step", type=int, default=32768, help="batch = tokens-per-step // T")
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--peak-tflops", type=float, help="override the device's peak for the MFU")
    args = parser.parse_args()

    import jax
    import jax.numpy as jnp
    import numpy as np

    from layertap.model import load_checkpoint, make_extract_fn, write_random_checkpoint
    from layertap.model.attention import choose_implementation

    device = jax.devices()[0]
    if device.platform != "gpu":
        raise SystemExit(f"no GPU: JAX sees {device.platform} ({device.device_kind}); install jax[cuda12]")
    peaks = next((p for kind, p in PEAK_TFLOPS.items() if kind in device.device_kind), None)
    print(f"# {device.device_kind}; jax {jax.__version__}")
    print("| dtype | attention | T | B | tokens/s | step ms | compile s | TFLOP/s | MFU |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- |")

    with tempfile.TemporaryDirectory() as scratch:
        directory = write_random_checkpoint(Path(scratch) / "qwen2.5-0.5b-random", seed=0, **QWEN25_05B)
        for dtype in args.dtypes:
            config, params = load_checkpoint(directory, jnp.dtype(dtype))
            peak = args.peak_tflops or (peaks[dtype == "bfloat16"] if peaks else None)
            for length in args.lengths:
                ran = choose_implementation(jnp.dtype(dtype), config.head_dim)
                forward = jax.jit(make_extract_fn(config, LAYERS, jnp.dtype(dtype)))
                batch = max(1, args.tokens_per_step // length)
                shape = (batch, length)
                ids = np.random.default_rng(length).integers(0, config.vocab_size, size=shape, dtype=np.int32)
                inputs = (
                    jnp.asarray(ids),
                    jnp.broadcast_to(jnp.arange(length, dtype=jnp.int32), shape),
                    jnp.ones(shape, jnp.int32),
                )
                start = time.perf_counter()
                compiled = forward.lower(params, *inputs).compile()
                compile_s = time.perf_counter() - start
                jax.block_until_ready(compiled(params, *inputs))
                times = []
                for _ in range(args.repeats):
                    start = time.perf_counter()
                    jax.block_until_ready(compiled(params, *inputs))
                    times.append(time.perf_counter() - start)
                step_s = statistics.median(times)
                tokens_per_s = batch * length / step_s
                tflops = flops_per_token(config, max(LAYERS) + 1, length) * tokens_per_s / 1e12
                mfu = f"{tflops / peak:.1%}" if peak else "n/a (pass --peak-tflops)"
                print(
                    f"| {dtype} | {ran} | {length} | {batch} | {tokens_per_s:,.0f} | {step_s * 1e3:.1f} | "
                    f"{compile_s:.1f} | {tflops:.1f} | {mfu} |",
                    flush=True,
                )
            del params


if __name__ == "__main__":
    main()
