"""One record (a JSON object or a parquet row) -> one ARC task, whatever its schema.

Schemas, detected by their keys:
- ARC-AGI: {"train": [pairs], "test": [pairs]} (optionally with "id"); lists may also
  arrive as JSON strings, as some Hugging Face exports store them.
- BARC: {"examples": [[input, output] | {"input", "output"}, ...], "source", "seeds"}:
  unsplit pairs, divided into train and test by `Split`.
- BARC chat: {"messages": [{"role", "content"}, ...]} with grids written as colour words.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass

from layertap.arc.colours import grid_from_words, is_colour_row
from layertap.arc.grids import GridError
from layertap.arc.task import Pair, Task, pair_from_json, task_from_json

ID_KEYS = ("id", "task_id", "name")
HASH_ID_CHARS = 12  # 48 bits: collisions stay improbable for millions of tasks


@dataclass(frozen=True)
class Split:
    """How unsplit BARC examples become train and test pairs: the last `test_pairs` are tests."""

    test_pairs: int = 1

    def __post_init__(self) -> None:
        if self.test_pairs < 1:
            raise ValueError("test_pairs must be >= 1")

    def apply(self, pairs: list[Pair]) -> tuple[tuple[Pair, ...], tuple[Pair, ...]]:
        if len(pairs) <= self.test_pairs:
            raise GridError(f"{len(pairs)} examples leave no train pair with {self.test_pairs} test pair(s)")
        cut = len(pairs) - self.test_pairs
        return tuple(pairs[:cut]), tuple(pairs[cut:])


def task_from_record(record: object, split: Split | None = None) -> Task:
    """The task a record describes; raises GridError with the reason when it is invalid."""
    if not isinstance(record, dict):
        raise GridError(f"expected a JSON object, got {type(record).__name__}")
    if "train" in record and "test" in record:
        body = {key: _maybe_json(record[key]) for key in ("train", "test")}
        task = task_from_json(body, task_id="")
        explicit = next((str(record[k]) for k in ID_KEYS if record.get(k) not in (None, "")), None)
    elif "examples" in record:
        task = _barc_task(_maybe_json(record["examples"]), split or Split())
        explicit = None
    elif "messages" in record:
        task = _chat_task(_maybe_json(record["messages"]))
        explicit = None
    else:
        raise GridError(f"no 'train'/'test', 'examples' or 'messages' field (keys: {sorted(record)[:8]})")
    return Task(explicit or task.content_hash()[:HASH_ID_CHARS], task.train, task.test)


def _maybe_json(value: object) -> object:
    if isinstance(value, str):
        try:
            return json.loads(value)
        except json.JSONDecodeError:
            raise GridError("a string field is not valid JSON") from None
    return value


def _barc_task(examples: object, split: Split) -> Task:
    if not isinstance(examples, list) or not examples:
        raise GridError("'examples' must be a non-empty list of pairs")
    pairs = [pair_from_json(p, f"example {i}", need_output=True) for i, p in enumerate(examples)]
    train, test = split.apply(pairs)
    return Task("", train, test)


_TEST_MARKER = re.compile(r"input grid for the test example", re.IGNORECASE)
_HEADER = re.compile(r"^\s*(input|output)\s*:\s*$", re.IGNORECASE)


def _chat_task(messages: object) -> Task:
    """BARC chat: the user message holds "Input:"/"Output:" colour-word grids for the examples,
    then the test input(s) after "Here is the input grid for the test example:"; the assistant
    message, when present, holds the test output grid(s)."""
    if not isinstance(messages, list) or not all(isinstance(m, dict) for m in messages):
        raise GridError("'messages' must be a list of {role, content} objects")
    by_role: dict[str, str] = {}
    for message in messages:
        by_role.setdefault(str(message.get("role")), str(message.get("content", "")))
    if "user" not in by_role:
        raise GridError("'messages' has no user message")

    train_inputs, train_outputs, test_inputs = [], [], []
    in_test, header = False, None
    for kind, block in _labelled_blocks(by_role["user"]):
        if kind == "marker":
            in_test, header = True, None
        elif kind == "header":
            header = block
        elif in_test:
            test_inputs.append(block)
        elif header == "input":
            train_inputs.append(block)
        elif header == "output":
            train_outputs.append(block)
        else:
            raise GridError("user message: a grid without an 'Input:' or 'Output:' header")
    if not train_inputs or len(train_inputs) != len(train_outputs):
        raise GridError(f"user message: {len(train_inputs)} example inputs and {len(train_outputs)} outputs")
    if not test_inputs:
        raise GridError("user message: no test input grid after the test marker")

    answers = [b for kind, b in _labelled_blocks(by_role.get("assistant", "")) if kind == "grid"]
    if answers and len(answers) != len(test_inputs):
        raise GridError(f"assistant message: {len(answers)} grids for {len(test_inputs)} test inputs")
    outputs = answers or [None] * len(test_inputs)

    def grid(lines: list[str], where: str):
        try:
            return grid_from_words(lines)
        except GridError as error:
            raise GridError(f"{where}: {error}") from None

    train = tuple(
        Pair(grid(i, f"example {k} input"), grid(o, f"example {k} output"))
        for k, (i, o) in enumerate(zip(train_inputs, train_outputs))
    )
    test = tuple(
        Pair(grid(i, f"test {k} input"), None if o is None else grid(o, f"test {k} output"))
        for k, (i, o) in enumerate(zip(test_inputs, outputs))
    )
    return Task("", train, test)


def _labelled_blocks(text: str):
    """Yields ("marker", None), ("header", "input"|"output") and ("grid", lines) in text order."""
    block: list[str] = []
    for line in text.splitlines():
        if is_colour_row(line):
            block.append(line)
            continue
        if block:
            yield "grid", block
            block = []
        if _TEST_MARKER.search(line):
            yield "marker", None
        elif match := _HEADER.match(line):
            yield "header", match.group(1).lower()
    if block:
        yield "grid", block
