"""The host path of extraction at the H200 run's shapes, on any machine: everything after the
forward, next to the raw write speed of the same bytes to the same sink, measured in the same run.

The real runner's loop (`runner._run_steps`: batches, the on-device gather of the stored
entries, the copy to the host, the unit's records and statistics, the shard writer) runs
with a synthetic forward: each step's output is one device-resident array of the H200 run's
step shape (L=14 layers, up to 16 rows x 2048 tokens, D=896, bfloat16; pooled modes:
[14, rows, K, 896]), so the forward costs nothing. The gather of the stored entries is
device work too: the headline row gathers each (shape, capacity) once and hands that compact
buffer out again (`GatheredOnce`), so the host path is all that is measured; a second run
gathers every step on this machine's CPU, which is then both device and host. Samples are
ARC-like (600-2048 tokens, each with 8 special tokens excluded), packed by the real planner.

    .venv/bin/python benchmarks/bench_host_path.py                    # local disk, all + last
    .venv/bin/python benchmarks/bench_host_path.py --sinks local gcs --positions all last mean
    .venv/bin/python benchmarks/bench_host_path.py --memory-kind pinned_host   # the accelerator's copy, on a CPU

Reported per sink and positions mode: useful tokens/s and stored GB/s end to end (from the
first dispatch until every shard is durable; compilation is done in a warm-up pass), the raw
sink's GB/s for the same shards (local: write, fsync, rename and directory fsync per file; GCS:
google-cloud-storage's own upload) with the writer's parallelism, measured just before and
just after the host path (a disk's speed drifts; the mean is the reference), and the runner's
per-step stages. Timing is printed, never asserted.
"""

from __future__ import annotations

import argparse
import functools
import io
import os
import platform
import shutil
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from bench_store import with_emulator

LAYERS = tuple(range(10, 24))
HIDDEN = 896
ROWS, ROW_LENGTH = 16, 2048
PARALLEL_SHARDS = 4  # the writer's default


@dataclass
class SyntheticRun:
    """What the runner's loop reads of a `Prepared`, without a model."""

    plan: object
    samples: dict
    keep: dict
    positions: str  # extraction.positions
    layers: tuple[int, ...]
    capacities: tuple[int, ...]
    data_devices: int


def make_run(samples_count: int, mode: str, seed: int = 0) -> SyntheticRun:
    from layertap.data.sample import Sample
    from layertap.extract import compact
    from layertap.extract.plan import make_plan

    rng = np.random.default_rng(seed)
    samples, keep = {}, {}
    for index in range(samples_count):
        length = int(rng.integers(600, ROW_LENGTH + 1))
        ids = rng.integers(0, 151_000, length).astype(np.int32)
        segments = np.minimum(np.arange(length) // 200, 9).astype(np.int16)
        samples[index] = Sample(index=index, token_ids=ids, segments=segments, meta={"task_id": f"t{index}"})
        mask = np.ones(length, bool)
        mask[[0, 1, 2, length // 2, length // 2 + 1, length - 3, length - 2, length - 1]] = False
        keep[index] = mask
    plan = make_plan({i: len(s.token_ids) for i, s in samples.items()}, ROWS)
    stored = {i: int(keep[i].sum()) if mode == "all" else 1 for i in samples}
    capacities = compact.step_capacities([s.rows for s in plan.steps], plan.step_shapes, stored, 1)
    return SyntheticRun(plan, samples, keep, mode, LAYERS, tuple(capacities), 1)


def synthetic_step(run: SyntheticRun):
    """A forward that costs nothing: every step's output is the same device-resident array of
    the step's shape (made once per shape), with no statistics."""
    import jax
    import jax.numpy as jnp

    outputs = {}

    def step(params, arrays):
        rows, length = arrays["token_ids"].shape
        width = length if run.positions == "all" else arrays["weights"].shape[1]
        if (rows, width) not in outputs:
            key = jax.random.key(rows * 100_003 + width)
            shape = (len(LAYERS), rows, width, HIDDEN)
            outputs[rows, width] = jax.random.normal(key, shape, jnp.float32).astype(jnp.bfloat16).block_until_ready()
        return {"acts": {"resid_post": outputs[rows, width]}, "stats": {}}

    return step


class GatheredOnce:
    """A stand-in for the on-device gather whose device work costs nothing, as the synthetic
    forward's: each (shape, capacity) is gathered once, for real, and its compact buffer is
    handed out again for later steps (the writer only reads it). On an accelerator the
    gather runs on the device; on a CPU it would take the host's own cores."""

    def __init__(self, mesh) -> None:
        from layertap.extract import compact

        self.real, self.made = compact.Gather(mesh), {}

    def __call__(self, acts, take):
        key = (tuple((site, x.shape) for site, x in acts.items()), take.shape)
        if key not in self.made:
            self.made[key] = self.real(acts, take)
        return self.made[key]

    def recycle(self, buffers) -> None:
        pass


def run_host_path(run: SyntheticRun, uri: str, memory_kind: str | None, device_gather: bool = True) -> dict:
    import jax
    from jax.sharding import AxisType

    from layertap.extract import compact, runner
    from layertap.run.mesh import local_rows
    from layertap.run.progress import Progress
    from layertap.store.writer import open_writer

    mesh = jax.make_mesh((1, 1), ("data", "model"), axis_types=(AxisType.Auto, AxisType.Auto))
    meta = {"layers": list(LAYERS), "storage_dtype": "bfloat16", "hidden_size": HIDDEN}
    writer = open_writer(uri, meta, shard_bytes=256 * 2**20)
    plan = run.plan
    progress = Progress(samples_total=len(run.samples), tokens_total=plan.useful_tokens, show_bar=False)
    sink = runner.UnitSink(run, writer, progress, lambda rows: local_rows(mesh, rows), 0, 1)
    step = synthetic_step(run)
    kind = compact.host_memory_kind(jax.devices()[0]) if memory_kind == "auto" else memory_kind
    for shape in plan.shapes:  # the synthetic outputs exist before the clock starts
        step(
            None,
            {"token_ids": np.zeros(shape), "weights": np.zeros((shape[0], max(s.max_per_row for s in plan.steps), 1))},
        )
    todo = list(range(plan.num_steps))
    started = time.perf_counter()
    with writer:
        gather = None if device_gather else GatheredOnce(mesh)
        compile_seconds, _ = runner._run_steps(
            run, mesh, None, step, todo, [False] * len(todo), sink, None, memory_kind=kind, gather=gather
        )
        flush_started = time.perf_counter()
    finished = time.perf_counter()
    written = writer.progress()
    return {
        "seconds": finished - started - compile_seconds,
        "flush": finished - flush_started,
        "compile": compile_seconds,
        "bytes": written.bytes,
        "shards": written.shards,
        "tokens": plan.useful_tokens,
        "stored": written.tokens,
        "times": sink.times,
        "shard_sizes": [info.size for key, info in writer._store.list("shards").items()],
        "unit_rows": [
            sum(int(run.keep[i].sum()) if run.positions == "all" else 1 for row in run.plan.steps[s].rows for i in row)
            for s in todo
        ],
    }


def writer_alone(uri: str, units: list[int], mode: str) -> tuple[float, int]:
    """(seconds, bytes) of the shard writer alone given units of these row counts, each a view
    of one compact buffer as the runner hands them over: the host side without the device."""
    import ml_dtypes

    from layertap.store.records import TokenRecords
    from layertap.store.writer import open_writer

    rng = np.random.default_rng(2)
    buffer = rng.standard_normal((len(LAYERS), 1, max(units), HIDDEN), dtype=np.float32).astype(ml_dtypes.bfloat16)
    meta = {"layers": list(LAYERS), "storage_dtype": "bfloat16", "hidden_size": HIDDEN, "mode": mode}
    t0 = time.perf_counter()
    with open_writer(uri, meta, shard_bytes=256 * 2**20) as writer:
        for unit, n in enumerate(units):
            columns = {
                name: np.zeros(n, dtype) for name, dtype in (("token_ids", np.int32), ("sample_index", np.int64))
            }
            columns |= {"position": np.zeros(n, np.int32), "segment": np.zeros(n, np.int16)}
            writer.add(unit, TokenRecords.of({"resid_post": buffer[:, 0, :n]}, **columns))
    return time.perf_counter() - t0, writer.progress().bytes


def raw_local(root: Path, sizes: list[int]) -> float:
    """Seconds to write files of these sizes durably, in parallel: the least a published file
    takes (write, fsync, rename, fsync of the directory), with no checksum and nothing else."""
    root.mkdir(parents=True, exist_ok=True)
    block = np.random.default_rng(1).integers(0, 255, max(sizes), dtype=np.uint8)

    def one(i: int) -> None:
        path = root / f"raw-{i}"
        with open(f"{path}.tmp", "wb") as f:
            f.write(memoryview(block)[: sizes[i]])
            f.flush()
            os.fsync(f.fileno())
        os.replace(f"{path}.tmp", path)
        fd = os.open(root, os.O_RDONLY)
        os.fsync(fd)
        os.close(fd)

    t0 = time.perf_counter()
    with ThreadPoolExecutor(PARALLEL_SHARDS) as pool:
        list(pool.map(one, range(len(sizes))))
    seconds = time.perf_counter() - t0
    shutil.rmtree(root)
    return seconds


def raw_gcs(bucket: str, sizes: list[int]) -> float:
    """Seconds to upload objects of these sizes with google-cloud-storage alone, in parallel."""
    from google.cloud import storage

    client = storage.Client()
    block = np.random.default_rng(1).integers(0, 255, max(sizes), dtype=np.uint8).tobytes()

    def one(i: int) -> None:
        client.bucket(bucket).blob(f"raw/raw-{i}").upload_from_file(io.BytesIO(block[: sizes[i]]), size=sizes[i])

    t0 = time.perf_counter()
    with ThreadPoolExecutor(PARALLEL_SHARDS) as pool:
        list(pool.map(one, range(len(sizes))))
    return time.perf_counter() - t0


def measure(sink: str, mode: str, args, scratch: Path) -> dict:
    run = make_run(args.samples, mode)
    fed = sum(rows * length for rows, length in run.plan.step_shapes)
    print(
        f"# {sink}, positions {mode}: {run.plan.num_steps} steps of {run.plan.describe_shapes()}, "
        f"{run.plan.useful_tokens} tokens ({1 - run.plan.useful_tokens / fed:.1%} padding), "
        f"{len(set(run.capacities))} capacities",
        flush=True,
    )
    base = scratch / f"{mode}"

    def uri(name: str) -> str:
        return str(base / name) if sink == "local" else f"gs://bench/{mode}-{name}"

    warm = run_host_path(run, uri("warm"), args.memory_kind)  # compiles every gather
    # the raw sink just before and just after the host path, the same shards: a disk's speed drifts
    raw = (
        (lambda: raw_local(base / "raw", warm["shard_sizes"]))
        if sink == "local"
        else (lambda: raw_gcs("bench", warm["shard_sizes"]))
    )
    if sink == "local":
        shutil.rmtree(base / "warm", ignore_errors=True)
    before = raw()
    result = run_host_path(run, uri("timed"), args.memory_kind)
    free = run_host_path(run, uri("free"), args.memory_kind, device_gather=False)
    alone = writer_alone(uri("alone"), result["unit_rows"], mode)
    after = raw()
    if sink == "local":
        shutil.rmtree(base, ignore_errors=True)
    result["raw"] = (before + after) / 2
    result["writer_alone_GBps"] = alone[1] / alone[0] / 1e9
    result["gather_free_GBps"] = free["bytes"] / free["seconds"] / 1e9
    result["gather_free_tokens_per_s"] = free["tokens"] / free["seconds"]
    result["raw_range"] = sorted(sum(warm["shard_sizes"]) / s / 1e9 for s in (before, after))
    result.update(sink=sink, mode=mode, steps=run.plan.num_steps)
    return result


def measure_at(sink: str, mode: str, args, scratch: Path, _emulator_uri: str) -> dict:
    """`measure` as `with_emulator` calls it (with a gs:// root that measure does not need: it names its own)."""
    return measure(sink, mode, args, scratch)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=200, help="ARC-like samples (200: ~12 steps of 16 x 2048)")
    parser.add_argument("--positions", nargs="+", default=["all", "last"], choices=["all", "last", "mean"])
    parser.add_argument("--sinks", nargs="+", default=["local"], choices=["local", "gcs"])
    parser.add_argument(
        "--memory-kind",
        default="auto",
        help="where the compact output goes: auto (pinned_host on an accelerator), pinned_host",
    )
    parser.add_argument("--dir", type=Path, help="scratch directory for the local sink (default: a temp dir)")
    args = parser.parse_args()
    args.memory_kind = None if args.memory_kind in ("none", "") else args.memory_kind
    import jax

    scratch = Path(tempfile.mkdtemp(prefix="layertap-host-path-", dir=args.dir))
    results = []
    try:
        for sink in args.sinks:
            for mode in args.positions:
                if sink == "gcs":
                    results.append(with_emulator(functools.partial(measure_at, sink, mode, args, scratch)))
                else:
                    results.append(measure(sink, mode, args, scratch))
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    device = jax.devices()[0]
    print(
        f"\n## Host path on {platform.processor() or platform.machine()} ({os.cpu_count()} cores), JAX "
        f"{device.platform}"
    )
    print(
        "\n| sink | positions | steps | tokens/s | stored GB/s | raw sink GB/s (before, after) | host path / raw sink "
        "| with the CPU's gather: tokens/s, / raw sink | writer alone / raw sink | flush s |"
    )
    print("| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    for r in results:
        rate = r["bytes"] / r["seconds"] / 1e9
        raw = sum(r["shard_sizes"]) / r["raw"] / 1e9
        free = r["gather_free_GBps"]
        print(
            f"| {r['sink']} | {r['mode']} | {r['steps']} | {r['gather_free_tokens_per_s']:,.0f} | {free:.2f} | "
            f"{raw:.2f} ({r['raw_range'][0]:.2f}-{r['raw_range'][1]:.2f}) | {free / raw:.2f} "
            f"| {r['tokens'] / r['seconds']:,.0f}, {rate / raw:.2f} | {r['writer_alone_GBps'] / raw:.2f} | "
            f"{r['flush']:.2f} |"
        )
    print("\nPer step (the runner's stages; GB/s: the step's stored bytes over the stage's time):\n")
    print("| sink | positions | " + " | ".join(runner_phases()) + " |")
    print("| --- | --- |" + " ---: |" * len(runner_phases()))
    for r in results:
        per_step_bytes = r["bytes"] / r["steps"]
        cells = []
        for _phase, ms in r["times"].per_step_ms().items():
            cells.append(f"{ms:.1f} ms" + (f" ({per_step_bytes / ms / 1e6:.1f} GB/s)" if ms > 0.05 else ""))
        print(f"| {r['sink']} | {r['mode']} | " + " | ".join(cells) + " |")


def runner_phases() -> tuple[str, ...]:
    from layertap.extract.runner import StepTimes

    return StepTimes.PHASES


if __name__ == "__main__":
    main()
