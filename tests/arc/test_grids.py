from __future__ import annotations

import numpy as np
import pytest

from layertap.arc.grids import GridError, to_grid


def test_valid_grid_becomes_a_read_only_int8_array() -> None:
    grid = to_grid([[0, 9], [3, 4]])
    assert grid.dtype == np.int8 and grid.shape == (2, 2)
    assert not grid.flags.writeable
    assert to_grid([[7] * 30] * 30).shape == (30, 30)
    assert to_grid([[np.int64(3)]]).tolist() == [[3]]


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        ([], "non-empty list of rows"),
        ("0123", "non-empty list of rows, got a str"),
        ([[1, 2], [3]], r"not rectangular: row 0 has 2 cells, row 1 has 1"),
        ([[]], r"size 1x0 is outside 1\.\.30"),
        ([[0] * 31], r"size 1x31 is outside 1\.\.30"),
        ([[0]] * 31, r"size 31x1 is outside"),
        ([[0, 10]], r"cell \(0, 1\) is 10, expected 0\.\.9"),
        ([[0], [-1]], r"cell \(1, 0\) is -1"),
        ([[0, 1.5]], r"cell \(0, 1\) is 1\.5, expected an integer"),
        ([[0, "1"]], r"cell \(0, 1\) is '1'"),
        ([[True]], r"cell \(0, 0\) is True, expected an integer"),
        (np.zeros((2, 2), dtype=np.float32), "cells are float32, expected integers"),
        ([[0], 5], "row 1 is a int"),
        ([[[0]]], r"cell \(0, 0\) is \[0\]"),
        (np.zeros((2, 2, 1), dtype=np.int8), "expected 2 dimensions"),
    ],
)
def test_invalid_grids_say_why(value, reason) -> None:
    with pytest.raises(GridError, match=reason):
        to_grid(value)
