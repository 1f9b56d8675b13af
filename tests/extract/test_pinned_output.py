"""A small fixed run's output, pinned: a refactor must not change what is stored.

Everything but the activation values is pinned exactly: the shard layout and sizes, the
units, the index columns (token ids, samples, positions, segments, cells) and the sample
sidecars. The activation values depend on the CPU's float arithmetic (XLA compiles for
the machine it runs on), so they are pinned by per-layer sums to a relative 1e-4: a
change of order, layer, dtype or selection moves them by far more.
"""

from __future__ import annotations

import json

import crc32c
import numpy as np

import layertap
from layertap.cli import main
from layertap.demo import write_arc_tasks
from layertap.store import layout

from .conftest import TEXTS, extract, write_jsonl


def crc(data: bytes) -> str:
    return f"{crc32c.crc32c(data):08x}"


def fingerprint(output, tmp_dir) -> tuple[dict, dict]:
    """(exact, approximate) summary of a finalized run; paths under tmp_dir are made relative."""
    run = layertap.open(str(output))
    keys = ("layers", "storage_dtype", "hidden_size", "num_shards", "num_units", "num_tokens", "total_bytes")
    exact: dict = {key: run.manifest[key] for key in keys}
    approx = {}
    for shard in run.shards:
        sidecar = json.loads(run._store.read(shard.entry["samples"]))["samples"]
        sidecar_text = json.dumps(sidecar, sort_keys=True).replace(str(tmp_dir), "<tmp>")
        exact[shard.key] = {
            "units": shard.entry["units"],
            "bytes": shard.entry["bytes"],
            "columns": {column: crc(shard.read(column).tobytes()) for column in layout.TOKEN_COLUMNS},
            "samples": crc(sidecar_text.encode()),
        }
        for layer in run.layers:
            values = shard.read(layout.layer_tensor(layer)).astype(np.float64)
            approx[f"{shard.key} layer {layer}"] = (values.sum(), np.abs(values).sum())
            if run.storage_dtype == "int8":
                approx[f"{shard.key} layer {layer} scale"] = (
                    shard.read(layout.scale_tensor(layer)).astype(np.float64).sum()
                )
    return exact, approx


def assert_pinned(output, tmp_dir, exact: dict, approx: dict) -> None:
    got_exact, got_approx = fingerprint(output, tmp_dir)
    assert got_exact == exact
    assert got_approx.keys() == approx.keys()
    for key, pinned in approx.items():
        np.testing.assert_allclose(got_approx[key], pinned, rtol=1e-4, err_msg=key)


SHARD = "shards/5513e3-p00000-s000000.safetensors"
TEXT_EXACT = {
    "layers": [1, 3],
    "storage_dtype": "bfloat16",
    "hidden_size": 64,
    "num_shards": 1,
    "num_units": 5,
    "num_tokens": 250,
    "total_bytes": 70680,
    SHARD: {
        "units": [[0, 0, 60], [1, 60, 121], [2, 121, 131], [3, 131, 195], [4, 195, 250]],
        "bytes": 70680,
        "columns": {
            "token_ids": "cfd9329f",
            "sample_index": "9657d7cf",
            "position": "553c3b0a",
            "segment": "15f4d65d",
            "cell": "4d1a8959",
        },
        "samples": "7a797638",
    },
}
TEXT_APPROX = {
    f"{SHARD} layer 1": (-1347.950385093689, 19656.644946098328),
    f"{SHARD} layer 3": (-2134.322208404541, 25269.175617218018),
}


def test_text_run_bfloat16_is_pinned(checkpoint, tmp_path):
    dataset = write_jsonl(tmp_path / "texts.jsonl", TEXTS)
    flags = ("--layers", "1,3", "--batch-size", "2", "--storage-dtype", "bfloat16")
    assert extract(checkpoint, dataset, tmp_path / "out", *flags) == 0
    assert_pinned(tmp_path / "out", tmp_path, TEXT_EXACT, TEXT_APPROX)


ARC_EXACT = {
    "layers": [2, 3],
    "storage_dtype": "int8",
    "hidden_size": 64,
    "num_shards": 1,
    "num_units": 3,
    "num_tokens": 2685,
    "total_bytes": 430416,
    SHARD: {
        "units": [[0, 0, 908], [1, 908, 1867], [2, 1867, 2685]],
        "bytes": 430416,
        "columns": {
            "token_ids": "6d69e987",
            "sample_index": "e0784cc4",
            "position": "aede5ec1",
            "segment": "a2a9facb",
            "cell": "7a72d01a",
        },
        "samples": "23216778",
    },
}
ARC_APPROX = {
    f"{SHARD} layer 2": (274836.0, 7150956.0),
    f"{SHARD} layer 2 scale": 82.177509855479,
    f"{SHARD} layer 3": (211198.0, 6956474.0),
    f"{SHARD} layer 3 scale": 89.91778793931007,
}


def test_arc_run_int8_is_pinned(checkpoint, tmp_path):
    write_arc_tasks(tmp_path / "arc.json", 3)
    argv = ["extract", "--model", str(checkpoint), "--dataset", str(tmp_path / "arc.json"), "--format", "arc-json"]
    argv += ["--output", str(tmp_path / "out"), "--dtype", "float32", "--storage-dtype", "int8", "--layers", "2-3"]
    argv += ["--max-tokens", "1024", "--over-limit", "shorten", "--batch-size", "2", "--no-progress"]
    assert main(argv) == 0
    assert_pinned(tmp_path / "out", tmp_path, ARC_EXACT, ARC_APPROX)
