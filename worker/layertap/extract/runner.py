"""The extraction loop: one code path for one process or many.

prepare(): model, tokenizer, dataset, kept-token masks and the global plan, computed the
same way on every process. execute(): steps of the plan on the mesh; each step's stored
values are gathered on device into a compact buffer (`compact.py`) whose copy to the host
runs while the next steps compute, then this process's part goes to the shard writer
(background threads, bounded queue) as views of that buffer. A step is a unit of work per
process; a restart skips the units already durable.
"""

from __future__ import annotations

import functools
import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

from layertap.data.dataset import Dataset
from layertap.data.sample import Sample
from layertap.datasets import load_dataset
from layertap.errors import LayerTapError
from layertap.estimate import describe as describe_estimate
from layertap.estimate import estimate
from layertap.extract import batch as host
from layertap.extract import compact
from layertap.extract import prices as plan_prices
from layertap.extract.plan import Plan, make_plan, steps_to_run, unit_id, units_done
from layertap.extract.step import make_step
from layertap.humanize import human_bytes, plural
from layertap.io import open_store
from layertap.io.fingerprint import fingerprints
from layertap.io.store import free_bytes
from layertap.model import DecoderConfig, LayerTap, load_tokenizer, make_extract_fn, special_token_ids
from layertap.model.checkpoint import checkpoint_files, load_params, resolve_checkpoint_dir
from layertap.model.tap import site_shape
from layertap.run.compile_cache import CompilationCache, open_for_run
from layertap.run.context import RunContext
from layertap.run.devices import present_devices
from layertap.run.distributed import Distributed
from layertap.run.loop import dispatch_ahead
from layertap.run.mesh import DATA, MODEL, global_batch, host_rows, local_rows, make_mesh, param_shardings
from layertap.run.metrics import WorkerMetrics
from layertap.run.progress import Progress
from layertap.run.stopping import StopRequest
from layertap.store import dtypes, statistics
from layertap_api import status
from layertap_api.spec import WorkerSpec

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Prepared:
    job: WorkerSpec
    checkpoint: Path  # the model's local directory (a gs:// model is fetched once, here)
    checkpoint_files: dict[str, dict]  # file -> {"bytes", "crc32c"}: the model's identity by content
    config: DecoderConfig  # read once, here
    tap: LayerTap  # layers and sites, resolved once, here: the forward, the loaded blocks and the stored order
    dataset: Dataset
    samples: dict[int, Sample]  # the samples with at least one kept token, by index
    keep: dict[int, np.ndarray]  # sample index -> [T] bool kept tokens
    plan: Plan
    rows_stored: int  # activation rows the whole run stores
    capacities: tuple[int, ...]  # per step: the entries each device's compact output holds (compact.py)
    data_devices: int

    @property
    def positions(self) -> str:
        """extraction.positions: all, last or mean."""
        return self.job.extraction.positions

    @property
    def layers(self) -> tuple[int, ...]:
        return self.tap.layers

    @property
    def site_widths(self) -> list[int]:
        """Values one token stores at each site of one layer."""
        return [math.prod(site_shape(site, self.config)) for site in self.tap.sites]

    def moved_bytes(self) -> int:
        """Bytes the devices hand to the hosts: every step's compact outputs, spare room included."""
        itemsize = dtypes.producer_dtype(self.job.extraction.storage_dtype).itemsize
        per_entry = len(self.layers) * sum(self.site_widths) * itemsize
        return sum(self.capacities) * self.data_devices * per_entry

    def disk_bytes(self) -> int:
        per_row = dtypes.stored_bytes_per_row(self.job.extraction.storage_dtype, len(self.layers), self.site_widths)
        return self.rows_stored * per_row

    def describe(self, setup: Distributed, devices: int) -> str:
        """What the run will do and write, and roughly how much disk it needs."""
        job, plan, config = self.job, self.plan, self.config
        limits = f"; {self.dataset.limit_report}" if self.dataset.limit_report else ""
        specials = "excluded" if job.extraction.exclude_special_tokens else "kept"
        model = f"{config.num_hidden_layers} layers, hidden {config.hidden_size}, {job.model.dtype}"
        widths = " + ".join(map(str, self.site_widths))
        lines = [
            f"layertap extract: {job.model.uri} ({model})",
            f"  dataset   {job.dataset.uri} ({job.dataset.format}): {plural(len(self.samples), 'sample')}, "
            f"{plan.useful_tokens} tokens{limits}",
            f"  layers    {list(self.layers)}; sites {', '.join(self.tap.sites)}; positions {self.positions}; "
            f"special tokens {specials}",
            f"  plan      {plural(plan.num_steps, 'step')} of {plan.describe_shapes()} rows x tokens "
            f"({plural(len(plan.shapes), 'compiled shape')}, {plan.padding_fraction:.1%} padding; "
            f"{plural(self.compact_programs, 'compaction program')}, {self.capacity_slack:.1%} spare); "
            f"{setup}; {plural(devices, 'device')}",
            f"  writes    {self.rows_stored} rows x {plural(len(self.layers), 'layer')} x {widths} "
            f"({job.extraction.storage_dtype}) = about {human_bytes(self.disk_bytes())} to {job.output.uri}",
        ]
        return "\n".join(lines)

    @property
    def compact_programs(self) -> int:
        """What the gathers compile: per (shape, capacity) of the steps, and a buffer per capacity."""
        return compact.Gather.programs(list(zip(self.plan.step_shapes, self.capacities, strict=True)))

    @property
    def capacity_slack(self) -> float:
        """Entries moved to the host beyond those stored, as a fraction of those moved."""
        moved = sum(c * self.data_devices for c in self.capacities)
        return 1.0 - self.rows_stored / moved if moved else 0.0

    def writer_meta(self, process_count: int) -> dict:
        job, plan = self.job, self.plan
        return {
            "layers": list(self.layers),
            **self.tap.sites_entry(),
            "storage_dtype": job.extraction.storage_dtype,
            "hidden_size": self.config.hidden_size,
            "model": {
                "uri": job.model.uri,
                "dtype": job.model.dtype,
                "config": self.config.to_hf_dict(),
                "files": self.checkpoint_files,
            },
            "dataset": {**job.dataset.to_wire(), "files": self.dataset.files},
            # what to do on NaN is no part of what the run holds: an attempt may change it
            "extraction": {k: v for k, v in job.extraction.to_wire().items() if k != "onNonFinite"},
            "segment_names": {name: label for label, name in sorted(self.dataset.segment_names.items())},
            "plan": {
                "fingerprint": plan.fingerprint(),
                "steps": plan.num_steps,
                "rows_per_step": plan.rows_per_step,
                "shapes": [list(shape) for shape in plan.shapes],
                "process_count": process_count,
                "unit": "step * process_count + process_index",
            },
        }


def prepare(job: WorkerSpec) -> Prepared:
    """Everything every process computes identically before the first step."""
    checkpoint = resolve_checkpoint_dir(job.model.uri)
    config = DecoderConfig.from_file(checkpoint / "config.json")
    files = fingerprints(open_store(str(checkpoint)), checkpoint_files(checkpoint))
    tap = LayerTap.for_model(
        job.extraction.layers, config.num_hidden_layers, model=job.model.uri, sites=job.extraction.sites
    )
    tokenizer = load_tokenizer(checkpoint)
    dataset = load_dataset(job.dataset, tokenizer)

    excluded = np.array(sorted(special_token_ids(tokenizer)) if job.extraction.exclude_special_tokens else [], np.int32)
    segments = None if job.extraction.segments is None else dataset.segment_labels(job.extraction.segments)
    keep = {s.index: host.keep_mask(s, excluded, segments) for s in dataset.samples}
    samples = {s.index: s for s in dataset.samples if keep[s.index].any()}
    if not samples:
        raise LayerTapError(
            f"dataset {job.dataset.uri}: no sample has a token left to store after the exclusions; "
            "select more extraction.segments, or set extraction.excludeSpecialTokens: false"
        )
    lengths = {i: len(s.token_ids) for i, s in samples.items()}
    data_devices = make_mesh(job.mesh, config.num_attention_heads, config.num_key_value_heads).shape[DATA]
    if job.extraction.batch_size % data_devices:
        raise LayerTapError(
            f"extraction.batchSize: {job.extraction.batch_size} rows per step do not split over the {data_devices} "
            f"data-parallel devices; use a multiple of {data_devices}"
        )
    plan = make_plan(
        lengths,
        job.extraction.batch_size,
        plan_prices.attention_weight(config),
        row_multiple=data_devices,
        shape_tokens=plan_prices.compile_tokens(config, tap.blocks_to_run),
        step_tokens=CPU_STEP_TOKENS if jax.default_backend() == "cpu" else None,
    )
    stored = {i: int(keep[i].sum()) if job.extraction.positions == "all" else 1 for i in samples}
    capacities = compact.step_capacities([s.rows for s in plan.steps], plan.step_shapes, stored, data_devices)
    kept = {i: keep[i] for i in samples}
    return Prepared(
        job,
        checkpoint,
        files,
        config,
        tap,
        dataset,
        samples,
        kept,
        plan,
        sum(stored.values()),
        tuple(capacities),
        data_devices,
    )


@dataclass
class StepTimes:
    """Seconds spent per phase, summed over steps (the benchmark's breakdown)."""

    prepare: float = 0.0  # building the host batch and its global arrays
    compute: float = 0.0  # waiting for the device: compute not hidden behind host work
    device_to_host: float = 0.0  # waiting for the compact output's copy, once computed
    select: float = 0.0  # the unit's records (views) and statistics on the host
    write: float = 0.0  # handing units to the writer (blocks only when its queue is full)
    steps: int = 0

    PHASES = ("prepare", "compute", "device_to_host", "select", "write")

    def per_step_ms(self) -> dict[str, float]:
        n = max(self.steps, 1)
        return {phase: getattr(self, phase) / n * 1e3 for phase in self.PHASES}

    def per_step(self) -> str:
        return ", ".join(f"{phase} {ms:.2f} ms" for phase, ms in self.per_step_ms().items())

    def add(self, **seconds: float) -> None:
        for phase, value in seconds.items():
            setattr(self, phase, getattr(self, phase) + value)
        self.steps += 1


@dataclass
class RunSummary:
    steps_run: int
    steps_skipped: int
    useful_tokens: int  # tokens of the steps run
    seconds: float
    padding_fraction: float
    times: StepTimes = field(default_factory=StepTimes)
    compile_seconds: float = 0.0  # included in seconds
    flush_seconds: float = 0.0  # included in seconds: waiting for the last shards after the last step
    stopped: str = ""  # what stopped the run early (e.g. SIGTERM); the committed units are kept

    @property
    def tokens_per_second(self) -> float:
        """Useful tokens per second of the steady state (compilation left out)."""
        steady = self.seconds - self.compile_seconds
        return self.useful_tokens / steady if steady > 0 else 0.0


@dataclass
class InFlight:
    """A step dispatched and not yet handed to the writer."""

    step: int
    batch: host.HostBatch
    stored: dict[str, jax.Array]  # site -> [L, data, capacity, ...]: on its way to the host
    stats: dict  # site -> field -> [L, rows, ...]
    # Hands the gather's buffers back for a later step's gather, once this step is finished.
    # At the same step on every process (the programs they launch stay the same); a buffer the
    # writer still views (a CPU's) is copied by JAX instead of reused, never overwritten.
    release: Callable[[], None] = lambda: None


class UnitSink:
    """The host end of a step: wait for its output, pick this process's records, hand them
    to the writer, and count samples as done once their unit is durable."""

    def __init__(
        self,
        prepared: Prepared,
        writer,
        progress: Progress,
        mine: Callable[[int], slice],  # a step's row count -> the block of its rows this process holds
        process: int,
        processes: int,
        metrics: WorkerMetrics | None = None,
    ) -> None:
        self.prepared, self.writer, self.progress, self.mine = prepared, writer, progress, mine
        self.metrics = metrics
        self.unit = lambda step: unit_id(step, process, processes)
        self.times = StepTimes()
        self._in_flight: dict[int, int] = {}  # unit id -> step, handed to the writer, not yet durable
        self._saw_non_finite = False

    def my_rows(self, step: int) -> tuple[tuple[int, ...], ...]:
        """The rows of a step that this process's devices hold."""
        rows = self.prepared.plan.steps[step].rows
        return rows[self.mine(len(rows))]

    def first_block(self, step: int) -> int:
        """The data index of this process's first device (its devices hold consecutive blocks)."""
        rows = len(self.prepared.plan.steps[step].rows)
        return self.mine(rows).start // (rows // self.prepared.data_devices)

    def finish(self, flight: InFlight, write: bool) -> None:
        prepared, plan, step, batch = self.prepared, self.prepared.plan, flight.step, flight.batch
        t0 = time.perf_counter()
        jax.block_until_ready(flight.stats)  # computed with the activations, a small copy
        t1 = time.perf_counter()
        first = self.first_block(step)
        parts = compact.host_parts(flight.stored, {first + b: len(e) for b, e in enumerate(batch.entries)})
        t2 = time.perf_counter()
        if write:
            records = [entries.records(part) for entries, part in zip(batch.entries, parts, strict=True)]
            samples = {index: meta for entries in batch.entries for index, meta in entries.samples.items()}
            stats = {
                (site, layer): partial
                for site, partials in host_rows(flight.stats).items()
                for layer, partial in zip(prepared.layers, statistics.from_rows(partials, batch.places), strict=True)
            }
            self._check_finite(step, stats)
            t3 = time.perf_counter()
            self.writer.add(self.unit(step), records, samples, stats=stats or None)
            self._in_flight[self.unit(step)] = step
        else:  # this process's unit is durable from an earlier attempt; another process's is not
            t3 = time.perf_counter()
            self._committed([step])
        flight.release()
        t4 = time.perf_counter()
        self.times.add(compute=t1 - t0, device_to_host=t2 - t1, select=t3 - t2, write=t4 - t3)
        self.progress.computed(plan.step_tokens(step))
        if self.metrics is not None:
            self.metrics.step(plan.step_tokens(step), t4 - t0)
        durable = self.writer.committed_units()
        self._durable([u for u in self._in_flight if u in durable])

    def _check_finite(self, step: int, stats: dict) -> None:
        """Stored values that are NaN or infinite make their rows' norms so: the statistics
        computed on device with the step show them, at no cost of their own."""
        bad = [key for key, partial in stats.items() if not np.isfinite(partial["norm_sum"][0])]
        if not bad:
            return
        policy = self.prepared.job.extraction.on_non_finite
        if self._saw_non_finite and policy == "warn":
            return
        (site, layer), more = bad[0], f" and {plural(len(bad) - 1, 'other layer or site')}" if len(bad) > 1 else ""
        where = f"layer {layer} {site}{more} from step {step}"
        if policy == "fail":
            raise LayerTapError(
                f"stored values of {where} are NaN or infinite (are the checkpoint's weights finite?); "
                "extraction.onNonFinite: fail stops the run (warn goes on)"
            )
        log.warning("stored values of %s are NaN or infinite (are the checkpoint's weights finite?)", where)
        self.progress.saw_non_finite(where)
        self._saw_non_finite = True

    def all_durable(self) -> None:
        """After the writer closed: every unit handed over is durable."""
        self._durable(list(self._in_flight))

    def _durable(self, units: list[int]) -> None:
        self._committed([self._in_flight.pop(u) for u in units])

    def _committed(self, steps: list[int]) -> None:
        if not steps:
            return
        plan, written = self.prepared.plan, self.writer.progress()
        tokens = sum(plan.step_tokens(s) for s in steps)
        self.progress.committed(sum(plan.step_samples(s) for s in steps), tokens, written.shards, written.bytes)
        if self.metrics is not None:
            self.metrics.committed(tokens, written.bytes)


def execute(prepared: Prepared, context: RunContext | None = None) -> RunSummary:
    """Run the plan's remaining steps on this process's devices, then finalize the run. When
    `context.stop` is set, stop at the next step boundary: what was computed becomes durable,
    the run is not finalized (a rerun resumes it)."""
    from layertap.store.index import finalize_run
    from layertap.store.writer import open_writer

    context = context or RunContext()
    job, plan, config = prepared.job, prepared.plan, prepared.config
    process, processes = context.process_index, context.process_count
    reporter, stop = context.reporter, context.stop
    mesh = make_mesh(job.mesh, config.num_attention_heads, config.num_key_value_heads)
    if process == 0:
        expected = estimate(prepared, present_devices(job.devices))
        print(
            prepared.describe(context.setup, jax.device_count()) + f"\n  estimate  {describe_estimate(expected)}",
            flush=True,
        )
        if reporter is not None:
            reporter.update(status.Progress(estimate=expected))  # before the first step: kubectl describe shows it
    cache = open_for_run(job.output, process)
    params, step_fn = _load_step(prepared, mesh)  # before anything is written: a bad checkpoint fails here

    _check_process_count(job.output.uri, processes)
    meta = prepared.writer_meta(processes)
    # A process's units are its own (the process count of a run never changes): its writer
    # reads its own commit records alone, and the processes share which of their units are
    # durable, so that every process derives the same steps to run.
    writer = open_writer(
        job.output.uri, meta, process, processes, shard_bytes=job.output.shard_size_mb * 2**20, own_commits_only=True
    )
    mine_done = units_done(plan.num_steps, writer.committed_units(), process, processes)
    todo = steps_to_run(context.all_gather(mine_done))
    skipped = sorted(set(range(plan.num_steps)) - set(todo))
    if process == 0 and (warning := disk_space_warning(prepared, todo, free_bytes(job.output.uri))):
        log.warning(warning)
    progress = Progress(
        samples_total=len(prepared.samples),
        tokens_total=plan.useful_tokens,
        samples_done=sum(plan.step_samples(s) for s in skipped),
        tokens_done=sum(plan.step_tokens(s) for s in skipped),
        process_count=processes,
        show_bar=context.show_progress and process == 0,
        reporter=reporter if process == 0 else None,
    )
    mine = functools.cache(functools.partial(local_rows, mesh))
    sink = UnitSink(prepared, writer, progress, mine, process, processes, context.metrics)
    started = time.perf_counter()
    with writer:
        compile_seconds, ran = _run_steps(prepared, mesh, params, step_fn, todo, mine_done, sink, stop, cache)
        flush_started = time.perf_counter()
    flush_seconds = time.perf_counter() - flush_started  # the writer's last shards becoming durable
    sink.all_durable()
    progress.close()
    if cache is not None:
        cache.close()
    seconds = time.perf_counter() - started
    summary = RunSummary(
        steps_run=len(ran),
        steps_skipped=len(skipped),
        useful_tokens=sum(plan.step_tokens(s) for s in ran),
        seconds=seconds,
        padding_fraction=plan.padding_fraction,
        times=sink.times,
        compile_seconds=compile_seconds,
        flush_seconds=flush_seconds,
        stopped=context.stopped,
    )
    if stop:
        return summary  # the other processes are stopping too: no barrier, no finalize

    context.barrier("all units durable")
    if process == 0:
        manifest = finalize_run(job.output.uri)
        print(
            f"layertap extract: wrote {manifest['num_tokens']} rows in {plural(manifest['num_shards'], 'shard')} "
            f"({human_bytes(manifest['total_bytes'])}) to {job.output.uri}",
            flush=True,
        )
    return summary


def disk_space_warning(prepared: Prepared, todo: list[int], free: int | None) -> str | None:
    """A warning when the steps left would write more than the output's disk has free (a
    full disk stops the run midway: resumable, but hours may go by first)."""
    plan = prepared.plan
    left = prepared.disk_bytes() * sum(plan.step_tokens(s) for s in todo) // max(plan.useful_tokens, 1)
    if free is None or left <= free:
        return None
    return (
        f"{prepared.job.output.uri}: the steps left write about {human_bytes(left)}, and its disk has "
        f"{human_bytes(free)} free: the run will stop when the disk is full (the same command then resumes it)"
    )


def _load_step(prepared: Prepared, mesh):
    """The parameters on the mesh and the jitted step."""
    job, config, tap = prepared.job, prepared.config, prepared.tap
    compute_dtype = jnp.dtype(job.model.dtype)
    out_dtype = jnp.dtype(dtypes.producer_dtype(job.extraction.storage_dtype))
    # pooled modes reduce in float32 on device before the cast to the storage dtype
    extract_fn = make_extract_fn(config, tap, compute_dtype, out_dtype if prepared.positions == "all" else jnp.float32)
    # only the blocks up to the last tapped layer: the decoder never runs the others
    params = load_params(
        prepared.checkpoint, config, compute_dtype, sharding=NamedSharding(mesh, P()), blocks=tap.blocks_to_run
    )
    shardings = param_shardings(params, mesh)
    if mesh.shape[MODEL] > 1:
        params = jax.device_put(params, shardings)
    return params, make_step(extract_fn, prepared.positions, out_dtype, mesh, shardings)


def _run_steps(
    prepared: Prepared,
    mesh,
    params,
    step_fn,
    todo: list[int],
    mine_done: list[bool],
    sink: UnitSink,
    stop: StopRequest | None,
    cache: CompilationCache | None = None,
    memory_kind: str | None = "auto",
    gather: compact.Gather | None = None,
) -> tuple[float, list[int]]:
    """Dispatch steps up to IN_FLIGHT ahead of the one being finished, until done or asked to
    stop; returns compile seconds and the steps run. Each new program goes to the cache at once.

    A step is two programs: the forward (one per shape) and the gather of what it stores (one
    per shape and capacity), whose output starts for the host at once: into `memory_kind`
    ("auto": pinned memory on an accelerator, none on a CPU; benchmarks force one, and may
    give a stand-in for the gather)."""
    plan = prepared.plan
    gather = gather or compact.Gather(mesh)
    if memory_kind == "auto":
        memory_kind = compact.host_memory_kind(jax.local_devices()[0])
    compile_seconds, compiled = 0.0, set()

    def dispatch(step: int) -> InFlight:
        nonlocal compile_seconds
        t0 = time.perf_counter()
        shape, capacity = plan.steps[step], prepared.capacities[step]
        rows = sink.my_rows(step)
        blocks = len(rows) * prepared.data_devices // len(shape.rows)  # this process's devices
        batch = host.build_batch(
            rows,
            prepared.samples,
            prepared.keep,
            shape.row_length,
            shape.max_per_row,
            prepared.positions,
            blocks,
            capacity,
        )
        arrays = global_batch(batch.arrays(), mesh, len(shape.rows))
        take = global_batch({"take": batch.take}, mesh, prepared.data_devices)["take"]
        t1 = time.perf_counter()
        out = step_fn(params, arrays)
        gathered = gather(out["acts"], take)
        stored = compact.to_host(gathered, memory_kind)
        stats = out["stats"]
        for array in jax.tree.leaves(stats):
            array.copy_to_host_async()
        del out  # the padded activations: freed on device once gathered
        key = (len(shape.rows), shape.row_length, capacity)
        if key not in compiled:  # the first step of each shape (and capacity) compiles
            compiled.add(key)
            compile_seconds += time.perf_counter() - t1
            if cache is not None:
                cache.save()
        sink.times.prepare += t1 - t0
        return InFlight(step, batch, stored, stats, functools.partial(gather.recycle, gathered))

    def finish(flight: InFlight) -> None:
        sink.finish(flight, write=not mine_done[flight.step])

    ran = dispatch_ahead(todo, dispatch, finish, IN_FLIGHT, stop)
    return compile_seconds, ran


# Steps dispatched beyond the one being finished: the device always has the next step queued
# while the host waits for an earlier step's output.
IN_FLIGHT = 2

# On CPU a step gains nothing from holding more tokens than this per device: XLA's dots are
# as fast at [2048, 896] as they get, and more rows only make attention's blocks outgrow the
# caches (Qwen2.5-0.5B shapes, bfloat16: 393 tokens/s with 1 row of 2048, 322 with 4 rows;
# 454 with 1 row of 512, 455 with 4; docs/benchmarks.md).
CPU_STEP_TOKENS = 2048


def _check_process_count(uri: str, processes: int) -> None:
    """A run's units are per process: resuming with another process count is refused up front."""
    from layertap.store.index import read_run_info
    from layertap.store.layout import RUN_KEY

    store = open_store(uri)
    if not store.exists(RUN_KEY):
        return
    earlier = read_run_info(store)["meta"].get("plan", {}).get("process_count")
    if earlier is not None and earlier != processes:
        raise LayerTapError(
            f"{uri} was started with {earlier} processes and this attempt has {processes}; a run resumes only "
            f"with the same process count (its units of work are per process). Rerun with {earlier} processes, "
            "or write to a new output.uri"
        )
