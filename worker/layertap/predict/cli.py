"""`layertap predict`: answer ARC tasks from a YAML config (mode predict); flags override it."""

from __future__ import annotations

import argparse

from layertap.humanize import plural
from layertap.run import cli as command_line


def add_arguments(parser: argparse.ArgumentParser) -> None:
    command_line.add_arguments(parser, command_line.PREDICT)


def run(args: argparse.Namespace) -> int:
    from layertap.predict.runner import execute, prepare

    return command_line.run_command(args, command_line.PREDICT, prepare, execute, stopped, finished)


def stopped(summary) -> str:
    return f"stopped by {summary.stopped}; the answers committed are kept, and the same command resumes"


def finished(prepared, summary) -> str:
    """The lines a finished prediction ends with: what ran, where the outputs are, the score."""
    rate = summary.tokens_generated / summary.generate_seconds if summary.generate_seconds else 0.0
    dropped = prepared.dropped.total()
    over = f", {dropped} views over dataset.maxTokens" if dropped else ""
    if summary.units_skipped == len(prepared.units):  # a rerun of a complete prediction: no rate to give
        ran = (
            f"{plural(len(prepared.tasks), 'task')}; nothing left to generate: "
            f"the {plural(len(prepared.units), 'answer')} were committed already{over}"
        )
    else:
        ran = (
            f"{plural(len(prepared.tasks), 'task')}, {plural(len(prepared.units), 'answer')} "
            f"({summary.units_skipped} already committed{over}); "
            f"{summary.tokens_generated:,} tokens generated at {rate:,.0f} tokens/s "
            f"(compilation {summary.compile_seconds:.1f} s apart, prompt buckets {sorted(summary.buckets)}; "
            f"rows split over {plural(summary.devices, 'device')} per process)"
        )
    lines = [ran, *(f"  {name}: {uri}" for name, uri in summary.outputs.items())]
    if summary.score is not None:
        lines.append(f"  score: {summary.score:.3f} (ARC Prize metric, 2 attempts per test input)")
    return "\n".join(lines)
