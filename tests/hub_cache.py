"""A Hugging Face Hub cache written by hand, laid out as huggingface_hub lays out its own
(`ORG/NAME` of type T in `Ts--ORG--NAME/`): the files' content in `blobs/`, each commit's
tree in `snapshots/<40-hex commit>/` as relative symlinks to the blobs, and each branch or
tag in `refs/<name>` holding its commit. huggingface_hub resolves a revision from it with
`local_files_only` (HF_HUB_OFFLINE) exactly as from a cache it downloaded itself.
"""

from __future__ import annotations

import hashlib
import io
import os
from pathlib import Path


def repo_folder(cache: Path, repo_id: str, repo_type: str = "model") -> Path:
    return cache / "--".join([f"{repo_type}s", *repo_id.split("/")])


def write_commit(
    cache: Path,
    repo_id: str,
    files: dict[str, bytes | Path],
    *,
    repo_type: str = "model",
    refs: tuple[str, ...] = ("main",),
) -> str:
    """Add one commit holding `files` (repository path -> bytes, or a local file to copy) and
    point `refs` at it; returns the commit sha (derived from the content, as git's is)."""
    folder = repo_folder(cache, repo_id, repo_type)
    contents = {name: data.read_bytes() if isinstance(data, Path) else data for name, data in files.items()}
    digest = hashlib.sha1()
    for name, data in sorted(contents.items()):
        digest.update(name.encode() + b"\0" + hashlib.sha256(data).digest())
    commit = digest.hexdigest()
    for name, data in contents.items():
        blob = folder / "blobs" / hashlib.sha256(data).hexdigest()
        blob.parent.mkdir(parents=True, exist_ok=True)
        blob.write_bytes(data)
        link = folder / "snapshots" / commit / name
        link.parent.mkdir(parents=True, exist_ok=True)
        link.symlink_to(os.path.relpath(blob, link.parent))
    for ref in refs:
        path = folder / "refs" / ref
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(commit)  # no newline, as huggingface_hub writes it
    return commit


def directory_files(directory: Path) -> dict[str, Path]:
    """Every file under `directory`, by its path relative to it (a checkpoint as repository files)."""
    return {p.relative_to(directory).as_posix(): p for p in sorted(directory.rglob("*")) if p.is_file()}


def parquet_bytes(**columns) -> bytes:
    """A parquet file of these columns, in row groups of 3 rows (so readers stream it in batches)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    buffer = io.BytesIO()
    pq.write_table(pa.table(columns), buffer, row_group_size=3)
    return buffer.getvalue()
