"""`layertap demo`: real ARC tasks through a random model, and the printed snippet reads the result."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

import layertap
from layertap.cli import main


def test_demo_writes_a_readable_run_and_the_printed_snippet_works(tmp_path, capsys):
    assert main(["demo", "--workdir", str(tmp_path / "demo"), "--tasks", "3", "--no-progress"]) == 0
    out = capsys.readouterr().out
    snippet = [line.strip() for line in out.splitlines() if line.startswith(("  import layertap", "  acts ="))]
    assert len(snippet) == 2, out
    scope: dict = {}
    exec("\n".join(snippet), scope)
    acts = scope["acts"]
    assert "rows in 1 shard (" in out  # counts say their noun in the singular too
    assert acts.ndim == 2 and acts.shape[1] == 64 and len(acts) > 0 and np.isfinite(acts).all()
    # it ends with the run's report, and says where it is
    report = [line.removeprefix("Report: ") for line in out.splitlines() if line.startswith("Report: ")]
    assert (
        len(report) == 1 and report[0].endswith("report.html") and Path(report[0]).read_text().count("<img ") == 4 + 3
    ), out

    run = layertap.open(str(tmp_path / "demo" / "activations-3-tasks"))
    assert run.layers == [1, 2, 3] and run.storage_dtype == "bfloat16"
    layer = run.read_layer(1)
    provenance = run.samples()
    assert set(provenance) == {int(i) for i in np.unique(layer.sample_index)}
    assert len({meta["task_id"] for meta in provenance.values()}) == 3  # every task, with its provenance
    grid = layer.cell[:, 0] >= 0
    assert grid.any() and (~grid).any()  # grid-cell tokens carry (row, col, colour), others -1
    assert set(np.unique(layer.cell[grid, 2])) <= set(range(10))

    # the config it wrote reruns the same extraction, which is already complete
    assert main(["extract", "--config", str(tmp_path / "demo" / "extraction-3-tasks.yaml"), "--no-progress"]) == 0
    assert "nothing left to run: the " in capsys.readouterr().out
    # and so does the demo itself; another task count is a run of its own
    assert main(["demo", "--workdir", str(tmp_path / "demo"), "--tasks", "3", "--no-progress"]) == 0
    assert main(["demo", "--workdir", str(tmp_path / "demo"), "--tasks", "2", "--no-progress"]) == 0
    assert layertap.open(str(tmp_path / "demo" / "activations-2-tasks")).num_tokens < run.num_tokens


def test_demo_predict_answers_real_tasks_and_says_where_the_files_are(tmp_path, capsys):
    import json

    assert main(["demo", "--predict", "--workdir", str(tmp_path / "demo"), "--tasks", "2", "--no-progress"]) == 0
    out = capsys.readouterr().out
    files = dict(line.strip().split(": ", 1) for line in out.splitlines() if line.startswith("  ") and ": /" in line)
    assert set(files) == {"submission", "results", "score"}, out
    submission = json.loads(Path(files["submission"]).read_text())
    assert len(submission) == 2 and all(set(t[0]) == {"attempt_1", "attempt_2"} for t in submission.values())
    assert json.loads(Path(files["score"]).read_text())["per_task_mean"] == 0.0 and "ARC Prize score: 0.000" in out
    # the config it wrote resumes the same prediction: nothing is generated again
    assert main(["predict", "--config", str(tmp_path / "demo" / "prediction-2-tasks.yaml"), "--no-progress"]) == 0
    rerun = capsys.readouterr().out
    assert "nothing left to generate: the " in rerun and "tokens/s" not in rerun
    assert f"  score: {files['score']}" in rerun  # and it still says where the outputs are


def test_bad_demo_arguments_are_refused_before_anything_is_written(tmp_path, capsys):
    for tasks in ("0", "-3"):  # 0 had run into an empty dataset, -3 into a slice of all but 3
        with pytest.raises(SystemExit):
            main(["demo", "--workdir", str(tmp_path / "demo"), "--tasks", tasks])
        assert "is not a positive number of tasks" in capsys.readouterr().err
    assert main(["demo", "--workdir", str(tmp_path / "demo"), "--tasks", "401"]) == 2
    assert "the demo has the 400 ARC-AGI-1 training tasks" in capsys.readouterr().err
    assert not (tmp_path / "demo").exists()
    (tmp_path / "file").write_text("mine")
    assert main(["demo", "--workdir", str(tmp_path / "file")]) == 2  # was a FileExistsError traceback
    assert "a file is there" in capsys.readouterr().err
