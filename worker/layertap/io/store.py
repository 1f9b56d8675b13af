"""The Store interface: objects under a root (a local directory or a gs:// prefix),
addressed by relative keys ("shards/...", "commits/...").

Every write is atomic: a reader sees the whole object or nothing (a rename locally; a
single object upload on GCS). Set STORAGE_EMULATOR_HOST to point the GCS client at an
emulator (fake-gcs-server in the tests).
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Protocol

from layertap.errors import LayerTapError

GCS_SCHEME = "gs://"


@dataclass(frozen=True)
class ObjectInfo:
    """What a listing says about one object."""

    size: int
    version: str  # changes whenever the object is rewritten: the GCS generation, a local mtime
    crc32c: str | None = None  # 8 hex digits, where the listing has it for free (GCS)


class Store(Protocol):
    """A directory of objects, local or on GCS."""

    uri: str

    def local_path(self, key: str) -> Path | None:
        """The object's file, for a local store (memory-mapping); None on GCS."""

    def read(self, key: str, start: int = 0, end: int | None = None) -> bytes:
        """Bytes [start, end) of an object; FileNotFoundError if it does not exist."""

    def open(self, key: str) -> BinaryIO:
        """A seekable binary stream of the object (ranged reads on GCS)."""

    def stat(self, key: str) -> ObjectInfo | None:
        """The object's size and version, None if it does not exist."""

    def exists(self, key: str) -> bool: ...

    def list(self, prefix: str) -> dict[str, ObjectInfo]:
        """Objects under the folder `prefix` ("" for all), by key; temporary files excluded."""

    def names(self, limit: int) -> set[str]:
        """The names (objects and folders) right under the store's root, at most `limit` of
        them (one listing request on GCS, one directory read locally)."""

    def put(self, key: str, buffers: Iterable[memoryview], crc32c: Callable[[], str] | None = None) -> tuple[int, str]:
        """Write an object atomically from buffers, read once in order; returns (size, crc32c
        as 8 hex digits). `crc32c`: gives the buffers' CRC32C once they have all been read
        (the caller took it on the way); the store then hashes nothing itself."""

    def write(self, key: str, data: bytes) -> None:
        """Write (or replace) an object atomically."""

    def create(self, key: str, data: bytes) -> bytes | None:
        """Create the object if absent: None if created, else the bytes already there."""

    def download(self, key: str, path: Path) -> None:
        """Copy the object to a local file (checked against its CRC32C on GCS)."""

    def delete(self, key: str) -> None:
        """Delete the object if it exists."""

    def remove_temporaries(self) -> int:
        """Delete the temporary files of crashed writers; returns how many."""


def is_gcs(uri: str) -> bool:
    return uri.startswith(GCS_SCHEME)


def split_gcs(uri: str) -> tuple[str, str]:
    """gs://bucket/some/prefix -> ("bucket", "some/prefix")."""
    bucket, _, prefix = uri[len(GCS_SCHEME) :].partition("/")
    if not bucket:
        raise LayerTapError(f"{uri}: a gs:// URI needs a bucket name (gs://BUCKET/path)")
    return bucket, prefix.strip("/")


def free_bytes(uri: str) -> int | None:
    """Bytes free on the filesystem a local output is (or will be) on; None for gs://."""
    if is_gcs(uri):
        return None
    path = Path(uri).absolute()
    while not path.exists() and path != path.parent:  # not made yet: the disk it will be made on
        path = path.parent
    try:
        return shutil.disk_usage(path).free
    except OSError:
        return None


def open_store(uri: str | os.PathLike) -> Store:
    """The store rooted at `uri`: a gs://bucket/prefix or a local directory (a str or a path)."""
    location = os.fspath(uri) if isinstance(uri, os.PathLike) else uri
    if not isinstance(location, str):
        raise LayerTapError(
            f"{uri!r} is not a location: give a local directory (a str or a path) or gs://BUCKET/prefix"
        )
    uri = location
    if is_gcs(uri):
        from layertap.io.gcs import GcsStore  # only gs:// needs the GCS client

        return GcsStore(uri)
    from layertap.io.local import LocalStore

    return LocalStore(uri)
