"""A gs://bucket/prefix as a Store (google-cloud-storage). Objects are immutable once
written; uploads are resumable, preconditioned and retried; reads are ranged."""

from __future__ import annotations

import base64
import bisect
import contextlib
import functools
import io
import itertools
import os
import struct
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import BinaryIO

import crc32c

from layertap.errors import LayerTapError
from layertap.io.store import ObjectInfo, split_gcs
from layertap_api.contract import ENV_GCS_RETRY_SECONDS

# A resumable upload sends the object in chunks of this size, one request each; a failed
# chunk is retried from the last byte the server confirmed (a multiple of 256 KiB, as GCS
# requires). google-cloud-storage's own default: each request's round trip is a small share
# of its transfer (with 16 MiB chunks the GCS emulator took 31 MB/s, with 100 MiB 83 MB/s;
# docs/benchmarks.md, host path). Each upload holds one chunk in memory while it is sent.
UPLOAD_CHUNK_BYTES = 100 * 1024 * 1024
MULTIPART_LIMIT_BYTES = 8 * 1024 * 1024  # google-cloud-storage uploads larger objects resumably
# Retries with exponential backoff on 408/429/5xx and dropped connections, for this long
# (LAYERTAP_GCS_RETRY_SECONDS overrides it).
RETRY_SECONDS = 300.0
READ_CHUNK_BYTES = 8 * 1024 * 1024  # a stream's buffer: one ranged request per chunk


def crc32c_hex(value: int) -> str:
    return f"{value:08x}"


def crc32c_from_gcs(b64: str) -> str:
    """GCS reports CRC32C as base64 of the big-endian 32-bit value."""
    return crc32c_hex(struct.unpack(">I", base64.b64decode(b64))[0])


def crc32c_to_gcs(hex_value: str) -> str:
    return base64.b64encode(struct.pack(">I", int(hex_value, 16))).decode()


def _explain_gcs_errors(method):
    """Turn the GCS errors a user can fix into a LayerTapError that says how."""

    @functools.wraps(method)
    def wrapper(self, *args, **kwargs):
        from google.api_core.exceptions import Forbidden, NotFound, Unauthorized

        try:
            return method(self, *args, **kwargs)
        except (Forbidden, Unauthorized) as error:
            raise LayerTapError(
                f"{self.uri}: access denied ({error.message}); the worker's service account needs "
                "roles/storage.objectUser on the bucket (Workload Identity on GKE, "
                "`gcloud auth application-default login` locally)"
            ) from None
        except NotFound as error:
            if "bucket" in str(error.message).lower():
                raise LayerTapError(f"{self.uri}: the bucket does not exist") from None
            raise

    return wrapper


class GcsStore:
    """A gs://bucket/prefix. Objects are immutable once written; uploads are resumable.

    Uploads carry an `ifGenerationMatch` precondition, which makes every retry safe: a
    retried upload that had in fact succeeded finds the object there (412) and is accepted
    when its CRC32C matches, so an object is never written twice.
    """

    def __init__(self, uri: str) -> None:
        self.uri = uri.rstrip("/")
        bucket_name, self.prefix = split_gcs(uri)
        self.bucket = _client().bucket(bucket_name)

    def local_path(self, key: str) -> None:
        return None

    def _name(self, key: str) -> str:
        return f"{self.prefix}/{key}" if self.prefix else key

    @_explain_gcs_errors
    def read(self, key: str, start: int = 0, end: int | None = None) -> bytes:
        from google.api_core.exceptions import NotFound

        if end is not None and end <= start:
            return b""  # GCS answers an empty range with 416, not with nothing
        blob = self.bucket.blob(self._name(key))
        try:
            whole = start == 0 and end is None  # only a whole object can be checked against its CRC32C
            return blob.download_as_bytes(
                start=start,
                end=None if end is None else end - 1,  # inclusive here
                retry=_retry(),
                checksum="auto" if whole else None,
            )
        except NotFound as error:
            raise FileNotFoundError(f"{self.uri}/{key}") from error

    def open(self, key: str) -> BinaryIO:
        info = self.stat(key)
        if info is None:
            raise FileNotFoundError(f"{self.uri}/{key}")
        return io.BufferedReader(_RangeReader(self, key, info.size), READ_CHUNK_BYTES)

    @_explain_gcs_errors
    def stat(self, key: str) -> ObjectInfo | None:
        blob = self.bucket.get_blob(self._name(key), retry=_retry())
        return None if blob is None else _info(blob)

    @_explain_gcs_errors
    def exists(self, key: str) -> bool:
        return self.bucket.blob(self._name(key)).exists(retry=_retry())

    @_explain_gcs_errors
    def put(self, key: str, buffers: Iterable[memoryview], crc32c: Callable[[], str] | None = None) -> tuple[int, str]:
        # streamed from the buffers themselves: a shard is never assembled in memory. A CRC
        # the caller took on the way is not taken again (GCS checks the object against it).
        stream = BufferStream(buffers)
        if crc32c is not None:
            stream.checksum = crc32c()
        self._upload(key, stream, stream.crc32c())
        return stream.size, stream.crc32c()

    @_explain_gcs_errors
    def write(self, key: str, data: bytes) -> None:
        stream = BufferStream([memoryview(data)])
        self._upload(key, stream, stream.crc32c(), replace=True)

    @_explain_gcs_errors
    def create(self, key: str, data: bytes) -> bytes | None:
        from google.api_core.exceptions import PreconditionFailed

        blob = self.bucket.blob(self._name(key))
        try:
            blob.upload_from_string(data, if_generation_match=0, retry=_retry(), checksum="crc32c")
            return None
        except PreconditionFailed:
            return self.read(key)

    @_explain_gcs_errors
    def list(self, prefix: str) -> dict[str, ObjectInfo]:
        base = self._name(prefix).rstrip("/") + "/" if (prefix or self.prefix) else ""
        cut = len(self.prefix) + 1 if self.prefix else 0
        return {
            blob.name[cut:]: _info(blob)
            for blob in self.bucket.list_blobs(prefix=base, retry=_retry())
            if not blob.name.endswith("/")  # folder placeholders some tools create
        }

    @_explain_gcs_errors
    def names(self, limit: int) -> set[str]:
        base = self._name("").rstrip("/") + "/" if self.prefix else ""
        listing = self.bucket.list_blobs(prefix=base, delimiter="/", max_results=limit, retry=_retry())
        files = {blob.name[len(base) :] for blob in listing}  # the listing's pages are read here, then its folders
        folders = {prefix[len(base) :].rstrip("/") for prefix in listing.prefixes}
        return set(itertools.islice((name for name in files | folders if name), limit))

    @_explain_gcs_errors
    def download(self, key: str, path: Path) -> None:
        self.bucket.blob(self._name(key)).download_to_filename(str(path), retry=_retry(), checksum="auto")

    @_explain_gcs_errors
    def delete(self, key: str) -> None:
        from google.api_core.exceptions import NotFound

        with contextlib.suppress(NotFound):
            self.bucket.blob(self._name(key)).delete(retry=_retry())

    def remove_temporaries(self) -> int:
        return 0  # a GCS object only exists once its upload completed

    def _upload(self, key: str, data: BufferStream, crc: str, replace: bool = False) -> None:
        """Upload `data` under `key` exactly once, resumably, with retries."""
        from google.api_core.exceptions import PreconditionFailed

        blob = self.bucket.blob(self._name(key), chunk_size=UPLOAD_CHUNK_BYTES)
        generation = 0  # "only if absent"
        if replace:
            existing = self.bucket.get_blob(self._name(key), retry=_retry())
            generation = existing.generation if existing is not None else 0
        for _ in range(3):
            try:
                data.seek(0)
                blob.upload_from_file(
                    data,
                    size=data.size,
                    if_generation_match=generation,
                    # Objects over 8 MiB go up resumably: GCS checks the whole object
                    # against this CRC32C before it exists (the client's own check would
                    # hash it again, 20x slower). Smaller ones go in one request, checked
                    # by the client.
                    checksum="crc32c" if data.size <= MULTIPART_LIMIT_BYTES else None,
                    crc32c_checksum_value=crc32c_to_gcs(crc),
                    retry=_retry(),
                )
                if _same_object(blob, data.size, crc):
                    return
                # The server stored other bytes than we sent (seen with emulators when a
                # retried chunk is applied twice): replace exactly that object.
                generation = blob.generation
            except PreconditionFailed:
                # Either our own earlier attempt succeeded (same bytes: done), or a crashed
                # writer left an uncommitted object under this name: replace exactly that one.
                existing = self.bucket.get_blob(self._name(key), retry=_retry())
                if existing is None:
                    generation = 0
                elif _same_object(existing, data.size, crc):
                    return
                else:
                    generation = existing.generation
        raise LayerTapError(
            f"{self.uri}/{key}: 3 uploads did not leave the bytes we sent; is another writer using this output?"
        )


def _info(blob) -> ObjectInfo:
    return ObjectInfo(blob.size, str(blob.generation), crc32c_from_gcs(blob.crc32c) if blob.crc32c else None)


def _same_object(blob, size: int, crc: str) -> bool:
    return blob.size == size and blob.crc32c is not None and crc32c_from_gcs(blob.crc32c) == crc


_CLIENTS: dict[str | None, object] = {}


def _client():
    """One client per endpoint (it holds a connection pool and is thread-safe)."""
    endpoint = os.environ.get("STORAGE_EMULATOR_HOST")
    if endpoint not in _CLIENTS:
        from google.auth.exceptions import DefaultCredentialsError
        from google.cloud import storage

        try:
            _CLIENTS[endpoint] = storage.Client()
        except DefaultCredentialsError:
            raise LayerTapError(
                "gs:// needs Google credentials: Workload Identity on GKE, or "
                "`gcloud auth application-default login` locally"
            ) from None
    return _CLIENTS[endpoint]


def _retry():
    from google.cloud.storage.retry import DEFAULT_RETRY

    seconds = float(os.environ.get(ENV_GCS_RETRY_SECONDS, RETRY_SECONDS))
    return DEFAULT_RETRY.with_delay(initial=0.5, multiplier=2.0, maximum=30.0).with_timeout(seconds)


class _Seekable(io.RawIOBase):
    """A read-only stream of `size` bytes at `position`; subclasses read into buffers."""

    size: int
    position: int

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


class BufferStream(_Seekable):
    """Buffers end to end as one seekable, read-only stream: an upload reads it a chunk at a
    time (and seeks back to retry one), so nothing but the chunk in flight is copied."""

    def __init__(self, buffers: Iterable[memoryview]):
        self.buffers = [memoryview(b).cast("B") for b in buffers]
        self.buffers = [b for b in self.buffers if len(b)]
        self.starts, total = [], 0
        for buffer in self.buffers:
            self.starts.append(total)
            total += len(buffer)
        self.size, self.position, self.checksum = total, 0, None

    def crc32c(self) -> str:
        if self.checksum is None:
            value = 0
            for buffer in self.buffers:
                value = crc32c.crc32c(buffer, value)
            self.checksum = crc32c_hex(value)
        return self.checksum

    def readinto(self, out) -> int:
        out = memoryview(out).cast("B")
        written = 0
        index = max(0, bisect.bisect_right(self.starts, self.position) - 1)
        while written < len(out) and index < len(self.buffers) and self.position < self.size:
            buffer, start = self.buffers[index], self.starts[index]
            begin = self.position - start
            n = min(len(buffer) - begin, len(out) - written)
            out[written : written + n] = buffer[begin : begin + n]
            written += n
            self.position += n
            index += 1
        return written


class _RangeReader(_Seekable):
    """A read-only, seekable view of one object, fetched in ranged reads."""

    def __init__(self, store: GcsStore, key: str, size: int):
        self.store, self.key, self.size, self.position = store, key, size, 0

    def readinto(self, buffer) -> int:
        end = min(self.size, self.position + len(buffer))
        if end <= self.position:
            return 0
        data = self.store.read(self.key, self.position, end)
        buffer[: len(data)] = data
        self.position += len(data)
        return len(data)
