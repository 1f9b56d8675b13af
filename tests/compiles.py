"""Counting XLA compiles, for tests that hold a program to fixed shapes."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import jax.monitoring

BACKEND_COMPILE = "/jax/core/compile/backend_compile_duration"


@contextlib.contextmanager
def counting_compiles() -> Iterator[list[int]]:
    """[n]: the backend compiles that happened inside the block so far."""
    count = [0]

    def listener(event: str, _seconds: float, **_kwargs) -> None:
        if event == BACKEND_COMPILE:
            count[0] += 1

    jax.monitoring.register_event_duration_secs_listener(listener)
    try:
        yield count
    finally:
        jax.monitoring.unregister_event_duration_listener(listener)
