"""From committed answers to what a user reads: the submission, per-task results, the score.

results.json holds, per task and test input, every candidate grid with its votes, mean
log-probability and views, the unparseable answers with their errors, and the views that
no prompt within maxTokens could show; score.json the ARC Prize score when the dataset
carries the test outputs (Kaggle challenges with their solutions, or ARC JSON with test
outputs).
"""

from __future__ import annotations

import json
from collections.abc import Sequence

import numpy as np

from layertap.arc.score import score
from layertap.arc.submission import submission_entry, write_submission
from layertap.arc.task import Task
from layertap.arc.views import View
from layertap.arc.vote import Candidate, Ranked, unparseable, vote
from layertap.io.store import Store
from layertap.predict.units import Dropped
from layertap.store.index import read_json

CANDIDATES = "candidates/"  # committed answers: PROCESS-SEQ.json, one per batch
RESULTS_KEY = "results.json"
SCORE_KEY = "score.json"


def candidates_by_test(
    tasks: Sequence[Task], answers: list[dict], views: dict[str, View]
) -> dict[tuple[str, int], list[Candidate]]:
    """Every answer as a Candidate, under (task id, test index), in view order."""
    grouped: dict[tuple[str, int], list[Candidate]] = {(t.id, i): [] for t in tasks for i in range(len(t.test))}
    unique = {answer["unit"]: answer for answer in answers}
    for key, answer in sorted(unique.items(), key=lambda item: views[item[0]].index):
        view = views[key]
        grouped.setdefault((view.task_id, view.test_index), []).append(_candidate(answer, view))
    return grouped


def _candidate(answer: dict, view: View) -> Candidate:
    grid = None if answer["grid"] is None else np.asarray(answer["grid"], np.int8)
    return Candidate(view, grid, answer["text"], answer["mean_logprob"], answer["error"])


def write_all(
    store: Store, tasks: Sequence[Task], answers: list[dict], views: dict[str, View], dropped: Dropped
) -> tuple[dict[str, str], float | None]:
    """Write submission.json, results.json and (with solutions) score.json; returns their URIs
    and the score."""
    grouped = candidates_by_test(tasks, answers, views)
    ranked = {key: vote(candidates) for key, candidates in grouped.items()}
    entries = {task.id: submission_entry([ranked[task.id, i] for i in range(len(task.test))]) for task in tasks}
    root = store.uri.rstrip("/")
    outputs = {"submission": write_submission(store, entries)}
    solutions = {
        task.id: [pair.output.tolist() for pair in task.test]
        for task in tasks
        if all(pair.output is not None for pair in task.test)
    }
    scored = score(entries, solutions) if solutions else None
    report = {
        "tasks": {
            task.id: [
                _test_report(
                    grouped[task.id, i],
                    ranked[task.id, i],
                    dropped.views.get((task.id, i), 0),
                    scored_test(scored, task.id, i),
                )
                for i in range(len(task.test))
            ]
            for task in tasks
        },
        "answers": len(answers),
        "unparseable": sum(len(unparseable(c)) for c in grouped.values()),
        "dropped_views": dropped.total(),
    }
    store.write(RESULTS_KEY, json.dumps(report, indent=1).encode())
    outputs["results"] = f"{root}/{RESULTS_KEY}"
    if scored is not None:
        store.write(SCORE_KEY, json.dumps(scored.to_json(), indent=1).encode())
        outputs["score"] = f"{root}/{SCORE_KEY}"
    return outputs, None if scored is None else scored.per_task_mean


def scored_test(scored, task_id: str, test_index: int) -> int | str | None:
    """Which attempt solved this test input (1 or 2), None if neither, "unscored" without a solution."""
    if scored is None:
        return "unscored"
    task = next((t for t in scored.tasks if t.task_id == task_id), None)
    return "unscored" if task is None else task.matched[test_index]


def _test_report(candidates: list[Candidate], ranked: list[Ranked], dropped: int, solved_by) -> dict:
    return {
        "solved_by_attempt": solved_by,
        "ranked": [
            {"grid": r.grid.tolist(), "votes": r.votes, "mean_logprob": r.mean_logprob, "views": list(r.views)}
            for r in ranked
        ],
        "unparseable": [
            {"view": c.view_index, "error": c.error, "text": c.text[-500:]} for c in unparseable(candidates)
        ],
        "dropped_views": dropped,
    }


class AnswerLog:
    """The committed answers of every process, by unit; each commit file is read once, so
    refreshing as the run goes reads only what is new."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self.read: set[str] = set()
        self.answers: dict[str, dict] = {}

    def refresh(self) -> dict[str, dict]:
        for key in sorted(set(self.store.list(CANDIDATES)) - self.read):
            self.answers.update((a["unit"], a) for a in read_json(self.store, key, "committed answers")["answers"])
            self.read.add(key)
        return self.answers


class RunningScore:
    """Tasks done and the score over them so far, from the committed answers of every process."""

    def __init__(
        self, store: Store, tasks: Sequence[Task], units_by_task: dict[str, set[str]], log: AnswerLog | None = None
    ) -> None:
        self.tasks, self.units_by_task = list(tasks), units_by_task
        self.log = log or AnswerLog(store)

    def update(self) -> tuple[int, float | None]:
        committed = self.log.refresh()
        done = [t for t in self.tasks if self.units_by_task.get(t.id, set()) <= committed.keys()]
        solved = [t for t in done if all(pair.output is not None for pair in t.test)]
        if not solved:
            return len(done), None
        answers = [committed[k] for t in solved for k in self.units_by_task.get(t.id, ())]
        views = {a["unit"]: View.from_json(a["view"]) for a in answers}
        grouped = candidates_by_test(solved, answers, views)
        entries = {t.id: submission_entry([vote(grouped[t.id, i]) for i in range(len(t.test))]) for t in solved}
        return len(done), score(entries, {t.id: [p.output.tolist() for p in t.test] for t in solved}).per_task_mean
