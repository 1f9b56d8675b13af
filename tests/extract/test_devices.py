"""The devices the resource asked for, or a loud failure (this process has one CPU device)."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from layertap.errors import LayerTapError
from layertap.run.devices import check_devices
from layertap_api.spec import ExpectedDevices

CPU = ExpectedDevices(platform="cpu", per_host=1, accelerator="cpu")
V5E = ExpectedDevices(platform="tpu", per_host=4, accelerator="tpu-v5-lite-podslice")


def test_what_was_asked_for_passes():
    check_devices(CPU, env={})
    check_devices(None, env={})  # a local run asks for nothing


@pytest.mark.parametrize(
    ("expected", "env", "message"),
    [
        (V5E, {}, "each worker host should have 4 TPU device(s), JAX sees 1 CPU"),
        (ExpectedDevices(platform="gpu", per_host=8, accelerator="nvidia-l4"), {}, "8 GPU device(s), JAX sees 1 CPU"),
        (ExpectedDevices(platform="cpu", per_host=2, accelerator="cpu"), {}, "2 CPU device(s), JAX sees 1 CPU"),
        # a test cluster's simulation counts only for the platform it stands in for, and the count still matters
        (
            ExpectedDevices(platform="tpu", per_host=1, accelerator="x"),
            {"LAYERTAP_SIMULATED_ACCELERATOR": "gpu"},
            "sees 1 CPU",
        ),
        (V5E, {"LAYERTAP_SIMULATED_ACCELERATOR": "tpu"}, "4 TPU device(s), JAX sees 1 CPU"),
    ],
)
def test_a_missing_accelerator_is_named(expected, env, message):
    with pytest.raises(
        LayerTapError,
        match=f"resources.accelerator {expected.accelerator}: .*" + message.replace("(", r"\(").replace(")", r"\)"),
    ):
        check_devices(expected, env=env)


def test_a_simulated_accelerator_with_the_right_count_passes():
    check_devices(
        ExpectedDevices(platform="tpu", per_host=1, accelerator="x"), env={"LAYERTAP_SIMULATED_ACCELERATOR": "tpu"}
    )


@pytest.mark.parametrize("platform", ["cuda", "tpu"])
def test_a_backend_jax_cannot_start_is_a_usage_error(platform, tmp_path):
    """JAX_PLATFORMS naming a backend this machine lacks (no CUDA plugin: jax asserts; no
    libtpu: a RuntimeError) ends a local run with what to do, not a traceback, before any
    output is written."""
    env = {**os.environ, "JAX_PLATFORMS": platform}
    argv = ["extract", "--model", "m", "--dataset", "d.jsonl", "--format", "text-jsonl", "--output", tmp_path / "o"]
    done = subprocess.run([sys.executable, "-m", "layertap.cli", *argv], env=env, capture_output=True, text=True)
    assert done.returncode == 2, done.stderr[-2000:]
    assert f"JAX could not start the backend that JAX_PLATFORMS='{platform}' names" in done.stderr
    assert "Traceback" not in done.stderr and not (tmp_path / "o").exists()
