"""Storage dtypes: how activations are encoded in a shard and decoded on read.

float32, bfloat16 and float16 are plain casts. int8 stores each row (one token of one
layer) as round(x / scale) with scale = max|x| / 127 kept in float32 next to it, so the
error of any element is at most max|row| / 254 (see docs/format.md for measured values).
"""

from __future__ import annotations

import math

import ml_dtypes
import numpy as np

from layertap.errors import LayerTapError
from layertap.store.layout import TOKEN_COLUMNS
from layertap_api.spec import StorageDtype

# Keyed by the spec's StorageDtype names (a test checks that the two lists agree).
NUMPY_DTYPES: dict[str, np.dtype] = {
    "float32": np.dtype(np.float32),
    "bfloat16": np.dtype(ml_dtypes.bfloat16),
    "float16": np.dtype(np.float16),
    "int8": np.dtype(np.int8),
}

# safetensors' names for the dtypes a shard can hold.
SAFETENSORS_NAMES: dict[np.dtype, str] = {
    np.dtype(np.float32): "F32",
    np.dtype(ml_dtypes.bfloat16): "BF16",
    np.dtype(np.float16): "F16",
    np.dtype(np.int8): "I8",
    np.dtype(np.int16): "I16",
    np.dtype(np.int32): "I32",
    np.dtype(np.int64): "I64",
}
FROM_SAFETENSORS: dict[str, np.dtype] = {name: dtype for dtype, name in SAFETENSORS_NAMES.items()}

INT8_MAX = 127


def producer_dtype(storage_dtype: StorageDtype) -> np.dtype:
    """The dtype to hand activations to the writer in: the storage dtype itself, or float32
    for int8 (quantized per row when written)."""
    return NUMPY_DTYPES["float32" if storage_dtype == "int8" else storage_dtype]


def stored_bytes_per_row(storage_dtype: StorageDtype, num_layers: int, widths: int | list[int]) -> int:
    """Bytes one stored token takes in a shard: its activations at every layer and site
    (`widths`: the values of one token at each site, e.g. [896] for resid_post alone; with
    the int8 scales) and its index columns."""
    widths = [widths] if isinstance(widths, int) else widths
    scales = 4 * len(widths) if storage_dtype == "int8" else 0
    per_layer = sum(widths) * NUMPY_DTYPES[storage_dtype].itemsize + scales
    index = sum(np.dtype(dtype).itemsize * math.prod(shape) for dtype, shape in TOKEN_COLUMNS.values())
    return num_layers * per_layer + index


# What activations may be read as: floats (an integer dtype would truncate them).
READ_DTYPES = ("float32", "bfloat16", "float16", "float64")


def read_dtype(dtype: np.dtype | str | type | None) -> np.dtype | None:
    """The dtype asked for on read, checked: one of READ_DTYPES, or None (as stored)."""
    if dtype is None:
        return None
    try:
        asked = np.dtype(dtype)
    except TypeError:
        asked = None
    if asked is None or asked.name not in READ_DTYPES:
        raise LayerTapError(
            f"dtype {dtype!r} is not one activations can be read as: use one of {', '.join(READ_DTYPES)}, "
            "or None (as stored)"
        )
    return asked


def check_storage_dtype(name: str) -> StorageDtype:
    if name not in NUMPY_DTYPES:
        raise ValueError(f"storage dtype {name!r} is not one of {sorted(NUMPY_DTYPES)}")
    return name  # type: ignore[return-value]


def encode(x_ln: np.ndarray, storage_dtype: StorageDtype) -> tuple[np.ndarray, np.ndarray | None]:
    """[L, N, ...] activations -> (values in the storage dtype, [L, N] float32 scales or None;
    a row is one token's values at one layer, whatever their shape). Values already in a
    float storage dtype are returned as they are (a view stays a view: the shard is written
    layer by layer)."""
    target = NUMPY_DTYPES[storage_dtype]
    if storage_dtype != "int8":
        return x_ln.astype(target, copy=False), None
    x = x_ln.astype(np.float32, copy=False).reshape(*x_ln.shape[:2], -1)
    absmax_ln = np.abs(x).max(axis=-1)
    scale_ln = absmax_ln / INT8_MAX
    # An all-zero row encodes as zeros; any scale works, 1 avoids dividing by zero.
    safe_ln = np.where(scale_ln > 0, scale_ln, 1.0).astype(np.float32)
    q = np.rint(x / safe_ln[..., None])
    return np.clip(q, -INT8_MAX, INT8_MAX).astype(np.int8).reshape(x_ln.shape), scale_ln.astype(np.float32)


def decode(values_nd: np.ndarray, scale_n: np.ndarray | None, dtype: np.dtype | str | None) -> np.ndarray:
    """Stored rows -> activations; `dtype=None` keeps the stored dtype (int8 always decodes)."""
    if scale_n is not None:
        out = values_nd.astype(np.float32) * scale_n.reshape(-1, *[1] * (values_nd.ndim - 1))
        return out if dtype is None else out.astype(dtype, copy=False)
    if dtype is None or values_nd.dtype == np.dtype(dtype):
        return values_nd
    out = np.empty(values_nd.shape, dtype)
    cast_into(values_nd, out)
    return out


def cast_into(source: np.ndarray, out: np.ndarray) -> None:
    """out[...] = source, cast. bfloat16 to float32 is a 16-bit shift of the integer bits
    (bfloat16 is float32's top half: exact, NaNs included), which numpy vectorizes; the
    ml_dtypes cast converts element by element."""
    if source.dtype == NUMPY_DTYPES["bfloat16"] and out.dtype == np.float32:
        wide = out.view(np.uint32)
        np.copyto(wide, source.view(np.uint16), casting="unsafe")
        wide <<= 16
    else:
        np.copyto(out, source, casting="unsafe")
