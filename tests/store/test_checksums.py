"""A shard's bytes and its tensors' checksums in one pass, and the stream an upload reads a
shard through."""

from __future__ import annotations

import io

import crc32c
import numpy as np
from layertap.io.gcs import BufferStream
from layertap.store import shardfile


def test_shard_blocks_carry_each_tensor_s_checksum():
    rng = np.random.default_rng(0)
    big = rng.standard_normal((3, 8, 4)).astype(np.float32)
    tensors = {"layer.1": [big[0, :5], big[0, 5:]], "token_ids": [np.arange(8, dtype=np.int32)], "empty": [big[0, :0]]}
    shard = shardfile.ShardBytes(tensors, {"format": "test"})
    blocks = list(shard.blocks(size=48))  # smaller than a chunk: chunks are cut into blocks
    assert max(map(len, blocks[1:])) == 48
    data = b"".join(bytes(view) for view in blocks)
    assert data == b"".join(bytes(view) for view in shardfile.buffers(tensors, {"format": "test"}))
    assert shard.tensor_crcs["layer.1"] == f"{crc32c.crc32c(big[0].tobytes()):08x}"
    assert shard.tensor_crcs["token_ids"] == f"{crc32c.crc32c(np.arange(8, dtype=np.int32).tobytes()):08x}"
    assert shard.tensor_crcs["empty"] == "00000000"


def test_a_buffer_stream_reads_and_seeks_across_its_buffers():
    chunks = [b"abc", b"", b"defgh", b"i"]
    stream = BufferStream([memoryview(c) for c in chunks])
    assert stream.size == 9 and stream.crc32c() == f"{crc32c.crc32c(b'abcdefghi'):08x}"
    assert stream.read(2) == b"ab" and stream.read(4) == b"cdef" and stream.read() == b"ghi" and stream.read(1) == b""
    stream.seek(4)
    assert stream.read(3) == b"efg"
    stream.seek(-2, io.SEEK_END)
    assert stream.tell() == 7 and stream.read() == b"hi"
