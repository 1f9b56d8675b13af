"""The device mesh (data, model) and where parameters and batches live on it.

Default: pure data parallel (a 0.5B model fits one chip); each device holds a full copy of
the parameters and a slice of the rows. A model axis > 1 splits attention heads and the MLP
across devices (Megatron style) and must divide the query and KV head counts. A data axis
given in the spec must match the devices the run really has.
"""

from __future__ import annotations

import jax
import numpy as np
from jax.sharding import AxisType, Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from layertap.errors import LayerTapError
from layertap_api.spec import MeshSpec

DATA, MODEL = "data", "model"

# Trailing-axis specs by parameter name (leading axes, e.g. a stacked layer axis, stay whole).
_MODEL_PARALLEL_SPECS = {
    "q_kernel": (None, MODEL, None),  # [D, heads, head_dim]
    "k_kernel": (None, MODEL, None),
    "v_kernel": (None, MODEL, None),
    "q_bias": (MODEL, None),  # [heads, head_dim]
    "k_bias": (MODEL, None),
    "v_bias": (MODEL, None),
    "o_kernel": (MODEL, None, None),  # [heads, head_dim, D]
    "gate_kernel": (None, MODEL),  # [D, F]
    "up_kernel": (None, MODEL),
    "down_kernel": (MODEL, None),  # [F, D]
}


def make_mesh(spec: MeshSpec, num_heads: int, num_kv_heads: int, *, local: bool = False) -> Mesh:
    """The (data, model) mesh of `resources.mesh` over every device of the run, or (`local`)
    over this process's devices only: a program on it runs on this host alone, with no
    collective across hosts (generation, where each process answers its own units)."""
    devices = jax.local_devices() if local else jax.devices()
    model_parallel = spec.model
    # --model-parallel on the command line, resources.mesh.model in a resource
    fix = "; choose a --model-parallel (resources.mesh.model) that divides it"
    if model_parallel < 1 or len(devices) % model_parallel:
        raise LayerTapError(f"model parallelism {model_parallel} does not divide the {len(devices)} devices{fix}")
    if not local and spec.data is not None and spec.data * model_parallel != len(devices):
        raise LayerTapError(
            f"resources.mesh: data x model = {spec.data} x {model_parallel} = {spec.data * model_parallel} devices, "
            f"but this run has {len(devices)}; unset mesh.data to use every device"
        )
    if jax.local_device_count() % model_parallel:
        # A model group spanning hosts would make two hosts hold (and write) the same rows.
        raise LayerTapError(
            f"model parallelism {model_parallel} must divide the {jax.local_device_count()} devices of one host{fix}"
        )
    for what, heads in (("attention heads", num_heads), ("KV heads", num_kv_heads)):
        if heads % model_parallel:
            raise LayerTapError(f"model parallelism {model_parallel} does not divide the model's {heads} {what}{fix}")
    # Auto axes: the compiler propagates shardings through the model from those of the
    # inputs and parameters (the model code carries no sharding annotations).
    return jax.make_mesh(
        (len(devices) // model_parallel, model_parallel),
        (DATA, MODEL),
        axis_types=(AxisType.Auto, AxisType.Auto),
        devices=devices,
    )


def param_shardings(params: dict, mesh: Mesh) -> dict:
    """A NamedSharding per parameter: replicated, or split over `model` when that axis is > 1."""
    split = mesh.shape[MODEL] > 1

    def spec(path, leaf) -> NamedSharding:
        name = getattr(path[-1], "key", str(path[-1]))
        trailing = _MODEL_PARALLEL_SPECS.get(name) if split else None
        if trailing is None:
            return NamedSharding(mesh, P())
        return NamedSharding(mesh, P(*((None,) * (leaf.ndim - len(trailing)) + trailing)))

    return jax.tree_util.tree_map_with_path(spec, params)


def rows_sharding(mesh: Mesh, ndim: int) -> NamedSharding:
    """Arrays whose leading axis is the batch row: split over `data`."""
    return NamedSharding(mesh, P(DATA, *(None,) * (ndim - 1)))


def local_rows(mesh: Mesh, rows: int) -> slice:
    """The contiguous block of a step's rows that this process's devices hold."""
    index_map = rows_sharding(mesh, 1).addressable_devices_indices_map((rows,))
    starts = sorted({index[0].indices(rows)[:2] for index in index_map.values()})
    lo, hi = starts[0][0], starts[-1][1]
    covered = sum(stop - start for start, stop in starts)
    if covered != hi - lo:
        raise RuntimeError(f"this process's rows are not contiguous: {starts}")
    return slice(lo, hi)


def global_batch(arrays: dict, mesh: Mesh, rows_per_step: int) -> dict[str, jax.Array]:
    """Global arrays built from this process's rows only."""
    return {
        name: jax.make_array_from_process_local_data(
            rows_sharding(mesh, local.ndim), local, (rows_per_step, *local.shape[1:])
        )
        for name, local in arrays.items()
    }


def host_rows(out: dict) -> dict:
    """The same dict (of dicts) of [L, r, ...] numpy: the rows this process holds (one copy of
    each), in row order."""

    def rows(array: jax.Array) -> np.ndarray:
        by_start = {}
        for shard in array.addressable_shards:
            by_start.setdefault(shard.index[1].start or 0, shard)
        return np.concatenate([np.asarray(by_start[start].data) for start in sorted(by_start)], axis=1)

    return jax.tree.map(rows, out)
