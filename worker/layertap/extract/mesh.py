"""The device mesh (data, model) and where parameters and batches live on it.

Default: pure data parallel (a 0.5B model fits one chip); each device holds a full copy of
the parameters and a slice of the rows. A model axis > 1 splits attention heads and the MLP
across devices (Megatron style) and must divide the query and KV head counts. A data axis
given in the spec must match the devices the run really has.
"""

from __future__ import annotations

import jax
from jax.sharding import AxisType, Mesh, NamedSharding
from jax.sharding import PartitionSpec as P
from layertap_api.spec import MeshSpec

from layertap.errors import LayerTapError

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


def make_mesh(spec: MeshSpec, num_heads: int, num_kv_heads: int) -> Mesh:
    """The (data, model) mesh of `resources.mesh` over every device of the run."""
    devices, model_parallel = jax.device_count(), spec.model
    # --model-parallel on the command line, resources.mesh.model in a resource
    fix = "; choose a --model-parallel (resources.mesh.model) that divides it"
    if model_parallel < 1 or devices % model_parallel:
        raise LayerTapError(f"model parallelism {model_parallel} does not divide the {devices} devices{fix}")
    if spec.data is not None and spec.data * model_parallel != devices:
        raise LayerTapError(
            f"resources.mesh: data x model = {spec.data} x {model_parallel} = {spec.data * model_parallel} devices, "
            f"but this run has {devices}; unset mesh.data to use every device"
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
        (devices // model_parallel, model_parallel), (DATA, MODEL), axis_types=(AxisType.Auto, AxisType.Auto)
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
