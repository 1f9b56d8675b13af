"""`dataset.select`: which tasks (ARC formats) or records (text formats) a run uses.

    tasks = select(read_tasks(...), lambda task: task.id, spec.select, uri=spec.uri, unit="task")

Applied in this order, each step keeping dataset order:
1. ids: only the items whose key is listed (every listed id must be found);
2. offset: skip the first `offset` of those;
3. sample: a random subset of `sample` of the rest: the ones whose rank, a hash of (seed,
   key), is smallest (ties by position); so a larger sample contains a smaller one;
4. limit: at most the first `limit` of those.

Pure: the result depends on the spec and the keys in dataset order only, never on the
host, the host count or the time. Lazy: nothing is read before the first item is asked
for; ids and sample read the whole dataset (keeping only what they may select), offset
and limit stream. A bad selection is a LayerTapError naming the field.
"""

from __future__ import annotations

import hashlib
import heapq
from collections.abc import Callable, Iterable, Iterator
from itertools import count, islice
from typing import TypeVar

from layertap.errors import LayerTapError
from layertap.humanize import plural
from layertap_api.spec import SelectionSpec

T = TypeVar("T")
SHOWN_IDS = 5


def select(
    items: Iterable[T],
    key_of: Callable[[T], str],
    spec: SelectionSpec | None,
    *,
    uri: str,
    unit: str = "task",
    ids_hint: str = "",
) -> Iterator[T]:
    """The items `spec` selects, in dataset order; `spec` None: all of them. `unit` names an
    item in messages ("task", "record"); `ids_hint` says what an id is, after an unknown one."""
    if spec is None:
        return iter(items)
    stream: Iterable[T] = items
    if spec.ids is not None:
        stream = _with_ids(stream, key_of, spec.ids, uri, unit, ids_hint)
    stream = _skip(stream, spec.offset, uri, unit, "with dataset.select.ids" if spec.ids is not None else "")
    if spec.sample is not None:
        left = [part for part, on in (("ids", spec.ids is not None), ("offset", spec.offset)) if on]
        stream = _sample(stream, key_of, spec.sample, spec.seed, uri, unit, " and ".join(left))
    return islice(stream, spec.limit)


def rank(seed: int, key: str) -> int:
    """The sample rank of an item: a stable 64-bit hash of the seed and its key."""
    digest = hashlib.blake2b(f"{seed}\0{key}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big")


def _with_ids(items, key_of, ids: list[str], uri: str, unit: str, hint: str) -> Iterator:
    wanted, found, kept, seen = set(ids), set(), [], 0
    for seen, item in enumerate(items, 1):  # noqa: B007 -- seen counts the items for the error below
        key = key_of(item)
        if key in wanted:
            kept.append(item)
            found.add(key)
    missing = [task_id for task_id in ids if task_id not in found]
    if missing:
        shown = ", ".join(missing[:SHOWN_IDS]) + (
            f" and {len(missing) - SHOWN_IDS} more" if len(missing) > SHOWN_IDS else ""
        )
        raise LayerTapError(
            f"dataset.select.ids: {unit}(s) {shown} not in {uri} ({plural(seen, unit)}{'; ' + hint if hint else ''})"
        )
    yield from kept


def _skip(items, offset: int, uri: str, unit: str, scope: str) -> Iterator:
    seen = 0
    for seen, item in enumerate(items, 1):
        if seen > offset:
            yield item
    if offset and seen <= offset:
        raise LayerTapError(
            f"dataset.select.offset: {offset} is past the end of {uri} "
            f"({plural(seen, unit)}{' ' + scope if scope else ''})"
        )


def _sample(items, key_of, size: int, seed: int, uri: str, unit: str, after: str) -> Iterator:
    positions = count()
    ranked = ((rank(seed, key_of(item)), next(positions), item) for item in items)
    chosen = heapq.nsmallest(size, ranked, key=lambda entry: entry[:2])
    left = next(positions)  # items seen
    if left < size:
        raise LayerTapError(
            f"dataset.select.sample: {size} asked, but {uri} has only {plural(left, unit)}"
            + (f" left after dataset.select.{after}" if after else "")
        )
    yield from (item for _, _, item in sorted(chosen, key=lambda entry: entry[1]))
