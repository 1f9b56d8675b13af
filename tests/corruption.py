"""Random damage to a file's bytes, shared by the property tests of every tier."""

from __future__ import annotations

from hypothesis import strategies as st


def corrupt(data: bytes, how: str, where: float, byte: int) -> bytes:
    """One corruption of a file: a flipped byte, a cut, an inserted or a deleted byte."""
    if not data:
        return bytes([byte])
    at = min(int(where * len(data)), len(data) - 1)
    if how == "flip":
        return data[:at] + bytes([data[at] ^ (byte or 1)]) + data[at + 1 :]
    if how == "truncate":
        return data[:at]
    if how == "insert":
        return data[:at] + bytes([byte]) + data[at:]
    return data[:at] + data[at + 1 :]


CORRUPTIONS = st.tuples(st.sampled_from(["flip", "truncate", "insert", "delete"]), st.floats(0, 1), st.integers(0, 255))
