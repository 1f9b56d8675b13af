from __future__ import annotations

import math

import numpy as np
import pytest

from layertap.arc.encoders import build_encoder
from layertap.arc.task import Pair, Task
from layertap.arc.views import prediction_views
from layertap.arc.vote import Candidate, parse_candidate, unparseable, vote

ENCODER = build_encoder("Shape(RowNumber(Minimal))")
A = np.array([[1, 2, 0], [3, 4, 5]], dtype=np.int8)
B = np.array([[7]], dtype=np.int8)
C = A.reshape(3, 2)  # the same bytes as A in another shape


def candidate(grid, logprob: float, view: int = 0) -> Candidate:
    return Candidate(view, None if grid is None else np.asarray(grid, np.int8), "text", logprob)


def test_answers_from_every_view_revert_to_the_original_frame() -> None:
    task = Task("t", (Pair(A, A.T),), (Pair(A, None),))
    views = prediction_views(task, 0, colour_permutations=2)
    answer = np.array([[0, 6, 9], [8, 1, 2]], dtype=np.int8)  # the answer in the original frame
    # Each view's model answers in the view's frame; parsing maps it back.
    texts = [ENCODER.to_text(v.augmentation.grid(answer)) for v in views]
    assert len(set(texts)) == len(views)
    candidates = [parse_candidate(text, ENCODER, v, -0.5) for text, v in zip(texts, views)]
    assert all(c.error is None and np.array_equal(c.grid, answer) for c in candidates)
    (top,) = vote(candidates)
    assert top.votes == 24 and top.views == tuple(range(24)) and top.mean_logprob == -0.5


@pytest.mark.parametrize(
    "text",
    [
        "",
        "no grid here",
        "```grid shape: 2x2\n1 01\n2 0\n```",  # not rectangular
        "```grid shape: 3x3\n1 01\n2 01\n```",  # header disagrees
        "```grid shape: 1x31\n1 " + "0" * 31 + "\n```",  # too wide
        "```grid shape: 1x2\n1 0x\n```",
    ],
)
def test_unparseable_text_is_kept_with_its_error_never_raised(text) -> None:
    view = prediction_views(Task("t", (Pair(A, A),), (Pair(A, None),)), 0)[3]
    bad = parse_candidate(text, ENCODER, view, -1.0)
    assert bad.grid is None and bad.error and bad.text == text and bad.view is view
    good = parse_candidate(ENCODER.to_text(B), ENCODER, view, -2.0)
    assert vote([bad, good])[0].votes == 1 and unparseable([bad, good]) == [bad]


def test_identical_grids_pool_votes_and_most_votes_wins() -> None:
    candidates = [
        candidate(A, -0.1, 0),
        candidate(B, -0.01, 1),
        candidate(C, -0.2, 2),
        candidate(A, -0.3, 3),
        candidate(None, 0.0, 4),
        candidate(B.astype(np.int64), -0.05, 5),
        candidate(A, -0.5, 6),
    ]
    ranked = vote(candidates)
    assert [r.votes for r in ranked] == [3, 2, 1]
    assert [r.views for r in ranked] == [(0, 3, 6), (1, 5), (2,)]
    assert np.array_equal(ranked[0].grid, A) and np.array_equal(ranked[2].grid, C)  # shape tells A from C
    assert ranked[0].mean_logprob == pytest.approx(-0.3)


def test_ties_go_to_higher_mean_logprob_then_first_appearance() -> None:
    ranked = vote([candidate(A, -0.9), candidate(B, -0.2), candidate(A, -0.1), candidate(B, -0.4)])
    assert [r.grid.shape for r in ranked] == [B.shape, A.shape]  # -0.3 beats -0.5
    same = vote([candidate(C, -1.0, 0), candidate(A, -1.0, 1), candidate(B, -1.0, 2)])
    assert [r.views for r in same] == [(0,), (1,), (2,)]
    with_nan = vote([candidate(A, math.nan), candidate(B, -50.0)])
    assert [r.grid.shape for r in with_nan] == [B.shape, A.shape]


def test_vote_of_nothing_is_empty() -> None:
    assert vote([]) == [] and vote([candidate(None, 0.0)]) == []
