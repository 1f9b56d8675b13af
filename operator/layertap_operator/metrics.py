"""The operator's Prometheus metrics, served on LAYERTAP_METRICS_PORT (the chart sets it to
operator.metricsPort and names the container port `metrics`).

What an on-call person asks first: is it reconciling, is it failing, how many extractions
are in which phase, and how many JobSets it made.
"""

from __future__ import annotations

import collections
import os
from collections.abc import Iterator, Mapping

from prometheus_client import CollectorRegistry, Counter, Histogram, start_http_server
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from layertap_operator.constants import ENV_METRICS_PORT
from layertap_operator.status import PHASES


class PhaseCollector(Collector):
    """layertap_extractions{phase}: the resources this operator last saw, by phase (computed
    at scrape time from what reconcile recorded, so a deleted resource stops counting)."""

    def __init__(self) -> None:
        self.phases: dict[tuple[str, str], str] = {}

    def collect(self) -> Iterator[GaugeMetricFamily]:
        family = GaugeMetricFamily(
            "layertap_extractions", "ActivationExtractions this operator serves, by phase.", labels=["phase"]
        )
        counts = collections.Counter(self.phases.values())
        for phase in PHASES:
            family.add_metric([phase], counts.get(phase, 0))
        yield family


class OperatorMetrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        r = self.registry
        self.reconciles = Counter(
            "layertap_operator_reconciles",
            "Reconcile passes, by outcome: ok, problem (a condition the user must act on), error (retried).",
            ["outcome"],
            registry=r,
        )
        self.reconcile_seconds = Histogram(
            "layertap_operator_reconcile_seconds",
            "Time of one reconcile pass (API round-trips included).",
            buckets=(0.005, 0.01, 0.03, 0.1, 0.3, 1, 3, 10, 30),
            registry=r,
        )
        self.jobsets_created = Counter(
            "layertap_operator_jobsets_created", "JobSets this operator created.", registry=r
        )
        self.phases = PhaseCollector()
        r.register(self.phases)

    def serve(self, env: Mapping[str, str] | None = None) -> int | None:
        """Start the /metrics endpoint if LAYERTAP_METRICS_PORT is set; returns the port."""
        env = os.environ if env is None else env
        if not env.get(ENV_METRICS_PORT):
            return None
        port = int(env[ENV_METRICS_PORT])
        start_http_server(port, registry=self.registry)
        return port

    def saw(self, namespace: str, name: str, phase: str | None) -> None:
        if phase:
            self.phases.phases[(namespace, name)] = phase

    def forget(self, namespace: str, name: str) -> None:
        self.phases.phases.pop((namespace, name), None)


METRICS = OperatorMetrics()  # the process's one set, as kopf handlers are module functions
