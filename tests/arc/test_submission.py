from __future__ import annotations

import json
import os

import numpy as np
import pytest

from layertap.arc.submission import attempts, read_submission, submission_entry, write_submission
from layertap.arc.vote import Ranked
from layertap.errors import LayerTapError
from layertap.io.local import LocalStore


def ranked(*grids) -> list[Ranked]:
    return [Ranked(np.asarray(g, np.int8), 1, -1.0, (i,)) for i, g in enumerate(grids)]


@pytest.mark.parametrize(
    ("grids", "expected"),
    [
        ([], ([[0]], [[0]])),
        ([[[1, 2]]], ([[1, 2]], [[1, 2]])),
        ([[[1]], [[2]]], ([[1]], [[2]])),
        ([[[1]], [[2]], [[3]]], ([[1]], [[2]])),
    ],
)
def test_attempts_take_the_top_two_and_fill_the_gaps(grids, expected) -> None:
    assert attempts(ranked(*grids)) == expected


def test_round_trip(tmp_path) -> None:
    entries = {
        "task-a": submission_entry([ranked([[1, 2], [3, 4]], [[5]]), ranked()]),
        "task-b": submission_entry([ranked([[9]])]),
    }
    assert entries["task-a"][1] == {"attempt_1": [[0]], "attempt_2": [[0]]}
    store = LocalStore(str(tmp_path))
    uri = write_submission(store, entries)
    assert uri.endswith("/submission.json") and read_submission(store) == entries
    assert json.loads((tmp_path / "submission.json").read_text())["task-a"][0]["attempt_2"] == [[5]]
    assert os.listdir(tmp_path) == ["submission.json"]


def test_failed_write_leaves_the_old_file_and_no_temporary(tmp_path, monkeypatch) -> None:
    path = tmp_path / "submission.json"
    path.write_text("old")
    store = LocalStore(str(tmp_path))
    with pytest.raises(LayerTapError, match="task t: test input 0: expected exactly the keys"):
        write_submission(store, {"t": [{"attempt_1": [[1]]}]})

    def crash(src, dst):
        raise OSError("disk gone")

    monkeypatch.setattr(os, "replace", crash)
    with pytest.raises((OSError, LayerTapError), match="disk gone"):
        write_submission(store, {"t": submission_entry([ranked([[1]])])})
    assert path.read_text() == "old" and os.listdir(tmp_path) == ["submission.json"]


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("{", "not valid JSON"),
        ("[]", "expected an object"),
        ('{"t1": []}', "task t1: expected a non-empty list"),
        ('{"t1": [{"attempt_1": [[1]], "attempt_2": [[1, 2], [3]]}]}', "t1: test input 0: attempt_2: not rectangular"),
        (
            '{"t1": [{"attempt_1": [[1]], "attempt_2": [[1]]}, {"attempt_1": [[10]], "attempt_2": [[1]]}]}',
            "task t1: test input 1: attempt_1: cell",
        ),
        ('{"t1": [{"attempt_1": [[1]], "attempt_2": [[1]], "attempt_3": [[1]]}]}', "expected exactly the keys"),
    ],
)
def test_read_names_the_task_at_fault(tmp_path, content, message) -> None:
    (tmp_path / "submission.json").write_text(content)
    with pytest.raises(LayerTapError, match=message):
        read_submission(LocalStore(str(tmp_path)))


def test_read_missing_file(tmp_path) -> None:
    with pytest.raises(LayerTapError, match="no submission there"):
        read_submission(LocalStore(str(tmp_path)))
