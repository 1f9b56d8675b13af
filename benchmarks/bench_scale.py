"""How LayerTap's costs grow with the run: each measurement at several sizes, in a fresh
process (so its peak memory is its own), printed with the growth exponent between sizes
(time ~ size^k). Timing is printed, never asserted.

    .venv/bin/python benchmarks/bench_scale.py                # every part, default sizes
    .venv/bin/python benchmarks/bench_scale.py plan --sizes 10000 100000 1000000

Parts:
    plan      `make_plan` over synthetic prompt lengths, 256 rows a step over 4
              data-parallel devices, at Qwen2.5-0.5B's attention weight: what every host
              computes at every start. Two shapes: log-normal around 2,000 tokens (500-8,000),
              and ARC-shaped (3/4 at 1,024-2,040 tokens, 1/4 at 60-900: most prompts longer
              than half the longest, the case the fitted plan is for).
    finalize  `finalize_run` over a run of N committed shards written by 64 processes with
              the real writer on local disk (one unit a shard; 4 tokens of 14 layers at
              D=8, with each shard's statistics those of D=896, as Qwen2.5-0.5B's are):
              merging every shard's statistics is what grows with the shards.
    read      `Run.iter_layer` of one layer from the GCS emulator (N shards of 256 tokens,
              14 layers x 896, bfloat16), against the same ranged GETs issued bare, 8 at a
              time, in the same run: what LayerTap's reader costs over the store's speed.
    operator  the operator (`kopf run`) with N ActivationExtractions in one namespace on a
              real API server with the JobSet controller (benchmarks/scale_operator.py): the
              time until every status is right, then a minute idle: reconcile passes, API
              requests by verb and resource, CPU of the operator and of the API server a
              pass, the operator's peak memory (its own process, not this one's).
    operator-kueue  the same through Kueue: a ClusterQueue that admits half of them, the
              rest Queued.
    resume    One process's resume scan (`open_writer(..., own_commits_only=True)`: its
              folder of commit records listed, each record read, the objects it names
              looked up) of a run of N committed shards written by 64 processes on the GCS
              emulator (one unit a shard: 4 tokens of 14 layers x 8, with statistics):
              its time, and its requests counted by a proxy in a second scan.
"""

from __future__ import annotations

import argparse
import math
import multiprocessing
import resource
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

QWEN_0_5B_ATTENTION = 1.2e-4  # prices.attention_weight of Qwen2.5-0.5B
DEFAULT_SIZES = {
    "plan": [10_000, 100_000, 1_000_000],
    "finalize": [1_000, 3_000, 10_000],
    "read": [30, 100],
    "operator": [1, 100, 300],
    "operator-kueue": [1, 100, 300],
    "resume": [1_000, 10_000, 30_000],
}
PROCESSES = 64  # a v5e-256


def lognormal_lengths(count: int, seed: int = 0) -> dict[int, int]:
    import numpy as np

    rng = np.random.default_rng(seed)
    return dict(enumerate(np.clip(rng.lognormal(7.6, 0.6, count), 500, 8000).astype(int).tolist()))


def arc_shaped_lengths(count: int, seed: int = 0) -> dict[int, int]:
    import numpy as np

    rng = np.random.default_rng(seed)
    long, short = rng.integers(1024, 2041, size=count - count // 4), rng.integers(60, 900, size=count // 4)
    return dict(enumerate([*long.tolist(), *short.tolist()]))


def measure_plan(size: int, _workdir: str) -> dict:
    from layertap.extract.plan import make_plan

    seconds, details = 0.0, []
    for name, lengths in (("log-normal", lognormal_lengths(size)), ("ARC-shaped", arc_shaped_lengths(size))):
        start = time.perf_counter()
        plan = make_plan(lengths, 256, QWEN_0_5B_ATTENTION, row_multiple=4)
        took = time.perf_counter() - start
        seconds += took
        details.append(
            f"{name} {took:.2f} s: {plan.num_steps:,} steps, {plan.describe_shapes()}, "
            f"{plan.padding_fraction:.1%} padding"
        )
    return {"seconds": seconds, "detail": "; ".join(details)}


def write_run(
    uri: str, shards: int, hidden: int = 896, layers: int = 14, tokens: int = 4, stored_hidden: int = 8
) -> None:
    """A run of `shards` committed shards from PROCESSES writers, one unit each: `tokens`
    rows of `stored_hidden` values a layer, with the statistics of `hidden` values."""
    from concurrent.futures import ThreadPoolExecutor

    import numpy as np

    from layertap.store import TokenRecords, open_writer, statistics

    rng = np.random.default_rng(0)
    columns = {
        "token_ids": np.arange(tokens),
        "sample_index": np.zeros(tokens, np.int64),
        "position": np.arange(tokens),
        "segment": np.zeros(tokens, np.int16),
    }
    stats = {
        ("resid_post", 10 + layer): statistics.of_rows(rng.standard_normal((tokens, hidden)), **columns)
        for layer in range(layers)
    }
    records = TokenRecords.of(rng.standard_normal((layers, tokens, stored_hidden)).astype(np.float32), **columns)
    meta = {"layers": list(range(10, 10 + layers)), "storage_dtype": "bfloat16"}
    unit_bytes = layers * tokens * stored_hidden * 2 + sum(c.nbytes for c in records.columns().values())
    open_writer(uri, meta, 0, PROCESSES).close()  # run.json, once

    def write_process(process: int) -> None:  # a shard the size of a unit: one unit a shard
        with open_writer(uri, meta, process, PROCESSES, shard_bytes=unit_bytes, own_commits_only=True) as writer:
            for unit in range(process, shards, PROCESSES):
                writer.add(unit, records, {0: {}}, stats)

    with ThreadPoolExecutor(8) as pool:
        list(pool.map(write_process, range(PROCESSES)))


def measure_finalize(size: int, run: str) -> dict:
    from layertap.store import finalize_run

    start = time.perf_counter()
    manifest = finalize_run(run)
    seconds = time.perf_counter() - start
    stats_bytes = sum(path.stat().st_size for path in Path(run, "stats").rglob("*.safetensors"))
    return {
        "seconds": seconds,
        "detail": f"{manifest['num_shards']:,} shards, {stats_bytes / size / 1e3:.0f} kB of statistics a shard",
    }


@contextmanager
def emulated_bucket(workdir: str) -> Iterator[tuple]:
    """(the GCS emulator, gs://bench/run) with the clients pointed at it, stopped after."""
    import os

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
    from gcs_emulator import Emulator

    server = Emulator(Path(workdir) / "gcs")
    server.start()
    try:
        server.create_bucket("bench")
        os.environ["STORAGE_EMULATOR_HOST"] = server.url
        yield server, "gs://bench/run"
    finally:
        server.stop()


def measure_read(size: int, workdir: str) -> dict:
    import layertap
    from layertap.io.ahead import map_ahead
    from layertap.store import finalize_run
    from layertap.store.reader import READ_AHEAD

    with emulated_bucket(workdir) as (_, uri):
        write_run(uri, size, tokens=256, stored_hidden=896)
        finalize_run(uri)
        run = layertap.open(uri)
        reads: list[tuple] = []
        read = run._store.read
        run._store.read = lambda key, *span: reads.append((key, *span)) or read(key, *span)
        sum(len(batch) for batch in run.iter_layer(16, dtype=None))  # records the requests
        start = time.perf_counter()
        raw_bytes = sum(len(data) for data in map_ahead(lambda r: read(*r), reads, READ_AHEAD))
        raw = time.perf_counter() - start
        run = layertap.open(uri)
        start = time.perf_counter()
        rows = sum(len(batch) for batch in run.iter_layer(16, dtype=None))
        seconds = time.perf_counter() - start
    return {
        "seconds": seconds,
        "detail": f"{rows:,} rows, {len(reads) / size:.0f} GETs a shard, {raw_bytes / 2**20:.0f} MiB; "
        f"the same GETs bare: {raw:.2f} s; reader / bare speed {raw / seconds:.2f}",
    }


def measure_operator(size: int, workdir: str) -> dict:
    from scale_operator import measure_operator

    return measure_operator(size, workdir)


def measure_operator_kueue(size: int, workdir: str) -> dict:
    from scale_operator import measure_operator

    return measure_operator(size, workdir, kueue=True)


def measure_resume(size: int, workdir: str) -> dict:
    import os

    from layertap.store import open_writer

    with emulated_bucket(workdir) as (server, uri):
        from gcs_emulator import FaultyProxy  # tests/ is on the path from here

        start = time.perf_counter()
        write_run(uri, size, hidden=8)
        written = time.perf_counter() - start
        meta = {"layers": list(range(10, 24)), "storage_dtype": "bfloat16"}
        start = time.perf_counter()
        writer = open_writer(uri, meta, 0, PROCESSES, own_commits_only=True)
        seconds = time.perf_counter() - start
        writer.close()
        committed = len(writer.committed_units())
        proxy = FaultyProxy(server.url)
        os.environ["STORAGE_EMULATOR_HOST"] = proxy.url
        try:
            open_writer(uri, meta, 0, PROCESSES, own_commits_only=True).close()
        finally:
            proxy.close()
        requests = len(proxy.seen)
    return {
        "seconds": seconds,
        "detail": f"{committed:,} own shards of {size:,}: {requests:,} requests ({requests / committed:.1f} an own "
        f"shard); the run written in {written:.0f} s",
    }


MEASURES = {
    "plan": measure_plan,
    "finalize": measure_finalize,
    "read": measure_read,
    "resume": measure_resume,
    "operator": measure_operator,
    "operator-kueue": measure_operator_kueue,
}
PREPARE = {"finalize": write_run}  # in a process of its own before the measurement: not in its memory


def measured(part: str, size: int) -> dict:
    """The part at one size: prepared, then measured in a process of its own, with that
    process's peak resident memory."""
    spawn = multiprocessing.get_context("spawn")
    with tempfile.TemporaryDirectory(prefix="layertap-bench-scale-") as workdir:
        if part in PREPARE:
            with spawn.Pool(1) as pool:
                pool.apply(PREPARE[part], (workdir, size))
        with spawn.Pool(1) as pool:
            return pool.apply(_measured, (part, size, workdir))


def _measured(part: str, size: int, workdir: str) -> dict:
    result = MEASURES[part](size, workdir)
    result.setdefault("peak_mb", resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)  # or its own process's
    return result


def growth(sizes: list[int], values: list[float]) -> list[str]:
    """The exponent k of value ~ size^k between each size and the one before."""
    out = [""]
    for (n0, v0), (n1, v1) in zip(zip(sizes, values), zip(sizes[1:], values[1:])):
        out.append(f"{math.log(v1 / v0) / math.log(n1 / n0):.2f}" if v0 > 0 and v1 > 0 else "")
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("parts", nargs="*", help=f"of {', '.join(MEASURES)} (default: all)")
    parser.add_argument("--sizes", type=int, nargs="+", help="sizes of every part named (default: per part)")
    args = parser.parse_args()
    if unknown := set(args.parts) - set(MEASURES):
        parser.error(f"no part {', '.join(sorted(unknown))}; the parts are {', '.join(MEASURES)}")
    args.parts = args.parts or list(MEASURES)
    for part in args.parts:
        sizes = args.sizes or DEFAULT_SIZES[part]
        print(f"\n## {part}\n\n| size | seconds | growth | peak MB | detail |\n| ---: | ---: | ---: | ---: | --- |")
        results = []
        for size in sizes:  # each row as it is measured: the largest sizes take minutes
            results.append(measured(part, size))
            exponent = growth(sizes[: len(results)], [r["seconds"] for r in results])[-1]
            result = results[-1]
            print(
                f"| {size:,} | {result['seconds']:.2f} | {exponent} | {result['peak_mb']:,.0f} | {result['detail']} |",
                flush=True,
            )
        for name in results[0].get("growth", {}):  # other measures of the part, with their growth
            values = [r["growth"][name] for r in results]
            exponents = ", ".join(growth(sizes, values)[1:])
            print(f"\n{name}: {', '.join(f'{v:.3g}' for v in values)}; growth {exponents}")


if __name__ == "__main__":
    main()
