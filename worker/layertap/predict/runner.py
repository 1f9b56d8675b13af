"""ARC prediction: generate an answer for every unit, commit them in batches, then vote.

Data parallel over units: every process builds the same unit list, skips the units that
committed batches already name, and takes every `process_count`-th batch of the rest
(sorted by prompt length, so a batch pads little). Each process generates its own rows on
its own devices (no collective in the step) and commits a batch as one object,
`candidates/PROCESS-SEQ.json`; a restart regenerates only what no commit names. When every
unit is committed, process 0 votes and writes `submission.json`, `results.json` and,
when the dataset carries the test outputs, `score.json`.
"""

from __future__ import annotations

import json
import logging
import math
import time
from dataclasses import dataclass, field
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from layertap.arc.budget import BudgetStats
from layertap.arc.encoders import build_encoder
from layertap.arc.readers import read_tasks
from layertap.arc.records import Split
from layertap.arc.submission import SUBMISSION_KEY
from layertap.arc.task import Task
from layertap.arc.views import View
from layertap.arc.vote import parse_candidate
from layertap.data.invalid import ReadStats
from layertap.data.selection import select
from layertap.errors import LayerTapError
from layertap.io import sources
from layertap.io.fingerprint import fingerprints
from layertap.io.store import Store, open_store
from layertap.model.checkpoint import checkpoint_files, load_params, resolve_checkpoint_dir
from layertap.model.config import DecoderConfig
from layertap.model.generate import Generated, RunStop, Sampling, make_generate_fn
from layertap.model.tap import LayerTap
from layertap.model.tokenizer import load_tokenizer
from layertap.predict import results
from layertap.predict.activations import ACTIVATIONS, activations_uri, open_activations, unit_records
from layertap.predict.results import CANDIDATES, AnswerLog, RunningScore
from layertap.predict.units import Dropped, Unit, build_units, check_dataset
from layertap.run.compile_cache import open_for_run
from layertap.run.context import RunContext
from layertap.run.loop import dispatch_ahead
from layertap.run.mesh import DATA, make_mesh, param_shardings, rows_sharding
from layertap.run.progress import Progress
from layertap.store.claim import claim, refuse_foreign_files
from layertap.store.index import finalize_run
from layertap_api.spec import WorkerSpec

log = logging.getLogger(__name__)

RUN_KEY = "prediction.json"
# Every name a prediction puts right under its output: anything else there is not its own.
OWN_NAMES = frozenset(
    {
        RUN_KEY,
        CANDIDATES.rstrip("/"),
        results.RESULTS_KEY,
        results.SCORE_KEY,
        SUBMISSION_KEY,
        ACTIVATIONS,
    }
)
FENCE = "```"
SHORTEST_BUCKET = 64


@dataclass
class Prepared:
    """What every process computes identically before generating."""

    job: WorkerSpec
    checkpoint: Path
    config: DecoderConfig
    tokenizer: object
    tasks: list[Task]
    units: list[Unit]
    dropped: Dropped
    budget: BudgetStats
    identity: dict
    tap: LayerTap | None = None  # the layers stored while generating (prediction.activations)


@dataclass
class PredictSummary:
    units_run: int = 0
    units_skipped: int = 0
    tasks_done: int = 0  # so far, by every process (process 0 keeps count)
    score_so_far: float | None = None  # over the tasks done, when they carry solutions
    tokens_generated: int = 0
    generate_seconds: float = 0.0
    compile_seconds: float = 0.0
    buckets: list[int] = field(default_factory=list)
    devices: int = 1  # data-parallel devices of each process: a batch's rows split over them
    stopped: str | None = None
    outputs: dict[str, str] = field(default_factory=dict)
    score: float | None = None


def prepare(job: WorkerSpec) -> Prepared:
    check_dataset(job.dataset)
    checkpoint = resolve_checkpoint_dir(job.model.uri)
    config = DecoderConfig.from_file(checkpoint / "config.json")
    tokenizer = load_tokenizer(checkpoint)
    prompt = job.dataset.prompt
    try:
        encoder = build_encoder(prompt.grid_encoder)
    except ValueError as error:
        raise LayerTapError(f"dataset.prompt.gridEncoder: {error}") from None
    reading, budget = ReadStats(), BudgetStats()
    with sources.recording() as read:
        tasks = read_tasks(
            job.dataset.uri,
            job.dataset.format,
            split=Split(job.dataset.test_pairs),
            skip_invalid=job.dataset.skip_invalid,
            stats=reading,
        )
        # dataset.select picks tasks; every process reads the same tasks in the same order and
        # selects the same ones, so the unit list (the global plan) is the same on every host.
        tasks = list(select(tasks, lambda task: task.id, job.dataset.select, uri=job.dataset.uri, unit="task"))
    if job.dataset.max_samples is not None:
        tasks = tasks[: job.dataset.max_samples]
    if not tasks:
        raise LayerTapError(
            f"dataset {job.dataset.uri}: no task to predict ({reading.report() or 'the dataset is empty'})"
        )
    units, dropped = build_units(tasks, job.dataset, job.prediction.views, encoder, tokenizer, budget)
    if not units:
        raise LayerTapError(
            f"dataset {job.dataset.uri}: no prompt fits dataset.maxTokens={job.dataset.max_tokens} ({budget})"
        )
    identity = {
        "mode": "predict",
        "model": {
            "uri": job.model.uri,
            "dtype": job.model.dtype,
            "config": config.to_hf_dict(),
            "files": fingerprints(open_store(str(checkpoint)), checkpoint_files(checkpoint)),
        },
        "dataset": {**job.dataset.to_wire(), "files": {name: src.fingerprint() for name, src in sorted(read.items())}},
        "prediction": job.prediction.to_wire(),
        "units": len(units),
    }
    tap = None
    if job.prediction.activations:
        tap = LayerTap.for_model(
            job.extraction.layers, config.num_hidden_layers, model=job.model.uri, sites=job.extraction.sites
        )
        identity["activations"] = {
            "layers": list(tap.layers),
            **tap.sites_entry(),
            "storageDtype": job.extraction.storage_dtype,
        }
    return Prepared(job, checkpoint, config, tokenizer, tasks, units, dropped, budget, identity, tap)


def fence_stop(tokenizer, vocab_size: int, answer_prefix: str) -> RunStop | None:
    """When answers open a code fence, the closing fence ends the grid: a stop on ``` however
    the tokenizer splits it."""
    if FENCE not in answer_prefix:
        return None
    return RunStop.of_texts([tokenizer.decode([i]) for i in range(vocab_size)], FENCE[0], len(FENCE))


def bucket_length(length: int, limit: int) -> int:
    """The padded prompt length: a power of two (few distinct shapes, so few compiles)."""
    return min(max(SHORTEST_BUCKET, 2 ** math.ceil(math.log2(max(length, 1)))), max(limit, length))


def execute(prepared: Prepared, context: RunContext | None = None) -> PredictSummary:
    """Generate every unit not committed yet (this process's share), then, on process 0, vote."""
    context = context or RunContext()
    job, summary = prepared.job, PredictSummary()
    process_index, process_count = context.process_index, context.process_count
    # The weights first: a checkpoint that cannot generate (no LM head) leaves no output behind.
    dtype = jnp.dtype(job.model.dtype)
    config = prepared.config
    mesh = make_mesh(job.mesh, config.num_attention_heads, config.num_key_value_heads, local=True)
    params = load_params(prepared.checkpoint, config, dtype, head=True)
    params = jax.device_put(params, param_shardings(params, mesh))
    store = open_store(job.output.uri)
    if not store.exists(RUN_KEY):
        refuse_foreign_files(store, OWN_NAMES, "a prediction")
    claim(store, RUN_KEY, prepared.identity, "a prediction", "prediction's provenance")
    cache = open_for_run(job.output, process_index)  # a restarted attempt compiles no bucket again
    log = AnswerLog(store)
    committed = set(log.refresh())
    writer = None
    if prepared.tap is not None:
        writer = open_activations(prepared, prepared.tap, process_index, process_count)
        stored = writer.committed_units()
    # A unit is done when its answer is committed and, if asked for, its activations too.
    todo = sorted(
        (u for u in prepared.units if u.key not in committed or (writer and u.key not in stored)),
        key=lambda u: (len(u.token_ids), u.key),
    )
    summary.units_skipped = len(prepared.units) - len(todo)
    per_process = max(1, job.prediction.batch_size // process_count)
    batches = [todo[i : i + per_process] for i in range(0, len(todo), per_process)]
    mine = batches[process_index::process_count]
    data = summary.devices = mesh.shape[DATA]
    rows = -(-per_process // data) * data  # filler rows up to a multiple of the data devices

    encoder = build_encoder(job.dataset.prompt.grid_encoder)
    sampling = Sampling(
        job.prediction.sampling.temperature, job.prediction.sampling.top_p, job.prediction.sampling.seed
    )
    generate = jax.jit(
        make_generate_fn(
            config,
            job.prediction.max_new_tokens,
            prepared.config.stop_token_ids(prepared.tokenizer),
            sampling,
            dtype,
            tap=prepared.tap,
            stop_run=fence_stop(prepared.tokenizer, config.vocab_size, encoder.answer_prefix),
        )
    )
    seq = next_sequence(store, process_index)
    compiled = {}
    running = None
    progress = Progress(
        samples_total=len(prepared.units),
        tokens_total=None,
        samples_done=summary.units_skipped,
        process_count=process_count,
        show_bar=context.show_progress and context.first,
        reporter=context.reporter if context.first else None,
    )
    if context.first:
        units_by_task: dict[str, set[str]] = {}
        for unit in prepared.units:
            units_by_task.setdefault(unit.view.task_id, set()).add(unit.key)
        running = RunningScore(store, prepared.tasks, units_by_task, log)
        summary.tasks_done, summary.score_so_far = running.update()
        progress.tasks.update(tasks_total=len(prepared.tasks), tasks_done=summary.tasks_done)

    def dispatch(batch: list[Unit]) -> tuple[list[Unit], int, Generated]:
        width = bucket_length(max(len(u.token_ids) for u in batch), job.dataset.max_tokens)
        prompt_bp = np.zeros((rows, width), np.int32)
        length_b = np.ones(rows, np.int32)  # filler rows: one token, discarded
        for row, unit in enumerate(batch):
            prompt_bp[row, : len(unit.token_ids)] = unit.token_ids
            length_b[row] = len(unit.token_ids)
        ids_b = np.array([u.index for u in batch] + [0] * (rows - len(batch)), np.int32)  # sampling keys
        inputs = [jax.device_put(array, rows_sharding(mesh, array.ndim)) for array in (prompt_bp, length_b, ids_b)]
        if width not in compiled:  # one program per bucket, compiled ahead and timed apart
            started = time.perf_counter()
            compiled[width] = generate.lower(params, *inputs).compile()
            summary.compile_seconds += time.perf_counter() - started
            summary.buckets.append(width)
            if cache is not None:
                cache.save()
        return batch, width, compiled[width](params, *inputs)

    def finish(flight: tuple[list[Unit], int, Generated]) -> None:
        nonlocal seq
        started = time.perf_counter()
        batch, width, generated = flight
        out = jax.device_get(generated)
        if writer is not None:
            for row, unit in enumerate(batch):
                if unit.key not in stored:
                    taps = {site: at[:, row] for site, at in out.taps.items()}
                    records, meta = unit_records(unit, taps, width, out.tokens[row], int(out.count[row]))
                    writer.add(unit.key, records, samples={unit.index: meta})
        records = [
            answer_record(unit, out.tokens[row], out.logprobs[row], int(out.count[row]), prepared.tokenizer, encoder)
            for row, unit in enumerate(batch)
            if unit.key not in committed
        ]
        if records:
            store.write(f"{CANDIDATES}{process_index:05d}-{seq:06d}.json", json.dumps({"answers": records}).encode())
            seq += 1
        tokens = int(out.count[: len(batch)].sum())
        summary.units_run += len(batch)
        summary.tokens_generated += tokens
        if running is not None:
            summary.tasks_done, summary.score_so_far = running.update()
        if context.metrics is not None:  # host time of the batch: waiting for it, decoding, committing
            context.metrics.step(tokens, time.perf_counter() - started)
            context.metrics.committed(tokens, 0)
        # the other processes' batches run alongside: this process's counts stand for theirs
        answers = min(len(batch) * process_count, len(prepared.units) - progress.samples_committed)
        scored = {} if summary.score_so_far is None else {"score": round(summary.score_so_far, 4)}
        progress.answered(answers, tokens * process_count, tasks_done=summary.tasks_done, **scored)

    started = time.perf_counter()
    try:
        dispatch_ahead(mine, dispatch, finish, IN_FLIGHT, context.stop)
    finally:
        if cache is not None:
            cache.close()
    summary.generate_seconds = time.perf_counter() - started - summary.compile_seconds
    summary.stopped = context.stopped
    if writer is not None:
        writer.close()  # every shard durable (also when stopped: what was generated is kept)
    if summary.stopped:
        progress.close()
        return summary
    context.barrier("predict generated")
    if context.first:
        summary.outputs, summary.score = finalize(store, prepared, log)
        if writer is not None:
            finalize_run(activations_uri(job.output.uri))
            summary.outputs["activations"] = activations_uri(job.output.uri)
        if summary.score is not None:
            progress.tasks.update(tasks_done=len(prepared.tasks), score=round(summary.score, 4))
    progress.close()
    return summary


# Batches dispatched beyond the one being decoded and committed: the device generates the
# next batch while the host decodes, parses and writes this one.
IN_FLIGHT = 1


def answer_record(unit: Unit, tokens, logprobs, count: int, tokenizer, encoder) -> dict:
    """What one generated answer commits: its text, grid (or error) and log-probability."""
    text = encoder.answer_prefix + tokenizer.decode(tokens[:count].tolist(), skip_special_tokens=True)
    mean_logprob = float(np.mean(logprobs[:count])) if count else float("-inf")
    candidate = parse_candidate(text, encoder, unit.view, mean_logprob)
    return {
        "unit": unit.key,
        "view": unit.view.to_json(),
        "train_pairs": unit.train_pairs,
        "prompt_tokens": len(unit.token_ids),
        "tokens": count,
        "text": text,
        "mean_logprob": mean_logprob,
        "grid": None if candidate.grid is None else candidate.grid.tolist(),
        "error": candidate.error,
    }


def next_sequence(store: Store, process_index: int) -> int:
    mine = [k for k in store.list(CANDIDATES) if Path(k).name.startswith(f"{process_index:05d}-")]
    return 1 + max((int(Path(k).stem.split("-")[1]) for k in mine), default=-1)


def finalize(store: Store, prepared: Prepared, log: AnswerLog | None = None) -> tuple[dict[str, str], float | None]:
    """Vote over every committed answer and write the submission, results and score."""
    answers = list((log or AnswerLog(store)).refresh().values())
    views = {answer["unit"]: View.from_json(answer["view"]) for answer in answers}
    return results.write_all(store, prepared.tasks, answers, views, prepared.dropped)
