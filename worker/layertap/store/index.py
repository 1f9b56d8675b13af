"""Commit records -> the run's index: what is durable, and the manifest.

Each process writes one small commit record per shard, after the shard itself is durable;
a shard without a commit record does not exist for readers. `finalize_run` merges the
records of all processes into manifest.json and deletes the uncommitted leftovers of
crashed attempts.
"""

from __future__ import annotations

import json
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timezone

from layertap.errors import LayerTapError
from layertap.store import layout
from layertap.io import Store, open_store


def read_run_info(store: Store) -> dict:
    try:
        return json.loads(store.read(layout.RUN_KEY))
    except FileNotFoundError:
        raise LayerTapError(f"{store.uri}: not a LayerTap run (no {layout.RUN_KEY})") from None


def read_commits(store: Store) -> list[dict]:
    """Every commit record of the run, ordered by (process, shard sequence)."""
    keys = sorted(key for key in store.list(layout.COMMITS) if key.endswith(".json"))
    with ThreadPoolExecutor(16) as pool:
        records = list(pool.map(lambda key: json.loads(store.read(key)), keys))
    return sorted(records, key=lambda r: (r["process_index"], r["seq"]))


def check_unique_units(records: list[dict], uri: str) -> None:
    seen: dict = {}
    for record in records:
        for unit_id, _, _ in record["units"]:
            key = json.dumps(unit_id)
            if key in seen:
                raise LayerTapError(
                    f"{uri}: unit {unit_id} is in two shards ({seen[key]} and {record['shard']}); "
                    "two writers produced the same work"
                )
            seen[key] = record["shard"]


def build_manifest(run_info: dict, records: list[dict]) -> dict:
    tokens = sum(r["tokens"] for r in records)
    total_bytes = sum(r["bytes"] for r in records)
    meta = run_info["meta"]
    return {
        "format": layout.FORMAT,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "started": run_info["started"],
        "writer": run_info["writer"],
        "meta": meta,
        "layers": meta["layers"],
        "storage_dtype": meta["storage_dtype"],
        "hidden_size": records[0]["hidden_size"] if records else None,
        "processes": sorted({r["process_index"] for r in records}),
        "num_shards": len(records),
        "num_units": sum(len(r["units"]) for r in records),
        "num_tokens": tokens,
        "total_bytes": total_bytes,
        "bytes_per_token": total_bytes / tokens if tokens else None,
        "shards": [
            {key: r[key] for key in ("shard", "samples", "bytes", "crc32c", "tokens", "process_index", "seq", "units")}
            for r in records
        ],
    }


def finalize_run(uri: str, *, delete_orphans: bool = True) -> dict:
    """Merge every process's commit records into manifest.json and return it.

    Call it once, after every writer of the run has closed (e.g. on process 0 after a
    barrier). Idempotent: calling it again rewrites the same manifest. Shards and sample
    sidecars that no commit record names (uploads of an attempt that crashed before
    committing) are deleted unless `delete_orphans=False`.
    """
    store = open_store(uri)
    run_info = read_run_info(store)
    records = read_commits(store)
    check_unique_units(records, uri)
    if delete_orphans:
        referenced = {key for r in records for key in (r["shard"], r["samples"])}
        for key in [*store.list(layout.SHARDS), *store.list(layout.SAMPLES)]:
            if key not in referenced:
                store.delete(key)
        store.remove_temporaries()
    manifest = build_manifest(run_info, records)
    store.write(layout.MANIFEST_KEY, json.dumps(manifest, indent=1).encode())
    return manifest
