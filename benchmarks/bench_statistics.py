"""What the running statistics cost: the extraction step with and without them, on CPU.

The step (forward, statistics per row, cast to the storage dtype) at Qwen2.5-0.5B's layer
shapes (hidden 896, 14 query / 2 KV heads, MLP 4864; a random checkpoint of --blocks
blocks, every block tapped, so the statistics' share is as large as it gets: with the
default 24 blocks and 14 tapped it is smaller), positions `all`, one site or all seven.
Step times are medians of interleaved rounds in one process; the host's merge of the
partials (`statistics.from_rows`) is timed on the step's real output.

    .venv/bin/python benchmarks/bench_statistics.py
    .venv/bin/python benchmarks/bench_statistics.py --rows 4 --length 512 --repeats 9
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

from bench_forward import QWEN25_05B, cpu_name, timed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--blocks", type=int, default=4)
    parser.add_argument("--rows", type=int, default=4)
    parser.add_argument("--length", type=int, default=512)
    parser.add_argument("--repeats", type=int, default=7)
    args = parser.parse_args()

    import jax
    import jax.numpy as jnp
    import numpy as np
    from jax.sharding import Mesh, NamedSharding
    from jax.sharding import PartitionSpec as P

    from layertap.extract.step import make_step
    from layertap.model import LayerTap, load_checkpoint, make_extract_fn, write_random_checkpoint
    from layertap.run.mesh import host_rows
    from layertap.store import statistics as merge

    shapes = {k: v for k, v in QWEN25_05B.items() if k != "num_hidden_layers"}
    with tempfile.TemporaryDirectory() as scratch:
        directory = write_random_checkpoint(Path(scratch) / "m", seed=0, num_hidden_layers=args.blocks, **shapes)
        config, params = load_checkpoint(directory, jnp.float32)
    mesh = Mesh(np.array(jax.devices()[:1]).reshape(1, 1), ("data", "model"))
    replicated = jax.tree.map(lambda _: NamedSharding(mesh, P()), params)
    rows, length = args.rows, args.length
    rng = np.random.default_rng(0)
    batch = {
        "token_ids": rng.integers(0, config.vocab_size, (rows, length), dtype=np.int32),
        "positions": np.tile(np.arange(length, dtype=np.int32), (rows, 1)),
        "segment_ids": np.ones((rows, length), np.int32),
        "stored": np.ones((rows, length), np.float32),
        "labels": rng.integers(0, 30, (rows, length), dtype=np.int32),
        "entry_positions": np.tile(np.arange(length, dtype=np.int32), (rows, 1)),
    }
    places = [np.stack([np.full(length, r), np.arange(length), batch["token_ids"][r]], axis=1) for r in range(rows)]
    layers = list(range(args.blocks))
    every = ["resid_pre", "attn_z", "attn_out", "resid_mid", "mlp_hidden", "mlp_out", "resid_post"]
    steps = {}
    for sites in (["resid_post"], every):
        tap = LayerTap.for_model(layers, config.num_hidden_layers, sites=sites)
        fn = make_extract_fn(config, tap, jnp.float32, jnp.bfloat16)
        for stats in (False, True):
            steps[(len(sites), stats)] = make_step(fn, "all", jnp.bfloat16, mesh, replicated, statistics=stats)
    for step in steps.values():
        jax.block_until_ready(step(params, batch))  # compile
    times = {key: [] for key in steps}
    for _ in range(args.repeats):
        for key, step in steps.items():
            times[key].append(timed(lambda step=step: jax.block_until_ready(step(params, batch))))
    print(
        f"\n{cpu_name()}, float32 compute, bfloat16 out, {args.blocks} blocks tapped, {rows} x {length} tokens per "
        f"step, {args.repeats} interleaved rounds\n"
    )
    print("| sites | step ms without | with statistics | ratio | host merge ms |")
    print("| --- | ---: | ---: | ---: | ---: |")
    for n in (1, len(every)):
        without, with_stats = (statistics.median(times[(n, s)]) for s in (False, True))
        out = host_rows(steps[(n, True)](params, batch))
        start = time.perf_counter()
        for partials in out["stats"].values():
            merge.from_rows(partials, places)
        host_ms = (time.perf_counter() - start) * 1e3
        print(f"| {n} | {without * 1e3:.0f} | {with_stats * 1e3:.0f} | {with_stats / without:.3f}x | {host_ms:.1f} |")


if __name__ == "__main__":
    main()
