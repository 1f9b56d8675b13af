"""Where a worker process stands in its run, and what it reports to: one object that
`layertap extract` and `layertap predict` hand their `execute()`."""

from __future__ import annotations

from dataclasses import dataclass, field

from layertap.run.distributed import Distributed
from layertap.run.metrics import WorkerMetrics
from layertap.run.stopping import StopRequest


@dataclass
class RunContext:
    setup: Distributed = field(default_factory=lambda: Distributed("single"))
    show_progress: bool = True
    reporter: object | None = None  # a StatusReporter (process 0 in a cluster) or None
    stop: StopRequest | None = None  # set (SIGTERM): stop at the next step boundary, keep what is durable
    metrics: WorkerMetrics | None = None

    @property
    def process_index(self) -> int:
        import jax

        return jax.process_index()

    @property
    def process_count(self) -> int:
        import jax

        return jax.process_count()

    @property
    def first(self) -> bool:
        return self.process_index == 0

    def barrier(self, name: str) -> None:
        """Every process reaches this point before any goes on (nothing to wait for alone)."""
        if self.process_count > 1:
            from jax.experimental import multihost_utils

            multihost_utils.sync_global_devices(f"layertap: {name}")

    def all_gather(self, flags: list[bool]) -> list[list[bool]]:
        """Every process's flags, by process index (each process passes as many)."""
        if self.process_count == 1:
            return [list(flags)]
        import numpy as np
        from jax.experimental import multihost_utils

        gathered = multihost_utils.process_allgather(np.asarray(flags, np.uint8))
        return [[bool(flag) for flag in row] for row in np.asarray(gathered).reshape(self.process_count, -1)]

    @property
    def stopped(self) -> str:
        """Why the run stops early ("" while it does not)."""
        return (self.stop.signal or "a stop request") if self.stop else ""
