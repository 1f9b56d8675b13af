"""A checkpoint on gs:// (a real fake-gcs-server) loads exactly as its local copy."""

from __future__ import annotations

import uuid

import jax
import numpy as np
import pytest

from layertap.model import load_checkpoint, load_tokenizer

pytestmark = [pytest.mark.storage, pytest.mark.timeout(300)]
BUCKET = "layertap-model-test"


@pytest.fixture(scope="module")
def emulator(gcs_emulator):
    gcs_emulator.create_bucket(BUCKET)
    return gcs_emulator


def test_gs_checkpoint_equals_local(tiny_dir, tiny, emulator, monkeypatch, tmp_path):
    from layertap.io import open_store

    monkeypatch.setenv("STORAGE_EMULATOR_HOST", emulator.url)
    uri = f"gs://{BUCKET}/models/{uuid.uuid4().hex[:8]}"
    store = open_store(uri)
    for path in tiny_dir.iterdir():
        store.write(path.name, path.read_bytes())

    config, params = load_checkpoint(uri, cache_dir=tmp_path / "cache")
    local_config, local_params = tiny
    assert config == local_config
    jax.tree.map(np.testing.assert_array_equal, params, local_params)
    tokenizer = load_tokenizer(uri, cache_dir=tmp_path / "cache")
    assert tokenizer.encode("grid 0123") == load_tokenizer(tiny_dir).encode("grid 0123")
