"""Reading a run: `layertap.open(uri)` -> Run.

    run = layertap.open("gs://bucket/runs/arc-0")
    for batch in run.iter_layer(12, segments=["test-input"]):
        batch.activations   # [n, D] float32 (or the stored dtype with dtype=None)
        batch.token_ids     # [n] and sample_index, position, segment, cell [n, 3]
    run.samples()[i]        # provenance of sample i (ARC: task id, origin, augmentation)

Local shards are memory-mapped; on gs:// each layer is one ranged read per shard (a
layer's rows are contiguous in the file). A unit larger than a shard is stored as several
part files, listed in row order: reading shard after shard reads it whole. A run that is still being written (no
manifest yet) reads as far as its commit records go.

Every tensor read is checked against the CRC32C its commit record holds (runs written
before per-tensor checksums: the whole shard once); a mismatch is an error naming the
shard. `layertap.open(uri, checksums=False)` skips the checks for trusted local reads.
"""

from __future__ import annotations

import difflib
import os
import re
import tempfile
from collections.abc import Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import crc32c
import numpy as np

from layertap.errors import LayerTapError
from layertap.humanize import plural
from layertap.io import Store, open_store
from layertap.io.ahead import map_ahead
from layertap.store import dtypes, layout, shardfile
from layertap.store.index import (
    RECOMPUTE,
    REFINALIZE,
    build_manifest,
    read_commits,
    read_json,
    read_run_info,
    read_stats_file,
    shard_files,
)
from layertap.store.records import TokenRecords
from layertap.store.schema import manifest_damage, sidecar_damage
from layertap.store.statistics import RunStats, merge_all

_HEADER_GUESS = 64 * 1024  # enough for the header of any shard; read more if not


COALESCE_GAP = 256 * 1024  # read across a gap this small rather than make one more request
READ_AHEAD = 8  # shards read in parallel ahead of the one being used (`Run.iter_layer`)


def _end(info: shardfile.TensorInfo) -> int:
    return info.offset + info.nbytes


class Shard:
    """One shard file; its tensors by name."""

    def __init__(self, store: Store, entry: dict, checksums: bool = True) -> None:
        self._store = store
        self.key: str = entry["shard"]
        self.entry = entry
        self.checksums = checksums
        self._checked: set[str] = set()  # memory-mapped tensors whose bytes were checked
        self._tensors: dict[str, shardfile.TensorInfo] | None = None
        self._local_path: Path | bool | None = False  # False: not asked yet

    @property
    def where(self) -> str:
        return f"{self._store.uri}/{self.key}"

    @property
    def tensors(self) -> dict[str, shardfile.TensorInfo]:
        # Read once per shard. Not functools.cached_property: on Python 3.11 it holds one lock
        # for all instances, so shards read on several threads waited on each other's header.
        if self._tensors is None:
            self._tensors = self._read_tensors()
        return self._tensors

    def _read_tensors(self) -> dict[str, shardfile.TensorInfo]:
        prefix = self._read(0, _HEADER_GUESS)
        try:
            needed = shardfile.header_size(prefix)
            if needed > len(prefix):
                prefix = self._read(0, needed)
            header_len, header = shardfile.parse_header(prefix)
            return shardfile.tensor_table(header_len, header)
        except (ValueError, KeyError, TypeError, AttributeError) as error:  # json errors are ValueErrors
            raise LayerTapError(f"{self.where}: the shard's header is damaged ({error}); {RECOMPUTE}") from None

    def _read(self, start: int, end: int | None = None) -> bytes:
        try:
            return self._store.read(self.key, start, end)
        except FileNotFoundError:
            raise LayerTapError(f"{self.where}: the shard is missing; {RECOMPUTE}") from None

    def _check(self, name: str, data) -> None:
        """Raise if `data` (a tensor's bytes) is not what was written."""
        if not self.checksums:
            return
        expected = self.entry.get("tensors", {}).get(name)
        if expected is None:  # written before per-tensor checksums: check the whole shard, once
            if "*" not in self._checked:
                self.verify()
                self._checked.add("*")
            return
        got = f"{crc32c.crc32c(data):08x}"
        if got != expected:
            raise LayerTapError(
                f"{self.where}: tensor {name} has CRC32C {got}, its commit record says {expected}: the shard is "
                f"damaged; {RECOMPUTE}"
            )

    def verify(self) -> None:
        """Check the whole file's size and CRC32C against its commit record."""
        data = self._read(0)
        crc = f"{crc32c.crc32c(data):08x}"
        if len(data) != self.entry["bytes"] or crc != self.entry["crc32c"]:
            raise LayerTapError(
                f"{self.where}: {len(data)} bytes with CRC32C {crc}, its commit record says "
                f"{self.entry['bytes']} bytes with CRC32C {self.entry['crc32c']}: the shard is damaged; {RECOMPUTE}"
            )

    @property
    def local_path(self) -> Path | None:
        if self._local_path is False:  # resolved once (a realpath each time showed in profiles)
            self._local_path = self._store.local_path(self.key)
        return self._local_path

    def _info(self, name: str) -> shardfile.TensorInfo:
        try:
            return self.tensors[name]
        except KeyError:
            raise LayerTapError(f"{self._store.uri}/{self.key}: no tensor {name!r}") from None

    def read(self, name: str) -> np.ndarray:
        """A tensor read into memory: one ranged read (a file read, or one GCS request), checked."""
        return self.read_many([name])[name]

    def read_many(self, names: Iterable[str]) -> dict[str, np.ndarray]:
        """Tensors read into memory, each checked: tensors that lie next to each other in
        the file (or within COALESCE_GAP bytes) come in one ranged read."""
        infos = sorted(((self._info(name), name) for name in set(names)), key=lambda item: item[0].offset)
        runs: list[list[tuple[shardfile.TensorInfo, str]]] = []
        for info, name in infos:
            if runs and info.offset - _end(runs[-1][-1][0]) <= COALESCE_GAP:
                runs[-1].append((info, name))
            else:
                runs.append([(info, name)])
        out = {}
        for run in runs:
            start = run[0][0].offset
            data = memoryview(self._read(start, max(_end(info) for info, _ in run)))
            for info, name in run:
                part = data[info.offset - start : _end(info) - start]
                if len(part) != info.nbytes:
                    raise LayerTapError(f"{self.where}: the shard is truncated (tensor {name}); {RECOMPUTE}")
                self._check(name, part)
                out[name] = np.frombuffer(part, dtype=info.dtype).reshape(info.shape)
        return out

    def read_ahead(self, name: str) -> None:
        """Ask the OS to read a local shard's tensor into the page cache now, in the
        background (posix_fadvise WILLNEED): nothing is held by this process. No-op for a
        remote shard or where the call does not exist."""
        path = self.local_path
        if path is None or not hasattr(os, "posix_fadvise"):
            return
        info = self._info(name)
        try:
            fd = os.open(path, os.O_RDONLY)
        except FileNotFoundError:
            return  # reading it will say so
        try:
            os.posix_fadvise(fd, info.offset, info.nbytes, os.POSIX_FADV_WILLNEED)
        finally:
            os.close(fd)

    def memmap(self, name: str, whole: bool = False) -> np.ndarray:
        """A tensor as a read-only memmap (local shards only). With checksums on, the tensor
        is read through once to check it; nothing more is read until used. When it is read
        whole (checked, or `whole`: the caller will), its pages are read ahead at once
        (MADV_WILLNEED): faulted in one by one, a cold disk went at a third of a plain read's
        speed."""
        info = self._info(name)
        if self.local_path is None:
            raise LayerTapError(f"{self._store.uri}: memmap needs a local run; copy it first (gcloud storage cp -r)")
        if info.nbytes == 0:
            return np.empty(info.shape, info.dtype)
        try:
            mapped = np.memmap(self.local_path, dtype=info.dtype, mode="r", offset=info.offset, shape=info.shape)
        except (FileNotFoundError, ValueError) as error:  # ValueError: the file is shorter than the tensor
            raise LayerTapError(f"{self.where}: the shard is missing or truncated ({error}); {RECOMPUTE}") from None
        if whole or (self.checksums and name not in self._checked):
            self.read_ahead(name)
        if name not in self._checked:
            self._check(name, mapped.reshape(-1).view(np.uint8))
            self._checked.add(name)
        return mapped


class Run:
    """A run written by LayerTap: its manifest, provenance and shards."""

    def __init__(self, store: Store, manifest: dict, finalized: bool, checksums: bool = True) -> None:
        self.uri = store.uri
        self.manifest = manifest
        self.finalized = finalized
        self._store = store
        self.shards = [Shard(store, entry, checksums) for entry in manifest["shards"]]
        self._samples: dict[int, dict] | None = None

    meta = property(lambda self: self.manifest["meta"])
    layers = property(lambda self: list(self.manifest["layers"]))
    storage_dtype = property(lambda self: self.manifest["storage_dtype"])
    hidden_size = property(lambda self: self.manifest["hidden_size"])
    # runs written before sites existed store resid_post alone
    sites = property(lambda self: list(self.manifest.get("sites", [layout.DEFAULT_SITE])))
    num_tokens = property(lambda self: self.manifest["num_tokens"])

    def __len__(self) -> int:
        return self.num_tokens

    def __repr__(self) -> str:
        state = "" if self.finalized else ", not finalized"
        sites = f" x sites {', '.join(self.sites)}" if self.sites != [layout.DEFAULT_SITE] else f" x {self.hidden_size}"
        return (
            f"Run({self.uri!r}: {self.num_tokens} tokens x layers {self.layers}{sites} "
            f"{self.storage_dtype}, {plural(len(self.shards), 'shard')}{state})"
        )

    def shape(self, site: str = layout.DEFAULT_SITE) -> tuple[int, ...]:
        """One token's shape at `site` (e.g. (896,); attn_z: (heads, head size)); () before any shard."""
        self._check_site(site)
        shapes = self.manifest.get("shapes") or {}
        if site in shapes:
            return tuple(shapes[site])
        return (self.hidden_size,) if self.hidden_size else ()

    def stats(self) -> RunStats:
        """Per layer and site: count, mean and variance per dimension, norm histogram and
        quantiles, max |x|, the dimensions most often extreme and the tokens of largest norm
        (`layertap.store.statistics`), merged from what is committed (finished runs: read
        from stats.safetensors)."""
        merged = self.manifest.get("statistics")
        if merged is not None:
            return RunStats(read_stats_file(self._store, merged))
        entries = [shard.entry.get("stats") for shard in self.shards]
        if not entries or any(entry is None for entry in entries):
            raise LayerTapError(
                f"{self.uri}: this run has no statistics (written by `layertap predict`, or by a LayerTap "
                "from before statistics were kept)"
            )
        entries = list({entry["key"]: entry for entry in entries}.values())  # a split unit's parts share one
        return RunStats(merge_all(map_ahead(lambda entry: read_stats_file(self._store, entry), entries)))

    def samples(self) -> dict[int, dict]:
        """Sample index -> the provenance the runner recorded (ARC: task_id, origin,
        test_index, augmentation, ...), for every sample with stored rows."""
        if self._samples is None:
            keys = list(dict.fromkeys(shard.entry["samples"] for shard in self.shards))  # parts share one
            with ThreadPoolExecutor(16) as pool:
                sidecars = list(pool.map(self._sidecar, keys))
            found = {int(index): meta for sidecar in sidecars for index, meta in sidecar["samples"].items()}
            self._samples = dict(sorted(found.items()))
        return self._samples

    def iter_layer(
        self,
        layer: int,
        *,
        site: str = layout.DEFAULT_SITE,
        segments: Iterable[int | str] | None = None,
        tasks: Iterable[str] | None = None,
        positions: Iterable[int] | None = None,
        tokens: Iterable[int] | None = None,
        exclude_tokens: Iterable[int] | None = None,
        dtype: np.dtype | str | None = np.float32,
    ) -> Iterator[TokenRecords]:
        """The rows of `layer` at `site`, one TokenRecords ([n, D] activations; [n, *shape(site)])
        per shard, optionally filtered (the loader's filters, and tokens).

        segments: keep tokens with these segment labels (ints, or names listed in the
            run's meta `segment_names`). tasks: keep the tokens of these ARC task ids.
            positions: keep tokens at these positions of their prompt. tokens /
            exclude_tokens: keep / drop these token ids. dtype: the activations' dtype
            (None: as stored; int8 is always decoded).
        """
        name = self._layer_tensor(layer, site)
        dtype = dtypes.read_dtype(dtype)
        keep_segments = None if segments is None else self._segment_labels(segments)
        keep_tasks = None if tasks is None else task_filter(tasks)
        keep_positions = None if positions is None else integer_filter(positions, "positions")
        keep_tokens = None if tokens is None else integer_filter(tokens, "tokens")
        drop_tokens = None if exclude_tokens is None else integer_filter(exclude_tokens, "exclude_tokens")

        def read_shard(shard: Shard) -> TokenRecords | None:
            columns = shard.read_many(layout.TOKEN_COLUMNS)
            mask = np.ones(len(columns["token_ids"]), bool)
            if keep_segments is not None:
                mask &= np.isin(columns["segment"], keep_segments)
            if keep_tasks is not None:
                mask &= np.isin(columns["sample_index"], self._samples_of_tasks(shard, keep_tasks))
            if keep_positions is not None:
                mask &= np.isin(columns["position"], keep_positions)
            if keep_tokens is not None:
                mask &= np.isin(columns["token_ids"], keep_tokens)
            if drop_tokens is not None:
                mask &= ~np.isin(columns["token_ids"], drop_tokens)
            if not mask.any():
                return None
            everything = bool(mask.all())
            scale_name = layout.scale_tensor(layer, site) if self.storage_dtype == "int8" else None
            read = shard.read_many([name] if scale_name is None else [name, scale_name])
            values, scale = read[name], read.get(scale_name)
            if not everything:
                values = values[mask]
                scale = None if scale is None else scale[mask]
            activations = dtypes.decode(values, scale, dtype)
            rows = {k: v if everything else v[mask] for k, v in columns.items()}
            return TokenRecords(activations, **rows)

        # Shards are read READ_AHEAD at a time, in order: a store's latency is paid once per
        # READ_AHEAD shards, not once per shard.
        for records in map_ahead(read_shard, self.shards, READ_AHEAD):
            if records is not None:
                yield records

    def loader(self, layer: int, **options):
        """Shuffled batches of `layer`'s tokens for training, streamed with a bounded buffer,
        split over processes, resumable (`layertap.store.loader.Loader`, docs/format.md)."""
        from layertap.store.loader import Loader

        return Loader(self, layer, **options)

    def read_layer(self, layer: int, *, site: str = layout.DEFAULT_SITE, **filters) -> TokenRecords:
        """All (filtered) rows of a layer at a site in memory; for small runs and tests."""
        batches = list(self.iter_layer(layer, site=site, **filters))
        if not batches:
            dtype = filters.get("dtype", np.float32) or dtypes.NUMPY_DTYPES[self.storage_dtype]
            return TokenRecords.empty(self.shape(site) or (0,), dtype)
        return TokenRecords.concatenate(batches)

    def memmap(self, layer: int, site: str = layout.DEFAULT_SITE) -> list[np.memmap]:
        """`layer`'s stored rows at `site`, one read-only memmap per shard (local runs only).

        For int8 runs these are the codes; `shard.memmap(layout.scale_tensor(layer, site))`
        holds the per-row scales.
        """
        name = self._layer_tensor(layer, site)
        return [shard.memmap(name) for shard in self.shards]

    def _samples_of_tasks(self, shard: Shard, tasks: set[str]) -> np.ndarray:
        """The indices of a shard's samples whose task is one of `tasks` (from its sidecar)."""
        sidecar = self._sidecar(shard.entry["samples"])["samples"]
        return np.asarray([int(i) for i, meta in sidecar.items() if str(meta.get("task_id")) in tasks], np.int64)

    def _sidecar(self, key: str) -> dict:
        try:
            sidecar = read_json(self._store, key, "sample sidecar")
        except FileNotFoundError:
            raise LayerTapError(f"{self.uri}/{key}: the sample sidecar is missing; {RECOMPUTE}") from None
        if damage := sidecar_damage(sidecar):
            raise LayerTapError(f"{self.uri}/{key}: the sample sidecar is damaged ({damage}); {RECOMPUTE}")
        return sidecar

    def problems(self) -> list[str]:
        """Every shard's size and CRC32C against its commit record, every sidecar readable,
        the manifest against the commit records and the records against the plan's units:
        what is wrong, one line each (empty: the run is intact)."""
        found = self._index_problems()
        seen: set[str] = set()  # a split unit's parts share their sidecar and statistics: check them once
        for shard in self.shards:
            checks = [shard.verify]
            if shard.entry["samples"] not in seen:
                checks.append(lambda shard=shard: self._sidecar(shard.entry["samples"]))
            if "stats" in shard.entry and shard.entry["stats"]["key"] not in seen:
                checks.append(lambda shard=shard: read_stats_file(self._store, shard.entry["stats"]))
            seen |= {shard.entry["samples"], (shard.entry.get("stats") or {}).get("key")}
            for check in checks:
                try:
                    check()
                except LayerTapError as error:
                    found.append(str(error))
        return found

    def _index_problems(self) -> list[str]:
        """The manifest says what the commit records say (shards, units, tokens), and the
        records hold the plan's units, each once, each by the process it belongs to."""
        found = []
        try:  # a run still being written has its manifest built from the records: read them once
            records = read_commits(self._store) if self.finalized else self.manifest["shards"]
        except LayerTapError as error:
            return [str(error)]
        if self.finalized:  # one entry per shard file, as the manifest lists them
            records = [file for record in records for file in shard_files(record)]
        where = f"{self.uri}/{layout.MANIFEST_KEY}"
        listed = {entry["shard"]: entry for entry in self.manifest["shards"]}
        committed = {record["shard"]: record for record in records}
        for key in sorted(committed.keys() - listed.keys()):
            found.append(f"{where}: the committed shard {key} is not listed; {REFINALIZE}")
        for key in sorted(listed.keys() - committed.keys()):
            found.append(f"{where}: it lists the shard {key}, which no commit record names; {REFINALIZE}")
        for key in sorted(listed.keys() & committed.keys()):
            if any(listed[key].get(k) != committed[key][k] for k in ("units", "tokens", "bytes", "crc32c")):
                found.append(f"{where}: its entry of {key} differs from the shard's commit record; {REFINALIZE}")
        said, tokens = self.manifest.get("num_tokens"), sum(record["tokens"] for record in records)
        read = sum(entry.get("tokens", 0) for entry in self.manifest["shards"])
        if not said == tokens == read:
            found.append(
                f"{where}: num_tokens is {said}, its shards hold {read} and {tokens} are committed; {REFINALIZE}"
            )
        plan = self.meta.get("plan") or {}
        if "steps" in plan and "process_count" in plan:
            processes, units = plan["process_count"], plan["steps"] * plan["process_count"]
            seen: set = set()
            for record in records:
                for unit, _, _ in record["units"]:
                    if (
                        not isinstance(unit, int)
                        or not 0 <= unit < units
                        or unit % processes != record["process_index"]
                    ):
                        found.append(
                            f"{self.uri}: the commit record of {record['shard']} names unit {unit!r}, which is not one "
                            f"of process {record['process_index']}'s units of the plan ({units} units); the record is "
                            f"not LayerTap's: delete it and resume the run"
                        )
                    seen.add(unit)
            if self.finalized and (missing := units - len(seen & set(range(units)))):
                found.append(f"{self.uri}: {missing} of the plan's {units} units were never committed; resume the run")
        return found

    def verify(self) -> None:
        """Raise a LayerTapError naming what is damaged, if anything is."""
        found = self.problems()
        if found:
            more = (
                f" (and {len(found) - 1} more problems: `layertap verify {self.uri}` lists them)"
                if len(found) > 1
                else ""
            )
            raise LayerTapError(found[0] + more)

    def to_hf_dataset(self, layer: int, *, cache_dir: str | Path | None = None, dtype: str = "float32", **filters):
        """A Hugging Face `datasets.Dataset` of `layer` (columns: activation, token_id,
        sample_index, position, segment, cell), memory-mapped from Arrow files in `cache_dir`.
        `site=...` picks the site; a row's values are flattened (attn_z: heads x head size)."""
        try:
            import datasets
            import pyarrow as pa
        except ImportError:
            raise LayerTapError("to_hf_dataset needs the datasets package: pip install datasets") from None
        out = Path(cache_dir) if cache_dir is not None else Path(tempfile.mkdtemp(prefix="layertap-hf-"))
        out.mkdir(parents=True, exist_ok=True)
        parts = []
        for i, batch in enumerate(self.iter_layer(layer, dtype=dtype, **filters)):
            rows = np.ascontiguousarray(batch.activations).reshape(len(batch), -1)
            table = pa.table(
                {
                    "activation": pa.FixedSizeListArray.from_arrays(pa.array(rows.reshape(-1)), rows.shape[1]),
                    "token_id": batch.token_ids,
                    "sample_index": batch.sample_index,
                    "position": batch.position,
                    "segment": batch.segment,
                    "cell": pa.FixedSizeListArray.from_arrays(pa.array(batch.cell.reshape(-1)), 3),
                }
            )
            path = out / f"layer{layer}-{filters.get('site', layout.DEFAULT_SITE)}-{i:06d}.arrow"
            with pa.OSFile(str(path), "wb") as sink, pa.ipc.new_stream(sink, table.schema) as stream:
                stream.write_table(table)
            parts.append(datasets.Dataset.from_file(str(path)))
        if not parts:
            raise LayerTapError(f"{self.uri}: no rows of layer {layer} match the filters")
        return datasets.concatenate_datasets(parts)

    def _layer_tensor(self, layer: int, site: str) -> str:
        self._check_site(site)
        if isinstance(layer, bool) or layer not in self.layers:  # True == 1, but is no layer
            # "3" is not 3: say which it was
            raise LayerTapError(f"{self.uri}: layer {layer!r} was not extracted (layers: {self.layers})")
        return layout.layer_tensor(layer, site)

    def _check_site(self, site: str) -> None:
        if site not in self.sites:
            raise LayerTapError(f"{self.uri}: site {site!r} was not extracted (sites: {', '.join(self.sites)})")

    def _segment_labels(self, segments: Iterable[int | str] | int | str) -> np.ndarray:
        names = self.meta.get("segment_names") or {}
        if isinstance(names, list):
            names = {name: label for label, name in enumerate(names)}
        labels = []
        for segment in one_or_many(segments, "segments"):
            if isinstance(segment, bool) or not isinstance(segment, str | int | np.integer):  # int(2.7) would be 2
                raise LayerTapError(f"segments are names or integer labels, got {segment!r}")
            if isinstance(segment, str):
                if segment not in names:
                    raise LayerTapError(f"{self.uri}: unknown segment {segment!r} ({_known(segment, names)})")
                segment = names[segment]
            labels.append(int(segment))
        return np.asarray(labels, np.int64)


def _known(asked: str, names: Iterable[str]) -> str:
    """The segment names a run has, the numbered ones folded (an ARC run has example-1-input
    to example-50-input: one entry, not fifty), and the nearest to what was asked."""
    names = list(names)
    numbers = sorted({int(n) for name in names for n in re.findall(r"\d+", name)})
    folded = sorted({re.sub(r"\d+", "K", name) for name in names})
    span = f"; K: {numbers[0]}-{numbers[-1]}" if numbers else ""
    near = difflib.get_close_matches(asked, names, n=1)
    return (f"did you mean {near[0]!r}? " if near else "") + f"known: {', '.join(folded)}{span}"


def one_or_many(values, name: str) -> list:
    """A filter's values as a list: one value alone (a str or an int) is a list of one, so that
    "test-input" is one segment, not its letters."""
    if isinstance(values, str | int | np.integer):
        return [values]
    try:
        return list(values)
    except TypeError:  # 3.5, None inside a filter's place, an object
        raise LayerTapError(f"{name} must be one value or a list of them, got {values!r:.60}") from None


def task_filter(tasks: Iterable[str] | str) -> set[str]:
    """Task ids as strings: one id alone is a list of one."""
    return {str(task) for task in one_or_many(tasks, "tasks")}


def integer_filter(values: Iterable[int] | int, name: str) -> np.ndarray:
    """A filter of integers (token ids, positions) as int64; one int alone is a list of one. A
    string is refused: np.fromiter("12") would have read positions 1 and 2."""
    array = values if isinstance(values, np.ndarray) else np.asarray(one_or_many(values, name))
    if array.size and (array.dtype == bool or not np.issubdtype(array.dtype, np.integer)):
        raise LayerTapError(f"{name} must be integers, got {values!r:.60}")
    return array.astype(np.int64).reshape(-1)


def open_run(uri: str, *, checksums: bool = True) -> Run:
    """Open a run (local path or gs://). Before finalize_run, reads the committed shards.
    `checksums=False` skips the CRC32C check of what is read (trusted local copies)."""
    store = open_store(uri)
    root = store.local_path("")
    if root is not None and not root.is_dir():
        why = "a file" if root.exists() else "not there"
        raise LayerTapError(f"{uri} is {why}: a run is a directory (or gs:// prefix) that `layertap extract` wrote")
    try:
        manifest = read_json(store, layout.MANIFEST_KEY, "manifest")
        finalized = True
    except FileNotFoundError:
        manifest = build_manifest(read_run_info(store), read_commits(store))
        finalized = False
    if manifest.get("format") != layout.FORMAT:
        raise LayerTapError(f"{uri}/{layout.MANIFEST_KEY}: format {manifest.get('format')!r} is not {layout.FORMAT}")
    damage = manifest_damage(manifest)
    if damage and finalized:
        raise LayerTapError(
            f"{uri}/{layout.MANIFEST_KEY}: the manifest is damaged ({damage}); "
            "delete it and resume the run to write it again"
        )
    if damage:  # built from the commit records, which are checked: what is wrong came from run.json
        raise LayerTapError(f"{uri}/{layout.RUN_KEY}: the run's provenance is damaged ({damage}); restore the file")
    return Run(store, manifest, finalized, checksums)
