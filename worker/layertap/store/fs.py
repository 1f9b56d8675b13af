"""One small storage layer for local paths and gs:// (google-cloud-storage).

A `Store` is rooted at a run's URI and addresses objects by relative keys
("shards/...", "commits/..."). Every write is atomic: a reader sees the whole object or
nothing (a rename locally; a single object upload on GCS). Set STORAGE_EMULATOR_HOST to
point the GCS client at an emulator (fake-gcs-server in the tests).
"""

from __future__ import annotations

import base64
import functools
import json
import os
import struct
import uuid
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import crc32c

from layertap.errors import LayerTapError

GCS_SCHEME = "gs://"
# A resumable upload sends the object in chunks of this size; a failed chunk is retried
# from the last byte the server confirmed (a multiple of 256 KiB, as GCS requires).
UPLOAD_CHUNK_BYTES = 16 * 1024 * 1024
MULTIPART_LIMIT_BYTES = 8 * 1024 * 1024  # google-cloud-storage uploads larger objects resumably
# Retries with exponential backoff on 408/429/5xx and dropped connections, for this long
# (LAYERTAP_GCS_RETRY_SECONDS overrides it).
RETRY_SECONDS = 300.0


def is_gcs(uri: str) -> bool:
    return uri.startswith(GCS_SCHEME)


def split_gcs(uri: str) -> tuple[str, str]:
    """gs://bucket/some/prefix -> ("bucket", "some/prefix")."""
    bucket, _, prefix = uri[len(GCS_SCHEME) :].partition("/")
    if not bucket:
        raise LayerTapError(f"{uri}: a gs:// URI needs a bucket name (gs://BUCKET/path)")
    return bucket, prefix.strip("/")


def crc32c_hex(value: int) -> str:
    return f"{value:08x}"


def crc32c_from_gcs(b64: str) -> str:
    """GCS reports CRC32C as base64 of the big-endian 32-bit value."""
    return crc32c_hex(struct.unpack(">I", base64.b64decode(b64))[0])


def crc32c_to_gcs(hex_value: str) -> str:
    return base64.b64encode(struct.pack(">I", int(hex_value, 16))).decode()


def open_store(uri: str) -> LocalStore | GcsStore:
    return GcsStore(uri) if is_gcs(uri) else LocalStore(uri)


class LocalStore:
    """A directory. Writes go to a temporary file in the same directory, then rename."""

    def __init__(self, uri: str) -> None:
        self.uri = uri
        self.root = Path(uri)

    def local_path(self, key: str) -> Path:
        return self.root / key

    def read(self, key: str, start: int = 0, end: int | None = None) -> bytes:
        with open(self.root / key, "rb") as f:
            f.seek(start)
            return f.read() if end is None else f.read(end - start)

    def exists(self, key: str) -> bool:
        return (self.root / key).exists()

    def put(self, key: str, buffers: Iterable[memoryview]) -> tuple[int, str]:
        """Write an object atomically (replacing any earlier one); returns (size, crc32c)."""
        path = self.root / key
        tmp = self._tmp(path)
        crc, size = crc32c.CRC32CHash(), 0
        try:
            with open(tmp, "wb") as f:
                for buf in buffers:
                    f.write(buf)
                    crc.update(buf)
                    size += len(buf)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, path)
        finally:
            tmp.unlink(missing_ok=True)
        self._sync_dir(path.parent)
        return size, crc.hexdigest()

    def write(self, key: str, data: bytes) -> None:
        self.put(key, [memoryview(data)])

    def create(self, key: str, data: bytes) -> bytes | None:
        """Create the object if absent: None if created, else the bytes already there."""
        path = self.root / key
        tmp = self._tmp(path)
        try:
            tmp.write_bytes(data)
            with open(tmp, "rb+") as f:
                os.fsync(f.fileno())
            os.link(tmp, path)  # atomic create-if-absent
        except FileExistsError:
            return path.read_bytes()
        finally:
            tmp.unlink(missing_ok=True)
        self._sync_dir(path.parent)
        return None

    def list(self, prefix: str) -> dict[str, int]:
        """{key: size} of the objects under `prefix` (a folder), temporary files excluded."""
        base = self.root / prefix
        if not base.is_dir():
            return {}
        return {
            path.relative_to(self.root).as_posix(): path.stat().st_size
            for path in base.rglob("*")
            if path.is_file() and not path.name.startswith(".tmp-")
        }

    def delete(self, key: str) -> None:
        (self.root / key).unlink(missing_ok=True)

    def remove_temporaries(self) -> int:
        """Delete temporary files left by a crashed writer; returns how many."""
        stale = list(self.root.rglob(".tmp-*")) if self.root.is_dir() else []
        for path in stale:
            path.unlink(missing_ok=True)
        return len(stale)

    @staticmethod
    def _tmp(path: Path) -> Path:
        path.parent.mkdir(parents=True, exist_ok=True)
        return path.with_name(f".tmp-{path.name}-{uuid.uuid4().hex[:12]}")

    @staticmethod
    def _sync_dir(path: Path) -> None:
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


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

    @_explain_gcs_errors
    def exists(self, key: str) -> bool:
        return self.bucket.blob(self._name(key)).exists(retry=_retry())

    @_explain_gcs_errors
    def put(self, key: str, buffers: Iterable[memoryview]) -> tuple[int, str]:
        data = b"".join(buffers)
        crc = crc32c_hex(crc32c.crc32c(data))
        self._upload(key, data, crc)
        return len(data), crc

    @_explain_gcs_errors
    def write(self, key: str, data: bytes) -> None:
        self._upload(key, data, crc32c_hex(crc32c.crc32c(data)), replace=True)

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
    def list(self, prefix: str) -> dict[str, int]:
        base = self._name(prefix).rstrip("/") + "/"
        cut = len(self.prefix) + 1 if self.prefix else 0
        return {blob.name[cut:]: blob.size for blob in self.bucket.list_blobs(prefix=base, retry=_retry())}

    @_explain_gcs_errors
    def delete(self, key: str) -> None:
        from google.api_core.exceptions import NotFound

        try:
            self.bucket.blob(self._name(key)).delete(retry=_retry())
        except NotFound:
            pass

    def remove_temporaries(self) -> int:
        return 0  # a GCS object only exists once its upload completed

    def _upload(self, key: str, data: bytes, crc: str, replace: bool = False) -> None:
        """Upload `data` under `key` exactly once, resumably, with retries."""
        import io

        from google.api_core.exceptions import PreconditionFailed

        blob = self.bucket.blob(self._name(key), chunk_size=UPLOAD_CHUNK_BYTES)
        generation = 0  # "only if absent"
        if replace:
            existing = self.bucket.get_blob(self._name(key), retry=_retry())
            generation = existing.generation if existing is not None else 0
        for _ in range(3):
            try:
                blob.upload_from_file(
                    io.BytesIO(data),
                    size=len(data),
                    if_generation_match=generation,
                    # Objects over 8 MiB go up resumably: GCS checks the whole object
                    # against this CRC32C before it exists (the client's own check would
                    # hash it again, 20x slower). Smaller ones go in one request, checked
                    # by the client.
                    checksum="crc32c" if len(data) <= MULTIPART_LIMIT_BYTES else None,
                    crc32c_checksum_value=crc32c_to_gcs(crc),
                    retry=_retry(),
                )
                if _same_object(blob, len(data), crc):
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
                elif _same_object(existing, len(data), crc):
                    return
                else:
                    generation = existing.generation
        raise LayerTapError(
            f"{self.uri}/{key}: 3 uploads did not leave the bytes we sent; is another writer using this output?"
        )


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

    seconds = float(os.environ.get("LAYERTAP_GCS_RETRY_SECONDS", RETRY_SECONDS))
    return DEFAULT_RETRY.with_delay(initial=0.5, multiplier=2.0, maximum=30.0).with_timeout(seconds)


def fetch_dir(uri: str, cache_dir: str | os.PathLike, *, threads: int = 8) -> Path:
    """A local copy of a directory: gs://bucket/path is downloaded into `cache_dir`
    (only the files whose generation changed since the last fetch); a local path is
    returned as is."""
    if not is_gcs(uri):
        path = Path(uri)
        if not path.is_dir():
            raise LayerTapError(f"{uri}: no such directory")
        return path
    store = GcsStore(uri)
    bucket, prefix = split_gcs(uri)
    target = Path(cache_dir) / bucket / prefix
    target.mkdir(parents=True, exist_ok=True)
    stamp_path = target / ".layertap-fetched.json"
    stamps = json.loads(stamp_path.read_text()) if stamp_path.exists() else {}
    base = store._name("").rstrip("/") + "/" if store.prefix else ""
    blobs = [b for b in store.bucket.list_blobs(prefix=base, retry=_retry()) if not b.name.endswith("/")]
    if not blobs:
        raise LayerTapError(f"{uri}: no objects under this prefix (is the path right, and readable?)")

    def download(blob) -> tuple[str, int]:
        relative = blob.name[len(base) :]
        path = target / relative
        if stamps.get(relative) == blob.generation and path.exists():
            return relative, blob.generation
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".tmp-{path.name}-{uuid.uuid4().hex[:12]}")
        try:
            blob.download_to_filename(str(tmp), retry=_retry(), checksum="auto")
            os.replace(tmp, path)
        finally:
            tmp.unlink(missing_ok=True)
        return relative, blob.generation

    with ThreadPoolExecutor(threads) as pool:
        fetched = dict(pool.map(download, blobs))
    # Several processes on one host may fetch into the same cache: replace, never rewrite.
    tmp = stamp_path.with_name(f".tmp-{stamp_path.name}-{uuid.uuid4().hex[:12]}")
    tmp.write_text(json.dumps(fetched, sort_keys=True))
    os.replace(tmp, stamp_path)
    return target
