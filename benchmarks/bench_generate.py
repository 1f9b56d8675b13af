"""Decode tokens/s of LayerTap's generation vs transformers' `generate`, on CPU, greedy.

Both read the same random checkpoint at the real Qwen2.5-0.5B shapes (24 layers, hidden
896, 14 query / 2 KV heads, MLP 4864, vocab 151936, tied head) in float32, with the same
thread count, the same prompts (P tokens each) and the same budget of N new tokens with no
stop token, so both generate exactly B x N tokens. Decode time is the time of a generation
of N tokens minus that of 1 token (the prefill and the first token), so it counts only the
N - 1 decode steps. Runs are interleaved (ours, theirs, ...); figures are medians, and
the speed-up is their ratio. JAX compile time and torch's first call are reported apart.

    .venv/bin/python benchmarks/bench_generate.py                       # B=1 and 8, P=256, N=64
    .venv/bin/python benchmarks/bench_generate.py --batches 1 --new-tokens 32 --repeats 2
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
from pathlib import Path

from bench_forward import QWEN25_05B, cpu_name, timed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batches", nargs="+", type=int, default=[1, 8])
    parser.add_argument("--prompt-tokens", type=int, default=256)
    parser.add_argument("--new-tokens", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=3, help="timed generations per implementation and budget")
    parser.add_argument("--checkpoint", type=Path, help="reuse a checkpoint directory (default: write a random one)")
    args = parser.parse_args()

    threads = len(os.sched_getaffinity(0))
    import jax
    import torch
    import transformers

    from layertap.model import load_checkpoint, write_random_checkpoint

    torch.set_num_threads(threads)
    print(
        f"# {cpu_name()}, {threads} threads; jax {jax.__version__}, torch {torch.__version__}, transformers "
        f"{transformers.__version__}"
    )
    print(f"# float32, greedy, prompts of {args.prompt_tokens} tokens, {args.new_tokens} new tokens, no stop token")
    with tempfile.TemporaryDirectory() as scratch:
        directory = args.checkpoint or write_random_checkpoint(
            Path(scratch) / "qwen2.5-0.5b-random", seed=0, **QWEN25_05B
        )
        config, params = load_checkpoint(directory, head=True)
        theirs = transformers.Qwen2ForCausalLM.from_pretrained(directory, dtype=torch.float32).eval()
        print(
            "| B | LayerTap decode tok/s | transformers decode tok/s | speed-up | LayerTap end-to-end tok/s "
            "| transformers end-to-end tok/s | JAX compile s | torch first call s |"
        )
        print("| --- | --- | --- | --- | --- | --- | --- | --- |")
        for batch in args.batches:
            print(compare(config, params, theirs, batch, args.prompt_tokens, args.new_tokens, args.repeats), flush=True)


def compare(config, params, theirs, batch: int, prompt_tokens: int, new_tokens: int, repeats: int) -> str:
    import jax
    import numpy as np
    import torch

    from layertap.model.generate import make_generate_fn

    ids = np.random.default_rng(batch).integers(0, config.vocab_size, size=(batch, prompt_tokens), dtype=np.int32)
    lengths, sample_ids = np.full(batch, prompt_tokens, np.int32), np.arange(batch, dtype=np.int32)
    ours_fns = {n: jax.jit(make_generate_fn(config, n)) for n in (1, new_tokens)}
    torch_ids = torch.from_numpy(ids).long()

    def ours(n: int) -> None:
        jax.block_until_ready(ours_fns[n](params, ids, lengths, sample_ids).tokens)

    def reference(n: int) -> None:
        with torch.inference_mode():
            theirs.generate(
                torch_ids,
                attention_mask=torch.ones_like(torch_ids),
                max_new_tokens=n,
                min_new_tokens=n,
                do_sample=False,
                pad_token_id=0,
            )

    compile_s = sum(timed(lambda n=n: ours_fns[n].lower(params, ids, lengths, sample_ids).compile()) for n in ours_fns)
    for n in ours_fns:
        ours(n)
    first_torch_s = timed(lambda: reference(1))
    times: dict[tuple[str, int], list[float]] = {}
    for _ in range(repeats):
        for n in (1, new_tokens):
            times.setdefault(("ours", n), []).append(timed(lambda n=n: ours(n)))
            times.setdefault(("theirs", n), []).append(timed(lambda n=n: reference(n)))
    med = {key: statistics.median(values) for key, values in times.items()}
    decoded = batch * (new_tokens - 1)
    ours_decode = decoded / (med["ours", new_tokens] - med["ours", 1])
    theirs_decode = decoded / (med["theirs", new_tokens] - med["theirs", 1])
    return (
        f"| {batch} | {ours_decode:.1f} | {theirs_decode:.1f} | {ours_decode / theirs_decode:.2f}x "
        f"| {batch * new_tokens / med['ours', new_tokens]:.1f} | {batch * new_tokens / med['theirs', new_tokens]:.1f} "
        f"| {compile_s:.1f} | {first_torch_s:.1f} |"
    )


if __name__ == "__main__":
    main()
