"""`layertap extract`: run an extraction from a YAML config; flags override its fields."""

from __future__ import annotations

import argparse
import sys

from layertap.run import cli as command_line
from layertap_api.contract import EXIT_INTERRUPTED


def add_arguments(parser: argparse.ArgumentParser) -> None:
    command_line.add_arguments(parser, command_line.EXTRACT)


def run(args: argparse.Namespace) -> int:
    import jax

    from layertap.extract.runner import execute, prepare

    _, summary = command_line.run_command(args, command_line.EXTRACT, prepare, execute)
    if summary.stopped:
        print(
            f"layertap extract: stopped by {summary.stopped} after {summary.steps_run} steps; what they computed "
            "is committed, and the same command resumes",
            file=sys.stderr,
            flush=True,
        )
        return EXIT_INTERRUPTED
    if jax.process_index() == 0:
        print(
            f"layertap extract: {summary.steps_run} steps run ({summary.steps_skipped} already done), "
            f"{summary.tokens_per_second:,.0f} useful tokens/s (compilation {summary.compile_seconds:.1f} s apart), "
            f"{summary.padding_fraction:.1%} padding\n"
            f"  seconds per step: {summary.times.per_step()}",
            flush=True,
        )
    return 0
