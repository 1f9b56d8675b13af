"""Names of everything in a run directory (see docs/format.md)."""

from __future__ import annotations

import hashlib

FORMAT = "layertap-activations/1"
RUN_KEY = "run.json"  # the run's provenance, written once by the first writer
MANIFEST_KEY = "manifest.json"  # written by finalize_run
SHARDS = "shards"
COMMITS = "commits"
SAMPLES = "samples"  # one JSON sidecar per shard: the provenance of the samples it holds
STATS = "stats"  # one statistics file per shard (store/statistics.py)
STATS_KEY = "stats.safetensors"  # every shard's statistics merged, written by finalize_run
# Every name a run puts right under its output (its caches, .jax-cache and .hf-cache, aside):
# anything else there is not a run's.
OWN_NAMES = frozenset({RUN_KEY, MANIFEST_KEY, SHARDS, COMMITS, SAMPLES, STATS, STATS_KEY})

# Per-token columns stored in every shard next to the activations: name -> (dtype, shape
# of one row). `cell` is the (row, col, colour) of the grid cell a token encodes, -1 if none.
TOKEN_COLUMNS: dict[str, tuple[str, tuple[int, ...]]] = {
    "token_ids": ("int32", ()),
    "sample_index": ("int64", ()),
    "position": ("int32", ()),
    "segment": ("int16", ()),
    "cell": ("int16", (3,)),
}


DEFAULT_SITE = "resid_post"  # stored as layer.{i}, the name runs had before sites existed


def layer_tensor(layer: int, site: str = DEFAULT_SITE) -> str:
    return f"layer.{layer}" if site == DEFAULT_SITE else f"layer.{layer}.{site}"


def scale_tensor(layer: int, site: str = DEFAULT_SITE) -> str:
    return f"{layer_tensor(layer, site)}.scale"


def shard_key(process_index: int, seq: int) -> str:
    # GCS spreads load by key range: a short hash right after the common prefix keeps many
    # hosts writing s000001, s000002, ... from hammering one range (GCS request-rate guidance).
    digest = hashlib.sha256(f"{process_index}/{seq}".encode()).hexdigest()[:6]
    return f"{SHARDS}/{digest}-p{process_index:05d}-s{seq:06d}.safetensors"


def part_key(process_index: int, seq: int, part: int) -> str:
    """Part `part` of a unit larger than a shard, committed as one with sequence `seq`."""
    return shard_key(process_index, seq).removesuffix(".safetensors") + f"-part{part:03d}.safetensors"


def commit_prefix(process_index: int) -> str:
    return f"{COMMITS}/p{process_index:05d}"


def commit_key(process_index: int, seq: int) -> str:
    return f"{commit_prefix(process_index)}/s{seq:06d}.json"


def samples_key(process_index: int, seq: int) -> str:
    return f"{SAMPLES}/p{process_index:05d}/s{seq:06d}.json"


def stats_key(process_index: int, seq: int) -> str:
    return f"{STATS}/p{process_index:05d}/s{seq:06d}.safetensors"


def seq_of_commit_key(key: str) -> int:
    return int(key.rsplit("/s", 1)[1].removesuffix(".json"))
