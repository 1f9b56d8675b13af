"""Property tests (hypothesis, derandomized) of the ARC inputs LayerTap does not write itself:
a model's answers (predict candidates: any text, in any view, through every encoder), and
submissions (any JSON value in place of a task, a test input or an attempt; any corruption
of the file). The property: a result, or a LayerTapError whose one line names the file or
the task; never another exception."""

from __future__ import annotations

import json

import numpy as np
import pytest
from corruption import CORRUPTIONS, corrupt
from derandomized import DERANDOMIZED
from hypothesis import given, settings
from hypothesis import strategies as st

from layertap.arc.encoders import DEFAULT_ENCODER, build_encoder
from layertap.arc.grids import MAX_SIDE
from layertap.arc.score import score
from layertap.arc.submission import read_submission
from layertap.arc.views import prediction_views
from layertap.arc.vote import parse_candidate, vote
from layertap.errors import LayerTapError
from layertap.io import open_store

PROPERTY_SETTINGS = settings(DERANDOMIZED, max_examples=150)
ENCODERS = ["Minimal", "WithSeparation('|')", "CodeBlock(RepeatNumber(3))", DEFAULT_ENCODER]


@pytest.fixture(scope="module")
def tasks(arc_tasks):
    """Four real ARC-AGI-1 tasks with their solutions."""
    return [t for t in arc_tasks if all(p.output is not None for p in t.test)][:4]


def assert_grid(grid) -> None:
    assert grid.ndim == 2 and min(grid.shape) >= 1 and max(grid.shape) <= MAX_SIDE
    assert grid.dtype == np.int8 and grid.min() >= 0 and grid.max() <= 9


GRIDS = st.lists(st.lists(st.integers(0, 9), min_size=1, max_size=6), min_size=1, max_size=6)
ANSWER_CHARS = "0123456789|\n `x-:#"


@st.composite
def answers(draw, encoder: str) -> str:
    """What a model may write: an encoded grid, one mutated, rows of different widths, or any text."""
    kind = draw(st.sampled_from(["encoded", "mutated", "ragged", "text"]))
    if kind == "text":
        return draw(st.text(st.sampled_from(ANSWER_CHARS) | st.characters(), max_size=120))
    rows = draw(GRIDS)
    if kind == "ragged":  # each row encoded alone, widths as drawn
        return "\n".join(build_encoder(encoder).to_text(np.array([row], dtype=np.int8)) for row in rows)
    width = min(len(r) for r in rows)
    text = build_encoder(encoder).to_text(np.array([r[:width] for r in rows], dtype=np.int8))
    if kind == "mutated":
        at = draw(st.integers(0, len(text)))
        text = (
            text[:at] + draw(st.text(st.sampled_from(ANSWER_CHARS), max_size=3)) + text[at + draw(st.integers(0, 3)) :]
        )
    return text


@PROPERTY_SETTINGS
@given(data=st.data(), encoder=st.sampled_from(ENCODERS), colours=st.integers(0, 2))
def test_any_answer_is_a_valid_grid_or_an_unparseable_candidate(tasks, data, encoder, colours):
    task = data.draw(st.sampled_from(tasks))
    views = prediction_views(task, 0, colour_permutations=colours)
    texts = data.draw(st.lists(answers(encoder), min_size=1, max_size=6))
    candidates = [parse_candidate(text, encoder, views[i % len(views)], -float(i)) for i, text in enumerate(texts)]
    for candidate in candidates:
        assert (candidate.grid is None) != (candidate.error is None)
        if candidate.grid is None:
            assert "\n" not in candidate.error.split(": ", 1)[0]
        else:
            assert_grid(candidate.grid)
    ranked = vote(candidates)
    assert sum(r.votes for r in ranked) == sum(c.grid is not None for c in candidates)
    for r in ranked:
        assert_grid(r.grid)


JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers(-2, 12) | st.floats(allow_nan=True) | st.text(max_size=3),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=9), inner, max_size=3),
    max_leaves=8,
)


@st.composite
def submissions(draw, tasks) -> dict:
    """A right submission for `tasks` with a few places replaced by any JSON value."""
    submission = {t.id: [{"attempt_1": p.output.tolist(), "attempt_2": [[0]]} for p in t.test] for t in tasks}
    for _ in range(draw(st.integers(1, 3))):
        task_id = draw(st.sampled_from(sorted(submission)))
        where = draw(st.sampled_from(["task", "test input", "attempt", "row", "cell", "drop", "extra"]))
        value = draw(JSON_VALUES)
        entry = submission.get(task_id)
        if where == "drop":
            submission.pop(task_id, None)
        elif where == "extra":
            submission[draw(st.text(max_size=5))] = value
        elif where == "task" or not isinstance(entry, list) or not entry:
            submission[task_id] = value
        elif where == "test input" or not isinstance(entry[0], dict) or "attempt_1" not in entry[0]:
            entry[0] = value
        elif where == "attempt":
            entry[0]["attempt_1"] = value
        elif where == "row" and isinstance(entry[0]["attempt_1"], list) and entry[0]["attempt_1"]:
            entry[0]["attempt_1"][0] = value
        elif where == "cell" and isinstance(entry[0]["attempt_1"], list) and entry[0]["attempt_1"]:
            row = entry[0]["attempt_1"][0]
            if isinstance(row, list) and row:
                row[0] = value
    return submission


@PROPERTY_SETTINGS
@given(data=st.data())
def test_any_submission_scores_or_names_the_task_at_fault(tasks, data):
    submission = data.draw(submissions(tasks))
    solutions = {t.id: [p.output.tolist() for p in t.test] for t in tasks}
    try:
        result = score(submission, solutions)
    except LayerTapError as error:
        message = str(error)
        assert "\n" not in message and ("task" in message or "submission" in message), message
    else:
        assert 0.0 <= result.per_task_mean <= 1.0 and 0.0 <= result.per_test_output <= 1.0
        assert {t.task_id for t in result.tasks} == set(solutions)


@PROPERTY_SETTINGS
@given(corruptions=st.lists(CORRUPTIONS, min_size=1, max_size=3))
def test_a_corrupted_submission_file_reads_or_is_named(tmp_path, tasks, corruptions):
    data = json.dumps({t.id: [{"attempt_1": p.output.tolist(), "attempt_2": [[0]]} for p in t.test] for t in tasks})
    data = data.encode()
    for corruption in corruptions:
        data = corrupt(data, *corruption)
    store = open_store(str(tmp_path))
    store.write("submission.json", data)
    try:
        read = read_submission(store, "submission.json")
    except LayerTapError as error:
        message = str(error)
        assert "\n" not in message and message.startswith(f"{tmp_path}/submission.json: "), message
    else:
        assert isinstance(read, dict)
