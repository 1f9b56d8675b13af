from __future__ import annotations

import json

import pytest

from layertap.arc.readers import read_tasks
from layertap.cli import main

A, B, C, D = [[1, 2], [3, 4]], [[5]], [[0, 0, 7]], [[9], [8]]


def write_rows(path, rows) -> None:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))


def test_barc_jsonl_to_arc_json_files_and_solutions(tmp_path, capsys) -> None:
    rows = [
        {"examples": [[A, B], [C, D], [D, A]]},
        {"examples": [[A, B], [C, D], [D, A]]},
        {"examples": [[C, C], [D, D]]},
    ]
    write_rows(tmp_path / "in.jsonl", rows)
    assert main(["transform", str(tmp_path / "in.jsonl"), str(tmp_path / "out")]) == 0
    assert "3 tasks read, 0 invalid skipped; 2 tasks written, 1 duplicate dropped" in capsys.readouterr().err
    files = sorted((tmp_path / "out" / "tasks").iterdir())
    assert len(files) == 2
    solutions = json.loads((tmp_path / "out" / "solutions.json").read_text())
    tasks = {t.id: t for t in read_tasks(tmp_path / "out" / "tasks", "arc-json")}
    assert set(tasks) == set(solutions) == {f.stem for f in files}
    for task_id, outputs in solutions.items():
        assert outputs == [p.output.tolist() for p in tasks[task_id].test]
    # Ids come from content: a second run writes the same names.
    assert main(["transform", str(tmp_path / "in.jsonl"), str(tmp_path / "again")]) == 0
    assert sorted(f.name for f in (tmp_path / "again" / "tasks").iterdir()) == [f.name for f in files]


def test_split_max_samples_and_kaggle_layout(tmp_path) -> None:
    write_rows(
        tmp_path / "in.jsonl", [{"examples": [[A, B], [C, D], [D, A], [B, B]]}, {"examples": [[C, C], [D, D], [A, A]]}]
    )
    args = [
        "transform",
        str(tmp_path / "in.jsonl"),
        str(tmp_path / "out"),
        "--layout",
        "kaggle",
        "--test-pairs",
        "2",
        "--max-samples",
        "1",
    ]
    assert main(args) == 0
    challenges = json.loads((tmp_path / "out" / "challenges.json").read_text())
    solutions = json.loads((tmp_path / "out" / "solutions.json").read_text())
    ((task_id, task),) = challenges.items()
    assert len(task["train"]) == 2 and task["test"] == [{"input": D}, {"input": B}]
    assert solutions == {task_id: [A, B]}
    (tmp_path / "out" / "x_challenges.json").write_text(json.dumps(challenges))
    (tmp_path / "out" / "x_solutions.json").write_text(json.dumps(solutions))
    (back,) = read_tasks(tmp_path / "out" / "x_challenges.json", "arc-kaggle")
    assert back.test[1].output.tolist() == B


def test_no_dedupe_keeps_repeats_under_numbered_ids(tmp_path) -> None:
    write_rows(tmp_path / "in.jsonl", [{"examples": [[A, B], [C, D]]}] * 3)
    assert main(["transform", str(tmp_path / "in.jsonl"), str(tmp_path / "out"), "--no-dedupe"]) == 0
    stems = {p.stem for p in (tmp_path / "out" / "tasks").iterdir()}
    first = min(stems, key=len)
    assert stems == {first, f"{first}.1", f"{first}.2"}


def test_conflicting_ids_are_an_error(tmp_path, capsys) -> None:
    rows = [
        {"id": "t1", "train": [{"input": A, "output": B}], "test": [{"input": C}]},
        {"id": "t1", "train": [{"input": D, "output": B}], "test": [{"input": C}]},
    ]
    write_rows(tmp_path / "in.jsonl", rows)
    assert main(["transform", str(tmp_path / "in.jsonl"), str(tmp_path / "out"), "--layout", "kaggle"]) == 2
    assert "task id 't1' appears twice with different grids" in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == [tmp_path / "in.jsonl"]  # no half-written output, no staging left


def test_invalid_rows_stop_or_are_counted(tmp_path, capsys) -> None:
    write_rows(tmp_path / "in.jsonl", [{"examples": [[A, B], [C, D]]}, {"examples": [[[[1, 2], [3]], B], [C, D]]}])
    assert main(["transform", str(tmp_path / "in.jsonl"), str(tmp_path / "out")]) == 2
    assert "in.jsonl, line 2: example 0 input: not rectangular" in capsys.readouterr().err
    assert main(["transform", str(tmp_path / "in.jsonl"), str(tmp_path / "out"), "--skip-invalid"]) == 0
    err = capsys.readouterr().err
    assert "1 task read, 1 invalid skipped" in err and "skipped: " in err


def test_unsafe_task_ids_are_refused(tmp_path, capsys) -> None:
    (tmp_path / "all.json").write_text(
        json.dumps({"../evil": {"train": [{"input": A, "output": B}], "test": [{"input": C}]}})
    )
    assert main(["transform", str(tmp_path / "all.json"), str(tmp_path / "out")]) == 2
    assert "task id '../evil' is not a safe file name" in capsys.readouterr().err
    assert not (tmp_path / "evil.json").exists()


def test_streams_rows_one_at_a_time(tmp_path) -> None:
    """Each task is written before the next is read (one in memory at a time); a failure
    at the end leaves no output at all."""
    from layertap.arc.task import task_from_json
    from layertap.arc.transform import write_tasks

    def tasks():
        for i in range(30):
            if i:  # the previous task is already on disk, in the staging directory
                (staging,) = tmp_path.glob(".out.partial-*")
                assert len(list((staging / "tasks").iterdir())) == i
            yield task_from_json(
                {"train": [{"input": [[i % 10] * (i % 30 + 1)], "output": A}], "test": [{"input": C}]}, f"t{i}"
            )
        raise ValueError("the input broke at the end")

    with pytest.raises(ValueError, match="broke"):
        write_tasks(tasks(), tmp_path / "out")
    assert list(tmp_path.iterdir()) == []


def test_a_failed_transform_leaves_no_partial_output(tmp_path, capsys) -> None:
    with (tmp_path / "big.jsonl").open("w") as f:
        for i in range(300):
            digits = [int(d) for d in f"{i:05d}"]
            f.write(json.dumps({"examples": [[[digits] * 3, A], [C, D]]}) + "\n")
        f.write("{broken\n")
    assert main(["transform", str(tmp_path / "big.jsonl"), str(tmp_path / "out")]) == 2
    assert "big.jsonl, line 301: not valid JSON" in capsys.readouterr().err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["big.jsonl"]


def test_a_non_empty_output_is_refused_unless_overwritten(tmp_path, capsys) -> None:
    write_rows(tmp_path / "one.jsonl", [{"examples": [[A, B], [C, D]]}])
    write_rows(tmp_path / "two.jsonl", [{"examples": [[C, C], [D, D]]}, {"examples": [[B, B], [D, D]]}])
    assert main(["transform", str(tmp_path / "one.jsonl"), str(tmp_path / "out")]) == 0
    assert main(["transform", str(tmp_path / "two.jsonl"), str(tmp_path / "out")]) == 2
    assert "out is not empty: write to a new directory, or pass --overwrite" in capsys.readouterr().err
    assert len(list((tmp_path / "out" / "tasks").iterdir())) == 1  # untouched
    assert main(["transform", str(tmp_path / "two.jsonl"), str(tmp_path / "out"), "--overwrite"]) == 0
    tasks = list((tmp_path / "out" / "tasks").iterdir())
    solutions = json.loads((tmp_path / "out" / "solutions.json").read_text())
    assert len(tasks) == 2 and set(solutions) == {t.stem for t in tasks}  # only the second dataset
    assert sorted(p.name for p in tmp_path.iterdir()) == ["one.jsonl", "out", "two.jsonl"]


def test_zero_tasks_written_is_a_warning(tmp_path, capsys) -> None:
    (tmp_path / "empty.jsonl").write_text("")
    assert main(["transform", str(tmp_path / "empty.jsonl"), str(tmp_path / "out"), "--format", "barc-jsonl"]) == 0
    assert "warning: no task was written" in capsys.readouterr().err


def test_format_is_detected_from_file_names(tmp_path, arc_dir) -> None:
    from layertap.arc.transform_cli import detect_format

    (tmp_path / "a.json").write_text("{}")
    write_rows(tmp_path / "b.jsonl", [])
    assert detect_format(str(arc_dir)) == "arc-kaggle"
    assert detect_format(str(tmp_path / "a.json")) == "arc-json"
    assert detect_format(str(tmp_path)) == "barc-jsonl"
