"""Compile time of the extraction forward against T, per attention path (issue 30, item 3).

The blocked XLA attention runs one pair of dots per query block of 128, each of its own
shape (block x keys up to the block's end), so its distinct shapes grow with T; a GPU
autotunes each. This compiles (no run) the forward of layers 10-23 of Qwen2.5-0.5B's shapes
(abstract parameters, nothing written) on JAX's default device, at one row of T tokens, for
each path and compute dtype, and prints the seconds and the number of distinct dot shapes.
"cudnn" off a GPU is jax.nn.dot_product_attention's XLA implementation: one full [T, T] product.

    .venv/bin/python benchmarks/bench_compile.py
    .venv/bin/python benchmarks/bench_compile.py --lengths 512 1024 2048 4096 --attention xla
"""

from __future__ import annotations

import argparse
import os
import re
import time

from bench_forward import LAYERS, QWEN25_05B


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lengths", nargs="+", type=int, default=[512, 1024, 2048, 4096])
    parser.add_argument("--dtypes", nargs="+", default=["float32", "bfloat16"], choices=["float32", "bfloat16"])
    parser.add_argument("--attention", nargs="+", default=["xla", "cudnn"], choices=["xla", "cudnn"])
    args = parser.parse_args()

    import jax
    import jax.numpy as jnp

    from layertap.model import make_extract_fn
    from layertap.model.attention import ENV_ATTENTION
    from layertap.model.config import DecoderConfig
    from layertap.model.tap import LayerTap
    from layertap.model.transformer import Decoder

    config = DecoderConfig.from_dict({"model_type": "qwen2", **QWEN25_05B})
    tap = LayerTap.validated(LAYERS, config.num_hidden_layers)
    print(f"# {jax.devices()[0].device_kind}, jax {jax.__version__}; layers 10-23 of Qwen2.5-0.5B shapes, B=1")
    print("| attention | dtype | T | dot shapes | compile s |")
    print("| --- | --- | --- | --- | --- |")
    ids = jnp.zeros((1, 8), jnp.int32)
    shapes32 = jax.eval_shape(lambda: Decoder(config, tap).init(jax.random.key(0), ids, ids, ids))["params"]
    for attention in args.attention:
        os.environ[ENV_ATTENTION] = attention  # read while the forward is traced
        for dtype in map(jnp.dtype, args.dtypes):
            params = jax.tree.map(lambda p, d=dtype: jax.ShapeDtypeStruct(p.shape, d), shapes32)
            forward = make_extract_fn(config, tap, dtype)
            for length in args.lengths:
                ints = jax.ShapeDtypeStruct((1, length), jnp.int32)
                lowered = jax.jit(forward).lower(params, ints, ints, ints)
                shapes = set(re.findall(r"stablehlo\.dot_general .*: (\(.*\) -> .*)", lowered.as_text()))
                start = time.perf_counter()
                lowered.compile()
                print(
                    f"| {attention} | {dtype.name} | {length} | {len(shapes)} | {time.perf_counter() - start:.1f} |",
                    flush=True,
                )


if __name__ == "__main__":
    main()
