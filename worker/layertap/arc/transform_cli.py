"""`layertap transform`: BARC / Hugging Face / ARC-style data -> ARC-AGI JSON.

layertap transform barc_heavy.jsonl out/ --test-pairs 1 --skip-invalid
layertap transform hf_export/ out/ --layout kaggle --max-samples 10000
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import get_args

from layertap.arc.readers import ROW_SUFFIXES, ArcFormat, read_tasks
from layertap.arc.records import Split
from layertap.arc.transform import write_tasks
from layertap.data.invalid import ReadStats
from layertap.errors import LayerTapError
from layertap.humanize import plural
from layertap.io.sources import list_sources


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "input", help="file or directory (local or gs://): ARC JSON, Kaggle *_challenges.json, .jsonl[.gz] or .parquet"
    )
    parser.add_argument(
        "output", type=Path, help="directory to write (created if missing; must be empty, see --overwrite)"
    )
    parser.add_argument(
        "--format",
        choices=["auto", *get_args(ArcFormat)],
        default="auto",
        help="input format (default: from the file names)",
    )
    parser.add_argument(
        "--layout",
        choices=["files", "kaggle"],
        default="files",
        help="files: tasks/<id>.json + solutions.json; kaggle: challenges.json + solutions.json",
    )
    parser.add_argument(
        "--test-pairs",
        type=int,
        default=1,
        metavar="N",
        help="for unsplit BARC examples: the last N pairs become test pairs (default 1)",
    )
    parser.add_argument("--max-samples", type=int, default=None, metavar="N", help="stop after writing N tasks")
    parser.add_argument(
        "--no-dedupe", dest="dedupe", action="store_false", help="keep tasks whose grids repeat an earlier task's"
    )
    parser.add_argument(
        "--skip-invalid", action="store_true", help="skip and count invalid records instead of stopping"
    )
    parser.add_argument("--overwrite", action="store_true", help="replace what the output directory holds")


def detect_format(uri: str) -> str:
    names = [source.file_name for source in list_sources(uri, (".json", *ROW_SUFFIXES), "dataset")]
    if any(name.endswith("challenges.json") for name in names):
        return "arc-kaggle"
    if any(name.endswith(ROW_SUFFIXES) for name in names):
        return "barc-jsonl"
    if any(name.endswith(".json") for name in names):
        return "arc-json"
    raise LayerTapError(f"{uri}: cannot tell the format from the file names; pass --format")


def run(args: argparse.Namespace) -> int:
    if args.test_pairs < 1:
        raise LayerTapError("--test-pairs must be at least 1")
    if args.max_samples is not None and args.max_samples < 1:
        raise LayerTapError("--max-samples must be at least 1")
    fmt = detect_format(args.input) if args.format == "auto" else args.format
    reading = ReadStats()
    tasks = read_tasks(args.input, fmt, split=Split(args.test_pairs), skip_invalid=args.skip_invalid, stats=reading)
    stats = write_tasks(
        tasks, args.output, layout=args.layout, dedupe=args.dedupe, max_tasks=args.max_samples, overwrite=args.overwrite
    )
    print(
        f"{args.input} ({fmt}): {plural(reading.read, 'task')} read, {reading.skipped} invalid skipped; "
        f"{stats} to {args.output}",
        file=sys.stderr,
    )
    for example in reading.examples:
        print(f"  skipped: {example}", file=sys.stderr)
    if stats.written == 0:
        print(
            f"layertap transform: warning: no task was written to {args.output}; is {args.input} empty, or is "
            "--format (or --skip-invalid) wrong?",
            file=sys.stderr,
        )
    return 0
