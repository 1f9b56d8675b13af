"""A shard's bytes, its tensors' checksums and the file's (combined from theirs) in one pass,
and the stream an upload reads a shard through."""

from __future__ import annotations

import io
import os

import crc32c
import numpy as np
import pytest

from layertap.io.crc import combine, combine_all
from layertap.io.gcs import BufferStream
from layertap.store import shardfile


@pytest.mark.parametrize("first, second", [(0, 0), (1, 0), (0, 5), (3, 7), (1000, 1), (12_345, 67_890), (1 << 20, 3)])
def test_combined_crc_equals_the_crc_of_the_concatenation(first, second):
    a, b = os.urandom(first), os.urandom(second)
    assert combine(crc32c.crc32c(a), crc32c.crc32c(b), second) == crc32c.crc32c(a + b)


def test_combining_many_parts():
    parts = [os.urandom(n) for n in (5, 0, 100, 7000, 1, 65_536)]
    assert combine_all((crc32c.crc32c(p), len(p)) for p in parts) == crc32c.crc32c(b"".join(parts))


def test_shard_blocks_carry_each_tensor_s_checksum_and_the_file_s():
    rng = np.random.default_rng(0)
    big = rng.standard_normal((3, 8, 4)).astype(np.float32)
    tensors = {"layer.1": [big[0, :5], big[0, 5:]], "token_ids": [np.arange(8, dtype=np.int32)], "empty": [big[0, :0]]}
    shard = shardfile.ShardBytes(tensors, {"format": "test"})
    with pytest.raises(RuntimeError, match="not all been read"):
        shard.crc32c()
    blocks = list(shard.blocks(size=48))  # smaller than a chunk: chunks are cut into blocks
    assert max(map(len, blocks[1:])) == 48
    data = b"".join(bytes(view) for view in blocks)
    assert data == b"".join(bytes(view) for view in shardfile.buffers(tensors, {"format": "test"}))
    assert shard.tensor_crcs["layer.1"] == f"{crc32c.crc32c(big[0].tobytes()):08x}"
    assert shard.tensor_crcs["token_ids"] == f"{crc32c.crc32c(np.arange(8, dtype=np.int32).tobytes()):08x}"
    assert shard.tensor_crcs["empty"] == "00000000"
    assert shard.crc32c() == f"{crc32c.crc32c(data):08x}"


def test_a_buffer_stream_reads_and_seeks_across_its_buffers():
    chunks = [b"abc", b"", b"defgh", b"i"]
    stream = BufferStream([memoryview(c) for c in chunks])
    assert stream.size == 9 and stream.crc32c() == f"{crc32c.crc32c(b'abcdefghi'):08x}"
    assert stream.read(2) == b"ab" and stream.read(4) == b"cdef" and stream.read() == b"ghi" and stream.read(1) == b""
    stream.seek(4)
    assert stream.read(3) == b"efg"
    stream.seek(-2, io.SEEK_END)
    assert stream.tell() == 7 and stream.read() == b"hi"
