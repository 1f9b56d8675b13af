"""A run with model, dataset and output on gs://, against a real GCS emulator (fake-gcs-server)."""

from __future__ import annotations

import numpy as np
import pytest
from google.cloud import storage

import layertap
import layertap.model.checkpoint

from .conftest import TEXTS, extract, write_jsonl

pytestmark = [pytest.mark.storage, pytest.mark.timeout(300)]
BUCKET = "layertap-runner"


@pytest.fixture(scope="module")
def emulator(gcs_emulator):
    gcs_emulator.create_bucket(BUCKET)
    return gcs_emulator


def test_extract_reads_and_writes_gs_and_resumes(checkpoint, tmp_path, emulator, monkeypatch, capsys):
    monkeypatch.setenv("STORAGE_EMULATOR_HOST", emulator.url)
    monkeypatch.setattr(layertap.model.checkpoint, "DEFAULT_CACHE_DIR", tmp_path / "cache")
    local = write_jsonl(tmp_path / "texts.jsonl", TEXTS)
    bucket = storage.Client.create_anonymous_client().bucket(BUCKET)
    bucket.blob("data/texts.jsonl").upload_from_filename(str(local))
    for file in checkpoint.iterdir():
        bucket.blob(f"models/tiny/{file.name}").upload_from_filename(str(file))

    flags = ("--layers", "2", "--batch-size", "1", "--shard-size-mb", "1")
    model, data = f"gs://{BUCKET}/models/tiny", f"gs://{BUCKET}/data/texts.jsonl"
    assert extract(model, data, f"gs://{BUCKET}/runs/a", *flags) == 0
    assert extract(checkpoint, local, tmp_path / "local", *flags) == 0
    remote, here = layertap.open(f"gs://{BUCKET}/runs/a"), layertap.open(str(tmp_path / "local"))
    remote.verify()
    a, b = remote.read_layer(2), here.read_layer(2)
    order_a, order_b = np.lexsort((a.position, a.sample_index)), np.lexsort((b.position, b.sample_index))
    np.testing.assert_array_equal(a.activations[order_a], b.activations[order_b])
    np.testing.assert_array_equal(a.token_ids[order_a], b.token_ids[order_b])

    capsys.readouterr()
    assert extract(model, data, f"gs://{BUCKET}/runs/a", *flags) == 0
    assert "nothing left to run: the " in capsys.readouterr().out
