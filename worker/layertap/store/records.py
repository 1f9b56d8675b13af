"""Token records: the rows of stored tokens, one type from the runner through the writer to
the reader.

A record set holds activations and, per token, the index columns of
`layout.TOKEN_COLUMNS` (in their stored dtypes). The runner builds one per unit of work:
activations by site, each [L, N, *site shape] with layers in the run's order (a bare
[L, N, D] array is resid_post alone); the reader returns one per shard, layer and site
(activations [N, *site shape]).
"""

from __future__ import annotations

from dataclasses import dataclass, fields

import numpy as np

from layertap.store.layout import DEFAULT_SITE, TOKEN_COLUMNS


@dataclass(frozen=True)
class TokenRecords:
    activations: np.ndarray | dict[str, np.ndarray]  # a unit: site -> [L, N, ...]; read back: [N, ...]
    token_ids: np.ndarray  # [N] int32 (-1 for mean)
    sample_index: np.ndarray  # [N] int64, the sample's index in the dataset order
    position: np.ndarray  # [N] int32, the token's position in its sample (-1 for mean)
    segment: np.ndarray  # [N] int16, the token's segment label (-1 for mean)
    cell: np.ndarray  # [N, 3] int16, (row, col, colour) of the grid cell a token encodes, -1 if none

    @classmethod
    def of(
        cls, activations: np.ndarray | dict[str, np.ndarray], *, cell: np.ndarray | None = None, **columns: np.ndarray
    ) -> TokenRecords:
        """Records with the columns cast to their stored dtypes and checked against N = the
        activations' rows (cell None: no token is a grid cell). `activations`: [L, N, D] or
        [N, D] arrays, or site -> [L, N, ...] arrays."""
        if isinstance(activations, dict):
            rows = {np.shape(value)[1] if np.ndim(value) >= 2 else -1 for value in activations.values()}
            if len(rows) != 1:
                raise ValueError(f"every site needs the same rows [L, N, ...], got {_shapes(activations)}")
            n = rows.pop()
            activations = {site: np.asarray(value) for site, value in activations.items()}
        else:
            n = np.shape(activations)[-2] if np.ndim(activations) >= 2 else -1
            activations = np.asarray(activations)
        columns["cell"] = np.full((max(n, 0), 3), -1, np.int16) if cell is None else cell
        unknown = set(columns) - set(TOKEN_COLUMNS)
        if unknown:
            raise ValueError(f"token records have no column(s) {sorted(unknown)}")
        checked = {}
        for name, (dtype, row_shape) in TOKEN_COLUMNS.items():
            if name not in columns:
                raise ValueError(f"token records need the column {name}")
            column = np.asarray(columns[name])
            if column.shape != (n, *row_shape):
                want = ", ".join([f"N={n}", *map(str, row_shape)])
                raise ValueError(f"{name} must be [{want}], got {column.shape}")
            checked[name] = column.astype(dtype, copy=False)
        return cls(activations, **checked)

    def by_site(self) -> dict[str, np.ndarray]:
        """A unit's activations by site (a bare array is resid_post)."""
        return dict(self.activations) if isinstance(self.activations, dict) else {DEFAULT_SITE: self.activations}

    def __len__(self) -> int:
        return len(self.token_ids)

    def columns(self) -> dict[str, np.ndarray]:
        """The index columns by name, in `layout.TOKEN_COLUMNS` order."""
        return {name: getattr(self, name) for name in TOKEN_COLUMNS}

    @classmethod
    def concatenate(cls, parts: list[TokenRecords]) -> TokenRecords:
        """Records of one layer read back ([N, D] activations), end to end."""
        return cls(**{f.name: np.concatenate([getattr(p, f.name) for p in parts]) for f in fields(cls)})

    @classmethod
    def empty(cls, shape: int | tuple[int, ...], dtype) -> TokenRecords:
        """No rows of one layer and site, whose rows have this shape (an int: [D])."""
        columns = {name: np.empty((0, *shape), column_dtype) for name, (column_dtype, shape) in TOKEN_COLUMNS.items()}
        return cls(np.empty((0, *np.atleast_1d(shape)), dtype), **columns)


def _shapes(activations: dict[str, np.ndarray]) -> str:
    return ", ".join(f"{site} {np.shape(value)}" for site, value in activations.items())
