"""The global plan: which samples are packed into which row of which step.

Every process computes the same plan from the sample lengths and the config alone, so
the processes agree on the work without talking to each other. Samples are packed end to
end (best-fit decreasing) into rows of a few fixed lengths (buckets), so every step has
one of a few shapes [rows, row_length] (one row count per length) and the step function
compiles once per shape, never in the steady state.

A unit of work is one step of one process: the rows of that step its devices hold. The
store makes a unit durable atomically; a restart skips the units already durable.
"""

from __future__ import annotations

import bisect
import contextlib
import functools
import gc
import hashlib
import heapq
import itertools
import json
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

import numpy as np

# Row lengths are multiples of this. The dense work (most of it) is exact at any length, and
# the attention kernels pad a row to their own tiles inside (splash: 128 lanes), so a finer
# length never costs more attention than the coarser one above it. Rows cut to multiples of
# 128 padded the ARC-AGI-1 evaluation prompts 5.7% at 1 row per step; of 32, 4.7% (before
# the repacking of `_fitted_plan`).
ROW_ALIGN = 32


@dataclass(frozen=True)
class Step:
    """len(rows) rows of row_length tokens; rows[r] is the tuple of sample indices packed, in
    order, into row r (an empty tuple is a padding row)."""

    row_length: int
    max_per_row: int  # K of the pooled outputs: most samples packed in one row of this length
    rows: tuple[tuple[int, ...], ...]


@dataclass(frozen=True)
class Plan:
    rows_per_step: int  # the most rows of one step (extraction.batchSize)
    steps: tuple[Step, ...]
    lengths: dict[int, int]  # sample index -> tokens fed

    @property
    def num_steps(self) -> int:
        return len(self.steps)

    @property
    def row_lengths(self) -> list[int]:
        return sorted({step.row_length for step in self.steps})

    @property
    def step_shapes(self) -> list[tuple[int, int]]:
        """(rows, row length) of each step."""
        return [(len(step.rows), step.row_length) for step in self.steps]

    @property
    def shapes(self) -> list[tuple[int, int]]:
        """The distinct (rows, row length) of the steps: one compilation each (one per length)."""
        return sorted(set(self.step_shapes), key=lambda shape: shape[::-1])

    def describe_shapes(self) -> str:
        """The compiled shapes as a reader sees them: "9 x 1504, 13 x 2048" (rows x tokens)."""
        return ", ".join(f"{rows} x {length}" for rows, length in self.shapes)

    @property
    def useful_tokens(self) -> int:
        return sum(self.lengths.values())

    @property
    def fed_tokens(self) -> int:
        """Tokens computed, padding positions and padding rows included."""
        return sum(rows * length for rows, length in self.step_shapes)

    @property
    def padding_fraction(self) -> float:
        fed = self.fed_tokens
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


def units_done(num_steps: int, committed, process_index: int, process_count: int) -> list[bool]:
    """Whether this process's unit of each step is durable (`committed`: its unit ids)."""
    return [unit_id(step, process_index, process_count) in committed for step in range(num_steps)]


def steps_to_run(done_by_process: Sequence[Sequence[bool]]) -> list[int]:
    """The steps to run, from every process's `units_done`: a step runs unless every
    process's unit of it is durable, since steps are SPMD programs that all processes run
    together, even one whose own unit needs no writing."""
    return [step for step, done in enumerate(zip(*done_by_process)) if not all(done)]


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

    Ties break on the sample index, then on the row number, so the result depends only on
    the input. Rows come back ordered by their first sample index, keeping output close to
    dataset order. O(n log n): rows are found by their free tokens, not in a sorted list.
    """
    order, tokens = _longest_first(lengths)
    # Samples longer than half a row cannot share one with each other, and come first: each
    # opens a row of its own (the longest samples of most ranges; all of them in some).
    alone = bisect.bisect_left(tokens, -(row_length // 2))
    rows: list[list[int]] = [[index] for index in order[:alone]]
    # Open rows by free tokens: bit k of `spaces` set when some row has k free, a heap of
    # those rows at `by_space[k]` (least row first). The inner loop of planning: inlined.
    by_space: dict[int, list[int]] = {}
    for row, negated in enumerate(tokens[:alone]):
        if left := row_length + negated:
            by_space.setdefault(left, []).append(row)  # ascending: already a heap
    spaces = sum(1 << left for left in by_space)
    heappush, heappop = heapq.heappush, heapq.heappop
    for index in order[alone:]:
        n = lengths[index]
        if above := spaces >> n:
            space = n + (above & -above).bit_length() - 1  # the least space that fits
            heap = by_space[space]
            row = heappop(heap)
            if not heap:
                spaces ^= 1 << space
        else:
            space, row = row_length, len(rows)
            rows.append([])
        rows[row].append(index)
        if left := space - n:
            if heap := by_space.get(left):
                heappush(heap, row)
            else:
                by_space[left] = [row]
                spaces |= 1 << left
    return sorted(map(tuple, map(sorted, rows)))


def _longest_first(lengths: dict[int, int]) -> tuple[list[int], list[int]]:
    """Sample indices by decreasing length, ties by index, and their lengths negated
    (ascending, for bisect): a numpy sort, a million in 0.1 s."""
    index = np.fromiter(lengths.keys(), dtype=np.int64, count=len(lengths))
    negated = -np.fromiter(lengths.values(), dtype=np.int64, count=len(lengths))
    order = np.lexsort((index, negated))
    return index[order].tolist(), negated[order].tolist()


def make_plan(
    lengths: dict[int, int],
    rows_per_step: int,
    attention_weight: float = 0.0,
    max_buckets: int = 4,
    row_multiple: int = 1,
    shape_tokens: float = 0.0,
    step_tokens: int | None = None,
) -> Plan:
    """Plan a run over samples of the given lengths (sample index -> tokens).

    Steps hold at most `rows_per_step` rows, a multiple of `row_multiple` (the data-parallel
    devices, which split each step's rows evenly). Two packings, each with up to `max_buckets`
    row lengths (one compiled shape each), and the cheapest plan wins. Cost of a row of
    length T ~ T * (1 + attention_weight * T): dense work per token fed (padding included)
    plus attention, which grows with the row length. Each shape beyond the first must save
    SHAPE_PRICE of the work, and at least `shape_tokens` (what one compilation costs, in
    tokens fed: on a small run, a shape that saves less than its compilation is not one).

    - split by length (`_bucketed_plan`): samples go to the shortest row length they fit,
      and are packed there. Short samples get short rows: cheap attention.
    - packed, then cut to fit (`_fitted_plan`): every sample is packed into rows of the
      longest length, and each row is cut to the shortest of a few lengths chosen for the
      packed rows (`choose_row_lengths`), then packed again to fill rows up to those lengths.
      Long samples share their rows with short ones, so rows are full: on ARC-AGI-1 prompts,
      where most samples exceed half the longest, this pads 3-5% where splitting by length
      padded 13-23% (docs/benchmarks.md).

    The rows of one length are spread evenly over as few steps as `rows_per_step` allows
    (`step_rows`), so a length's last step is not left part empty: 17 rows at 16 per step
    run as 2 steps of 9, not 16 and 1 beside 15 padding rows. The rows themselves (which
    samples share a row, and its length) are planned as for one device; only their grouping
    into steps depends on `row_multiple`, so a sample's activations come out bit-identical
    whatever the topology (tests/multihost). `step_tokens` caps the tokens of a step on
    each device (at least one row): on CPU, more rows per step only run slower.
    """
    if not lengths:
        raise ValueError("nothing to plan: no samples")
    if rows_per_step < 1 or row_multiple < 1 or rows_per_step % row_multiple:
        raise ValueError(f"{rows_per_step} rows per step do not split over {row_multiple} devices")
    with _cyclic_gc_paused():
        return _make_plan(
            lengths, rows_per_step, attention_weight, max_buckets, row_multiple, shape_tokens, step_tokens
        )


@contextlib.contextmanager
def _cyclic_gc_paused() -> Iterator[None]:
    """Planning makes millions of rows, none of them in a reference cycle: Python's cyclic
    collector, run again and again over them as they pile up, took a quarter to a third of
    a million prompts' planning. Memory is still freed as it goes (reference counts)."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


def _make_plan(lengths, rows_per_step, attention_weight, max_buckets, row_multiple, shape_tokens, step_tokens) -> Plan:
    packed = _packings(lengths)
    plans = [_bucketed_plan(lengths, rows_per_step, buckets, packed) for buckets in range(1, max_buckets + 1)]
    plans.append(_fitted_plan(lengths, rows_per_step, attention_weight, max_buckets, shape_tokens, packed))
    best = min(plans, key=lambda plan: priced(plan_cost(plan, attention_weight), len(plan.shapes), shape_tokens))
    if row_multiple == 1 and step_tokens is None:
        return best
    rows_by_length: dict[int, list[tuple[int, ...]]] = {}
    for step in best.steps:
        rows_by_length.setdefault(step.row_length, []).extend(row for row in step.rows if row)
    rows_by_length = {length: sorted(rows) for length, rows in rows_by_length.items()}
    steps = _steps(rows_by_length, rows_per_step, row_multiple, step_tokens)
    return Plan(rows_per_step, steps, best.lengths)


# Each compiled shape beyond the first must save this share of the work to be worth its
# compilation (seconds on CPU, a minute or more on a TPU pod) and its program in memory.
SHAPE_PRICE = 0.01


def priced(cost: float, shapes: int, shape_tokens: float) -> tuple[float, int]:
    return cost * (1 + SHAPE_PRICE * (shapes - 1)) + shape_tokens * (shapes - 1), shapes


def plan_cost(plan: Plan, attention_weight: float) -> float:
    return sum(len(s.rows) * s.row_length * row_cost(s.row_length, attention_weight) for s in plan.steps)


def row_cost(row_length: int, attention_weight: float) -> float:
    """Work per token fed to a row of this length, relative to the dense work alone."""
    return 1 + attention_weight * row_length


# What one step costs beyond its rows (dispatch, building the host batch, keeping the hosts
# in lockstep), as a share of a full step's work. An assumption: a few ms of a ~100 ms step of a
# TPU pod. It keeps steps full on large runs, where padding rows weigh little.
STEP_PRICE = 0.02


@functools.lru_cache(maxsize=1 << 16)  # asked ~20k times by a search, with few distinct counts
def step_rows(count: int, rows_per_step: int, row_multiple: int) -> int:
    """Rows per step for `count` rows of one length: the fewest rows computed (padding rows
    included), each step priced at STEP_PRICE of a full step, in at most twice the fewest
    steps rows_per_step allows. Each step holds a multiple of row_multiple rows."""
    fewest = -(-count // rows_per_step)
    sizes, steps = set(), fewest
    while steps <= 2 * fewest:  # each rows-per-step once, not each step count (a million rows: 4,000 of those)
        per_step = -(-count // steps)
        sizes.add(round_up(per_step, row_multiple))
        if per_step == 1:
            break
        steps = -(-count // (per_step - 1))  # the fewest steps with fewer rows each
    step_price = STEP_PRICE * rows_per_step
    return min(sizes, key=lambda size: (round_up(count, size) + step_price * -(-count // size), -size))


def fed_rows(count: int, rows_per_step: int, row_multiple: int) -> int:
    """Rows computed, padding rows included, for `count` rows of one length."""
    return round_up(count, step_rows(count, rows_per_step, row_multiple)) if count else 0


def _steps(
    rows_by_length: dict[int, list[tuple[int, ...]]],
    rows_per_step: int,
    row_multiple: int,
    step_tokens: int | None = None,
) -> tuple[Step, ...]:
    """The rows of each length (sorted, as tuples of sorted sample indices) in `step_rows`
    steps (the last one's unused rows are padding rows), ordered as the dataset: a step's
    place is that of its first sample. With
    `step_tokens`, a step holds at most that many tokens per device (at least a row each)."""
    steps = []
    for length, rows in rows_by_length.items():
        if not rows:
            continue
        max_per_row = max(map(len, rows))
        most = rows_per_step
        if step_tokens is not None:
            most = min(rows_per_step, max(1, step_tokens // length) * row_multiple)
        size = step_rows(len(rows), most, row_multiple)
        for start in range(0, len(rows), size):
            chunk = tuple(rows[start : start + size])
            steps.append(Step(length, max_per_row, chunk + ((),) * (size - len(chunk))))
    steps.sort(key=lambda step: (step.rows[0][0], step.row_length))
    return tuple(steps)


def _packings(lengths: dict[int, int]) -> Callable[[int, int], list[tuple[int, ...]]]:
    """(low, row_length) -> `pack_rows` of the samples longer than low that fit row_length,
    each range packed once: the plans split by length share most of their ranges, and the
    fitted plan starts from the packing of the plan of one length."""

    @functools.cache
    def packed(low: int, row_length: int) -> list[tuple[int, ...]]:
        return pack_rows({i: n for i, n in lengths.items() if low < n <= row_length}, row_length)

    return packed


def _bucketed_plan(lengths: dict[int, int], rows_per_step: int, buckets: int, packed=None) -> Plan:
    """Each sample goes to the shortest row length it fits, and is packed there."""
    packed = packed or _packings(lengths)
    row_lengths = bucket_lengths(max(lengths.values()), buckets)
    ranges = zip([0, *row_lengths], row_lengths)
    rows_by_length = {length: rows for low, length in ranges if (rows := packed(low, length))}
    return Plan(rows_per_step, _steps(rows_by_length, rows_per_step, 1), dict(lengths))


def _fitted_plan(
    lengths: dict[int, int],
    rows_per_step: int,
    attention_weight: float,
    max_buckets: int,
    shape_tokens: float = 0.0,
    packed=None,
) -> Plan:
    """Pack every sample into rows of the longest length, then cut each row to the shortest
    chosen length that holds it (but for the rows `_assign_rows` moves up a length). Then
    pack again into rows of the chosen lengths (`pack_to_lengths`) and choose again: the
    first packing filled rows to the longest length, the next fills them to the lengths
    they are cut to. The cheapest of the rounds wins; a round that chooses the lengths of
    the one before, or the longest alone, ends the search (packing to them again gives
    rows already priced)."""
    packed = packed or _packings(lengths)
    longest = round_up(max(lengths.values()), ROW_ALIGN)
    rows = packed(0, longest)
    best: Plan | None = None
    cut_to = None
    for repack in range(1 + REPACKS):
        fits, by_fit = zip(*sorted(zip(_fitted_lengths(rows, lengths), rows)))
        row_lengths = choose_row_lengths(list(fits), rows_per_step, attention_weight, max_buckets, shape_tokens)
        rows_by_length = _assign_rows(list(by_fit), list(fits), row_lengths, rows_per_step, attention_weight)
        steps = _steps({length: sorted(rows) for length, rows in rows_by_length.items()}, rows_per_step, 1)
        plan = Plan(rows_per_step, steps, dict(lengths))
        if best is None or plan_cost(plan, attention_weight) < plan_cost(best, attention_weight):
            best = plan
        if repack == REPACKS or row_lengths in (cut_to, [longest]):
            break  # [longest]: packing to the longest length alone is the first round's packing
        cut_to = row_lengths
        rows = pack_to_lengths(lengths, row_lengths, attention_weight)
    return best


REPACKS = 2  # on ARC prompts the second repacking changes nothing


def _fitted_lengths(rows: list[tuple[int, ...]], lengths: dict[int, int]) -> list[int]:
    """The length each row is cut to at the least: its tokens, rounded up to ROW_ALIGN."""
    tokens = np.fromiter(map(lengths.__getitem__, itertools.chain.from_iterable(rows)), np.int64)
    starts = np.cumsum([0, *map(len, rows)])[:-1]
    return (-(-np.add.reduceat(tokens, starts) // ROW_ALIGN) * ROW_ALIGN).tolist()


def pack_to_lengths(lengths: dict[int, int], row_lengths: list[int], attention_weight: float) -> list[tuple[int, ...]]:
    """Best-fit decreasing into rows cut to the given lengths (ascending). Each sample,
    longest first, goes where it adds the least work: into the free tokens of a row's cut
    length (the fullest row it fits), else into a new row of the shortest length it fits,
    unless growing a row to a longer length adds less. Rows come back as `pack_rows`'."""
    price = {length: length * row_cost(length, attention_weight) for length in row_lengths}

    def cut(tokens: int) -> int:
        return row_lengths[bisect.bisect_left(row_lengths, tokens)]

    # As in pack_rows, rows are found by key through a bitmask of the keys present and a heap
    # per key: by free tokens within the cut length (least row first), and for each cut
    # length by fill (greatest row first). An entry carries the fill its row had when filed;
    # once the row has grown it is stale, and dropped when met. The inner loop: inlined.
    rows: list[list[int]] = []
    fill: list[int] = []
    free_keys, free_rows = 0, {}  # free tokens -> heap of (row, fill)
    fill_keys = dict.fromkeys(row_lengths, 0)
    fill_rows: dict[int, dict[int, list[int]]] = {length: {} for length in row_lengths}  # fill -> heap of -row
    # (low, high, the work growing a row from low to high adds, the fill every row cut to low
    # exceeds: a sample of n grows one only if high - n exceeds it too)
    below_low = dict(zip(row_lengths, [0, *row_lengths]))
    growths = [
        (low, high, price[high] - price[low], below_low[low]) for low, high in itertools.combinations(row_lengths, 2)
    ]
    heappush, heappop = heapq.heappush, heapq.heappop
    for index in _longest_first(lengths)[0]:
        n = lengths[index]
        row = None
        while above := free_keys >> n:  # the least free space that fits
            key = n + (above & -above).bit_length() - 1
            heap = free_rows[key]
            while heap and fill[heap[0][0]] != heap[0][1]:
                heappop(heap)
            if heap:
                row = heap[0][0]
                break
            free_keys ^= 1 << key
        if row is None:
            added = price[cut(n)]  # a new row
            for low, high, grown, floor in growths:
                if grown < added and high - n > floor:
                    rows_at = fill_rows[low]
                    while below := fill_keys[low] & ((2 << (high - n)) - 1):  # the fullest row that grows
                        key = below.bit_length() - 1
                        heap = rows_at[key]
                        while heap and fill[-heap[0]] != key:
                            heappop(heap)
                        if heap:
                            added, row = grown, -heap[0]
                            break
                        fill_keys[low] ^= 1 << key
        if row is None:
            row = len(rows)
            rows.append([])
            fill.append(0)
        rows[row].append(index)
        filled = fill[row] = fill[row] + n
        length = cut(filled)
        if heap := fill_rows[length].get(filled):
            heappush(heap, -row)
        else:
            fill_rows[length][filled] = [-row]
            fill_keys[length] |= 1 << filled
        if left := length - filled:
            if heap := free_rows.get(left):
                heappush(heap, (row, filled))
            else:
                free_rows[left] = [(row, filled)]
                free_keys |= 1 << left
    return sorted(map(tuple, map(sorted, rows)))


def rows_kept(count: int, length: int, next_length: int, rows_per_step: int, weight: float) -> int:
    """How many of a length's `count` rows (ascending by fit) its steps hold: all, or its
    whole steps only, the rest (the longest) moving up to the next length, whichever costs
    less (padding rows against longer rows)."""
    price = length * row_cost(length, weight)
    moved_price = next_length * row_cost(next_length, weight)
    options = (count, count - count % rows_per_step)
    return min(options, key=lambda kept: fed_rows(kept, rows_per_step, 1) * price + (count - kept) * moved_price)


def _assign_rows(
    rows: list, fits: list[int], row_lengths: list[int], rows_per_step: int, weight: float
) -> dict[int, list]:
    """rows (ascending by fit) -> row length: each to the shortest length it fits, but for
    those `rows_kept` moves up to the next length."""
    assigned: dict[int, list] = {}
    carried: list = []
    start = 0
    for length, next_length in zip(row_lengths, [*row_lengths[1:], None]):
        end = bisect.bisect_right(fits, length)
        members, start = carried + rows[start:end], end
        kept = len(members)
        if next_length is not None:
            kept = rows_kept(len(members), length, next_length, rows_per_step, weight)
        if kept:
            assigned[length] = members[:kept]
        carried = members[kept:]
    return assigned


MAX_LENGTH_CANDIDATES = 48  # keeps the search of choose_row_lengths under ~20k evaluations


def choose_row_lengths(
    fits: list[int], rows_per_step: int, attention_weight: float, max_buckets: int, shape_tokens: float = 0.0
) -> list[int]:
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
        for length, next_length in zip(row_lengths, [*row_lengths[1:], None]):
            members = carried + fitting[length] - below
            below = fitting[length]
            kept = members
            if next_length is not None:
                kept = rows_kept(members, length, next_length, rows_per_step, attention_weight)
            carried = members - kept
            total += fed_rows(kept, rows_per_step, 1) * length * row_cost(length, attention_weight)
        return total

    options = [
        (*shorter, top)
        for count in range(min(max_buckets, len(candidates) + 1))
        for shorter in itertools.combinations(candidates, count)
    ]
    return list(min(options, key=lambda option: priced(cost(option), len(option), shape_tokens)))
