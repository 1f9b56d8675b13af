"""Commit records -> the run's index: what is durable, and the manifest.

Each process writes one small commit record per shard, after the shard itself is durable;
a shard without a commit record does not exist for readers. A unit larger than a shard is
written as several part files and committed as one: one record names them all
(`shard_files`), written after the last. A record is trusted only while
its shard and sidecar are there with the recorded size (and CRC32C, where the store's
listing has it): `scan_commits` sorts records into intact and broken, so that a resume
recomputes the units of a missing or damaged shard instead of listing it. `finalize_run`
merges the records of all processes into manifest.json and deletes the uncommitted
leftovers of crashed attempts.
"""

from __future__ import annotations

import json
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime

from layertap.errors import LayerTapError
from layertap.io import ObjectInfo, Store, open_store
from layertap.io.ahead import map_ahead
from layertap.io.fingerprint import fingerprint
from layertap.store import layout
from layertap.store.schema import record_damage, sidecar_damage

# What fixes a damaged or missing file of a run: a resume checks what it trusts (`scan_commits`
# with contents) and computes again what it does not.
RECOMPUTE = "resume the run (the same `layertap extract` command) to recompute it, or restore the file"
# What fixes a manifest that disagrees with the commit records: finalizing writes it from them.
REFINALIZE = "resume the run (the same `layertap extract` command) to write the manifest again from the commit records"


def shard_files(record: dict) -> list[dict]:
    """The shard files a commit record names, each as the manifest lists it: a record of
    whole units is its one shard's entry; a split unit's record (`parts`) gives one entry
    per part, in row order, each with the unit's rows in that file and `part`: [k, of]."""
    parts = record.get("parts")
    if parts is None:
        return [record]
    common = {key: value for key, value in record.items() if key not in ("parts", "units", "tokens")}
    ((unit_id, _, _),) = record["units"]
    return [
        common | part | {"units": [[unit_id, 0, part["tokens"]]], "part": [k, len(parts)]}
        for k, part in enumerate(parts)
    ]


def read_json(store: Store, key: str, what: str) -> dict:
    """A JSON object of the run; missing: FileNotFoundError; damaged: a LayerTapError naming it."""
    data = store.read(key)
    try:
        value = json.loads(data)
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise LayerTapError(f"{store.uri}/{key}: the {what} is damaged (not valid JSON: {error})") from None
    if not isinstance(value, dict):
        raise LayerTapError(f"{store.uri}/{key}: the {what} is damaged (not a JSON object)")
    return value


def read_run_info(store: Store) -> dict:
    try:
        info = read_json(store, layout.RUN_KEY, "run's provenance")
    except FileNotFoundError:
        raise LayerTapError(f"{store.uri}: not a LayerTap run (no {layout.RUN_KEY})") from None
    if not isinstance(info.get("meta"), dict):
        raise LayerTapError(f"{store.uri}/{layout.RUN_KEY}: the run's provenance is damaged (no meta)")
    return info


@dataclass
class CommitScan:
    """The commit records of a run, sorted by what can be trusted."""

    intact: list[dict] = field(default_factory=list)  # ordered by (process, shard sequence)
    # key of each record that cannot be trusted -> why (unreadable, shard missing or damaged)
    broken: dict[str, str] = field(default_factory=dict)

    def raise_if_broken(self, uri: str, advice: str) -> None:
        if self.broken:
            key, why = min(self.broken.items())
            more = f" (and {len(self.broken) - 1} more)" if len(self.broken) > 1 else ""
            raise LayerTapError(f"{uri}/{key}: {why}{more}; {advice}")


def scan_commits(
    store: Store, *, check_shards: bool = True, process_index: int | None = None, contents: bool = False
) -> CommitScan:
    """Every commit record (or one process's, `process_index`), checked against the shard,
    sidecar and statistics it names when `check_shards`: their sizes, and their CRC32Cs
    where the listing has them (GCS). With `contents` (a resume), what the listing cannot
    show is read: the CRC32C of a shard or statistics file where the listing lacks it (a
    local run: every byte of the shards), and each sidecar, parsed.

    The whole run's scan lists the run's objects (a request per 1,000). One process's lists
    its own folder of records and looks up the objects they name, one request each: what a
    process resuming costs is its own commits, however many processes the run has."""
    folder = layout.COMMITS if process_index is None else layout.commit_prefix(process_index)
    keys = sorted(key for key in store.list(folder) if key.endswith(".json"))
    shards = sidecars = stats = {}
    if check_shards and process_index is None:
        shards, sidecars, stats = (store.list(prefix) for prefix in (layout.SHARDS, layout.SAMPLES, layout.STATS))

    def load(key: str) -> tuple[str, dict | None, str]:
        try:
            record = read_json(store, key, "commit record")
        except LayerTapError as error:
            return key, None, str(error).split(": ", 1)[1]
        except FileNotFoundError:
            return key, None, "the commit record vanished while it was read"
        damage = record_damage(record)
        return key, record, f"the commit record is damaged ({damage})" if damage else ""

    with ThreadPoolExecutor(16) as pool:
        loaded = list(pool.map(load, keys))
    if check_shards and process_index is not None:
        shards = sidecars = stats = _objects_named(store, [record for _, record, problem in loaded if not problem])
    checked = loaded
    if check_shards:
        checked = [(key, r, problem or _shard_problem(r, shards, sidecars, stats)) for key, r, problem in loaded]
    if check_shards and contents:  # what the listing cannot show, read (16 records at a time)

        def read(item: tuple[str, dict | None, str]) -> tuple[str, dict | None, str]:
            key, record, problem = item
            return key, record, problem or _content_problem(store, record, shards, stats)

        checked = list(map_ahead(read, checked))
    scan = CommitScan()
    for key, record, problem in checked:
        if problem:
            scan.broken[key] = problem
        else:
            scan.intact.append(record)
    scan.intact.sort(key=lambda r: (r["process_index"], r["seq"]))
    return scan


def _objects_named(store: Store, records: list[dict]) -> dict[str, ObjectInfo]:
    """The shards, sidecars and statistics files the records name that exist, looked up one
    by one (16 at a time)."""
    keys = [f["shard"] for r in records for f in shard_files(r)]
    keys += [key for r in records for key in (r.get("samples"), (r.get("stats") or {}).get("key")) if key]
    return {key: info for key, info in zip(keys, map_ahead(store.stat, keys)) if info is not None}


def _shard_problem(
    record: dict, shards: dict[str, ObjectInfo], sidecars: dict[str, ObjectInfo], stats: dict[str, ObjectInfo]
) -> str:
    for file in shard_files(record):
        shard = shards.get(file["shard"])
        if shard is None:
            return f"its shard {file['shard']} is missing"
        if shard.size != file["bytes"]:
            return f"its shard {file['shard']} has {shard.size} bytes, the record says {file['bytes']}"
        if shard.crc32c is not None and shard.crc32c != file["crc32c"]:
            return f"its shard {file['shard']} has CRC32C {shard.crc32c}, the record says {file['crc32c']}"
    if record["samples"] not in sidecars:
        return f"its sample sidecar {record['samples']} is missing"
    if "stats" in record and record["stats"]["key"] not in stats:
        return f"its statistics {record['stats']['key']} are missing"
    return ""


def _content_problem(store: Store, record: dict, shards: dict[str, ObjectInfo], stats: dict[str, ObjectInfo]) -> str:
    """What reading shows of a record whose objects are all there at their sizes."""
    files = [(file["shard"], "shard", file["bytes"], file["crc32c"]) for file in shard_files(record)]
    if "stats" in record:
        entry = record["stats"]
        files.append((entry["key"], "statistics file", entry["bytes"], entry["crc32c"]))
    for key, what, size, crc in files:
        listed = shards.get(key) or stats.get(key)
        if listed is not None and listed.crc32c is not None:  # the listing has it (GCS)
            found = {"bytes": listed.size, "crc32c": listed.crc32c}
        else:  # the file read and hashed
            try:
                found = fingerprint(store, key)
            except FileNotFoundError:
                return f"its {what} {key} is missing"
        if found["bytes"] != size:
            return f"its {what} {key} has {found['bytes']} bytes, the record says {size}"
        if found["crc32c"] != crc:
            return f"its {what} {key} has CRC32C {found['crc32c']}, the record says {crc}"
    try:
        sidecar = read_json(store, record["samples"], "sample sidecar")
    except (LayerTapError, FileNotFoundError) as error:
        return f"its sample sidecar {record['samples']} cannot be read ({error})"
    if damage := sidecar_damage(sidecar):
        return f"its sample sidecar {record['samples']} is damaged ({damage})"
    return ""


def read_commits(store: Store) -> list[dict]:
    """Every commit record of the run, ordered by (process, shard sequence); an unreadable
    record is an error naming it."""
    scan = scan_commits(store, check_shards=False)
    scan.raise_if_broken(store.uri, "delete it and resume the run to recompute its shard")
    return scan.intact


def check_unique_units(records: list[dict], uri: str) -> None:
    seen: dict = {}
    for record in records:
        shard = shard_files(record)[0]["shard"]
        for unit_id, _, _ in record["units"]:
            key = json.dumps(unit_id)
            if key in seen:
                raise LayerTapError(
                    f"{uri}: unit {unit_id} is in two shards ({seen[key]} and {shard}); "
                    "two writers produced the same work"
                )
            seen[key] = shard


def build_manifest(run_info: dict, records: list[dict]) -> dict:
    files = [file for r in records for file in shard_files(r)]
    tokens = sum(r["tokens"] for r in records)
    total_bytes = sum(file["bytes"] for file in files)
    meta = run_info["meta"]
    return {
        "format": layout.FORMAT,
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
        "started": run_info.get("started"),
        "writer": run_info.get("writer"),
        "meta": meta,
        "layers": meta.get("layers"),  # checked by its reader (schema.manifest_damage)
        "storage_dtype": meta.get("storage_dtype"),
        "hidden_size": records[0]["hidden_size"] if records else None,
        "sites": meta.get("sites", [layout.DEFAULT_SITE]),
        # one token's shape at each site (resid_post runs: [hidden_size])
        "shapes": (records[0].get("shapes") or {layout.DEFAULT_SITE: [records[0]["hidden_size"]]}) if records else None,
        "processes": sorted({r["process_index"] for r in records}),
        "num_shards": len(files),
        "num_units": sum(len(r["units"]) for r in records),
        "num_tokens": tokens,
        "total_bytes": total_bytes,
        "bytes_per_token": total_bytes / tokens if tokens else None,
        "shards": [
            {key: f[key] for key in ("shard", "samples", "bytes", "crc32c", "tokens", "process_index", "seq", "units")}
            | {key: f[key] for key in ("tensors", "stats", "part") if key in f}
            for f in files
        ],
    }


def read_stats_file(store: Store, entry: dict) -> dict:
    """One statistics file, checked against its size and CRC32C: (site, layer) -> partial."""
    import crc32c
    from safetensors.numpy import load

    from layertap.store import statistics

    try:
        data = store.read(entry["key"])
    except FileNotFoundError:
        raise LayerTapError(f"{store.uri}/{entry['key']}: the statistics file is missing; {RECOMPUTE}") from None
    if len(data) != entry["bytes"] or f"{crc32c.crc32c(data):08x}" != entry["crc32c"]:
        raise LayerTapError(
            f"{store.uri}/{entry['key']}: the statistics file is damaged (size or CRC32C differ); {RECOMPUTE}"
        )
    return statistics.decode(load(data))


def write_merged_stats(store: Store, records: list[dict]) -> dict:
    """Every shard's statistics merged into one file at the run's root; its manifest entry.

    Merged as they are read, in the records' order, 16 reads ahead: the memory held is one
    merged set and 16 read, whatever the number of shards."""
    import crc32c
    from safetensors.numpy import save

    from layertap.store import statistics

    parts = map_ahead(lambda r: read_stats_file(store, r["stats"]), records)
    data = save(statistics.encode(statistics.merge_all(parts)), metadata={"format": layout.FORMAT})
    store.write(layout.STATS_KEY, data)
    return {"key": layout.STATS_KEY, "bytes": len(data), "crc32c": f"{crc32c.crc32c(data):08x}"}


def finalize_run(uri: str, *, delete_orphans: bool = True) -> dict:
    """Merge every process's commit records into manifest.json and return it.

    Call it once, after every writer of the run has closed (e.g. on process 0 after a
    barrier). Idempotent: calling it again rewrites the same manifest. Shards and sample
    sidecars that no commit record names (uploads of an attempt that crashed before
    committing) are deleted unless `delete_orphans=False`.
    """
    store = open_store(uri)
    run_info = read_run_info(store)
    scan = scan_commits(store)
    scan.raise_if_broken(uri, "resume the run (the same command) to recompute what is missing")
    records = scan.intact
    check_unique_units(records, uri)
    if delete_orphans:
        referenced = {file["shard"] for r in records for file in shard_files(r)}
        referenced |= {r["samples"] for r in records}
        referenced |= {r["stats"]["key"] for r in records if "stats" in r}
        for key in [*store.list(layout.SHARDS), *store.list(layout.SAMPLES), *store.list(layout.STATS)]:
            if key not in referenced:
                store.delete(key)
        store.remove_temporaries()
    manifest = build_manifest(run_info, records)
    if records and all("stats" in r for r in records):
        manifest["statistics"] = write_merged_stats(store, records)
    store.write(layout.MANIFEST_KEY, json.dumps(manifest, indent=1).encode())
    return manifest
