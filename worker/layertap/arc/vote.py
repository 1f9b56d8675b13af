"""Voting across views: each view's answer, mapped back to the task's frame, is one vote.

Model output is untrusted text: an answer that does not decode to a valid grid is kept as
a Candidate with its error (so it can be counted and inspected), never raised.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np

from layertap.arc.encoders import GridEncoder, build_encoder
from layertap.arc.grids import to_grid
from layertap.arc.views import View


@dataclass(frozen=True)
class Candidate:
    """One view's answer. `grid` is in the original task's frame, or None when `text` did
    not decode to a valid grid (then `error` says why)."""

    view: View | int
    grid: np.ndarray | None
    text: str
    mean_logprob: float
    error: str | None = None

    @property
    def view_index(self) -> int:
        return self.view.index if isinstance(self.view, View) else self.view


@dataclass(frozen=True)
class Ranked:
    """A distinct grid, the number of candidates that produced it, their mean token
    log-probability, and their view indexes in candidate order."""

    grid: np.ndarray
    votes: int
    mean_logprob: float
    views: tuple[int, ...]


def parse_candidate(text: str, encoder: GridEncoder | str, view: View, mean_logprob: float) -> Candidate:
    """Decode `text` (the answer to `view`), validate it and revert the view's augmentation."""
    encoder = build_encoder(encoder)  # outside the try: a bad spec is the caller's error
    try:
        grid = view.augmentation.revert_grid(to_grid(encoder.decode(text)))
    except Exception as error:
        return Candidate(view, None, text, float(mean_logprob), f"{type(error).__name__}: {error}")
    return Candidate(view, grid, text, float(mean_logprob))


def vote(candidates: Iterable[Candidate]) -> list[Ranked]:
    """Distinct grids (same shape and values), most votes first; ties go to the higher mean
    log-probability, then to the grid that appeared first. Unparseable candidates are left out
    (see `unparseable`)."""
    groups: dict[tuple, list[Candidate]] = {}
    for candidate in candidates:
        if candidate.grid is not None:
            grid = np.asarray(candidate.grid)
            groups.setdefault((grid.shape, grid.astype(np.int8).tobytes()), []).append(candidate)
    ranked = [
        Ranked(
            grid=to_grid(np.asarray(group[0].grid)),
            votes=len(group),
            mean_logprob=float(np.mean([c.mean_logprob for c in group])),
            views=tuple(c.view_index for c in group),
        )
        for group in groups.values()  # dicts keep first-appearance order; sorted() is stable
    ]
    return sorted(ranked, key=lambda r: (-r.votes, -_comparable(r.mean_logprob)))


def unparseable(candidates: Iterable[Candidate]) -> list[Candidate]:
    """The candidates that produced no grid, in order (each has `error`)."""
    return [candidate for candidate in candidates if candidate.grid is None]


def _comparable(logprob: float) -> float:
    return -math.inf if math.isnan(logprob) else logprob
