"""Task augmentations with provenance: dihedral transforms, colour permutations, pair order.

An `Augmentation` is plain data (JSON in each sample's meta); `apply` and `revert` are
exact inverses, and `revert_grid` maps a grid predicted for the augmented task back to
the original task's frame. Random augmentations are drawn from a generator seeded by
(seed, task id, copy), so they do not depend on reading order, host or run.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, replace
from typing import Literal, get_args

import numpy as np

from layertap.arc.grids import NUM_COLOURS
from layertap.arc.task import Pair, Task

AugmentKind = Literal["dihedral", "colours", "train-order", "swap-test"]
AUGMENT_KINDS: tuple[AugmentKind, ...] = get_args(AugmentKind)
# The 8 symmetries of the square: a left-right flip (or not), then k quarter turns anticlockwise.
DIHEDRAL = ("identity", "rot90", "rot180", "rot270", "flip", "flip-rot90", "flip-rot180", "flip-rot270")


def dihedral(grid: np.ndarray, name: str) -> np.ndarray:
    index = DIHEDRAL.index(name)
    if index >= 4:
        grid = np.fliplr(grid)
    return np.rot90(grid, k=index % 4)


def undo_dihedral(grid: np.ndarray, name: str) -> np.ndarray:
    index = DIHEDRAL.index(name)
    grid = np.rot90(grid, k=-(index % 4))
    return np.fliplr(grid) if index >= 4 else grid


@dataclass(frozen=True)
class Augmentation:
    """dihedral: a DIHEDRAL name; colours: colours[old] = new (a permutation of 0..9);
    pair_order: augmented pair j is original pair pair_order[j], train pairs first then test
    (the first len(task.train) of them are the augmented task's train pairs)."""

    dihedral: str = "identity"
    colours: tuple[int, ...] = tuple(range(NUM_COLOURS))
    pair_order: tuple[int, ...] | None = None

    def __post_init__(self) -> None:
        if self.dihedral not in DIHEDRAL:
            raise ValueError(f"unknown dihedral transform {self.dihedral!r}")
        if sorted(self.colours) != list(range(NUM_COLOURS)):
            raise ValueError(f"colours must be a permutation of 0..9, got {self.colours}")

    def grid(self, grid: np.ndarray) -> np.ndarray:
        mapped = np.asarray(self.colours, dtype=np.int8)[dihedral(grid, self.dihedral)]
        mapped.flags.writeable = False
        return mapped

    def revert_grid(self, grid: np.ndarray) -> np.ndarray:
        inverse = np.argsort(self.colours).astype(np.int8)
        original = undo_dihedral(inverse[grid], self.dihedral)
        original.flags.writeable = False
        return original

    def apply(self, task: Task) -> Task:
        return self._reorder(task, self.grid, forward=True)

    def revert(self, task: Task) -> Task:
        return self._reorder(task, self.revert_grid, forward=False)

    def _reorder(self, task: Task, transform, forward: bool) -> Task:
        pairs = [
            Pair(transform(p.input), None if p.output is None else transform(p.output)) for p in task.train + task.test
        ]
        order = self.pair_order or tuple(range(len(pairs)))
        if len(order) != len(pairs):
            raise ValueError(f"pair_order has {len(order)} entries for a task with {len(pairs)} pairs")
        if forward:
            pairs = [pairs[i] for i in order]
        else:
            restored = [None] * len(pairs)
            for j, i in enumerate(order):
                restored[i] = pairs[j]
            pairs = restored
        n_train = len(task.train)
        return replace(task, train=tuple(pairs[:n_train]), test=tuple(pairs[n_train:]))

    def to_json(self) -> dict:
        return {
            "dihedral": self.dihedral,
            "colours": list(self.colours),
            "pair_order": None if self.pair_order is None else list(self.pair_order),
        }

    @classmethod
    def from_json(cls, value: dict) -> Augmentation:
        order = value.get("pair_order")
        return cls(value["dihedral"], tuple(value["colours"]), None if order is None else tuple(order))


def augmentation_rng(seed: int, task_id: str, copy: int) -> np.random.Generator:
    """A generator that depends only on (seed, task id, copy)."""
    digest = hashlib.sha256(f"{seed}\0{task_id}\0{copy}".encode()).digest()
    return np.random.default_rng(int.from_bytes(digest[:16], "little"))


def random_augmentation(
    task: Task,
    rng: np.random.Generator,
    kinds: tuple[AugmentKind, ...] = AUGMENT_KINDS,
    permute_background: bool = False,
) -> Augmentation:
    """One random augmentation of `task` using the given kinds. Colour 0 (the background)
    stays 0 unless `permute_background`. Test pairs swap with train pairs only when every
    test pair has an output (a train pair needs one)."""
    name = DIHEDRAL[rng.integers(len(DIHEDRAL))] if "dihedral" in kinds else "identity"
    colours = tuple(range(NUM_COLOURS))
    if "colours" in kinds:
        if permute_background:
            colours = tuple(int(c) for c in rng.permutation(NUM_COLOURS))
        else:
            colours = (0, *(int(c) for c in rng.permutation(np.arange(1, NUM_COLOURS))))
    n_train, n_all = len(task.train), len(task.train) + len(task.test)
    order = list(range(n_all))
    if "swap-test" in kinds and all(p.output is not None for p in task.test):
        order = [int(i) for i in rng.permutation(n_all)]
    if "train-order" in kinds:
        order[:n_train] = [order[i] for i in rng.permutation(n_train)]
    pair_order = None if order == list(range(n_all)) else tuple(order)
    return Augmentation(name, colours, pair_order)
