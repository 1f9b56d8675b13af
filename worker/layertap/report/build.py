"""A report built whole in memory (every input checked first), then written in one rename:
a bad layer, site, task or direction leaves nothing behind, and neither does a crash."""

from __future__ import annotations

import re
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

from layertap.errors import LayerTapError
from layertap.report import data, figures, quantity
from layertap.report.html import Section, render
from layertap.report.stats import layer_statistics
from layertap.store.layout import DEFAULT_SITE
from layertap.store.reader import Run

HTML_NAME = "report.html"


@dataclass(frozen=True)
class Options:
    layers: list[int] | None = None  # statistics figures; None: all stored (a spread if many)
    site: str = DEFAULT_SITE
    tasks: list[str] | None = None  # ARC tasks drawn; None: the first DEFAULT_TASKS
    grid_layer: int | None = None  # the layer of the grids' quantity; None: the last stored
    quantity: str = "norm"  # norm | pca:K | direction:FILE
    feature: int | None = None  # direction:FILE holding a matrix: the feature (row or column)
    tensor: str | None = None  # direction:FILE.safetensors with several tensors: which one


@dataclass(frozen=True)
class Report:
    title: str
    summary: list[tuple[str, str]]
    notes: list[str]
    sections: list[Section]


def run_name(uri: str) -> str:
    return uri.rstrip("/").rsplit("/", 1)[-1] or "run"


def default_output(uri: str) -> Path:
    return Path(f"layertap-report-{run_name(uri)}")


def build_report(run: Run, options: Options) -> Report:
    """Check every input, then gather and draw; nothing is written."""
    data.check_finished(run)
    data.check_site(run, options.site)
    layers = data.choose_layers(run, options.layers)
    site = options.site
    grid_layer = run.layers[-1] if options.grid_layer is None else options.grid_layer
    data.check_layer(run, grid_layer, "--layer")
    drawn = quantity.parse_quantity(
        options.quantity, data.width(run, site), feature=options.feature, tensor=options.tensor
    )
    arc = data.is_arc(run)
    if options.tasks and not arc:
        meta = run.meta
        raise LayerTapError(
            f"--tasks: {run.uri} has no ARC grids to draw (dataset.format "
            f"{(meta.get('dataset') or {}).get('format')!r}, "
            f"extraction.positions {(meta.get('extraction') or {}).get('positions', 'all')!r}; grids need an ARC "
            "format and positions: all)"
        )
    chosen: dict[str, int] = {}
    if arc:
        samples = data.index_samples(run)
        chosen = data.choose_tasks(run, samples, options.tasks)

    names = data.segment_names(run)
    stats, origin = layer_statistics(run, layers, site)
    sections = [
        _section(
            figures.norm_distributions(stats, f"Token norm distribution per layer ({site})"),
            "norm-distributions.png",
            "The share of tokens in each bin of L2 norm, per layer, over every stored token; the legend gives "
            "each layer's median.",
        ),
        _section(
            figures.outlier_dimensions(stats, f"Outlier dimensions ({site})"),
            "outlier-dimensions.png",
            "Left: each dimension's largest magnitude over all tokens (a massive dimension is a spike). Right: for "
            "the dimensions most often extreme, the share of tokens where |x_d| exceeds 10x the token's RMS.",
        ),
        _section(
            figures.norm_by_position(stats, f"Token norm by position ({site})"),
            "norm-by-position.png",
            "Mean L2 norm (band: ± one standard deviation) of the tokens at each position in their prompt, "
            "positions bucketed by powers of two.",
        ),
        _section(
            figures.norm_by_segment(stats, names, f"Token norm by prompt segment ({site})"),
            "norm-by-segment.png",
            "Mean L2 norm (bars: ± one standard deviation) of the tokens of each prompt segment; the examples' "
            "grids are pooled into example-input and example-output.",
        ),
    ]
    notes = [f"Statistics of layers {', '.join(map(str, layers))} at site {site}, {origin}."]
    if chosen:
        rows = data.read_samples(run, samples, list(chosen.values()), grid_layer, site)
        values = quantity.token_values(drawn, rows.activations, rows.cell[:, 0] >= 0)
        for task, sample in chosen.items():
            grids = data.sample_grids(rows, values, sample, names)
            meta = samples.meta[sample]
            copy = f", augmented copy {meta['copy']}" if meta.get("copy") else ""
            title = f"Task {task}: grids and {drawn.label} at layer {grid_layer} ({site})"
            sections.append(
                _section(
                    figures.task_grids(grids, quantity=drawn.label, signed=drawn.signed, title=title),
                    f"task-{_safe(task)}.png",
                    f"Sample {sample} (test input {meta.get('test_index', 0)}{copy}): each grid of the prompt in ARC's "
                    f"colours, and under it the {drawn.label} of the token at each cell (grey: no token starts there).",
                )
            )
        notes.append(f"Grids: {drawn.label} of layer {grid_layer} at site {site}, tasks {', '.join(chosen)}.")
    elif arc:
        notes.append("No ARC task ids in the samples' provenance: no grids drawn.")
    title = f"LayerTap report: {run_name(run.uri)}"
    return Report(title, data.summary(run), notes, sections)


def _section(figure, filename: str, caption: str) -> Section:
    return Section(figure.get_suptitle(), caption, filename, figures.png(figure), figures.pixels(figure))


def _safe(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]", "_", name)


def check_output(output: Path) -> None:
    """Refuse to replace a directory that holds something other than an earlier report."""
    if output.exists() and (not output.is_dir() or (any(output.iterdir()) and not (output / HTML_NAME).is_file())):
        raise LayerTapError(f"--output: {output} exists and is not a LayerTap report; choose another directory")


def write_report(report: Report, output: Path) -> Path:
    """The HTML and the PNGs in a fresh directory beside `output`, then renamed into place
    (an earlier report there is replaced). Returns the HTML's path."""
    output = Path(output).resolve()
    check_output(output)
    output.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{output.name}.", dir=output.parent))
    try:
        staging.chmod(0o755)  # mkdtemp's 0700 would hide the report from everyone else
        for section in report.sections:
            (staging / section.filename).write_bytes(section.png)
        (staging / HTML_NAME).write_text(render(report.title, report.summary, report.sections, report.notes))
        if output.exists():
            old = Path(tempfile.mkdtemp(prefix=f".{output.name}.old.", dir=output.parent))
            output.rename(old / output.name)
            staging.rename(output)
            shutil.rmtree(old, ignore_errors=True)
        else:
            staging.rename(output)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return output / HTML_NAME
