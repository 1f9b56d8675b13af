"""Storage throughput: shard containers compared, then LayerTap's writer and reader on
local disk and on the GCS emulator (reads with and without checksums), bytes per token,
the int8 error, and the cost of fingerprinting a 1 GiB checkpoint file.

    .venv/bin/python benchmarks/bench_store.py [--tokens 4096] [--repeat 3] [--out DIR]

Shapes follow Qwen2.5-0.5B's default extraction: 14 layers x 896 hidden, bfloat16.
Reads are from a warm page cache (this machine cannot drop it): they measure the
format's decode cost, not the disk. Timing is printed, never asserted.
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

import ml_dtypes
import numpy as np

LAYERS = list(range(10, 24))
HIDDEN = 896
MIN_BYTES_PER_TOKEN = len(LAYERS) * HIDDEN * 2  # 25,088 B in bfloat16


def timed(fn, repeat: int) -> float:
    """Median seconds of `repeat` runs."""
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def make_shard(tokens: int, seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    acts = rng.standard_normal((len(LAYERS), tokens, HIDDEN), dtype=np.float32).astype(ml_dtypes.bfloat16)
    return {
        "acts": acts,
        "token_ids": rng.integers(0, 151_000, tokens).astype(np.int32),
        "sample_index": np.repeat(np.arange(tokens // 256 + 1), 256)[:tokens].astype(np.int64),
        "position": (np.arange(tokens) % 256).astype(np.int32),
        "segment": (np.arange(tokens) % 5).astype(np.int16),
    }


# -- containers: write one shard, read one layer back ---------------------------------


def c_safetensors(shard, path: Path, reader="range"):
    from layertap.store import shardfile

    tensors = {f"layer.{layer}": [shard["acts"][i]] for i, layer in enumerate(LAYERS)}
    tensors.update({k: [v] for k, v in shard.items() if k != "acts"})
    file = path / "shard.safetensors"

    def write():
        with open(file, "wb") as f:
            for buf in shardfile.buffers(tensors, {}):
                f.write(buf)

    def read_range():  # what layertap.open's iter_layer does: one ranged read per layer
        with open(file, "rb") as f:
            header_len, header = shardfile.parse_header(f.read(1 << 16))
            info = shardfile.tensor_table(header_len, header)["layer.12"]
            f.seek(info.offset)
            return np.frombuffer(f.read(info.nbytes), info.dtype).reshape(info.shape)

    def read_safe_open():  # the one-liner without LayerTap
        from safetensors import safe_open

        with safe_open(str(file), "np") as f:
            return f.get_tensor("layer.12")

    return write, read_range if reader == "range" else read_safe_open


def c_npy(shard, path: Path):
    def write():
        for i, layer in enumerate(LAYERS):
            # .npy has no bfloat16: stored as uint16 bits, viewed back on read
            np.save(path / f"layer.{layer}.npy", shard["acts"][i].view(np.uint16))

    def read():
        return np.load(path / "layer.12.npy").view(ml_dtypes.bfloat16)

    return write, read


def _arrow_table(shard):
    import pyarrow as pa

    columns = {}
    for i, layer in enumerate(LAYERS):
        flat = pa.array(shard["acts"][i].view(np.uint16).reshape(-1))  # no bfloat16 in Arrow
        columns[f"layer.{layer}"] = pa.FixedSizeListArray.from_arrays(flat, HIDDEN)
    columns.update({k: v for k, v in shard.items() if k != "acts"})
    return pa.table(columns)


def c_arrow_ipc(shard, path: Path):
    import pyarrow as pa
    import pyarrow.feather as feather

    file = path / "shard.arrow"

    def write():
        feather.write_feather(_arrow_table(shard), file, compression="uncompressed")

    def read():
        with pa.memory_map(str(file)) as source:
            column = pa.ipc.open_file(source).read_all().column("layer.12").combine_chunks()
            return np.asarray(column.values).view(ml_dtypes.bfloat16).reshape(-1, HIDDEN).copy()

    return write, read


def c_parquet(shard, path: Path, compression="none"):
    import pyarrow.parquet as pq

    file = path / "shard.parquet"

    def write():
        pq.write_table(_arrow_table(shard), file, compression=compression, use_dictionary=False)

    def read():
        column = pq.read_table(file, columns=["layer.12"]).column("layer.12").combine_chunks()
        return np.asarray(column.values).view(ml_dtypes.bfloat16).reshape(-1, HIDDEN)

    return write, read


def c_zarr3(shard, path: Path):
    import tensorstore as ts

    tokens = shard["acts"].shape[1]
    spec = {
        "driver": "zarr3",
        "kvstore": {"driver": "file", "path": str(path / "acts.zarr")},
        "metadata": {
            "shape": [len(LAYERS), tokens, HIDDEN],
            "data_type": "bfloat16",
            "chunk_grid": {"name": "regular", "configuration": {"chunk_shape": [1, tokens, HIDDEN]}},
        },
    }

    def write():
        shutil.rmtree(path / "acts.zarr", ignore_errors=True)
        store = ts.open(spec, create=True).result()
        store.write(shard["acts"]).result()

    def read():
        return ts.open({"driver": "zarr3", "kvstore": spec["kvstore"]}).result()[2].read().result()

    return write, read


CONTAINERS = {
    "safetensors (LayerTap: streamed write, ranged read)": c_safetensors,
    "safetensors (safe_open 'np' read)": lambda s, p: c_safetensors(s, p, "safe_open"),
    "raw .npy per layer": c_npy,
    "Arrow IPC (uncompressed)": c_arrow_ipc,
    "Parquet (uncompressed)": c_parquet,
    "Parquet (zstd)": lambda s, p: c_parquet(s, p, "zstd"),
    "Zarr v3 (tensorstore)": c_zarr3,
}


def bench_containers(tokens: int, repeat: int, root: Path) -> list[dict]:
    shard = make_shard(tokens)
    payload = shard["acts"].nbytes
    layer_bytes = payload / len(LAYERS)
    rows = []
    for name, make in CONTAINERS.items():
        path = root / name.split()[0].lower() / str(len(rows))
        shutil.rmtree(path, ignore_errors=True)
        path.mkdir(parents=True)
        write, read = make(shard, path)

        def durable_write(write=write):  # every container pays for reaching the disk
            write()
            os.sync()

        durable_write()  # warm-up: allocations, imports, the file system's metadata
        w = timed(durable_write, repeat)
        back = read()
        assert np.array_equal(np.asarray(back).view(np.uint16), shard["acts"][2].view(np.uint16)), name
        r = timed(read, repeat)
        size = sum(p.stat().st_size for p in path.rglob("*") if p.is_file())
        rows.append(
            {
                "container": name,
                "write_MBps": payload / w / 1e6,
                "read_layer_MBps": layer_bytes / r / 1e6,
                "bytes_vs_payload": size / payload,
            }
        )
    return rows


# -- LayerTap's writer and reader end to end --------------------------------------------


def bench_store(uri: str, tokens: int, unit_tokens: int = 512, shard_mb: int = 64) -> dict:
    import layertap
    from layertap.store import TokenRecords, finalize_run, open_writer

    shard = make_shard(unit_tokens)
    units = tokens // unit_tokens
    meta = {"layers": LAYERS, "storage_dtype": "bfloat16", "model": "benchmark"}
    t0 = time.perf_counter()
    with open_writer(uri, meta, shard_bytes=shard_mb * 2**20) as writer:
        for u in range(units):
            columns = {name: shard[name] for name in ("token_ids", "position", "segment")}
            writer.add(u, TokenRecords.of(shard["acts"], sample_index=shard["sample_index"] + 2 * u, **columns))
    write_s = time.perf_counter() - t0
    manifest = finalize_run(uri)
    read_s = {}
    for checksums in (True, False, True, False):  # interleaved; the second of each counts
        run = layertap.open(uri, checksums=checksums)
        t0 = time.perf_counter()
        rows = sum(len(b) for b in run.iter_layer(12, dtype=None))
        read_s[checksums] = time.perf_counter() - t0
        assert rows == units * unit_tokens
    payload = units * unit_tokens * MIN_BYTES_PER_TOKEN
    return {
        "uri": uri.split("/")[0] + "//..." if uri.startswith("gs://") else "local disk",
        "tokens": units * unit_tokens,
        "shards": manifest["num_shards"],
        "write_MBps": payload / write_s / 1e6,
        "write_tokens_per_s": units * unit_tokens / write_s,
        "read_layer_MBps": payload / len(LAYERS) / read_s[True] / 1e6,
        "read_unchecked_MBps": payload / len(LAYERS) / read_s[False] / 1e6,
        "bytes_per_token": manifest["bytes_per_token"],
        "overhead_vs_minimum": manifest["bytes_per_token"] / MIN_BYTES_PER_TOKEN - 1,
    }


def bench_emulator_ceiling(uri: str, megabytes: int = 64) -> dict:
    """One object written and read with google-cloud-storage alone: the emulator's speed."""
    from layertap.io import open_store

    data = np.random.default_rng(0).integers(0, 255, megabytes * 2**20, dtype=np.uint8).tobytes()
    store = open_store(uri)
    t0 = time.perf_counter()
    store.write("ceiling.bin", data)
    write_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    store.read("ceiling.bin")
    read_s = time.perf_counter() - t0
    return {"write_MBps": len(data) / write_s / 1e6, "read_MBps": len(data) / read_s / 1e6}


def int8_error(tokens: int) -> list[dict]:
    from layertap.store import dtypes

    rng = np.random.default_rng(1)
    gaussian = rng.standard_normal((1, tokens, HIDDEN)).astype(np.float32)
    # Residual streams carry a few huge "massive activation" dimensions; model them.
    outliers = gaussian.copy()
    outliers[..., rng.choice(HIDDEN, 4, replace=False)] *= 100
    rows = []
    for name, x in (("gaussian rows", gaussian), ("rows with 4 outlier dims x100", outliers)):
        values, scales = dtypes.encode(x, "int8")
        back = dtypes.decode(values[0], scales[0], np.float32)
        err = back - x[0]
        bf16_err = x[0].astype(ml_dtypes.bfloat16).astype(np.float32) - x[0]
        rows.append(
            {
                "data": name,
                "int8_rel_rms": float(np.sqrt((err**2).mean() / (x[0] ** 2).mean())),
                "int8_max_err_over_row_absmax": float((np.abs(err).max(axis=1) / np.abs(x[0]).max(axis=1)).max()),
                "bf16_rel_rms": float(np.sqrt((bf16_err**2).mean() / (x[0] ** 2).mean())),
                "int8_cosine_min": float(
                    ((back * x[0]).sum(1) / np.linalg.norm(back, axis=1) / np.linalg.norm(x[0], axis=1)).min()
                ),
            }
        )
    return rows


def fingerprint_cost(root: Path, gigabytes: float = 1.0, repeat: int = 3) -> dict:
    """Seconds to fingerprint one checkpoint file (size + CRC32C, as a run's identity does),
    from the page cache: the first read of a file on a cold disk adds the disk's time."""
    from layertap.io import open_store
    from layertap.io.fingerprint import fingerprint

    root.mkdir(parents=True, exist_ok=True)
    path = root / "model.safetensors"
    chunk = np.random.default_rng(2).integers(0, 255, 64 * 2**20, dtype=np.uint8).tobytes()
    with open(path, "wb") as f:
        for _ in range(int(gigabytes * 16)):
            f.write(chunk)
    store = open_store(str(root))
    seconds = timed(lambda: fingerprint(store, path.name), repeat)
    return {"GiB": path.stat().st_size / 2**30, "seconds": seconds}


def with_emulator(fn):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
    from gcs_emulator import Emulator

    root = Path(tempfile.mkdtemp(prefix="layertap-bench-gcs-"))
    server = Emulator(root / "data")
    server.start()
    try:
        server.create_bucket("bench")
        os.environ["STORAGE_EMULATOR_HOST"] = server.url
        return fn("gs://bench/run")
    finally:
        server.stop()
        shutil.rmtree(root, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tokens", type=int, default=4096, help="tokens per shard / run")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--out", default=None, help="scratch directory (default: a temp dir)")
    args = parser.parse_args()
    root = Path(args.out or tempfile.mkdtemp(prefix="layertap-bench-"))
    try:
        payload = len(LAYERS) * args.tokens * HIDDEN * 2 / 2**20
        print(f"## One shard: {args.tokens} tokens x {len(LAYERS)} layers x {HIDDEN}, bfloat16 ({payload:.0f} MiB)\n")
        print("| container | write MB/s | read one layer MB/s | file bytes / payload |\n| --- | ---: | ---: | ---: |")
        for row in bench_containers(args.tokens, args.repeat, root / "containers"):
            print(
                f"| {row['container']} | {row['write_MBps']:.0f} | {row['read_layer_MBps']:.0f} | "
                f"{row['bytes_vs_payload']:.4f} |"
            )
        results = [bench_store(str(root / "run"), args.tokens * 4)]
        ceiling = {}

        def on_emulator(uri):
            ceiling.update(bench_emulator_ceiling(uri + "-ceiling"))
            return bench_store(uri, args.tokens * 4)

        results.append(with_emulator(on_emulator))
        print(f"\n## LayerTap writer + reader ({args.tokens * 4} tokens in 512-token units, 64 MiB shards)\n")
        print(
            "| target | write MB/s | tokens/s | read one layer MB/s (checked) | unchecked | bytes/token | over the "
            "25,088 B minimum |"
        )
        print("| --- | ---: | ---: | ---: | ---: | ---: | ---: |")
        for r in results:
            print(
                f"| {r['uri']} | {r['write_MBps']:.0f} | {r['write_tokens_per_s']:.0f} | {r['read_layer_MBps']:.0f} | "
                f"{r['read_unchecked_MBps']:.0f} | {r['bytes_per_token']:.1f} | {100 * r['overhead_vs_minimum']:.3f}% |"
            )
        print(
            f"\nThe emulator itself (one 64 MiB object, google-cloud-storage alone): write {ceiling['write_MBps']:.0f} "
            f"MB/s, read {ceiling['read_MBps']:.0f} MB/s."
        )
        print("\n## int8 with a per-row scale\n")
        print(
            "| data | int8 relative RMS error | int8 max error / row absmax | min cosine | "
            "bfloat16 relative RMS error |"
        )
        print("| --- | ---: | ---: | ---: | ---: |")
        for r in int8_error(args.tokens):
            print(
                f"| {r['data']} | {r['int8_rel_rms']:.4f} | {r['int8_max_err_over_row_absmax']:.4f} | "
                f"{r['int8_cosine_min']:.5f} | {r['bf16_rel_rms']:.4f} |"
            )
        cost = fingerprint_cost(root / "fingerprint")
        print(
            f"\n## Fingerprint of a checkpoint file (page cache)\n\n{cost['GiB']:.2f} GiB: {cost['seconds']:.2f} s "
            f"({cost['GiB'] / cost['seconds']:.1f} GiB/s)"
        )
    finally:
        if args.out is None:
            shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
