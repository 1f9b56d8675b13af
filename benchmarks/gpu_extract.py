"""The extraction loop end to end on one GPU: useful tokens/s, MFU and the per-step breakdown.

The same measurement as bench_extract.py (real runner, real ARC-AGI prompts, shard writer
on local disk), at the full Qwen2.5-0.5B shapes (24 layers, layers 10-23 stored), in
bfloat16. Needs a CUDA build of JAX (pip install 'jax[cuda12]').

MFU = useful FLOPs per second / the GPU's peak dense bfloat16 FLOP/s (--peak-tflops;
989 for an H100 SXM). Useful FLOPs per decoder block and sample of length l:
2 * P * l + 2 * n * h * l * (l + 1), with P the block's weights (q/k/v/o + MLP), n the
query heads and h the head size: padding and the masked half of attention do not count.

    python benchmarks/gpu_extract.py --tasks 400 --batch-size 32
"""

from __future__ import annotations

import tempfile
from pathlib import Path

from bench_extract import parse_args, report, run_once, write_inputs


def main() -> None:
    args = parse_args(__doc__.splitlines()[0], gpu=True, tasks=400, layers_in_model=24, dtype="bfloat16", batch_size=32)
    import jax

    if jax.default_backend() != "gpu":
        raise SystemExit(f"no GPU: JAX's backend is {jax.default_backend()} (pip install 'jax[cuda12]')")
    with tempfile.TemporaryDirectory(prefix="layertap-gpu-bench-") as tmp:
        workdir = args.workdir or Path(tmp)
        model, tasks = write_inputs(workdir, args)
        results = [run_once(model, tasks, workdir / f"out-{p}", args, p) for p in args.positions]
    device = jax.devices()[0].device_kind
    report(results, device)
    print(f"\nMFU against {args.peak_tflops:g} TFLOP/s peak bfloat16:")
    for r in results:
        seconds = r["useful_tokens"] / r["tokens_per_s"]
        print(
            f"  positions {r['positions']}: {r['useful_flops'] / seconds / 1e12:.1f} TFLOP/s useful, "
            f"MFU {r['useful_flops'] / seconds / (args.peak_tflops * 1e12):.1%}"
        )


if __name__ == "__main__":
    main()
