"""The shard file: the safetensors layout, written from chunks without copying them.

A shard is a standard safetensors file (8-byte little-endian header length, a JSON
header, then the tensors back to back), so `safetensors.safe_open(path, "np")` reads it.
We write it ourselves because each tensor arrives as several chunks (one per unit of
work): streaming them avoids building one big array per tensor first.

Tensors are ordered by element size, largest first (as safetensors itself does), so
that every tensor starts at an offset aligned to its element size and can be memory-
mapped as is.
"""

from __future__ import annotations

import json
import struct
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import crc32c
import numpy as np

from layertap.io import crc
from layertap.store.dtypes import FROM_SAFETENSORS, SAFETENSORS_NAMES

HEADER_ALIGN = 8


@dataclass(frozen=True)
class TensorInfo:
    """Where one tensor lives in a shard file."""

    dtype: np.dtype
    shape: tuple[int, ...]
    offset: int  # from the start of the file
    nbytes: int


def plan(
    tensors: dict[str, Sequence[np.ndarray]], metadata: dict[str, str]
) -> tuple[bytes, list[tuple[str, Sequence[np.ndarray]]]]:
    """Header bytes and the tensor order for `{name: chunks}` (chunks concatenate on axis 0)."""
    ordered = sorted(tensors.items(), key=lambda item: (-item[1][0].dtype.itemsize, item[0]))
    entries: dict[str, object] = {"__metadata__": metadata}
    offset = 0
    for name, chunks in ordered:
        first = chunks[0]
        rows = sum(chunk.shape[0] for chunk in chunks)
        nbytes = sum(chunk.nbytes for chunk in chunks)
        entries[name] = {
            "dtype": SAFETENSORS_NAMES[first.dtype],
            "shape": [rows, *first.shape[1:]],
            "data_offsets": [offset, offset + nbytes],
        }
        offset += nbytes
    header = json.dumps(entries, separators=(",", ":")).encode()
    header += b" " * (-len(header) % HEADER_ALIGN)
    return struct.pack("<Q", len(header)) + header, ordered


def buffers(tensors: dict[str, Sequence[np.ndarray]], metadata: dict[str, str]) -> Iterator[memoryview]:
    """The shard file's bytes, as a sequence of buffers (no tensor data is copied)."""
    return ShardBytes(tensors, metadata).blocks()


BLOCK_BYTES = 1 << 20  # small enough to stay in the CPU's cache between its CRC and its copy


class ShardBytes:
    """A shard file as blocks to write, each tensor's CRC32C (readers check them) taken as its
    blocks go by: a block is hashed and then copied by the store while it is still in the
    CPU's cache, so the data crosses main memory once. The whole file's CRC32C (the store's
    checksum) is combined from the tensors', not hashed again (a second pass cost the writer
    about 12% of its throughput on 2 cores). Both are complete once `blocks()` has been
    read to the end."""

    def __init__(self, tensors: dict[str, Sequence[np.ndarray]], metadata: dict[str, str]) -> None:
        self.header, self._ordered = plan(tensors, metadata)
        self.tensor_crcs: dict[str, str] = {}
        self._parts: list[tuple[int, int]] = []  # (crc, length) of the header and each tensor

    def blocks(self, size: int = BLOCK_BYTES) -> Iterator[memoryview]:
        self._parts = [(crc32c.crc32c(self.header), len(self.header))]
        yield memoryview(self.header)
        for name, chunks in self._ordered:
            value, length = 0, 0
            for chunk in chunks:
                view = _bytes_of(chunk)
                for start in range(0, len(view), size):
                    block = view[start : start + size]
                    value = crc32c.crc32c(block, value)
                    length += len(block)
                    yield block
            self.tensor_crcs[name] = f"{value:08x}"
            self._parts.append((value, length))

    def crc32c(self) -> str:
        """The file's CRC32C, once its blocks have all been read."""
        if len(self._parts) != len(self._ordered) + 1:
            raise RuntimeError("the shard's blocks have not all been read")
        return f"{crc.combine_all(self._parts):08x}"


MAX_HEADER_BYTES = 100_000_000  # safetensors refuses larger headers too


def _bytes_of(chunk: np.ndarray) -> memoryview:
    return memoryview(np.ascontiguousarray(chunk).reshape(-1).view(np.uint8))


def header_size(prefix: bytes) -> int:
    """Bytes from the file start to the first tensor, from (at least) the first 8 bytes."""
    if len(prefix) < 8:
        raise ValueError(f"{len(prefix)} bytes, shorter than a safetensors header's size field")
    size = struct.unpack("<Q", prefix[:8])[0]
    if size > MAX_HEADER_BYTES:  # damaged: never read that much to find out
        raise ValueError(f"a header of {size} bytes, over safetensors' {MAX_HEADER_BYTES}")
    return 8 + size


def parse_header(prefix: bytes) -> tuple[int, dict]:
    """(header length incl. the 8-byte size, parsed JSON) from the first bytes of a shard."""
    size = header_size(prefix) - 8
    if len(prefix) < 8 + size:
        raise ValueError(f"need {8 + size} bytes of header, got {len(prefix)}")
    return 8 + size, json.loads(prefix[8 : 8 + size])


def tensor_table(header_len: int, header: dict) -> dict[str, TensorInfo]:
    table = {}
    for name, entry in header.items():
        if name == "__metadata__":
            continue
        begin, end = entry["data_offsets"]
        table[name] = TensorInfo(
            FROM_SAFETENSORS[entry["dtype"]], tuple(entry["shape"]), header_len + begin, end - begin
        )
    return table
