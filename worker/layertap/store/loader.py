"""Shuffled token batches of one layer and site for training (an SAE): `run.loader(...)`.

    loader = run.loader(12, batch_size=4096, seed=0, process_index=i, process_count=n)
    for batch in loader:            # [4096, D] float32 (numpy; format="jax" / "torch")
        ...
        saved = loader.state()      # a small JSON-able dict
    layertap.open(uri).loader(12, batch_size=4096, seed=0, ..., state=saved)  # the same next batch

How it shuffles, with memory bounded: each epoch permutes the shards (seeded by seed and
epoch) and hands them out to the processes, each shard to the process with the fewest
tokens so far (no overlap; the processes' tokens differ by at most a shard's). A process
cuts its shards into *windows* of consecutive shards whose rows fit in half of
`buffer_bytes`, reads a whole window (in the stored dtype, filtered), permutes its rows
(seeded by seed, epoch, process and window) and streams them as batches; the next window is
read in the background meanwhile, and the one after it as soon as this one is served to its
end, so at most two windows are held (local shards are memory-mapped, not read, their pages
read ahead: `Shard.memmap`). A thread builds batches `prefetch` ahead of the consumer.
Batches run across window ends, so every kept token is in exactly one batch per epoch (the
last batch of an epoch may be short unless drop_last). The position is (epoch, window, rows
of it consumed): resuming re-reads one window and skips into it. Rows within a batch keep the window's stored order
(sorted indices make the gather cheap; a batch's loss does not depend on its row order).

With `sharding` (format="jax"), each batch becomes a JAX array laid out by it, e.g.
`NamedSharding(mesh, P("data"))`: a process's batch is its part of the global batch
(`jax.make_array_from_process_local_data`). Every batch is then whole (a short one would not
split over the devices), and when the sharding spans several processes each gives the same
number of batches an epoch, the least any of them has, since every step is a collective.
"""

from __future__ import annotations

import logging
import math
import threading
from collections import deque
from collections.abc import Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from queue import Full, Queue

import crc32c
import numpy as np

from layertap.errors import LayerTapError
from layertap.io.ahead import map_ahead
from layertap.store import dtypes, layout
from layertap.store.reader import integer_filter, task_filter
from layertap.store.records import TokenRecords

log = logging.getLogger(__name__)

BUFFER_BYTES = 1 << 30  # rows held (two windows), in the stored dtype
READ_AHEAD = 8  # shards of a window read in parallel
STATE_FORMAT = "layertap-loader/1"
FORMATS = ("numpy", "jax", "torch")
PREFETCH = 2  # batches built ahead of the consumer
CHUNK_ROWS = 256  # rows gathered at a time before their dtype conversion (~0.5 MB at 896 x bfloat16)
ALIGNMENT = 64  # bytes: where XLA's CPU client takes host memory without a copy
_END = object()  # the producer's last item


@dataclass
class _Window:
    """The rows of a window's shards, as stored; `order`: the rows' permutation."""

    values: list[np.ndarray]  # per shard [n_s, *shape] in the stored dtype
    scales: list[np.ndarray | None]  # int8: per shard [n_s] float32
    columns: list[dict[str, np.ndarray]]
    starts: np.ndarray  # [shards + 1] row offsets of each shard in the window
    order: np.ndarray  # [rows] the window's rows in the order they are served
    nbytes: int

    def __len__(self) -> int:
        return int(self.starts[-1])


class Loader:
    """An iterator of shuffled token batches of one layer and site (module docstring)."""

    def __init__(
        self,
        run,
        layer: int,
        *,
        site: str = layout.DEFAULT_SITE,
        batch_size: int = 4096,
        shuffle: bool = True,
        seed: int = 0,
        dtype: np.dtype | str | None = np.float32,
        epochs: int | None = 1,
        drop_last: bool = False,
        process_index: int = 0,
        process_count: int = 1,
        buffer_bytes: int = BUFFER_BYTES,
        prefetch: int = PREFETCH,
        format: str = "numpy",
        columns: bool = False,
        segments: Iterable[int | str] | None = None,
        tasks: Iterable[str] | None = None,
        positions: Iterable[int] | None = None,
        exclude_tokens: Iterable[int] | None = None,
        sharding=None,
        state: dict | None = None,
    ) -> None:
        self.run = run
        self._tensor = run._layer_tensor(layer, site)  # a layer or site the run lacks: an error naming its own
        self._scale = layout.scale_tensor(layer, site) if run.storage_dtype == "int8" else None
        if not _is_count(batch_size) or batch_size < 1:
            raise LayerTapError(f"batch_size must be an integer of at least 1, got {batch_size!r}")
        if not _is_count(process_count) or process_count < 1:
            raise LayerTapError(f"process_count must be an integer of at least 1, got {process_count!r}")
        if not _is_count(process_index) or not 0 <= process_index < process_count:
            raise LayerTapError(
                f"process_index {process_index!r} is not an integer in 0..{process_count - 1} (process_count)"
            )
        if not run.shards:
            raise LayerTapError(f"{run.uri}: the run has no committed shards yet: nothing to load")
        if len(run.shards) < process_count:
            raise LayerTapError(
                f"{run.uri}: {len(run.shards)} shards for {process_count} processes: a loader's process reads whole "
                "shards, so some would get no tokens; use at most as many processes as shards"
            )
        if epochs is not None and (not _is_count(epochs) or epochs < 1):
            raise LayerTapError(f"epochs must be an integer of at least 1 (or None: forever), got {epochs!r}")
        if not _is_count(buffer_bytes) or buffer_bytes < 0:
            raise LayerTapError(f"buffer_bytes must be a number of bytes (an integer), got {buffer_bytes!r}")
        for name, flag in (("shuffle", shuffle), ("drop_last", drop_last), ("columns", columns)):
            if not isinstance(flag, bool | np.bool_):  # "no" would be true
                raise LayerTapError(f"{name} must be True or False, got {flag!r}")
        if format not in FORMATS:
            raise LayerTapError(f"format {format!r} is not one of {', '.join(FORMATS)}")
        if not _is_count(seed) or seed < 0:
            raise LayerTapError(f"seed must be a non-negative integer, got {seed!r}")
        # plain ints: the state is JSON
        self.layer, self.site, self.batch_size, self.shuffle = int(layer), site, int(batch_size), bool(shuffle)
        self.seed = int(seed)
        self.dtype, self.epochs = dtypes.read_dtype(dtype), None if epochs is None else int(epochs)
        self.drop_last = drop_last or sharding is not None  # a short batch would not split over the devices
        self.format, self.with_columns = format, columns
        self.process_index, self.process_count = int(process_index), int(process_count)
        self.buffer_bytes = int(buffer_bytes)
        if not _is_count(prefetch) or prefetch < 1:
            raise LayerTapError(f"prefetch must be an integer of at least 1, got {prefetch!r}")
        self.prefetch = prefetch
        self._segments = None if segments is None else run._segment_labels(segments)
        self._tasks = None if tasks is None else task_filter(tasks)
        self._positions = None if positions is None else integer_filter(positions, "positions")
        self._exclude = None if exclude_tokens is None else integer_filter(exclude_tokens, "exclude_tokens")
        self._filtered = any(f is not None for f in (self._segments, self._tasks, self._positions, self._exclude))
        shape = run.shape(site)
        self.sharding, self._even = sharding, False
        if sharding is not None:
            self._even = self._check_sharding(sharding, shape)
        self._widen_on_device = format == "jax" and _widen_on_device(run.storage_dtype, self.dtype, sharding)
        itemsize = dtypes.NUMPY_DTYPES[run.storage_dtype].itemsize
        columns_bytes = sum(
            np.dtype(dtype).itemsize * math.prod(shape) for dtype, shape in layout.TOKEN_COLUMNS.values()
        )
        # a row's bytes in a window: its values, int8 scale, and token columns when they are kept
        self.row_bytes = math.prod(shape) * itemsize + (4 if self._scale else 0) + (columns_bytes if columns else 0)
        # run.shards is what was committed when the run was opened: a run still being
        # written is read as far as that, and says so
        self.complete = bool(run.finalized)
        if not self.complete:
            log.warning(
                "%s is still being written (no manifest): the loader reads the %d shards committed when it was "
                "opened (processes that open it at other times may see other shards: finalize it for several)",
                run.uri,
                len(run.shards),
            )
        # The memory held: the rows of the windows in memory, in the stored dtype (accounted
        # as each shard arrives and leaves); a batch being built comes on top.
        self.held_bytes = 0
        self.peak_bytes = 0
        self._lock = threading.Lock()  # shards are read, and accounted, by several threads
        self._position = {"epoch": 0, "window": 0, "offset": 0}
        self._stopped_producer: threading.Thread | None = None  # an iteration's, stopped early, maybe still ending
        if state is not None:
            self._resume(state)

    def _check_sharding(self, sharding, shape: tuple[int, ...]) -> bool:
        """Refuse a sharding the batches cannot take; True when it spans several processes
        (which must then give the same number of batches)."""
        if self.format != "jax":
            raise LayerTapError(f"sharding lays out JAX arrays: use format='jax' with it, not {self.format!r}")
        import jax

        if not isinstance(sharding, jax.sharding.Sharding):
            raise LayerTapError(
                f"sharding must be a jax.sharding.Sharding, e.g. NamedSharding(mesh, P('data')), got {sharding!r:.60}"
            )
        processes = {device.process_index for device in sharding.device_set}
        if len(processes) > 1:
            here = (jax.process_index(), jax.process_count())
            if (self.process_index, self.process_count) != here:
                raise LayerTapError(
                    f"the sharding spans {len(processes)} JAX processes, so each loads its own part of every batch: "
                    f"open the loader with process_index=jax.process_index(), process_count=jax.process_count() "
                    f"({here[0]}, {here[1]} here), not {self.process_index}, {self.process_count}"
                )
            if self._filtered:
                raise LayerTapError(
                    "a sharding over several processes needs each process's batch count before reading, and "
                    "filters make it known only once read: filter when extracting (the extraction's positions "
                    "and segments) instead"
                )
        rows = self.batch_size * len(processes)
        try:
            where = sharding.devices_indices_map((rows, *shape))
        except ValueError as error:
            raise LayerTapError(
                f"a global batch of {rows} rows ({self.batch_size} a process) does not split over the sharding's "
                f"devices: make batch_size a multiple of their count along the batch axis ({error})"
            ) from None
        held: dict[int, set[int]] = {}  # the global batch's rows each process holds
        for device, index in where.items():
            held.setdefault(device.process_index, set()).update(range(rows)[index[0]])
        if any(len(mine) != self.batch_size for mine in held.values()):
            raise LayerTapError(
                f"the sharding must split the batch axis (the first) over the {len(processes)} processes, each "
                "holding its own rows (e.g. NamedSharding(mesh, P('data')) with 'data' over every device); "
                f"{sharding} gives a process {max(map(len, held.values()))} of the {rows} rows"
            )
        return len(processes) > 1

    # --- position -----------------------------------------------------------------------

    def _identity(self) -> dict:
        """What a saved state must agree on to resume to the same batches."""
        return {
            "uri": self.run.uri,
            "layer": self.layer,
            "site": self.site,
            "shards": len(self.run.shards),
            # which shards, not only how many: a run still being written changes under the same count
            "shards_crc32c": f"{crc32c.crc32c(chr(10).join(shard.key for shard in self.run.shards).encode()):08x}",
            "batch_size": self.batch_size,
            "shuffle": self.shuffle,
            "seed": self.seed,
            "process_index": self.process_index,
            "process_count": self.process_count,
            "buffer_bytes": self.buffer_bytes,
            "filters": {
                "segments": None if self._segments is None else self._segments.tolist(),
                "tasks": None if self._tasks is None else sorted(self._tasks),
                "positions": None if self._positions is None else self._positions.tolist(),
                "exclude_tokens": None if self._exclude is None else self._exclude.tolist(),
            },
        }

    def state(self) -> dict:
        """Where the loader stands, after the last batch it gave: a JSON-able dict that
        `run.loader(..., state=...)` resumes from, to the identical next batch."""
        return {"format": STATE_FORMAT, **self._position, **self._identity()}

    def _resume(self, state: dict) -> None:
        if not isinstance(state, dict) or state.get("format") != STATE_FORMAT:
            raise LayerTapError(f"the loader state is not a {STATE_FORMAT} state (use loader.state())")
        for key, value in self._identity().items():
            if key in ("uri",):  # a copy of the run elsewhere resumes the same
                continue
            if state.get(key) != value:
                raise LayerTapError(
                    f"the loader state was saved with {key}={state.get(key)!r}, this loader has {value!r}: "
                    "open the loader with the settings it was saved with"
                )
        position = {key: state.get(key) for key in ("epoch", "window", "offset")}
        for key, value in position.items():
            if not _is_count(value) or value < 0:
                raise LayerTapError(f"the loader state's {key} is {value!r}, not a count: use loader.state() as it is")
        if self.epochs is None or position["epoch"] < self.epochs:  # else: past the last epoch, nothing left
            count = len(self.windows(position["epoch"]))
            if position["window"] >= count:
                raise LayerTapError(
                    f"the loader state's window {position['window']} is past epoch "
                    f"{position['epoch']}'s windows of this process (0..{count - 1}): use loader.state() as it is"
                )
        self._position = position

    # --- the plan of an epoch -----------------------------------------------------------

    def _deal(self, epoch: int) -> tuple[list[int], list[int]]:
        """This process's shards in `epoch` (indices in run.shards, in reading order), and
        every process's tokens."""
        count = len(self.run.shards)
        order = np.random.default_rng([self.seed, epoch]).permutation(count) if self.shuffle else np.arange(count)
        tokens = [0] * self.process_count
        mine = []
        for index in order:  # each to the process with the fewest tokens so far (ties: the lowest index)
            process = min(range(self.process_count), key=lambda p: (tokens[p], p))
            tokens[process] += self.run.shards[index].entry["tokens"]
            if process == self.process_index:
                mine.append(int(index))
        return mine, tokens

    def shard_order(self, epoch: int) -> list[int]:
        """The indices (in run.shards) of this process's shards in `epoch`, in reading order."""
        return self._deal(epoch)[0]

    def windows(self, epoch: int) -> list[list[int]]:
        """This process's shards in `epoch` that it serves, cut into windows of at most half
        the buffer (at least one shard each). With a sharding over several processes, only
        the windows that hold the epoch's batches (`_epoch_plan`)."""
        return [shards for shards, _ in self._epoch_plan(epoch)]

    def _epoch_plan(self, epoch: int) -> list[tuple[list[int], int | None]]:
        """This process's windows in `epoch`: (shards, rows of it served; None: all). With a
        sharding over several processes, each serves as many whole batches as the process
        with the fewest tokens has (unfiltered, so a window's rows are its shards' tokens)."""
        mine, tokens = self._deal(epoch)
        cut = self._cut(mine)
        if not self._even:
            return [(shards, None) for shards in cut]
        left = min(tokens) // self.batch_size * self.batch_size
        if left == 0:
            raise LayerTapError(
                f"{self.run.uri}: in epoch {epoch} a process has {min(tokens)} tokens, fewer than a batch of "
                f"{self.batch_size}, and with a sharding over several processes each serves as many batches as "
                "the fewest: use a smaller batch_size or fewer processes"
            )
        plan = []
        for shards in cut:
            if left == 0:
                break
            rows = sum(self.run.shards[index].entry["tokens"] for index in shards)
            plan.append((shards, None if rows <= left else left))
            left -= min(rows, left)
        return plan

    def _cut(self, shards: list[int]) -> list[list[int]]:
        """Shards cut into windows of at most half the buffer (at least one shard each)."""
        out: list[list[int]] = []
        held = 0
        for index in shards:
            size = self.run.shards[index].entry["tokens"] * self.row_bytes
            if out and held + size <= self.buffer_bytes // 2:
                out[-1].append(index)
                held += size
            else:
                out.append([index])
                held = size
        return out

    # --- reading ------------------------------------------------------------------------

    def _account(self, nbytes: int) -> None:
        with self._lock:
            self.held_bytes += nbytes
            self.peak_bytes = max(self.peak_bytes, self.held_bytes)

    def _read_shard(self, index: int) -> tuple[np.ndarray, np.ndarray | None, dict[str, np.ndarray]]:
        """A shard's kept rows of the layer (as stored), their int8 scales, and their token
        columns (only when filters or `columns=True` need them: one request less a shard)."""
        shard = self.run.shards[index]
        columns = shard.read_many(layout.TOKEN_COLUMNS) if self._filtered or self.with_columns else {}
        mask = self._mask(shard, columns) if self._filtered else None
        names = [self._tensor] if self._scale is None else [self._tensor, self._scale]
        if mask is None and shard.local_path is not None:
            # a local shard is mapped, not read: the batches' gather is then the one copy
            values = shard.memmap(self._tensor, whole=True)
            scale = None if self._scale is None else shard.memmap(self._scale, whole=True)
        elif mask is not None and not mask.any():
            values = np.empty((0, *self.run.shape(self.site)), dtypes.NUMPY_DTYPES[self.run.storage_dtype])
            scale = np.empty(0, np.float32) if self._scale else None
            columns = {k: v[:0] for k, v in columns.items()}
        else:
            read = shard.read_many(names)
            values, scale = read[self._tensor], read.get(self._scale)
            if mask is not None:
                values, scale = values[mask], None if scale is None else scale[mask]
                columns = {k: v[mask] for k, v in columns.items()}
        columns = columns if self.with_columns else {}  # read for the filters only: not kept
        self._account(_nbytes(values, scale, columns))
        return values, scale, columns

    def _mask(self, shard, columns: dict[str, np.ndarray]) -> np.ndarray | None:
        """The rows the filters keep; None: all of them."""
        mask = None

        def keep(rows: np.ndarray) -> None:
            nonlocal mask
            mask = rows if mask is None else mask & rows

        if self._segments is not None:
            keep(np.isin(columns["segment"], self._segments))
        if self._positions is not None:
            keep(np.isin(columns["position"], self._positions))
        if self._exclude is not None:
            keep(~np.isin(columns["token_ids"], self._exclude))
        if self._tasks is not None:
            keep(np.isin(columns["sample_index"], self.run._samples_of_tasks(shard, self._tasks)))
        return mask

    def _read_window(self, epoch: int, number: int, shards: list[int]) -> _Window:
        read = list(map_ahead(self._read_shard, shards, READ_AHEAD))
        starts = np.concatenate([[0], np.cumsum([len(values) for values, _, _ in read])]).astype(np.int64)
        rows = int(starts[-1])
        if self.shuffle:
            seed = [self.seed, epoch, self.process_index, number]
            order = np.random.default_rng(seed).permutation(rows)
        else:
            order = np.arange(rows)
        nbytes = sum(_nbytes(*shard) for shard in read)
        return _Window([v for v, _, _ in read], [s for _, s, _ in read], [c for _, _, c in read], starts, order, nbytes)

    def _new_batch(self) -> dict[str, np.ndarray]:
        """Room for one batch's rows (and their scales and columns): in the dtype asked for,
        converted as they are gathered; int8 codes as stored (decoded with their scales)."""
        stored = dtypes.NUMPY_DTYPES[self.run.storage_dtype]
        as_stored = self._scale or self.dtype is None or self._widen_on_device
        target = stored if as_stored else np.dtype(self.dtype)
        room = {"values": _empty_aligned((self.batch_size, *self.run.shape(self.site)), target)}
        if self._scale:
            room["scale"] = np.empty(self.batch_size, np.float32)
        if self.with_columns:
            for name, (dtype, shape) in layout.TOKEN_COLUMNS.items():
                room[name] = np.empty((self.batch_size, *shape), dtype)
        return room

    def _take(self, window: _Window, rows: np.ndarray, room: dict[str, np.ndarray], at: int) -> None:
        """Copy the window's rows `rows` (sorted: each shard's are one run) into room[at:]."""
        bounds = np.searchsorted(rows, window.starts)
        for s in range(len(window.values)):
            local = rows[bounds[s] : bounds[s + 1]] - window.starts[s]
            if len(local) == 0:
                continue
            into = slice(at + bounds[s], at + bounds[s + 1])
            _gather(window.values[s], local, room["values"][into])
            if self._scale:
                _gather(window.scales[s], local, room["scale"][into])
            if self.with_columns:
                for name, column in window.columns[s].items():
                    _gather(column, local, room[name][into])

    # --- iteration ----------------------------------------------------------------------

    def __iter__(self) -> Iterator:
        """Batches from the loader's position (its start, or the state it was opened with).
        A thread builds them `prefetch` ahead of the consumer (the gather and the dtype
        conversion overlap the training step); each carries the position after it, which
        becomes the loader's state when the consumer takes it."""
        if self._stopped_producer is not None:  # an earlier iteration stopped early: its reads end first
            self._stopped_producer.join()  # (the memory held stays what one iteration holds)
            self._stopped_producer = None
        queue: Queue = Queue(maxsize=self.prefetch)
        stop = threading.Event()

        def put(item) -> bool:
            while not stop.is_set():
                try:
                    queue.put(item, timeout=0.1)
                    return True
                except Full:
                    continue
            return False

        def produce() -> None:
            background = ThreadPoolExecutor(2, thread_name_prefix="layertap-loader-read")  # two windows at once
            try:
                for item in self._batches(background):
                    if not put(item):
                        return
                put(_END)
            except BaseException as error:  # handed to the consumer, raised there
                put(error)
            finally:
                background.shutdown(wait=True, cancel_futures=True)

        thread = threading.Thread(target=produce, name="layertap-loader", daemon=True)
        thread.start()
        try:
            while True:
                item = queue.get()
                if item is _END or isinstance(item, BaseException):
                    thread.join()  # it has ended, or is about to
                    if item is _END:
                        return
                    raise item
                position, batch = item
                self._position = position
                if batch is not None:
                    yield batch
        finally:
            # Stopped early (a break, or the iterator dropped): the producer sees the flag and
            # ends by itself. Never wait for it here: the garbage collector may run this in any
            # thread, even one holding a lock the producer's reads need (a thread pool's), and
            # waiting there would deadlock. The next iteration waits for it instead.
            stop.set()
            if thread.is_alive():
                self._stopped_producer = thread

    def _plan(self, epoch: int, window: int) -> Iterator[tuple[int, int, list[int], int | None]]:
        """(epoch, window number, shards, rows served of it) from a position on, through the
        last epoch."""
        while self.epochs is None or epoch < self.epochs:
            plan = self._epoch_plan(epoch)
            for number in range(window, len(plan)):
                yield epoch, number, *plan[number]
            epoch, window = epoch + 1, 0

    def _batches(self, background: ThreadPoolExecutor) -> Iterator[tuple[dict, object]]:
        """(the position after a batch, the batch or None) from the loader's position on."""
        plan = self._plan(self._position["epoch"], self._position["window"])
        offset = self._position["offset"]

        def read_next() -> tuple[int, int, int | None, Future[_Window]] | None:
            step = next(plan, None)
            if step is None:
                return None
            epoch, number, shards, served_rows = step
            return epoch, number, served_rows, background.submit(self._read_window, epoch, number, shards)

        def read_ahead() -> None:
            if (step := read_next()) is not None:
                pending.append(step)

        # Windows held (served or being read): at most two. The next is read while one is
        # served, and the one after as soon as that one is served to its end.
        pending: deque[tuple[int, int, int | None, Future[_Window]]] = deque()
        read_ahead()
        room, filled = self._new_batch(), 0  # the batch being built
        served = 0  # rows of this epoch served so far (an epoch with none would loop forever)
        given = 0  # batches of this epoch given (an epoch whose rows are all dropped would loop too)
        whole = self._position["window"] == 0 and offset == 0  # `served` counts this epoch from its start
        while pending:
            epoch, number, served_rows, future = pending.popleft()
            window = future.result()
            end = len(window) if served_rows is None else served_rows  # the rows of it this epoch serves
            if offset and offset >= end:  # only a resumed state's first window has an offset here
                raise LayerTapError(
                    f"the loader state's offset {offset} is past the {end} rows of window {number} of epoch "
                    f"{epoch}: use loader.state() as it is"
                )
            if not pending:
                read_ahead()
            last_of_epoch = not pending or pending[0][0] != epoch
            while True:
                take = window.order[offset : min(end, offset + self.batch_size - filled)]
                offset += len(take)
                served += len(take)
                self._take(window, np.sort(take), room, filled)
                filled += len(take)
                done = offset >= end
                if done:  # what the batch needs of it is copied: it leaves memory now
                    self._account(-window.nbytes)
                    read_ahead()
                if filled < self.batch_size and not (done and last_of_epoch):
                    break  # the window is done; the batch goes on in the next one
                gives = filled == self.batch_size or (filled > 0 and not self.drop_last)
                given += gives
                if not done:
                    position = {"epoch": epoch, "window": number, "offset": offset}
                elif last_of_epoch:
                    if whole and served == 0:
                        raise LayerTapError(self._nothing_kept())
                    if whole and given == 0:  # all dropped (drop_last): epochs=None would loop forever
                        raise LayerTapError(self._less_than_a_batch(served))
                    position = {"epoch": epoch + 1, "window": 0, "offset": 0}
                    served, whole, given = 0, True, 0
                else:
                    position = {"epoch": epoch, "window": number + 1, "offset": 0}
                batch, rows = room, filled
                room, filled = self._new_batch(), 0
                if gives:
                    yield position, self._deliver({name: array[:rows] for name, array in batch.items()})
                else:  # nothing to give (drop_last), but the position moves on
                    yield position, None
                if done:
                    break
            offset = 0

    def _less_than_a_batch(self, rows: int) -> str:
        whose = f"process {self.process_index}'s shards hold" if self.process_count > 1 else "an epoch has"
        return (
            f"{self.run.uri}: {whose} {rows} tokens of layer {self.layer} ({self.site}), fewer than a batch of "
            f"{self.batch_size}, and drop_last drops the short one: no batch at all; use a smaller batch_size"
        )

    def _nothing_kept(self) -> str:
        whose = f" in process {self.process_index}'s shards" if self.process_count > 1 else ""
        return f"{self.run.uri}: no tokens of layer {self.layer} ({self.site}) match the loader's filters{whose}"

    def _deliver(self, batch: dict[str, np.ndarray]):
        values = batch["values"]  # converted when gathered; int8 codes are decoded here
        if self._scale:
            values = dtypes.decode(values, batch["scale"], self.dtype)
        columns = {name: batch[name] for name in layout.TOKEN_COLUMNS} if self.with_columns else None
        if self.format == "jax":
            import jax

            if self.sharding is None:
                # the batch's memory is this batch's alone: a CPU device takes it as it is
                values = jax.device_put(values, may_alias=True)
            else:  # this process's rows of the global batch
                values = jax.make_array_from_process_local_data(self.sharding, values)
            if self._widen_on_device:
                values = values.astype(self.dtype)
        elif self.format == "torch":
            try:
                import torch
            except ImportError:
                raise LayerTapError("format='torch' needs PyTorch: pip install torch") from None
            values = np.ascontiguousarray(values)
            if values.dtype == dtypes.NUMPY_DTYPES["bfloat16"]:  # numpy has no bfloat16 torch knows: its bits
                values = torch.from_numpy(values.view(np.int16)).view(torch.bfloat16)
            else:
                values = torch.from_numpy(values)
        if columns is None:
            return values
        return TokenRecords(values, **columns)


def _is_count(value) -> bool:
    return isinstance(value, int | np.integer) and not isinstance(value, bool)


def _widen_on_device(storage_dtype: str, dtype: np.dtype | None, sharding) -> bool:
    """Whether a JAX batch asked for as float32 goes to its accelerator as stored (16-bit
    floats) and is widened there, exactly: half the bytes cross the bus and the host makes no
    pass over them. For a CPU device the host converts as it gathers (one pass over the
    rows, not a gather and then a convert), and the device takes the batch's memory as it is."""
    if dtype != np.float32 or storage_dtype not in ("bfloat16", "float16"):
        return False
    import jax

    devices = jax.devices() if sharding is None else sharding.device_set
    return next(iter(devices)).platform != "cpu"


def _empty_aligned(shape: tuple[int, ...], dtype: np.dtype) -> np.ndarray:
    """np.empty, at a 64-byte boundary: XLA's CPU client uses such host memory in place
    (`jax.device_put(..., may_alias=True)`) instead of copying it."""
    nbytes = math.prod(shape) * dtype.itemsize
    raw = np.empty(nbytes + ALIGNMENT, np.uint8)
    start = -raw.ctypes.data % ALIGNMENT
    return raw[start : start + nbytes].view(dtype).reshape(shape)


def _gather(source: np.ndarray, rows: np.ndarray, out: np.ndarray) -> None:
    """out[:] = source[rows] (rows in range), cast to out's dtype in the same pass over the
    rows: they are gathered CHUNK_ROWS at a time into a buffer that stays in cache and cast
    from there, not written out whole and read back."""
    if source.dtype == out.dtype:
        np.take(source, rows, axis=0, out=out, mode="clip")  # "raise" would gather into a buffer, then copy
        return
    chunk = np.empty((min(CHUNK_ROWS, len(rows)), *source.shape[1:]), source.dtype)
    for start in range(0, len(rows), CHUNK_ROWS):
        part = rows[start : start + CHUNK_ROWS]
        np.take(source, part, axis=0, out=chunk[: len(part)], mode="clip")
        dtypes.cast_into(chunk[: len(part)], out[start : start + len(part)])


def _nbytes(values: np.ndarray, scale: np.ndarray | None, columns: dict[str, np.ndarray]) -> int:
    """The bytes a shard's rows hold in a window."""
    return values.nbytes + (0 if scale is None else scale.nbytes) + sum(c.nbytes for c in columns.values())
