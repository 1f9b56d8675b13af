"""`layertap report RUN`: the run's figures as one self-contained HTML file and PNGs beside it.

layertap report gs://bucket/runs/arc-0                     # -> ./layertap-report-arc-0/report.html
layertap report runs/arc-0 --tasks 007bbfb7,00d62c1b --layer 12 --quantity pca:1
layertap report runs/arc-0 --quantity direction:sae.safetensors --tensor W_dec --feature 1234
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from layertap.errors import LayerTapError


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("run", help="the run's directory or gs:// prefix (its output.uri); a finished run")
    parser.add_argument(
        "--output",
        type=Path,
        help="the report's directory, replaced if it holds an earlier report (default: ./layertap-report-<run name>)",
    )
    parser.add_argument(
        "--layers",
        type=_layers_flag,
        help="layers of the statistics figures, e.g. 10-23 or 3,5,7 (default: all stored; 6 evenly spread if more)",
    )
    parser.add_argument("--site", default="resid_post", help="the site every figure reads (default: %(default)s)")
    arc = parser.add_argument_group("ARC grids (runs of an ARC dataset with positions: all)")
    arc.add_argument(
        "--tasks",
        type=lambda text: [t.strip() for t in text.split(",") if t.strip()],
        help="comma-separated task ids to draw (default: the first 3 tasks of the run)",
    )
    arc.add_argument(
        "--layer", type=int, help="the layer whose quantity is drawn over the grids (default: the last stored)"
    )
    arc.add_argument(
        "--quantity",
        default="norm",
        help="per cell: norm (the token's L2 norm), pca:K (its K-th principal component over the drawn grid tokens) "
        "or direction:FILE (its component along a vector in a .npy or .safetensors file; default: %(default)s)",
    )
    arc.add_argument(
        "--feature", type=int, help="direction:FILE holds a matrix (an SAE's W_dec [F, W] or W_enc [W, F]): feature N"
    )
    arc.add_argument("--tensor", help="direction:FILE is a .safetensors file with several tensors: this one")


def _layers_flag(text: str) -> list[int]:
    """--layers for argparse: a bad value is a usage error (exit 2, no traceback)."""
    from layertap.run.config import parse_layers

    try:
        return parse_layers(text)
    except LayerTapError as error:
        raise argparse.ArgumentTypeError(str(error).removeprefix(f"--layers {text!r}: ")) from None


def run(args: argparse.Namespace) -> int:
    from layertap.report.build import Options, build_report, check_output, default_output, write_report
    from layertap.store.reader import open_run

    started = time.perf_counter()
    output = args.output if args.output is not None else default_output(args.run)
    check_output(output.resolve())  # before the work, not after
    options = Options(
        layers=args.layers,
        site=args.site,
        tasks=args.tasks,
        grid_layer=args.layer,
        quantity=args.quantity,
        feature=args.feature,
        tensor=args.tensor,
    )
    report = build_report(open_run(args.run), options)
    html = write_report(report, output)
    print(
        f"layertap report: {len(report.sections)} figures in {time.perf_counter() - started:.1f} s; "
        f"open {html} (PNGs beside it)"
    )
    return 0


def write_report_for(uri: str, output: Path, **options) -> Path:
    """The report of a finished run with these Options, written to `output` (the demo's call)."""
    from layertap.report.build import Options, build_report, write_report
    from layertap.store.reader import open_run

    return write_report(build_report(open_run(uri), Options(**options)), output)
