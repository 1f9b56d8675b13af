"""One Hub download per run: in a multi-process run, process 0 resolves the hf:// sources
(downloading into its own cache), then copies each snapshot it read, and the ref that named
it, to `<output.uri>/.hf-cache/` (or `output.hubCache`) in the cache's own layout. After a barrier every other
process copies that into its own cache and reads the cache only (HF_HUB_OFFLINE), so a run
of 64 hosts asks the Hub once, and every host reads the same commit even if a branch moves
while the run starts. A single process, a run without hf:// sources, or `output.hubCache: off` shares nothing
(the copy of gated weights is readable by whoever may read the output: put it elsewhere, or
turn it off).
"""

from __future__ import annotations

import mmap
import os
from collections.abc import Callable
from contextlib import nullcontext
from pathlib import Path
from typing import TypeVar

from layertap.errors import LayerTapError
from layertap.io.hub import hub_cache
from layertap.io.local import contained_path, temporary_path
from layertap.io.store import Store, open_store
from layertap_api.contract import ENV_HF_HUB_OFFLINE
from layertap_api.hub import HubRef, is_hub, parse_hub_uri
from layertap_api.spec import JobSpec

SHARED_CACHE = ".hf-cache"  # under output.uri, beside shards/ and .jax-cache/
T = TypeVar("T")


def hub_refs(job: JobSpec) -> list[HubRef]:
    """The hf:// sources a job reads."""
    refs = [parse_hub_uri(job.model.uri, "model")] if is_hub(job.model.uri) else []
    return refs + ([parse_hub_uri(job.dataset.uri, "dataset")] if is_hub(job.dataset.uri) else [])


def prepared_once_per_run(
    job: JobSpec, prepare: Callable[[JobSpec], T], process: int, processes: int, barrier: Callable[[str], None]
) -> T:
    """`prepare(job)` on this process, with the job's hf:// sources downloaded by process 0 only."""
    refs = hub_refs(job)
    uri = shared_cache_uri(job)
    if processes == 1 or not refs or uri is None:
        return prepare(job)
    shared = open_store(uri)
    if process == 0:
        prepared = prepare(job)  # resolves and downloads every source into this process's cache
        for ref in refs:
            publish(ref, hub_cache(), shared)
        barrier("layertap: hub sources shared")
        return prepared
    barrier("layertap: hub sources shared")
    for ref in refs:
        receive(ref, shared, hub_cache())
    os.environ[ENV_HF_HUB_OFFLINE] = "1"  # from now on this process reads its cache only
    return prepare(job)


def shared_cache_uri(job: JobSpec) -> str | None:
    """Where process 0 shares the Hub's files (output.hubCache); None: nowhere ("off")."""
    if job.output.hub_cache == "off":
        return None
    return job.output.hub_cache or f"{job.output.uri.rstrip('/')}/{SHARED_CACHE}"


def repo_folder(ref: HubRef) -> str:
    """The repository's folder in a Hub cache (huggingface_hub's layout: models--ORG--NAME)."""
    return "--".join([f"{ref.repo_type}s", *ref.repo_id.split("/")])


def publish(ref: HubRef, cache: Path, shared: Store) -> None:
    """Copy the cached snapshot `ref` resolved to, and the ref itself, to the shared store."""
    folder = cache / repo_folder(ref)
    ref_name = ref.revision or "main"
    commit = ref.revision if ref.pinned else _read_ref(folder / "refs" / ref_name, ref)
    snapshot = folder / "snapshots" / commit
    for path in sorted(p for p in snapshot.rglob("*") if p.is_file()):
        key = f"{repo_folder(ref)}/snapshots/{commit}/{path.relative_to(snapshot).as_posix()}"
        with path.open("rb") as file:  # mapped, not read: a checkpoint's files can be many GB
            size = os.fstat(file.fileno()).st_size
            with mmap.mmap(file.fileno(), 0, access=mmap.ACCESS_READ) if size else nullcontext(b"") as data:
                shared.put(key, [memoryview(data)])
    if not ref.pinned:
        shared.write(f"{repo_folder(ref)}/refs/{ref_name}", commit.encode())


def receive(ref: HubRef, shared: Store, cache: Path) -> None:
    """Copy what process 0 published for `ref` into this process's cache (as plain files,
    which huggingface_hub reads as it reads its own symlinks)."""
    prefix = f"{repo_folder(ref)}/"
    objects = shared.list(prefix)
    if not objects:
        raise LayerTapError(
            f"{ref}: process 0 shared nothing under {shared.uri}/{prefix}; is output.uri writable by every host?"
        )
    for key, info in sorted(objects.items()):
        try:
            target = contained_path(cache, key)
        except LayerTapError:
            raise LayerTapError(
                f"{shared.uri}/{key}: refusing a shared object whose name leaves the Hub cache {cache}; "
                f"delete {shared.uri} and rerun"
            ) from None
        snapshot_file = "/snapshots/" in key  # a commit's file never changes; a ref may have moved
        if snapshot_file and target.is_file() and target.stat().st_size == info.size:
            continue
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = temporary_path(target)
        try:
            shared.download(key, tmp)
            os.replace(tmp, target)  # processes sharing one cache on a host never see a half file
        finally:
            tmp.unlink(missing_ok=True)


def _read_ref(path: Path, ref: HubRef) -> str:
    try:
        return path.read_text().strip()
    except FileNotFoundError:
        raise LayerTapError(f"{ref}: resolved, but the cache has no {path} to share with the other hosts") from None
