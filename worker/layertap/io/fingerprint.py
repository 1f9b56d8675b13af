"""Content fingerprints of a run's inputs: the size and CRC32C of every file read.

GCS lists each object's CRC32C, so a gs:// input costs one metadata request; a local file
is read once and hashed (CRC32C runs at memory speed; the read is what costs, measured in
docs/benchmarks.md). A run records the fingerprints of its checkpoint and dataset files in
run.json, and a resume whose inputs changed is refused.
"""

from __future__ import annotations

from collections.abc import Iterable

import crc32c

from layertap.io.store import Store

CHUNK_BYTES = 8 * 1024 * 1024


def fingerprint(store: Store, key: str) -> dict:
    """{"bytes": size, "crc32c": 8 hex digits} of one object."""
    info = store.stat(key)
    if info is None:
        raise FileNotFoundError(f"{store.uri}/{key}")
    if info.crc32c is not None:
        return {"bytes": info.size, "crc32c": info.crc32c}
    value, size = 0, 0
    with store.open(key) as stream:
        while chunk := stream.read(CHUNK_BYTES):
            value = crc32c.crc32c(chunk, value)
            size += len(chunk)
    return {"bytes": size, "crc32c": f"{value:08x}"}


def fingerprints(store: Store, keys: Iterable[str]) -> dict[str, dict]:
    """{key: fingerprint} of several objects, by key."""
    return {key: fingerprint(store, key) for key in sorted(keys)}
