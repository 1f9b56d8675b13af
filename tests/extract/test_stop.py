"""SIGTERM (Kubernetes deleting a pod: suspend, restart, preemption) stops the run at a step
boundary: what was computed is committed, the exit is prompt and says so, and the next
attempt recomputes nothing that was committed."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

import layertap

from .conftest import flags, write_jsonl

SENTENCE = "the quick brown fox jumps over a lazy dog while sparse features light up"
WORDS = SENTENCE.split()


def argv(checkpoint, dataset, output):
    return [
        *(sys.executable, "-m", "layertap.cli", "extract"),
        *flags(checkpoint, dataset, output),
        "--dtype",
        "float32",
        "--storage-dtype",
        "float32",
        "--layers",
        "1,3",
        "--batch-size",
        "1",
        "--shard-size-mb",
        "1",
        "--no-progress",
    ]


def sorted_layer(output, layer):
    batch = layertap.open(str(output)).read_layer(layer)
    order = np.lexsort((batch.position, batch.sample_index))
    return batch.activations[order], batch.sample_index[order], batch.position[order]


@pytest.mark.slow
def test_sigterm_stops_at_a_step_boundary_and_the_rerun_skips_what_was_committed(checkpoint, tmp_path):
    rng = np.random.default_rng(0)
    dataset = write_jsonl(tmp_path / "texts.jsonl", [" ".join(rng.choice(WORDS, 60)) for _ in range(600)])
    env = {**os.environ, "JAX_PLATFORMS": "cpu"}
    out = tmp_path / "out"
    process = subprocess.Popen(argv(checkpoint, dataset, out), env=env, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 180
    while not list((out / "commits").rglob("*.json")) if (out / "commits").exists() else True:
        assert process.poll() is None and time.monotonic() < deadline, process.stderr.read()
        time.sleep(0.05)
    process.send_signal(signal.SIGTERM)
    stopped = time.monotonic()
    code = process.wait(timeout=60)
    err = process.stderr.read()
    assert code == 130, err
    assert time.monotonic() - stopped < 20
    assert "stopped by SIGTERM after" in err and "the same command resumes" in err
    assert not (out / "manifest.json").exists()  # not finalized
    committed = sum(len(json.loads(p.read_text())["units"]) for p in (out / "commits").rglob("*.json"))
    assert committed > 0

    again = subprocess.run(argv(checkpoint, dataset, out), env=env, capture_output=True, text=True, timeout=300)
    assert again.returncode == 0, again.stderr
    assert f"({committed} already done)" in again.stdout
    whole = tmp_path / "whole"
    clean = subprocess.run(argv(checkpoint, dataset, whole), env=env, capture_output=True, text=True, timeout=300)
    assert clean.returncode == 0, clean.stderr
    for layer in (1, 3):
        for got, want in zip(sorted_layer(out, layer), sorted_layer(whole, layer)):
            np.testing.assert_array_equal(got, want)
