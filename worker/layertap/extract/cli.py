"""`layertap extract`: run an extraction from a YAML config; flags override its fields."""

from __future__ import annotations

import argparse
import os
import sys
from typing import get_args

from layertap_api.contract import ENV_SPEC, EXIT_INTERRUPTED
from layertap_api.spec import (
    SITES,
    ComputeDtype,
    DatasetFormat,
    DatasetSpec,
    Positions,
    StorageDtype,
    WorkerSpec,
)

from layertap.environment import worker_environment
from layertap.errors import LayerTapError
from layertap.extract import config as cfg
from layertap.extract.devices import check_devices

# flag dest -> "section.field" of the spec (camelCase, as in the YAML file)
SPEC_FLAGS = {
    "model": "model.uri",
    "dtype": "model.dtype",
    "dataset": "dataset.uri",
    "format": "dataset.format",
    "column": "dataset.column",
    "split": "dataset.split",
    "dataset_config": "dataset.config",
    "max_samples": "dataset.maxSamples",
    "task_ids": "dataset.select.ids",
    "offset": "dataset.select.offset",
    "limit": "dataset.select.limit",
    "sample": "dataset.select.sample",
    "select_seed": "dataset.select.seed",
    "max_tokens": "dataset.maxTokens",
    "over_limit": "dataset.overLimit",
    "layers": "extraction.layers",
    "sites": "extraction.sites",
    "positions": "extraction.positions",
    "segments": "extraction.segments",
    "exclude_special_tokens": "extraction.excludeSpecialTokens",
    "storage_dtype": "extraction.storageDtype",
    "batch_size": "extraction.batchSize",
    "output": "output.uri",
    "shard_size_mb": "output.shardSizeMb",
    "compilation_cache": "output.compilationCache",
}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--config", help=f"YAML file: an ActivationExtraction resource or just its spec (default: ${ENV_SPEC})"
    )
    spec = parser.add_argument_group("spec fields (override the config file)")
    spec.add_argument("--model", help="checkpoint directory, gs:// URI or hf://ORG/NAME[@REVISION]")
    spec.add_argument("--dtype", choices=get_args(ComputeDtype), help="compute dtype")
    spec.add_argument("--dataset", help="dataset file, gs:// URI or (text formats) hf://ORG/NAME[@REVISION]")
    spec.add_argument("--format", choices=get_args(DatasetFormat))
    spec.add_argument("--column", help="text formats: the field or column holding the text (default: text)")
    spec.add_argument("--split", help="hf:// datasets: the split (default: train)")
    spec.add_argument("--dataset-config", help="hf:// datasets: the configuration (the Hub's subset)")
    spec.add_argument("--max-samples", type=int, help="stop after N prompts (counted after the selection)")
    add_selection_arguments(spec, "tasks (ARC) or records (text)")
    spec.add_argument("--max-tokens", type=int, help="longest prompt in tokens")
    spec.add_argument("--over-limit", choices=get_args(DatasetSpec.model_fields["over_limit"].annotation))
    spec.add_argument(
        "--layers", type=_layers_flag, help="e.g. 10-23 or 3,5,7 (default: the upper part, 10-23 of 24)"
    )
    spec.add_argument(
        "--sites", type=_sites_flag, help=f"comma-separated, from {','.join(SITES)} (default: resid_post)"
    )
    spec.add_argument("--positions", choices=get_args(Positions))
    spec.add_argument("--segments", type=lambda text: text.split(","), help="comma-separated segment names to keep")
    spec.add_argument(
        "--exclude-special-tokens", action=argparse.BooleanOptionalAction, default=None, help="(default: exclude)"
    )
    spec.add_argument("--storage-dtype", choices=get_args(StorageDtype))
    spec.add_argument("--batch-size", type=int, help="rows per step across all processes")
    spec.add_argument("--output", help="output directory or gs:// prefix")
    spec.add_argument("--shard-size-mb", type=int)
    spec.add_argument(
        "--compilation-cache", help='where compiled programs are kept (default: OUTPUT/.jax-cache; "off": nowhere)'
    )
    run = add_run_arguments(parser)
    run.add_argument(
        "--model-parallel", type=int, help="size of the mesh's model axis (default: resources.mesh.model, else 1)"
    )


def add_run_arguments(parser: argparse.ArgumentParser):
    """The "how to run" flags every worker command takes: where this process sits in a
    multi-process run, and the progress bar. Returns the group."""
    run = parser.add_argument_group("how to run")
    run.add_argument("--coordinator", help="host:port of process 0 (local multi-process runs)")
    run.add_argument("--num-processes", type=int)
    run.add_argument("--process-id", type=int)
    run.add_argument("--no-progress", action="store_true", help="no progress bar")
    return run


def add_selection_arguments(group, units: str) -> None:
    """The flags of dataset.select: applied in the order ids, offset, sample, limit."""
    group.add_argument(
        "--task-ids", type=_ids_flag, help="comma-separated task ids to keep (text: record positions from 0)"
    )
    group.add_argument("--offset", type=int, help=f"skip the first N {units}")
    group.add_argument("--sample", type=int, help=f"a random subset of N {units} (after --task-ids and --offset)")
    group.add_argument("--select-seed", type=int, help="seed of --sample (default 0)")
    group.add_argument("--limit", type=int, help=f"keep at most N {units} (after --sample)")


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


def job_from_args(args: argparse.Namespace, env=os.environ, flags: dict[str, str] = SPEC_FLAGS, mode: str | None = None) -> WorkerSpec:
    """The validated spec this worker runs, from --config (or LAYERTAP_SPEC) and `flags`
    (flag dest -> "section.field"); `mode` replaces the spec's."""
    if args.config:
        raw, source = cfg.read_spec_file(args.config), args.config
    elif (spec_json := worker_environment(env).spec_json) is not None:
        raw, source = cfg.parse_spec(spec_json, ENV_SPEC), ENV_SPEC
    else:
        raw, source = {}, "command line"
    overrides = {field: getattr(args, dest) for dest, field in flags.items()}
    raw = cfg.apply_overrides(raw, overrides)
    if mode is not None:
        raw["mode"] = mode
    job = cfg.worker_spec(raw, source, model_parallel=getattr(args, "model_parallel", None))
    if args.config:  # a resource run by hand: its accelerator is the cluster's, not this machine's
        job = job.model_copy(update={"devices": None})
    return job


def run(args: argparse.Namespace) -> int:
    job = job_from_args(args)
    from layertap.extract import distributed

    setup = distributed.detect(args.coordinator, args.num_processes, args.process_id)
    distributed.initialize(setup)
    check_devices(job.devices)
    distributed.report_joined(setup)

    import jax

    from layertap.extract.runner import execute, prepare
    from layertap.extract.stopping import stop_on_termination
    from layertap.metrics import WorkerMetrics
    from layertap.reporter import StatusReporter

    metrics = WorkerMetrics()
    metrics.serve()  # only where the JobSet asked for it (LAYERTAP_METRICS_PORT)

    from jax.experimental import multihost_utils

    from layertap.io.hub_share import prepared_once_per_run

    with stop_on_termination() as stop:
        prepared = prepared_once_per_run(
            job, prepare, jax.process_index(), jax.process_count(), multihost_utils.sync_global_devices
        )
        summary = execute(
            prepared,
            setup,
            show_progress=not args.no_progress,
            reporter=StatusReporter.from_environment() if jax.process_index() == 0 else None,
            stop=stop,
            metrics=metrics,
        )
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
