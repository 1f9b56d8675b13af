"""CRC32C of data end to end from the CRC32Cs of its parts, without reading it again.

A shard's writer hashes each tensor (readers check them) and the store needs the whole file's
CRC32C: combining the parts' values turns a second pass over every byte into a few hundred
integer operations per part. The algebra is zlib's crc32_combine, for the Castagnoli
polynomial: crc(A + B) = crc(A) * x^(8 len(B)) mod P xor crc(B), in CRC32C's bit-reflected
representation (the top bit is x^0).
"""

from __future__ import annotations

from collections.abc import Iterable

POLYNOMIAL = 0x82F63B78  # Castagnoli, bit-reflected
_ONE = 1 << 31  # the polynomial 1 (x^0)


def _multiply(a: int, b: int) -> int:
    """a * b mod P, both bit-reflected."""
    product, bit = 0, _ONE
    while a:
        if a & bit:
            product ^= b
            a ^= bit
        bit >>= 1
        b = (b >> 1) ^ POLYNOMIAL if b & 1 else b >> 1
    return product


def _squares() -> list[int]:
    """x^(2^k) mod P for k = 0 .. 63 (lengths below 2^61 bytes)."""
    table = [_ONE >> 1]  # x^1
    for _ in range(63):
        table.append(_multiply(table[-1], table[-1]))
    return table


_X_TO_2K = _squares()


def _shift(length: int) -> int:
    """x^(8 length) mod P: what appending `length` zero bytes multiplies a CRC's state by."""
    factor, k, n = _ONE, 3, length
    while n:
        if n & 1:
            factor = _multiply(_X_TO_2K[k], factor)
        n >>= 1
        k += 1
    return factor


def combine(first: int, second: int, second_length: int) -> int:
    """The CRC32C of A + B from crc(A), crc(B) and len(B)."""
    return _multiply(_shift(second_length), first) ^ second


def combine_all(parts: Iterable[tuple[int, int]]) -> int:
    """The CRC32C of the parts end to end, from (crc, length) of each, in order."""
    value = 0
    for crc, length in parts:
        value = combine(value, crc, length)
    return value
