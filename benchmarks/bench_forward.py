"""Tokens/s of LayerTap's extraction forward vs transformers' PyTorch forward, on CPU.

Both read the same random checkpoint at the real Qwen2.5-0.5B shapes (24 layers, hidden
896, 14 query / 2 KV heads, MLP 4864, vocab 151936) and run in inference mode with the same
thread count. LayerTap extracts layers 10-23 (the default), so it runs all 24 blocks;
transformers runs its base `Qwen2Model` (all 24 blocks + the final norm, no LM head), with
its default attention (`sdpa`). Runs are interleaved (ours, theirs, ours, ...) so that load
from other processes hits both alike; the speed-up is the ratio of median step times.
Compilation (JAX) and the first call (PyTorch) are timed apart and not in the medians.

With several batch sizes it ends with the comparison that counts: at each length, what
LayerTap runs by itself on CPU (the default bfloat16, in steps of at most
`runner.CPU_STEP_TOKENS` tokens: the largest batch measured that fits) against
transformers' fastest row of the run, whatever its dtype and batch.

    .venv/bin/python benchmarks/bench_forward.py                 # float32 + bfloat16, T=512 and 2048
    .venv/bin/python benchmarks/bench_forward.py --dtypes float32 --lengths 512 --repeats 3
    .venv/bin/python benchmarks/bench_forward.py --batch 1 4 --repeats 3   # and the summary
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import tempfile
import time
from pathlib import Path

QWEN25_05B = {
    "vocab_size": 151936,
    "hidden_size": 896,
    "intermediate_size": 4864,
    "num_hidden_layers": 24,
    "num_attention_heads": 14,
    "num_key_value_heads": 2,
    "rope_theta": 1_000_000.0,
    "rms_norm_eps": 1e-6,
    "tie_word_embeddings": True,
}
LAYERS = list(range(10, 24))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dtypes", nargs="+", default=["float32", "bfloat16"], choices=["float32", "bfloat16"])
    parser.add_argument("--lengths", nargs="+", type=int, default=[512, 2048])
    parser.add_argument("--batch", type=int, nargs="+", default=[1], help="sequences per forward")
    parser.add_argument("--repeats", type=int, default=5, help="timed forwards per implementation")
    parser.add_argument("--checkpoint", type=Path, help="reuse a checkpoint directory (default: write a random one)")
    args = parser.parse_args()

    threads = len(os.sched_getaffinity(0))
    # XLA's CPU client uses every core of the process; give PyTorch the same number.
    import jax
    import jax.numpy as jnp
    import torch
    import transformers

    from layertap.model import load_checkpoint, make_extract_fn, write_random_checkpoint

    torch.set_num_threads(threads)
    print(
        f"# {cpu_name()}, {threads} threads; jax {jax.__version__}, torch {torch.__version__}, transformers "
        f"{transformers.__version__}"
    )

    with tempfile.TemporaryDirectory() as scratch:
        directory = args.checkpoint or write_random_checkpoint(
            Path(scratch) / "qwen2.5-0.5b-random", seed=0, **QWEN25_05B
        )
        print("| dtype | T | B | LayerTap tok/s | transformers tok/s | speed-up | JAX compile s | torch first call s |")
        print("| --- | --- | --- | --- | --- | --- | --- | --- |")
        rates = {}  # (dtype, length, batch) -> (LayerTap tok/s, transformers tok/s)
        for dtype in args.dtypes:
            jax_dtype, torch_dtype = jnp.dtype(dtype), getattr(torch, dtype)
            config, params = load_checkpoint(directory, jax_dtype)
            theirs = transformers.Qwen2Model.from_pretrained(directory, dtype=torch_dtype).eval()
            forward = jax.jit(make_extract_fn(config, LAYERS, jax_dtype))
            for length in args.lengths:
                for batch in args.batch:
                    row, rates[dtype, length, batch] = compare(
                        forward, params, theirs, config.vocab_size, batch, length, args.repeats, dtype
                    )
                    print(row, flush=True)
            del params, theirs  # free one dtype's weights (about 4 GB in float32) before the next
    if len(args.batch) > 1 and "bfloat16" in args.dtypes:
        summary(rates, args.lengths, args.batch)


def summary(rates: dict, lengths: list[int], batches: list[int]) -> None:
    """At each length: LayerTap as it runs by itself on CPU against transformers' fastest row."""
    from layertap.extract.runner import CPU_STEP_TOKENS

    print("\n| T | LayerTap by itself | tok/s | transformers' fastest | tok/s | speed-up |")
    print("| --- | --- | ---: | --- | ---: | ---: |")
    for length in lengths:
        fitting = [b for b in batches if b * length <= CPU_STEP_TOKENS] or [min(batches)]
        ours = rates["bfloat16", length, max(fitting)][0]
        (dtype, _, batch), (_, fastest) = max(
            ((key, rate) for key, rate in rates.items() if key[1] == length), key=lambda item: item[1][1]
        )
        print(
            f"| {length} | bfloat16, B={max(fitting)} | {ours:.0f} | {dtype}, B={batch} | {fastest:.0f} | "
            f"{ours / fastest:.2f}x |"
        )


def compare(
    forward, params, theirs, vocab_size: int, batch: int, length: int, repeats: int, dtype: str
) -> tuple[str, tuple[float, float]]:
    """One table row, and both tokens/s: interleaved timed forwards of both implementations
    on the same ids."""
    import jax
    import jax.numpy as jnp
    import numpy as np
    import torch

    shape = (batch, length)
    ids = np.random.default_rng(length).integers(0, vocab_size, size=shape, dtype=np.int32)
    inputs = (
        jnp.asarray(ids),
        jnp.broadcast_to(jnp.arange(length, dtype=jnp.int32), shape),
        jnp.ones(shape, jnp.int32),
    )
    torch_ids = torch.from_numpy(ids).long()

    def ours() -> None:
        jax.block_until_ready(forward(params, *inputs))

    def reference() -> None:
        with torch.inference_mode():
            theirs(input_ids=torch_ids)

    compile_s = timed(lambda: forward.lower(params, *inputs).compile())
    ours()  # the first call also transfers the inputs and caches the executable
    first_torch_s = timed(reference)
    ours_s, theirs_s = [], []
    for _ in range(repeats):
        ours_s.append(timed(ours))
        theirs_s.append(timed(reference))
    ours_med, theirs_med = statistics.median(ours_s), statistics.median(theirs_s)
    tokens = batch * length
    row = (
        f"| {dtype} | {length} | {batch} | {tokens / ours_med:.0f} | {tokens / theirs_med:.0f} "
        f"| {theirs_med / ours_med:.2f}x | {compile_s:.1f} | {first_torch_s:.1f} |"
    )
    return row, (tokens / ours_med, tokens / theirs_med)


def timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


if __name__ == "__main__":
    main()
