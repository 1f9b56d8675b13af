from __future__ import annotations

import gzip
import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from layertap.arc.colours import grid_to_words
from layertap.arc.readers import InvalidRecord, ReadStats, read_tasks
from layertap.arc.records import Split
from layertap.errors import LayerTapError

A, B, C, D = [[1, 2], [3, 4]], [[5]], [[0, 0, 7]], [[9], [8]]


def write_jsonl(path: Path, rows: list) -> Path:
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows))
    return path


def barc_chat(task) -> dict:
    """A row in the BARC `messages` layout (grids as colour words, one row per line)."""
    user = (
        "Given input-output grid pairs as reference examples, carefully observe the patterns to predict "
        "the output grid for new test input.\nHere are the input and output grids for the reference examples:\n"
    )
    for k, pair in enumerate(task.train, start=1):
        user += f"Example {k}\nInput:\n{grid_to_words(pair.input)}\n\nOutput:\n{grid_to_words(pair.output)}\n\n\n"
    user += "Here is the input grid for the test example:\nInput:\n"
    user += "\n\n".join(grid_to_words(p.input) for p in task.test)
    user += "\n\n\nDirectly provide the output grids corresponding to the given test input grids."
    answer = "The output grid for the test input grid is:\n\n```\n" + grid_to_words(task.test[0].output) + "\n```"
    return {
        "messages": [
            {"role": "system", "content": "You solve puzzles."},
            {"role": "user", "content": user},
            {"role": "assistant", "content": answer},
        ]
    }


def test_arc_json_directory_one_task_per_file(tmp_path) -> None:
    (tmp_path / "bbb.json").write_text(json.dumps({"train": [{"input": A, "output": B}], "test": [{"input": C}]}))
    (tmp_path / "aaa.json").write_text(
        json.dumps({"train": [{"input": C, "output": D}], "test": [{"input": A, "output": B}]})
    )
    tasks = list(read_tasks(tmp_path, "arc-json"))
    assert [t.id for t in tasks] == ["aaa", "bbb"]
    assert tasks[0].test[0].output.tolist() == B and tasks[1].test[0].output is None


def test_arc_json_combined_file(tmp_path) -> None:
    combined = {
        "t1": {"train": [{"input": A, "output": B}], "test": [{"input": C}]},
        "t2": {"train": [{"input": D, "output": D}], "test": [{"input": D}]},
    }
    path = tmp_path / "all.json"
    path.write_text(json.dumps(combined))
    assert [t.id for t in read_tasks(path, "arc-json")] == ["t1", "t2"]


def test_kaggle_layout_joins_solutions(arc_tasks) -> None:
    with_answers = [t for t in arc_tasks if all(p.output is not None for p in t.test)]
    assert len(with_answers) == len(arc_tasks)
    ids = {t.id for t in arc_tasks}
    assert {"007bbfb7", "0934a4d8"} <= ids  # one ARC-AGI-1 training task, one ARC-AGI-2 evaluation task


def test_kaggle_solution_count_mismatch_names_the_file(tmp_path) -> None:
    (tmp_path / "x_challenges.json").write_text(
        json.dumps({"t1": {"train": [{"input": A, "output": B}], "test": [{"input": C}]}})
    )
    (tmp_path / "x_solutions.json").write_text(json.dumps({"t1": [B, B]}))
    with pytest.raises(InvalidRecord, match=r"x_solutions\.json, task t1: 2 solutions for 1 test inputs"):
        list(read_tasks(tmp_path, "arc-kaggle"))


def test_a_kaggle_file_named_otherwise_is_not_its_own_solutions(tmp_path) -> None:
    """A challenges file not named *_challenges.json has no solutions neighbour: it had been
    paired with itself ("no list of solutions for 1 test inputs")."""
    path = tmp_path / "tasks.json"
    path.write_text(json.dumps({"t1": {"train": [{"input": A, "output": B}], "test": [{"input": C, "output": D}]}}))
    (task,) = read_tasks(path, "arc-kaggle")
    assert task.id == "t1" and task.test[0].output.tolist() == D


def test_barc_rows_list_and_dict_pairs_with_split(tmp_path) -> None:
    rows = [
        {"source": "def main(): ...", "examples": [[A, B], [C, D], [D, A]], "seeds": ["007bbfb7"]},
        {"examples": [{"input": A, "output": B}, {"input": C, "output": D}, {"input": D, "output": A}]},
    ]
    path = write_jsonl(tmp_path / "barc.jsonl", rows)
    lists, dicts = read_tasks(path, "barc-jsonl")
    assert [p.input.tolist() for p in lists.train] == [A, C] and lists.test[0].output.tolist() == A
    assert lists.id == dicts.id and len(lists.id) == 12  # same content, same deterministic id
    assert (lists.origin, dicts.origin) == (f"{path}, line 1", f"{path}, line 2")
    two_tests = next(read_tasks(path, "barc-jsonl", split=Split(test_pairs=2)))
    assert len(two_tests.train) == 1 and len(two_tests.test) == 2 and two_tests.id != lists.id


def test_barc_chat_messages_with_colour_words(tmp_path, arc_tasks) -> None:
    task = next(t for t in arc_tasks if t.id == "007bbfb7")
    gz = tmp_path / "chat.jsonl.gz"
    with gzip.open(gz, "wt") as f:
        f.write(json.dumps(barc_chat(task)) + "\n")
    (parsed,) = read_tasks(gz, "barc-jsonl")
    assert len(parsed.train) == len(task.train)
    for ours, theirs in zip(parsed.train + parsed.test, task.train + task.test):
        assert ours.equals(theirs)


def test_parquet_export_of_hugging_face_rows(tmp_path, arc_tasks) -> None:
    tasks = arc_tasks[:3]
    # Hugging Face exports often keep nested grids as JSON strings.
    table = pa.table(
        {
            "id": [t.id for t in tasks],
            "train": [json.dumps(t.to_json()["train"]) for t in tasks],
            "test": [json.dumps(t.to_json()["test"]) for t in tasks],
        }
    )
    pq.write_table(table, tmp_path / "part-0.parquet")
    pq.write_table(pa.table({"examples": [[[A, B], [C, D]]]}), tmp_path / "part-1.parquet")
    read = list(read_tasks(tmp_path, "barc-jsonl"))
    assert [t.id for t in read[:3]] == [t.id for t in tasks]
    assert all(a.equals(b) for a, b in zip(read, tasks))
    assert read[3].train[0].output.tolist() == B


BAD_ROWS = [
    (
        '{"examples": [[[[1]], [[2]]], [[[1, 2], [3]], [[0]]]]}',
        r"line 2: example 1 input: not rectangular: row 0 has 2 cells, row 1 has 1",
    ),
    (
        '{"examples": [[[[1]], [[12]]], [[[1]], [[0]]]]}',
        r"line 2: example 0 output: cell \(0, 0\) is 12, expected 0\.\.9",
    ),
    ('{"examples": [[[[1]], [[2]]]]}', r"line 2: 1 examples leave no train pair with 1 test pair"),
    ('{"examples": [{"input": [[1]]}, [[[1]], [[0]]]]}', r"line 2: example 0: missing 'output'"),
    (
        json.dumps({"train": [{"input": [[1]], "output": [[1]]}], "test": [{"input": [[0] * 31]}]}),
        r"line 2: test pair 0 input: size 1x31",
    ),
    ('{"examples": [[[[1]], [[2]]]', r"line 2: not valid JSON"),
    ('{"prompt": "hello"}', r"line 2: no 'train'/'test', 'examples' or 'messages' field \(keys: \['prompt'\]\)"),
    (
        '{"messages": [{"role": "user", "content": "Input:\\nBlack Blue\\nRed\\n\\nOutput:\\nBlue\\n\\nHere is the '
        'input grid for the test example:\\nInput:\\nRed"}]}',
        r"line 2: example 0 input: not rectangular",
    ),
]


@pytest.mark.parametrize(("row", "reason"), BAD_ROWS)
def test_bad_row_names_file_line_and_reason(tmp_path, row, reason) -> None:
    path = write_jsonl(tmp_path / "rows.jsonl", [{"examples": [[A, B], [C, D]]}, row])
    with pytest.raises(InvalidRecord, match=r"rows\.jsonl, " + reason):
        list(read_tasks(path, "barc-jsonl"))


def test_skip_invalid_counts_skips(tmp_path) -> None:
    good = {"examples": [[A, B], [C, D]]}
    path = write_jsonl(tmp_path / "rows.jsonl", [good] + [row for row, _ in BAD_ROWS] + [good])
    stats = ReadStats()
    tasks = list(read_tasks(path, "barc-jsonl", skip_invalid=True, stats=stats))
    assert len(tasks) == 2 and stats.read == 2 and stats.skipped == len(BAD_ROWS)
    assert stats.examples[0].endswith("not rectangular: row 0 has 2 cells, row 1 has 1")


def test_bad_task_file_in_directory(tmp_path) -> None:
    (tmp_path / "a.json").write_text(json.dumps({"train": [{"input": A}], "test": [{"input": A}]}))
    (tmp_path / "b.json").write_text("{not json")
    with pytest.raises(InvalidRecord, match=r"a\.json: train pair 0: missing 'output'"):
        list(read_tasks(tmp_path, "arc-json"))
    stats = ReadStats()
    assert list(read_tasks(tmp_path, "arc-json", skip_invalid=True, stats=stats)) == []
    assert stats.skipped == 2 and "b.json: not valid JSON" in stats.examples[1]


def test_missing_paths_and_empty_directories(tmp_path) -> None:
    with pytest.raises(LayerTapError, match=r"nope: no such file or directory"):
        list(read_tasks(tmp_path / "nope", "arc-json"))
    with pytest.raises(LayerTapError, match=r"no jsonl or parquet files"):
        list(read_tasks(tmp_path, "barc-jsonl"))


def test_grids_are_int8_arrays(tmp_path) -> None:
    path = write_jsonl(tmp_path / "r.jsonl", [{"examples": [[A, B], [C, D]]}])
    task = next(read_tasks(path, "barc-jsonl"))
    assert all(p.input.dtype == np.int8 for p in task.train + task.test)


def test_barc_induction_chat_has_tests_without_answers(tmp_path, arc_tasks) -> None:
    """Induction rows end with a program, not a grid: test outputs are unknown; two test inputs
    separated by a blank line are two test pairs."""
    task = next(t for t in arc_tasks if len(t.test) == 2)
    row = barc_chat(task)
    row["messages"][2]["content"] = "```python\nfrom common import *\n\ndef transform(grid):\n    return grid\n```"
    write_jsonl(tmp_path / "induction.jsonl", [row])
    (parsed,) = read_tasks(tmp_path / "induction.jsonl", "barc-jsonl")
    assert [p.output for p in parsed.test] == [None, None]
    assert all(np.array_equal(a.input, b.input) for a, b in zip(parsed.test, task.test))
