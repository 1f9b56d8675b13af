"""The operator's cost in the number of resources, for bench_scale.py's parts `operator` and
`operator-kueue`.

A real API server (tests/kube.py) with the JobSet controller and its webhooks, and for
`operator-kueue` Kueue with its webhooks, a ClusterQueue that admits half the resources and
a LocalQueue; the operator as `kopf run`, with the default resync of 10 s. N resources
(v5e 4x4: 4 hosts each; BENCH_OPERATOR_TOPOLOGY=16x16 for 64) in one namespace, the worst
case for anything that lists a namespace. There is no kube-controller-manager or kubelet:
once a JobSet runs (unsuspended), this process makes its worker pods Running, as the Job
controller and a kubelet would.

Measured: the time until every resource's status says what it is (Running, or Queued with
Kueue's reason), then an idle window (nothing changes): reconcile passes, the API requests
of the window by verb and resource (the API server's own apiserver_request_total), the CPU
time of the operator and of the API server, and the operator's peak resident memory.
BENCH_OPERATOR_IDLE_SECONDS sets the window (default 60). The operator's code is whatever
PYTHONPATH finds (point it at another checkout's operator/ to measure that one).
"""

from __future__ import annotations

import math
import os
import subprocess
import sys
import time
import urllib.request
from contextlib import ExitStack
from pathlib import Path

import yaml

from layertap_api.catalog import ACCELERATORS

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))
sys.path.insert(0, str(REPO / "tests" / "e2e"))

NAMESPACE = "bench"
# v5e 4x4 (4 hosts) by default; BENCH_OPERATOR_TOPOLOGY=16x16 is a v5e-256 (64 hosts, 64 pods a resource).
TOPOLOGY = os.environ.get("BENCH_OPERATOR_TOPOLOGY", "4x4")
HOSTS = ACCELERATORS["tpu-v5-lite-podslice"].topologies[TOPOLOGY].hosts
CHIPS = ACCELERATORS["tpu-v5-lite-podslice"].topologies[TOPOLOGY].chips_per_host
# What the operator reads and writes (the others' requests, and our /metrics reads, are not its).
OPERATOR_RESOURCES = {"activationextractions", "jobsets", "pods", "workloads", "serviceaccounts", "events"}
IDLE_SECONDS = float(os.environ.get("BENCH_OPERATOR_IDLE_SECONDS", "60"))
SPEC = {
    "model": {"uri": "gs://models/qwen2.5-0.5b"},
    "dataset": {"uri": "gs://data/arc-agi/evaluation.json", "format": "arc-json"},
    "extraction": {"layers": [10, 11]},
    "output": {"uri": "gs://activations/bench"},
    "resources": {"accelerator": "tpu-v5-lite-podslice", "topology": TOPOLOGY},
}


def measure_operator(size: int, workdir: str, kueue: bool = False) -> dict:
    from kube import running_control_plane

    with ExitStack() as stack:
        plane = stack.enter_context(running_control_plane(Path(workdir)))
        logs = Path(workdir) / "logs"
        logs.mkdir()
        processes: list[subprocess.Popen] = []
        stack.callback(lambda: [_stop(p) for p in reversed(processes)])
        _start_jobset(plane, Path(workdir), processes, logs)
        if kueue:
            _start_kueue(plane, Path(workdir), processes, logs)
        plane.apply_crd(REPO / "charts/layertap/crds/layertap.dev_activationextractions.yaml")
        plane.kubectl("create", "namespace", NAMESPACE)
        accounts = [
            {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": n}}
            for n in ("default", "layertap-worker")
        ]
        plane.apply(accounts, NAMESPACE)
        admitted = math.ceil(size / 2) if kueue else size
        if kueue:
            plane.apply(_queue(admitted))
        operator, metrics_port = _start_operator(plane, logs)
        processes.append(operator)
        api = _client(plane)
        apiserver = _pid_of(plane)

        started = time.perf_counter()
        spec = {**SPEC, "queueName": "tpu"} if kueue else SPEC
        plane.apply([_resource(i, spec) for i in range(size)], NAMESPACE)
        _converge(api, size, admitted)
        converge = time.perf_counter() - started

        time.sleep(2)  # the last status patches land
        before = (plane.api_requests(), _passes(metrics_port), _cpu(operator.pid), _cpu(apiserver))
        time.sleep(IDLE_SECONDS)
        after = (plane.api_requests(), _passes(metrics_port), _cpu(operator.pid), _cpu(apiserver))
        peak_mb, now_mb = _memory_mb(operator.pid, "VmHWM"), _memory_mb(operator.pid, "VmRSS")

    requests = after[0] - before[0]
    passes = int(after[1] - before[1])
    ours = {key: n for key, n in requests.items() if key[1] in OPERATOR_RESOURCES and key[0] != "WATCH" and n}
    per_pass = sum(ours.values()) / max(passes, 1)
    lists = sum(n for (verb, _), n in ours.items() if verb == "LIST")
    per_minute = sum(ours.values()) / size / (IDLE_SECONDS / 60)
    operator_ms = (after[2] - before[2]) * 1e3 / max(passes, 1)
    operator_busy, apiserver_busy = (after[2] - before[2]) / IDLE_SECONDS, (after[3] - before[3]) / IDLE_SECONDS
    detail = (
        f"{passes} passes in {IDLE_SECONDS:.0f} s idle: {per_pass:.2f} requests a pass ({lists} LISTs), "
        f"{per_minute:.1f} a resource a minute; operator CPU {operator_ms:.1f} ms a pass, busy {operator_busy:.1%}; "
        f"API server busy {apiserver_busy:.1%}; operator resident {now_mb:.0f} MB at the end; "
        + ", ".join(f"{verb} {resource} {n}" for (verb, resource), n in sorted(ours.items()))
    )
    return {
        "seconds": converge,
        "peak_mb": peak_mb,
        "detail": detail,
        "growth": {
            "operator CPU ms a pass": operator_ms,
            "requests a pass": per_pass,
            "API server CPU idle, share of a core": apiserver_busy,
        },
    }


def _resource(index: int, spec: dict) -> dict:
    return {
        "apiVersion": "layertap.dev/v1alpha1",
        "kind": "ActivationExtraction",
        "metadata": {"name": f"run-{index:04d}"},
        "spec": spec,
    }


def _queue(admitted: int) -> list[dict]:
    """A ClusterQueue with room for `admitted` v5e slices, and the LocalQueue `tpu`."""
    labels = {
        "cloud.google.com/gke-tpu-accelerator": "tpu-v5-lite-podslice",
        "cloud.google.com/gke-tpu-topology": TOPOLOGY,
    }
    quota = {"name": "google.com/tpu", "nominalQuota": str(admitted * HOSTS * CHIPS)}
    return [
        {
            "apiVersion": "kueue.x-k8s.io/v1beta2",
            "kind": "ResourceFlavor",
            "metadata": {"name": "v5e"},
            "spec": {"nodeLabels": labels},
        },
        {
            "apiVersion": "kueue.x-k8s.io/v1beta2",
            "kind": "ClusterQueue",
            "metadata": {"name": "v5e"},
            "spec": {
                "namespaceSelector": {},
                "resourceGroups": [
                    {"coveredResources": ["google.com/tpu"], "flavors": [{"name": "v5e", "resources": [quota]}]}
                ],
            },
        },
        {
            "apiVersion": "kueue.x-k8s.io/v1beta2",
            "kind": "LocalQueue",
            "metadata": {"name": "tpu", "namespace": NAMESPACE},
            "spec": {"clusterQueue": "v5e"},
        },
    ]


def _converge(api, size: int, admitted: int, timeout: float = 900) -> None:
    """Until every resource is Running (its pods made here once its JobSet runs) or, beyond
    the admitted ones, Queued with Kueue's reason."""
    import kubernetes

    custom, core = kubernetes.client.CustomObjectsApi(api), kubernetes.client.CoreV1Api(api)
    with_pods: set[str] = set()
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        jobsets = custom.list_namespaced_custom_object("jobset.x-k8s.io", "v1alpha2", NAMESPACE, "jobsets")["items"]
        for jobset in jobsets:
            name = jobset["metadata"]["name"]
            if name not in with_pods and not jobset["spec"].get("suspend"):
                _run_pods(core, name)
                with_pods.add(name)
        resources = custom.list_namespaced_custom_object(
            "layertap.dev", "v1alpha1", NAMESPACE, "activationextractions"
        )["items"]
        status = [r.get("status", {}) for r in resources]
        running = sum(s.get("phase") == "Running" for s in status)
        queued = sum(
            s.get("phase") == "Pending" and s.get("reason") == "Queued" and "quota" in s.get("message", "")
            for s in status
        )
        if running == admitted and running + queued == size:
            return
        time.sleep(0.5)
    raise RuntimeError(f"not converged in {timeout:.0f} s: {running} running, {queued} queued of {size}")


def _run_pods(core, jobset: str) -> None:
    """What the Job controller and a kubelet would do: the JobSet's worker pods, Running."""
    for host in range(HOSTS):
        name = f"{jobset}-worker-0-{host}-bench"
        pod = {
            "metadata": {
                "name": name,
                "labels": {"layertap.dev/extraction": jobset, "jobset.sigs.k8s.io/restart-attempt": "0"},
            },
            "spec": {"containers": [{"name": "worker", "image": "worker:1"}]},
        }
        core.create_namespaced_pod(NAMESPACE, pod)
        core.patch_namespaced_pod_status(name, NAMESPACE, {"status": {"phase": "Running"}})


def _start_operator(plane, logs: Path) -> tuple[subprocess.Popen, int]:
    from kube import free_port, wait_for

    health, metrics = free_port(), free_port()
    env = {**plane.env, "LAYERTAP_WORKER_IMAGE": "worker:1", "LAYERTAP_METRICS_PORT": str(metrics)}
    command = [
        sys.executable,
        "-m",
        "kopf",
        "run",
        "-m",
        "layertap_operator.handlers",
        "--all-namespaces",
        "--standalone",
        f"--liveness=http://127.0.0.1:{health}/healthz",
    ]
    with (logs / "operator.log").open("w") as out:
        process = subprocess.Popen(command, env=env, stdout=out, stderr=subprocess.STDOUT)

    def healthy() -> bool:
        if process.poll() is not None:
            raise RuntimeError(f"the operator exited: see {logs / 'operator.log'}")
        try:
            return urllib.request.urlopen(f"http://127.0.0.1:{health}/healthz", timeout=1).status == 200
        except OSError:
            return False

    wait_for(healthy, "the operator", timeout=60)
    return process, metrics


def _start_jobset(plane, workdir: Path, processes: list, logs: Path) -> None:
    from kube import BIN, free_port
    from simulated_gke import _controller_config, _jobset_pod_selector, _wait_http, _webhook_certificates, _webhooks

    certs = _webhook_certificates(workdir / "webhook-certs")
    webhook, health = free_port(), free_port()
    config = workdir / "jobset-config.yaml"
    config.write_text(
        yaml.safe_dump(_controller_config("config.jobset.x-k8s.io/v1alpha1", webhook, health, certs.parent))
    )
    with (logs / "jobset.log").open("w") as out:
        processes.append(
            subprocess.Popen(
                [str(BIN / "jobset"), f"--kubeconfig={plane.kubeconfig}", f"--config={config}"],
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        )
    _wait_http(f"http://127.0.0.1:{health}/readyz", "the JobSet controller", processes[-1])
    plane.apply(
        _webhooks(BIN / "manifests" / "jobset" / "webhooks.yaml", "jobset", webhook, certs, _jobset_pod_selector)
    )


def _start_kueue(plane, workdir: Path, processes: list, logs: Path) -> None:
    """Kueue as the e2e tier starts it (simulated_gke.py), on loopback."""
    from kube import BIN, free_port
    from simulated_gke import (
        KUEUE_FRAMEWORKS,
        _controller_config,
        _kueue_command,
        _wait_http,
        _webhooks,
        convert_kueue_crds_through,
    )

    certs = workdir / "webhook-certs" / "ca.crt"
    for crd in sorted((BIN / "manifests" / "kueue" / "crds").glob("*.yaml")):
        plane.apply_crd(crd)
    plane.kubectl("create", "namespace", "kueue-system")
    webhook, health = free_port(), free_port()
    config = workdir / "kueue-config.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                **_controller_config("config.kueue.x-k8s.io/v1beta2", webhook, health, certs.parent),
                "namespace": "kueue-system",
                "integrations": {"frameworks": KUEUE_FRAMEWORKS},
                "featureGates": {"VisibilityOnDemand": False, "MultiKueue": False},
            }
        )
    )
    with (logs / "kueue.log").open("w") as out:
        processes.append(
            subprocess.Popen(
                _kueue_command(workdir, certs.parent, str(plane.kubeconfig), config),
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        )
    _wait_http(f"http://127.0.0.1:{health}/readyz", "Kueue", processes[-1], timeout=120)
    plane.apply(_webhooks(BIN / "manifests" / "kueue" / "webhooks.yaml", "kueue", webhook, certs, None))
    convert_kueue_crds_through(plane, webhook, certs)


def _client(plane):
    import kubernetes

    return kubernetes.config.new_client_from_config(config_file=str(plane.kubeconfig))


def _pid_of(plane) -> int:
    """The API server's process (the one listening on the server's port)."""
    port = plane.server.rsplit(":", 1)[1]
    out = subprocess.run(["ss", "-Hltnp", f"sport = :{port}"], capture_output=True, text=True, check=True).stdout
    return int(out.split("pid=", 1)[1].split(",", 1)[0])


def _passes(port: int) -> float:
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    return sum(
        float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line.startswith("layertap_operator_reconcile_seconds_count")
    )


def _cpu(pid: int) -> float:
    """User + system CPU seconds of a process so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _memory_mb(pid: int, field: str) -> float:
    """VmHWM: peak resident memory; VmRSS: now."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1]) / 1024
    return 0.0


def _stop(process: subprocess.Popen) -> None:
    from kube import stop

    stop(process)
