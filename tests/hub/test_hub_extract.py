"""`layertap extract` over hf:// sources: the same activations as from the same files given as
local paths; the commit read is part of the run's identity; a bad column fails before the
model runs."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import yaml
from hub_cache import directory_files, parquet_bytes, repo_folder, write_commit

import layertap
from layertap.cli import main

TEXTS = [
    "The quick brown fox jumps over the lazy dog.",
    "<|im_start|>user\nFind the rule that maps the input grid to the output grid.<|im_end|>",
    "Sparse autoencoders find interpretable features in the residual stream. " * 3,
    "0123456789",
    "Each layer reads from and writes to the residual stream.",
    "Given the training examples, predict the output for the test input. " * 2,
    "a",
    "The grid has 3 rows and 7 columns. " * 4,
]
LAYERS = (1, 3)


def extract(tmp_path: Path, name: str, model, dataset: dict) -> int:
    """`layertap extract --config` in this process (the spec's dataset fields in a file), float32."""
    config = tmp_path / f"{name}.yaml"
    spec = {
        "model": {"uri": str(model), "dtype": "float32"},
        "dataset": {"maxTokens": 256, **dataset},
        "extraction": {"layers": list(LAYERS), "storageDtype": "float32", "batchSize": 2},
        "output": {"uri": str(tmp_path / name)},
    }
    config.write_text(yaml.safe_dump(spec))
    return main(["extract", "--config", str(config), "--no-progress"])


def assert_same_activations(a: Path, b: Path) -> None:
    for layer in LAYERS:
        x, y = layertap.open(str(a)).read_layer(layer), layertap.open(str(b)).read_layer(layer)
        assert len(x.token_ids) > 0
        np.testing.assert_array_equal(x.token_ids, y.token_ids)
        np.testing.assert_array_equal(x.sample_index, y.sample_index)
        np.testing.assert_array_equal(x.position, y.position)
        np.testing.assert_array_equal(x.activations, y.activations)


def dataset_repo(hub: Path, texts=TEXTS, refs=("main",)) -> str:
    files = {"data/train-00000-of-00001.parquet": parquet_bytes(text=texts, id=list(range(len(texts))))}
    return write_commit(hub, "org/data", files, repo_type="dataset", refs=refs)


@pytest.fixture
def local_parquet(tmp_path) -> Path:
    folder = tmp_path / "parquet"
    folder.mkdir()
    (folder / "part.parquet").write_bytes(parquet_bytes(text=TEXTS, id=list(range(len(TEXTS)))))
    return folder


def test_a_hub_dataset_extracts_what_its_files_extract_locally(hub, checkpoint, tmp_path, local_parquet):
    commit = dataset_repo(hub)
    assert (
        extract(tmp_path, "hub", checkpoint, {"uri": "hf://org/data", "format": "parquet", "select": {"offset": 1}})
        == 0
    )
    assert (
        extract(
            tmp_path, "local", checkpoint, {"uri": str(local_parquet), "format": "parquet", "select": {"offset": 1}}
        )
        == 0
    )
    assert_same_activations(tmp_path / "hub", tmp_path / "local")
    meta = json.loads((tmp_path / "hub" / "run.json").read_text())["meta"]
    assert list(meta["dataset"]["files"]) == [f"hf://datasets/org/data@{commit}/data/train-00000-of-00001.parquet"]
    assert meta["dataset"]["uri"] == "hf://org/data" and meta["dataset"]["split"] == "train"


def test_a_hub_model_extracts_what_its_files_extract_locally(hub, checkpoint, tmp_path, local_parquet):
    write_commit(hub, "org/tiny", directory_files(checkpoint))
    dataset_repo(hub)
    assert extract(tmp_path, "hub", "hf://org/tiny", {"uri": "hf://org/data", "format": "parquet"}) == 0
    assert extract(tmp_path, "local", checkpoint, {"uri": str(local_parquet), "format": "parquet"}) == 0
    assert_same_activations(tmp_path / "hub", tmp_path / "local")


def test_a_resume_after_the_revision_moved_to_other_data_is_refused(hub, checkpoint, tmp_path, capsys):
    first = dataset_repo(hub)
    source = {"uri": "hf://org/data@main", "format": "parquet"}
    assert extract(tmp_path, "out", checkpoint, source) == 0
    run_json = (tmp_path / "out" / "run.json").read_text()

    dataset_repo(hub, [*TEXTS[:-1], TEXTS[-1] + " changed"])  # main now points at another commit
    capsys.readouterr()
    assert extract(tmp_path, "out", checkpoint, source) == 2
    err = capsys.readouterr().err
    assert f"hf://datasets/org/data@{first}/" in err and "write to a new output.uri" in err
    assert (tmp_path / "out" / "run.json").read_text() == run_json  # the run is untouched

    (repo_folder(hub, "org/data", "dataset") / "refs" / "main").write_text(first)  # main back where it was
    assert extract(tmp_path, "out", checkpoint, source) == 0
    assert (
        extract(tmp_path, "out", checkpoint, {**source, "uri": f"hf://org/data@{first}"}) == 2
    )  # the uri is identity too


def test_a_missing_column_fails_before_the_model_runs(hub, checkpoint, tmp_path, capsys):
    dataset_repo(hub)
    assert extract(tmp_path, "out", checkpoint, {"uri": "hf://org/data", "format": "parquet", "column": "prompt"}) == 2
    err = capsys.readouterr().err
    assert "dataset.column: 'prompt' is not a column of hf://datasets/org/data@" in err and "(columns: text, id)" in err
    assert not (tmp_path / "out" / "run.json").exists()


def test_dataset_fields_as_flags(hub, checkpoint, tmp_path, capsys):
    """--split, --column and --dataset-config reach the spec: a split that is not there is named."""
    dataset_repo(hub)
    flags = [
        "extract",
        "--model",
        str(checkpoint),
        "--dataset",
        "hf://org/data",
        "--format",
        "parquet",
        "--no-progress",
    ]
    assert main([*flags, "--output", str(tmp_path / "a"), "--split", "test"]) == 2
    assert "test" in capsys.readouterr().err and not (tmp_path / "a").exists()
    assert main([*flags, "--output", str(tmp_path / "b"), "--column", "id"]) == 2
    assert "dataset.column" in capsys.readouterr().err
    assert main([*flags, "--output", str(tmp_path / "c"), "--split", "train", "--column", "text", "--layers", "1"]) == 0
    assert layertap.open(str(tmp_path / "c")).num_tokens > 0
