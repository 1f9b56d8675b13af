"""The training loader (`run.loader`) against the raw read of the same bytes, on local disk
and on the GCS emulator, and against SAELens' loading of its own cache of the same tokens:
tokens/s and GB/s of one layer's stored rows, and the CPU time each took.

    .venv/bin/python benchmarks/bench_loader.py [--tokens 16384] [--buffer-mb 16] [--repeat 2]
        [--sinks warm cold gcs]

The run: Qwen2.5-0.5B's default extraction (14 layers x 896, bfloat16) in 1,024-token units
and 64 MiB shards. Read one layer:
- raw: each shard's bytes that the loader needs (the token columns and the layer) with the
  reader's ranged reads, 8 shards at a time, nothing checked or decoded: the store's speed;
- raw + CRC32C: the same reads, each tensor checked: the floor of any checked read;
- iter_layer: the reader, in order, checked (dtype=None);
- loader: shuffled batches of 4,096, checked, as stored (bfloat16) and as float32, and as
  float32 JAX arrays on JAX's default device (here the CPU; each waited for);
- SAELens (local disk only; when sae_lens is installed): its ActivationsStore serving
  batches of 4,096 from its cache of the same tokens (saelens_loading.py; float32 on disk).
GB/s is of the layer as LayerTap stores it (bfloat16) for every row. CPU is this process's
(user + system; the emulator is another process). The local run is read twice over: from a
warm page cache (memory's speed), and evicted from it before every read
(posix_fadvise(DONTNEED), no root needed), so each comes from the disk. Printed, never
asserted.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import saelens_loading
from bench_store import HIDDEN, LAYERS, make_shard, with_emulator

LAYER = 12
UNIT_TOKENS = 1024
BATCH = 4096
SINKS = ("warm", "cold", "gcs")


def write_run(uri: str, tokens: int) -> None:
    from layertap.store import TokenRecords, finalize_run, open_writer

    unit = make_shard(UNIT_TOKENS)
    meta = {"layers": LAYERS, "storage_dtype": "bfloat16", "model": "benchmark"}
    with open_writer(uri, meta, shard_bytes=64 * 2**20) as writer:
        for u in range(tokens // UNIT_TOKENS):
            columns = {name: unit[name] for name in ("token_ids", "position", "segment")}
            writer.add(u, TokenRecords.of(unit["acts"], sample_index=unit["sample_index"] + 1000 * u, **columns))
    finalize_run(uri)


def raw_read(uri: str, checksums: bool = False) -> int:
    """The loader's bytes of every shard (its token columns and the layer), fetched with the
    reader's ranged reads (neighbours within 256 KiB in one), 8 shards at a time, decoded
    not at all and checked only if asked: what any reader must fetch. Returns the rows read."""
    import layertap
    from layertap.io.ahead import map_ahead
    from layertap.store import layout

    run = layertap.open(uri, checksums=checksums)
    names = [layout.layer_tensor(LAYER), *layout.TOKEN_COLUMNS]
    return sum(map_ahead(lambda shard: len(shard.read_many(names)["token_ids"]), run.shards, 8))


def evict(root: str) -> None:
    """Drop a local run's files from the page cache (posix_fadvise DONTNEED: no root needed),
    so the next read comes from the disk."""
    for path in Path(root).rglob("*"):
        if path.is_file():
            fd = os.open(path, os.O_RDONLY)
            try:
                os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
            finally:
                os.close(fd)


def timed(cases: dict, tokens: int, repeat: int, cold: str | None = None) -> list[dict]:
    """Each case `repeat` + 1 times, interleaved; the first round warms the page cache and is
    dropped: medians of wall and CPU time. `cold`: a local run evicted from the page cache
    before each read."""
    times: dict[str, list[float]] = {name: [] for name in cases}
    cpu: dict[str, list[float]] = {name: [] for name in cases}
    for _ in range(repeat + 1):
        for name, fn in cases.items():
            if cold is not None:
                evict(cold)
            c0, t0 = time.process_time(), time.perf_counter()
            rows = fn()
            times[name].append(time.perf_counter() - t0)
            cpu[name].append(time.process_time() - c0)
            assert rows == tokens, (name, rows)
    layer_bytes = tokens * HIDDEN * 2
    out = []
    for name, seconds in times.items():
        s = statistics.median(seconds[1:])
        cpu_s = statistics.median(cpu[name][1:])
        out.append({"case": name, "tokens_per_s": tokens / s, "GBps": layer_bytes / s / 1e9, "cpu_s": cpu_s})
    return out


def measure(
    uri: str, tokens: int, buffer_mb: int, repeat: int, saelens_cache: str | None = None, cold: bool = False
) -> list[dict]:
    import layertap

    def iter_layer():
        return sum(len(b) for b in layertap.open(uri).iter_layer(LAYER, dtype=None))

    def loader(dtype, checksums=True, format="numpy"):
        def go():
            run = layertap.open(uri, checksums=checksums)
            batches = run.loader(
                LAYER, batch_size=BATCH, seed=0, dtype=dtype, buffer_bytes=buffer_mb * 2**20, format=format
            )
            if format == "jax":  # each batch where the step would find it
                return sum(len(b.block_until_ready()) for b in batches)
            return sum(len(b) for b in batches)

        return go

    cases = {
        "raw read (unchecked)": lambda: raw_read(uri),
        "raw read + CRC32C (checked)": lambda: raw_read(uri, checksums=True),
        "iter_layer (checked)": iter_layer,
        "loader, bfloat16 (checked)": loader(None),
        "loader, float32 (checked)": loader(np.float32),
        "loader, bfloat16 (unchecked)": loader(None, checksums=False),
        "loader, float32 JAX arrays (checked)": loader(np.float32, format="jax"),
    }
    rows = timed(cases, tokens, repeat, cold=uri if cold else None)
    if saelens_cache is not None:
        # in rounds of its own, after the others: interleaved, the reader after it in each round
        # took 1.3-1.7x its usual CPU time (it allocates and frees ~1 GB of torch buffers)
        def saelens():
            return saelens_loading.read_batches(saelens_cache, UNIT_TOKENS, HIDDEN, tokens // BATCH, BATCH)

        rows += timed(
            {"SAELens ActivationsStore, float32 (its cache)": saelens}, tokens, repeat, saelens_cache if cold else None
        )
    raw = rows[0]["GBps"]
    for row in rows:
        row["of_raw"] = row["GBps"] / raw
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tokens", type=int, default=16384)
    parser.add_argument("--buffer-mb", type=int, default=16, help="the loader's buffer_bytes, in MiB")
    parser.add_argument("--repeat", type=int, default=2)
    parser.add_argument(
        "--sinks",
        nargs="+",
        choices=SINKS,
        default=list(SINKS),
        help="where to read from: the local run from the page cache, the same evicted before each read, the emulator",
    )
    parser.add_argument("--out", default=None, help="scratch directory (default: a temp dir)")
    args = parser.parse_args()
    if args.tokens % BATCH:
        parser.error(f"--tokens must be a multiple of {BATCH} (whole batches for every reader)")
    root = Path(args.out or tempfile.mkdtemp(prefix="layertap-bench-loader-"))
    layer_mb = args.tokens * HIDDEN * 2 / 2**20
    print(
        f"## One layer of {args.tokens} tokens x {HIDDEN}, bfloat16 ({layer_mb:.0f} MiB of a "
        f"{len(LAYERS)}-layer run), loader buffer {args.buffer_mb} MiB\n"
    )
    try:
        results = {}
        local = str(root / "run")
        write_run(local, args.tokens)
        why_not = saelens_loading.available()
        cache = None if why_not else str(root / "saelens-cache")
        if cache:
            saelens_loading.write_cache(local, LAYER, UNIT_TOKENS, cache)
        if "warm" in args.sinks:
            results["local disk (page cache)"] = measure(local, args.tokens, args.buffer_mb, args.repeat, cache)
        if "cold" in args.sinks:
            results["local disk (evicted: the disk)"] = measure(
                local, args.tokens, args.buffer_mb, args.repeat, cache, cold=True
            )

        def on_emulator(uri):
            write_run(uri, args.tokens)
            return measure(uri, args.tokens, args.buffer_mb, args.repeat)

        if "gcs" in args.sinks:
            results["GCS emulator"] = with_emulator(on_emulator)
        print(f"load average {os.getloadavg()[0]:.1f} ({os.cpu_count()} CPUs)\n")
        print("| from | read | tokens/s | GB/s | of raw | CPU s |\n| --- | --- | ---: | ---: | ---: | ---: |")
        for where, rows in results.items():
            for r in rows:
                print(
                    f"| {where} | {r['case']} | {r['tokens_per_s']:,.0f} | {r['GBps']:.2f} | "
                    f"{100 * r['of_raw']:.0f}% | {r['cpu_s']:.3f} |"
                )
        if why_not:
            print(f"\nSAELens skipped: {why_not}")
    finally:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
