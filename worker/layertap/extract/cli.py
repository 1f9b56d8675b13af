"""`layertap extract`: run an extraction from a YAML config; flags override its fields."""

from __future__ import annotations

import argparse

from layertap.humanize import plural
from layertap.run import cli as command_line


def add_arguments(parser: argparse.ArgumentParser) -> None:
    command_line.add_arguments(parser, command_line.EXTRACT)


def run(args: argparse.Namespace) -> int:
    from layertap.extract.runner import execute, prepare

    return command_line.run_command(args, command_line.EXTRACT, prepare, execute, stopped, finished)


def stopped(summary) -> str:
    return (
        f"stopped by {summary.stopped} after {plural(summary.steps_run, 'step')}; what they computed is committed, "
        "and the same command resumes"
    )


def finished(prepared, summary) -> str:
    if summary.steps_run == 0:  # a rerun of a complete run: no rate or step times to give
        return f"nothing left to run: the {plural(summary.steps_skipped, 'step')} were done already"
    return (
        f"{plural(summary.steps_run, 'step')} run ({summary.steps_skipped} already done), "
        f"{summary.tokens_per_second:,.0f} useful tokens/s (compilation {summary.compile_seconds:.1f} s apart), "
        f"{summary.padding_fraction:.1%} padding\n"
        f"  seconds per step: {summary.times.per_step()}"
    )
