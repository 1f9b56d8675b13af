"""The pre-flight estimate: its FLOP count against XLA's own count of the compiled forward,
and what `layertap extract` prints before the first step."""

from __future__ import annotations

import re

import jax
import jax.numpy as jnp
import pytest

from layertap.estimate import Devices, attention_pairs, estimate, forward_flops
from layertap.model import LayerTap, load_checkpoint, make_extract_fn

from .conftest import extract, flags, prepared_by_flags


@pytest.mark.parametrize("length", [100, 300])
def test_forward_flops_match_xla_cost_analysis(checkpoint, length):
    config, params = load_checkpoint(checkpoint)
    tap = LayerTap.for_model([1, 3], config.num_hidden_layers)
    shape = (1, length)
    args = (jnp.zeros(shape, jnp.int32), jnp.zeros(shape, jnp.int32), jnp.ones(shape, jnp.int32))
    compiled = jax.jit(make_extract_fn(config, tap)).lower(params, *args).compile()
    counted = compiled.cost_analysis()["flops"]  # dots and elementwise work alike
    modelled = forward_flops(config, tap.blocks_to_run, [(1, length)])
    assert modelled == pytest.approx(counted, rel=0.15)  # elementwise ops are the difference


def test_attention_pairs_follow_the_query_blocks():
    assert attention_pairs(128) == 128 * 128
    assert attention_pairs(300) == 128 * 128 + 128 * 256 + 44 * 300
    assert attention_pairs(2048) < 2048 * 2048 * 0.6  # causal: about half of the full square


def test_the_estimate_counts_the_plan_and_the_chosen_chips(checkpoint, dataset, tmp_path):
    prepared = prepared_by_flags(*flags(checkpoint, dataset, tmp_path / "out"), "--layers", "1,3")
    tpu = estimate(prepared, Devices(16, "tpu", 4, "tpu-v5-lite-podslice"))
    cpu = estimate(prepared, Devices(1, "cpu", cores=2))
    assert tpu.tokens == prepared.plan.useful_tokens and tpu.rows == prepared.rows_stored
    assert tpu.bytes == prepared.disk_bytes() and tpu.flops == cpu.flops > 0
    compute = tpu.flops / (16 * 0.4 * 197e12)
    assert tpu.write_seconds == pytest.approx(prepared.disk_bytes() / (4 * 0.9e9))  # a local output, 4 hosts
    # the compact outputs: every stored entry (2 layers x 64 in bfloat16) and the spare room, over 16 chips' links
    stored = prepared.rows_stored * 2 * 64 * 2
    assert stored <= prepared.moved_bytes() <= stored * 1.1
    assert tpu.transfer_seconds == pytest.approx(prepared.moved_bytes() / (16 * 10e9))
    stages = {"compute": compute, "transfer": tpu.transfer_seconds, "writing": tpu.write_seconds}
    assert tpu.seconds == pytest.approx(max(stages.values())) and tpu.bound == max(stages, key=stages.get)
    assert tpu.compute_seconds == pytest.approx(compute)
    assert cpu.transfer_seconds == 0  # a CPU's output is in host memory already
    assert tpu.chip_hours == pytest.approx(tpu.seconds * 16 / 3600, rel=1e-3)
    assert "2 cores" in cpu.basis and "tpu-v5-lite-podslice: 40% of 197 TFLOP/s" in tpu.basis
    assert estimate(prepared, Devices(1, "gpu", device_kind="Some Future GPU")).seconds is None
    h100 = estimate(prepared, Devices(1, "gpu", device_kind="NVIDIA H100 80GB HBM3"))
    assert h100.basis.startswith("nvidia-h100-80gb: 37.8% of 989 TFLOP/s") and "measured" in h100.basis
    assert h100.compute_seconds == pytest.approx(h100.flops / (0.378 * 989e12))  # the MFU measured on an H200


def test_extract_prints_the_estimate_before_the_first_step(checkpoint, dataset, tmp_path, capsys):
    assert extract(checkpoint, dataset, tmp_path / "out", "--layers", "3") == 0
    out = capsys.readouterr().out
    assert out.index("  estimate  ") < out.index(" run (")
    assert re.search(r"GFLOP: (about \d|under 1s), bound by (compute|writing) \(compute .*, writing .*\)", out)
    assert "GFLOP/s per core measured in float32" in out


def test_the_bound_is_the_longest_stage(checkpoint, dataset, tmp_path):
    """Storing every token of a small model on fast chips is bound by the host's writes;
    storing one row per sample on a slow CPU by its compute."""

    def prepared(*more):
        return prepared_by_flags(*flags(checkpoint, dataset, tmp_path), *more)

    everything = estimate(prepared("--positions", "all"), Devices(8, "gpu", 1, "nvidia-h200-141gb"))
    assert everything.bound == "writing" and everything.seconds == everything.write_seconds
    assert "device to host at 25 GB/s per device" in everything.basis
    last = estimate(prepared("--positions", "last"), Devices(1, "cpu", cores=1))
    assert last.bound == "compute" and last.seconds == last.compute_seconds > last.write_seconds
