"""The `layertap` command line: a thin dispatcher over subcommand modules.

Each subcommand lives in its own module exposing `add_arguments(parser)` and
`run(args) -> int`; modules are imported only when their command runs, so
`layertap --help` stays fast and never imports JAX.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import sys

from layertap.errors import LayerTapError, is_disk_full
from layertap_api.contract import EXIT_INTERRUPTED, EXIT_INVALID, EXIT_SUCCESS, TERMINATION_LOG

# name -> (module, one-line help)
COMMANDS: dict[str, tuple[str, str]] = {
    "extract": ("layertap.extract.cli", "extract residual-stream activations to a local path or gs://"),
    "predict": (
        "layertap.predict.cli",
        "answer ARC tasks: generate, vote over augmented views, write a Kaggle submission",
    ),
    "demo": ("layertap.demo", "build a tiny random Qwen2 + tokenizer and run an extraction on it"),
    "transform": ("layertap.arc.transform_cli", "turn BARC / Hugging Face ARC-style data into ARC-AGI JSON"),
    "verify": ("layertap.store.verify_cli", "check every shard of a run against its checksums"),
    "score": ("layertap.arc.score_cli", "score an ARC Prize submission.json against the solutions"),
    "report": ("layertap.report.cli", "draw a finished run's figures: one self-contained HTML file and PNGs"),
}


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    parser = argparse.ArgumentParser(prog="layertap", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name, (_, help_text) in COMMANDS.items():
        sub.add_parser(name, help=help_text, add_help=False)
    if not argv or argv[0] not in COMMANDS:
        parser.parse_args(argv)  # prints usage / the error and exits
        return 2

    name = argv[0]
    # Warnings (skipped records, shards recomputed) read like the errors, without a logger name.
    logging.basicConfig(format=f"layertap {name}: %(levelname)s: %(message)s", level=logging.WARNING)
    # LayerTap uses transformers for tokenizers only: its advice to install PyTorch is noise here.
    os.environ.setdefault("TRANSFORMERS_NO_ADVISORY_WARNINGS", "1")
    module = importlib.import_module(COMMANDS[name][0])
    command_parser = argparse.ArgumentParser(prog=f"layertap {name}", description=COMMANDS[name][1])
    module.add_arguments(command_parser)
    args = command_parser.parse_args(argv[1:])
    try:
        return int(module.run(args) or EXIT_SUCCESS)
    except LayerTapError as error:
        message = f"layertap {name}: error: {error}"
        print(message, file=sys.stderr)
        tell_the_cluster(message)
        return EXIT_INVALID
    except Exception as error:  # a bug or a transient failure: the traceback follows, the pod is retried
        if is_disk_full(error):  # a retry would not help
            where = f": {error.filename}" if error.filename else ""
            message = (
                f"layertap {name}: error: the disk is full ({error.strerror}{where}); free some space or write "
                "elsewhere, then run the same command again (extract and predict resume)"
            )
            print(message, file=sys.stderr)
            tell_the_cluster(message)
            return EXIT_INVALID
        tell_the_cluster(f"layertap {name}: {type(error).__name__}: {str(error).splitlines()[0] if str(error) else ''}")
        raise
    except KeyboardInterrupt:
        print(f"layertap {name}: interrupted; rerun the same command to resume", file=sys.stderr)
        return EXIT_INTERRUPTED


def tell_the_cluster(message: str) -> None:
    """Why this worker fails, where Kubernetes and the operator look: the pod's termination
    message and the resource's status.lastError (both only inside a cluster)."""
    write_termination_message(message)
    from layertap.run.reporter import StatusReporter

    reporter = StatusReporter.from_environment()
    if reporter is not None:
        reporter.report_error(message, pod=os.environ.get("HOSTNAME"))


def write_termination_message(message: str) -> None:
    """In a Kubernetes container, tell the cluster why this process failed (the pod's status
    carries it, and the operator puts it in the resource's status); elsewhere, nothing."""
    try:
        fd = os.open(TERMINATION_LOG, os.O_WRONLY | os.O_TRUNC)  # no O_CREAT: only where the kubelet made it
    except OSError:
        return
    with os.fdopen(fd, "w", encoding="utf-8") as log:
        log.write(message[-4096:])


if __name__ == "__main__":
    sys.exit(main())
