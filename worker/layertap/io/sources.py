"""Dataset files, local or on gs://, opened as seekable binary streams.

A gs:// object is read in ranged requests, so a multi-GB jsonl streams instead of being
downloaded first, and parquet can seek to its footer. `recording()` collects the files a
reader lists, whatever its format: they are the dataset's content, fingerprinted into the
run's identity.
"""

from __future__ import annotations

import gzip
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

from layertap.errors import LayerTapError
from layertap.io.fingerprint import fingerprint
from layertap.io.store import Store, is_gcs, open_store

_recorded: ContextVar[dict[str, Source] | None] = ContextVar("layertap_recorded_sources", default=None)


@dataclass(frozen=True)
class Source:
    """One dataset file: the object `key` of `store`; `name` is what errors show."""

    name: str
    store: Store
    key: str

    @property
    def file_name(self) -> str:
        return self.key.rsplit("/", 1)[-1]

    def open(self) -> BinaryIO:
        return self.store.open(self.key)

    def fingerprint(self) -> dict:
        """{"bytes", "crc32c"} of the file's content."""
        return fingerprint(self.store, self.key)

    def sibling(self, file_name: str) -> Source | None:
        """The file `file_name` in the same directory, if it exists."""
        key = f"{self.key.rpartition('/')[0]}/{file_name}".lstrip("/")
        return _source(self.store, key) if self.store.stat(key) is not None else None


def iter_lines(source: Source) -> Iterator[tuple[int, str | None]]:
    """(line number from 1, text) of each line of a text file (`.gz` decompressed on the
    fly); text is None for a line that is not valid UTF-8. A truncated or corrupt gzip
    stream is an error naming the file and the last line read whole."""
    number = 0
    with source.open() as raw:
        binary = gzip.GzipFile(fileobj=raw) if source.name.endswith(".gz") else raw
        try:
            for number, data in enumerate(binary, start=1):
                try:
                    yield number, data.decode("utf-8")
                except UnicodeDecodeError:
                    yield number, None
        except (EOFError, gzip.BadGzipFile, zlib.error) as error:
            raise LayerTapError(
                f"{source.name}: the gzip stream is truncated or corrupt after line {number}, the last one read whole "
                f"({error}); the file is incomplete: copy or write it again"
            ) from None


@contextmanager
def open_parquet(source: Source) -> Iterator[Any]:
    """A `pyarrow.parquet.ParquetFile` read through the source's stream; a file that is not
    parquet, or one found damaged while it is read, is an error naming it."""
    import pyarrow as pa  # only parquet inputs need pyarrow
    import pyarrow.parquet as pq

    with source.open() as raw:
        try:
            # a damaged page surfaces while the rows are read, in the caller's loop, as well
            yield pq.ParquetFile(raw)
        except (pa.ArrowException, OSError, UnicodeDecodeError) as error:
            cause = " ".join(str(error).split())  # pyarrow's messages span lines
            raise LayerTapError(f"{source.name}: not a readable parquet file ({cause})") from None


def list_sources(uri: str, suffixes: tuple[str, ...], what: str) -> list[Source]:
    """The file at `uri`, or the files directly in the directory `uri` whose names end
    with `suffixes`, sorted by name."""
    if is_gcs(uri):
        return _list_gcs(uri.rstrip("/"), suffixes, what)
    path = Path(uri)
    if not path.exists():
        raise LayerTapError(f"{path}: no such file or directory")
    if path.is_file():
        return [_source(open_store(str(path.parent)), path.name)]
    files = sorted(p.name for p in path.iterdir() if p.is_file() and p.name.endswith(suffixes))
    if not files:
        raise LayerTapError(f"{path}: no {what} files ({', '.join(suffixes)}) in this directory")
    store = open_store(str(path))
    return [_source(store, name) for name in files]


def _list_gcs(uri: str, suffixes: tuple[str, ...], what: str) -> list[Source]:
    store = open_store(uri)
    directory = store.list("")
    if directory:
        chosen = sorted(key for key in directory if "/" not in key and key.endswith(suffixes))
        if not chosen:
            raise LayerTapError(f"{uri}: no {what} files ({', '.join(suffixes)}) under this prefix")
        return [_source(store, key) for key in chosen]
    parent, _, name = uri.rpartition("/")
    if parent == "gs:/":
        raise LayerTapError(f"{uri}: give a path inside the bucket")
    parent_store = open_store(parent)
    if parent_store.stat(name) is None:
        raise LayerTapError(f"{uri}: no such object or prefix (is the path right, and readable?)")
    return [_source(parent_store, name)]


@contextmanager
def recording() -> Iterator[dict[str, Source]]:
    """Every source listed while the block runs (in this context), by name."""
    token = _recorded.set({})
    try:
        yield _recorded.get()
    finally:
        _recorded.reset(token)


def named_source(store: Store, key: str, name: str) -> Source:
    """A dataset file shown, and recorded in the run's identity, as `name` rather than where it
    lies (an hf:// file by its repository and commit, not by its path in this host's cache)."""
    return _recorded_source(Source(name, store, key))


def _source(store: Store, key: str) -> Source:
    root = store.uri.rstrip("/")
    return _recorded_source(Source(f"{root}/{key}" if is_gcs(root) else str(Path(root) / key), store, key))


def _recorded_source(source: Source) -> Source:
    recorded = _recorded.get()
    if recorded is not None:
        recorded[source.name] = source
    return source
