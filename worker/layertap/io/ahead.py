"""Reads in parallel, consumed in order, with what is held bounded: `map_ahead`."""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from typing import TypeVar

Item = TypeVar("Item")
Result = TypeVar("Result")


def map_ahead(fn: Callable[[Item], Result], items: Iterable[Item], ahead: int = 16) -> Iterator[Result]:
    """fn(item) of each item, in the items' order, by `ahead` threads that run at most
    `ahead` items before the consumer: results wait in memory for `ahead` items at most,
    however many items there are (`ThreadPoolExecutor.map` starts them all at once)."""
    if ahead < 1:
        raise ValueError(f"ahead must be at least 1, got {ahead}")
    pool = ThreadPoolExecutor(ahead)
    try:
        pending: deque[Future[Result]] = deque()
        for item in items:
            if len(pending) == ahead:
                yield pending.popleft().result()
            pending.append(pool.submit(fn, item))
        while pending:
            yield pending.popleft().result()
    finally:
        # A consumer that stopped early does not wait for the calls under way: they end by
        # themselves. Waiting could deadlock, as the garbage collector may close this
        # generator in any thread, even one holding a lock those calls need.
        pool.shutdown(wait=False, cancel_futures=True)
