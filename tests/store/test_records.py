"""TokenRecords: the one record type of stored tokens, checked against the shard's columns."""

from __future__ import annotations

import dataclasses
from typing import get_args

import numpy as np
import pytest

from layertap.store import TokenRecords, dtypes, layout
from layertap_api.spec import StorageDtype


def test_the_record_fields_are_the_activations_and_the_stored_columns():
    names = [field.name for field in dataclasses.fields(TokenRecords)]
    assert names == ["activations", *layout.TOKEN_COLUMNS]


def test_the_store_encodes_every_storage_dtype_the_spec_offers():
    assert set(dtypes.NUMPY_DTYPES) == set(get_args(StorageDtype))


def test_columns_are_cast_to_their_stored_dtypes_and_cell_defaults_to_none():
    n = 4
    records = TokenRecords.of(
        np.zeros((2, n, 8), np.float32),
        token_ids=np.arange(n),
        sample_index=np.zeros(n, np.int32),
        position=np.arange(n),
        segment=np.ones(n, np.int64),
    )
    assert {name: column.dtype.name for name, column in records.columns().items()} == {
        name: dtype for name, (dtype, _) in layout.TOKEN_COLUMNS.items()
    }
    assert records.cell.shape == (n, 3) and (records.cell == -1).all() and len(records) == n


@pytest.mark.parametrize(
    "columns, message",
    [
        ({"token_ids": np.arange(3)}, r"token_ids must be \[N=4\]"),
        ({"colour": np.arange(4)}, r"no column\(s\) \['colour'\]"),
        ({"cell": np.zeros((4, 2))}, r"cell must be \[N=4, 3\]"),
    ],
)
def test_malformed_columns_are_refused(columns, message):
    base = {name: np.arange(4) for name in ("token_ids", "sample_index", "position", "segment")}
    with pytest.raises(ValueError, match=message):
        TokenRecords.of(np.zeros((1, 4, 8), np.float32), **{**base, **columns})


def test_bytes_per_row_counts_activations_scales_and_columns():
    index = 4 + 8 + 4 + 2 + 3 * 2  # token id, sample, position, segment, cell
    assert dtypes.stored_bytes_per_row("bfloat16", 14, 896) == 14 * 896 * 2 + index
    assert dtypes.stored_bytes_per_row("int8", 2, 64) == 2 * (64 + 4) + index
    assert dtypes.producer_dtype("int8") == np.float32 and dtypes.producer_dtype("float16") == np.float16
