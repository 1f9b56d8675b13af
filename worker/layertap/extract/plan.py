"""The global plan: which samples are packed into which row of which step.

Every process computes the same plan from the sample lengths and the config alone, so
the processes agree on the work without talking to each other. Samples are packed end to
end (best-fit decreasing) into rows of a few fixed lengths (buckets), so every step has
one of a few shapes [rows_per_step, row_length] and the step function compiles once per
length, never in the steady state.

A unit of work is one step of one process: the rows of that step its devices hold. The
store makes a unit durable atomically; a restart skips the units already durable.
"""

from __future__ import annotations

import bisect
import hashlib
import itertools
import json
from dataclasses import dataclass

ROW_ALIGN = 128  # row lengths are multiples of this: friendly to TPU tiles and GPU kernels


@dataclass(frozen=True)
class Step:
    """rows_per_step rows of row_length tokens; rows[r] is the tuple of sample indices packed,
    in order, into row r (an empty tuple is a padding row)."""

    row_length: int
    max_per_row: int  # K of the pooled outputs: most samples packed in one row of this length
    rows: tuple[tuple[int, ...], ...]


@dataclass(frozen=True)
class Plan:
    rows_per_step: int
    steps: tuple[Step, ...]
    lengths: dict[int, int]  # sample index -> tokens fed

    @property
    def num_steps(self) -> int:
        return len(self.steps)

    @property
    def row_lengths(self) -> list[int]:
        """The distinct step shapes: one compilation each."""
        return sorted({step.row_length for step in self.steps})

    @property
    def useful_tokens(self) -> int:
        return sum(self.lengths.values())

    @property
    def padding_fraction(self) -> float:
        fed = sum(self.rows_per_step * step.row_length for step in self.steps)
        return 1.0 - self.useful_tokens / fed if fed else 0.0

    def step_tokens(self, step: int) -> int:
        return sum(self.lengths[i] for row in self.steps[step].rows for i in row)

    def step_samples(self, step: int) -> int:
        return sum(len(row) for row in self.steps[step].rows)

    def fingerprint(self) -> str:
        """Stable hash of the plan: a resumed run must compute the very same plan."""
        body = json.dumps([self.rows_per_step, [(s.row_length, s.rows) for s in self.steps]], separators=(",", ":"))
        return hashlib.sha256(body.encode()).hexdigest()[:16]


def unit_id(step: int, process_index: int, process_count: int) -> int:
    return step * process_count + process_index


def steps_to_run(num_steps: int, committed, process_index: int, process_count: int) -> tuple[list[int], list[bool]]:
    """(steps to run, whether this process's unit of each step is durable already).

    A step runs unless every process's unit of it is durable: steps are SPMD programs that
    all processes run together, even one whose own unit needs no writing.
    """
    units = [[unit_id(s, p, process_count) in committed for p in range(process_count)] for s in range(num_steps)]
    todo = [s for s in range(num_steps) if not all(units[s])]
    return todo, [units[s][process_index] for s in range(num_steps)]


def round_up(n: int, multiple: int) -> int:
    return -(-n // multiple) * multiple


def bucket_lengths(longest: int, buckets: int = 3) -> list[int]:
    """Row lengths: the longest sample's, rounded up, and up to `buckets - 1` halvings of it.

    Attention over a packed row costs ~ row length per token, so short samples go into
    short rows; each length is one compiled shape.
    """
    top = round_up(longest, ROW_ALIGN)
    return sorted({round_up(top >> i, ROW_ALIGN) for i in range(buckets)})


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
    return sorted(tuple(sorted(row)) for row in rows)


def make_plan(lengths: dict[int, int], rows_per_step: int, attention_weight: float = 0.0, max_buckets: int = 4) -> Plan:
    """Plan a run over samples of the given lengths (sample index -> tokens).

    Two packings, each with up to `max_buckets` row lengths (one compiled shape each), and
    the cheapest plan wins. Cost of a row of length T ~ T * (1 + attention_weight * T): dense
    work per token fed (padding included) plus attention, which grows with the row length.

    - split by length (`_bucketed_plan`): samples go to the shortest row length they fit,
      and are packed there. Short samples get short rows: cheap attention.
    - packed, then cut to fit (`_fitted_plan`): every sample is packed into rows of the
      longest length, and each row is cut to the shortest of a few lengths chosen for the
      packed rows (`choose_row_lengths`). Long samples share their rows with short ones, so
      rows are full: on ARC-AGI-1 prompts, where most samples exceed half the longest, this
      pads 3.6-4.9% where splitting by length padded 13-14% (docs/benchmarks.md).
    """
    if not lengths:
        raise ValueError("nothing to plan: no samples")
    plans = [_bucketed_plan(lengths, rows_per_step, buckets) for buckets in range(1, max_buckets + 1)]
    plans.append(_fitted_plan(lengths, rows_per_step, attention_weight, max_buckets))
    return min(plans, key=lambda plan: priced(plan_cost(plan, attention_weight), len(plan.row_lengths)))


# Each compiled shape beyond the first must save this share of the work to be worth its
# compilation (seconds on CPU, a minute or more on a TPU pod) and its program in memory.
SHAPE_PRICE = 0.01


def priced(cost: float, shapes: int) -> tuple[float, int]:
    return cost * (1 + SHAPE_PRICE * (shapes - 1)), shapes


def plan_cost(plan: Plan, attention_weight: float) -> float:
    return sum(plan.rows_per_step * s.row_length * row_cost(s.row_length, attention_weight) for s in plan.steps)


def row_cost(row_length: int, attention_weight: float) -> float:
    """Work per token fed to a row of this length, relative to the dense work alone."""
    return 1 + attention_weight * row_length


def _steps(rows_by_length: dict[int, list[tuple[int, ...]]], rows_per_step: int) -> tuple[Step, ...]:
    """Steps of rows_per_step rows each (the last of a length filled with padding rows),
    ordered as the dataset: a step's place is that of its first sample."""
    steps = []
    for length, rows in rows_by_length.items():
        max_per_row = max((len(row) for row in rows), default=1)
        for start in range(0, len(rows), rows_per_step):
            chunk = tuple(rows[start : start + rows_per_step])
            steps.append(Step(length, max_per_row, chunk + ((),) * (rows_per_step - len(chunk))))
    steps.sort(key=lambda step: (min(i for row in step.rows for i in row), step.row_length))
    return tuple(steps)


def _bucketed_plan(lengths: dict[int, int], rows_per_step: int, buckets: int) -> Plan:
    """Each sample goes to the shortest row length it fits. A length whose samples fill less
    than one step hands them up to the next length: a nearly empty step costs more."""
    row_lengths = bucket_lengths(max(lengths.values()), buckets)
    by_length: dict[int, dict[int, int]] = {length: {} for length in row_lengths}
    for index, n in lengths.items():
        by_length[next(length for length in row_lengths if n <= length)][index] = n
    rows_by_length: dict[int, list[tuple[int, ...]]] = {}
    carried: dict[int, int] = {}
    for length in row_lengths:
        members = {**carried, **by_length[length]}
        rows = pack_rows(members, length) if members else []
        if length != row_lengths[-1] and len(rows) < rows_per_step:
            carried = members
            continue
        carried = {}
        rows_by_length[length] = rows
    return Plan(rows_per_step=rows_per_step, steps=_steps(rows_by_length, rows_per_step), lengths=dict(lengths))


def _fitted_plan(lengths: dict[int, int], rows_per_step: int, attention_weight: float, max_buckets: int) -> Plan:
    """Pack every sample into rows of the longest length, then cut each row to the shortest
    chosen length that holds it. The rows of a length that do not fill a whole step move up
    to the next length (`_assign_rows`), so only the longest length ends in a partial step."""
    longest = round_up(max(lengths.values()), ROW_ALIGN)
    rows = pack_rows(lengths, longest)
    fitted = {row: round_up(sum(lengths[i] for i in row), ROW_ALIGN) for row in rows}
    row_lengths = choose_row_lengths(sorted(fitted.values()), rows_per_step, attention_weight, max_buckets)
    by_fit = sorted(rows, key=lambda row: (fitted[row], row))
    rows_by_length = _assign_rows(by_fit, [fitted[row] for row in by_fit], row_lengths, rows_per_step)
    rows_by_length = {length: sorted(rows) for length, rows in rows_by_length.items()}
    return Plan(rows_per_step=rows_per_step, steps=_steps(rows_by_length, rows_per_step), lengths=dict(lengths))


def _assign_rows(rows: list, fits: list[int], row_lengths: list[int], rows_per_step: int) -> dict[int, list]:
    """rows (ascending by fit) -> row length: each to the shortest length it fits; of a
    length's rows, those beyond its last whole step move up to the next length."""
    assigned: dict[int, list] = {}
    carried: list = []
    start = 0
    for length in row_lengths:
        end = bisect.bisect_right(fits, length)
        members, start = carried + rows[start:end], end
        whole = len(members) if length == row_lengths[-1] else len(members) // rows_per_step * rows_per_step
        if whole:
            assigned[length] = members[:whole]
        carried = members[whole:]
    return assigned


MAX_LENGTH_CANDIDATES = 48  # keeps the search of choose_row_lengths under ~20k evaluations


def choose_row_lengths(fits: list[int], rows_per_step: int, attention_weight: float, max_buckets: int) -> list[int]:
    """The cheapest set of at most max_buckets row lengths for rows needing `fits` tokens
    (ascending, multiples of ROW_ALIGN), the longest always included.

    An exhaustive search: a set is priced by the steps `_assign_rows` would make of it,
    which needs only how many rows fit each length. Only lengths some row fits exactly are
    candidates (a length between two of them costs more than the lower one and holds no
    more rows); past MAX_LENGTH_CANDIDATES they are thinned evenly.
    """
    top = fits[-1]
    candidates = sorted(set(fits) - {top})
    if len(candidates) > MAX_LENGTH_CANDIDATES:
        step = len(candidates) / MAX_LENGTH_CANDIDATES
        candidates = sorted({candidates[int(k * step)] for k in range(MAX_LENGTH_CANDIDATES)})
    fitting = {length: bisect.bisect_right(fits, length) for length in [*candidates, top]}

    def cost(row_lengths: tuple[int, ...]) -> float:
        total, carried, below = 0.0, 0, 0
        for length in row_lengths:
            members = carried + fitting[length] - below
            below = fitting[length]
            steps = -(-members // rows_per_step) if length == top else members // rows_per_step
            carried = members - steps * rows_per_step if length != top else 0
            total += steps * rows_per_step * length * row_cost(length, attention_weight)
        return total

    options = [
        (*shorter, top)
        for count in range(min(max_buckets, len(candidates) + 1))
        for shorter in itertools.combinations(candidates, count)
    ]
    return list(min(options, key=lambda option: priced(cost(option), len(option))))
