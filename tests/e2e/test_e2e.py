"""helm install -> kubectl apply -> the operator's JobSet -> Jobs -> pods placed on TPU node
pools -> workers running multi-host extraction -> progress in the status -> Succeeded, on
the simulated GKE TPU cluster (cluster.py), with kills, suspends and queueing on the way."""

from __future__ import annotations

import json
import signal
import time

import pytest
from kube import wait_for

from .conftest import NAMESPACE, assert_same_output, kill_process, local_reference, progress_values

pytestmark = pytest.mark.timeout(900)


def test_multihost_v5e_runs_to_succeeded_with_the_output_of_a_local_run(e2e):
    spec = e2e.spec("tpu-v5-lite-podslice", "4x4")
    e2e.apply(spec)
    seen, status = progress_values(e2e)
    assert status["phase"] == "Succeeded", (status, e2e.logs())
    assert len(seen) >= 2, (seen, e2e.logs())  # progress moved while it ran
    assert seen[-1]["samplesDone"] == seen[-1]["samplesTotal"] and seen[-1]["percent"] == 100.0
    pods = e2e.pods()
    assert len(pods) == 4 and {p["status"]["phase"] for p in pods} == {"Succeeded"}
    assert len({p["spec"]["nodeName"] for p in pods}) == 4  # one host per node of the v5e-4x4 pool
    assert {p["spec"]["nodeName"].rsplit("-", 1)[0] for p in pods} == {"v5e-4x4"}
    reference = local_reference(e2e.cluster, spec, f"gs://{e2e.cluster.bucket}/local/{e2e.name}")
    assert_same_output(e2e.read_output(), reference)
