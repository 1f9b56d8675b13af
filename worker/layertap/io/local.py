"""A local directory as a Store: writes go to a temporary file beside the target, then a
rename (or a hard link, for create-if-absent), each fsync'ed with its directory."""

from __future__ import annotations

import itertools
import os
import shutil
import uuid
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import BinaryIO

import crc32c as _crc32c

from layertap.errors import LayerTapError
from layertap.io.store import ObjectInfo

TMP_PREFIX = ".tmp-"


def contained_path(root: Path, key: str) -> Path:
    """`root / key`, refusing a key that would name a file outside `root` (absolute, or with a
    '..' part): keys come from stored records, listings and manifests, which may be damaged
    or written by someone else."""
    if key.startswith("/") or ".." in key.split("/"):
        raise LayerTapError(
            f"refusing the stored name {key!r} under {root}: it is absolute or climbs out with '..'; "
            "the record or listing that holds it is damaged"
        )
    return root / key


class LocalStore:
    def __init__(self, uri: str) -> None:
        self.uri = uri
        self.root = Path(uri)

    def _path(self, key: str) -> Path:
        return contained_path(self.root, key)

    def local_path(self, key: str) -> Path:
        return self._path(key)

    def read(self, key: str, start: int = 0, end: int | None = None) -> bytes:
        with open(self._path(key), "rb") as f:
            f.seek(start)
            return f.read() if end is None else f.read(end - start)

    def open(self, key: str) -> BinaryIO:
        return open(self._path(key), "rb")

    def stat(self, key: str) -> ObjectInfo | None:
        path = self._path(key)
        return _info(path.stat()) if path.is_file() else None

    def exists(self, key: str) -> bool:
        return self._path(key).exists()

    def list(self, prefix: str) -> dict[str, ObjectInfo]:
        base = self._path(prefix)
        if not base.is_dir():
            return {}
        return {
            path.relative_to(self.root).as_posix(): _info(path.stat())
            for path in base.rglob("*")
            if path.is_file() and not path.name.startswith(TMP_PREFIX)
        }

    def names(self, limit: int) -> set[str]:
        if not self.root.is_dir():
            return set()
        entries = (entry.name for entry in os.scandir(self.root) if not entry.name.startswith(TMP_PREFIX))
        return set(itertools.islice(entries, limit))

    def put(self, key: str, buffers: Iterable[memoryview], crc32c: Callable[[], str] | None = None) -> tuple[int, str]:
        path = self._path(key)
        tmp = temporary_path(path)
        crc, size = (_crc32c.CRC32CHash() if crc32c is None else None), 0
        try:
            with open(tmp, "wb") as f:
                for buf in buffers:
                    f.write(buf)
                    if crc is not None:
                        crc.update(buf)
                    size += len(buf)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, path)
        finally:
            tmp.unlink(missing_ok=True)
        _sync_dir(path.parent)
        return size, crc.hexdigest() if crc is not None else crc32c()

    def write(self, key: str, data: bytes) -> None:
        self.put(key, [memoryview(data)])

    def create(self, key: str, data: bytes) -> bytes | None:
        path = self._path(key)
        tmp = temporary_path(path)
        try:
            tmp.write_bytes(data)
            with open(tmp, "rb+") as f:
                os.fsync(f.fileno())
            os.link(tmp, path)  # atomic create-if-absent
        except FileExistsError:
            return path.read_bytes()
        finally:
            tmp.unlink(missing_ok=True)
        _sync_dir(path.parent)
        return None

    def download(self, key: str, path: Path) -> None:
        shutil.copyfile(self._path(key), path)

    def delete(self, key: str) -> None:
        self._path(key).unlink(missing_ok=True)

    def remove_temporaries(self) -> int:
        stale = list(self.root.rglob(f"{TMP_PREFIX}*")) if self.root.is_dir() else []
        for path in stale:
            path.unlink(missing_ok=True)
        return len(stale)


def temporary_path(path: Path) -> Path:
    """A fresh temporary name beside `path` (its directory created), for write-then-rename."""
    path.parent.mkdir(parents=True, exist_ok=True)
    return path.with_name(f"{TMP_PREFIX}{path.name}-{uuid.uuid4().hex[:12]}")


def _info(stat: os.stat_result) -> ObjectInfo:
    return ObjectInfo(stat.st_size, str(stat.st_mtime_ns))


def _sync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
