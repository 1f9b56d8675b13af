"""Acting on the simulated cluster as a user would (helm, kubectl) and reading what it did:
shared by the e2e tests (conftest.py) and benchmarks/bench_e2e.py."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import yaml
from kube import wait_for
from simulated_gke import Cluster

REPO = Path(__file__).resolve().parents[2]
NAMESPACE = "research"
RELEASE_NAMESPACE = "layertap-system"
ARC_TASKS = 40


def install(cluster: Cluster) -> None:
    """`helm install` of the chart, as the README says, with the images the pod runner knows."""
    cluster.kubectl("create", "namespace", NAMESPACE)
    cluster.helm(
        "install",
        "layertap",
        str(REPO / "charts" / "layertap"),
        "-n",
        RELEASE_NAMESPACE,
        "--create-namespace",
        "--set",
        "operator.image.repository=layertap-operator",
        "--set",
        "worker.image.repository=layertap-worker",
        "--set",
        "operator.clusterWide=true",  # test_e2e also sees what happens in a namespace without the worker account
        "--set",
        f"worker.namespaces={{{NAMESPACE}}}",
        # Status follows the JobSet within a second or two, not the production 10 s.
        "--set-json",
        'operator.env=[{"name":"LAYERTAP_RESYNC_SECONDS","value":"2"}]',
        "--wait",
        "--timeout=120s",
    )


def upload_inputs(cluster: Cluster, directory: Path) -> None:
    """A tiny random Qwen2 and real ARC-AGI tasks, on the emulated GCS."""
    env = {**os.environ, "STORAGE_EMULATOR_HOST": cluster.gcs}
    script = f"""
import json, sys
from pathlib import Path
from layertap.demo import write_arc_tasks
from layertap.io import open_store
from layertap.model import write_random_checkpoint
root = Path({str(directory)!r})
write_random_checkpoint(root / "model", seed=0)
write_arc_tasks(root / "arc.json", {ARC_TASKS})
for path in root.rglob("*"):
    if path.is_file():
        open_store("gs://{cluster.bucket}/inputs").write(str(path.relative_to(root)), path.read_bytes())
"""
    subprocess.run([sys.executable, "-c", script], env=env, check=True)


class E2E:
    """Acting on the cluster as a user would (kubectl), and reading what it did."""

    def __init__(self, cluster: Cluster, name: str) -> None:
        self.cluster = cluster
        self.name = name

    def spec(self, accelerator: str, topology: str | None = None, **extra) -> dict:
        resources = {"accelerator": accelerator, **({"topology": topology} if topology else {})}
        resources.update(extra.pop("resources", {}))
        spec = {
            "model": {"uri": f"gs://{self.cluster.bucket}/inputs/model", "dtype": "float32"},
            "dataset": {
                "uri": f"gs://{self.cluster.bucket}/inputs/arc.json",
                "format": "arc-json",
                "maxTokens": 1024,
                "overLimit": "shorten",
                "prompt": {"augmentations": 1},
            },
            "extraction": {"layers": [1, 3], "batchSize": 16, "storageDtype": "float32"},
            "output": {"uri": f"gs://{self.cluster.bucket}/runs/{self.name}", "shardSizeMb": 1},
            "resources": resources,
        }
        for key, value in extra.items():
            spec[key] = {**spec[key], **value} if isinstance(value, dict) and key in spec else value
        return spec

    def apply(self, spec: dict, name: str | None = None) -> None:
        resource = {
            "apiVersion": "layertap.dev/v1alpha1",
            "kind": "ActivationExtraction",
            "metadata": {"name": name or self.name, "namespace": NAMESPACE},
            "spec": spec,
        }
        self.cluster.kubectl("apply", "-f", "-", input=yaml.safe_dump(resource))

    def resource(self, name: str | None = None) -> dict:
        return json.loads(self.cluster.kubectl("get", "ae", name or self.name, "-n", NAMESPACE, "-o", "json").stdout)

    def status(self, name: str | None = None) -> dict:
        return self.resource(name).get("status") or {}

    def wait_phase(self, phases: str | tuple[str, ...], timeout: float = 300, name: str | None = None) -> dict:
        phases = (phases,) if isinstance(phases, str) else phases

        def reached():
            status = self.status(name)
            if status.get("phase") == "Failed" and "Failed" not in phases:
                raise AssertionError(f"{name or self.name} failed: {json.dumps(status, indent=1)}\n{self.logs()}")
            return status if status.get("phase") in phases else None

        return wait_for(reached, f"{name or self.name} to reach {phases}", timeout)

    def pods(self, name: str | None = None) -> list[dict]:
        selector = f"layertap.dev/extraction={name or self.name}"
        return json.loads(self.cluster.kubectl("get", "pods", "-n", NAMESPACE, "-l", selector, "-o", "json").stdout)[
            "items"
        ]

    def pod_directories(self, name: str | None = None) -> list[Path]:
        """The pod runner's directories of this resource's pods (container.log, setup.sh, ...)."""
        root = self.cluster.workdir / "podrunner" / "pods"
        return sorted(root.glob(f"{NAMESPACE}_{name or self.name}-worker-*"))

    def pod_table(self, name: str | None = None) -> str:
        """kubectl's own view of this resource's pods, for a failing test's message."""
        selector = f"layertap.dev/extraction={name or self.name}"
        return self.cluster.kubectl(
            "get", "pods", "-n", NAMESPACE, "-l", selector, "-o", "wide", "-L", "jobset.sigs.k8s.io/restart-attempt"
        ).stdout

    def logs(self, name: str | None = None) -> str:
        return "\n".join(
            f"--- {d.name}\n" + (d / "container.log").read_text(errors="replace")[-3000:]
            for d in self.pod_directories(name)
            if (d / "container.log").exists()
        )

    def read_output(self, uri: str | None = None) -> dict[int, np.ndarray]:
        return read_output(self.cluster, uri or f"gs://{self.cluster.bucket}/runs/{self.name}")


def read_output(cluster: Cluster, uri: str) -> dict:
    """Every stored layer of a run with its rows ordered by (sample, position), plus the
    (sample, position) pairs; read in a subprocess pointed at the emulator."""
    script = f"""
import json, sys, numpy as np, layertap
run = layertap.open({uri!r})
run.verify()
out = {{}}
for layer in run.layers:
    batch = run.read_layer(layer)
    order = np.lexsort((batch.position, batch.sample_index))
    np.save(sys.argv[1] + f"/layer{{layer}}.npy", batch.activations[order])
    np.save(sys.argv[1] + f"/index{{layer}}.npy", np.stack([batch.sample_index[order], batch.position[order]]))
print(json.dumps(run.layers))
"""
    with tempfile.TemporaryDirectory() as directory:
        env = {**os.environ, "STORAGE_EMULATOR_HOST": cluster.gcs}
        done = subprocess.run([sys.executable, "-c", script, directory], env=env, capture_output=True, text=True)
        assert done.returncode == 0, done.stderr
        layers = json.loads(done.stdout.splitlines()[-1])
        return {
            layer: (np.load(f"{directory}/layer{layer}.npy"), np.load(f"{directory}/index{layer}.npy"))
            for layer in layers
        }


def local_reference(cluster: Cluster, spec: dict, output: str) -> dict:
    """The same spec run by one local `layertap extract` process, on as many CPU devices as
    the cluster run has (each device computes the same rows: XLA's CPU matmuls may sum in
    another order for other shapes, so only equal per-device shapes are bit-comparable)."""
    from layertap_api.resource import ResourcesSpec

    devices = ResourcesSpec.model_validate(spec["resources"]).devices
    config = Path(tempfile.mkdtemp(prefix="layertap-e2e-local-")) / "spec.yaml"
    config.write_text(yaml.safe_dump({"spec": {**spec, "output": {**spec["output"], "uri": output}}}))
    env = {
        **os.environ,
        "STORAGE_EMULATOR_HOST": cluster.gcs,
        "JAX_PLATFORMS": "cpu",
        "XLA_FLAGS": f"--xla_force_host_platform_device_count={devices}",
    }
    argv = [str(REPO / ".venv" / "bin" / "layertap"), "extract", "--config", str(config), "--no-progress"]
    done = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    return read_output(cluster, output)


def assert_same_output(got: dict, expected: dict) -> None:
    assert got.keys() == expected.keys()
    for layer, (activations, index) in expected.items():
        np.testing.assert_array_equal(got[layer][1], index)  # the same tokens: none missing, none twice
        np.testing.assert_array_equal(got[layer][0], activations)


def kill_process(directory: Path, sig: int = signal.SIGKILL) -> int:
    """Signal the process of the pod whose runner directory this is; returns its pid."""
    pid = int((directory / "pid").read_text())
    os.kill(pid, sig)
    return pid


def progress_values(
    e2e: E2E, until: tuple[str, ...] = ("Succeeded", "Failed"), timeout: float = 300
) -> tuple[list, dict]:
    """Every distinct status.progress seen (polled), until the phase is one of `until`."""
    seen: list = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        status = e2e.status()
        progress = status.get("progress")
        if progress and (not seen or {k: v for k, v in progress.items() if k != "updateTime"} != seen[-1]):
            seen.append({k: v for k, v in progress.items() if k != "updateTime"})
        if status.get("phase") in until:
            return seen, status
        time.sleep(0.3)
    raise AssertionError(f"{e2e.name} did not finish in {timeout}s: {e2e.status()}\n{e2e.logs()}")
