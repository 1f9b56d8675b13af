from __future__ import annotations

import numpy as np
import pytest

from layertap.extract.plan import make_plan, pack_rows, unit_id


def random_lengths(n: int, seed: int = 0, high: int = 300) -> dict[int, int]:
    rng = np.random.default_rng(seed)
    return {i: int(n) for i, n in enumerate(rng.integers(1, high, size=n))}


@pytest.mark.parametrize("seed", range(5))
def test_packing_places_every_sample_once_within_the_row_length(seed):
    lengths = random_lengths(500, seed)
    rows = pack_rows(lengths, 384)
    placed = [i for row in rows for i in row]
    assert sorted(placed) == sorted(lengths)
    assert all(sum(lengths[i] for i in row) <= 384 for row in rows)
    # best-fit decreasing stays close to the lower bound of rows needed
    assert len(rows) <= 1.05 * sum(lengths.values()) / 384 + 1


def test_plan_is_a_pure_function_of_lengths_and_config():
    lengths = random_lengths(200, seed=3)
    shuffled = dict(sorted(lengths.items(), key=lambda kv: -kv[0]))
    a, b = make_plan(lengths, 8), make_plan(shuffled, 8)
    assert a.steps == b.steps and a.fingerprint() == b.fingerprint()
    assert make_plan(lengths, 4).fingerprint() != a.fingerprint()


def test_every_step_has_the_same_shape_and_the_last_is_padded_with_empty_rows():
    plan = make_plan(random_lengths(101, seed=1), rows_per_step=8)
    assert plan.row_length % 128 == 0 and plan.row_length >= max(plan.lengths.values())
    assert all(len(step) == 8 for step in plan.steps)
    assert sum(1 for step in plan.steps for row in step if row) == len(pack_rows(plan.lengths, plan.row_length))
    assert plan.steps[-1][-1] == () or all(plan.steps[-1])
    assert plan.max_per_row == max(len(row) for step in plan.steps for row in step)
    assert sum(plan.step_tokens(s) for s in range(plan.num_steps)) == plan.useful_tokens
    fed = plan.num_steps * 8 * plan.row_length
    assert plan.padding_fraction == pytest.approx(1 - plan.useful_tokens / fed)


def test_explicit_row_length_must_fit_the_longest_sample():
    with pytest.raises(ValueError, match="does not fit"):
        make_plan({0: 300}, 2, row_length=256)
    with pytest.raises(ValueError, match="no samples"):
        make_plan({}, 2)


def test_unit_ids_are_unique_per_step_and_process():
    ids = {unit_id(s, p, 3) for s in range(10) for p in range(3)}
    assert ids == set(range(30))
