"""Stopping at a step boundary when asked to (SIGTERM: Kubernetes deleting the pod for a
suspend, a JobSet restart, a preemption), so that what was computed is made durable within
the pod's grace period instead of being killed mid-write.

JAX's distributed runtime installs its own SIGTERM handler (a preemption notice) that does
not stop the process; ours replaces it while the loop runs.
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager


class StopRequest:
    """Set once a stop was asked for; the extraction loop checks it between steps."""

    def __init__(self) -> None:
        self._event = threading.Event()
        self.signal: str = ""

    def set(self, why: str) -> None:
        self.signal = why
        self._event.set()

    def __bool__(self) -> bool:
        return self._event.is_set()


@contextmanager
def stop_on_termination() -> Iterator[StopRequest]:
    """A StopRequest set by SIGTERM while the block runs (main thread only)."""
    request = StopRequest()
    previous = signal.signal(signal.SIGTERM, lambda *_: request.set("SIGTERM"))
    try:
        yield request
    finally:
        signal.signal(signal.SIGTERM, previous if previous is not None else signal.SIG_DFL)
