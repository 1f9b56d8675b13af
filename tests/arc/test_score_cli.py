"""`layertap score SUBMISSION SOLUTIONS [--json]` on real ARC-AGI tasks."""

from __future__ import annotations

import json

from layertap.cli import main


def _files(tmp_path, arc_tasks):
    """Three real tasks, one with two test outputs: one solved by attempt 2, one half solved
    (its other attempt an empty list), one missing; and a submitted task without a solution."""
    two = next(t for t in arc_tasks if len(t.test) == 2)
    one_a, one_b = [t for t in arc_tasks if len(t.test) == 1][:2]
    solutions = {t.id: [p.output.tolist() for p in t.test] for t in (two, one_a, one_b)}
    submission = {
        one_a.id: [{"attempt_1": [[0]], "attempt_2": solutions[one_a.id][0]}],
        two.id: [{"attempt_1": solutions[two.id][0], "attempt_2": []}, {"attempt_1": [], "attempt_2": [[0]]}],
        "not-a-task": [{"attempt_1": [[1]], "attempt_2": [[1]]}],
    }
    (tmp_path / "submission.json").write_text(json.dumps(submission))
    (tmp_path / "solutions.json").write_text(json.dumps(solutions))
    return two.id, one_a.id, one_b.id


def test_both_figures_and_the_table(tmp_path, arc_tasks, capsys):
    two, solved, missing = _files(tmp_path, arc_tasks)
    assert main(["score", str(tmp_path / "submission.json"), str(tmp_path / "solutions.json")]) == 0
    out = capsys.readouterr().out
    assert "per-task mean: 0.5000 (3 tasks)" in out  # (1 + 0.5 + 0) / 3
    assert "missing from the submission, scored 0: 1 of 3 tasks" in out
    assert "test outputs solved: 0.5000 (2 of 4)" in out
    rows = {line.split()[0]: line.split()[1:] for line in out.splitlines()[1:4]}
    assert rows[solved] == ["1.000", "attempt", "2"] and rows[two] == ["0.500", "attempt", "1", "-"]
    assert rows[missing] == ["0.000", "-", "(missing)"]
    assert out.count("counted wrong, not a grid: ") == 2 and "not scored (no solution): not-a-task" in out

    assert main(["score", str(tmp_path / "submission.json"), str(tmp_path / "solutions.json"), "--json"]) == 0
    figures = json.loads(capsys.readouterr().out)
    assert figures["per_task_mean"] == 0.5 and figures["per_test_output"] == 0.5
    assert figures["task_scores"] == {two: 0.5, solved: 1.0, missing: 0.0}


def test_a_missing_or_unreadable_file_is_one_error_line(tmp_path, capsys):
    (tmp_path / "solutions.json").write_text("{not json")
    assert main(["score", str(tmp_path / "nope.json"), str(tmp_path / "solutions.json")]) == 2
    assert capsys.readouterr().err == f"layertap score: error: {tmp_path}/nope.json: no submission file there\n"
    (tmp_path / "submission.json").write_text("{}")
    assert main(["score", str(tmp_path / "submission.json"), str(tmp_path / "solutions.json")]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"layertap score: error: {tmp_path}/solutions.json: the solutions file is not valid JSON")
    assert err.count("\n") == 1
