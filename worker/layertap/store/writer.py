"""The shard writer: units of work in, durable size-bounded shards out.

    writer = open_writer(uri, meta, process_index, process_count)
    for unit in plan:
        if unit.id in writer.committed_units(): continue      # resume
        writer.add(unit.id, TokenRecords.of({site: acts_ln_, ...}, token_ids=..., sample_index=..., ...),
                   samples={index: sample.meta, ...})
    writer.close()
    finalize_run(uri)                                           # once, after all processes

`add` hands the unit to a bounded queue and returns; a packer thread encodes units into
the storage dtype and cuts shards of at most `shard_bytes` of tensor data (more only for a
single row larger than that); up to `parallel_shards` shard files are written or uploaded
at once, each streamed from the units' own arrays (no shard is assembled in memory;
bfloat16, float16 and float32 are written as handed over, without a copy). A unit may come
in parts (one per device that computed it), stored end to end.

Units that fit are packed whole, several to a shard, each shard with its commit record. A
unit larger than `shard_bytes` is cut by rows into part files of nearly equal size, each
within the bound, and committed as one: a single commit record names every part, written
once every part, the sidecar and the statistics are durable. Either way "unit committed"
is exactly "the commit record naming it exists"; a part file without its record is an
orphan that a resume overwrites and `finalize_run` deletes.

Memory held is bounded by the queue (at most `queue_units` units and `queue_bytes` bytes,
and always admits one unit) plus the units of (parallel_shards + 1) shard files: a split
unit's arrays are held until its last part is written. The samples' provenance goes to a
JSON sidecar per commit record, written before it.
"""

from __future__ import annotations

import contextlib
import hashlib
import itertools
import json
import logging
import math
import queue
import threading
from collections.abc import Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime

import crc32c
import numpy as np

from layertap.errors import LayerTapError, is_disk_full
from layertap.io import Store, open_store
from layertap.store import dtypes, layout, shardfile, statistics
from layertap.store.claim import claim, refuse_foreign_files
from layertap.store.index import read_json, scan_commits
from layertap.store.records import TokenRecords

log = logging.getLogger(__name__)

UnitId = int | str
_CLOSE = object()
_FLOAT_INPUTS = {np.dtype(np.float64), *(dtypes.NUMPY_DTYPES[name] for name in ("float32", "bfloat16", "float16"))}


@dataclass(frozen=True)
class WriterProgress:
    """What this writer has made durable since it was opened."""

    units: int = 0
    tokens: int = 0
    shards: int = 0
    bytes: int = 0


@dataclass
class _Unit:
    unit_id: UnitId
    parts: list[TokenRecords]  # stored end to end; activations: site -> [L, n, ...]
    samples: dict[int, dict]  # sample index -> provenance, for the samples of this unit
    stats: dict | None = None  # (site, layer) -> the statistics of its rows (store/statistics.py)

    @property
    def tokens(self) -> int:
        return sum(len(part) for part in self.parts)

    @property
    def nbytes(self) -> int:
        return sum(a.nbytes for part in self.parts for a in part.by_site().values())


def open_writer(
    uri: str,
    meta: Mapping,
    process_index: int = 0,
    process_count: int = 1,
    *,
    shard_bytes: int = 256 * 1024 * 1024,
    queue_units: int = 16,
    parallel_shards: int = 4,
    queue_bytes: int = 1024 * 1024 * 1024,
    own_commits_only: bool = False,
) -> ShardWriter:
    """Open (or resume) the run at `uri` for one process.

    meta: JSON-serialisable provenance of the run, stored in run.json and the manifest.
        It must hold `layers` (list of layer indices, in the order of the activations'
        first axis) and `storage_dtype` (float32, bfloat16, float16 or int8), and may
        hold `sites` (the sites of each unit's activations, in stored order; unset:
        resid_post alone); everything else (model, config hash, tokenizer, prompt
        settings, code version, ...) is kept as given. Resuming with a different meta is
        an error: a run has one provenance.
    own_commits_only: resume from this process's commit records alone (`committed_units()`
        is then its own units): when each process's units are its own, as an extraction's
        are, a restart costs each process its own commits, not the whole run's.
    """
    if not 0 <= process_index < process_count:
        raise ValueError(f"process_index {process_index} is not in [0, {process_count})")
    meta = _checked_meta(meta)
    store = open_store(uri)
    root = store.local_path("")
    if root is not None and root.exists() and not root.is_dir():
        raise LayerTapError(
            f"{uri} is a file: the output must be a directory (or gs:// prefix); choose another output.uri"
        )
    try:
        _claim_run(store, meta)
    except OSError as error:  # a file where the directory should be, no permission, a full disk
        raise LayerTapError(
            f"{uri}: cannot write the run here ({error.strerror or error}); choose another output.uri"
        ) from None
    return ShardWriter(
        store, meta, process_index, shard_bytes, queue_units, parallel_shards, queue_bytes, own_commits_only
    )


def _checked_meta(meta: Mapping) -> dict:
    for key in ("layers", "storage_dtype"):
        if key not in meta:
            raise ValueError(f"writer meta needs {key!r}")
    layers = list(meta["layers"])
    if not layers or not all(isinstance(layer, int) and layer >= 0 for layer in layers):
        raise ValueError(f"writer meta 'layers' must be non-negative ints, got {layers!r}")
    dtypes.check_storage_dtype(meta["storage_dtype"])
    sites = meta.get("sites", [layout.DEFAULT_SITE])
    if not sites or not all(isinstance(site, str) and site for site in sites) or len(set(sites)) != len(sites):
        raise ValueError(f"writer meta 'sites' must be distinct names, got {sites!r}")
    try:
        return json.loads(json.dumps(dict(meta), sort_keys=True))
    except TypeError as error:
        raise ValueError(f"writer meta must be JSON-serialisable: {error}") from None


def run_identity(meta: Mapping) -> str:
    """A digest of the run's meta: every commit record carries it, so a run's shards name
    their settings even without run.json."""
    return hashlib.sha256(json.dumps(meta, sort_keys=True, separators=(",", ":")).encode()).hexdigest()[:16]


def _refuse_other_runs_shards(uri: str, identity: str, records: Sequence[dict]) -> None:
    other = next((r for r in records if r.get("run", identity) != identity), None)
    if other is not None:
        raise LayerTapError(
            f"{uri}: its committed shards were written with other inputs or settings (their records name run "
            f"{other['run']}, these settings make run {identity}), and run.json, which would say what changed, is "
            "missing or was replaced. Resume with the settings the shards were written with, or write to a new "
            "output.uri"
        )


def _claim_run(store: Store, meta: dict) -> None:
    """Write run.json unless it exists; if it does, it must describe the same run. If it does
    not while shards are committed, they must be this run's (a committed record says)."""
    from layertap import __version__

    if not store.exists(layout.RUN_KEY):
        refuse_foreign_files(store, layout.OWN_NAMES, "a LayerTap run")
        committed = sorted(key for key in store.list(layout.COMMITS) if key.endswith(".json"))
        records = []
        with contextlib.suppress(LayerTapError, FileNotFoundError):  # a damaged record is the resume scan's
            records = [read_json(store, key, "commit record") for key in committed[:1]]
        _refuse_other_runs_shards(store.uri, run_identity(meta), records)

    info = {
        "format": layout.FORMAT,
        "writer": f"layertap {__version__}",
        "started": datetime.now(UTC).isoformat(timespec="seconds"),
        "meta": meta,
    }
    old = claim(store, layout.RUN_KEY, info, "a run", "run's provenance", compared=lambda doc: doc.get("meta") or {})
    if old is not None and old.get("format") != layout.FORMAT:
        raise LayerTapError(f"{store.uri}/{layout.RUN_KEY}: format {old.get('format')!r} is not {layout.FORMAT}")


class ShardWriter:
    def __init__(
        self,
        store: Store,
        meta: dict,
        process_index: int,
        shard_bytes: int,
        queue_units: int,
        parallel_shards: int,
        queue_bytes: int,
        own_commits_only: bool = False,
    ) -> None:
        self.uri = store.uri
        self._store = store
        self._layers: list[int] = meta["layers"]
        self._sites: list[str] = meta.get("sites", [layout.DEFAULT_SITE])
        self._storage_dtype: dtypes.StorageDtype = meta["storage_dtype"]
        self._process_index = process_index
        self._shard_bytes = shard_bytes
        self._shapes: dict[str, tuple[int, ...]] = {}  # site -> one token's shape, from the first unit

        # What earlier attempts made durable (every process's records, unless its own are
        # all it needs), and where this process's shard numbering resumes. A record whose
        # shard, sidecar or statistics are missing or damaged (read to know: a local run's
        # shards are hashed, every sidecar parsed) is not trusted: its units are computed
        # again (every process that reads it sees the same), and its owner deletes it.
        scan = scan_commits(store, process_index=process_index if own_commits_only else None, contents=True)
        self.untrusted = dict(scan.broken)  # commit key -> why: the units are recomputed
        self._identity = run_identity(meta)
        _refuse_other_runs_shards(self.uri, self._identity, scan.intact)
        self._committed = {unit_id for r in scan.intact for unit_id, _, _ in r["units"]}
        own_prefix = layout.commit_prefix(process_index) + "/"
        own = [r["seq"] for r in scan.intact if r["process_index"] == process_index]
        own += [layout.seq_of_commit_key(key) for key in scan.broken if key.startswith(own_prefix)]
        self._next_seq = max(own, default=-1) + 1
        for key, why in sorted(scan.broken.items()):
            log.warning("%s/%s: %s; its units will be computed again", store.uri, key, why)
            if key.startswith(own_prefix):
                store.delete(key)
        self._queued: set = set()

        self._lock = threading.Lock()
        self._progress = WriterProgress()
        self._error: BaseException | None = None
        self._queue: queue.Queue = queue.Queue(maxsize=queue_units)
        self._queue_bytes, self._queued_bytes = queue_bytes, 0  # the activations waiting in the queue
        self._room = threading.Condition(self._lock)
        self._slots = threading.BoundedSemaphore(parallel_shards)
        self._pool = ThreadPoolExecutor(parallel_shards, thread_name_prefix="layertap-shard")
        self._packer = threading.Thread(target=self._pack, name="layertap-packer", daemon=True)
        self._packer.start()
        self._closed = False

    # -- the caller's side ------------------------------------------------------------

    def committed_units(self) -> frozenset:
        """Unit ids that are durable: from earlier attempts (this process's alone, with
        `own_commits_only`) and from this writer so far."""
        with self._lock:
            return frozenset(self._committed)

    def progress(self) -> WriterProgress:
        with self._lock:
            return self._progress

    def add(
        self,
        unit_id: UnitId,
        records: TokenRecords | Sequence[TokenRecords],
        samples: Mapping[int, Mapping] | None = None,
        stats: Mapping | None = None,
    ) -> None:
        """Queue one unit: records with activations by site (meta `sites`), each
        [L, N, ...] (L = meta layers, in order); a bare [L, N, D] array is resid_post.
        A sequence of records is one unit in parts, stored end to end (views of larger
        buffers are fine: each layer's rows are written as they lie).

        samples: sample index -> JSON-serialisable provenance (task id, origin,
            augmentation, ...) for exactly the samples in `records.sample_index`; stored in
            the shard's sidecar (`Run.samples()` reads it back). None: nothing recorded.
        stats: (site, layer) -> the statistics of exactly these rows
            (`statistics.from_rows`), merged per shard into its statistics file
            (`Run.stats()` reads them back). None: the run keeps no statistics.

        Blocks while the queue is full (in units or bytes). The arrays must not be modified
        afterwards.
        Raises the error of a failed shard write, if any.
        """
        self._raise_if_failed()
        if self._closed:
            raise ValueError("add() after close()")
        if unit_id in self._committed or unit_id in self._queued:
            raise ValueError(f"unit {unit_id!r} was already written (check committed_units() before adding)")
        parts = [records] if isinstance(records, TokenRecords) else list(records)
        unit = self._checked_unit(unit_id, parts, samples)
        unit.stats = None if stats is None else dict(stats)
        self._queued.add(unit_id)
        size = unit.nbytes
        with self._room:
            while self._queued_bytes and self._queued_bytes + size > self._queue_bytes:
                self._room.wait(timeout=0.2)
                self._raise_if_failed()
            self._queued_bytes += size
        while True:
            try:
                self._queue.put(unit, timeout=0.2)
                return
            except queue.Full:
                self._raise_if_failed()

    def close(self) -> WriterProgress:
        """Write what is queued, wait until every shard is durable, and stop the threads."""
        if not self._closed:
            self._closed = True
            while self._packer.is_alive():
                try:
                    self._queue.put(_CLOSE, timeout=0.2)
                    break
                except queue.Full:
                    continue
            self._packer.join()
            self._pool.shutdown(wait=True)
        self._raise_if_failed()
        return self.progress()

    def __enter__(self) -> ShardWriter:
        return self

    def __exit__(self, *exc) -> None:
        # Units already handed over are complete: write them even when the caller failed.
        if exc[0] is None:
            self.close()
        else:
            with contextlib.suppress(Exception):  # the caller's exception is the one to see
                self.close()

    def _checked_unit(self, unit_id, parts: list[TokenRecords], samples) -> _Unit:
        if not isinstance(unit_id, (int, str)) or isinstance(unit_id, bool):
            raise ValueError(f"unit id must be an int or str, got {unit_id!r}")
        if not parts:
            raise ValueError(f"unit {unit_id!r}: no records")
        checked = []
        for records in parts:
            by_site = records.by_site()
            if sorted(by_site) != sorted(self._sites):
                raise ValueError(
                    f"unit {unit_id!r}: activations must hold the sites {self._sites}, got {sorted(by_site)}"
                )
            for site, acts in by_site.items():
                if acts.ndim < 3 or acts.shape[0] != len(self._layers):
                    raise ValueError(
                        f"unit {unit_id!r}: {site} activations must be [L={len(self._layers)}, N, ...], got "
                        f"{acts.shape}"
                    )
                if acts.dtype not in _FLOAT_INPUTS:
                    raise ValueError(f"unit {unit_id!r}: activations must be floating point, got {acts.dtype}")
                shape = self._shapes.setdefault(site, acts.shape[2:])
                if acts.shape[2:] != shape:
                    raise ValueError(
                        f"unit {unit_id!r}: {site} rows of shape {acts.shape[2:]} != {shape} of earlier units"
                    )
            try:
                checked.append(TokenRecords.of(by_site, **records.columns()))  # stored dtypes, one row per token
            except ValueError as error:
                raise ValueError(f"unit {unit_id!r}: {error}") from None
        sample_index = np.concatenate([records.sample_index for records in checked])
        return _Unit(unit_id, checked, _checked_samples(unit_id, samples, sample_index))

    def _raise_if_failed(self) -> None:
        if self._error is not None:
            error = self._error
            if isinstance(error, LayerTapError):
                raise error
            if is_disk_full(error):
                raise LayerTapError(
                    f"{self.uri}: writing a shard failed: the disk is full ({error.strerror}); free some space or "
                    "write elsewhere, then run the same command again: it resumes, the shards committed are kept"
                ) from error
            if isinstance(error, FileNotFoundError):  # its temporary file, or the directory, was deleted
                raise LayerTapError(
                    f"{self.uri}: writing a shard failed: {error.filename or 'a file being written'} was deleted "
                    "while it was written: is another run writing to (or finalizing) this output?"
                ) from error
            raise LayerTapError(f"{self.uri}: writing a shard failed: {error!r}") from error

    # -- the packer thread ------------------------------------------------------------

    def _pack(self) -> None:
        pending: list[tuple[_Unit, list[dict], list[dict]]] = []  # unit, per part: site -> values, site -> scales
        pending_bytes = 0
        try:
            while True:
                unit = self._queue.get()
                if unit is _CLOSE or self._error is not None:
                    break
                with self._room:
                    self._queued_bytes -= unit.nbytes
                    self._room.notify_all()
                values, scales, size = [], [], 0
                for part in unit.parts:
                    encoded = {site: dtypes.encode(acts, self._storage_dtype) for site, acts in part.by_site().items()}
                    values.append({site: v for site, (v, _) in encoded.items()})
                    scales.append({site: s for site, (_, s) in encoded.items()})
                    size += sum(v.nbytes for v, _ in encoded.values()) + sum(
                        s.nbytes for _, s in encoded.values() if s is not None
                    )
                    size += sum(c.nbytes for c in part.columns().values())
                if pending and pending_bytes + size > self._shard_bytes:
                    self._seal(pending)
                    pending, pending_bytes = [], 0
                if size > self._shard_bytes:  # larger than a shard alone: its parts, committed as one
                    self._seal_split(unit, values, scales, size)
                    continue
                pending.append((unit, values, scales))
                pending_bytes += size
                if pending_bytes >= self._shard_bytes:  # no unit fits beside these: write them now
                    self._seal(pending)
                    pending, pending_bytes = [], 0
            if pending and self._error is None:
                self._seal(pending)
        except BaseException as error:  # surfaced to the caller by add()/close()
            self._error = self._error or error

    def _seal(self, pending: list[tuple[_Unit, list[dict], list[dict]]]) -> None:
        seq = self._next_seq
        self._next_seq += 1
        self._slots.acquire()  # bounds the shards in memory / in flight
        future: Future = self._pool.submit(self._write_shard, seq, pending)
        future.add_done_callback(self._shard_done)

    def _seal_split(self, unit: _Unit, values: list[dict], scales: list[dict], size: int) -> None:
        """Write a unit larger than a shard as part files, the last to finish committing them."""
        seq = self._next_seq
        self._next_seq += 1
        bounds = part_bounds(unit.tokens, size // unit.tokens, self._shard_bytes)
        split = _Split(unit, seq, len(bounds) - 1)
        for k, (start, end) in enumerate(itertools.pairwise(bounds)):
            self._slots.acquire()
            if self._error is not None:  # a part failed: the unit stays uncommitted
                self._slots.release()
                return
            future: Future = self._pool.submit(self._write_part, split, k, _rows(unit, values, scales, start, end))
            future.add_done_callback(self._shard_done)

    def _shard_done(self, future: Future) -> None:
        self._slots.release()
        if future.exception() is not None and self._error is None:
            self._error = future.exception()

    # -- shard writer threads ---------------------------------------------------------

    def _write_stats(self, seq: int, units: list[dict | None]) -> dict | None:
        """The shard's statistics file (its units' merged), if its units have statistics."""
        if any(stats is None for stats in units):
            return None
        data = _stats_file(statistics.merge_all(units))
        key = layout.stats_key(self._process_index, seq)
        self._store.write(key, data)
        return {"key": key, "bytes": len(data), "crc32c": f"{crc32c.crc32c(data):08x}"}

    def _put_file(self, key: str, rows: list[_PartRows], units: list, part: tuple[int, int] | None = None) -> dict:
        """One shard file of these rows, streamed; its entry in the commit record."""
        # each tensor's chunks: the rows of every part of every unit, in order (one layer's rows
        # of a part are contiguous, whatever the part's own layout)
        tensors: dict[str, list[np.ndarray]] = {}
        for site in self._sites:
            for i, layer in enumerate(self._layers):
                tensors[layout.layer_tensor(layer, site)] = [r.values[site][i][r.start : r.end] for r in rows]
                if self._storage_dtype == "int8":
                    tensors[layout.scale_tensor(layer, site)] = [r.scales[site][i][r.start : r.end] for r in rows]
        for name in layout.TOKEN_COLUMNS:
            tensors[name] = [getattr(r.records, name)[r.start : r.end] for r in rows]
        metadata = {
            "format": layout.FORMAT,
            "layers": json.dumps(self._layers),
            "storage_dtype": self._storage_dtype,
            "units": json.dumps(units),
        }
        if self._sites != [layout.DEFAULT_SITE]:  # a resid_post run's shards stay as they always were
            metadata["sites"] = json.dumps(self._sites)
        if part is not None:  # [k, of]: the unit's rows go on in the next part
            metadata["part"] = json.dumps(list(part))
        shard = shardfile.ShardBytes(tensors, metadata)
        size, crc = self._store.put(key, shard.blocks(), crc32c=shard.crc32c)
        return {
            "shard": key,
            "bytes": size,
            "crc32c": crc,
            "tokens": sum(r.end - r.start for r in rows),
            "tensors": dict(sorted(shard.tensor_crcs.items())),  # CRC32C of each tensor: readers check what they read
        }

    def _write_shard(self, seq: int, pending: list[tuple[_Unit, list[dict], list[dict]]]) -> None:
        units, row = [], 0
        for unit, _, _ in pending:
            units.append([unit.unit_id, row, row + unit.tokens])
            row += unit.tokens
        rows = [r for unit, values, scales in pending for r in _rows(unit, values, scales, 0, unit.tokens)]
        file = self._put_file(layout.shard_key(self._process_index, seq), rows, units)
        self._commit(seq, [unit for unit, _, _ in pending], file, units)

    def _write_part(self, split: _Split, k: int, rows: list[_PartRows]) -> None:
        key = layout.part_key(self._process_index, split.seq, k)
        file = self._put_file(key, rows, [[split.unit.unit_id, 0, _file_rows(rows)]], (k, split.count))
        with self._lock:
            split.files[k] = file
            if any(f is None for f in split.files) or self._error is not None:
                return  # a part is still being written (it commits), or one failed (nothing commits)
        parts = [{key: f[key] for key in ("shard", "bytes", "crc32c", "tokens", "tensors")} for f in split.files]
        self._commit(split.seq, [split.unit], {"parts": parts}, [[split.unit.unit_id, 0, split.unit.tokens]])

    def _commit(self, seq: int, units: list[_Unit], files: dict, unit_rows: list) -> None:
        """The sidecar, the statistics and then the commit record of shard files now durable
        (`files`: a record's shard fields, or its `parts`), so a committed shard always has them."""
        shards = [files["shard"]] if "shard" in files else [part["shard"] for part in files["parts"]]
        samples_key = layout.samples_key(self._process_index, seq)
        samples = {str(index): meta for unit in units for index, meta in sorted(unit.samples.items())}
        sidecar = {"format": layout.FORMAT, "samples": samples}
        sidecar |= {"shard": shards[0]} if "shard" in files else {"shards": shards}
        self._store.write(samples_key, json.dumps(sidecar, sort_keys=True).encode())
        stats_entry = self._write_stats(seq, [unit.stats for unit in units])
        tokens = sum(unit.tokens for unit in units)
        record = files | {
            "samples": samples_key,
            "process_index": self._process_index,
            "seq": seq,
            "tokens": tokens,
            "hidden_size": math.prod(self._shapes[self._sites[0]]),
            "units": unit_rows,
            "run": self._identity,  # the run's settings, should run.json go
        }
        if self._sites != [layout.DEFAULT_SITE]:
            record["shapes"] = {site: list(self._shapes[site]) for site in self._sites}
        if stats_entry is not None:
            record["stats"] = stats_entry
        commit_key = layout.commit_key(self._process_index, seq)
        existing = self._store.create(commit_key, json.dumps(record, sort_keys=True).encode())
        if existing is not None and json.loads(existing) != record:
            raise LayerTapError(
                f"{self.uri}/{commit_key} was committed by another writer; "
                f"are two processes running with process_index {self._process_index}?"
            )
        size = sum(part["bytes"] for part in files.get("parts", [files]))
        with self._lock:
            self._committed.update(unit.unit_id for unit in units)
            p = self._progress
            self._progress = WriterProgress(
                p.units + len(units), p.tokens + tokens, p.shards + len(shards), p.bytes + size
            )


@dataclass
class _Split:
    """A unit larger than a shard whose parts are being written; the last one commits it."""

    unit: _Unit
    seq: int
    count: int
    files: list[dict | None] = field(default_factory=list)  # each part's entry, once durable

    def __post_init__(self) -> None:
        self.files = [None] * self.count


@dataclass(frozen=True)
class _PartRows:
    """Rows [start, end) of one part (device) of a unit, with their encoded values and scales."""

    records: TokenRecords
    values: dict  # site -> [L, n, ...] in the storage dtype
    scales: dict  # site -> [L, n] (int8) or None
    start: int
    end: int


def _rows(unit: _Unit, values: list[dict], scales: list[dict], start: int, end: int) -> list[_PartRows]:
    """The unit's rows [start, end), as slices of the parts they lie in."""
    out, offset = [], 0
    for records, v, s in zip(unit.parts, values, scales):
        n = len(records)
        lo, hi = max(start - offset, 0), min(end - offset, n)
        if lo < hi or (start, end) == (0, unit.tokens):  # a whole unit keeps its empty parts, as it always did
            out.append(_PartRows(records, v, s, lo, hi))
        offset += n
    return out


def _file_rows(rows: list[_PartRows]) -> int:
    return sum(r.end - r.start for r in rows)


def part_bounds(rows: int, row_bytes: int, shard_bytes: int) -> list[int]:
    """Where a unit of `rows` rows of `row_bytes` each is cut: the fewest parts of at most
    `shard_bytes` (one row each when a row is larger), of nearly equal rows."""
    per_part = max(1, shard_bytes // max(row_bytes, 1))
    count = -(-rows // per_part)
    return [rows * k // count for k in range(count + 1)]


def _stats_file(partials: dict) -> bytes:
    from safetensors.numpy import save

    return save(statistics.encode(partials), metadata={"format": layout.FORMAT})


def _checked_samples(
    unit_id: UnitId, samples: Mapping[int, Mapping] | None, sample_index: np.ndarray
) -> dict[int, dict]:
    if samples is None:
        return {}
    present = {int(i) for i in np.unique(sample_index)}
    given = {int(i) for i in samples}
    if given != present:
        raise ValueError(
            f"unit {unit_id!r}: samples must describe exactly the samples in sample_index; "
            f"missing {sorted(present - given)[:5]}, extra {sorted(given - present)[:5]}"
        )
    try:
        json.dumps(list(samples.values()))
    except (TypeError, ValueError) as error:
        raise ValueError(f"unit {unit_id!r}: sample provenance must be JSON-serialisable: {error}") from None
    return {int(i): dict(meta) for i, meta in samples.items()}
