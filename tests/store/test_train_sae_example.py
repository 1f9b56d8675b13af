"""examples/train_sae.py (docs/train-sae.md): a TopK SAE trained from run.loader on a real
run; its loss falls, its file is what `layertap report --quantity direction:` reads, and a
rerun resumes the data where the first stopped."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from safetensors import safe_open

from layertap.report.quantity import load_direction
from layertap.store import finalize_run, open_writer

from .test_split_units import add
from .units import HIDDEN, make_units, meta_for

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "train_sae.py"
pytestmark = pytest.mark.timeout(300)


@pytest.fixture(scope="module")
def train_sae():
    pytest.importorskip("optax")
    spec = importlib.util.spec_from_file_location("train_sae", EXAMPLE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.main


@pytest.fixture(scope="module")
def run_uri(tmp_path_factory):
    uri = str(tmp_path_factory.mktemp("sae") / "run")
    with open_writer(uri, meta_for(), shard_bytes=4_000) as writer:
        for unit in make_units(40, seed=5):
            add(writer, unit)  # with the statistics the example scales by
    finalize_run(uri)
    return uri


def test_the_loss_falls_and_the_report_reads_the_features(train_sae, run_uri, tmp_path):
    out = tmp_path / "sae"
    options = ["--features", "48", "--k", "4", "--batch-size", "64", "--lr", "3e-3", "--out", str(out)]
    result = train_sae([run_uri, *options, "--steps", "120", "--save-every", "40"])
    losses = result["losses"]
    assert len(losses) == 120 and result["layer"] == 7
    assert np.mean(losses[-10:]) < 0.85 * np.mean(losses[:5])  # the rows are Gaussian noise: no big fall
    vector, name = load_direction(out / "sae.safetensors", HIDDEN, feature=result["top_features"][0], tensor="W_dec")
    assert vector.shape == (HIDDEN,) and name.endswith(f"feature {result['top_features'][0]}")
    saved = checkpoint(out)[1]
    assert saved["step"] == 120 and saved["loader"]["format"] == "layertap-loader/1"
    assert sorted(path.name for path in out.iterdir()) == ["checkpoint.safetensors", "sae.safetensors"]


def checkpoint(out: Path) -> tuple[dict[str, np.ndarray], dict]:
    with safe_open(str(out / "checkpoint.safetensors"), framework="np") as file:
        names = file.keys()  # safe_open is not iterable
        return {name: file.get_tensor(name) for name in names}, json.loads(file.metadata()["state"])


def test_a_resumed_run_trains_on_as_if_it_had_never_stopped(train_sae, run_uri, tmp_path):
    """Stopped at step 60 and rerun to 100, it gives the losses and the very parameters and
    Adam state of 100 steps in one go: the loader resumes on the next batch, and the optimizer
    where it was (its moments restarted, the losses after a resume were not the same)."""
    options = ["--features", "48", "--k", "4", "--batch-size", "64", "--lr", "3e-3", "--save-every", "30"]
    straight = train_sae([run_uri, *options, "--steps", "100", "--out", str(tmp_path / "straight")])["losses"]
    first = train_sae([run_uri, *options, "--steps", "60", "--out", str(tmp_path / "resumed")])["losses"]
    then = train_sae([run_uri, *options, "--steps", "100", "--out", str(tmp_path / "resumed")])["losses"]
    assert first + then == straight
    (one, state_one), (two, state_two) = checkpoint(tmp_path / "straight"), checkpoint(tmp_path / "resumed")
    assert state_one == state_two and state_one["step"] == 100
    assert one.keys() == two.keys() and any(name.startswith("['adam']") for name in one)
    for name in one:
        np.testing.assert_array_equal(one[name], two[name], err_msg=name)


@pytest.mark.parametrize(
    "change, message",
    [
        (["--features", "32"], "is [48, 24], not [32, 24]"),
        (["--layer", "5"], "trains layer 7 (resid_post), not 5 (resid_post)"),
    ],
)
def test_a_checkpoint_of_another_sae_is_not_resumed(train_sae, run_uri, tmp_path, capsys, change, message):
    options = ["--features", "48", "--k", "4", "--batch-size", "64", "--out", str(tmp_path / "sae")]
    train_sae([run_uri, *options, "--steps", "2"])
    with pytest.raises(SystemExit) as exited:
        train_sae([run_uri, *options, "--steps", "4", *change])
    assert exited.value.code == 2 and message in capsys.readouterr().err


def test_over_four_devices_it_trains_as_on_one(train_sae, run_uri, tmp_path):
    """Data parallel: each batch laid over 4 CPU devices (the loader's sharding), the SAE
    replicated; the same batches give the same losses as on one device."""
    options = ["--features", "48", "--k", "4", "--batch-size", "64", "--lr", "3e-3", "--steps", "30"]
    one = train_sae([run_uri, *options, "--out", str(tmp_path / "one")])["losses"]
    script = (
        "import importlib.util, json, sys; import jax; assert jax.device_count() == 4\n"
        f"spec = importlib.util.spec_from_file_location('train_sae', {str(EXAMPLE)!r})\n"
        "module = importlib.util.module_from_spec(spec); spec.loader.exec_module(module)\n"
        "print(json.dumps(module.main(sys.argv[1:])['losses']))"
    )
    env = {**os.environ, "JAX_PLATFORMS": "cpu", "XLA_FLAGS": "--xla_force_host_platform_device_count=4"}
    done = subprocess.run(
        [sys.executable, "-c", script, run_uri, *options, "--out", str(tmp_path / "four")],
        env=env,
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    four = json.loads(done.stdout.strip().splitlines()[-1])
    np.testing.assert_allclose(four, one, rtol=1e-4)  # float32 sums in another order


@pytest.mark.parametrize(
    "options, message",
    [
        (["--features", "4", "--k", "8"], "--k 8 is more than --features 4"),  # was a traceback from top_k
        (["--batch-size", "0"], "argument --batch-size: 0 is not a positive integer"),
        (["--layer", "9"], "no statistics of layer 9"),  # a LayerTapError: a usage error, not a traceback
        (["--batch-size", "1000000"], "fewer than a batch of 1000000"),  # had hung: every batch dropped, forever
    ],
)
def test_bad_arguments_are_usage_errors(train_sae, run_uri, tmp_path, capsys, options, message):
    with pytest.raises(SystemExit) as exited:
        train_sae([run_uri, *options, "--out", str(tmp_path / "sae")])
    assert exited.value.code == 2 and message in capsys.readouterr().err


def test_ctrl_c_says_which_step_the_kept_checkpoint_resumes_from(train_sae, run_uri, tmp_path):
    import signal
    import time

    out = tmp_path / "interrupted"
    options = ["--features", "48", "--k", "4", "--batch-size", "64", "--steps", "1000000", "--save-every", "1"]
    training = subprocess.Popen(
        [sys.executable, str(EXAMPLE), run_uri, *options, "--out", str(out)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        assert training.stdout.readline().startswith("step 1: ")
        while not (out / "checkpoint.safetensors").exists() and training.poll() is None:  # after a checkpoint
            time.sleep(0.05)
        training.send_signal(signal.SIGINT)
        printed = training.communicate(timeout=120)[0]
    finally:
        training.kill()
    assert training.returncode == 130, printed
    assert "Traceback" not in printed and "the same command resumes from there" in printed, printed
    kept = int(printed.rsplit("is at step ", 1)[1].split(":")[0])
    resumed = train_sae([run_uri, *options[:-4], "--steps", str(kept + 1), "--save-every", "1", "--out", str(out)])
    assert len(resumed["losses"]) == 1  # only the step after the kept one was left
