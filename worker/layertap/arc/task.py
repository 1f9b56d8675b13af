"""ARC tasks: train pairs that define a transformation, test pairs to apply it to."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field

import numpy as np

from layertap.arc.grids import GridError, to_grid


@dataclass(frozen=True)
class Pair:
    """An input grid and its output grid (None for a test pair whose answer is unknown)."""

    input: np.ndarray
    output: np.ndarray | None = None

    def grids(self) -> dict[str, np.ndarray]:
        named = {"input": self.input}
        if self.output is not None:
            named["output"] = self.output
        return named

    def equals(self, other: Pair) -> bool:
        if (self.output is None) != (other.output is None):
            return False
        same_input = np.array_equal(self.input, other.input)
        return same_input and (self.output is None or np.array_equal(self.output, other.output))


@dataclass(frozen=True)
class Task:
    """One ARC task. `id` is the ARC id (or a content hash for tasks that came without one);
    `origin` says where it was read ("file, line N"), for provenance only."""

    id: str
    train: tuple[Pair, ...]
    test: tuple[Pair, ...]
    origin: str = field(default="", compare=False)

    def __post_init__(self) -> None:
        if not self.train:
            raise GridError("a task needs at least one train pair")
        if not self.test:
            raise GridError("a task needs at least one test pair")
        if any(pair.output is None for pair in self.train):
            raise GridError("every train pair needs an output")

    def to_json(self, test_outputs: bool = True) -> dict:
        """The ARC-AGI JSON form: {"train": [{"input", "output"}], "test": [...]}."""

        def pair_json(pair: Pair, with_output: bool) -> dict:
            out = {"input": pair.input.tolist()}
            if with_output and pair.output is not None:
                out["output"] = pair.output.tolist()
            return out

        return {
            "train": [pair_json(pair, True) for pair in self.train],
            "test": [pair_json(pair, test_outputs) for pair in self.test],
        }

    def content_hash(self) -> str:
        """sha256 of the canonical JSON form: equal for tasks with equal grids, whatever their id."""
        canonical = json.dumps(self.to_json(), separators=(",", ":"))
        return hashlib.sha256(canonical.encode()).hexdigest()

    def equals(self, other: Task) -> bool:
        return (
            self.id == other.id
            and len(self.train) == len(other.train)
            and len(self.test) == len(other.test)
            and all(a.equals(b) for a, b in zip(self.train + self.test, other.train + other.test))
        )


def pair_from_json(value: object, where: str, need_output: bool) -> Pair:
    """A pair from {"input": grid, "output": grid} or [input, output]; `where` names it in errors."""
    if isinstance(value, dict):
        unknown = set(value) - {"input", "output"}
        if "input" not in value:
            raise GridError(f"{where}: missing 'input' (keys: {sorted(value)})")
        if unknown:
            raise GridError(f"{where}: unexpected keys {sorted(unknown)}")
        raw_input, raw_output = value["input"], value.get("output")
    elif isinstance(value, (list, tuple)) and len(value) == 2:
        raw_input, raw_output = value
    else:
        raise GridError(f"{where}: expected {{'input', 'output'}} or [input, output]")
    if raw_output is None and need_output:
        raise GridError(f"{where}: missing 'output'")
    return Pair(
        input=_grid(raw_input, f"{where} input"),
        output=None if raw_output is None else _grid(raw_output, f"{where} output"),
    )


def task_from_json(value: object, task_id: str) -> Task:
    """A task from the ARC-AGI JSON form; raises GridError naming the pair at fault."""
    if not isinstance(value, dict) or "train" not in value or "test" not in value:
        raise GridError("expected an object with 'train' and 'test' lists")
    train, test = value["train"], value["test"]
    for name, pairs in (("train", train), ("test", test)):
        if not isinstance(pairs, list) or not pairs:
            raise GridError(f"'{name}' must be a non-empty list of pairs")
    return Task(
        id=task_id,
        train=tuple(pair_from_json(p, f"train pair {i}", True) for i, p in enumerate(train)),
        test=tuple(pair_from_json(p, f"test pair {i}", False) for i, p in enumerate(test)),
    )


def _grid(value: object, where: str) -> np.ndarray:
    try:
        return to_grid(value)
    except GridError as error:
        raise GridError(f"{where}: {error}") from None
