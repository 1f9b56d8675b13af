"""The blocked XLA attention (model/attention.py, the CPU path) against its previous form.

`before` masks the logits with a broadcast select and divides by a separate sum of the
weights, as model/attention.py did until #17; `now` is `block_causal_attention`: the mask
as an added bias, the sum out of the weights-times-V product (a ones column on V). Both run
one layer of Qwen2.5-0.5B's attention (14 query heads over 2 KV heads of 64) on rows of
four packed segments, interleaved, and must agree to the dtype's precision.

    .venv/bin/python benchmarks/bench_attention.py
    .venv/bin/python benchmarks/bench_attention.py --lengths 512 2048 4096 --repeats 9
"""

from __future__ import annotations

import argparse
import functools
import platform
import statistics
import time


def before(q_bktgh, k_bksh, v_bksh, segment_ids_bt, precision, block=128):
    """The previous form: a select on the logits and a separate sum for the denominator."""
    import jax.numpy as jnp

    from layertap.model.attention import attention_mask

    out_blocks = []
    for t0 in range(0, q_bktgh.shape[2], block):
        t1 = min(t0 + block, q_bktgh.shape[2])
        logits = jnp.einsum(
            "bktgh,bksh->bktgs",
            q_bktgh[:, :, t0:t1],
            k_bksh[:, :, :t1],
            precision=precision,
            preferred_element_type=jnp.float32,
        )
        mask = attention_mask(segment_ids_bt, t0, t1)
        logits = jnp.where(mask[:, None, :, None, :], logits, jnp.finfo(jnp.float32).min)
        weights = jnp.exp(logits - jnp.max(logits, axis=-1, keepdims=True))
        total = jnp.sum(weights, axis=-1, keepdims=True)
        out = jnp.einsum(
            "bktgs,bksh->bktgh",
            weights.astype(v_bksh.dtype),
            v_bksh[:, :, :t1],
            precision=precision,
            preferred_element_type=jnp.float32,
        )
        out_blocks.append((out / total).astype(v_bksh.dtype))
    return jnp.concatenate(out_blocks, axis=2)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lengths", type=int, nargs="+", default=[512, 2048])
    parser.add_argument("--repeats", type=int, default=7)
    args = parser.parse_args()

    import jax
    import jax.numpy as jnp
    import numpy as np

    from layertap.model.attention import block_causal_attention
    from layertap.model.modules import dot_precision

    print(f"# {platform.processor() or platform.machine()}, jax {jax.__version__}, {jax.devices()[0].device_kind}\n")
    print("| dtype | T | before ms | now ms | speed-up | max abs difference |")
    print("| --- | ---: | ---: | ---: | ---: | ---: |")
    rng = np.random.default_rng(0)
    for dtype in (jnp.float32, jnp.bfloat16):
        for length in args.lengths:
            q, k, v = (
                jnp.asarray(rng.standard_normal(shape), dtype)
                for shape in ((1, 2, length, 7, 64), (1, 2, length, 64), (1, 2, length, 64))
            )
            segments = jnp.asarray(np.repeat(np.arange(1, 5), length // 4)[None], jnp.int32)
            precision = dot_precision(dtype)
            runs = {
                name: jax.jit(functools.partial(fn, precision=precision))
                for name, fn in (("before", before), ("now", block_causal_attention))
            }
            outputs = {name: np.asarray(fn(q, k, v, segments), np.float32) for name, fn in runs.items()}
            times = {name: [] for name in runs}
            for _ in range(args.repeats):
                for name, fn in runs.items():
                    start = time.perf_counter()
                    fn(q, k, v, segments).block_until_ready()
                    times[name].append(time.perf_counter() - start)
            old, new = (statistics.median(times[name]) for name in ("before", "now"))
            error = float(np.abs(outputs["before"] - outputs["now"]).max())
            print(
                f"| {jnp.dtype(dtype).name} | {length} | {old * 1e3:.1f} | {new * 1e3:.1f} | {old / new:.2f}x | "
                f"{error:.2g} |",
                flush=True,
            )


if __name__ == "__main__":
    main()
