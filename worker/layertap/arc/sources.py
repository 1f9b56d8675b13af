"""Dataset files, local or on gs://, opened as seekable binary streams.

A gs:// object is read in ranged requests through `layertap.store.fs`, so a multi-GB
jsonl streams instead of being downloaded first, and parquet can seek to its footer.
"""

from __future__ import annotations

import io
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

from layertap.errors import LayerTapError

READ_CHUNK_BYTES = 8 * 1024 * 1024


@dataclass(frozen=True)
class Source:
    """One dataset file: `name` is what errors show (a path or gs:// URI)."""

    name: str
    _store: object | None = None  # a layertap.store.fs store for gs://, None for local files
    _key: str = ""
    _size: int = 0

    @property
    def file_name(self) -> str:
        return self.name.rsplit("/", 1)[-1]

    def open(self) -> BinaryIO:
        if self._store is None:
            return open(self.name, "rb")
        return io.BufferedReader(_RangeReader(self._store, self._key, self._size), READ_CHUNK_BYTES)

    def sibling(self, file_name: str) -> Source | None:
        """The file `file_name` in the same directory, if it exists."""
        if self._store is None:
            path = Path(self.name).with_name(file_name)
            return Source(str(path)) if path.is_file() else None
        return _gcs_object(self._store, f"{self._key.rpartition('/')[0]}/{file_name}".lstrip("/"))


@contextmanager
def open_parquet(source: Source) -> Iterator[Any]:
    """A `pyarrow.parquet.ParquetFile` read through the source's stream; a file that is not
    parquet is an error naming it."""
    import pyarrow as pa  # only parquet inputs need pyarrow
    import pyarrow.parquet as pq

    with source.open() as raw:
        try:
            parquet = pq.ParquetFile(raw)
        except (pa.ArrowException, OSError) as error:
            raise LayerTapError(f"{source.name}: not a readable parquet file ({error})") from None
        yield parquet


def list_sources(uri: str, suffixes: tuple[str, ...], what: str) -> list[Source]:
    """The file at `uri`, or the files directly in the directory `uri` whose names end
    with `suffixes`, sorted by name."""
    if uri.startswith("gs://"):
        return _list_gcs(uri.rstrip("/"), suffixes, what)
    path = Path(uri)
    if not path.exists():
        raise LayerTapError(f"{path}: no such file or directory")
    if path.is_file():
        return [Source(str(path))]
    files = sorted(p for p in path.iterdir() if p.is_file() and p.name.endswith(suffixes))
    if not files:
        raise LayerTapError(f"{path}: no {what} files ({', '.join(suffixes)}) in this directory")
    return [Source(str(p)) for p in files]


def _list_gcs(uri: str, suffixes: tuple[str, ...], what: str) -> list[Source]:
    from layertap.store.fs import open_store

    store = open_store(uri)
    directory = store.list("")
    if directory:
        chosen = sorted(k for k in directory if "/" not in k and k.endswith(suffixes))
        if not chosen:
            raise LayerTapError(f"{uri}: no {what} files ({', '.join(suffixes)}) under this prefix")
        return [_gcs_source(store, k, directory[k]) for k in chosen]
    parent, _, name = uri.rpartition("/")
    if parent == "gs:/":
        raise LayerTapError(f"{uri}: give a path inside the bucket")
    source = _gcs_object(open_store(parent), name)
    if source is None:
        raise LayerTapError(f"{uri}: no such object or prefix (is the path right, and readable?)")
    return [source]


def _gcs_source(store, key: str, size: int) -> Source:
    return Source(f"{store.uri}/{key}", store, key, size)


def _gcs_object(store, key: str) -> Source | None:
    blob = store.bucket.get_blob(f"{store.prefix}/{key}" if store.prefix else key)
    return None if blob is None else _gcs_source(store, key, blob.size)


class _RangeReader(io.RawIOBase):
    """A read-only, seekable view of one object, fetched in ranged reads."""

    def __init__(self, store, key: str, size: int):
        self.store, self.key, self.size, self.position = store, key, size, 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self.position

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self.position, io.SEEK_END: self.size}[whence]
        self.position = max(0, base + offset)
        return self.position

    def readinto(self, buffer) -> int:
        end = min(self.size, self.position + len(buffer))
        if end <= self.position:
            return 0
        data = self.store.read(self.key, self.position, end)
        buffer[: len(data)] = data
        self.position += len(data)
        return len(data)
