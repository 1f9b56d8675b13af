"""hf:// sources in a multi-process run: only process 0 reads the Hub's cache it was given; the
others get what it resolved through <output>/.hf-cache and produce the one-process result."""

from __future__ import annotations

import json

import numpy as np
import pytest
from hub_cache import directory_files, parquet_bytes, write_commit

from .conftest import launch, logs_text, read_layer_sorted, wait_all


@pytest.mark.slow
def test_only_process_0_needs_the_hub_and_every_process_reads_its_commit(checkpoint, dataset, tmp_path):
    texts = [json.loads(line)["text"] for line in dataset.read_text().splitlines()[:120]]
    local = tmp_path / "local" / "part.parquet"
    local.parent.mkdir()
    local.write_bytes(parquet_bytes(text=texts))
    hub = tmp_path / "hub-of-process-0"
    write_commit(hub, "org/tiny", directory_files(checkpoint))
    commit = write_commit(hub, "org/data", {"data/train-00000-of-00001.parquet": local}, repo_type="dataset")
    # no process may reach the Hub, and process 1's cache starts empty: without sharing it fails
    caches = {0: hub, 1: tmp_path / "hub-of-process-1"}

    def rank_env(rank: int) -> dict:
        return {"HF_HUB_OFFLINE": "1", "HF_HUB_CACHE": str(caches[rank]), "HF_HOME": str(tmp_path / f"home{rank}")}

    hub_flags = ("--model", "hf://org/tiny", "--dataset", "hf://org/data", "--format", "parquet", "--batch-size", "4")
    procs = launch(2, 1, checkpoint, dataset, tmp_path / "shared", tmp_path / "logs", *hub_flags, rank_env=rank_env)
    assert wait_all(procs, tmp_path / "logs") == [0, 0], logs_text(tmp_path / "logs")
    local_flags = ("--dataset", str(local.parent), "--format", "parquet", "--batch-size", "4")
    procs = launch(1, 1, checkpoint, dataset, tmp_path / "alone", tmp_path / "logs1", *local_flags)
    assert wait_all(procs, tmp_path / "logs1") == [0], logs_text(tmp_path / "logs1")

    for layer in (1, 3):
        shared, alone = read_layer_sorted(tmp_path / "shared", layer), read_layer_sorted(tmp_path / "alone", layer)
        assert len(shared["token_ids"]) > 0
        for name in shared:
            np.testing.assert_array_equal(shared[name], alone[name], err_msg=name)
    received = caches[1] / "datasets--org--data" / "snapshots" / commit / "data" / "train-00000-of-00001.parquet"
    assert received.read_bytes() == local.read_bytes()
    assert (caches[1] / "models--org--tiny" / "refs" / "main").is_file()
