"""The runner's contract: DatasetSpec + tokenizer -> Samples with labels and provenance."""

from __future__ import annotations

import json

import numpy as np
import pytest

from layertap.arc.augment import Augmentation
from layertap.arc.budget import BudgetStats
from layertap.arc.builtin import write_builtin_tasks
from layertap.arc.dataset import iter_samples, segment_names, select_labels
from layertap.arc.encoders import build_encoder
from layertap.arc.segments import TEST_INPUT
from layertap.errors import LayerTapError
from layertap_api.spec import DatasetSpec


@pytest.fixture(scope="module")
def small_arc(tmp_path_factory):
    return write_builtin_tasks(tmp_path_factory.mktemp("arc"), "arcagi1", limit=6)


def spec(uri, **fields) -> DatasetSpec:
    return DatasetSpec.model_validate({"format": "arc-kaggle", "maxTokens": 131072, **fields, "uri": str(uri)})


def test_samples_carry_tokens_labels_cells_and_provenance(small_arc, tokenizer) -> None:
    samples = list(iter_samples(spec(small_arc, prompt={"augmentations": 2, "seed": 3}), tokenizer))
    tasks = {s.meta["task_id"] for s in samples}
    assert len(tasks) == 12  # 6 training + 6 evaluation tasks
    assert [s.index for s in samples] == list(range(len(samples)))
    first = samples[0]
    assert first.token_ids.dtype == np.int32 and first.segments.dtype == np.int16 and first.cells.dtype == np.int16
    assert first.meta["copy"] == 0 and first.meta["augmentation"] is None
    assert first.meta["origin"] == f"{small_arc}/arcagi1-eval_challenges.json, task {first.meta['task_id']}"
    assert tokenizer.decode(first.token_ids).endswith("### Output\n\n```grid")
    augmented = [s for s in samples if s.meta["copy"] > 0]
    assert len(augmented) == 2 * len([s for s in samples if s.meta["copy"] == 0])
    json.dumps([s.meta for s in samples])  # provenance is plain JSON
    # Provenance reverts: the test-input cells of an augmented sample, mapped back, are an original test input.
    sample = augmented[0]
    augmentation = Augmentation.from_json(sample.meta["augmentation"])
    cells = sample.cells[sample.segments == TEST_INPUT]
    cells = cells[cells[:, 0] >= 0]
    grid = np.zeros((cells[:, 0].max() + 1, cells[:, 1].max() + 1), dtype=np.int8)
    grid[cells[:, 0], cells[:, 1]] = cells[:, 2]
    original = augmentation.revert_grid(grid)
    (task,) = [s for s in samples if s.meta["task_id"] == sample.meta["task_id"] and s.meta["copy"] == 0][:1]
    text = tokenizer.decode(task.token_ids)
    assert build_encoder("Shape(RowNumber(Minimal))").to_text(original) in text


def test_order_is_deterministic_and_max_samples_stops(small_arc, tokenizer) -> None:
    full = list(iter_samples(spec(small_arc, prompt={"augmentations": 1}), tokenizer))
    again = list(iter_samples(spec(small_arc, prompt={"augmentations": 1}), tokenizer))
    assert all(np.array_equal(a.token_ids, b.token_ids) and a.meta == b.meta for a, b in zip(full, again))
    head = list(iter_samples(spec(small_arc, maxSamples=5, prompt={"augmentations": 1}), tokenizer))
    assert [s.meta for s in head] == [s.meta for s in full[:5]]


def test_token_budget_policies_count_what_they_do(small_arc, tokenizer) -> None:
    lengths = sorted(len(s.token_ids) for s in iter_samples(spec(small_arc), tokenizer))
    limit = lengths[len(lengths) // 2]
    counts = {}
    for policy in ("drop", "shorten", "truncate"):
        budget = BudgetStats()
        samples = list(iter_samples(spec(small_arc, maxTokens=limit, overLimit=policy), tokenizer, budget=budget))
        assert all(len(s.token_ids) <= limit for s in samples)
        counts[policy] = (budget, samples)
    drop, shorten, truncate = (counts[p][0] for p in ("drop", "shorten", "truncate"))
    over = sum(1 for n in lengths if n > limit)
    assert drop.dropped == over and drop.kept == len(lengths) - over
    assert shorten.shortened > 0 and shorten.shortened + shorten.dropped == over
    assert any(s.meta["shortened"] for s in counts["shorten"][1])
    assert truncate.truncated == over and len(counts["truncate"][1]) == len(lengths)
    assert "prompts kept" in str(shorten)


def test_training_variant_labels_the_answer(small_arc, tokenizer) -> None:
    (sample,) = iter_samples(spec(small_arc, maxSamples=1, prompt={"variant": "training"}), tokenizer)
    answer = select_labels(["answer"])[0]
    assert (sample.cells[sample.segments == answer][:, 0] >= 0).any()
    assert segment_names[answer] == "answer"


def test_spec_errors_name_the_field(small_arc, tokenizer) -> None:
    with pytest.raises(LayerTapError, match=r"dataset.prompt.gridEncoder: grid encoder 'Nope'"):
        next(iter_samples(spec(small_arc, prompt={"gridEncoder": "Nope"}), tokenizer))
    with pytest.raises(LayerTapError, match=r"dataset.format: 'text-jsonl' is not an ARC format"):
        next(iter_samples(spec(small_arc, format="text-jsonl"), tokenizer))


def barc_rows(path, tasks) -> list[list]:
    """BARC `examples` rows of real ARC tasks (every pair, train then test) and one bad row (line 2)."""
    rows = [[[p.input.tolist(), p.output.tolist()] for p in (*t.train, *t.test)] for t in tasks]
    bad = [[[1, 2], [3]], [[0]]]  # not rectangular
    lines = [json.dumps({"examples": rows[0]}), json.dumps({"examples": [bad, *rows[1]]})]
    lines += [json.dumps({"examples": row}) for row in rows[2:]]
    path.write_text("\n".join(lines) + "\n")
    return rows


def test_barc_rows_honour_skip_invalid_and_test_pairs(tmp_path, arc_tasks, tokenizer, caplog) -> None:
    tasks = [t for t in arc_tasks if len(t.train) + len(t.test) >= 4][:4]
    rows = barc_rows(tmp_path / "barc.jsonl", tasks)
    barc = {"uri": str(tmp_path / "barc.jsonl"), "format": "barc-jsonl"}
    with pytest.raises(
        LayerTapError, match=r"barc\.jsonl, line 2: .*not rectangular.*dataset\.skipInvalid: true skips"
    ):
        list(iter_samples(spec(**barc), tokenizer))

    samples = list(iter_samples(spec(**barc, skipInvalid=True, testPairs=2), tokenizer))
    kept_lines = [1, 3, 4]  # line 2 is skipped
    assert [(s.meta["origin"], s.meta["test_index"]) for s in samples] == [
        (f"{tmp_path}/barc.jsonl, line {line}", test) for line in kept_lines for test in (0, 1)
    ]
    for sample, line in zip(samples[::2], kept_lines):
        assert sample.meta["train_pairs"] == len(rows[line - 1]) - 2
    # each prompt's test input is that row's test pair (the last two examples)
    for sample in samples:
        row = rows[kept_lines[samples.index(sample) // 2] - 1]
        test_input = np.asarray(row[len(row) - 2 + sample.meta["test_index"]][0])
        cells = sample.cells[(sample.segments == TEST_INPUT) & (sample.cells[:, 0] >= 0)]
        grid = np.full(test_input.shape, -1)
        grid[cells[:, 0], cells[:, 1]] = cells[:, 2]
        np.testing.assert_array_equal(grid, test_input)
    assert "1 invalid record skipped (dataset.skipInvalid)" in caplog.text and "line 2" in caplog.text


def test_spec_defaults_read_barc_rows_with_the_last_pair_as_test(tmp_path, arc_tasks, tokenizer) -> None:
    tasks = [t for t in arc_tasks if len(t.train) + len(t.test) >= 4][:3]
    rows = barc_rows(tmp_path / "barc.jsonl", tasks)
    defaults = DatasetSpec.model_validate({"uri": "x", "format": "barc-jsonl"})
    assert defaults.skip_invalid is False and defaults.test_pairs == 1
    samples = list(iter_samples(spec(uri=tmp_path / "barc.jsonl", format="barc-jsonl", skipInvalid=True), tokenizer))
    assert [s.meta["train_pairs"] for s in samples] == [len(rows[0]) - 1, len(rows[2]) - 1]
    with pytest.raises(ValueError, match="testPairs"):
        DatasetSpec.model_validate({"uri": "x", "format": "barc-jsonl", "testPairs": 0})


def test_select_keeps_exactly_the_selected_tasks_with_all_their_prompts(small_arc, tokenizer) -> None:
    from layertap.datasets import load_dataset

    augmented = {"augmentations": 1, "seed": 2}
    full = load_dataset(spec(small_arc, prompt=augmented), tokenizer).samples
    order = list(dict.fromkeys(s.meta["task_id"] for s in full))  # task ids in dataset order
    assert len(order) == 12
    wanted = [order[7], order[2], order[10]]
    selected = load_dataset(spec(small_arc, prompt=augmented, select={"ids": wanted}), tokenizer)
    kept = [s for s in full if s.meta["task_id"] in wanted]  # every prompt: copies and test inputs
    assert [s.meta for s in selected.samples] == [s.meta for s in kept]
    assert all(np.array_equal(a.token_ids, b.token_ids) for a, b in zip(selected.samples, kept))
    assert [s.index for s in selected.samples] == list(range(len(kept)))
    assert {s.meta["copy"] for s in selected.samples} == {0, 1}

    def task_ids(**select):
        samples = load_dataset(spec(small_arc, select=select), tokenizer).samples
        return list(dict.fromkeys(s.meta["task_id"] for s in samples))

    assert task_ids(offset=3, limit=4) == order[3:7]
    sampled = task_ids(sample=5, seed=9)
    assert len(sampled) == 5 and sampled == [t for t in order if t in sampled] and task_ids(sample=5, seed=9) == sampled
    assert task_ids(ids=wanted, offset=1) == [order[7], order[10]]
    # maxSamples still counts prompts, after the selection
    capped = load_dataset(spec(small_arc, maxSamples=1, select={"ids": [order[5]]}), tokenizer).samples
    assert [s.meta["task_id"] for s in capped] == [order[5]]


def test_a_bad_selection_names_the_field_and_the_dataset(small_arc, tokenizer) -> None:
    from layertap.datasets import load_dataset

    with pytest.raises(LayerTapError, match=rf"^dataset.select.ids: task\(s\) nope not in {small_arc} \(12 tasks\)$"):
        load_dataset(spec(small_arc, select={"ids": ["nope"]}), tokenizer)
    with pytest.raises(
        LayerTapError, match=rf"^dataset.select.offset: 12 is past the end of {small_arc} \(12 tasks\)$"
    ):
        load_dataset(spec(small_arc, select={"offset": 12}), tokenizer)
