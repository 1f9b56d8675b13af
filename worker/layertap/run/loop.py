"""The step loop both commands run: steps dispatched ahead of the one being finished, so
the devices always have work queued while the host waits for an earlier step's output,
writes it and counts it."""

from __future__ import annotations

import collections
from collections.abc import Callable, Iterable
from typing import TypeVar

from layertap.run.stopping import StopRequest

Step = TypeVar("Step")
Flight = TypeVar("Flight")


def dispatch_ahead(
    steps: Iterable[Step],
    dispatch: Callable[[Step], Flight],
    finish: Callable[[Flight], None],
    depth: int,
    stop: StopRequest | None = None,
) -> list[Step]:
    """`dispatch` each step (it returns at once, the device works on), and `finish` each in
    order once `depth` later steps are dispatched, or at the end; stops dispatching when
    `stop` is set (what was dispatched is still finished). Returns the steps dispatched."""
    in_flight: collections.deque[Flight] = collections.deque()
    ran = []
    for step in steps:
        if stop:
            break
        ran.append(step)
        in_flight.append(dispatch(step))
        while len(in_flight) > depth:
            finish(in_flight.popleft())
    while in_flight:
        finish(in_flight.popleft())
    return ran
