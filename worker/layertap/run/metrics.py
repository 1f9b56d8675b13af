"""The worker's Prometheus metrics, served on LAYERTAP_METRICS_PORT when set (the JobSet sets
it and declares the port `metrics`; the chart can have GKE Managed Prometheus scrape it).

Every process serves its own: tokens it computed, steps and their time, what it made
durable, and which JobSet restart attempt it belongs to.
"""

from __future__ import annotations

import os
from collections.abc import Mapping

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server

from layertap_api.contract import ENV_METRICS_PORT, ENV_RESTART_ATTEMPT


class WorkerMetrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        r = self.registry
        self.tokens = Counter(
            "layertap_worker_tokens",
            "Useful tokens of the steps this process finished (every process runs every step).",
            registry=r,
        )
        self.steps = Counter("layertap_worker_steps", "Steps this process finished.", registry=r)
        self.step_seconds = Histogram(
            "layertap_worker_step_seconds",
            "Host time of a step, from waiting for its output to handing it to the writer.",
            buckets=(0.01, 0.03, 0.1, 0.3, 1, 3, 10, 30, 100),
            registry=r,
        )
        self.committed_tokens = Counter(
            "layertap_worker_committed_tokens",
            "Useful tokens of steps made durable, as this process saw them.",
            registry=r,
        )
        self.bytes_written = Gauge("layertap_worker_bytes_written", "Bytes this process wrote durably.", registry=r)
        self.restart_attempt = Gauge(
            "layertap_worker_restart_attempt",
            "The JobSet restart attempt this process runs in (0: the first).",
            registry=r,
        )

    def serve(self, env: Mapping[str, str] | None = None) -> int | None:
        """Start the /metrics endpoint if LAYERTAP_METRICS_PORT is set; returns the port."""
        env = os.environ if env is None else env
        if not env.get(ENV_METRICS_PORT):
            return None
        self.restart_attempt.set(int(env.get(ENV_RESTART_ATTEMPT) or 0))
        port = int(env[ENV_METRICS_PORT])
        start_http_server(port, registry=self.registry)
        return port

    def step(self, tokens: int, seconds: float) -> None:
        self.tokens.inc(tokens)
        self.steps.inc()
        self.step_seconds.observe(seconds)

    def committed(self, tokens: int, bytes_written: int) -> None:
        self.committed_tokens.inc(tokens)
        self.bytes_written.set(bytes_written)
