"""Dataset files, local or on gs://, opened as seekable binary streams.

A gs:// object is read in ranged requests, so a multi-GB jsonl streams instead of being
downloaded first, and parquet can seek to its footer.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

from layertap.errors import LayerTapError
from layertap.io.store import Store, is_gcs, open_store


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

    def sibling(self, file_name: str) -> Source | None:
        """The file `file_name` in the same directory, if it exists."""
        key = f"{self.key.rpartition('/')[0]}/{file_name}".lstrip("/")
        return _source(self.store, key) if self.store.stat(key) is not None else None


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


def _source(store: Store, key: str) -> Source:
    root = store.uri.rstrip("/")
    name = f"{root}/{key}" if is_gcs(root) else str(Path(root) / key)
    return Source(name, store, key)
