"""`layertap predict`: answer ARC tasks from a YAML config (mode predict); flags override it."""

from __future__ import annotations

import argparse
import sys

from layertap.run import cli as command_line
from layertap_api.contract import EXIT_INTERRUPTED


def add_arguments(parser: argparse.ArgumentParser) -> None:
    command_line.add_arguments(parser, command_line.PREDICT)


def run(args: argparse.Namespace) -> int:
    import jax

    from layertap.predict.runner import execute, prepare

    prepared, summary = command_line.run_command(args, command_line.PREDICT, prepare, execute)
    if summary.stopped:
        print(
            f"layertap predict: stopped by {summary.stopped}; the answers committed are kept, and the same "
            "command resumes",
            file=sys.stderr,
            flush=True,
        )
        return EXIT_INTERRUPTED
    if jax.process_index() == 0:
        print(describe(prepared, summary), flush=True)
    return 0


def describe(prepared, summary) -> str:
    """The lines a finished prediction ends with: what ran, where the outputs are, the score."""
    rate = summary.tokens_generated / summary.generate_seconds if summary.generate_seconds else 0.0
    dropped = prepared.dropped.total()
    over = f", {dropped} views over dataset.maxTokens" if dropped else ""
    lines = [
        f"layertap predict: {len(prepared.tasks)} tasks, {len(prepared.units)} answers "
        f"({summary.units_skipped} already committed{over}); "
        f"{summary.tokens_generated:,} tokens generated at {rate:,.0f} tokens/s "
        f"(compilation {summary.compile_seconds:.1f} s apart, prompt buckets {sorted(summary.buckets)}; "
        f"rows split over {summary.devices} device{'s' if summary.devices != 1 else ''} per process)",
        *(f"  {name}: {uri}" for name, uri in summary.outputs.items()),
    ]
    if summary.score is not None:
        lines.append(f"  score: {summary.score:.3f} (ARC Prize metric, 2 attempts per test input)")
    return "\n".join(lines)
