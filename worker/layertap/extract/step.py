"""The jitted step: a packed batch in, the activations to store out, on the mesh.

`all` returns [L, R, T, D]; `last` and `mean` reduce each packed sample to one vector on
device ([L, R, K, D]), which cuts the device-to-host copy by a factor of about T / K.
"""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from layertap.extract.mesh import DATA, rows_sharding

Step = Callable[[dict, dict[str, jax.Array]], jax.Array]


def make_step(extract_fn, mode: str, out_dtype, mesh: Mesh, param_shardings: dict) -> Step:
    """extract_fn: the model's pure `(params, token_ids, positions, segment_ids) -> [L,B,T,D]`,
    returning float32 for the pooled modes (pooling happens before the cast to out_dtype)."""

    def step(params: dict, batch: dict[str, jax.Array]) -> jax.Array:
        acts_lbtd = extract_fn(params, batch["token_ids"], batch["positions"], batch["segment_ids"])
        if mode == "all":
            return acts_lbtd.astype(out_dtype)
        # weights [B, K, T]: one-hot at the last kept token, or 1/n over the kept tokens.
        pooled_lbkd = jnp.einsum(
            "lbtd,bkt->lbkd", acts_lbtd.astype(jnp.float32), batch["weights"], precision=jax.lax.Precision.HIGHEST
        )
        return pooled_lbkd.astype(out_dtype)

    batch_shardings = {
        "token_ids": rows_sharding(mesh, 2),
        "positions": rows_sharding(mesh, 2),
        "segment_ids": rows_sharding(mesh, 2),
    }
    if mode != "all":
        batch_shardings["weights"] = rows_sharding(mesh, 3)
    return jax.jit(
        step,
        in_shardings=(param_shardings, batch_shardings),
        out_shardings=NamedSharding(mesh, P(None, DATA, None, None)),
    )


def global_batch(arrays: dict, mesh: Mesh, rows_per_step: int) -> dict[str, jax.Array]:
    """Global arrays built from this process's rows only."""
    return {
        name: jax.make_array_from_process_local_data(
            rows_sharding(mesh, local.ndim), local, (rows_per_step, *local.shape[1:])
        )
        for name, local in arrays.items()
    }


def host_rows(out: jax.Array) -> np.ndarray:
    """[L, r, ., D] numpy of the rows this process holds (one copy of each), in row order."""
    by_start = {}
    for shard in out.addressable_shards:
        by_start.setdefault(shard.index[1].start or 0, shard)
    return np.concatenate([np.asarray(by_start[start].data) for start in sorted(by_start)], axis=1)
