from __future__ import annotations

import json

import numpy as np
import pytest

from layertap.arc.augment import (
    DIHEDRAL,
    Augmentation,
    augmentation_rng,
    dihedral,
    random_augmentation,
    undo_dihedral,
)
from layertap.arc.task import Pair, Task

ASYMMETRIC = np.arange(6, dtype=np.int8).reshape(2, 3)


def test_eight_distinct_dihedral_transforms_each_undone() -> None:
    images = {dihedral(ASYMMETRIC, name).tobytes() + bytes(dihedral(ASYMMETRIC, name).shape) for name in DIHEDRAL}
    assert len(images) == 8
    for name in DIHEDRAL:
        assert np.array_equal(undo_dihedral(dihedral(ASYMMETRIC, name), name), ASYMMETRIC)
    assert dihedral(ASYMMETRIC, "rot90").tolist() == [[2, 5], [1, 4], [0, 3]]
    assert dihedral(ASYMMETRIC, "flip").tolist() == [[2, 1, 0], [5, 4, 3]]


def test_every_arc_task_round_trips_through_random_augmentations(arc_tasks) -> None:
    moved_test = 0
    for task in arc_tasks:
        for copy in (1, 2):
            augmentation = random_augmentation(task, augmentation_rng(7, task.id, copy))
            augmented = augmentation.apply(task)
            assert len(augmented.train) == len(task.train) and len(augmented.test) == len(task.test)
            assert augmentation.revert(augmented).equals(task)
            # A predicted answer maps back to the original frame.
            order = augmentation.pair_order or range(len(task.train) + len(task.test))
            original_pair = (task.train + task.test)[order[len(task.train)]]
            assert np.array_equal(augmentation.revert_grid(augmented.test[0].output), original_pair.output)
            moved_test += order[len(task.train)] < len(task.train)
    assert moved_test > len(arc_tasks) // 2  # train/test swaps do happen


def test_background_is_kept_unless_asked() -> None:
    task = Task("t", (Pair(ASYMMETRIC, ASYMMETRIC),), (Pair(ASYMMETRIC, ASYMMETRIC),))
    kept = [random_augmentation(task, augmentation_rng(0, "t", c)).colours[0] for c in range(50)]
    moved = [
        random_augmentation(task, augmentation_rng(0, "t", c), permute_background=True).colours[0] for c in range(50)
    ]
    assert set(kept) == {0} and len(set(moved)) > 1


def test_kinds_limit_what_changes_and_seed_determines_it() -> None:
    task = Task("t", tuple(Pair(ASYMMETRIC, ASYMMETRIC) for _ in range(4)), (Pair(ASYMMETRIC, ASYMMETRIC),))
    only_dihedral = random_augmentation(task, augmentation_rng(0, "t", 1), kinds=("dihedral",))
    assert only_dihedral.colours == tuple(range(10)) and only_dihedral.pair_order is None
    only_order = random_augmentation(task, augmentation_rng(0, "t", 3), kinds=("train-order",))
    assert only_order.dihedral == "identity" and only_order.pair_order[-1] == 4  # test stays last
    first = random_augmentation(task, augmentation_rng(5, "t", 1))
    assert random_augmentation(task, augmentation_rng(5, "t", 1)) == first
    assert random_augmentation(task, augmentation_rng(6, "t", 1)) != first


def test_tests_without_outputs_never_move_to_train() -> None:
    task = Task("t", tuple(Pair(ASYMMETRIC, ASYMMETRIC) for _ in range(3)), (Pair(ASYMMETRIC, None),))
    for copy in range(30):
        order = random_augmentation(task, augmentation_rng(0, "t", copy)).pair_order or (0, 1, 2, 3)
        assert order[-1] == 3


def test_provenance_is_json_and_round_trips() -> None:
    augmentation = Augmentation("flip-rot90", (0, 3, 2, 1, 4, 5, 6, 7, 9, 8), (1, 0, 2))
    assert Augmentation.from_json(json.loads(json.dumps(augmentation.to_json()))) == augmentation
    with pytest.raises(ValueError, match="permutation of 0..9"):
        Augmentation("identity", (0,) * 10)
