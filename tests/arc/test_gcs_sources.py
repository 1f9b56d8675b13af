"""ARC datasets on gs://, read through a real GCS emulator (fake-gcs-server) in ranged reads."""

from __future__ import annotations

import gzip
import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from layertap.arc.builtin import write_builtin_tasks
from layertap.arc.dataset import iter_samples
from layertap.arc.readers import InvalidRecord, read_tasks
from layertap.errors import LayerTapError
from layertap.io import gcs as gcs_store
from layertap_api.spec import DatasetSpec

pytestmark = [pytest.mark.storage, pytest.mark.timeout(120)]
BUCKET = "arc-data"


@pytest.fixture(scope="module")
def emulator_url(gcs_emulator):
    gcs_emulator.create_bucket(BUCKET)
    return gcs_emulator.url


@pytest.fixture
def bucket(emulator_url, monkeypatch, tmp_path):
    """The emulator's bucket holding ARC data in three layouts; small reads force many ranges."""
    monkeypatch.setenv("STORAGE_EMULATOR_HOST", emulator_url)
    monkeypatch.setattr(gcs_store, "READ_CHUNK_BYTES", 4096)
    from google.cloud import storage

    client = storage.Client()
    target = client.bucket(BUCKET)
    local = write_builtin_tasks(tmp_path / "kaggle", "arcagi1", limit=5)
    for file in local.iterdir():
        target.blob(f"kaggle/{file.name}").upload_from_filename(str(file))
    tasks = list(read_tasks(local, "arc-kaggle"))
    rows = "".join(
        json.dumps({"examples": [[p.input.tolist(), p.output.tolist()] for p in t.train + t.test]}) + "\n"
        for t in tasks
    )
    target.blob("rows/part-0.jsonl.gz").upload_from_string(gzip.compress(rows.encode()))
    table = pa.table(
        {
            "id": [t.id for t in tasks],
            "train": [json.dumps(t.to_json()["train"]) for t in tasks],
            "test": [json.dumps(t.to_json()["test"]) for t in tasks],
        }
    )
    pq.write_table(table, tmp_path / "part-1.parquet")
    target.blob("rows/part-1.parquet").upload_from_filename(str(tmp_path / "part-1.parquet"))
    target.blob("bad/rows.jsonl").upload_from_string(
        '{"examples": [[[[1]], [[2]]], [[[3]], [[4]]]]}\n{"examples": 1}\n'
    )
    return tasks


def test_kaggle_layout_on_gcs_equals_local(bucket) -> None:
    remote = list(read_tasks(f"gs://{BUCKET}/kaggle", "arc-kaggle"))
    assert len(remote) == len(bucket) and all(a.equals(b) for a, b in zip(remote, bucket))


def test_jsonl_gz_and_parquet_stream_from_gcs(bucket) -> None:
    remote = list(read_tasks(f"gs://{BUCKET}/rows", "barc-jsonl"))
    assert len(remote) == 2 * len(bucket)
    from_parquet = remote[len(bucket) :]
    assert all(a.equals(b) for a, b in zip(from_parquet, bucket))
    one_object = list(read_tasks(f"gs://{BUCKET}/rows/part-0.jsonl.gz", "barc-jsonl"))
    assert [t.id for t in one_object] == [t.id for t in remote[: len(bucket)]]


def test_errors_name_the_gcs_object(bucket) -> None:
    with pytest.raises(
        InvalidRecord, match=rf"gs://{BUCKET}/bad/rows.jsonl, line 2: 'examples' must be a non-empty list"
    ):
        list(read_tasks(f"gs://{BUCKET}/bad", "barc-jsonl"))
    with pytest.raises(LayerTapError, match=rf"gs://{BUCKET}/nope: no such object or prefix"):
        list(read_tasks(f"gs://{BUCKET}/nope", "arc-json"))


def test_extract_dataset_reads_gcs(bucket, tokenizer) -> None:
    spec = DatasetSpec(uri=f"gs://{BUCKET}/kaggle", format="arc-kaggle", max_samples=3, max_tokens=131072)
    samples = list(iter_samples(spec, tokenizer))
    assert [s.meta["task_id"] for s in samples] == [t.id for t in bucket for _ in t.test][:3]


def test_transform_reads_gcs(bucket, tmp_path, capsys) -> None:
    from layertap.cli import main

    assert main(["transform", f"gs://{BUCKET}/rows", str(tmp_path / "out")]) == 0
    written = len(list((tmp_path / "out" / "tasks").iterdir()))
    # The parquet rows repeat the jsonl rows' grids: one-test tasks are the same task twice.
    one_test = sum(len(t.test) == 1 for t in bucket)
    assert written == 2 * len(bucket) - one_test
    assert f"{written} tasks written, {one_test} duplicates dropped" in capsys.readouterr().err
