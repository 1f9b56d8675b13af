"""`layertap predict`: answer ARC tasks from a YAML config (mode predict); flags override it."""

from __future__ import annotations

import argparse
import sys
import time
from typing import get_args

from layertap_api.contract import ENV_SPEC, EXIT_INTERRUPTED
from layertap_api.spec import ComputeDtype

from layertap.arc.readers import ArcFormat
from layertap.extract.cli import add_run_arguments, add_selection_arguments

# flag dest -> field of the spec (camelCase, as in the YAML file)
SPEC_FLAGS = {
    "model": "model.uri",
    "dtype": "model.dtype",
    "dataset": "dataset.uri",
    "format": "dataset.format",
    "max_tasks": "dataset.maxSamples",
    "task_ids": "dataset.select.ids",
    "offset": "dataset.select.offset",
    "limit": "dataset.select.limit",
    "sample": "dataset.select.sample",
    "select_seed": "dataset.select.seed",
    "max_tokens": "dataset.maxTokens",
    "output": "output.uri",
    "max_new_tokens": "prediction.maxNewTokens",
    "batch_size": "prediction.batchSize",
    "dihedral": "prediction.views.dihedral",
    "colour_permutations": "prediction.views.colourPermutations",
    "temperature": "prediction.sampling.temperature",
    "top_p": "prediction.sampling.topP",
    "seed": "prediction.sampling.seed",
}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", help=f"YAML file: an ActivationExtraction resource or its spec (default: ${ENV_SPEC})")
    spec = parser.add_argument_group("spec fields (override the config file)")
    spec.add_argument("--model", help="checkpoint directory or gs:// URI (with its LM head)")
    spec.add_argument("--dtype", choices=get_args(ComputeDtype), help="compute dtype")
    spec.add_argument("--dataset", help="ARC dataset file or gs:// URI")
    spec.add_argument("--format", choices=get_args(ArcFormat))
    spec.add_argument("--max-tasks", type=int, help="answer only the first N tasks (after the selection)")
    add_selection_arguments(spec, "tasks")
    spec.add_argument("--max-tokens", type=int, help="longest prompt in tokens")
    spec.add_argument("--output", help="output directory or gs:// prefix")
    spec.add_argument("--max-new-tokens", type=int, help="token budget of one answer")
    spec.add_argument("--batch-size", type=int, help="prompts generated together, across all processes")
    spec.add_argument("--dihedral", action=argparse.BooleanOptionalAction, default=None, help="all 8 views (default: yes)")
    spec.add_argument("--colour-permutations", type=int, help="extra colour-permuted copies of the views")
    spec.add_argument("--temperature", type=float, help="0: greedy (default)")
    spec.add_argument("--top-p", type=float)
    spec.add_argument("--seed", type=int, help="sampling seed")
    add_run_arguments(parser)


def run(args: argparse.Namespace) -> int:
    from layertap.extract import distributed
    from layertap.extract.cli import job_from_args
    from layertap.extract.devices import check_devices

    job = job_from_args(args, flags=SPEC_FLAGS, mode="predict")
    setup = distributed.detect(args.coordinator, args.num_processes, args.process_id)
    distributed.initialize(setup)
    check_devices(job.devices)
    distributed.report_joined(setup)

    import jax
    from jax.experimental import multihost_utils
    from tqdm import tqdm

    from layertap.extract.stopping import stop_on_termination
    from layertap.predict.runner import execute, prepare
    from layertap.reporter import StatusReporter

    from layertap.io.hub_share import prepared_once_per_run

    prepared = prepared_once_per_run(
        job, prepare, jax.process_index(), jax.process_count(), multihost_utils.sync_global_devices
    )
    first = jax.process_index() == 0
    bar = tqdm(total=len(prepared.units), unit="answer", disable=args.no_progress or not first or None, file=sys.stderr)
    reporter = StatusReporter.from_environment() if first else None
    if reporter is not None:
        reporter.update({"tasksTotal": len(prepared.tasks)})
    started = time.monotonic()

    def progress(done: int, total: int, summary) -> None:
        bar.update(done - bar.n)
        if reporter is not None:
            reporter.update(progress_status(done, total, summary, time.monotonic() - started))

    with stop_on_termination() as stop:
        summary = execute(
            prepared,
            jax.process_index(),
            jax.process_count(),
            progress=progress,
            stop=stop,
            barrier=multihost_utils.sync_global_devices if jax.process_count() > 1 else None,
        )
    bar.close()
    if reporter is not None:
        if summary.score is not None:
            reporter.update({"tasksDone": len(prepared.tasks), "score": round(summary.score, 4)})
        reporter.close()
    if summary.stopped:
        print(f"layertap predict: stopped by {summary.stopped}; the answers committed are kept, and the same "
              "command resumes", file=sys.stderr, flush=True)  # fmt: skip
        return EXIT_INTERRUPTED
    if first:
        rate = summary.tokens_generated / summary.generate_seconds if summary.generate_seconds else 0.0
        dropped = prepared.dropped.total()
        lines = [
            f"layertap predict: {len(prepared.tasks)} tasks, {len(prepared.units)} answers "
            f"({summary.units_skipped} already committed{f', {dropped} views over dataset.maxTokens' if dropped else ''}); "
            f"{summary.tokens_generated:,} tokens generated at {rate:,.0f} tokens/s "
            f"(compilation {summary.compile_seconds:.1f} s apart, prompt buckets {sorted(summary.buckets)})",
            *(f"  {name}: {uri}" for name, uri in summary.outputs.items()),
        ]
        if summary.score is not None:
            lines.append(f"  score: {summary.score:.3f} (ARC Prize metric, 2 attempts per test input)")
        print("\n".join(lines), flush=True)
    return 0


def progress_status(done: int, total: int, summary, elapsed: float) -> dict:
    """status.progress of a prediction: answers committed, generated tokens/s, ETA."""
    from layertap.progress import human_duration

    percent = round(100.0 * done / total, 1) if total else 100.0
    status = {"samplesDone": done, "samplesTotal": total, "percent": percent, "completed": f"{percent:.1f}%",
              "tasksDone": summary.tasks_done}  # fmt: skip
    if summary.score_so_far is not None:
        status["score"] = round(summary.score_so_far, 4)
    if summary.generate_seconds:
        status["tokensPerSecond"] = round(summary.tokens_generated / summary.generate_seconds, 1)
    run_here = done - summary.units_skipped
    if run_here > 0 and elapsed > 0:
        status["etaSeconds"] = round(elapsed / run_here * (total - done))
        status["eta"] = human_duration(status["etaSeconds"])
    return status
