"""The worker commands' one command line: a flag table (flag -> spec field), the spec read from
--config or the pod's environment with the flags over it, and the run's prologue and epilogue
(processes joined, devices checked, hub sources shared, metrics served, SIGTERM caught).

`layertap extract` and `layertap predict` differ only in the flags they take, their
`prepare(job)` and `execute(prepared, context)`, and the lines they print at the end.
"""

from __future__ import annotations

import argparse
import os
import re
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, get_args

from layertap.arc.readers import ArcFormat
from layertap.environment import worker_environment
from layertap.errors import LayerTapError
from layertap.run import config as cfg
from layertap_api.contract import ENV_SPEC, EXIT_INTERRUPTED, EXIT_SUCCESS
from layertap_api.spec import (
    SITES,
    ComputeDtype,
    DatasetFormat,
    DatasetSpec,
    OnNonFinite,
    Positions,
    StorageDtype,
    WorkerSpec,
)

EXTRACT, PREDICT = "extract", "predict"
BOTH = (EXTRACT, PREDICT)


def _ids_flag(text: str) -> list[str]:
    """--task-ids a,b,c; spaces around an id are dropped."""
    return [part.strip() for part in text.split(",")]


def _sites_flag(text: str) -> list[str]:
    """--sites for argparse: an unknown site is a usage error naming the choices."""
    sites = [part.strip() for part in text.split(",")]
    unknown = [site for site in sites if site not in SITES]
    if unknown:
        raise argparse.ArgumentTypeError(f"{', '.join(unknown)}: not a site; choose from {', '.join(SITES)}")
    return sites


def _layers_flag(text: str) -> list[int]:
    """--layers for argparse: a bad value is a usage error (exit 2, no traceback)."""
    try:
        return cfg.parse_layers(text)
    except LayerTapError as error:
        raise argparse.ArgumentTypeError(str(error).removeprefix(f"--layers {text!r}: ")) from None


@dataclass(frozen=True)
class Flag:
    """One command-line flag that sets one field of the spec (camelCase, as in the YAML file)."""

    name: str  # e.g. --max-tokens
    spec_field: str  # e.g. dataset.maxTokens
    commands: tuple[str, ...]
    options: dict[str, Any] = field(default_factory=dict)  # argparse's: help, type, choices, ...

    @property
    def dest(self) -> str:
        return self.name.removeprefix("--").replace("-", "_")


def _selection(units: str, commands: tuple[str, ...]) -> list[Flag]:
    """The flags of dataset.select, applied in the order ids, offset, sample, limit."""
    ids_of_text = " (text: record positions from 0)" if EXTRACT in commands else ""  # predict reads ARC only
    return [
        Flag(
            "--task-ids",
            "dataset.select.ids",
            commands,
            {"type": _ids_flag, "help": "comma-separated task ids to keep" + ids_of_text},
        ),
        Flag("--offset", "dataset.select.offset", commands, {"type": int, "help": f"skip the first N {units}"}),
        Flag(
            "--sample",
            "dataset.select.sample",
            commands,
            {"type": int, "help": f"a random subset of N {units} (after --task-ids and --offset)"},
        ),
        Flag("--select-seed", "dataset.select.seed", commands, {"type": int, "help": "seed of --sample (default 0)"}),
        Flag(
            "--limit",
            "dataset.select.limit",
            commands,
            {"type": int, "help": f"keep at most N {units} (after --sample)"},
        ),
    ]


# Every spec flag of both commands, in the order --help lists them. Where the commands need a
# different help text or choices, the flag has a row per command.
FLAGS: tuple[Flag, ...] = (
    Flag("--model", "model.uri", (EXTRACT,), {"help": "checkpoint directory, gs:// URI or hf://ORG/NAME[@REVISION]"}),
    Flag("--model", "model.uri", (PREDICT,), {"help": "checkpoint directory or gs:// URI (with its LM head)"}),
    Flag("--dtype", "model.dtype", BOTH, {"choices": get_args(ComputeDtype), "help": "compute dtype"}),
    Flag(
        "--dataset",
        "dataset.uri",
        (EXTRACT,),
        {"help": "dataset file, gs:// URI or (text formats) hf://ORG/NAME[@REVISION]"},
    ),
    Flag("--dataset", "dataset.uri", (PREDICT,), {"help": "ARC dataset file or gs:// URI"}),
    Flag("--format", "dataset.format", (EXTRACT,), {"choices": get_args(DatasetFormat)}),
    Flag("--format", "dataset.format", (PREDICT,), {"choices": get_args(ArcFormat)}),
    Flag(
        "--column",
        "dataset.column",
        (EXTRACT,),
        {"help": "text formats: the field or column holding the text (default: text)"},
    ),
    Flag("--split", "dataset.split", (EXTRACT,), {"help": "hf:// datasets: the split (default: train)"}),
    Flag(
        "--dataset-config",
        "dataset.config",
        (EXTRACT,),
        {"help": "hf:// datasets: the configuration (the Hub's subset)"},
    ),
    Flag(
        "--max-samples",
        "dataset.maxSamples",
        (EXTRACT,),
        {"type": int, "help": "stop after N prompts (counted after the selection)"},
    ),
    Flag(
        "--max-tasks",
        "dataset.maxSamples",
        (PREDICT,),
        {"type": int, "help": "answer only the first N tasks (after the selection)"},
    ),
    *_selection("tasks (ARC) or records (text)", (EXTRACT,)),
    *_selection("tasks", (PREDICT,)),
    Flag("--max-tokens", "dataset.maxTokens", BOTH, {"type": int, "help": "longest prompt in tokens"}),
    Flag(
        "--over-limit",
        "dataset.overLimit",
        (EXTRACT,),
        {"choices": get_args(DatasetSpec.model_fields["over_limit"].annotation)},
    ),
    Flag(
        "--layers",
        "extraction.layers",
        (EXTRACT,),
        {"type": _layers_flag, "help": "e.g. 10-23 or 3,5,7 (default: the upper part, 10-23 of 24)"},
    ),
    Flag(
        "--sites",
        "extraction.sites",
        (EXTRACT,),
        {"type": _sites_flag, "help": f"comma-separated, from {','.join(SITES)} (default: resid_post)"},
    ),
    Flag("--positions", "extraction.positions", (EXTRACT,), {"choices": get_args(Positions)}),
    Flag(
        "--segments",
        "extraction.segments",
        (EXTRACT,),
        {"type": lambda text: text.split(","), "help": "comma-separated segment names to keep"},
    ),
    Flag(
        "--exclude-special-tokens",
        "extraction.excludeSpecialTokens",
        (EXTRACT,),
        {"action": argparse.BooleanOptionalAction, "default": None, "help": "(default: exclude)"},
    ),
    Flag("--storage-dtype", "extraction.storageDtype", (EXTRACT,), {"choices": get_args(StorageDtype)}),
    Flag("--on-non-finite", "extraction.onNonFinite", (EXTRACT,), {"choices": get_args(OnNonFinite)}),
    Flag(
        "--batch-size", "extraction.batchSize", (EXTRACT,), {"type": int, "help": "rows per step across all processes"}
    ),
    Flag("--output", "output.uri", BOTH, {"help": "output directory or gs:// prefix"}),
    Flag("--shard-size-mb", "output.shardSizeMb", (EXTRACT,), {"type": int}),
    Flag(
        "--compilation-cache",
        "output.compilationCache",
        (EXTRACT,),
        {"help": 'where compiled programs are kept (default: OUTPUT/.jax-cache; "off": nowhere)'},
    ),
    Flag(
        "--hub-cache",
        "output.hubCache",
        BOTH,
        {"help": 'where process 0 shares hf:// files with the others (default: OUTPUT/.hf-cache; "off": nowhere)'},
    ),
    Flag(
        "--max-new-tokens", "prediction.maxNewTokens", (PREDICT,), {"type": int, "help": "token budget of one answer"}
    ),
    Flag(
        "--batch-size",
        "prediction.batchSize",
        (PREDICT,),
        {"type": int, "help": "prompts generated together, across all processes"},
    ),
    Flag(
        "--dihedral",
        "prediction.views.dihedral",
        (PREDICT,),
        {"action": argparse.BooleanOptionalAction, "default": None, "help": "all 8 views (default: yes)"},
    ),
    Flag(
        "--colour-permutations",
        "prediction.views.colourPermutations",
        (PREDICT,),
        {"type": int, "help": "extra colour-permuted copies of the views"},
    ),
    Flag(
        "--temperature", "prediction.sampling.temperature", (PREDICT,), {"type": float, "help": "0: greedy (default)"}
    ),
    Flag("--top-p", "prediction.sampling.topP", (PREDICT,), {"type": float}),
    Flag("--seed", "prediction.sampling.seed", (PREDICT,), {"type": int, "help": "sampling seed"}),
)


def flags_of(command: str) -> list[Flag]:
    return [flag for flag in FLAGS if command in flag.commands]


def add_arguments(parser: argparse.ArgumentParser, command: str) -> argparse._ArgumentGroup:
    """--config, the command's spec flags and the "how to run" flags; returns the last group."""
    parser.add_argument(
        "--config", help=f"YAML file: an ActivationExtraction resource or just its spec (default: ${ENV_SPEC})"
    )
    spec = parser.add_argument_group("spec fields (override the config file)")
    for flag in flags_of(command):
        spec.add_argument(flag.name, **flag.options)
    run = parser.add_argument_group("how to run")
    run.add_argument("--coordinator", help="host:port of process 0 (local multi-process runs)")
    run.add_argument("--num-processes", type=int)
    run.add_argument("--process-id", type=int)
    run.add_argument("--no-progress", action="store_true", help="no progress bar")
    run.add_argument(
        "--model-parallel", type=int, help="size of the mesh's model axis (default: resources.mesh.model, else 1)"
    )
    return run


def job_from_args(args: argparse.Namespace, command: str, env=os.environ) -> WorkerSpec:
    """The validated spec this worker runs: --config (or LAYERTAP_SPEC) with the command's flags
    over it; `layertap predict` runs mode predict whatever the file says."""
    if args.config:
        raw, source = cfg.read_spec_file(args.config), args.config
    elif (spec_json := worker_environment(env).spec_json) is not None:
        raw, source = cfg.parse_spec(spec_json, ENV_SPEC), ENV_SPEC
    else:
        raw, source = {}, "command line"
    raw = cfg.apply_overrides(raw, {flag.spec_field: getattr(args, flag.dest) for flag in flags_of(command)})
    if command == PREDICT:
        raw["mode"] = PREDICT
    try:
        job = cfg.worker_spec(raw, source, model_parallel=args.model_parallel)
    except LayerTapError as error:
        # only the spec's own errors when the flags alone made it; a file's or the pod's spec
        # (and --model-parallel's mesh) name their own fields
        if source != "command line" or not str(error).startswith("command line: "):
            raise
        raise LayerTapError(_naming_flags(str(error), flags_of(command))) from None
    if args.config:  # a resource run by hand: its accelerator is the cluster's, not this machine's
        job = job.model_copy(update={"devices": None})
    return job


def _naming_flags(message: str, flags: list[Flag]) -> str:
    """A spec's validation message with the flag that sets each field it names:
    "dataset.format: Field required" -> "dataset.format (--format): Field required"; a whole
    missing section by the flag of its uri ("dataset (--dataset): Field required")."""
    by_field = {flag.spec_field: flag.name for flag in flags}

    def named(match: re.Match) -> str:
        path = match.group(1)
        flag = by_field.get(path) or by_field.get(f"{path}.uri")
        return f"{path} ({flag}):" if flag else match.group(0)

    return re.sub(r"(?<![\w./])([A-Za-z][\w.]*):", named, message)


def run_command(
    args: argparse.Namespace,
    command: str,
    prepare: Callable[[WorkerSpec], Any],
    execute: Callable[[Any, Any], Any],
    stopped: Callable[[Any], str],
    finished: Callable[[Any, Any], str],
) -> int:
    """The run's prologue, `execute(prepare(job), context)`, and the epilogue: the exit code,
    and the command's last words (`stopped(summary)` on every process that was stopped,
    `finished(prepared, summary)` on process 0). Every process runs it; process 0 reports into
    the resource's status."""
    import jax

    prepared, summary = _prepared_and_executed(args, command, prepare, execute)
    if summary.stopped:
        print(f"layertap {command}: {stopped(summary)}", file=sys.stderr, flush=True)
        return EXIT_INTERRUPTED
    if jax.process_index() == 0:
        print(f"layertap {command}: {finished(prepared, summary)}", flush=True)
    return EXIT_SUCCESS


def _prepared_and_executed(args, command, prepare, execute) -> tuple[Any, Any]:
    from layertap.run import distributed
    from layertap.run.devices import check_devices

    job = job_from_args(args, command)
    setup = distributed.detect(args.coordinator, args.num_processes, args.process_id)
    distributed.initialize(setup)
    check_devices(job.devices)
    distributed.report_joined(setup)

    import jax
    from jax.experimental import multihost_utils

    from layertap.io.hub_share import prepared_once_per_run
    from layertap.run.context import RunContext
    from layertap.run.metrics import WorkerMetrics
    from layertap.run.reporter import StatusReporter
    from layertap.run.stopping import stop_on_termination

    metrics = WorkerMetrics()
    metrics.serve()  # only where the JobSet asked for it (LAYERTAP_METRICS_PORT)
    first = jax.process_index() == 0
    with stop_on_termination() as stop:
        prepared = prepared_once_per_run(
            job, prepare, jax.process_index(), jax.process_count(), multihost_utils.sync_global_devices
        )
        context = RunContext(
            setup=setup,
            show_progress=not args.no_progress,
            reporter=StatusReporter.from_environment() if first else None,
            stop=stop,
            metrics=metrics,
        )
        return prepared, execute(prepared, context)
