"""SAELens' own loading of cached activations, for bench_loader.py: the same tokens written
once in the layout SAELens' CacheActivationsRunner saves (a Hugging Face `datasets` dataset
on disk: one row per sequence, the hook's activations as Array2D (context, d_in) float32,
token_ids as int32), then read the way its trainer reads them: `next(ActivationsStore)`,
which slices store_batch_size_prompts sequences at a time from the Arrow files (as torch
float32) and serves train_batch_size_tokens rows from its shuffled mixing buffer.

Needs `sae_lens` (and with it `datasets` and torch); `available()` says why not otherwise.
Arrow has no bfloat16, so SAELens' cache holds float32: twice LayerTap's bytes.
"""

from __future__ import annotations

import importlib.util

HOOK = "blocks.12.hook_resid_post"
STORE_BATCH_PROMPTS = 32  # sequences per read: SAELens' defaults (LanguageModelSAERunnerConfig)
BATCHES_IN_BUFFER = 20
CACHE_PART_SEQUENCES = 64  # converted to Arrow a part at a time: at once, 1M tokens needed over 20 GB


def available() -> str | None:
    """None when SAELens can run here, else why not."""
    missing = [name for name in ("sae_lens", "datasets", "torch") if importlib.util.find_spec(name) is None]
    return f"{', '.join(missing)} not installed (pip install sae-lens)" if missing else None


def write_cache(run_uri: str, layer: int, context: int, path: str) -> None:
    """The run's rows of `layer`, in sequences of `context` tokens in stored order, saved as
    CacheActivationsRunner saves them (its Features; written whole, not timed)."""
    import numpy as np
    from datasets import Array2D, Dataset, Features, Sequence, Value, concatenate_datasets

    import layertap

    records = layertap.open(run_uri).read_layer(layer, dtype=np.float32)
    sequences = len(records) // context
    width = records.activations.shape[1]
    features = Features(
        {
            HOOK: Array2D(shape=(context, width), dtype="float32"),
            "token_ids": Sequence(Value(dtype="int32"), length=context),
        }
    )
    rows = sequences * context
    data = {
        HOOK: records.activations[:rows].reshape(sequences, context, width),
        "token_ids": records.token_ids[:rows].astype(np.int32).reshape(sequences, context),
    }
    parts = [
        Dataset.from_dict(
            {name: column[start : start + CACHE_PART_SEQUENCES] for name, column in data.items()}, features
        )
        for start in range(0, sequences, CACHE_PART_SEQUENCES)
    ]
    concatenate_datasets(parts).save_to_disk(path)


def read_batches(path: str, context: int, width: int, batches: int, batch_size: int) -> int:
    """`batches` training batches from SAELens' ActivationsStore over the cache at `path`
    (a new store each time, as a training run opens it); returns the rows served."""
    from sae_lens.training.activations_store import ActivationsStore

    store = ActivationsStore(
        model=None,
        dataset=None,
        streaming=False,
        hook_name=HOOK,
        hook_head_index=None,
        context_size=context,
        d_in=width,
        n_batches_in_buffer=BATCHES_IN_BUFFER,
        total_training_tokens=batches * batch_size,
        store_batch_size_prompts=min(STORE_BATCH_PROMPTS, batches * batch_size // context),  # a small run has fewer
        train_batch_size_tokens=batch_size,
        prepend_bos=False,
        normalize_activations="none",
        device="cpu",
        dtype="float32",
        cached_activations_path=path,
    )
    served = 0
    for _ in range(batches):
        batch = store.next_batch()
        assert tuple(batch.shape) == (batch_size, width), batch.shape
        served += len(batch)
    return served
