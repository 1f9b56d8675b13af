"""The global plan: which samples are packed into which row of which step.

Every process computes the same plan from the sample lengths and the config alone, so
the processes agree on the work without talking to each other. Samples are packed end to
end into rows of one fixed length (best-fit decreasing), so every step has the same shape
[rows_per_step, row_length] and the step function compiles once.

A unit of work is one step of one process: the rows of that step its devices hold. The
store makes a unit durable atomically; a restart skips the units already durable.
"""

from __future__ import annotations

import bisect
import hashlib
import json
from dataclasses import dataclass

ROW_ALIGN = 128  # row lengths are multiples of this: friendly to TPU tiles and GPU kernels


@dataclass(frozen=True)
class Plan:
    """rows[step][row] is the tuple of sample indices packed, in order, into that row."""

    row_length: int
    rows_per_step: int
    max_per_row: int  # most samples packed in one row (the K of the pooled outputs)
    steps: tuple[tuple[tuple[int, ...], ...], ...]
    lengths: dict[int, int]  # sample index -> tokens fed

    @property
    def num_steps(self) -> int:
        return len(self.steps)

    @property
    def useful_tokens(self) -> int:
        return sum(self.lengths.values())

    @property
    def padding_fraction(self) -> float:
        fed = self.num_steps * self.rows_per_step * self.row_length
        return 1.0 - self.useful_tokens / fed if fed else 0.0

    def step_tokens(self, step: int) -> int:
        return sum(self.lengths[i] for row in self.steps[step] for i in row)

    def step_samples(self, step: int) -> int:
        return sum(len(row) for row in self.steps[step])

    def fingerprint(self) -> str:
        """Stable hash of the plan: a resumed run must compute the very same plan."""
        body = json.dumps([self.row_length, self.rows_per_step, self.steps], separators=(",", ":"))
        return hashlib.sha256(body.encode()).hexdigest()[:16]


def unit_id(step: int, process_index: int, process_count: int) -> int:
    return step * process_count + process_index


def round_up(n: int, multiple: int) -> int:
    return -(-n // multiple) * multiple


def pack_rows(lengths: dict[int, int], row_length: int) -> list[tuple[int, ...]]:
    """Best-fit decreasing: longest samples first, each into the fullest row it fits.

    Ties break on the sample index, so the result depends only on the input. Rows come
    back ordered by their first sample index, keeping output close to dataset order.
    """
    order = sorted(lengths, key=lambda i: (-lengths[i], i))
    rows: list[list[int]] = []
    free: list[tuple[int, int]] = []  # sorted (free tokens, row number) of open rows
    for index in order:
        n = lengths[index]
        slot = bisect.bisect_left(free, (n, -1))
        if slot < len(free):
            space, row = free.pop(slot)
        else:
            space, row = row_length, len(rows)
            rows.append([])
        rows[row].append(index)
        if space - n > 0:
            bisect.insort(free, (space - n, row))
    packed = [tuple(sorted(row)) for row in rows]
    return sorted(packed)


def make_plan(lengths: dict[int, int], rows_per_step: int, row_length: int | None = None) -> Plan:
    """Plan a run over samples of the given lengths (sample index -> tokens)."""
    if not lengths:
        raise ValueError("nothing to plan: no samples")
    longest = max(lengths.values())
    row_length = row_length or round_up(longest, ROW_ALIGN)
    if longest > row_length:
        raise ValueError(f"a sample of {longest} tokens does not fit rows of {row_length}")
    rows = pack_rows(lengths, row_length)
    steps = tuple(
        tuple(rows[start : start + rows_per_step]) + ((),) * max(0, start + rows_per_step - len(rows))
        for start in range(0, len(rows), rows_per_step)
    )
    return Plan(
        row_length=row_length,
        rows_per_step=rows_per_step,
        max_per_row=max(len(row) for row in rows),
        steps=steps,
        lengths=dict(lengths),
    )
