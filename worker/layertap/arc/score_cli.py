"""`layertap score SUBMISSION.json SOLUTIONS.json`: score a Kaggle ARC Prize submission by the
benchmark's rules (layertap.arc.score): the per-task mean, the fraction of test outputs
solved, and a table of the tasks; `--json` prints the figures as one JSON object."""

from __future__ import annotations

import argparse
import json
import posixpath

from layertap.errors import LayerTapError
from layertap.humanize import plural


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("submission", help="submission.json (a path or gs://): {task_id: [{attempt_1, attempt_2}]}")
    parser.add_argument("solutions", help="*_solutions.json (a path or gs://): {task_id: [grid, ...]}")
    parser.add_argument(
        "--json", action="store_true", help="print {per_task_mean, per_test_output, task_scores, ...} as JSON"
    )


def run(args: argparse.Namespace) -> int:
    from layertap.arc.score import score

    scored = score(_read(args.submission, "submission"), _read(args.solutions, "solutions"))
    if args.json:
        figures = scored.to_json()
        print(
            json.dumps(
                {
                    k: figures[k]
                    for k in ("per_task_mean", "per_test_output", "task_scores", "missing", "unscored", "not_grids")
                }
            )
        )
        return 0
    width = max(len("task"), *(len(t.task_id) for t in scored.tasks))
    print(f"{'task':<{width}}  score  solved")
    for task in scored.tasks:
        solved = " ".join(f"attempt {m}" if m else "-" for m in task.matched)
        note = "  (missing)" if task.task_id in scored.missing else ""
        print(f"{task.task_id:<{width}}  {task.score:5.3f}  {solved}{note}")
    outputs = sum(len(t.matched) for t in scored.tasks)
    print(f"per-task mean: {scored.per_task_mean:.4f} ({plural(len(scored.tasks), 'task')})")
    if scored.missing:
        print(f"missing from the submission, scored 0: {len(scored.missing)} of {len(scored.tasks)} tasks")
    print(f"test outputs solved: {scored.per_test_output:.4f} ({round(scored.per_test_output * outputs)} of {outputs})")
    for problem in scored.not_grids:
        print(f"counted wrong, not a grid: {problem}")
    if scored.unscored:
        print(f"not scored (no solution): {', '.join(scored.unscored)}")
    return 0


def _read(uri: str, what: str) -> object:
    from layertap.io import open_store

    folder, name = posixpath.split(uri.rstrip("/"))
    try:
        data = open_store(folder or ".").read(name)
    except (FileNotFoundError, IsADirectoryError):
        raise LayerTapError(f"{uri}: no {what} file there") from None
    try:
        return json.loads(data)
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise LayerTapError(f"{uri}: the {what} file is not valid JSON ({error})") from None
