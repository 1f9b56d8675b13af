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
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
from layertap_api.spec import WorkerSpec

from layertap.arc.budget import BudgetStats
from layertap.arc.encoders import build_encoder
from layertap.arc.readers import read_tasks
from layertap.arc.records import Split
from layertap.arc.task import Task
from layertap.arc.views import View
from layertap.arc.vote import parse_candidate
from layertap.data.invalid import ReadStats
from layertap.data.selection import select
from layertap.errors import LayerTapError
from layertap.extract.stopping import StopRequest
from layertap.io import sources
from layertap.io.fingerprint import fingerprints
from layertap.io.store import Store, open_store
from layertap.model.checkpoint import checkpoint_files, load_params, resolve_checkpoint_dir
from layertap.model.config import Qwen2Config
from layertap.model.generate import RunStop, Sampling, make_generate_fn
from layertap.model.tokenizer import load_tokenizer
from layertap.model.tap import LayerTap
from layertap.predict import results
from layertap.predict.results import CANDIDATES, AnswerLog, RunningScore
from layertap.predict.activations import activations_uri, open_activations, unit_records
from layertap.predict.units import Dropped, Unit, build_units, check_dataset
from layertap.store.index import finalize_run, read_json
from layertap.store.writer import differences

log = logging.getLogger(__name__)

RUN_KEY = "prediction.json"
FENCE = "```"
SHORTEST_BUCKET = 64


@dataclass
class Prepared:
    """What every process computes identically before generating."""

    job: WorkerSpec
    checkpoint: Path
    config: Qwen2Config
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
    stopped: str | None = None
    outputs: dict[str, str] = field(default_factory=dict)
    score: float | None = None


def prepare(job: WorkerSpec) -> Prepared:
    check_dataset(job.dataset)
    checkpoint = resolve_checkpoint_dir(job.model.uri)
    config = Qwen2Config.from_file(checkpoint / "config.json")
    tokenizer = load_tokenizer(checkpoint)
    prompt = job.dataset.prompt
    try:
        encoder = build_encoder(prompt.grid_encoder)
    except ValueError as error:
        raise LayerTapError(f"dataset.prompt.gridEncoder: {error}") from None
    reading, budget = ReadStats(), BudgetStats()
    with sources.recording() as read:
        tasks = read_tasks(job.dataset.uri, job.dataset.format, split=Split(job.dataset.test_pairs),
                           skip_invalid=job.dataset.skip_invalid, stats=reading)  # fmt: skip
        # dataset.select picks tasks; every process reads the same tasks in the same order and
        # selects the same ones, so the unit list (the global plan) is the same on every host.
        tasks = list(select(tasks, lambda task: task.id, job.dataset.select, uri=job.dataset.uri, unit="task"))
    if job.dataset.max_samples is not None:
        tasks = tasks[: job.dataset.max_samples]
    if not tasks:
        raise LayerTapError(f"dataset {job.dataset.uri}: no task to predict ({reading.report() or 'the dataset is empty'})")
    units, dropped = build_units(tasks, job.dataset, job.prediction.views, encoder, tokenizer, budget)
    if not units:
        raise LayerTapError(f"dataset {job.dataset.uri}: no prompt fits dataset.maxTokens={job.dataset.max_tokens} ({budget})")
    identity = {
        "mode": "predict",
        "model": {"uri": job.model.uri, "dtype": job.model.dtype, "config": config.to_hf_dict(),
                  "files": fingerprints(open_store(str(checkpoint)), checkpoint_files(checkpoint))},
        "dataset": {**job.dataset.to_wire(), "files": {name: src.fingerprint() for name, src in sorted(read.items())}},
        "prediction": job.prediction.to_wire(),
        "units": len(units),
    }  # fmt: skip
    tap = None
    if job.prediction.activations:
        tap = LayerTap.for_model(job.extraction.layers, config.num_hidden_layers, model=job.model.uri)
        identity["activations"] = {"layers": list(tap.layers), "storageDtype": job.extraction.storage_dtype}
    return Prepared(job, checkpoint, config, tokenizer, tasks, units, dropped, budget, identity, tap)


def stop_token_ids(tokenizer) -> list[int]:
    """End of turn and end of text (Qwen's and Llama 3's, where the vocabulary has them) and the
    tokenizer's EOS."""
    vocab = tokenizer.get_vocab()
    ids = {vocab.get(t) for t in ("<|im_end|>", "<|endoftext|>", "<|eot_id|>")} | {tokenizer.eos_token_id}
    return sorted(i for i in ids if i is not None and i >= 0)


def fence_stop(tokenizer, vocab_size: int, answer_prefix: str) -> RunStop | None:
    """When answers open a code fence, the closing fence ends the grid: a stop on ``` however
    the tokenizer splits it."""
    if FENCE not in answer_prefix:
        return None
    return RunStop.of_texts([tokenizer.decode([i]) for i in range(vocab_size)], FENCE[0], len(FENCE))


def bucket_length(length: int, limit: int) -> int:
    """The padded prompt length: a power of two (few distinct shapes, so few compiles)."""
    return min(max(SHORTEST_BUCKET, 2 ** math.ceil(math.log2(max(length, 1)))), max(limit, length))


def execute(
    prepared: Prepared,
    process_index: int = 0,
    process_count: int = 1,
    *,
    progress: Callable[[int, int, PredictSummary], None] | None = None,
    stop: StopRequest | None = None,
    barrier: Callable[[str], None] | None = None,
) -> PredictSummary:
    """Generate every unit not committed yet (this process's share), then, on process 0, vote."""
    job, summary = prepared.job, PredictSummary()
    # The weights first: a checkpoint that cannot generate (no LM head) leaves no output behind.
    dtype = jnp.dtype(job.model.dtype)
    params = load_params(prepared.checkpoint, prepared.config, dtype, head=True)
    store = open_store(job.output.uri)
    claim(store, prepared.identity)
    log = AnswerLog(store)
    committed = set(log.refresh())
    writer = None
    if prepared.tap is not None:
        writer = open_activations(prepared, list(prepared.tap.layers), process_index, process_count)
        stored = writer.committed_units()
    # A unit is done when its answer is committed and, if asked for, its activations too.
    todo = sorted((u for u in prepared.units if u.key not in committed or (writer and u.key not in stored)),
                  key=lambda u: (len(u.token_ids), u.key))  # fmt: skip
    summary.units_skipped = len(prepared.units) - len(todo)
    per_process = max(1, job.prediction.batch_size // process_count)
    batches = [todo[i : i + per_process] for i in range(0, len(todo), per_process)]
    mine = batches[process_index::process_count]

    encoder = build_encoder(job.dataset.prompt.grid_encoder)
    sampling = Sampling(job.prediction.sampling.temperature, job.prediction.sampling.top_p, job.prediction.sampling.seed)
    generate = jax.jit(make_generate_fn(
        prepared.config, job.prediction.max_new_tokens, stop_token_ids(prepared.tokenizer), sampling, dtype,
        tap=prepared.tap, stop_run=fence_stop(prepared.tokenizer, prepared.config.vocab_size, encoder.answer_prefix),
    ))  # fmt: skip
    done = len(committed)
    seq = next_sequence(store, process_index)
    compiled = {}
    running = None
    if process_index == 0:
        units_by_task: dict[str, set[str]] = {}
        for unit in prepared.units:
            units_by_task.setdefault(unit.view.task_id, set()).add(unit.key)
        running = RunningScore(store, prepared.tasks, units_by_task, log)
        summary.tasks_done, summary.score_so_far = running.update()
    for batch in mine:
        if stop:  # SIGTERM: what is committed stays, the same command resumes
            summary.stopped = stop.signal or "a stop request"
            break
        width = bucket_length(max(len(u.token_ids) for u in batch), job.dataset.max_tokens)
        prompt_bp = np.zeros((per_process, width), np.int32)
        length_b = np.ones(per_process, np.int32)  # filler rows: one token, discarded
        for row, unit in enumerate(batch):
            prompt_bp[row, : len(unit.token_ids)] = unit.token_ids
            length_b[row] = len(unit.token_ids)
        ids_b = np.array([u.index for u in batch] + [0] * (per_process - len(batch)), np.int32)  # sampling keys
        if width not in compiled:  # one program per bucket, compiled ahead and timed apart
            started = time.perf_counter()
            compiled[width] = generate.lower(params, prompt_bp, length_b, ids_b).compile()
            summary.compile_seconds += time.perf_counter() - started
            summary.buckets.append(width)
        started = time.perf_counter()
        out = jax.device_get(compiled[width](params, prompt_bp, length_b, ids_b))
        summary.generate_seconds += time.perf_counter() - started
        if writer is not None:
            for row, unit in enumerate(batch):
                if unit.key not in stored:
                    rows, meta = unit_records(unit, out.taps[:, row], width, out.tokens[row], int(out.count[row]))
                    writer.add(unit.key, rows, samples={unit.index: meta})
        records = [answer_record(unit, out.tokens[row], out.logprobs[row], int(out.count[row]), prepared.tokenizer,
                                 encoder) for row, unit in enumerate(batch) if unit.key not in committed]  # fmt: skip
        if records:
            store.write(f"{CANDIDATES}{process_index:05d}-{seq:06d}.json", json.dumps({"answers": records}).encode())
            seq += 1
        summary.units_run += len(batch)
        summary.tokens_generated += int(out.count[: len(batch)].sum())
        done += len(batch) * process_count  # the other processes' batches run alongside
        if running is not None:
            summary.tasks_done, summary.score_so_far = running.update()
        if progress is not None:
            progress(min(done, len(prepared.units)), len(prepared.units), summary)
    if writer is not None:
        writer.close()  # every shard durable (also when stopped: what was generated is kept)
    if summary.stopped:
        return summary
    if barrier is not None:
        barrier("layertap-predict-generated")
    if process_index == 0:
        summary.outputs, summary.score = finalize(store, prepared, log)
        if writer is not None:
            finalize_run(activations_uri(job.output.uri))
            summary.outputs["activations"] = activations_uri(job.output.uri)
    return summary


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


def claim(store: Store, identity: dict) -> None:
    """Write prediction.json unless it exists; if it does, it must describe the same run."""
    if store.create(RUN_KEY, json.dumps(identity, indent=1, sort_keys=True).encode()) is None:
        return
    old = read_json(store, RUN_KEY, "prediction's provenance")
    if old != identity:
        changes = differences(old, identity)
        shown = "; ".join(changes[:3]) + (f"; and {len(changes) - 3} more" if len(changes) > 3 else "")
        raise LayerTapError(
            f"{store.uri} already holds a prediction with other inputs or settings: {shown}. A prediction resumes "
            "only with the same model, data and settings: restore them, or write to a new output.uri"
        )


def next_sequence(store: Store, process_index: int) -> int:
    mine = [k for k in store.list(CANDIDATES) if Path(k).name.startswith(f"{process_index:05d}-")]
    return 1 + max((int(Path(k).stem.split("-")[1]) for k in mine), default=-1)


def finalize(store: Store, prepared: Prepared, log: AnswerLog | None = None) -> tuple[dict[str, str], float | None]:
    """Vote over every committed answer and write the submission, results and score."""
    answers = list((log or AnswerLog(store)).refresh().values())
    views = {answer["unit"]: View.from_json(answer["view"]) for answer in answers}
    return results.write_all(store, prepared.tasks, answers, views, prepared.dropped)
