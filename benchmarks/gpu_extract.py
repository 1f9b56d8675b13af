"""The extraction loop end to end on one GPU: useful tokens/s, MFU, the forward alone, the
device-to-host copy and the sink, each measured in the same run.

The same measurement as bench_extract.py (real runner, real ARC-AGI prompts, shard writer
on local disk), at the full Qwen2.5-0.5B shapes (24 layers, layers 10-23 stored), in
bfloat16. Needs a CUDA build of JAX (pip install 'jax[cuda12]').

MFU = useful FLOPs per second / the GPU's peak dense bfloat16 FLOP/s (--peak-tflops;
989 for an H100 SXM). Useful FLOPs per decoder block and sample of length l:
2 * P * l + 2 * n * h * l * (l + 1), with P the block's weights (q/k/v/o + MLP), n the
query heads and h the head size: padding and the masked half of attention do not count.

Beside each run: the bare forward of the same steps (tokens/s), the runner's copy to the
host (the compact output of the run's largest step into pinned memory, read as NumPy
views) against a bare `jax.device_get` of the same bytes, and the raw write speed of the
run's shards to the same disk. The goals (issue 26): `last`/`mean` at >= 90% of the forward
alone, `all` at >= 90% of min(forward, sink).

    python benchmarks/gpu_extract.py --tasks 400 --batch-size 32 --positions all last mean
    .venv/bin/python benchmarks/gpu_extract.py --allow-cpu --tasks 4 --batch-size 2 --layers-in-model 2
"""

from __future__ import annotations

import statistics
import tempfile
import time
from pathlib import Path

from bench_extract import parse_args, report, run_once, write_inputs
from bench_host_path import raw_local


def transfer_speeds(nbytes: int, repeats: int = 3) -> dict[str, float]:
    """GB/s of moving `nbytes` from the GPU to the host: bare `jax.device_get` (pageable) and
    the runner's path (`compact.to_host` into pinned memory, then `host_parts`' views)."""
    import jax
    import jax.numpy as jnp

    from layertap.extract import compact

    rows = max(1, nbytes // (896 * 2 * 14))
    x = jax.block_until_ready(jnp.ones((14, 1, rows, 896), jnp.bfloat16))
    kind = compact.host_memory_kind(x.devices().pop())

    def bare() -> None:
        jax.device_get(x)

    def runner_path() -> None:
        compact.host_parts(compact.to_host({"x": x}, kind), {0: rows})

    speeds = {}
    for name, move in (("device_get", bare), ("runner", runner_path)):
        move()
        seconds = []
        for _ in range(repeats):
            t0 = time.perf_counter()
            move()
            seconds.append(time.perf_counter() - t0)
        speeds[name] = x.nbytes / statistics.median(seconds) / 1e9
    speeds["memory_kind"] = kind or "none"
    return speeds


def main() -> None:
    args = parse_args(__doc__.splitlines()[0], gpu=True, tasks=400, layers_in_model=24, dtype="bfloat16", batch_size=32)
    import jax

    if jax.default_backend() != "gpu" and not args.allow_cpu:
        raise SystemExit(f"no GPU: JAX's backend is {jax.default_backend()} (pip install 'jax[cuda12]')")
    with tempfile.TemporaryDirectory(prefix="layertap-gpu-bench-") as tmp:
        workdir = args.workdir or Path(tmp)
        model, tasks = write_inputs(workdir, args)
        results = []
        for positions in args.positions:
            output = workdir / f"out-{positions}"
            result = run_once(model, tasks, output, args, positions)
            shards = sorted((output / "shards").glob("*.safetensors"))
            sizes = [path.stat().st_size for path in shards]
            result["sink_GBps"] = sum(sizes) / raw_local(workdir / f"raw-{positions}", sizes) / 1e9 if sizes else 0.0
            result["transfer"] = transfer_speeds(result["largest_step_moved_bytes"])
            results.append(result)
    device = jax.devices()[0].device_kind
    report(results, device)
    print(f"\nMFU against {args.peak_tflops:g} TFLOP/s peak bfloat16, and the goals:")
    for r in results:
        seconds = r["useful_tokens"] / r["tokens_per_s"]
        forward_tps = r["tokens_per_s"] * r["loop_over_forward"]  # the bare forward of the same steps
        stored_per_token = r["stored_bytes"] / r["useful_tokens"]
        sink_tps = r["sink_GBps"] * 1e9 / stored_per_token if r["sink_GBps"] else float("inf")
        limit = forward_tps if r["positions"] != "all" else min(forward_tps, sink_tps)
        t = r["transfer"]
        print(
            f"  positions {r['positions']}: {r['useful_flops'] / seconds / 1e12:.1f} TFLOP/s useful, "
            f"MFU {r['useful_flops'] / seconds / (args.peak_tflops * 1e12):.1%}; e2e {r['tokens_per_s']:,.0f} tok/s, "
            f"forward alone {forward_tps:,.0f}, sink {sink_tps:,.0f} ({r['sink_GBps']:.2f} GB/s): "
            f"{r['tokens_per_s'] / limit:.0%} of its limit; device to host {t['runner']:.1f} GB/s into "
            f"{t['memory_kind']} (bare jax.device_get {t['device_get']:.1f} GB/s)"
        )


if __name__ == "__main__":
    main()
