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
    assert result.total == expected
    assert result.tasks[0].matched == (attempt,) and result.tasks[0].solved == (attempt is not None,)


def test_several_test_inputs_and_tasks() -> None:
    solutions = {"half": [X, Y], "whole": [Y], "missing": [X]}
    submission = {"half": [tries(X), tries(X)], "whole": [tries(WRONG, Y)], "extra": [tries(X)]}
    result = score(submission, solutions)
    assert [t.score for t in result.tasks] == [0.5, 1.0, 0.0]
    assert result.total == pytest.approx(1.5 / 3)
    assert result.missing == ("missing",) and result.unscored == ("extra",)
    two = score({"half": submission["half"], "whole": submission["whole"]}, {"half": [X, Y], "whole": [Y]})
    assert two.total == 0.75
    report = json.loads(json.dumps(two.to_json()))
    assert report["total"] == 0.75
    assert report["tasks"]["half"] == {"score": 0.5, "solved": [True, False], "matched": [1, None]}
    assert result.tasks[2].matched == (None,)  # the missing task


@pytest.mark.parametrize(
    ("submission", "solutions", "message"),
    [
        ({"t": [tries(X)]}, {"t": [X, Y]}, "task t: the submission has 1 test input.*solutions have 2"),
        ({"t": [tries(X)]}, {"t": [[[1, 2], [3]]]}, "task t: solution 0: not rectangular"),
        ({"t": [tries(X)]}, {"t": []}, "task t: solutions must be a non-empty list"),
        ({"t": [{"attempt_1": X}]}, {"t": [X]}, "task t: test input 0: expected exactly the keys"),
        ({}, {}, "no solutions"),
    ],
)
def test_errors_name_the_task(submission, solutions, message) -> None:
    with pytest.raises(LayerTapError, match=message):
        score(submission, solutions)


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
    assert score(submission, solutions).total == 1.0
    halved = score({k: v for i, (k, v) in enumerate(submission.items()) if i % 2 == 0}, solutions)
    assert halved.total == 0.5 and len(halved.missing) == 4
