"""The jitted step: a packed batch in, the activations to store out, on the mesh.

The output holds each captured site, [L, R, T, ...] for `all`; `last` and `mean` reduce each
packed sample to one value on device ([L, R, K, ...]), which cuts the device-to-host copy
by a factor of about T / K.
"""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from layertap.extract.statistics import row_statistics
from layertap.run.mesh import DATA, rows_sharding

Step = Callable[[dict, dict[str, jax.Array]], dict[str, jax.Array]]


def make_step(extract_fn, mode: str, out_dtype, mesh: Mesh, param_shardings: dict, statistics: bool = True) -> Step:
    """extract_fn: the model's pure `(params, token_ids, positions, segment_ids) -> {site: [L,B,T,...]}`,
    returning float32 for the pooled modes (pooling happens before the cast to out_dtype).
    `statistics=False` (benchmarks only: what the statistics cost) leaves them out."""

    def step(params: dict, batch: dict[str, jax.Array]) -> dict[str, dict[str, jax.Array]]:
        acts = extract_fn(params, batch["token_ids"], batch["positions"], batch["segment_ids"])
        if mode != "all":  # weights [B, K, T]: one-hot at the last kept token, or 1/n over the kept tokens
            acts = {
                site: jnp.einsum("lbt...,bkt->lbk...", acts_lbt_, batch["weights"], precision=jax.lax.Precision.HIGHEST)
                for site, acts_lbt_ in acts.items()
            }
        acts = {site: a.astype(out_dtype) for site, a in acts.items()}
        # statistics of exactly the values the writer gets (int8: before quantisation), per row
        stats = {
            site: row_statistics(acts_lbw_, batch["stored"], batch["labels"], batch["entry_positions"])
            for site, acts_lbw_ in acts.items()
            if statistics
        }
        return {"acts": acts, "stats": stats}

    batch_shardings = {
        "token_ids": rows_sharding(mesh, 2),
        "positions": rows_sharding(mesh, 2),
        "segment_ids": rows_sharding(mesh, 2),
    }
    if mode != "all":
        batch_shardings["weights"] = rows_sharding(mesh, 3)
    for name in ("stored", "labels", "entry_positions"):
        batch_shardings[name] = rows_sharding(mesh, 2)
    # every output's rows split over the data axis, whatever its rank ([L, R, T, D], attn_z: one
    # more; the statistics [L, R, ...])
    return jax.jit(
        step, in_shardings=(param_shardings, batch_shardings), out_shardings=NamedSharding(mesh, P(None, DATA))
    )
