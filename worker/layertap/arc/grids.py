"""ARC grids: validation of untrusted input into small numpy arrays."""

from __future__ import annotations

import numpy as np

MAX_SIDE = 30
NUM_COLOURS = 10


class GridError(ValueError):
    """A value that is not a valid ARC grid; the message says why."""


def to_grid(value: object) -> np.ndarray:
    """Validate `value` (nested lists or an array) and return it as an [H, W] int8 array.

    A grid is rectangular, 1..30 cells per side, and holds the integers 0..9.
    """
    if isinstance(value, np.ndarray):
        array = value
    else:
        if not isinstance(value, (list, tuple)) or not value:
            raise GridError(f"expected a non-empty list of rows, got {_describe(value)}")
        for r, row in enumerate(value):
            if not isinstance(row, (list, tuple)):
                raise GridError(f"row {r} is {_describe(row)}, expected a list of integers")
        widths = {len(row) for row in value}
        if len(widths) != 1:
            first = len(value[0])
            r = next(r for r, row in enumerate(value) if len(row) != first)
            raise GridError(f"not rectangular: row 0 has {first} cells, row {r} has {len(value[r])}")
        if not all(type(x) is int for row in value for x in row):  # the fast path: plain ints
            for r, row in enumerate(value):
                for c, x in enumerate(row):
                    if not isinstance(x, (int, np.integer)) or isinstance(x, bool):  # bool is no colour
                        raise GridError(f"cell ({r}, {c}) is {x!r}, expected an integer 0..9")
        array = np.asarray(value)
    if array.ndim != 2:
        raise GridError(f"expected 2 dimensions, got {array.ndim}")
    height, width = array.shape
    if not (1 <= height <= MAX_SIDE and 1 <= width <= MAX_SIDE):
        raise GridError(f"size {height}x{width} is outside 1..{MAX_SIDE} per side")
    if array.dtype.kind not in "iu":
        raise GridError(f"cells are {array.dtype}, expected integers 0..9")
    if array.min() < 0 or array.max() >= NUM_COLOURS:
        r, c = np.argwhere((array < 0) | (array >= NUM_COLOURS))[0]
        raise GridError(f"cell ({r}, {c}) is {int(array[r, c])}, expected 0..9")
    grid = array.astype(np.int8)
    grid.flags.writeable = False
    return grid


def _describe(value: object) -> str:
    if isinstance(value, (list, tuple)) and not value:
        return "an empty list"
    return f"a {type(value).__name__}"
