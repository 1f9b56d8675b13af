"""Directories (checkpoints) from any store, as local paths: a gs:// prefix is copied into a
cache once and refreshed object by object when a version changes; a local path is used
where it is."""

from __future__ import annotations

import json
import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from layertap.errors import LayerTapError
from layertap.io.local import contained_path, temporary_path
from layertap.io.store import is_gcs, open_store, split_gcs

STAMP_FILE = ".layertap-fetched.json"  # key -> version of each file copied


def fetch_dir(uri: str, cache_dir: str | os.PathLike, *, threads: int = 8) -> Path:
    """A local copy of a directory: gs://bucket/path is copied into `cache_dir` (only the
    objects whose version changed since the last fetch); a local path is returned as is."""
    if not is_gcs(uri):
        path = Path(uri)
        if not path.is_dir():
            raise LayerTapError(f"{uri}: no such directory")
        return path
    store = open_store(uri)
    bucket, prefix = split_gcs(uri)
    target = Path(cache_dir) / bucket / prefix
    target.mkdir(parents=True, exist_ok=True)
    stamp_path = target / STAMP_FILE
    stamps = json.loads(stamp_path.read_text()) if stamp_path.exists() else {}
    objects = store.list("")
    if not objects:
        raise LayerTapError(f"{uri}: no objects under this prefix (is the path right, and readable?)")

    def copy(key: str) -> tuple[str, str]:
        path, version = contained_path(target, key), objects[key].version
        if stamps.get(key) != version or not path.exists():
            tmp = temporary_path(path)
            try:
                store.download(key, tmp)
                os.replace(tmp, path)
            finally:
                tmp.unlink(missing_ok=True)
        return key, version

    with ThreadPoolExecutor(threads) as pool:
        fetched = dict(pool.map(copy, sorted(objects)))
    # Several processes on one host may fetch into the same cache: replace, never rewrite.
    tmp = temporary_path(stamp_path)
    tmp.write_text(json.dumps(fetched, sort_keys=True))
    os.replace(tmp, stamp_path)
    return target
