"""The report's figures, one function each, drawn by matplotlib's Agg renderer.

Figures are `matplotlib.figure.Figure`s made directly (no pyplot: no global state, no GUI
backend) at a fixed size: DPI x the inches below is their size in pixels, in the PNG and on
the page. Each function takes the data and the title it shows.
"""

from __future__ import annotations

import io
import re
from collections.abc import Mapping

import matplotlib
import numpy as np
from matplotlib.colors import ListedColormap, Normalize
from matplotlib.figure import Figure

from layertap.report.data import Grid

DPI = 100
STATS_INCHES = (10.0, 4.5)  # the four statistics figures: 1000 x 450 pixels
PANEL_INCHES = 1.6  # one grid of an ARC task
# ARC's colours 0-9, as the ARC app draws them
ARC_COLOURS = (
    "#000000",
    "#0074D9",
    "#FF4136",
    "#2ECC40",
    "#FFDC00",
    "#AAAAAA",
    "#F012BE",
    "#FF851B",
    "#7FDBFF",
    "#870C25",
)
NO_TOKEN = "#E6E6E6"  # a cell no token starts at (a tokenizer merged it into the cell before)
CELL_LINES = "#555555"
_EXAMPLE = re.compile(r"example-(\d+)-(input|output)")


def png(figure: Figure) -> bytes:
    """The figure as PNG bytes, DPI x its inches in pixels."""
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=DPI)
    return buffer.getvalue()


def pixels(figure: Figure) -> tuple[int, int]:
    """(width, height) of the figure's PNG."""
    width, height = figure.get_size_inches()
    return round(width * DPI), round(height * DPI)


def _layer_colours(layers) -> dict[int, tuple]:
    palette = matplotlib.colormaps["viridis"]
    steps = np.linspace(0.0, 0.85, len(layers)) if len(layers) > 1 else [0.0]  # the lightest yellows are unreadable
    return {layer: palette(step) for layer, step in zip(layers, steps)}


def _figure(title: str, inches=STATS_INCHES, layout: str | None = "constrained") -> Figure:
    figure = Figure(figsize=inches, dpi=DPI, layout=layout)
    figure.suptitle(title, fontsize=13, fontweight="bold")
    return figure


def norm_distributions(stats: Mapping[int, object], title: str) -> Figure:
    """Per layer, the share of tokens in each norm bin (log-spaced, from the histograms)."""
    figure = _figure(title)
    ax = figure.add_subplot()
    colours = _layer_colours(list(stats))
    low, high = np.inf, 0.0
    for layer, s in stats.items():
        counts, edges = np.asarray(s.norm_counts, float), np.asarray(s.norm_edges, float).copy()
        total = counts.sum()
        if total == 0:
            continue
        # the outer bins reach 0 and infinity: draw them one bin wide, as their neighbours
        if edges[0] <= 0:
            edges[0] = edges[1] ** 2 / edges[2]
        if not np.isfinite(edges[-1]):
            edges[-1] = edges[-2] ** 2 / edges[-3]
        used = np.flatnonzero(counts)
        low, high = min(low, edges[max(used[0] - 1, 0)]), max(high, edges[min(used[-1] + 2, len(edges) - 1)])
        median = s.norm_quantile(0.5)
        ax.stairs(
            counts / total, edges, color=colours[layer], linewidth=1.6, label=f"layer {layer} (median {median:.3g})"
        )
    ax.set_xscale("log")
    if high > low:
        ax.set_xlim(low, high)
    ax.set_xlabel("token L2 norm (log scale; bins 2^(1/16) wide)")
    ax.set_ylabel("share of tokens")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="upper left")
    return figure


def outlier_dimensions(stats: Mapping[int, object], title: str, *, top: int = 5, columns: int = 12) -> Figure:
    """Left: every dimension's largest |x_d| per layer (massive dimensions stand out as spikes).
    Right: for the layers' top outlier dimensions, the share of tokens where |x_d| exceeds 10x
    the token's RMS."""
    figure = _figure(title)
    left, right = figure.subplots(1, 2, width_ratios=[3, 2])
    colours = _layer_colours(list(stats))
    for layer, s in stats.items():
        left.plot(np.arange(len(s.absmax)), s.absmax, color=colours[layer], linewidth=0.9, label=f"layer {layer}")
    peak = np.max([np.asarray(s.absmax, float) for s in stats.values()], axis=0)
    for d in np.argsort(-peak)[:3]:  # name up to three dimensions that stand out
        if peak[d] > 3 * np.median(peak):
            left.annotate(f"d{d}", (d, peak[d]), textcoords="offset points", xytext=(2, 2), fontsize=8)
    left.set_yscale("log")
    left.set_xlabel("dimension")
    left.set_ylabel("max |x_d| over tokens")
    left.set_title("largest magnitude per dimension", fontsize=10)
    left.grid(alpha=0.3)
    left.legend(fontsize=8)

    dims: dict[int, float] = {}
    for s in stats.values():
        for entry in s.outlier_dims(top=top):
            dims[entry["dim"]] = max(dims.get(entry["dim"], 0.0), entry["fraction"])
    chosen = sorted(dims, key=lambda d: (-dims[d], -max(float(s.absmax[d]) for s in stats.values())))[:columns]
    chosen = [d for d in chosen if dims[d] > 0] or chosen  # extreme ones only, when there are any
    share = np.array([[float(s.extreme_fraction[d]) for d in chosen] for s in stats.values()])
    image = right.imshow(
        share, cmap="magma_r", vmin=0.0, vmax=float(share.max()) if share.any() else 1.0, aspect="auto"
    )
    right.set_xticks(range(len(chosen)), [f"d{d}" for d in chosen], rotation=90, fontsize=8)
    right.set_yticks(range(len(stats)), [f"layer {layer}" for layer in stats], fontsize=8)
    right.set_title("share of tokens with |x_d| > 10x the token's RMS", fontsize=10)
    if share.any():
        figure.colorbar(image, ax=right, fraction=0.08)
        if share.size <= 100:
            for (r, c), value in np.ndenumerate(share):
                right.text(
                    c,
                    r,
                    f"{value:.0%}" if value >= 0.005 else "",
                    ha="center",
                    va="center",
                    fontsize=7,
                    color="white" if value > 0.6 * share.max() else "black",
                )
    else:
        # |x_d| <= sqrt(W) x the RMS, so below 101 dimensions no token can pass 10x
        width = len(next(iter(stats.values())).absmax)
        why = f"\n(impossible at width {width}:\n|x_d| <= sqrt({width}) x RMS)" if width <= 100 else ""
        right.text(
            0.5,
            0.5,
            f"no token at these layers{why}",
            transform=right.transAxes,
            ha="center",
            va="center",
            fontsize=10,
            bbox={"facecolor": "white", "alpha": 0.8, "edgecolor": "none"},
        )
    return figure


def norm_by_position(stats: Mapping[int, object], title: str) -> Figure:
    """Mean token norm (± one standard deviation) per position bucket: 0, 1, 2-3, 4-7, ..."""
    figure = _figure(title)
    ax = figure.add_subplot()
    colours = _layer_colours(list(stats))
    starts = sorted({int(b["start"]) for s in stats.values() for b in s.norm_by_position if b["count"]})
    where = {start: i for i, start in enumerate(starts)}
    labels = {}
    for layer, s in stats.items():
        buckets = [b for b in s.norm_by_position if b["count"]]
        x = np.array([where[int(b["start"])] for b in buckets])
        mean, std = np.array([b["mean"] for b in buckets]), np.array([b["std"] for b in buckets])
        ax.plot(x, mean, marker="o", markersize=3, color=colours[layer], label=f"layer {layer}")
        ax.fill_between(x, mean - std, mean + std, color=colours[layer], alpha=0.12, linewidth=0)
        for b in buckets:
            last = int(b["end"]) - 1  # end is exclusive
            labels[int(b["start"])] = str(b["start"]) if last <= int(b["start"]) else f"{b['start']}-{last}"
    ax.set_xticks(range(len(starts)), [labels[start] for start in starts], rotation=45, fontsize=8)
    ax.set_xlabel("token position in its prompt")
    ax.set_ylabel("token L2 norm (mean ± std)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return figure


def segment_groups(stats: Mapping[int, object], names: Mapping[int, str]) -> dict[str, dict[int, dict]]:
    """Segment name -> layer -> (count, mean, std), the examples pooled into example-input and
    example-output (exactly: counts, sums and sums of squares add up)."""
    order = ["other", "system", "example-input", "example-output", "test-input", "answer", "generated"]
    pooled: dict[str, dict[int, list[float]]] = {}
    for layer, s in stats.items():
        for label, moments in sorted(s.norm_by_segment.items()):
            if not moments["count"]:
                continue
            name = names.get(int(label), f"segment {label}")
            match = _EXAMPLE.fullmatch(name)
            group = f"example-{match.group(2)}" if match else name
            n, mean, std = moments["count"], moments["mean"], moments["std"]
            sums = pooled.setdefault(group, {}).setdefault(layer, [0.0, 0.0, 0.0])
            sums[0] += n
            sums[1] += n * mean
            sums[2] += n * (std**2 + mean**2)
    groups = sorted(pooled, key=lambda g: (order.index(g) if g in order else len(order), g))
    out = {}
    for group in groups:
        out[group] = {}
        for layer, (n, total, squares) in pooled[group].items():
            mean = total / n
            out[group][layer] = {"count": int(n), "mean": mean, "std": float(np.sqrt(max(squares / n - mean**2, 0.0)))}
    return out


def norm_by_segment(stats: Mapping[int, object], names: Mapping[int, str], title: str) -> Figure:
    """Mean token norm (± one standard deviation) per prompt segment, one bar per layer."""
    figure = _figure(title)
    ax = figure.add_subplot()
    groups = segment_groups(stats, names)
    colours = _layer_colours(list(stats))
    bar = 0.8 / max(len(stats), 1)
    for i, layer in enumerate(stats):
        x = [g for g, group in enumerate(groups.values()) if layer in group]
        values = [groups[name][layer] for name in groups if layer in groups[name]]
        ax.bar(
            np.array(x) + (i - (len(stats) - 1) / 2) * bar,
            [v["mean"] for v in values],
            bar,
            yerr=[v["std"] for v in values],
            color=colours[layer],
            label=f"layer {layer}",
            error_kw={"elinewidth": 0.8, "capsize": 2},
        )
    tokens = [sum(v["count"] for v in group.values()) // max(len(group), 1) for group in groups.values()]
    ax.set_xticks(range(len(groups)), [f"{name}\n{n:,} tokens" for name, n in zip(groups, tokens)], fontsize=8)
    ax.set_ylabel("token L2 norm (mean ± std)")
    ax.grid(alpha=0.3, axis="y")
    ax.legend(fontsize=8)
    return figure


def task_layout(grids: list[Grid]) -> list[tuple[str, Grid | None, Grid | None]]:
    """Columns of a task's figure: (heading, input grid, output grid), examples then the test."""
    by_name = {grid.name: grid for grid in grids}
    examples = sorted({int(m.group(1)) for m in map(_EXAMPLE.fullmatch, by_name) if m})
    columns = [
        (f"example {k}", by_name.get(f"example-{k}-input"), by_name.get(f"example-{k}-output")) for k in examples
    ]
    if "test-input" in by_name or "answer" in by_name:
        columns.append(("test", by_name.get("test-input"), by_name.get("answer")))
    return columns


TASK_MARGINS = {"left": 0.35, "right": 1.1, "top": 0.65, "bottom": 0.1}  # inches: row labels, colour bar, titles


def task_inches(columns: int) -> tuple[float, float]:
    """A task figure's size: one panel per column and row (input, its quantity, output, its
    quantity), plus the margins."""
    m = TASK_MARGINS
    return PANEL_INCHES * max(columns, 2) + m["left"] + m["right"], PANEL_INCHES * 4 + m["top"] + m["bottom"]


def task_grids(grids: list[Grid], *, quantity: str, signed: bool, title: str) -> Figure:
    """A task's grids in ARC colours, each above a heatmap of `quantity` per cell (one colour
    scale for the task; grey: no token starts at the cell)."""
    columns = task_layout(grids)
    # placed by hand: constrained layout over dozens of axes would take most of the report's time
    width, height = task_inches(len(columns))
    figure = _figure(title, (width, height), layout=None)
    m = TASK_MARGINS
    box = {
        "left": m["left"] / width,
        "right": 1 - m["right"] / width,
        "top": 1 - m["top"] / height,
        "bottom": m["bottom"] / height,
    }
    axes = figure.subplots(4, max(len(columns), 2), squeeze=False, gridspec_kw={**box, "wspace": 0.08, "hspace": 0.1})
    values = np.concatenate([g.values[np.isfinite(g.values)] for g in grids] + [np.zeros(0)])
    values = values if len(values) else np.zeros(1)
    if signed:
        bound = float(np.abs(values).max(initial=0.0)) or 1.0
        scale, palette = Normalize(-bound, bound), matplotlib.colormaps["RdBu_r"]
    else:
        low, high = float(values.min()), float(values.max())
        scale, palette = Normalize(low, high if high > low else low + 1.0), matplotlib.colormaps["viridis"]
    palette = palette.with_extremes(bad=NO_TOKEN)
    arc = ListedColormap(ARC_COLOURS).with_extremes(bad=NO_TOKEN)
    mappable = None
    for c, (heading, grid_in, grid_out) in enumerate(columns):
        for r, grid in ((0, grid_in), (2, grid_out)):
            if grid is None:
                axes[r, c].set_axis_off()
                axes[r + 1, c].set_axis_off()
                continue
            _cells(axes[r, c], np.ma.masked_less(grid.colours, 0), arc, Normalize(-0.5, 9.5))
            mappable = _cells(axes[r + 1, c], np.ma.masked_invalid(grid.values), palette, scale)
        axes[0, c].set_title(heading, fontsize=10)
    for c in range(len(columns), axes.shape[1]):
        for r in range(4):
            axes[r, c].set_axis_off()
    for r, label in enumerate(["input", f"input: {quantity}", "output", f"output: {quantity}"]):
        axes[r, 0].set_ylabel(label, fontsize=9)
    if mappable is not None:
        bar = figure.add_axes([box["right"] + 0.2 / width, 0.2, 0.15 / width, 0.6])
        figure.colorbar(mappable, cax=bar, label=quantity)
    return figure


def _cells(ax, values, palette, scale):
    """One grid, one square per cell, thin lines between cells (two line collections: one
    tick per cell would cost more than the rest of the figure)."""
    image = ax.imshow(values, cmap=palette, norm=scale, interpolation="nearest")
    rows, cols = values.shape
    ax.hlines(np.arange(0.5, rows - 1), -0.5, cols - 0.5, color=CELL_LINES, linewidth=0.4)
    ax.vlines(np.arange(0.5, cols - 1), -0.5, rows - 0.5, color=CELL_LINES, linewidth=0.4)
    ax.set_xticks([])
    ax.set_yticks([])
    return image
