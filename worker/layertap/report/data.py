"""What the report shows, gathered from a run: pure functions of a Run, no drawing.

Only what a figure needs is read: the per-layer statistics come from `stats.py`, and the ARC
grids read one layer of the drawn samples alone, from the shards their sidecars name.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np

from layertap.errors import LayerTapError
from layertap.store import dtypes, layout
from layertap.store.reader import Run
from layertap.store.records import TokenRecords

ARC_FORMATS = ("arc-json", "arc-kaggle", "barc-jsonl")
MAX_DEFAULT_LAYERS = 6  # more stored layers than this: an even spread of them, first and last included
DEFAULT_TASKS = 3
_EXAMPLE = re.compile(r"example-(\d+)-(input|output)")


def check_finished(run: Run) -> None:
    """The report describes a whole run: one without its manifest may still grow."""
    if not run.finalized:
        raise LayerTapError(
            f"{run.uri} is still being written (no {layout.MANIFEST_KEY} yet); the report reads a finished run: "
            "wait for the extraction to finish, or resume it with the same `layertap extract` command"
        )


def summary(run: Run) -> list[tuple[str, str]]:
    """The run at a glance, as (label, value) rows."""
    meta = run.meta
    model = meta.get("model") or {}
    dataset = meta.get("dataset") or {}
    shapes = run.manifest.get("shapes") or {}
    sites = ", ".join(f"{site} {tuple(shapes[site]) if site in shapes else ''}".strip() for site in run.sites)
    positions = (meta.get("extraction") or {}).get("positions", "all")
    return [
        ("run", run.uri),
        ("model", str(model.get("uri", "?"))),
        ("dataset", f"{dataset.get('uri', '?')} ({dataset.get('format', '?')})"),
        ("layers", ", ".join(map(str, run.layers))),
        ("sites", sites),
        ("tokens", f"{run.num_tokens:,} (positions: {positions})"),
        ("storage dtype", run.storage_dtype),
        ("shards", f"{len(run.shards):,} ({run.manifest.get('total_bytes', 0) / 2**20:,.1f} MiB)"),
    ]


def choose_layers(run: Run, requested: Sequence[int] | None) -> list[int]:
    """The layers the statistics figures show: those asked for, or all stored (an even
    spread of MAX_DEFAULT_LAYERS when there are more)."""
    stored = run.layers
    if requested:
        missing = [layer for layer in requested if layer not in stored]
        if missing:
            raise LayerTapError(f"--layers: layer {missing[0]} is not stored in {run.uri} (layers: {stored})")
        return sorted(set(requested))
    if len(stored) <= MAX_DEFAULT_LAYERS:
        return list(stored)
    picks = np.unique(np.round(np.linspace(0, len(stored) - 1, MAX_DEFAULT_LAYERS)).astype(int))
    return [stored[i] for i in picks]


def check_layer(run: Run, layer: int, flag: str) -> None:
    if layer not in run.layers:
        raise LayerTapError(f"{flag}: layer {layer} is not stored in {run.uri} (layers: {run.layers})")


def check_site(run: Run, site: str) -> None:
    if site not in run.sites:
        raise LayerTapError(f"--site: site {site!r} is not stored in {run.uri} (sites: {', '.join(run.sites)})")


def width(run: Run, site: str) -> int:
    """Values in one token's row at `site`, flattened (attn_z: heads x head size)."""
    return int(np.prod(run.shape(site)))


def segment_names(run: Run) -> dict[int, str]:
    """Segment label -> name (the run's meta stores name -> label; older runs a list)."""
    names = run.meta.get("segment_names") or {}
    if isinstance(names, list):
        return dict(enumerate(names))
    return {int(label): name for name, label in names.items()}


def is_arc(run: Run) -> bool:
    """An ARC run whose every token is stored, so that its grids can be drawn."""
    meta = run.meta
    return (meta.get("dataset") or {}).get("format") in ARC_FORMATS and (meta.get("extraction") or {}).get(
        "positions", "all"
    ) == "all"


@dataclass(frozen=True)
class SampleIndex:
    """Every stored sample's provenance, and the shard that holds its rows (a sample is never
    split across shards)."""

    meta: dict[int, dict]  # sample index -> what the reader recorded (ARC: task_id, copy, ...)
    shard: dict[int, int]  # sample index -> position in run.shards


def index_samples(run: Run) -> SampleIndex:
    """Read every shard's sidecar (small JSON files, 16 at a time; checked by the reader)."""
    with ThreadPoolExecutor(16) as pool:
        sidecars = list(pool.map(lambda shard: run._sidecar(shard.entry["samples"])["samples"], run.shards))
    meta, shard = {}, {}
    for position, samples in enumerate(sidecars):
        for index, provenance in samples.items():
            meta[int(index)] = provenance
            shard[int(index)] = position
    return SampleIndex(dict(sorted(meta.items())), shard)


def choose_tasks(run: Run, samples: SampleIndex, requested: Sequence[str] | None) -> dict[str, int]:
    """Task id -> the sample drawn for it: its original (copy 0) if stored, first test input.
    Default: the first DEFAULT_TASKS tasks in dataset order."""
    first: dict[str, int] = {}
    # original copies first, then dataset order: a task's drawn prompt is its unaugmented one
    for index, meta in sorted(samples.meta.items(), key=lambda item: (item[1].get("copy", 0) != 0, item[0])):
        task = meta.get("task_id")
        if task is not None:
            first.setdefault(str(task), index)
    if not requested:
        ordered = sorted(first.items(), key=lambda item: item[1])
        return dict(ordered[:DEFAULT_TASKS])
    missing = [task for task in requested if task not in first]
    if missing:
        known = sorted(first, key=first.get)
        shown = ", ".join(known[:8]) + (f", ... ({len(known)} in all)" if len(known) > 8 else "")
        raise LayerTapError(f"--tasks: task {missing[0]!r} is not in {run.uri} (its tasks: {shown or 'none'})")
    return {task: first[task] for task in dict.fromkeys(requested)}


def read_samples(run: Run, samples: SampleIndex, chosen: Sequence[int], layer: int, site: str) -> TokenRecords:
    """The rows of `layer` at `site` of the chosen samples, float32: only their shards are read
    (the token columns, then the layer's tensor, each one ranged read)."""
    wanted = np.asarray(sorted(chosen), np.int64)
    parts = []
    for position in sorted({samples.shard[int(index)] for index in wanted}):
        shard = run.shards[position]
        columns = {name: shard.read(name) for name in layout.TOKEN_COLUMNS}
        mask = np.isin(columns["sample_index"], wanted)
        values = shard.read(layout.layer_tensor(layer, site))[mask]
        scale = shard.read(layout.scale_tensor(layer, site))[mask] if run.storage_dtype == "int8" else None
        parts.append(TokenRecords(dtypes.decode(values, scale, np.float32), **{k: v[mask] for k, v in columns.items()}))
    if not parts:
        return TokenRecords.empty(run.shape(site), np.float32)
    return TokenRecords.concatenate(parts)


@dataclass(frozen=True)
class Grid:
    """One prompt grid rebuilt from its tokens' cells."""

    name: str  # the segment's name: example-1-input, test-input, ...
    colours: np.ndarray  # [H, W] int, -1 where no token starts at the cell
    values: np.ndarray  # [H, W] float, the quantity of the cell's token; nan where none


def grid_order(name: str) -> tuple[int, int]:
    """Examples in order, input before output; then the test input and the answer."""
    match = _EXAMPLE.fullmatch(name)
    if match:
        return int(match.group(1)), match.group(2) == "output"
    return 10**6, {"test-input": 0, "answer": 1}.get(name, 2)


def sample_grids(rows: TokenRecords, values: np.ndarray, sample: int, names: dict[int, str]) -> list[Grid]:
    """The grids of one sample: its grid-cell tokens grouped by segment, each cell coloured as
    stored and valued by `values` (one per row of `rows`)."""
    on_grid = (rows.sample_index == sample) & (rows.cell[:, 0] >= 0)
    grids = []
    for label in np.unique(rows.segment[on_grid]):
        name = names.get(int(label), f"segment {int(label)}")
        here = on_grid & (rows.segment == label)
        cell = rows.cell[here].astype(np.int64)
        shape = (int(cell[:, 0].max()) + 1, int(cell[:, 1].max()) + 1)
        colours, grid_values = np.full(shape, -1, np.int64), np.full(shape, np.nan)
        colours[cell[:, 0], cell[:, 1]] = cell[:, 2]
        grid_values[cell[:, 0], cell[:, 1]] = values[here]
        grids.append(Grid(name, colours, grid_values))
    return sorted(grids, key=lambda grid: grid_order(grid.name))
