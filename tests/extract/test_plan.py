from __future__ import annotations

import itertools

import numpy as np
import pytest

from layertap.extract.plan import (
    ROW_ALIGN,
    STEP_PRICE,
    _assign_rows,
    _bucketed_plan,
    bucket_lengths,
    choose_row_lengths,
    fed_rows,
    make_plan,
    pack_rows,
    pack_to_lengths,
    plan_cost,
    round_up,
    row_cost,
    step_rows,
    steps_to_run,
    unit_id,
    units_done,
)


def random_lengths(n: int, seed: int = 0, low: int = 1, high: int = 300) -> dict[int, int]:
    rng = np.random.default_rng(seed)
    return {i: int(n) for i, n in enumerate(rng.integers(low, high, size=n))}


@pytest.mark.parametrize("seed", range(5))
def test_packing_places_every_sample_once_within_the_row_length(seed):
    lengths = random_lengths(500, seed)
    rows = pack_rows(lengths, 384)
    placed = [i for row in rows for i in row]
    assert sorted(placed) == sorted(lengths)
    assert all(sum(lengths[i] for i in row) <= 384 for row in rows)
    # best-fit decreasing stays close to the lower bound of rows needed
    assert len(rows) <= 1.05 * sum(lengths.values()) / 384 + 1


@pytest.mark.parametrize("seed", range(3))
def test_plan_covers_every_sample_once_in_rows_that_fit(seed):
    plan = make_plan(random_lengths(700, seed, high=2000), rows_per_step=8)
    placed = [i for step in plan.steps for row in step.rows for i in row]
    assert sorted(placed) == sorted(plan.lengths)
    for step in plan.steps:
        assert 4 <= len(step.rows) <= 8  # at most twice the fewest steps
        assert all(sum(plan.lengths[i] for i in row) <= step.row_length for row in step.rows)
        assert step.max_per_row >= max(len(row) for row in step.rows)
    assert sum(plan.step_tokens(s) for s in range(plan.num_steps)) == plan.useful_tokens
    assert sum(plan.step_samples(s) for s in range(plan.num_steps)) == len(plan.lengths)


QWEN_0_5B_ATTENTION = 1.2e-4  # prices.attention_weight of Qwen2.5-0.5B


def test_mostly_short_samples_get_short_rows_when_that_is_cheaper():
    lengths = random_lengths(2000, seed=1, low=20, high=400) | {2000: 1999}  # one long outlier
    plan = make_plan(lengths, rows_per_step=8, attention_weight=QWEN_0_5B_ATTENTION)
    assert plan.row_lengths[0] == 512 and plan.row_lengths[-1] == 2016  # 1999 rounded up to ROW_ALIGN
    assert len(plan.row_lengths) <= 3 and bucket_lengths(1999) == [512, 1024, 2016]
    row_length_of = {i: step.row_length for step in plan.steps for row in step.rows for i in row}
    assert row_length_of[2000] == 2016 and row_length_of[0] == 512
    assert plan_cost(plan, QWEN_0_5B_ATTENTION) < plan_cost(make_plan(lengths, 8, max_buckets=1), QWEN_0_5B_ATTENTION)


def test_uniform_lengths_keep_one_row_length_where_buckets_would_pad_more():
    lengths = random_lengths(2000, seed=1, high=2000)
    plan = make_plan(lengths, rows_per_step=8, attention_weight=QWEN_0_5B_ATTENTION)
    assert plan.row_lengths == [2016] and plan.padding_fraction < 0.02
    assert make_plan(lengths, rows_per_step=8).row_lengths == [2016]  # no attention price: fewest tokens fed


def test_the_rows_of_a_length_are_spread_evenly_over_its_steps():
    assert step_rows(17, rows_per_step=16, row_multiple=1) == 9  # 2 steps of 9, not 16 + 1 beside 15 padding rows
    assert step_rows(60, 16, 1) == 15 and step_rows(32, 16, 1) == 16 and step_rows(5, 16, 1) == 5
    # the same rows in fewer steps win: 1,000 rows on 64 devices run as 4 steps of 256, not 8 of 128
    assert step_rows(1000, 256, 64) == 256 and fed_rows(1000, 256, 64) == 1024
    assert step_rows(17, 16, 4) == 12 and fed_rows(17, 16, 4) == 24  # whole rows per device: 2 steps of 12
    assert fed_rows(0, 16, 1) == 0


@pytest.mark.parametrize("rows_per_step, row_multiple", [(8, 1), (8, 2), (16, 4), (12, 3)])
def test_every_step_splits_evenly_over_the_data_parallel_devices(rows_per_step, row_multiple):
    lengths = arc_like_lengths(150, seed=rows_per_step)
    plan = make_plan(lengths, rows_per_step, QWEN_0_5B_ATTENTION, row_multiple=row_multiple)
    assert sorted(i for step in plan.steps for row in step.rows for i in row) == sorted(lengths)
    assert all(len(step.rows) % row_multiple == 0 and len(step.rows) <= rows_per_step for step in plan.steps)
    assert len(plan.shapes) == len(plan.row_lengths) <= 4  # one row count per length

    # the rows are those of one device's plan: only their grouping into steps differs, so a
    # sample is computed in the same row, beside the same samples, on any topology
    def rows(plan):
        return sorted((step.row_length, row) for step in plan.steps for row in step.rows if row)

    assert rows(plan) == rows(make_plan(lengths, rows_per_step, QWEN_0_5B_ATTENTION))
    with pytest.raises(ValueError, match="do not split over 3 devices"):
        make_plan(lengths, 8, row_multiple=3)


def arc_like_lengths(n: int, seed: int) -> dict[int, int]:
    """Most samples longer than half the longest, a few short ones: ARC prompts' shape."""
    rng = np.random.default_rng(seed)
    long, short = rng.integers(1024, 2041, size=n), rng.integers(60, 900, size=n // 3)
    return {i: int(v) for i, v in enumerate([*long, *short])}


@pytest.mark.parametrize("seed", range(3))
def test_long_samples_share_rows_with_short_ones_and_rows_are_cut_to_fit(seed):
    lengths = arc_like_lengths(400, seed)
    plan = make_plan(lengths, rows_per_step=8, attention_weight=QWEN_0_5B_ATTENTION)
    split = min((_bucketed_plan(lengths, 8, b) for b in range(1, 5)), key=lambda p: plan_cost(p, QWEN_0_5B_ATTENTION))
    assert plan_cost(plan, QWEN_0_5B_ATTENTION) < 0.95 * plan_cost(split, QWEN_0_5B_ATTENTION)
    assert plan.padding_fraction < 0.06 < split.padding_fraction
    assert 1 < len(plan.row_lengths) <= 4
    placed = [i for step in plan.steps for row in step.rows for i in row]
    assert sorted(placed) == sorted(lengths)
    # each row is cut to the shortest chosen length that holds it, except a few that ride up
    # to the next length where that costs less than padding rows
    fits = [
        min(n for n in plan.row_lengths if n >= sum(lengths[i] for i in row))
        for s in plan.steps
        for row in s.rows
        if row
    ]
    cut = [s.row_length for s in plan.steps for row in s.rows if row]
    moved_up = sum(fit < length for fit, length in zip(fits, cut))
    assert moved_up < 8 * (len(plan.row_lengths) - 1)
    for length in plan.row_lengths:  # a length's steps are even: fewer padding rows than steps
        steps = [step for step in plan.steps if step.row_length == length]
        assert sum(row == () for step in steps for row in step.rows) < len(steps)


@pytest.mark.parametrize("row_multiple", [1, 2])
def test_a_token_cap_keeps_steps_small_and_the_rows_the_same(row_multiple):
    lengths = random_lengths(300, seed=row_multiple, low=20, high=600)
    plan = make_plan(lengths, 8, QWEN_0_5B_ATTENTION, row_multiple=row_multiple, step_tokens=2048)
    for step in plan.steps:  # tokens per device within the cap, but a row of any length runs
        assert len(step.rows) // row_multiple * step.row_length <= max(2048, step.row_length)
    assert max(len(step.rows) for step in plan.steps) >= 3 * row_multiple  # rows of 608 or less: 3 a device

    def rows(plan):
        return sorted((step.row_length, row) for step in plan.steps for row in step.rows if row)

    assert rows(plan) == rows(make_plan(lengths, 8, QWEN_0_5B_ATTENTION))


def test_an_extra_shape_must_save_more_than_its_compilation():
    lengths = arc_like_lengths(60, seed=0)
    several = make_plan(lengths, 4, QWEN_0_5B_ATTENTION)
    saved = plan_cost(make_plan(lengths, 4, QWEN_0_5B_ATTENTION, max_buckets=1), QWEN_0_5B_ATTENTION) - plan_cost(
        several, QWEN_0_5B_ATTENTION
    )
    assert len(several.shapes) > 1 and saved > 0
    # a compilation dearer than all the shapes save (a small model's): one shape
    assert len(make_plan(lengths, 4, QWEN_0_5B_ATTENTION, shape_tokens=saved).shapes) == 1
    assert len(make_plan(lengths, 4, QWEN_0_5B_ATTENTION, shape_tokens=saved / 100).shapes) > 1


@pytest.mark.parametrize("seed", range(3))
def test_packing_to_the_chosen_lengths_fills_rows_to_their_cut(seed):
    lengths = arc_like_lengths(400, seed)
    row_lengths = [1472, 1664, 1856, 2048]
    rows = pack_to_lengths(lengths, row_lengths, QWEN_0_5B_ATTENTION)
    assert sorted(i for row in rows for i in row) == sorted(lengths)
    assert all(sum(lengths[i] for i in row) <= 2048 for row in rows)

    def work(rows):  # each row cut to the shortest length that holds it
        fills = [sum(lengths[i] for i in row) for row in rows]
        return sum(
            min(n for n in row_lengths if n >= f) * row_cost(min(n for n in row_lengths if n >= f), QWEN_0_5B_ATTENTION)
            for f in fills
        )

    assert work(rows) < 0.99 * work(pack_rows(lengths, 2048))  # packing at the longest length, then cutting


def best_fit_by_scanning(lengths, row_lengths, weight):
    """The packing rule of `pack_rows` (one length) and `pack_to_lengths`, by scanning every
    row for every sample: quadratic, plainly the rule, the reference of the fast packers."""
    price = {n: n * row_cost(n, weight) for n in row_lengths}

    def cut(tokens):
        return min(n for n in row_lengths if n >= tokens)

    rows, fill = [], []
    for index in sorted(lengths, key=lambda i: (-lengths[i], i)):
        n = lengths[index]
        fitting = [(cut(f) - f, r) for r, f in enumerate(fill) if cut(f) - f >= n]
        row = min(fitting)[1] if fitting else None
        if row is None:
            added = price[cut(n)]
            for low, high in itertools.combinations(row_lengths, 2):
                grown = [(f, r) for r, f in enumerate(fill) if cut(f) == low and f <= high - n]
                if grown and price[high] - price[low] < added:
                    added, row = price[high] - price[low], max(grown)[1]
        if row is None:
            row = len(rows)
            rows.append([])
            fill.append(0)
        rows[row].append(index)
        fill[row] += n
    return sorted(tuple(sorted(row)) for row in rows)


@pytest.mark.parametrize("seed", range(4))
def test_the_packers_place_every_sample_where_scanning_every_row_would(seed):
    mixed = [*random_lengths(400, seed, low=1, high=700).values(), *arc_like_lengths(60, seed).values()]
    lengths = dict(enumerate(mixed))
    assert pack_rows(lengths, 2048) == best_fit_by_scanning(lengths, [2048], 0.0)
    row_lengths = [512, 1024, 1472, 2048]
    assert pack_to_lengths(lengths, row_lengths, QWEN_0_5B_ATTENTION) == best_fit_by_scanning(
        lengths, row_lengths, QWEN_0_5B_ATTENTION
    )


@pytest.mark.parametrize("rows_per_step", [1, 3, 8])
def test_the_chosen_row_lengths_are_the_cheapest_set_by_the_real_assignment(rows_per_step):
    rng = np.random.default_rng(rows_per_step)
    fits = sorted(int(v) * ROW_ALIGN for v in rng.integers(4, 12, size=60))
    rows = list(range(len(fits)))

    def cost(row_lengths):
        assigned = _assign_rows(rows, fits, list(row_lengths), rows_per_step, QWEN_0_5B_ATTENTION)
        assert sorted(r for members in assigned.values() for r in members) == rows
        assert all(fits[r] <= length for length, members in assigned.items() for r in members)
        fed = {length: fed_rows(len(members), rows_per_step, 1) for length, members in assigned.items()}
        return sum(n * length * (1 + QWEN_0_5B_ATTENTION * length) for length, n in fed.items())

    shorter = sorted(set(fits) - {fits[-1]})
    every = [(*c, fits[-1]) for k in range(4) for c in itertools.combinations(shorter, k)]
    best = min(cost(option) for option in every)
    chosen = choose_row_lengths(fits, rows_per_step, QWEN_0_5B_ATTENTION, max_buckets=4)
    assert len(chosen) <= 4 and chosen[-1] == fits[-1]
    assert cost(chosen) <= best * (1 + 0.01 * (len(chosen) - 1))  # an extra shape must save 1%
    assert cost(chosen) < cost((fits[-1],))  # these lengths are spread enough to need buckets


def test_padding_fraction():
    plan = make_plan(random_lengths(101, seed=1), rows_per_step=8)
    fed = sum(len(s.rows) * s.row_length for s in plan.steps)
    assert plan.padding_fraction == pytest.approx(1 - plan.useful_tokens / fed)
    assert 0 < plan.padding_fraction < 0.25


def test_plan_is_a_pure_function_of_lengths_and_config():
    lengths = random_lengths(300, seed=3, high=1500)
    shuffled = dict(sorted(lengths.items(), key=lambda kv: -kv[0]))
    a, b = make_plan(lengths, 8), make_plan(shuffled, 8)
    assert a.steps == b.steps and a.fingerprint() == b.fingerprint()
    assert make_plan(lengths, 4).fingerprint() != a.fingerprint()


def test_empty_plan_is_an_error():
    with pytest.raises(ValueError, match="no samples"):
        make_plan({}, 2)


def test_unit_ids_are_unique_per_step_and_process():
    assert {unit_id(s, p, 3) for s in range(10) for p in range(3)} == set(range(30))


def test_a_step_runs_unless_every_process_committed_its_unit():
    committed = {unit_id(0, 0, 2), unit_id(0, 1, 2), unit_id(1, 1, 2), unit_id(3, 0, 2)}
    done = [units_done(4, committed & {unit_id(s, p, 2) for s in range(4)}, p, 2) for p in range(2)]
    assert done == [[True, False, False, True], [True, True, False, False]]
    assert steps_to_run(done) == [1, 2, 3]  # step 1 runs again, but process 1 writes nothing


def test_step_rows_tries_every_step_count_it_says_it_does():
    """step_rows walks the rows-per-step values; the plain rule walks every step count from
    the fewest to twice that. Both choose the same."""

    def plain(count, rows_per_step, row_multiple):
        fewest = -(-count // rows_per_step)
        sizes = {round_up(-(-count // steps), row_multiple) for steps in range(fewest, 2 * fewest + 1)}
        price = STEP_PRICE * rows_per_step
        return min(sizes, key=lambda size: (round_up(count, size) + price * -(-count // size), -size))

    for rows_per_step, row_multiple in ((1, 1), (3, 1), (16, 4), (256, 4), (256, 256)):
        for count in [*range(1, 600), 4099, 65_537, 250_001]:
            assert step_rows(count, rows_per_step, row_multiple) == plain(count, rows_per_step, row_multiple)
