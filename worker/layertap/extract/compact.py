"""Only the stored values leave the device.

A step's output holds every position of every row: [L, R, T, ...] per site for `all`,
[L, R, K, ...] for the pooled modes (K: the most samples of one row). Most of it may be
padding, excluded tokens or empty pooled slots. A second, small program gathers each
data-parallel device's stored entries, in row order, into a compact buffer
[L, data, C, ...] (C: the step's capacity), and only that buffer crosses to the host: into
pinned memory on an accelerator, on a transfer stream that overlaps the next step.

The forward compiles once per shape; the gather once per (shape, capacity). The capacities
are chosen before the run from every step's stored count (the plan and the kept-token masks
fix them), as few as keep each step's spare room under SLACK (at most MAX_CAPACITIES per
shape, the room doubled until they suffice), so the steady state compiles nothing and
moves at most a few % more bytes than it stores.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from layertap.run.mesh import DATA

SLACK = 0.03  # the most spare room a capacity leaves over the count it serves
MAX_CAPACITIES = 8  # per shape: gathers compile in well under a second each, but not for free
ALIGN = 8  # capacities are multiples of this (and at least this)


def device_blocks(rows: Sequence, data_devices: int) -> list[Sequence]:
    """A step's rows (or one process's) split into the equal blocks the data-parallel
    devices hold, in device order."""
    per_device = len(rows) // data_devices
    return [rows[d * per_device : (d + 1) * per_device] for d in range(data_devices)]


def stored_count(rows: Sequence[tuple[int, ...]], stored_per_sample: Mapping[int, int]) -> int:
    """Entries a block of rows stores: kept tokens (`all`) or samples (pooled), as
    `stored_per_sample` counts them."""
    return sum(stored_per_sample[index] for row in rows for index in row)


def choose_capacities(
    counts: Sequence[int], slack: float = SLACK, most: int = MAX_CAPACITIES, align: int = ALIGN
) -> list[int]:
    """The fewest capacities (ascending) such that every count fits one that is at most
    `slack` above it (after rounding up to `align`): from the largest count down, a new
    capacity starts whenever the current one would leave too much room. More than `most`
    of them: the same with twice the room."""
    chosen: list[int] = []
    for count in sorted(set(counts), reverse=True):
        if not chosen or chosen[-1] > _room(count, slack, align):
            chosen.append(_aligned(count, align))
    return sorted(chosen) if len(chosen) <= most else choose_capacities(counts, 2 * slack, most, align)


def fit(count: int, capacities: Sequence[int]) -> int:
    """The smallest capacity that holds `count`."""
    for capacity in capacities:
        if capacity >= count:
            return capacity
    raise ValueError(f"no capacity holds {count} entries (largest {max(capacities, default=0)})")


def step_capacities(
    steps: Sequence[Sequence[tuple[int, ...]]],
    shapes: Sequence[tuple[int, int]],
    stored_per_sample: Mapping[int, int],
    data_devices: int,
) -> list[int]:
    """Each step's capacity: its devices' largest stored count, fitted to the capacities
    chosen for its shape (the gather compiles once per shape and capacity)."""
    needed = [
        max(stored_count(block, stored_per_sample) for block in device_blocks(rows, data_devices)) for rows in steps
    ]
    by_shape: dict[tuple[int, int], list[int]] = {}
    for shape, count in zip(shapes, needed, strict=True):
        by_shape.setdefault(shape, []).append(count)
    ladders = {shape: choose_capacities(counts) for shape, counts in by_shape.items()}
    return [fit(count, ladders[shape]) for shape, count in zip(shapes, needed, strict=True)]


def _gather(acts: dict[str, jax.Array], take_dc: jax.Array) -> dict[str, jax.Array]:
    """site -> [L, R, W, ...] sharded by rows over `data`, take [data, C] int32 (each device's
    entries as flat indices into its own rows' R/data x W) -> site -> [L, data, C, ...], each
    device's block on it. A batched gather over the data axis: no device reads another's rows."""
    data = take_dc.shape[0]
    out = {}
    for site, x in acts.items():
        L, R, W = x.shape[:3]
        blocks = x.reshape(L, data, (R // data) * W, *x.shape[3:])
        out[site] = jax.vmap(lambda block, take: block[:, take], in_axes=(1, 0), out_axes=1)(blocks, take_dc)
    return out


class Gather:
    """The jitted gather into recycled buffers: a buffer handed back (`recycle`) is donated to
    a later step's gather of the same shape, the oldest first. On a CPU this is 3x faster
    than filling fresh memory (a new buffer of hundreds of MB is page-faulted in on every
    step); elsewhere it spares the allocator. A donated buffer still viewed from NumPy (the
    writer's, until its shard is durable) is copied by JAX instead, never overwritten. At
    most `keep` buffers wait in the pool.

    Programs: the gather per (input shape, capacity), and a buffer of zeros per capacity
    (its first use); both per instance, so a run compiles exactly `programs(...)` of them."""

    def __init__(self, mesh: Mesh, keep: int = 4) -> None:
        self.sharding = NamedSharding(mesh, P(None, DATA))
        # `out` is kept though unused: the donated buffer is the memory XLA writes the output into
        self.program = jax.jit(
            lambda acts, take, out: _gather(acts, take), out_shardings=self.sharding, donate_argnums=2, keep_unused=True
        )
        self._zeros = jax.jit(
            lambda shapes: {site: jax.numpy.zeros(shape, dtype) for site, shape, dtype in shapes},
            static_argnums=0,
            out_shardings=self.sharding,
        )
        self._free: list[dict[str, jax.Array]] = []
        self._keep = keep

    def __call__(self, acts: dict[str, jax.Array], take_dc: jax.Array) -> dict[str, jax.Array]:
        shapes = tuple((site, (x.shape[0], *take_dc.shape, *x.shape[3:]), x.dtype) for site, x in acts.items())
        out = next((b for b in self._free if _shapes(b) == shapes), None)
        if out is None:
            out = self._zeros(shapes)
        else:
            self._free = [b for b in self._free if b is not out]
        return self.program(acts, take_dc, out)

    @staticmethod
    def programs(shapes_and_capacities: Sequence[tuple[tuple[int, int], int]]) -> int:
        """The programs a run of steps with these (shape, capacity) compiles."""
        return len(set(shapes_and_capacities)) + len({capacity for _, capacity in shapes_and_capacities})

    def recycle(self, buffers: dict[str, jax.Array]) -> None:
        self._free = [*self._free, buffers][-self._keep :]


def host_memory_kind(device: jax.Device) -> str | None:
    """Where a step's compact output goes on the host: pinned memory on an accelerator
    (the bus's full speed, on a transfer stream; NumPy then reads it without a copy), None
    on a CPU, whose device memory is host memory already."""
    if device.platform == "cpu":
        return None
    kinds = {memory.kind for memory in device.addressable_memories()}
    return "pinned_host" if "pinned_host" in kinds else None


def to_host(compact: dict[str, jax.Array], memory_kind: str | None) -> dict[str, jax.Array]:
    """Start the compact buffers' device-to-host copy (asynchronous); `memory_kind` None
    leaves them where they are."""
    if memory_kind is None:
        return compact
    return {site: jax.device_put(x, x.sharding.with_memory_kind(memory_kind)) for site, x in compact.items()}


def host_parts(compact: dict[str, jax.Array], counts: Mapping[int, int]) -> list[dict[str, np.ndarray]]:
    """This process's stored values, one part per data-parallel device it holds (by data
    index, ascending): site -> [L, n, ...], views of the transferred buffers (no copy; a
    device's shards on other model-parallel devices are the same values, read once).
    counts: data index -> the entries that device stored."""
    parts: dict[int, dict[str, np.ndarray]] = {}
    for site, x in compact.items():
        seen = set()
        for shard in x.addressable_shards:
            d = shard.index[1].start or 0
            if d in seen:
                continue
            seen.add(d)
            parts.setdefault(d, {})[site] = np.asarray(shard.data)[:, 0, : counts[d]]
    return [parts[d] for d in sorted(parts)]


def _shapes(buffers: Mapping[str, jax.Array]) -> tuple:
    return tuple((site, tuple(x.shape), x.dtype) for site, x in buffers.items())


def _aligned(count: int, align: int) -> int:
    return max(align, -(-count // align) * align)


def _room(count: int, slack: float, align: int) -> int:
    """The largest capacity that serves `count` with at most `slack` spare room."""
    return max(_aligned(count, align), int(count * (1 + slack)))
