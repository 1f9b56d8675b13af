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

Issue 30 item 2, measured rather than assumed: each length runs the q/k/v and gate/up
projections as separate dots and fused (one dot each over stacked kernels,
`make_extract_fn(fused_projections=True)`), compiled side by side and timed interleaved;
`vs separate` is the speed-up. `--profile DIR` traces a few steps of each at the longest
length and prints where the device's time goes (trace_summary.py). XLA's GPU flags are
compared by running it again under another XLA_FLAGS (gpu_run.sh; the header names them).

    .venv/bin/python benchmarks/gpu_forward.py
    .venv/bin/python benchmarks/gpu_forward.py --peak-tflops 989 --dtypes bfloat16 --profile /tmp/profile
    .venv/bin/python benchmarks/gpu_forward.py --allow-cpu --dtypes bfloat16 --lengths 64 --repeats 2 --profile /tmp/p
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import tempfile
import time
from pathlib import Path

import trace_summary
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


VARIANTS = {"separate": False, "fused": True}  # q/k/v and gate/up: separate dots, or one each


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dtypes", nargs="+", default=["float32", "bfloat16"], choices=["float32", "bfloat16"])
    parser.add_argument("--lengths", nargs="+", type=int, default=[512, 2048])
    parser.add_argument("--tokens-per-step", type=int, default=32768, help="batch = tokens-per-step // T")
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--projections", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    parser.add_argument("--checkpoint", type=Path, help="reuse this random checkpoint (written there when absent)")
    parser.add_argument("--profile", type=Path, help="trace steps at the longest length here; print where time goes")
    parser.add_argument("--profile-steps", type=int, default=3)
    parser.add_argument("--peak-tflops", type=float, help="override the device's peak for the MFU")
    parser.add_argument("--num-layers", type=int, default=QWEN25_05B["num_hidden_layers"], help="a smaller model")
    parser.add_argument("--allow-cpu", action="store_true", help="run on a CPU too (to check the script, not to time)")
    args = parser.parse_args()

    import jax
    import jax.numpy as jnp
    import numpy as np

    from layertap.model import load_checkpoint, make_extract_fn, write_random_checkpoint
    from layertap.model.attention import choose_implementation

    device = jax.devices()[0]
    if device.platform != "gpu" and not args.allow_cpu:
        raise SystemExit(f"no GPU: JAX sees {device.platform} ({device.device_kind}); install jax[cuda12]")
    peaks = next((p for kind, p in PEAK_TFLOPS.items() if kind in device.device_kind), None)
    print(f"# {device.device_kind}; jax {jax.__version__}; XLA_FLAGS={os.environ.get('XLA_FLAGS', '')!r}")
    print("| dtype | attention | projections | T | B | tokens/s | vs separate | step ms | compile s | TFLOP/s | MFU |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    profiles = []

    with tempfile.TemporaryDirectory() as scratch:
        directory = args.checkpoint or Path(scratch) / "qwen2.5-0.5b-random"
        if not directory.exists():  # written whole, then renamed: a run cut short leaves no half checkpoint
            partial = directory.with_name(directory.name + ".partial")
            shutil.rmtree(partial, ignore_errors=True)
            write_random_checkpoint(partial, seed=0, **{**QWEN25_05B, "num_hidden_layers": args.num_layers})
            partial.rename(directory)
        for dtype in args.dtypes:
            config, params = load_checkpoint(directory, jnp.dtype(dtype))
            layers = [layer for layer in LAYERS if layer < config.num_hidden_layers] or [config.num_hidden_layers - 1]
            peak = args.peak_tflops or (peaks[dtype == "bfloat16"] if peaks else None)
            for length in args.lengths:
                ran = choose_implementation(jnp.dtype(dtype), config.head_dim)
                batch = max(1, args.tokens_per_step // length)
                shape = (batch, length)
                ids = np.random.default_rng(length).integers(0, config.vocab_size, size=shape, dtype=np.int32)
                inputs = (
                    jnp.asarray(ids),
                    jnp.broadcast_to(jnp.arange(length, dtype=jnp.int32), shape),
                    jnp.ones(shape, jnp.int32),
                )
                compiled, compile_s, times = {}, {}, {}
                for variant in args.projections:
                    fused = VARIANTS[variant]
                    forward = jax.jit(make_extract_fn(config, layers, jnp.dtype(dtype), fused_projections=fused))
                    start = time.perf_counter()
                    compiled[variant] = forward.lower(params, *inputs).compile()
                    compile_s[variant] = time.perf_counter() - start
                    jax.block_until_ready(compiled[variant](params, *inputs))
                    times[variant] = []
                for _ in range(args.repeats):  # interleaved: the variants share the device's state
                    for variant in args.projections:
                        start = time.perf_counter()
                        jax.block_until_ready(compiled[variant](params, *inputs))
                        times[variant].append(time.perf_counter() - start)
                steps = {variant: statistics.median(times[variant]) for variant in args.projections}
                for variant in args.projections:
                    tokens_per_s = batch * length / steps[variant]
                    versus = f"{steps['separate'] / steps[variant]:.3f}x" if "separate" in steps else ""
                    tflops = flops_per_token(config, max(layers) + 1, length) * tokens_per_s / 1e12
                    mfu = f"{tflops / peak:.1%}" if peak else "n/a (pass --peak-tflops)"
                    print(
                        f"| {dtype} | {ran} | {variant} | {length} | {batch} | {tokens_per_s:,.0f} | {versus} | "
                        f"{steps[variant] * 1e3:.1f} | {compile_s[variant]:.1f} | {tflops:.1f} | {mfu} |",
                        flush=True,
                    )
                if args.profile and length == max(args.lengths):
                    for variant in args.projections:
                        where = args.profile / f"{dtype}-{length}-{variant}"
                        with jax.profiler.trace(str(where), create_perfetto_trace=True):
                            for _ in range(args.profile_steps):
                                jax.block_until_ready(compiled[variant](params, *inputs))
                        summary = trace_summary.summarize(where, args.profile_steps, steps[variant] * 1e3)
                        profiles.append(f"\n#### {dtype}, T={length}, B={batch}, projections {variant}\n\n{summary}")
            del params
    for profile in profiles:
        print(profile, flush=True)


if __name__ == "__main__":
    main()
