"""Only stored values leave the device: capacities chosen before the run, the gather per
device, the copy into pinned host memory and the views the writer gets."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import pytest

from layertap.extract.compact import choose_capacities, device_blocks, fit, step_capacities


def test_capacities_leave_at_most_the_slack_spare():
    counts = [1000, 990, 975, 960, 940, 900, 700, 512, 3]
    capacities = choose_capacities(counts, slack=0.03)
    assert capacities == sorted(capacities) and all(c % 8 == 0 for c in capacities)
    for count in counts:
        capacity = fit(count, capacities)
        assert count <= capacity <= max(8, -(-int(count * 1.03) // 8) * 8), (count, capacity)
    assert fit(1000, capacities) == 1000 and fit(3, capacities) == 8
    assert len(choose_capacities([1000] * 50 + [995] * 50)) == 1  # a full step's counts: one program


def test_too_many_capacities_widen_the_slack():
    counts = list(range(100, 10_000, 37))  # every count distinct, spread over two decades
    assert len(choose_capacities(counts, slack=0.03, most=1000)) > 8
    capacities = choose_capacities(counts, slack=0.03, most=8)
    assert len(capacities) <= 8
    assert all(fit(c, capacities) >= c for c in counts)


def test_fit_refuses_a_count_above_every_capacity():
    with pytest.raises(ValueError, match="no capacity holds 17"):
        fit(17, [8, 16])


def test_each_step_gets_a_capacity_for_its_fullest_device():
    # two devices hold a step's rows in halves: step 0's second device stores 5 + 6
    steps = [((0,), (1,), (2, 3), ()), ((4,), (), (), ())]
    stored = {0: 2, 1: 3, 2: 5, 3: 6, 4: 40}
    assert [len(b) for b in device_blocks(steps[0], 2)] == [2, 2]
    capacities = step_capacities(steps, [(4, 64)] * 2, stored, data_devices=2)
    assert capacities[0] >= 11 and capacities[1] >= 40
    assert capacities == [fit(11, choose_capacities([11, 40])), fit(40, choose_capacities([11, 40]))]


PROGRAM = textwrap.dedent(
    """
    import jax, numpy as np
    from jax.sharding import Mesh, NamedSharding, PartitionSpec as P
    from layertap.extract.compact import Gather, host_parts, to_host

    mesh = Mesh(np.array(jax.devices()).reshape(2, 2), ("data", "model"))
    rng = np.random.default_rng(0)
    acts = rng.normal(size=(3, 4, 8, 5)).astype(np.float32)  # [L, R, T, D]: 2 rows per data index
    counts = {0: 7, 1: 3}
    take = np.zeros((2, 8), np.int32)
    take[0, :7] = rng.choice(16, 7, replace=False)
    take[1, :3] = rng.choice(16, 3, replace=False)
    on_mesh = jax.device_put({"resid_post": acts}, NamedSharding(mesh, P(None, "data")))
    stored = Gather(mesh)(on_mesh, jax.device_put(take, NamedSharding(mesh, P("data"))))
    pinned = to_host(stored, "pinned_host")
    print("memory", pinned["resid_post"].sharding.memory_kind)
    parts = host_parts(pinned, counts)
    for d, part in enumerate(parts):
        want = acts[:, 2 * d : 2 * d + 2].reshape(3, 16, 5)[:, take[d, : counts[d]]]
        print("part", d, part["resid_post"].shape, bool(np.array_equal(part["resid_post"], want)))
    """
)


def test_each_device_gathers_its_own_rows_into_pinned_host_memory():
    """2 data x 2 model devices: a model group's shards are read once, pinned_host is where the
    copy lands (CPU devices offer it too), and the parts equal a numpy gather of each block."""
    env = {**os.environ, "XLA_FLAGS": "--xla_force_host_platform_device_count=4", "JAX_PLATFORMS": "cpu"}
    result = subprocess.run([sys.executable, "-c", PROGRAM], env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.split("\n")[-4:-1] == ["memory pinned_host", "part 0 (3, 7, 5) True", "part 1 (3, 3, 5) True"]


def test_a_run_moves_only_what_it_stores(checkpoint, tmp_path):
    """ARC prompts with only the test-input grid kept: a small share of each prompt is stored,
    and the compact outputs carry that share plus the capacities' few % spare, not the steps'
    padded rows."""
    import argparse

    from layertap.demo import write_arc_tasks
    from layertap.extract.compact import ALIGN
    from layertap.extract.runner import prepare
    from layertap.run.cli import EXTRACT, add_arguments, job_from_args

    write_arc_tasks(tmp_path / "arc.json", 4)
    parser = argparse.ArgumentParser()
    add_arguments(parser, EXTRACT)
    argv = ["--model", str(checkpoint), "--dataset", str(tmp_path / "arc.json"), "--format", "arc-json"]
    argv += ["--output", str(tmp_path / "out"), "--layers", "1,3", "--max-tokens", "1024", "--over-limit", "shorten"]
    prepared = prepare(job_from_args(parser.parse_args([*argv, "--segments", "test-input"]), EXTRACT))
    per_entry = 2 * 64 * 2  # 2 layers x hidden 64 in bfloat16
    stored = prepared.rows_stored * per_entry
    padded = prepared.plan.fed_tokens * per_entry
    steps = prepared.plan.num_steps
    assert stored <= prepared.moved_bytes() <= stored * 1.06 + steps * ALIGN * per_entry
    assert prepared.moved_bytes() < padded / 4  # the test-input grid is a small share of a prompt
