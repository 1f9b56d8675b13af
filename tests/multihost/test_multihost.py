"""2 processes x 2 devices, 1 x 4 and 1 x 1 write the same activations and index; kill -9 and restart
finishes with exactly the output of an uninterrupted run."""

from __future__ import annotations

import json
import os
import signal
import time

import numpy as np
import pytest

import layertap

from .conftest import launch, logs_text, read_layer_sorted, wait_all

# The fast tier (tests/run.sh) keeps the cheapest real multi-process runs; the rest are slow.
pytestmark = [pytest.mark.multiprocess]

FLAGS = ("--batch-size", "4", "--shard-size-mb", "1")


def run_to_completion(processes, devices, checkpoint, dataset, tmp_path, name):
    out, logs = tmp_path / name, tmp_path / f"{name}-logs"
    codes = wait_all(launch(processes, devices, checkpoint, dataset, out, logs, *FLAGS), logs)
    assert codes == [0] * processes, logs_text(logs)
    return out


@pytest.fixture(scope="module")
def reference(checkpoint, dataset, tmp_path_factory):
    """The 1 process x 1 device run."""
    return run_to_completion(1, 1, checkpoint, dataset, tmp_path_factory.mktemp("ref"), "1x1")


def assert_same_run(a, b):
    for layer in (1, 3):
        got, want = read_layer_sorted(a, layer), read_layer_sorted(b, layer)
        # bit for bit: each row is computed alone whatever the sharding (pure data parallel)
        for column in ("activations", "sample_index", "position", "token_ids", "segment"):
            np.testing.assert_array_equal(got[column], want[column], err_msg=column)
        assert_same_stats(layertap.open(str(a)).stats().layer(layer), layertap.open(str(b)).stats().layer(layer))


def assert_same_stats(got, want):
    """Statistics merged over other hosts, shards and restarts: counted once, equal up to
    float64 rounding of the merge order."""
    assert got.count == want.count
    np.testing.assert_array_equal(got.norm_counts, want.norm_counts)
    np.testing.assert_array_equal(got.extreme_fraction, want.extreme_fraction)
    np.testing.assert_array_equal(got.absmax, want.absmax)
    assert got.massive_tokens == want.massive_tokens and got.norm_by_segment.keys() == want.norm_by_segment.keys()
    np.testing.assert_allclose(got.mean, want.mean, rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(got.var, want.var, rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("processes, devices", [pytest.param(2, 2, marks=pytest.mark.slow), (1, 4)])
def test_process_and_device_counts_do_not_change_the_output(
    checkpoint, dataset, tmp_path, reference, processes, devices
):
    out = run_to_completion(processes, devices, checkpoint, dataset, tmp_path, f"{processes}x{devices}")
    run = layertap.open(str(out))
    assert sorted({s["process_index"] for s in run.manifest["shards"]}) == list(range(processes))
    assert_same_run(out, reference)


def committed_units(output) -> int:
    return sum(len(json.loads(p.read_text())["units"]) for p in (output / "commits").rglob("*.json"))


@pytest.mark.slow
def test_kill_9_then_restart_of_all_processes_gives_the_uninterrupted_output(checkpoint, dataset, tmp_path, reference):
    out, logs = tmp_path / "killed", tmp_path / "logs"
    procs = launch(2, 2, checkpoint, dataset, out, logs / "first", *FLAGS)
    deadline = time.monotonic() + 180
    while not (out / "commits").exists() or not any((out / "commits").rglob("*.json")):
        assert time.monotonic() < deadline and all(p.poll() is None for p in procs), logs_text(logs / "first")
        time.sleep(0.01)
    os.kill(procs[1].pid, signal.SIGKILL)  # a host dies mid-run...
    procs[1].wait()
    procs[0].kill()  # ...and JobSet restarts every pod of the set
    procs[0].wait()
    total_units = 2 * layertap.open(str(out)).meta["plan"]["steps"]
    assert 0 < committed_units(out) < total_units, "the kill came too late to test a resume"
    assert not (out / "manifest.json").exists()

    # A restart with another process count is refused, and writes nothing.
    before = sorted(p.name for p in out.rglob("*"))
    (code,) = wait_all(launch(1, 2, checkpoint, dataset, out, logs / "other-count", *FLAGS), logs / "other-count")
    assert code == 2 and "was started with 2 processes" in logs_text(logs / "other-count")
    assert sorted(p.name for p in out.rglob("*")) == before

    codes = wait_all(launch(2, 2, checkpoint, dataset, out, logs / "restart", *FLAGS), logs / "restart")
    assert codes == [0, 0], logs_text(logs / "restart")
    assert "already done" in logs_text(logs / "restart")
    assert committed_units(out) == total_units  # every unit exactly once
    assert_same_run(out, reference)
    layertap.open(str(out)).verify()


@pytest.mark.slow
def test_a_model_axis_splits_the_heads_and_gives_the_same_activations(checkpoint, dataset, tmp_path, reference):
    out, logs = tmp_path / "tp", tmp_path / "logs"
    codes = wait_all(launch(1, 4, checkpoint, dataset, out, logs, *FLAGS, "--model-parallel", "2"), logs)
    assert codes == [0], logs_text(logs)
    for layer in (1, 3):
        got, want = read_layer_sorted(out, layer), read_layer_sorted(reference, layer)
        np.testing.assert_array_equal(got["sample_index"], want["sample_index"])
        np.testing.assert_array_equal(got["position"], want["position"])
        # split matmuls sum in another order: equal up to float32 rounding
        np.testing.assert_allclose(got["activations"], want["activations"], rtol=0, atol=1e-4)


def test_a_model_axis_that_does_not_divide_the_kv_heads_is_refused(checkpoint, dataset, tmp_path):
    out, logs = tmp_path / "tp", tmp_path / "logs"
    (code,) = wait_all(launch(1, 4, checkpoint, dataset, out, logs, *FLAGS, "--model-parallel", "4"), logs)
    assert code == 2 and "does not divide the model's 2 KV heads" in logs_text(logs)
    assert not out.exists()
