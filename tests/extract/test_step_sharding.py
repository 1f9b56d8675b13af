"""The extraction step needs no communication between data-parallel devices: each device's
rows, activations, statistics and the gather of what it stores stay on it (a gather across
hosts in every step would stall a TPU pod, and on CPU timed out gloo in the simulated
cluster)."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

PROGRAM = textwrap.dedent(
    """
    import re, sys, tempfile
    import jax, jax.numpy as jnp, numpy as np
    from jax.sharding import Mesh, NamedSharding, PartitionSpec as P
    from layertap.extract.compact import Gather
    from layertap.extract.step import make_step
    from layertap.model import LayerTap, load_checkpoint, make_extract_fn, write_random_checkpoint

    config, params = load_checkpoint(write_random_checkpoint(tempfile.mkdtemp(), seed=1))
    mesh = Mesh(np.array(jax.devices()).reshape(4, 1), ("data", "model"))
    replicated = jax.tree.map(lambda _: NamedSharding(mesh, P()), params)
    rows, length, per_row = 8, 64, 2
    for mode in ("all", "last"):
        tap = LayerTap.for_model([1, 3], config.num_hidden_layers, sites=["attn_z", "mlp_hidden", "resid_post"])
        step = make_step(make_extract_fn(config, tap, jnp.float32, jnp.float32), mode, jnp.float32, mesh, replicated)
        entries = length if mode == "all" else per_row
        batch = {name: np.ones((rows, length), np.int32) for name in ("token_ids", "positions", "segment_ids")}
        if mode != "all":
            batch["weights"] = np.ones((rows, per_row, length), np.float32)
        batch |= {"stored": np.ones((rows, entries), np.float32), "labels": np.zeros((rows, entries), np.int32),
                  "entry_positions": np.zeros((rows, entries), np.int32)}
        text = step.lower(params, batch).compile().as_text()
        found = sorted(set(re.findall(r"all-gather|all-to-all|all-reduce|collective-permute|reduce-scatter", text)))
        print(mode, found)
        # the gather of what is stored: each device's entries from its own rows
        shapes = jax.eval_shape(step, params, batch)["acts"]
        acts = {
            site: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=NamedSharding(mesh, P(None, "data")))
            for site, x in shapes.items()
        }
        take = jax.ShapeDtypeStruct((4, 24), jnp.int32, sharding=NamedSharding(mesh, P("data")))
        out = {
            site: jax.ShapeDtypeStruct(
                (x.shape[0], 4, 24, *x.shape[3:]), x.dtype, sharding=NamedSharding(mesh, P(None, "data"))
            )
            for site, x in shapes.items()
        }
        text = Gather(mesh).program.lower(acts, take, out).compile().as_text()
        found = sorted(set(re.findall(r"all-gather|all-to-all|all-reduce|collective-permute|reduce-scatter", text)))
        print("gather", mode, found)
    """
)


def test_the_step_keeps_every_device_s_rows_on_it():
    env = {**os.environ, "XLA_FLAGS": "--xla_force_host_platform_device_count=4", "JAX_PLATFORMS": "cpu"}
    result = subprocess.run([sys.executable, "-c", PROGRAM], env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.split("\n")[-5:-1] == ["all []", "gather all []", "last []", "gather last []"], result.stdout
