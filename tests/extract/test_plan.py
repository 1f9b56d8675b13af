from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
from layertap.extract.plan import (
    ROW_ALIGN,
    _assign_rows,
    _bucketed_plan,
    bucket_lengths,
    choose_row_lengths,
    make_plan,
    pack_rows,
    plan_cost,
    steps_to_run,
    unit_id,
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
        assert len(step.rows) == 8
        assert all(sum(plan.lengths[i] for i in row) <= step.row_length for row in step.rows)
        assert step.max_per_row >= max(len(row) for row in step.rows)
    assert sum(plan.step_tokens(s) for s in range(plan.num_steps)) == plan.useful_tokens
    assert sum(plan.step_samples(s) for s in range(plan.num_steps)) == len(plan.lengths)


QWEN_0_5B_ATTENTION = 1.2e-4  # runner.attention_weight of Qwen2.5-0.5B


def test_mostly_short_samples_get_short_rows_when_that_is_cheaper():
    lengths = random_lengths(2000, seed=1, low=20, high=400) | {2000: 1999}  # one long outlier
    plan = make_plan(lengths, rows_per_step=8, attention_weight=QWEN_0_5B_ATTENTION)
    assert plan.row_lengths[0] == 512 and plan.row_lengths[-1] == 2048
    assert len(plan.row_lengths) <= 3 and bucket_lengths(1999) == [512, 1024, 2048]
    row_length_of = {i: step.row_length for step in plan.steps for row in step.rows for i in row}
    assert row_length_of[2000] == 2048 and row_length_of[0] == 512
    assert plan_cost(plan, QWEN_0_5B_ATTENTION) < plan_cost(make_plan(lengths, 8, max_buckets=1), QWEN_0_5B_ATTENTION)


def test_uniform_lengths_keep_one_row_length_where_buckets_would_pad_more():
    lengths = random_lengths(2000, seed=1, high=2000)
    plan = make_plan(lengths, rows_per_step=8, attention_weight=QWEN_0_5B_ATTENTION)
    assert plan.row_lengths == [2048] and plan.padding_fraction < 0.02
    assert make_plan(lengths, rows_per_step=8).row_lengths == [2048]  # no attention price: fewest tokens fed


def test_a_length_with_less_than_one_step_of_rows_hands_its_samples_up():
    lengths = {0: 1000, 1: 1000, 2: 50, 3: 60}  # two short samples fill one row, not a step of 4
    plan = make_plan(lengths, rows_per_step=4, attention_weight=1.0)
    assert plan.row_lengths == [1024]
    assert plan.num_steps == 1


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
    # each row is cut to the shortest chosen length that holds it, except the rows of a length
    # beyond its last whole step, which ride up in the next length's steps
    fits = [min(n for n in plan.row_lengths if n >= sum(lengths[i] for i in row)) for s in plan.steps for row in s.rows if row]
    cut = [s.row_length for s in plan.steps for row in s.rows if row]
    moved_up = sum(fit < length for fit, length in zip(fits, cut))
    assert moved_up < 8 * (len(plan.row_lengths) - 1)
    partial = [step for step in plan.steps if () in step.rows]  # only the longest length ends part-full
    assert all(step.row_length == plan.row_lengths[-1] for step in partial) and len(partial) <= 1


@pytest.mark.parametrize("rows_per_step", [1, 3, 8])
def test_the_chosen_row_lengths_are_the_cheapest_set_by_the_real_assignment(rows_per_step):
    rng = np.random.default_rng(rows_per_step)
    fits = sorted(int(v) * ROW_ALIGN for v in rng.integers(4, 12, size=60))
    rows = list(range(len(fits)))

    def cost(row_lengths):
        assigned = _assign_rows(rows, fits, list(row_lengths), rows_per_step)
        assert sorted(r for members in assigned.values() for r in members) == rows
        assert all(fits[r] <= length for length, members in assigned.items() for r in members)
        steps = {length: math.ceil(len(members) / rows_per_step) for length, members in assigned.items()}
        return sum(n * rows_per_step * length * (1 + QWEN_0_5B_ATTENTION * length) for length, n in steps.items())

    shorter = sorted(set(fits) - {fits[-1]})
    every = [(*c, fits[-1]) for k in range(4) for c in itertools.combinations(shorter, k)]
    best = min(cost(option) for option in every)
    chosen = choose_row_lengths(fits, rows_per_step, QWEN_0_5B_ATTENTION, max_buckets=4)
    assert len(chosen) <= 4 and chosen[-1] == fits[-1]
    assert cost(chosen) <= best * (1 + 0.01 * (len(chosen) - 1))  # an extra shape must save 1%
    assert cost(chosen) < cost((fits[-1],))  # these lengths are spread enough to need buckets


def test_padding_fraction():
    plan = make_plan(random_lengths(101, seed=1), rows_per_step=8)
    fed = sum(8 * s.row_length for s in plan.steps)
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
    todo, mine_done = steps_to_run(4, committed, process_index=1, process_count=2)
    assert todo == [1, 2, 3]
    assert mine_done == [True, True, False, False]  # step 1 runs again, but process 1 writes nothing
