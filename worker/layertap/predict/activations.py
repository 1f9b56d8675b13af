"""Activations while predicting (`prediction.activations`): `extraction.sites` (unset: the
residual stream) of `extraction.layers` over each prompt and the answer the model generated
for it, captured by the tap extraction uses.

They form an ordinary run at `<output>/activations` (`layertap.open` reads it): one sample
per unit (sample index = the unit's index), its prompt tokens labelled as extraction labels
them, then its generated tokens in the segment `generated`. The streams are the ones the
decode loop computed (no second forward); the last generated token was never run through the
model, so a sample holds every token it generated but that one. Each unit is a writer unit
named by its key, so a restart adds only the units whose shards are not committed.
"""

from __future__ import annotations

import numpy as np

from layertap.arc.segments import GENERATED, prediction_segment_names
from layertap.model.tap import LayerTap
from layertap.predict.units import Unit
from layertap.store.records import TokenRecords
from layertap.store.writer import ShardWriter, open_writer

ACTIVATIONS = "activations"


def activations_uri(output_uri: str) -> str:
    return f"{output_uri.rstrip('/')}/{ACTIVATIONS}"


def open_activations(prepared, tap: LayerTap, process_index: int, process_count: int) -> ShardWriter:
    job = prepared.job
    meta = {
        "layers": list(tap.layers),
        **tap.sites_entry(),
        "storage_dtype": job.extraction.storage_dtype,
        "hidden_size": prepared.config.hidden_size,
        "prediction": prepared.identity,  # model and dataset fingerprints included
        "segment_names": {name: label for label, name in sorted(prediction_segment_names.items())},
    }
    return open_writer(
        activations_uri(job.output.uri),
        meta,
        process_index,
        process_count,
        shard_bytes=job.output.shard_size_mb * 1024 * 1024,
    )


def unit_records(
    unit: Unit, taps: dict[str, np.ndarray], prompt_width: int, tokens: np.ndarray, count: int
) -> tuple[TokenRecords, dict]:
    """One unit's rows from its batch row's taps: site -> [L, prompt bucket + budget, ...]."""
    length, generated = len(unit.token_ids), max(count - 1, 0)
    activations = {
        site: np.concatenate([at[:, :length], at[:, prompt_width : prompt_width + generated]], axis=1)
        for site, at in taps.items()
    }
    records = TokenRecords.of(
        activations,
        token_ids=np.concatenate([unit.token_ids, tokens[:generated]]),
        sample_index=np.full(length + generated, unit.index),
        position=np.arange(length + generated),
        segment=np.concatenate([unit.segments, np.full(generated, GENERATED)]),
        cell=np.concatenate([unit.cells, np.full((generated, 3), -1)]),
    )
    meta = {
        "unit": unit.key,
        "task_id": unit.view.task_id,
        "test_index": unit.view.test_index,
        "view": unit.view.to_json(),
        "train_pairs": unit.train_pairs,
        "generated_tokens": count,
    }
    return records, meta
