"""`layertap verify RUN`: read every shard of a run and check it against its commit record."""

from __future__ import annotations

import argparse
import sys

from layertap.humanize import plural


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("run", help="the run's directory or gs:// prefix (its output.uri)")


def run(args: argparse.Namespace) -> int:
    from layertap.store.reader import open_run

    opened = open_run(args.run)
    problems = opened.problems()
    for problem in problems:
        print(f"layertap verify: {problem}", file=sys.stderr)
    state = "finalized" if opened.finalized else "not finalized: the committed shards so far"
    total = sum(shard.entry["bytes"] for shard in opened.shards)
    if problems:
        print(
            f"layertap verify: {args.run}: {plural(len(problems), 'problem')} "
            f"in {plural(len(opened.shards), 'shard')} ({state})"
        )
        return 1
    print(
        f"layertap verify: {args.run}: {plural(len(opened.shards), 'shard')}, {opened.num_tokens} rows, {total} bytes: "
        f"every size and CRC32C matches ({state})"
    )
    return 0
