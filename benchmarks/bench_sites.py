"""The extra cost of each site over resid_post alone: the extraction forward on CPU at the
real Qwen2.5-0.5B shapes, layers 10-23 (the default), float32.

For each configuration (resid_post alone; resid_post plus one other site; every site) the
jitted forward returns what that configuration stores, so the time includes keeping the
site's values alive and writing them out of the computation, but not the device-to-host copy
or the storage. Configurations are timed interleaved, round by round, and each is reported as
the ratio of its median step time to resid_post's, from the same run. Also timed: sites
that let the last block stop early (attn_out alone, resid_pre alone), which cost less.

    .venv/bin/python benchmarks/bench_sites.py                  # T=512, B=1, 5 rounds
    .venv/bin/python benchmarks/bench_sites.py --length 2048 --repeats 3
"""

from __future__ import annotations

import argparse
import math
import statistics
import tempfile
from pathlib import Path

from bench_forward import LAYERS, QWEN25_05B, cpu_name, timed

CONFIGS = {
    "resid_post": ["resid_post"],
    "+ resid_pre": ["resid_pre", "resid_post"],
    "+ attn_z": ["attn_z", "resid_post"],
    "+ attn_out": ["attn_out", "resid_post"],
    "+ resid_mid": ["resid_mid", "resid_post"],
    "+ mlp_hidden": ["mlp_hidden", "resid_post"],
    "+ mlp_out": ["mlp_out", "resid_post"],
    "all seven": ["resid_pre", "attn_z", "attn_out", "resid_mid", "mlp_hidden", "mlp_out", "resid_post"],
    "attn_out alone": ["attn_out"],
    "resid_pre alone": ["resid_pre"],
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--length", type=int, default=512)
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=5, help="timed rounds (each times every configuration once)")
    args = parser.parse_args()

    import jax
    import jax.numpy as jnp
    import numpy as np

    from layertap.model import LayerTap, load_checkpoint, make_extract_fn, write_random_checkpoint
    from layertap.model.tap import site_shape

    with tempfile.TemporaryDirectory() as scratch:
        directory = write_random_checkpoint(Path(scratch) / "qwen2.5-0.5b-random", seed=0, **QWEN25_05B)
        config, params = load_checkpoint(directory, jnp.float32, blocks=max(LAYERS) + 1)
    shape = (args.batch, args.length)
    ids = np.random.default_rng(0).integers(0, config.vocab_size, size=shape, dtype=np.int32)
    inputs = (
        jnp.asarray(ids),
        jnp.broadcast_to(jnp.arange(args.length, dtype=jnp.int32), shape),
        jnp.ones(shape, jnp.int32),
    )

    forwards, compile_s, out_mb = {}, {}, {}
    for name, sites in CONFIGS.items():
        tap = LayerTap.for_model(LAYERS, config.num_hidden_layers, sites=sites)
        jitted = jax.jit(make_extract_fn(config, tap, jnp.float32))
        compile_s[name] = timed(
            lambda name=name, jitted=jitted: forwards.setdefault(name, jitted.lower(params, *inputs).compile())
        )
        jax.block_until_ready(forwards[name](params, *inputs))
        values = sum(math.prod(site_shape(site, config)) for site in tap.sites) * len(LAYERS) * args.batch * args.length
        out_mb[name] = values * 4 / 2**20
    times: dict[str, list[float]] = {name: [] for name in CONFIGS}
    for _ in range(args.repeats):
        for name, forward in forwards.items():
            times[name].append(timed(lambda forward=forward: jax.block_until_ready(forward(params, *inputs))))

    base = statistics.median(times["resid_post"])
    print(
        f"\n{cpu_name()}, {len(jax.devices())} CPU device, float32, layers 10-23, B={args.batch}, T={args.length}, "
        f"{args.repeats} interleaved rounds\n"
    )
    fastest = min(times["resid_post"])
    print("| sites | output MiB | step ms (median) | vs resid_post | fastest vs fastest | compile s |")
    print("| --- | ---: | ---: | ---: | ---: | ---: |")
    for name in CONFIGS:
        median = statistics.median(times[name])
        print(
            f"| {name} | {out_mb[name]:.0f} | {median * 1e3:.0f} | {median / base:.3f}x "
            f"| {min(times[name]) / fastest:.3f}x | {compile_s[name]:.1f} |"
        )


if __name__ == "__main__":
    main()
