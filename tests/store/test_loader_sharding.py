"""run.loader(format="jax", sharding=...): batches laid out over a mesh of real CPU devices,
in one process and over two processes joined by jax.distributed (gloo), each of which loads
its own part of every global batch."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import textwrap

import pytest
from gcs_emulator import free_port

import layertap

from .test_loader import LAYER, write
from .units import make_units

pytest.importorskip("jax")

SEED = 3

# Run in a process of its own (the CPU devices are set before JAX starts): load with a
# sharding over every device, check each batch against the same loader without it, and
# write what was served (token ids per step, this process's and the global sum per step);
# resumed from a state saved at a step, it must serve the same batches from there.
WORKER = textwrap.dedent(
    """
    import json, sys
    import jax, numpy as np
    uri, rank, processes, port, batch_size, out, SEED = sys.argv[1:8]
    rank, processes, batch_size, SEED = int(rank), int(processes), int(batch_size), int(SEED)
    if processes > 1:
        jax.distributed.initialize(f"127.0.0.1:{port}", num_processes=processes, process_id=rank)
    from jax.sharding import Mesh, NamedSharding, PartitionSpec as P
    import layertap
    from layertap.errors import LayerTapError

    def local_rows(array):  # this process's rows of a global batch, in order
        shards = sorted(array.addressable_shards, key=lambda s: s.index[0].start or 0)
        return np.concatenate([np.asarray(s.data) for s in shards])

    sharding = NamedSharding(Mesh(np.array(jax.devices()), ("data",)), P("data"))
    run = layertap.open(uri)
    options = dict(batch_size=batch_size, seed=SEED, epochs=2, buffer_bytes=4_000, columns=True,
                   process_index=jax.process_index(), process_count=jax.process_count())
    plain = {e: [] for e in range(2)}
    whole = run.loader(5, drop_last=True, **options)
    for batch in whole:
        plain[whole.state()["epoch"] - (whole.state()["window"] == 0 and whole.state()["offset"] == 0)].append(batch)
    loader = run.loader(5, format="jax", sharding=sharding, **options)
    total = jax.jit(lambda x: x.astype(jax.numpy.float32).sum())
    steps, states = [], []
    for batch in loader:
        values = batch.activations
        assert isinstance(values, jax.Array) and values.sharding == sharding, values.sharding
        assert values.shape == (batch_size * processes, values.shape[1]), values.shape
        local = local_rows(values)
        state = loader.state()
        epoch = state["epoch"] - (state["window"] == 0 and state["offset"] == 0)
        expected = plain[epoch][sum(1 for s in steps if s["epoch"] == epoch)]
        np.testing.assert_array_equal(local, expected.activations)  # the same rows as without a sharding
        np.testing.assert_array_equal(batch.token_ids, expected.token_ids)
        steps.append({"epoch": epoch, "tokens": batch.token_ids.tolist(),
                      "local_sum": float(local.sum(dtype=np.float64)), "global_sum": float(total(values))})
        states.append(state)
    for stop in (1, len(steps) // 2, len(steps) - 1):  # a saved state resumes to the same next batches
        resumed = run.loader(5, format="jax", sharding=sharding, state=states[stop - 1], **options)
        assert [b.token_ids.tolist() for b in resumed] == [s["tokens"] for s in steps[stop:]], stop
    # widened on the device (as for an accelerator; forced here on CPU's XLA): the same values
    widening = run.loader(5, format="jax", sharding=sharding, **options)
    widening._widen_on_device = True
    first = next(iter(widening)).activations
    assert first.dtype == np.float32 and first.sharding == sharding
    np.testing.assert_array_equal(local_rows(first), plain[0][0].activations)
    refused = []
    for bad in (dict(batch_size=batch_size + 1), dict(format="numpy")):
        try:
            run.loader(5, **{**options, "format": "jax", "sharding": sharding, **bad})
        except LayerTapError as error:
            refused.append(str(error))
    if processes > 1:
        replicated = NamedSharding(sharding.mesh, P())  # every process would hold every row
        # the batch split over the processes, each one's rows on every device it has: taken
        by_host = NamedSharding(Mesh(np.array(jax.devices()).reshape(processes, -1), ("hosts", "local")), P("hosts"))
        first = next(iter(run.loader(5, **{**options, "format": "jax", "sharding": by_host})))
        assert first.activations.shape[0] == batch_size * processes
        np.testing.assert_array_equal(np.asarray(first.activations.addressable_shards[0].data), plain[0][0].activations)
        for bad in (dict(process_count=1, process_index=0), dict(segments=[1]), dict(sharding=replicated)):
            try:
                run.loader(5, **{**options, "format": "jax", "sharding": sharding, **bad})
            except LayerTapError as error:
                refused.append(str(error))
    json.dump({"steps": steps, "refused": refused, "plain": {e: len(b) for e, b in plain.items()}}, open(out, "w"))
    """
)


@pytest.fixture(scope="module")
def run_uri(tmp_path_factory):
    return write(tmp_path_factory.mktemp("sharded") / "run", make_units(60))


def load_sharded(tmp_path, uri: str, processes: int, devices: int, batch_size: int) -> list[dict]:
    env = {
        **os.environ,
        "JAX_PLATFORMS": "cpu",
        "XLA_FLAGS": f"--xla_force_host_platform_device_count={devices}",
    }
    port = free_port()
    outs = [tmp_path / f"p{rank}.json" for rank in range(processes)]
    procs = [
        subprocess.Popen(
            [
                sys.executable,
                "-c",
                WORKER,
                uri,
                str(rank),
                str(processes),
                str(port),
                str(batch_size),
                str(out),
                str(SEED),
            ],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        for rank, out in enumerate(outs)
    ]
    for proc in procs:
        try:
            output, _ = proc.communicate(timeout=180)
        except subprocess.TimeoutExpired:
            for p in procs:
                p.kill()
            raise AssertionError("a loading process hung") from None
        assert proc.returncode == 0, output[-3000:]
    return [json.loads(out.read_text()) for out in outs]


def test_one_process_lays_batches_over_its_devices(tmp_path, run_uri):
    (result,) = load_sharded(tmp_path, run_uri, processes=1, devices=4, batch_size=64)
    tokens = sum(shard.entry["tokens"] for shard in layertap.open(run_uri).shards)
    per_epoch = tokens // 64  # whole batches only: a short one would not split over 4 devices
    assert [s["epoch"] for s in result["steps"]] == [0] * per_epoch + [1] * per_epoch
    assert result["plain"] == {"0": per_epoch, "1": per_epoch}
    for step in result["steps"]:
        assert step["global_sum"] == pytest.approx(step["local_sum"], rel=1e-5)
    refused = result["refused"]
    assert len(refused) == 2
    assert "global batch of 65 rows" in refused[0] and "multiple of" in refused[0]
    assert "use format='jax'" in refused[1]


def test_two_processes_each_load_their_part_of_every_global_batch(tmp_path, run_uri):
    run = layertap.open(run_uri)
    tokens = {  # each process's tokens in each epoch
        epoch: [
            sum(
                run.shards[i].entry["tokens"]
                for i in run.loader(LAYER, seed=SEED, process_index=p, process_count=2).shard_order(epoch)
            )
            for p in range(2)
        ]
        for epoch in range(2)
    }
    # a batch size at which one process has more whole batches than the other in some epoch:
    # those must be left out, or the other process would never join that step
    batch_size = next(b for b in range(32, 80, 2) if any(t[0] // b != t[1] // b for t in tokens.values()))
    results = load_sharded(tmp_path, run_uri, processes=2, devices=2, batch_size=batch_size)
    for epoch, counts in tokens.items():
        steps = [[s for s in r["steps"] if s["epoch"] == epoch] for r in results]
        # both give the same number of batches, the most the process with fewer tokens has
        assert len(steps[0]) == len(steps[1]) == min(counts) // batch_size
        assert [r["plain"][str(epoch)] for r in results] == [t // batch_size for t in counts]
        served = [t for part in steps for s in part for t in s["tokens"]]
        assert len(served) == len(set(served)) == 2 * batch_size * (min(counts) // batch_size)  # none twice
        for mine, theirs in zip(*steps, strict=True):  # the jitted sum ran over both processes' rows
            assert mine["global_sum"] == theirs["global_sum"]
            assert mine["global_sum"] == pytest.approx(mine["local_sum"] + theirs["local_sum"], rel=1e-5)
    refused = results[0]["refused"]
    assert len(refused) == 5
    assert "process_index=jax.process_index()" in refused[2]
    assert "filters make it known only once read" in refused[3]
    held = re.search(r"must split the batch axis .* gives a process (\d+) of the (\d+) rows", refused[4])
    assert held and held[1] == held[2] == str(2 * batch_size)  # replicated: each process would hold all
