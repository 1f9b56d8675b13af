from __future__ import annotations

import json

import numpy as np
import pytest

from layertap.arc.encoders import build_encoder
from layertap.arc.score import score
from layertap.arc.submission import submission_entry
from layertap.arc.views import prediction_views, view_task
from layertap.arc.vote import parse_candidate, vote
from layertap.errors import LayerTapError

X = [[1, 2], [3, 4]]
Y = [[5]]
WRONG = [[0]]


def tries(first, second=WRONG) -> dict:
    return {"attempt_1": first, "attempt_2": second}


@pytest.mark.parametrize(
    ("submitted", "expected", "attempt"),
    [
        (tries(X), 1.0, 1),
        (tries(WRONG, X), 1.0, 2),  # the second attempt counts too
        (tries(X, X), 1.0, 1),
        (tries([[1, 2, 3, 4]]), 0.0, None),  # the same values in another shape do not count
        (tries([[1, 2], [3, 5]]), 0.0, None),
    ],
)
def test_one_test_input(submitted, expected, attempt) -> None:
    result = score({"t": [submitted]}, {"t": [X]})
    assert result.per_task_mean == result.per_test_output == expected
    assert result.tasks[0].matched == (attempt,) and result.tasks[0].solved == (attempt is not None,)


def test_several_test_inputs_and_tasks() -> None:
    solutions = {"half": [X, Y], "whole": [Y], "missing": [X]}
    submission = {"half": [tries(X), tries(X)], "whole": [tries(WRONG, Y)], "extra": [tries(X)]}
    result = score(submission, solutions)
    assert [t.score for t in result.tasks] == [0.5, 1.0, 0.0]
    assert result.per_task_mean == pytest.approx(1.5 / 3)
    assert result.per_test_output == pytest.approx(2 / 4)  # 4 test outputs, 2 solved
    assert result.missing == ("missing",) and result.unscored == ("extra",)
    two = score({"half": submission["half"], "whole": submission["whole"]}, {"half": [X, Y], "whole": [Y]})
    assert two.per_task_mean == 0.75 and two.per_test_output == pytest.approx(2 / 3)
    report = json.loads(json.dumps(two.to_json()))
    assert (report["per_task_mean"], report["task_scores"]) == (0.75, {"half": 0.5, "whole": 1.0})
    assert report["tasks"]["half"] == {"solved": [True, False], "matched": [1, None]}
    assert result.tasks[2].matched == (None,)  # the missing task


@pytest.mark.parametrize(
    ("attempts", "matched", "reason"),
    [
        # arc-agi-benchmarking counts an empty answer wrong, and the other attempt may still solve
        ({"attempt_1": [], "attempt_2": X}, 2, "attempt_1: expected a non-empty list of rows"),
        ({"attempt_1": [[1, 2], [3]], "attempt_2": WRONG}, None, "attempt_1: not rectangular"),
        ({"attempt_1": X, "attempt_2": [[1, 10]]}, 1, "attempt_2: cell (0, 1) is 10"),
        ({"attempt_1": "[[1, 2], [3, 4]]", "attempt_2": [[True]]}, None, "attempt_1: expected a non-empty list"),
        ({"attempt_1": X}, 1, "attempt_2: absent"),
        ({"attempt_2": None}, None, "attempt_1: absent"),
        ([X, X], None, "attempt_1: the test output's entry is list, not an object of attempts"),
    ],
)
def test_an_attempt_that_is_no_grid_is_wrong_and_reported(attempts, matched, reason) -> None:
    result = score({"t": [attempts, tries(Y)]}, {"t": [X, Y]})
    assert result.tasks[0].matched == (matched, 1)
    assert result.per_test_output == (1 + (matched is not None)) / 2
    assert any(str(n).startswith("task t: test output 0: ") and reason in str(n) for n in result.not_grids), [
        str(n) for n in result.not_grids
    ]


@pytest.mark.parametrize(
    ("submission", "solutions", "error", "message"),
    [
        ({"t": [tries(X)]}, {"t": [X, Y]}, ValueError, "submission: task t: expected a list of 2 test outputs.*got 1"),
        ({"t": tries(X)}, {"t": [X]}, ValueError, "submission: task t: expected a list of 1 .*got dict"),
        ({"t": [tries(X)]}, {"t": [[[1, 2], [3]]]}, ValueError, "solutions: task t: test output 0: not rectangular"),
        ({"t": [tries(X)]}, {"t": []}, ValueError, "solutions: task t: expected a non-empty list"),
        ({}, {}, ValueError, "solutions: no tasks"),
        ("submission.json", {"t": [X]}, TypeError, "submission: expected an object .*got str"),
        (None, {"t": [X]}, TypeError, "submission: expected an object .*got null"),
        ([tries(X)], {"t": [X]}, TypeError, "submission: expected an object .*got list"),
        ({"t": [tries(X)]}, [X], TypeError, "solutions: expected an object .*got list"),
    ],
)
def test_what_makes_scoring_impossible_is_an_error_naming_the_field(submission, solutions, error, message) -> None:
    with pytest.raises(error, match=message) as raised:
        score(submission, solutions)
    assert isinstance(raised.value, LayerTapError)  # the CLI prints it as one line


def test_real_tasks_end_to_end(arc_tasks) -> None:
    """Answers written in each view's frame vote back to the true outputs and score 1.0;
    a submission for every other task only halves the score."""
    encoder = build_encoder("Shape(RowNumber(Minimal))")
    tasks = [t for t in arc_tasks if len(t.test) > 1][:4] + arc_tasks[:4]
    submission = {}
    for task in tasks:
        per_test = []
        for test_index in range(len(task.test)):
            views = prediction_views(task, test_index, colour_permutations=1, seed=5)
            texts = [encoder.to_text(view_task(task, v).test[0].output) for v in views]
            texts[0] = "garbled"
            candidates = [parse_candidate(text, encoder, v, -0.1) for text, v in zip(texts, views)]
            ranked = vote(candidates)
            assert len(ranked) == 1 and ranked[0].votes == len(views) - 1
            assert np.array_equal(ranked[0].grid, task.test[test_index].output)
            per_test.append(ranked)
        submission[task.id] = submission_entry(per_test)
    solutions = {t.id: [p.output.tolist() for p in t.test] for t in tasks}
    assert score(submission, solutions).per_task_mean == 1.0
    halved = score({k: v for i, (k, v) in enumerate(submission.items()) if i % 2 == 0}, solutions)
    assert halved.per_task_mean == 0.5 and len(halved.missing) == 4
