"""The chart on a real API server: helm install, RBAC as the chart grants it, the examples,
and the operator running as its installed ServiceAccount with the Deployment's own arguments."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import urllib.request
from pathlib import Path

import kubernetes
import pytest
import yaml
from kube import free_port, stop, wait_for
from kubernetes.client.exceptions import ApiException

from layertap.run.reporter import StatusReporter

REPO = Path(__file__).resolve().parents[2]
CHART = REPO / "charts" / "layertap"
EXAMPLES = sorted((REPO / "manifests" / "examples").glob("*.yaml"))
RELEASE = "layertap"
SYSTEM = "layertap-system"
WATCHED = "research"
UNWATCHED = "elsewhere"
OPERATOR = f"system:serviceaccount:{SYSTEM}:layertap-operator"
WORKER = f"system:serviceaccount:{WATCHED}:layertap-worker"
# kopf's log lines open with "[2026-12-07 13:12:39,403]".
LOG_TIMESTAMP = re.compile(r"^\[\d{4}-\d\d-\d\d [\d:,]+\] ")


@pytest.fixture(scope="module")
def installed(control_plane):
    for namespace in (SYSTEM, WATCHED, UNWATCHED):
        control_plane.kubectl("create", "namespace", namespace)
    control_plane.helm(
        "install",
        RELEASE,
        str(CHART),
        "--namespace",
        SYSTEM,
        "--set",
        f"operator.watchNamespaces={{{WATCHED}}}",
        "--set",
        "worker.image.tag=test",
    )
    return control_plane


def test_release_is_deployed_with_every_object(installed):
    status = json.loads(installed.helm("status", RELEASE, "-n", SYSTEM, "-o", "json").stdout)
    assert status["info"]["status"] == "deployed"
    manifest = [
        doc for doc in yaml.safe_load_all(installed.helm("get", "manifest", RELEASE, "-n", SYSTEM).stdout) if doc
    ]
    for doc in manifest:
        namespace = doc["metadata"].get("namespace")
        installed.get(doc["kind"], doc["metadata"]["name"], namespace)
    installed.get("crd", "activationextractions.layertap.dev")


# (who, verb, resource, namespace, allowed). --as carries only the user name, which is
# what the chart's bindings name.
CAN_I = [
    (OPERATOR, "watch", "activationextractions.layertap.dev", WATCHED, True),
    (OPERATOR, "patch", "activationextractions.layertap.dev", WATCHED, True),
    (OPERATOR, "patch", "activationextractions.layertap.dev/status", WATCHED, True),
    (OPERATOR, "update", "activationextractions.layertap.dev/finalizers", WATCHED, True),
    (OPERATOR, "create", "jobsets.jobset.x-k8s.io", WATCHED, True),
    (OPERATOR, "patch", "jobsets.jobset.x-k8s.io", WATCHED, True),
    (OPERATOR, "create", "events", WATCHED, True),
    (OPERATOR, "create", "events.events.k8s.io", WATCHED, True),
    (OPERATOR, "list", "customresourcedefinitions.apiextensions.k8s.io", None, True),
    (OPERATOR, "watch", "namespaces", None, True),
    (OPERATOR, "delete", "namespaces", None, False),
    (OPERATOR, "create", "jobsets.jobset.x-k8s.io", UNWATCHED, False),
    (OPERATOR, "watch", "activationextractions.layertap.dev", UNWATCHED, False),
    (OPERATOR, "delete", "jobsets.jobset.x-k8s.io", WATCHED, False),
    (OPERATOR, "delete", "activationextractions.layertap.dev", WATCHED, False),
    (OPERATOR, "create", "pods", WATCHED, False),
    (OPERATOR, "list", "pods", WATCHED, True),
    (OPERATOR, "watch", "pods", WATCHED, True),
    (OPERATOR, "watch", "pods", UNWATCHED, False),
    (OPERATOR, "delete", "pods", WATCHED, False),
    (OPERATOR, "get", "secrets", WATCHED, False),
    (OPERATOR, "get", "secrets", SYSTEM, False),
    (OPERATOR, "create", "customresourcedefinitions.apiextensions.k8s.io", None, False),
    (WORKER, "get", "activationextractions.layertap.dev", WATCHED, True),
    (WORKER, "patch", "activationextractions.layertap.dev/status", WATCHED, True),
    (WORKER, "list", "activationextractions.layertap.dev", WATCHED, False),
    (WORKER, "patch", "activationextractions.layertap.dev", WATCHED, False),
    (WORKER, "update", "activationextractions.layertap.dev/status", WATCHED, False),
    (WORKER, "delete", "activationextractions.layertap.dev", WATCHED, False),
    (WORKER, "patch", "activationextractions.layertap.dev/status", UNWATCHED, False),
    (WORKER, "create", "jobsets.jobset.x-k8s.io", WATCHED, False),
    (WORKER, "get", "secrets", WATCHED, False),
    (WORKER, "get", "pods", WATCHED, False),
]


@pytest.mark.parametrize(("who", "verb", "resource", "namespace", "allowed"), CAN_I)
def test_accounts_have_exactly_the_chart_rights(installed, who, verb, resource, namespace, allowed):
    scope = ["-n", namespace] if namespace else []
    resource, _, subresource = resource.partition("/")  # kubectl reads "kind/x" as an object named x
    if subresource:
        scope.append(f"--subresource={subresource}")
    result = installed.kubectl("auth", "can-i", verb, resource, *scope, f"--as={who}", check=False)
    assert result.stdout.strip() == ("yes" if allowed else "no"), (result.stdout, result.stderr)


def test_install_bundle_is_accepted_by_the_server(installed):
    """The kubectl bundle, validated and admitted (dry run: the release above owns those objects)."""
    bundle = REPO / "manifests" / "install.yaml"
    out = installed.kubectl(
        "apply", "--server-side", "--force-conflicts", "--dry-run=server", "-f", str(bundle)
    ).stdout.splitlines()
    documents = [doc for doc in yaml.safe_load_all(bundle.read_text()) if doc]
    assert len(out) == len(documents)
    assert all(line.endswith("serverside-applied (server dry run)") for line in out), out


@pytest.mark.parametrize("example", EXAMPLES, ids=lambda p: p.stem)
def test_examples_are_accepted_by_the_server(installed, example):
    out = installed.apply(example, namespace=WATCHED, dry_run=True)
    assert "serverside-applied (server dry run)" in out


def test_server_dry_run_really_validates(installed):
    bad = yaml.safe_load((REPO / "manifests" / "examples" / "tpu-v5e-8x8-arc.yaml").read_text())
    bad["spec"]["resources"]["topology"] = "8x9"
    with pytest.raises(subprocess.CalledProcessError) as error:
        installed.apply(bad, namespace=WATCHED, dry_run=True)
    assert "topology" in error.value.stderr


def test_operator_as_installed_creates_the_jobset(installed, tmp_path):
    """The Deployment's container, run here: its args and env, its ServiceAccount's token."""
    deployment = installed.get("deployment", "layertap-operator", SYSTEM)
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    port = free_port()
    args = [a.replace("0.0.0.0:8080", f"127.0.0.1:{port}") for a in container["args"]]
    env = {
        **installed.env,
        **{e["name"]: e["value"] for e in container["env"] if "value" in e},
        "KUBECONFIG": str(
            installed.kubeconfig_for(deployment["spec"]["template"]["spec"]["serviceAccountName"], SYSTEM)
        ),
    }
    log = tmp_path / "operator.log"
    with log.open("w") as out:
        operator = subprocess.Popen(
            [sys.executable, "-m", "kopf", *args], env=env, stdout=out, stderr=subprocess.STDOUT
        )
    try:
        example = REPO / "manifests" / "examples" / "cpu-small.yaml"
        name = yaml.safe_load(example.read_text())["metadata"]["name"]
        installed.apply(example, namespace=WATCHED)

        def jobset():
            result = installed.kubectl("get", "jobsets", "-n", WATCHED, "-o", "json", check=False)
            items = json.loads(result.stdout)["items"] if result.returncode == 0 else []
            return items or None

        try:
            (created,) = wait_for(jobset, "the operator's JobSet", timeout=60)
        except AssertionError as error:
            raise AssertionError(f"{error}\noperator log:\n{log.read_text()[-4000:]}") from None
        assert created["metadata"]["name"] == name
        (owner,) = created["metadata"]["ownerReferences"]
        assert owner["kind"] == "ActivationExtraction" and owner["name"] == name
        pod = created["spec"]["replicatedJobs"][0]["template"]["spec"]["template"]["spec"]
        assert pod["serviceAccountName"] == "layertap-worker"
        assert pod["containers"][0]["image"] == "ghcr.io/layertap/layertap-worker:test"

        status = wait_for(
            lambda: installed.get("ae", name, WATCHED).get("status", {}).get("jobSetName"),
            "the operator's status",
            timeout=60,
        )
        assert status == name
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=5) as response:
            assert response.status == 200
    finally:
        stop(operator)
    # The timestamp is cut first: its milliseconds can read 403.
    messages = [LOG_TIMESTAMP.sub("", line) for line in log.read_text().splitlines()]
    forbidden = [line for line in messages if "403" in line or "orbidden" in line]
    assert forbidden == [], "\n".join(forbidden)


def test_worker_as_installed_reports_progress_and_may_not_touch_the_spec(installed):
    """The real reporter with the token a worker pod of the resource gets (bound to the pod: the
    chart's admission policy lets a worker change its own resource's status only)."""
    resource = yaml.safe_load((REPO / "manifests" / "examples" / "cpu-small.yaml").read_text())
    resource["metadata"]["name"] = "progress-probe"
    installed.apply(resource, namespace=WATCHED)
    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "progress-probe-worker-0-0-abcde"},
        "spec": {"serviceAccountName": "layertap-worker", "containers": [{"name": "worker", "image": "worker:1"}]},
    }
    installed.apply(pod, namespace=WATCHED)
    config = kubernetes.client.Configuration()
    kubeconfig = installed.kubeconfig_for("layertap-worker", WATCHED, pod=pod["metadata"]["name"])
    kubernetes.config.load_kube_config(config_file=str(kubeconfig), client_configuration=config)
    api = kubernetes.client.CustomObjectsApi(kubernetes.client.ApiClient(config))

    reporter = StatusReporter(api, WATCHED, "progress-probe", interval=0.1)
    reporter.update({"samplesDone": 3, "samplesTotal": 32})
    reporter.close()
    progress = installed.get("ae", "progress-probe", WATCHED)["status"]["progress"]
    assert (progress["samplesDone"], progress["samplesTotal"]) == (3, 32)

    with pytest.raises(ApiException) as denied:
        api.patch_namespaced_custom_object(
            "layertap.dev", "v1alpha1", WATCHED, "activationextractions", "progress-probe", {"spec": {"suspend": True}}
        )
    assert denied.value.status == 403
