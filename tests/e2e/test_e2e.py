"""helm install -> kubectl apply -> the operator's JobSet -> Jobs -> pods placed on TPU node
pools -> workers running multi-host extraction -> progress in the status -> Succeeded, on
the simulated GKE TPU cluster (simulated_gke.py), with kills, suspends and queueing on the way."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.request

import pytest
from kube import wait_for
from prometheus_client.parser import text_string_to_metric_families
from workflow import NAMESPACE, assert_same_output, kill_process, local_reference, progress_values

pytestmark = pytest.mark.timeout(900)


def test_multihost_v5e_runs_to_succeeded_with_the_output_of_a_local_run(e2e):
    spec = e2e.spec("tpu-v5-lite-podslice", "4x4")
    e2e.apply(spec)
    seen, status = progress_values(e2e)
    assert status["phase"] == "Succeeded", (status, e2e.logs())
    assert len(seen) >= 2, (seen, e2e.logs())  # progress moved while it ran
    assert seen[-1]["samplesDone"] == seen[-1]["samplesTotal"] and seen[-1]["percent"] == 100.0
    # the pre-flight estimate, made before the first step, stays beside the measured figures
    estimate = status["progress"]["estimate"]
    assert estimate["tokens"] == seen[-1]["tokensDone"] and estimate["samples"] == seen[-1]["samplesTotal"]
    assert estimate["devices"] == 16 and "tpu-v5-lite-podslice: 40% of 197 TFLOP/s" in estimate["basis"]
    assert estimate["seconds"] > 0 and estimate["chipHours"] == pytest.approx(estimate["seconds"] * 16 / 3600, rel=0.01)
    described = e2e.cluster.kubectl("describe", "ae", e2e.name, "-n", NAMESPACE).stdout
    assert "Estimate:" in described and "Chip Hours:" in described
    pods = e2e.pods()
    assert len(pods) == 4 and {p["status"]["phase"] for p in pods} == {"Succeeded"}
    assert len({p["spec"]["nodeName"] for p in pods}) == 4  # one host per node of the v5e-4x4 pool
    assert {p["spec"]["nodeName"].rsplit("-", 1)[0] for p in pods} == {"v5e-4x4"}
    reference = local_reference(e2e.cluster, spec, f"gs://{e2e.cluster.bucket}/local/{e2e.name}")
    assert_same_output(e2e.read_output(), reference)


def test_multislice_v6e_gives_every_pod_its_process_and_slice(e2e):
    spec = e2e.spec("tpu-v6e-slice", "4x4", resources={"slices": 2}, extraction={"batchSize": 32})
    e2e.apply(spec)
    status = e2e.wait_phase("Succeeded")
    assert status["progress"]["samplesDone"] == status["progress"]["samplesTotal"]
    pods = e2e.pods()
    assert len(pods) == 8
    # One Job per slice, each on a node pool of its own (JobSet's exclusive topology, placed by the scheduler).
    pools = {}
    for pod in pods:
        slice_id = pod["metadata"]["annotations"]["jobset.sigs.k8s.io/job-index"]
        pools.setdefault(int(slice_id), set()).add(pod["spec"]["nodeName"].rsplit("-", 1)[0])
    assert sorted(len(p) for p in pools.values()) == [1, 1] and len(set.union(*pools.values())) == 2
    for directory in e2e.pod_directories():
        slice_id, host = (int(x) for x in directory.name.split("-worker-")[1].split("-")[:2])
        log = (directory / "container.log").read_text()
        assert f"joined as process {slice_id * 4 + host}/8 in slice {slice_id}," in log, log[-2000:]
        assert f"MEGASCALE_SLICE_ID={slice_id} " in (directory / "setup.sh").read_text()
    reference = local_reference(e2e.cluster, spec, f"gs://{e2e.cluster.bucket}/local/{e2e.name}")
    assert_same_output(e2e.read_output(), reference)


LONGER = {"dataset": {"prompt": {"augmentations": 6}}}  # time to act mid-run (the CPU forward got 2x faster in #17)


def test_kill_9_of_a_worker_restarts_the_jobset_and_resumes_exactly(e2e):
    spec = e2e.spec("tpu-v5-lite-podslice", "4x4", dataset={"prompt": {"augmentations": 6}})  # about 20 steps
    e2e.apply(spec)
    # Killed as soon as a worker made a step durable (its metrics say so at once; the status
    # only at the reporter's next beat), so that most of the run is left to the next attempt.
    wait_for(
        lambda: worker_metrics(e2e, attempt="0", counter="layertap_worker_committed_tokens_total"),
        "a first committed step",
        300,
    )
    victim = e2e.pod_directories()[1]
    kill_process(victim, signal.SIGKILL)
    restarted = wait_for(lambda: e2e.status().get("restarts"), "the JobSet to restart", 120)
    assert restarted == 1
    # Each worker of the new attempt serves its own Prometheus metrics on the declared port.
    try:
        metrics = wait_for(lambda: worker_metrics(e2e, attempt="1"), "a worker of attempt 1 to report a step", 300)
    except AssertionError as error:
        raise AssertionError(f"{error}\n{e2e.pod_table()}\n{e2e.logs()}") from None
    assert metrics["layertap_worker_restart_attempt"] == 1 and metrics["layertap_worker_tokens_total"] > 0
    status = e2e.wait_phase("Succeeded", timeout=400)
    assert status["restarts"] == 1
    failed = json.loads(e2e.cluster.kubectl("get", "jobset", e2e.name, "-n", NAMESPACE, "-o", "json").stdout)
    assert failed["status"]["restarts"] == 1
    reference = local_reference(e2e.cluster, spec, f"gs://{e2e.cluster.bucket}/local/{e2e.name}")
    assert_same_output(e2e.read_output(), reference)  # nothing missing, nothing twice


def worker_metrics(e2e, attempt: str, counter: str = "layertap_worker_steps_total") -> dict[str, float] | None:
    """/metrics of a running worker pod of that JobSet restart attempt, once `counter` moved."""
    for pod in e2e.pods():
        ip = pod["status"].get("podIP")
        if pod["metadata"]["labels"].get("jobset.sigs.k8s.io/restart-attempt") != attempt or not ip:
            continue
        try:
            text = urllib.request.urlopen(f"http://{ip}:9400/metrics", timeout=2).read().decode()
        except OSError:
            continue
        samples = {s.name: s.value for f in text_string_to_metric_families(text) for s in f.samples}
        if samples.get(counter):
            return samples
    return None


def test_an_invalid_worker_configuration_fails_at_once_without_restarts(e2e):
    started = time.monotonic()
    e2e.apply(e2e.spec("tpu-v5-lite-podslice", "4x4", extraction={"layers": [1, 30]}))
    status = e2e.wait_phase("Failed", timeout=180)
    assert time.monotonic() - started < 120
    assert status["restarts"] == 0
    message = next(c for c in status["conditions"] if c["type"] == "Failed")["message"]
    assert "exited with code 2: layertap extract: error: extraction.layers: [30] out of range" in message, message
    # The worker's own words, with the pod that said them, kept in the status for kubectl describe.
    error = status["lastError"]
    assert "extraction.layers: [30] out of range" in error["message"] and error["pod"].startswith(f"{e2e.name}-worker-")
    jobset = json.loads(e2e.cluster.kubectl("get", "jobset", e2e.name, "-n", NAMESPACE, "-o", "json").stdout)
    assert jobset["status"]["restarts"] == 0


def operator_directory(e2e):
    root = e2e.cluster.workdir / "podrunner" / "pods"
    return max(root.glob("layertap-system_layertap-operator-*"), key=lambda d: d.stat().st_mtime)


def test_operator_killed_mid_reconcile_makes_exactly_one_jobset(e2e):
    e2e.apply(e2e.spec("tpu-v5-lite-podslice", "4x4"))
    kill_process(operator_directory(e2e), signal.SIGKILL)  # at once: creation is in flight or just done
    e2e.wait_phase("Running", timeout=120)
    kill_process(operator_directory(e2e), signal.SIGKILL)  # and again while it runs
    status = e2e.wait_phase("Succeeded", timeout=300)
    jobsets = json.loads(e2e.cluster.kubectl("get", "jobsets", "-n", NAMESPACE, "-o", "json").stdout)["items"]
    assert [j["metadata"]["name"] for j in jobsets if j["metadata"]["name"].startswith(e2e.name)] == [e2e.name]
    assert status["progress"]["samplesDone"] == status["progress"]["samplesTotal"]
    operator = json.loads(
        e2e.cluster.kubectl(
            "get", "pods", "-n", "layertap-system", "-l", "app.kubernetes.io/component=operator", "-o", "json"
        ).stdout
    )
    assert max(p["status"]["containerStatuses"][0]["restartCount"] for p in operator["items"]) >= 2


def test_suspend_mid_run_then_resume_finishes_with_the_same_output(e2e):
    spec = e2e.spec("tpu-v5-lite-podslice", "4x4", **LONGER)
    e2e.apply(spec)
    wait_for(lambda: (e2e.status().get("progress") or {}).get("samplesDone"), "a first committed unit", 300)
    e2e.cluster.kubectl("patch", "ae", e2e.name, "-n", NAMESPACE, "--type=merge", "-p", '{"spec":{"suspend":true}}')
    e2e.wait_phase("Suspended", timeout=120)
    wait_for(lambda: not e2e.pods(), "the worker pods to go away", 120)
    e2e.cluster.kubectl("patch", "ae", e2e.name, "-n", NAMESPACE, "--type=merge", "-p", '{"spec":{"suspend":false}}')
    status = e2e.wait_phase("Succeeded", timeout=400)
    assert status["restarts"] == 0  # a suspension is no failure
    reference = local_reference(e2e.cluster, spec, f"gs://{e2e.cluster.bucket}/local/{e2e.name}")
    assert_same_output(e2e.read_output(), reference)


def test_kueue_runs_one_slice_and_holds_the_second_until_it_finishes(e2e):
    quota = [
        {
            "apiVersion": "kueue.x-k8s.io/v1beta2",
            "kind": "ResourceFlavor",
            "metadata": {"name": "v5e-2x2"},
            "spec": {
                "nodeLabels": {
                    "cloud.google.com/gke-tpu-accelerator": "tpu-v5-lite-podslice",
                    "cloud.google.com/gke-tpu-topology": "2x2",
                }
            },
        },
        {
            "apiVersion": "kueue.x-k8s.io/v1beta2",
            "kind": "ClusterQueue",
            "metadata": {"name": "one-v5e-slice"},
            "spec": {
                "namespaceSelector": {},
                "resourceGroups": [
                    {
                        "coveredResources": ["google.com/tpu"],
                        "flavors": [
                            {"name": "v5e-2x2", "resources": [{"name": "google.com/tpu", "nominalQuota": "4"}]}
                        ],
                    }
                ],
            },
        },
        {
            "apiVersion": "kueue.x-k8s.io/v1beta2",
            "kind": "LocalQueue",
            "metadata": {"name": "tpu-v5e", "namespace": NAMESPACE},
            "spec": {"clusterQueue": "one-v5e-slice"},
        },
    ]
    e2e.cluster.plane.apply(quota)
    spec = e2e.spec("tpu-v5-lite-podslice", "2x2", queueName="tpu-v5e", extraction={"batchSize": 4}, **LONGER)
    first, second = f"{e2e.name}a", f"{e2e.name}b"
    e2e.apply(spec, first)
    e2e.wait_phase("Running", timeout=120, name=first)
    e2e.apply(spec, second)

    def held():
        status = e2e.status(second)
        return status.get("phase") == "Pending" and "insufficient unused quota" in json.dumps(status) and status

    waiting = wait_for(held, "the second run to be held by Kueue", 60)
    assert e2e.pods(second) == [] and waiting["reason"] == "Queued"
    assert waiting["message"].startswith("waiting for Kueue to admit it from queue tpu-v5e: couldn't assign flavors")
    e2e.wait_phase("Succeeded", timeout=400, name=first)
    e2e.wait_phase("Succeeded", timeout=400, name=second)


def test_too_few_tpu_nodes_says_why_it_waits(e2e):
    e2e.apply(e2e.spec("tpu-v5-lite-podslice", "8x8", extraction={"batchSize": 64}))  # no 8x8 pool here
    status = wait_for(
        lambda: (s := e2e.status()).get("reason") == "Unschedulable" and s, "the scheduler's reason in the status", 60
    )
    assert status["phase"] == "Pending" and "worker pods cannot be scheduled: 0/" in status["message"]
    assert "didn't match Pod's node affinity/selector" in status["message"]  # the scheduler's own words

    def event():
        described = e2e.cluster.kubectl("describe", "ae", e2e.name, "-n", NAMESPACE).stdout
        return "Unschedulable" in described[described.index("Events:") :]

    wait_for(event, "an Unschedulable event", 30)
    e2e.cluster.kubectl("delete", "ae", e2e.name, "-n", NAMESPACE, "--wait=true", "--timeout=60s")


def test_deleting_the_resource_removes_its_jobset_jobs_and_pods(e2e):
    e2e.apply(e2e.spec("tpu-v5-lite-podslice", "4x4", **LONGER))
    e2e.wait_phase("Running", timeout=120)
    e2e.cluster.kubectl("delete", "ae", e2e.name, "-n", NAMESPACE, "--wait=true", "--timeout=60s")

    def gone():
        selector = f"layertap.dev/extraction={e2e.name}"
        left = [
            e2e.cluster.kubectl("get", kind, "-n", NAMESPACE, "-l", selector, "-o", "name").stdout.strip()
            for kind in ("jobsets", "jobs", "pods")
        ]
        return not any(left)

    wait_for(gone, "the JobSet, its Jobs and pods to be deleted", 120)


def test_a_node_whose_accelerator_cannot_be_opened_fails_loudly_not_on_cpu(e2e):
    """JAX would fall back to CPU; JAX_PLATFORMS and the worker's device check stop it."""
    e2e.apply(e2e.spec("tpu-v6e-slice", "2x4", extraction={"batchSize": 8}))  # only the broken pool has 2x4
    status = e2e.wait_phase("Failed", timeout=180)
    assert status["restarts"] == 0  # a configuration error: no restart of every host
    assert "resources.accelerator tpu-v6e-slice: JAX could not start its tpu backend" in status["message"], status


def test_a_namespace_without_the_worker_account_says_so(e2e):
    e2e.cluster.kubectl("create", "namespace", "elsewhere")
    resource = {
        "apiVersion": "layertap.dev/v1alpha1",
        "kind": "ActivationExtraction",
        "metadata": {"name": e2e.name, "namespace": "elsewhere"},
        "spec": e2e.spec("tpu-v5-lite-podslice", "4x4"),
    }
    e2e.cluster.plane.apply(resource)

    def status():
        return json.loads(e2e.cluster.kubectl("get", "ae", e2e.name, "-n", "elsewhere", "-o", "json").stdout).get(
            "status", {}
        )

    waiting = wait_for(lambda: (s := status()).get("reason") == "ServiceAccountMissing" and s, "the reason", 60)
    assert waiting["phase"] == "Pending"
    assert "spec.serviceAccountName layertap-worker does not exist in namespace elsewhere" in waiting["message"]


def test_an_evicted_worker_restarts_the_run_without_counting_against_max_restarts(e2e):
    spec = e2e.spec("tpu-v5-lite-podslice", "4x4", maxRestarts=0, **LONGER)  # any counted restart would fail it
    e2e.apply(spec)
    # Evicted as soon as a worker made a step durable, as the kill -9 test does: the status
    # says so only at the reporter's next beat, by which time a short run may have ended
    # and the eviction found no running pod to restart.
    wait_for(
        lambda: worker_metrics(e2e, attempt="0", counter="layertap_worker_committed_tokens_total"),
        "a first committed step",
        300,
    )
    victim = sorted(p["metadata"]["name"] for p in e2e.pods())[1]
    eviction = {"apiVersion": "policy/v1", "kind": "Eviction", "metadata": {"name": victim, "namespace": NAMESPACE}}
    e2e.cluster.kubectl(
        "create",
        "--raw",
        f"/api/v1/namespaces/{NAMESPACE}/pods/{victim}/eviction",
        "-f",
        "-",
        input=json.dumps(eviction),
    )
    status = e2e.wait_phase("Succeeded", timeout=400)
    jobset = json.loads(e2e.cluster.kubectl("get", "jobset", e2e.name, "-n", NAMESPACE, "-o", "json").stdout)
    assert jobset["status"]["restarts"] == 1 and jobset["status"].get("restartsCountTowardsMax", 0) == 0
    assert status["restarts"] == 1
    reference = local_reference(e2e.cluster, spec, f"gs://{e2e.cluster.bucket}/local/{e2e.name}")
    assert_same_output(e2e.read_output(), reference)


def test_suspend_with_kueue_deactivates_the_workload_and_resumes(e2e):
    e2e.cluster.plane.apply(
        [
            {
                "apiVersion": "kueue.x-k8s.io/v1beta2",
                "kind": "ResourceFlavor",
                "metadata": {"name": "v5e-4x4"},
                "spec": {
                    "nodeLabels": {
                        "cloud.google.com/gke-tpu-accelerator": "tpu-v5-lite-podslice",
                        "cloud.google.com/gke-tpu-topology": "4x4",
                    }
                },
            },
            {
                "apiVersion": "kueue.x-k8s.io/v1beta2",
                "kind": "ClusterQueue",
                "metadata": {"name": "v5e-4x4"},
                "spec": {
                    "namespaceSelector": {},
                    "resourceGroups": [
                        {
                            "coveredResources": ["google.com/tpu"],
                            "flavors": [
                                {"name": "v5e-4x4", "resources": [{"name": "google.com/tpu", "nominalQuota": "16"}]}
                            ],
                        }
                    ],
                },
            },
            {
                "apiVersion": "kueue.x-k8s.io/v1beta2",
                "kind": "LocalQueue",
                "metadata": {"name": "v5e-4x4", "namespace": NAMESPACE},
                "spec": {"clusterQueue": "v5e-4x4"},
            },
        ]
    )
    spec = e2e.spec("tpu-v5-lite-podslice", "4x4", queueName="v5e-4x4", **LONGER)
    e2e.apply(spec)
    wait_for(lambda: (e2e.status().get("progress") or {}).get("samplesDone"), "a first committed unit", 300)
    e2e.cluster.kubectl("patch", "ae", e2e.name, "-n", NAMESPACE, "--type=merge", "-p", '{"spec":{"suspend":true}}')
    suspended = e2e.wait_phase("Suspended", timeout=120)
    wait_for(lambda: not e2e.pods(), "the worker pods to go away", 120)
    workloads = json.loads(e2e.cluster.kubectl("get", "workloads", "-n", NAMESPACE, "-o", "json").stdout)["items"]
    mine = [w for w in workloads if w["metadata"]["name"].startswith(f"jobset-{e2e.name}")]
    assert [w["spec"]["active"] for w in mine] == [False]
    applied = next(c for c in e2e.status()["conditions"] if c["type"] == "SpecApplied")
    assert applied["status"] == "True" and suspended["phase"] == "Suspended"
    e2e.cluster.kubectl("patch", "ae", e2e.name, "-n", NAMESPACE, "--type=merge", "-p", '{"spec":{"suspend":false}}')
    e2e.wait_phase("Succeeded", timeout=400)
    reference = local_reference(e2e.cluster, spec, f"gs://{e2e.cluster.bucket}/local/{e2e.name}")
    assert_same_output(e2e.read_output(), reference)


def test_a_prediction_runs_as_a_jobset_and_reports_its_score(e2e):
    """mode predict: the same operator, JobSet and pods, running `layertap predict` over 4 hosts."""
    spec = e2e.spec(
        "tpu-v5-lite-podslice",
        "4x4",
        mode="predict",
        dataset={"maxSamples": 2},
        prediction={"maxNewTokens": 16, "batchSize": 8},
    )
    e2e.apply(spec)
    status = e2e.wait_phase("Succeeded", timeout=400)
    progress = status["progress"]
    assert progress["samplesDone"] == progress["samplesTotal"] and progress["samplesTotal"] % 8 == 0, progress
    assert progress["score"] == 0.0  # a random model; the score is there because the tasks carry solutions
    assert progress["tasksDone"] == progress["tasksTotal"] == 2
    summary = "\n".join((d / "container.log").read_text() for d in e2e.pod_directories())
    assert f"layertap predict: 2 tasks, {progress['samplesTotal']} answers" in summary, e2e.logs()
    uri = f"gs://{e2e.cluster.bucket}/runs/{e2e.name}"
    script = f"import layertap.io.store as s, json; print(s.open_store({uri!r}).read('submission.json').decode())"
    read = subprocess.run(
        [sys.executable, "-c", script],
        env={**os.environ, "STORAGE_EMULATOR_HOST": e2e.cluster.gcs},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert read.returncode == 0, read.stderr
    assert len(json.loads(read.stdout)) == 2
