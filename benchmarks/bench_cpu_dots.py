"""One MLP-sized matmul on XLA's CPU backend, three ways: why LayerTap's projections ask for
float32 results (model/modules.py `contract`).

[2048 x 896] @ [896 x 4864] (Qwen2.5-0.5B's gate projection over 2048 tokens), jitted, median
of interleaved rounds, in GFLOP/s:

    float32                 float32 operands and result
    bf16 -> bf16            bfloat16 operands, bfloat16 result (a plain jnp.dot)
    bf16 -> f32             bfloat16 operands, float32 result (preferred_element_type)

    .venv/bin/python benchmarks/bench_cpu_dots.py
"""

from __future__ import annotations

import platform
import statistics
import time


def main() -> None:
    import jax
    import jax.numpy as jnp
    import numpy as np

    rng = np.random.default_rng(0)
    x, w = rng.standard_normal((2048, 896)), rng.standard_normal((896, 4864))
    flops = 2 * x.shape[0] * x.shape[1] * w.shape[1]
    cases = {
        "float32": (jax.jit(jnp.dot), jnp.float32),
        "bf16 -> bf16": (jax.jit(jnp.dot), jnp.bfloat16),
        "bf16 -> f32": (jax.jit(lambda a, b: jnp.dot(a, b, preferred_element_type=jnp.float32)), jnp.bfloat16),
    }
    operands = {name: (jnp.asarray(x, dtype), jnp.asarray(w, dtype)) for name, (_, dtype) in cases.items()}
    for name, (fn, _) in cases.items():
        fn(*operands[name]).block_until_ready()
    times = {name: [] for name in cases}
    for _ in range(15):
        for name, (fn, _) in cases.items():
            start = time.perf_counter()
            fn(*operands[name]).block_until_ready()
            times[name].append(time.perf_counter() - start)
    print(f"# {platform.processor() or platform.machine()}, jax {jax.__version__}\n")
    print("| dot | GFLOP/s | vs float32 |")
    print("| --- | ---: | ---: |")
    base = statistics.median(times["float32"])
    for name in cases:
        median = statistics.median(times[name])
        print(f"| {name} | {flops / median / 1e9:.0f} | {base / median:.2f}x |")


if __name__ == "__main__":
    main()
