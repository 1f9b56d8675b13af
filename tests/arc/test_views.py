from __future__ import annotations

import json

import numpy as np
import pytest

from layertap.arc.augment import DIHEDRAL
from layertap.arc.task import Pair, Task
from layertap.arc.views import View, prediction_views, view_task
from layertap.errors import LayerTapError

ASYMMETRIC = np.array([[1, 2, 0], [3, 4, 5]], dtype=np.int8)


def make_task(task_id: str = "t", n_train: int = 4, n_test: int = 2) -> Task:
    train = tuple(Pair((ASYMMETRIC + i) % 10, (ASYMMETRIC.T + i) % 10) for i in range(n_train))
    test = tuple(Pair(np.roll(ASYMMETRIC, i + 1, axis=1), None) for i in range(n_test))
    return Task(task_id, train, test)


def grid_key(grid: np.ndarray) -> tuple:
    return grid.shape, grid.tobytes()


def test_dihedral_views_in_order_distinct_and_identity_first() -> None:
    views = prediction_views(make_task(), 1)
    assert [v.augmentation.dihedral for v in views] == list(DIHEDRAL)
    assert [v.index for v in views] == list(range(8)) and {v.test_index for v in views} == {1}
    assert views[0].augmentation.colours == tuple(range(10)) and views[0].augmentation.pair_order is None
    inputs = {grid_key(view_task(make_task(), v).test[0].input) for v in views}
    assert len(inputs) == 8


@pytest.mark.parametrize(
    ("dihedral", "colours", "reorder", "count"),
    [(True, 0, False, 8), (False, 0, False, 1), (False, 3, True, 4), (True, 2, True, 24)],
)
def test_every_view_reverts_to_the_original_test_input(dihedral, colours, reorder, count) -> None:
    task = make_task()
    for test_index in range(len(task.test)):
        options = {"dihedral": dihedral, "colour_permutations": colours, "reorder_examples": reorder}
        views = prediction_views(task, test_index, **options)
        assert len(views) == count
        for view in views:
            shown = view_task(task, view)
            assert len(shown.test) == 1 and len(shown.train) == len(task.train)
            assert np.array_equal(view.augmentation.revert_grid(shown.test[0].input), task.test[test_index].input)


def test_colour_permutations_keep_background_and_are_distinct() -> None:
    views = prediction_views(make_task(), 0, colour_permutations=5)
    permutations = {v.augmentation.colours for v in views}
    assert len(permutations) == 6 and all(colours[0] == 0 for colours in permutations)
    # Each colour copy spans all 8 dihedral transforms: index = copy * 8 + dihedral position.
    assert all(views[i].augmentation.colours == views[i // 8 * 8].augmentation.colours for i in range(48))


def test_views_are_deterministic_and_independent_of_other_tasks_and_counts() -> None:
    options = {"colour_permutations": 3, "reorder_examples": True, "seed": 11}
    first = prediction_views(make_task("a"), 0, **options)
    prediction_views(make_task("b"), 0, **options)  # another task drawn in between
    assert prediction_views(make_task("a"), 0, **options) == first
    assert prediction_views(make_task("a"), 0, colour_permutations=1, reorder_examples=True, seed=11) == first[:16]
    assert prediction_views(make_task("b"), 0, **options) != first  # depends on the task id
    assert prediction_views(make_task("a"), 0, **{**options, "seed": 12}) != first


def test_reordering_moves_train_pairs_only() -> None:
    task = make_task(n_train=5, n_test=2)
    views = prediction_views(task, 1, reorder_examples=True)
    assert views[0].augmentation.pair_order is None  # view 0 is the task as given
    orders = [v.augmentation.pair_order for v in views[1:]]
    assert len(set(orders)) > 3
    for view, order in zip(views[1:], orders):
        assert order is None or (sorted(order[:5]) == list(range(5)) and order[5:] == (5, 6))
        shown = view_task(task, view)
        expected = [task.train[i].input for i in (order or range(5))[:5]]
        reverted = [view.augmentation.revert_grid(p.input) for p in shown.train]
        assert all(np.array_equal(a, b) for a, b in zip(reverted, expected))


def test_view_json_round_trip() -> None:
    for view in prediction_views(make_task(), 1, colour_permutations=1, reorder_examples=True):
        assert View.from_json(json.loads(json.dumps(view.to_json()))) == view
    with pytest.raises(LayerTapError, match="not a prediction view"):
        View.from_json({"task_id": "t"})


def test_bad_inputs_name_the_task() -> None:
    task = make_task("abc", n_test=2)
    with pytest.raises(LayerTapError, match=r"task abc: test input 3 does not exist \(it has 2\)"):
        prediction_views(task, 3)
    with pytest.raises(LayerTapError, match="task abc: test input -1"):
        prediction_views(task, -1)
    with pytest.raises(LayerTapError, match="task abc: colour_permutations"):
        prediction_views(task, 0, colour_permutations=-1)
    with pytest.raises(LayerTapError, match="task abc: view 0 belongs to task zzz"):
        view_task(task, prediction_views(make_task("zzz"), 0)[0])


def test_real_tasks_views_revert(arc_tasks) -> None:
    for task in arc_tasks[::97]:
        for test_index in range(len(task.test)):
            for view in prediction_views(task, test_index, colour_permutations=1, reorder_examples=True, seed=3):
                shown = view_task(task, view)
                pair = task.test[test_index]
                assert np.array_equal(view.augmentation.revert_grid(shown.test[0].input), pair.input)
                assert np.array_equal(view.augmentation.revert_grid(shown.test[0].output), pair.output)
