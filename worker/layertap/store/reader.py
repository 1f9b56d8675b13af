"""Reading a run: `layertap.open(uri)` -> Run.

    run = layertap.open("gs://bucket/runs/arc-0")
    for batch in run.iter_layer(12, segments=["test-input"]):
        batch.activations   # [n, D] float32 (or the stored dtype with dtype=None)
        batch.token_ids     # [n] and sample_index, position, segment, cell [n, 3]
    run.samples()[i]        # provenance of sample i (ARC: task id, origin, augmentation)

Local shards are memory-mapped; on gs:// each layer is one ranged read per shard (a
layer's rows are contiguous in the file). A run that is still being written (no
manifest yet) reads as far as its commit records go.
"""

from __future__ import annotations

import json
import tempfile
from collections.abc import Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from functools import cached_property
from pathlib import Path

import crc32c
import numpy as np

from layertap.errors import LayerTapError
from layertap.io import Store, open_store
from layertap.store import dtypes, layout, shardfile
from layertap.store.index import build_manifest, read_commits, read_run_info
from layertap.store.records import TokenRecords

_HEADER_GUESS = 64 * 1024  # enough for the header of any shard; read more if not


class Shard:
    """One shard file; its tensors by name."""

    def __init__(self, store: Store, entry: dict) -> None:
        self._store = store
        self.key: str = entry["shard"]
        self.entry = entry

    @cached_property
    def tensors(self) -> dict[str, shardfile.TensorInfo]:
        prefix = self._store.read(self.key, 0, _HEADER_GUESS)
        needed = shardfile.header_size(prefix)
        if needed > len(prefix):
            prefix = self._store.read(self.key, 0, needed)
        header_len, header = shardfile.parse_header(prefix)
        return shardfile.tensor_table(header_len, header)

    @property
    def local_path(self) -> Path | None:
        return self._store.local_path(self.key)

    def _info(self, name: str) -> shardfile.TensorInfo:
        try:
            return self.tensors[name]
        except KeyError:
            raise LayerTapError(f"{self._store.uri}/{self.key}: no tensor {name!r}") from None

    def read(self, name: str) -> np.ndarray:
        """A tensor read into memory: one ranged read (a file read, or one GCS request)."""
        info = self._info(name)
        data = self._store.read(self.key, info.offset, info.offset + info.nbytes)
        return np.frombuffer(data, dtype=info.dtype).reshape(info.shape)

    def memmap(self, name: str) -> np.ndarray:
        """A tensor as a read-only memmap (local shards only): nothing is read until used."""
        info = self._info(name)
        if self.local_path is None:
            raise LayerTapError(f"{self._store.uri}: memmap needs a local run; copy it first (gcloud storage cp -r)")
        if info.nbytes == 0:
            return np.empty(info.shape, info.dtype)
        return np.memmap(self.local_path, dtype=info.dtype, mode="r", offset=info.offset, shape=info.shape)


class Run:
    """A run written by LayerTap: its manifest, provenance and shards."""

    def __init__(self, store: Store, manifest: dict, finalized: bool) -> None:
        self.uri = store.uri
        self.manifest = manifest
        self.finalized = finalized
        self._store = store
        self.shards = [Shard(store, entry) for entry in manifest["shards"]]
        self._samples: dict[int, dict] | None = None

    meta = property(lambda self: self.manifest["meta"])
    layers = property(lambda self: list(self.manifest["layers"]))
    storage_dtype = property(lambda self: self.manifest["storage_dtype"])
    hidden_size = property(lambda self: self.manifest["hidden_size"])
    num_tokens = property(lambda self: self.manifest["num_tokens"])

    def __len__(self) -> int:
        return self.num_tokens

    def __repr__(self) -> str:
        state = "" if self.finalized else ", not finalized"
        return (
            f"Run({self.uri!r}: {self.num_tokens} tokens x layers {self.layers} x {self.hidden_size} "
            f"{self.storage_dtype}, {len(self.shards)} shards{state})"
        )

    def samples(self) -> dict[int, dict]:
        """Sample index -> the provenance the runner recorded (ARC: task_id, origin,
        test_index, augmentation, ...), for every sample with stored rows."""
        if self._samples is None:
            keys = [shard.entry["samples"] for shard in self.shards]
            with ThreadPoolExecutor(16) as pool:
                sidecars = list(pool.map(lambda key: json.loads(self._store.read(key)), keys))
            found = {int(index): meta for sidecar in sidecars for index, meta in sidecar["samples"].items()}
            self._samples = dict(sorted(found.items()))
        return self._samples

    def iter_layer(
        self,
        layer: int,
        *,
        segments: Iterable[int | str] | None = None,
        tokens: Iterable[int] | None = None,
        exclude_tokens: Iterable[int] | None = None,
        dtype: np.dtype | str | None = np.float32,
    ) -> Iterator[TokenRecords]:
        """The rows of `layer`, one TokenRecords ([n, D] activations) per shard, optionally filtered.

        segments: keep tokens with these segment labels (ints, or names listed in the
            run's meta `segment_names`). tokens / exclude_tokens: keep / drop these token
            ids. dtype: the activations' dtype (None: as stored; int8 is always decoded).
        """
        name = self._layer_tensor(layer)
        keep_segments = None if segments is None else self._segment_labels(segments)
        keep_tokens = None if tokens is None else np.fromiter(tokens, np.int64)
        drop_tokens = None if exclude_tokens is None else np.fromiter(exclude_tokens, np.int64)
        for shard in self.shards:
            columns = {column: shard.read(column) for column in layout.TOKEN_COLUMNS}
            mask = np.ones(len(columns["token_ids"]), bool)
            if keep_segments is not None:
                mask &= np.isin(columns["segment"], keep_segments)
            if keep_tokens is not None:
                mask &= np.isin(columns["token_ids"], keep_tokens)
            if drop_tokens is not None:
                mask &= ~np.isin(columns["token_ids"], drop_tokens)
            if not mask.any():
                continue
            everything = bool(mask.all())
            values = shard.read(name)
            values = values if everything else values[mask]
            scale = shard.read(layout.scale_tensor(layer)) if self.storage_dtype == "int8" else None
            if scale is not None and not everything:
                scale = scale[mask]
            activations = dtypes.decode(values, scale, dtype)
            rows = {k: v if everything else v[mask] for k, v in columns.items()}
            yield TokenRecords(activations, **rows)

    def read_layer(self, layer: int, **filters) -> TokenRecords:
        """All (filtered) rows of a layer in memory; for small runs and tests."""
        batches = list(self.iter_layer(layer, **filters))
        if not batches:
            dtype = filters.get("dtype", np.float32) or dtypes.NUMPY_DTYPES[self.storage_dtype]
            return TokenRecords.empty(self.hidden_size or 0, dtype)
        return TokenRecords.concatenate(batches)

    def memmap(self, layer: int) -> list[np.memmap]:
        """`layer`'s stored rows, one read-only memmap per shard (local runs only).

        For int8 runs these are the codes; `shard.memmap(f"layer.{layer}.scale")` holds
        the per-row scales.
        """
        name = self._layer_tensor(layer)
        return [shard.memmap(name) for shard in self.shards]

    def verify(self) -> None:
        """Check every shard's size and CRC32C against the manifest."""
        for shard in self.shards:
            data = self._store.read(shard.key)
            crc = f"{crc32c.crc32c(data):08x}"
            if len(data) != shard.entry["bytes"] or crc != shard.entry["crc32c"]:
                raise LayerTapError(
                    f"{self.uri}/{shard.key}: {len(data)} bytes crc32c {crc}, manifest says "
                    f"{shard.entry['bytes']} bytes crc32c {shard.entry['crc32c']}"
                )

    def to_hf_dataset(self, layer: int, *, cache_dir: str | Path | None = None, dtype: str = "float32", **filters):
        """A Hugging Face `datasets.Dataset` of `layer` (columns: activation, token_id,
        sample_index, position, segment, cell), memory-mapped from Arrow files in `cache_dir`."""
        try:
            import datasets
            import pyarrow as pa
        except ImportError:
            raise LayerTapError("to_hf_dataset needs the datasets package: pip install datasets") from None
        out = Path(cache_dir) if cache_dir is not None else Path(tempfile.mkdtemp(prefix="layertap-hf-"))
        out.mkdir(parents=True, exist_ok=True)
        parts = []
        for i, batch in enumerate(self.iter_layer(layer, dtype=dtype, **filters)):
            flat = pa.array(np.ascontiguousarray(batch.activations).reshape(-1))
            table = pa.table({
                "activation": pa.FixedSizeListArray.from_arrays(flat, batch.activations.shape[1]),
                "token_id": batch.token_ids,
                "sample_index": batch.sample_index,
                "position": batch.position,
                "segment": batch.segment,
                "cell": pa.FixedSizeListArray.from_arrays(pa.array(batch.cell.reshape(-1)), 3),
            })
            path = out / f"layer{layer}-{i:06d}.arrow"
            with pa.OSFile(str(path), "wb") as sink, pa.ipc.new_stream(sink, table.schema) as stream:
                stream.write_table(table)
            parts.append(datasets.Dataset.from_file(str(path)))
        if not parts:
            raise LayerTapError(f"{self.uri}: no rows of layer {layer} match the filters")
        return datasets.concatenate_datasets(parts)

    def _layer_tensor(self, layer: int) -> str:
        if layer not in self.layers:
            raise LayerTapError(f"{self.uri}: layer {layer} was not extracted (layers: {self.layers})")
        return layout.layer_tensor(layer)

    def _segment_labels(self, segments: Iterable[int | str]) -> np.ndarray:
        names = self.meta.get("segment_names") or {}
        if isinstance(names, list):
            names = {name: label for label, name in enumerate(names)}
        labels = []
        for segment in segments:
            if isinstance(segment, str):
                if segment not in names:
                    raise LayerTapError(f"{self.uri}: unknown segment {segment!r} (known: {sorted(names)})")
                segment = names[segment]
            labels.append(int(segment))
        return np.asarray(labels, np.int64)


def open_run(uri: str) -> Run:
    """Open a run (local path or gs://). Before finalize_run, reads the committed shards."""
    store = open_store(uri)
    try:
        manifest = json.loads(store.read(layout.MANIFEST_KEY))
        finalized = True
    except FileNotFoundError:
        manifest = build_manifest(read_run_info(store), read_commits(store))
        finalized = False
    if manifest.get("format") != layout.FORMAT:
        raise LayerTapError(f"{uri}/{layout.MANIFEST_KEY}: format {manifest.get('format')!r} is not {layout.FORMAT}")
    return Run(store, manifest, finalized)
