"""The operator against a real kube-apiserver: CRD admission, JobSet creation, status, Events.

The operator runs as `kopf run` in a subprocess. There is no JobSet controller (nor
kubelet) here: where a test needs JobSet status, it writes it through the status
subresource as the JobSet controller would.
"""

from __future__ import annotations

import copy
import json
import re
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import yaml
from kube import free_port, stop, wait_for
from prometheus_client.parser import text_string_to_metric_families

from layertap_api.crd import crd
from layertap_api.resource import ActivationExtractionSpec
from layertap_operator.builder import Owner, build_jobset

REPO = Path(__file__).resolve().parents[2]
CRD = REPO / "charts/layertap/crds/layertap.dev_activationextractions.yaml"
IMAGE = "registry.example/layertap/worker:test"

EXAMPLE = {
    "apiVersion": "layertap.dev/v1alpha1",
    "kind": "ActivationExtraction",
    "metadata": {"name": "qwen-arc"},
    "spec": {
        "model": {"uri": "gs://models/qwen2.5-0.5b"},
        "dataset": {"uri": "gs://data/arc-agi/evaluation.json", "format": "arc-json"},
        "extraction": {"layers": list(range(10, 24))},
        "output": {"uri": "gs://activations/qwen-arc"},
        "resources": {"accelerator": "tpu-v5-lite-podslice", "topology": "8x8"},
    },
}


class Operator:
    """`kopf run` of layertap_operator.handlers against the test API server, as the chart's operator account."""

    def __init__(self, control_plane, log: Path, kubeconfig: Path) -> None:
        self.control_plane, self.log, self.kubeconfig = control_plane, log, kubeconfig
        self.process: subprocess.Popen | None = None

    def start(self, resync_seconds: float = 1) -> None:
        port, self.metrics_port = free_port(), free_port()
        env = {
            **self.control_plane.env,
            "KUBECONFIG": str(self.kubeconfig),
            "LAYERTAP_WORKER_IMAGE": IMAGE,
            "LAYERTAP_RESYNC_SECONDS": str(resync_seconds),
            "LAYERTAP_METRICS_PORT": str(self.metrics_port),
        }
        self.process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "kopf",
                "run",
                "-m",
                "layertap_operator.handlers",
                "--all-namespaces",
                "--standalone",
                f"--liveness=http://127.0.0.1:{port}/healthz",
            ],
            env=env,
            stdout=self.log.open("a"),
            stderr=subprocess.STDOUT,
        )

        def healthy() -> bool:
            if self.process.poll() is not None:
                raise AssertionError(f"the operator exited:\n{self.log.read_text()[-3000:]}")
            try:
                return urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=1).status == 200
            except OSError:
                return False

        wait_for(healthy, "the operator's health endpoint")

    def stop(self) -> None:
        if self.process:
            stop(self.process)

    def metrics(self) -> dict[tuple[str, tuple], float]:
        """Its /metrics, as {(sample name, sorted labels): value}."""
        text = urllib.request.urlopen(f"http://127.0.0.1:{self.metrics_port}/metrics", timeout=5).read().decode()
        return {
            (sample.name, tuple(sorted(sample.labels.items()))): sample.value
            for family in text_string_to_metric_families(text)
            for sample in family.samples
        }


OPERATOR_NAMESPACE = "layertap-operator-tests"


# A JobSet status as the JobSet controller writes it when every job finished.
JOBSET_COMPLETED = {
    "conditions": [
        {
            "type": "Completed",
            "status": "True",
            "reason": "AllJobsCompleted",
            "message": "jobset completed successfully",
            "lastTransitionTime": "2026-01-01T00:00:00Z",
        }
    ]
}


def operator_kubeconfig(control_plane) -> Path:
    """Credentials of the operator's ServiceAccount, bound cluster-wide by the chart's own RBAC."""
    control_plane.apply({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": OPERATOR_NAMESPACE}})
    rendered = control_plane.helm(
        "template",
        "optest",
        str(REPO / "charts/layertap"),
        "-n",
        OPERATOR_NAMESPACE,
        "--set",
        "operator.clusterWide=true",  # the operator below runs --all-namespaces
        "--show-only",
        "templates/operator/serviceaccount.yaml",
        "--show-only",
        "templates/operator/rbac.yaml",
    ).stdout
    control_plane.apply(rendered)
    return control_plane.kubeconfig_for(operator_account(control_plane, OPERATOR_NAMESPACE), OPERATOR_NAMESPACE)


def operator_account(control_plane, namespace: str) -> str:
    """The name of the operator ServiceAccount the chart made in `namespace`."""
    (account,) = [
        sa["metadata"]["name"]
        for sa in control_plane.get_list("serviceaccounts", namespace)
        if sa["metadata"]["name"].endswith("-operator")
    ]
    return account


@pytest.fixture(scope="module")
def operator(control_plane, tmp_path_factory) -> Iterator[Operator]:
    control_plane.apply_crd(CRD)
    op = Operator(control_plane, tmp_path_factory.mktemp("operator") / "kopf.log", operator_kubeconfig(control_plane))
    op.start()
    yield op
    op.stop()


def create(control_plane, namespace: str, resource: dict | None = None) -> dict:
    control_plane.apply(resource or EXAMPLE, namespace=namespace)
    name = (resource or EXAMPLE)["metadata"]["name"]
    return control_plane.get("ae", name, namespace)


def status_of(control_plane, namespace: str, name: str = "qwen-arc") -> dict:
    return control_plane.get("ae", name, namespace).get("status", {})


def condition(status: dict, type_: str) -> dict:
    return {c["type"]: c for c in status.get("conditions", [])}.get(type_, {})


def write_jobset_status(control_plane, namespace: str, status: dict, name: str = "qwen-arc") -> None:
    """What the JobSet controller would do (there is none here)."""
    control_plane.kubectl(
        "patch",
        "jobset",
        name,
        "-n",
        namespace,
        "--subresource=status",
        "--type=merge",
        "-p",
        json.dumps({"status": status}),
    )


def run_worker_pod(control_plane, namespace: str, attempt: int, name: str = "qwen-arc") -> None:
    """What the Job controller and a kubelet would do (there are none here): a worker pod of
    the JobSet's attempt, running."""
    control_plane.apply({"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": "default"}}, namespace)
    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": f"{name}-worker-0-0-abcde",
            "labels": {"layertap.dev/extraction": name, "jobset.sigs.k8s.io/restart-attempt": str(attempt)},
        },
        "spec": {"containers": [{"name": "worker", "image": "worker:1"}]},
    }
    control_plane.apply(pod, namespace)
    control_plane.kubectl(
        "patch",
        "pod",
        pod["metadata"]["name"],
        "-n",
        namespace,
        "--subresource=status",
        "--type=merge",
        "-p",
        json.dumps({"status": {"phase": "Running"}}),
    )


def is_subset(expected: object, actual: object, path: str = "") -> list[str]:
    """Where `actual` lacks or changes what `expected` has (the server may add defaults)."""
    if isinstance(expected, dict):
        if not isinstance(actual, dict):
            return [path]
        return [p for k, v in expected.items() for p in is_subset(v, actual.get(k), f"{path}.{k}")]
    if isinstance(expected, list):
        if not isinstance(actual, list) or len(actual) != len(expected):
            return [path]
        return [p for i, (e, a) in enumerate(zip(expected, actual)) for p in is_subset(e, a, f"{path}[{i}]")]
    return [] if expected == actual else [f"{path}: {expected!r} != {actual!r}"]


def test_example_makes_exactly_one_jobset_even_across_restarts(control_plane, operator, namespace) -> None:
    resource = create(control_plane, namespace)
    wait_for(lambda: status_of(control_plane, namespace).get("jobSetName"), "status.jobSetName")
    (jobset,) = control_plane.get_list("jobsets", namespace)
    spec = ActivationExtractionSpec.model_validate(resource["spec"])
    expected = build_jobset(spec, Owner("qwen-arc", namespace, resource["metadata"]["uid"]), IMAGE)
    assert is_subset(expected, jobset) == [], "the server stored a different JobSet than the builder made"
    assert jobset["spec"]["replicatedJobs"][0]["template"]["spec"]["parallelism"] == 16

    operator.stop()
    control_plane.kubectl("annotate", "ae", "qwen-arc", "-n", namespace, "touched=yes")
    operator.start()
    time.sleep(3)  # a few resync passes
    assert len(control_plane.get_list("jobsets", namespace)) == 1
    status = status_of(control_plane, namespace)
    assert status["phase"] == "Pending" and condition(status, "JobSetCreated")["status"] == "True"


def test_the_operator_serves_prometheus_metrics(control_plane, operator, namespace) -> None:
    def pending() -> float:
        return operator.metrics().get(("layertap_extractions", (("phase", "Pending"),)), 0)

    account = ActivationExtractionSpec.model_validate(EXAMPLE["spec"]).service_account_name
    control_plane.apply({"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": account}}, namespace)
    before, pending_before = operator.metrics(), pending()
    created = ("layertap_operator_jobsets_created_total", ())
    create(control_plane, namespace)
    wait_for(lambda: operator.metrics()[created] == before[created] + 1, "the JobSet creation counted")
    wait_for(lambda: pending() == pending_before + 1, "the new resource counted as Pending")
    ok = ("layertap_operator_reconciles_total", (("outcome", "ok"),))
    wait_for(lambda: operator.metrics().get(ok, 0) > before.get(ok, 0), "a reconcile counted as ok")
    after = operator.metrics()
    assert (
        after[("layertap_operator_reconcile_seconds_count", ())]
        > before[("layertap_operator_reconcile_seconds_count", ())]
    )

    control_plane.kubectl("delete", "ae", "qwen-arc", "-n", namespace, "--wait=true")
    wait_for(lambda: pending() == pending_before, "the deleted resource no longer counted")


@pytest.mark.parametrize(
    "resources",
    [
        {"accelerator": "tpu-v5-lite-podslice", "topology": "8x8"},
        {"accelerator": "tpu-v6e-slice", "topology": "4x4", "slices": 2},
        {"accelerator": "tpu-v5p-slice", "topology": "2x2x1", "mesh": {"model": 4}},
        {"accelerator": "nvidia-h100-80gb", "hosts": 2, "gpusPerHost": 8},
        {"accelerator": "cpu", "hosts": 2, "cpu": "2", "memory": "4Gi"},
    ],
)
def test_every_kind_of_jobset_is_accepted_by_the_server(control_plane, namespace, resources) -> None:
    spec = ActivationExtractionSpec.model_validate(
        {
            **EXAMPLE["spec"],
            "resources": resources,
            "queueName": "q",
            "activeDeadlineSeconds": 3600,
            "ttlSecondsAfterFinished": 60,
        }
    )
    jobset = build_jobset(spec, Owner("qwen-arc", namespace, "4f8e2a8c-3c1e-4d8e-9a57-0e1f2a3b4c5d"), IMAGE)
    # Server-side apply validates strictly: an unknown field is an error, not silently pruned.
    control_plane.apply(jobset, namespace=namespace, dry_run=True)


def test_deletion_releases_the_resource(control_plane, operator, namespace) -> None:
    create(control_plane, namespace)
    wait_for(lambda: status_of(control_plane, namespace).get("jobSetName"), "the JobSet")
    assert control_plane.get("ae", "qwen-arc", namespace)["metadata"]["finalizers"] == [
        "operator.layertap.dev/finalizer"
    ]
    control_plane.kubectl("delete", "ae", "qwen-arc", "-n", namespace, "--timeout=20s")
    assert control_plane.get_list("ae", namespace) == []
    # The JobSet goes by garbage collection of its owner reference (no kube-controller-manager here).
    (jobset,) = control_plane.get_list("jobsets", namespace)
    assert jobset["metadata"]["ownerReferences"][0]["kind"] == "ActivationExtraction"


def test_printer_columns_and_short_names(control_plane, operator, namespace) -> None:
    create(control_plane, namespace)
    wait_for(lambda: status_of(control_plane, namespace).get("jobSetName"), "the JobSet")
    for short in ("ae", "actx"):
        header, row = control_plane.kubectl("get", short, "-n", namespace).stdout.splitlines()
        assert header.split() == [
            "NAME",
            "PHASE",
            "REASON",
            "PROGRESS",
            "TOKENS/S",
            "ETA",
            "RESTARTS",
            "LAST-REPORT",
            "AGE",
        ]
        assert row.split()[:2] == ["qwen-arc", "Pending"]
    wide = control_plane.kubectl("get", "ae", "-n", namespace, "-o", "wide").stdout
    assert "tpu-v5-lite-podslice" in wide and "8x8" in wide and "gs://activations/qwen-arc" in wide


def _mutated(change: Callable[[dict], None], name: str = "bad") -> dict:
    resource = copy.deepcopy(EXAMPLE)
    resource["metadata"]["name"] = name
    change(resource["spec"])
    return resource


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        (
            lambda s: s["resources"].update(topology="2x2x2"),
            "spec.resources.topology: Invalid value: 2x2x2 is not a topology of tpu-v5-lite-podslice; valid: 1x1",
        ),
        (lambda s: s["resources"].pop("topology"), "spec.resources.topology: Invalid value"),
        (lambda s: s["resources"].update(accelerator="cpu", topology="2x2"), "spec.resources.topology"),
        (lambda s: s["resources"].update(mesh={"model": 3}), "spec.resources.mesh.model"),
        (lambda s: s["extraction"].update(layers=[10, 600]), "spec.extraction.layers[1]: Invalid value: 600"),
        (lambda s: s["extraction"].update(layers=[-1]), "spec.extraction.layers[0]: Invalid value: -1"),
        (lambda s: s["extraction"].update(layers=[3, 3]), "spec.extraction.layers[1]: Duplicate value: 3"),
        (lambda s: s.pop("output"), "spec.output: Required value"),
        (lambda s: s["dataset"].update(format="csv"), 'spec.dataset.format: Unsupported value: "csv"'),
        (lambda s: s["resources"].update(accelerator="tpu-v7"), "spec.resources.accelerator: Unsupported value"),
        (
            lambda s: s.update(mode="predict", prediction={"sampling": {"topP": 0}}),
            "spec.prediction.sampling.topP: Invalid value: 0",
        ),
        (
            lambda s: s.update(mode="predict") or s["dataset"].update(format="text-jsonl"),
            "spec.dataset.format: Invalid value: mode predict answers ARC tasks",
        ),
        (
            lambda s: s["extraction"].update(sites=["resid_post", "hook_q"]),
            'spec.extraction.sites[1]: Unsupported value: "hook_q"',
        ),
    ],
)
def test_invalid_resources_are_rejected_naming_the_field(control_plane, operator, namespace, change, expected) -> None:
    failed = control_plane.kubectl(
        "apply", "-n", namespace, "-f", "-", input=yaml.safe_dump(_mutated(change)), check=False
    )
    assert failed.returncode != 0
    assert expected in failed.stderr, failed.stderr
    assert control_plane.get_list("ae", namespace) == []


@pytest.mark.parametrize("misspell", [lambda s: s.update(extration={}), lambda s: s["dataset"].update(maxTokenz=3)])
def test_unknown_fields_are_refused_by_kubectl_apply(control_plane, operator, namespace, misspell) -> None:
    """kubectl's default field validation is Strict: the server refuses unknown fields
    rather than pruning them silently (docs/operator.md, "Unknown fields")."""
    failed = control_plane.kubectl(
        "apply", "-n", namespace, "-f", "-", input=yaml.safe_dump(_mutated(misspell)), check=False
    )
    assert failed.returncode != 0 and "unknown field" in failed.stderr, failed.stderr
    assert control_plane.get_list("ae", namespace) == []


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        (
            "x" * 46,
            "metadata.name: Invalid value: metadata.name must be at most 45 characters for this topology",
        ),  # v5e 8x8: 16 hosts
        ("2024-arc", "metadata.name: Invalid value: metadata.name must be a DNS-1035 label"),
    ],
)
def test_names_the_jobset_webhook_would_refuse_are_rejected(control_plane, operator, namespace, name, expected) -> None:
    failed = control_plane.kubectl(
        "apply", "-n", namespace, "-f", "-", input=yaml.safe_dump(_mutated(lambda s: None, name)), check=False
    )
    assert failed.returncode != 0 and expected in failed.stderr and "<nil>" not in failed.stderr, failed.stderr
    accepted = control_plane.kubectl(
        "apply",
        "-n",
        namespace,
        "--dry-run=server",
        "-f",
        "-",
        input=yaml.safe_dump(_mutated(lambda s: None, "x" * 45)),
    )
    assert "created" in accepted.stdout


def test_status_follows_the_jobset_with_events(control_plane, operator, namespace) -> None:
    create(control_plane, namespace)
    wait_for(lambda: status_of(control_plane, namespace).get("jobSetName"), "the JobSet")
    write_jobset_status(
        control_plane,
        namespace,
        {
            "restarts": 1,
            "replicatedJobsStatus": [
                {"name": "worker", "ready": 16, "succeeded": 0, "failed": 0, "active": 16, "suspended": 0}
            ],
        },
    )
    run_worker_pod(control_plane, namespace, attempt=1)  # Running means a worker pod runs
    running = wait_for(lambda: (s := status_of(control_plane, namespace)).get("phase") == "Running" and s, "Running")
    assert running["restarts"] == 1 and running["startTime"]

    write_jobset_status(
        control_plane,
        namespace,
        JOBSET_COMPLETED,
    )
    done = wait_for(lambda: (s := status_of(control_plane, namespace)).get("phase") == "Succeeded" and s, "Succeeded")
    assert done["completionTime"] and condition(done, "Completed")["reason"] == "AllJobsCompleted"

    described = control_plane.kubectl("describe", "ae", "qwen-arc", "-n", namespace).stdout
    events = described[described.index("Events:") :]
    for reason in ("JobSetCreated", "Running", "Completed"):
        assert reason in events, described


def test_suspend_and_resume(control_plane, operator, namespace) -> None:
    create(control_plane, namespace)
    wait_for(lambda: status_of(control_plane, namespace).get("jobSetName"), "the JobSet")

    def suspended(value):
        return control_plane.get("jobset", "qwen-arc", namespace)["spec"].get("suspend") is value

    assert suspended(False)
    control_plane.kubectl("patch", "ae", "qwen-arc", "-n", namespace, "--type=merge", "-p", '{"spec":{"suspend":true}}')
    wait_for(lambda: suspended(True), "the JobSet suspended")
    wait_for(lambda: status_of(control_plane, namespace).get("phase") == "Suspended", "phase Suspended")
    control_plane.kubectl(
        "patch", "ae", "qwen-arc", "-n", namespace, "--type=merge", "-p", '{"spec":{"suspend":false}}'
    )
    wait_for(lambda: suspended(False), "the JobSet resumed")
    assert condition(status_of(control_plane, namespace), "SpecApplied")["status"] == "True"


def test_kueue_decides_when_a_queued_run_starts(control_plane, operator, namespace) -> None:
    queued = copy.deepcopy(EXAMPLE)
    queued["spec"]["queueName"] = "tpu-v5e"
    create(control_plane, namespace, queued)
    wait_for(lambda: status_of(control_plane, namespace).get("jobSetName"), "the JobSet")
    jobset = control_plane.get("jobset", "qwen-arc", namespace)
    assert jobset["spec"]["suspend"] is True
    assert jobset["metadata"]["labels"]["kueue.x-k8s.io/queue-name"] == "tpu-v5e"
    wait_for(lambda: condition(status_of(control_plane, namespace), "Suspended"), "the Suspended condition")
    status = status_of(control_plane, namespace)
    assert (status["phase"], condition(status, "Suspended")["reason"]) == ("Pending", "Queued")
    # Kueue admits the workload by unsuspending the JobSet; the operator must not suspend it again.
    control_plane.kubectl(
        "patch", "jobset", "qwen-arc", "-n", namespace, "--type=merge", "-p", '{"spec":{"suspend":false}}'
    )
    wait_for(lambda: condition(status_of(control_plane, namespace), "Suspended").get("status") == "False", "admitted")
    time.sleep(2)  # resync passes
    assert control_plane.get("jobset", "qwen-arc", namespace)["spec"]["suspend"] is False


def test_unappliable_change_is_reported_not_applied(control_plane, operator, namespace) -> None:
    create(control_plane, namespace)
    wait_for(lambda: status_of(control_plane, namespace).get("jobSetName"), "the JobSet")
    before = control_plane.get("jobset", "qwen-arc", namespace)
    control_plane.kubectl(
        "patch",
        "ae",
        "qwen-arc",
        "-n",
        namespace,
        "--type=merge",
        "-p",
        '{"spec":{"dataset":{"uri":"gs://data/other.json"}}}',
    )
    applied = wait_for(
        lambda: (c := condition(status_of(control_plane, namespace), "SpecApplied")).get("status") == "False" and c,
        "SpecApplied=False",
    )
    assert applied["reason"] == "ChangeNotApplied" and "dataset.uri" in applied["message"]
    assert control_plane.get("jobset", "qwen-arc", namespace)["spec"] == before["spec"]
    described = control_plane.kubectl("describe", "ae", "qwen-arc", "-n", namespace).stdout
    assert "SpecChangeNotApplied" in described


def test_jobset_name_taken_by_someone_else(control_plane, operator, namespace) -> None:
    spec = ActivationExtractionSpec.model_validate(EXAMPLE["spec"])
    foreign = build_jobset(spec, Owner("qwen-arc", namespace, "00000000-0000-0000-0000-000000000000"), IMAGE)
    del foreign["metadata"]["ownerReferences"]
    control_plane.apply(foreign, namespace=namespace)
    create(control_plane, namespace)
    created = wait_for(
        lambda: (c := condition(status_of(control_plane, namespace), "JobSetCreated")) and c, "JobSetCreated"
    )
    assert (created["status"], created["reason"]) == ("False", "JobSetNameTaken")
    assert "ownerReferences" not in control_plane.get("jobset", "qwen-arc", namespace)["metadata"]


# --- the worker side: StatusReporter, and least privilege of the chart's roles ----------------


def install_chart_rbac(control_plane, namespace: str) -> None:
    """The chart's operator and worker RBAC for one namespace, exactly as the chart renders it."""
    rendered = control_plane.helm(
        "template",
        f"rbac-{namespace}"[:53],
        str(REPO / "charts/layertap"),
        "-n",
        namespace,
        "--set",
        f"operator.watchNamespaces={{{namespace}}}",
        "--set",
        f"worker.namespaces={{{namespace}}}",
        "--show-only",
        "templates/operator/serviceaccount.yaml",
        "--show-only",
        "templates/operator/rbac.yaml",
        "--show-only",
        "templates/worker/rbac.yaml",
    ).stdout
    control_plane.apply(rendered)


def worker_api(control_plane, namespace: str):
    import kubernetes

    config = control_plane.kubeconfig_for("layertap-worker", namespace)
    return kubernetes.client.CustomObjectsApi(kubernetes.config.new_client_from_config(config_file=str(config)))


def test_progress_flows_from_the_reporter_into_kubectl_get(control_plane, operator, namespace) -> None:
    from layertap.run.reporter import StatusReporter

    install_chart_rbac(control_plane, namespace)
    create(control_plane, namespace)
    wait_for(lambda: status_of(control_plane, namespace).get("jobSetName"), "the JobSet")
    api = worker_api(control_plane, namespace)
    patches = []
    real_patch = api.patch_namespaced_custom_object_status

    def counting_patch(*args, **kwargs):  # a spy: the real call, counted
        patches.append(args[-1])
        return real_patch(*args, **kwargs)

    api.patch_namespaced_custom_object_status = counting_patch
    reporter = StatusReporter(api, namespace, "qwen-arc", interval=0.5)
    for done in range(1, 201):
        reporter.update(
            {
                "samplesDone": done,
                "samplesTotal": 200,
                "tokensDone": 100 * done,
                "tokensPerSecond": 1234.5,
                "percent": done / 2,
                "etaSeconds": (200 - done) // 10,
            }
        )
        time.sleep(0.005)
    reporter.close()
    assert 2 <= len(patches) <= 6, f"{len(patches)} patches for 200 updates in ~1s at one per 0.5s"
    progress = status_of(control_plane, namespace)["progress"]
    assert (progress["samplesDone"], progress["tokensDone"], progress["percent"]) == (200, 20000, 100)
    assert progress["updateTime"]
    assert columns(control_plane, namespace)["TOKENS/S"] == "1234.5"

    time.sleep(3)  # several operator resync passes: they never overwrite the workers' progress
    assert status_of(control_plane, namespace)["progress"] == progress


def test_worker_identity_may_patch_status_only(control_plane, operator, namespace) -> None:
    from kubernetes.client.exceptions import ApiException

    install_chart_rbac(control_plane, namespace)
    create(control_plane, namespace)
    api = worker_api(control_plane, namespace)
    with pytest.raises(ApiException) as denied:
        api.patch_namespaced_custom_object(
            "layertap.dev", "v1alpha1", namespace, "activationextractions", "qwen-arc", {"spec": {"suspend": True}}
        )
    assert denied.value.status == 403


@pytest.mark.parametrize(
    ("account", "verb", "resource", "allowed"),
    [
        ("layertap-worker", "patch", "activationextractions/status", True),
        ("layertap-worker", "get", "activationextractions/status", True),
        ("layertap-worker", "patch", "activationextractions", False),
        ("layertap-worker", "create", "jobsets.jobset.x-k8s.io", False),
        ("layertap-worker", "get", "secrets", False),
        ("layertap-worker", "list", "pods", False),
        ("operator", "watch", "activationextractions", True),
        ("operator", "patch", "activationextractions", True),
        ("operator", "patch", "activationextractions/status", True),
        ("operator", "create", "jobsets.jobset.x-k8s.io", True),
        ("operator", "patch", "jobsets.jobset.x-k8s.io", True),
        ("operator", "create", "events", True),
        ("operator", "watch", "pods", True),
        ("operator", "delete", "activationextractions", False),
        ("operator", "get", "secrets", False),
        ("operator", "create", "pods", False),
    ],
)
def test_rbac_by_impersonation(control_plane, namespace, account, verb, resource, allowed) -> None:
    install_chart_rbac(control_plane, namespace)
    if account == "operator":
        account = operator_account(control_plane, namespace)
    resource, _, subresource = resource.partition("/")
    answer = control_plane.kubectl(
        "auth",
        "can-i",
        verb,
        resource,
        f"--subresource={subresource}",
        "-n",
        namespace,
        f"--as=system:serviceaccount:{namespace}:{account}",
        check=False,
    ).stdout.strip()
    assert answer == ("yes" if allowed else "no")


def test_reporter_is_quiet_without_a_cluster(tmp_path) -> None:
    import kubernetes

    from layertap.run.reporter import StatusReporter

    assert StatusReporter.from_environment({}) is None
    in_pod_env = {"LAYERTAP_EXTRACTION_NAME": "qwen-arc", "LAYERTAP_EXTRACTION_NAMESPACE": "research"}
    assert StatusReporter.from_environment(in_pod_env) is None  # no service-account token here

    config = kubernetes.client.Configuration()
    config.host = "https://127.0.0.1:9"  # nothing listens
    api = kubernetes.client.CustomObjectsApi(kubernetes.client.ApiClient(config))
    reporter = StatusReporter(api, "research", "qwen-arc", interval=0.1)
    reporter.update({"samplesDone": 1})
    reporter.close()  # logged, not raised
    with pytest.raises(ValueError, match="samplesDoen"):
        reporter.update({"samplesDoen": 1})


def columns(control_plane, namespace: str, *flags: str) -> dict[str, str]:
    """`kubectl get ae qwen-arc` as {column: value}, cut where kubectl aligns the header."""
    header, row = control_plane.kubectl("get", "ae", "qwen-arc", "-n", namespace, *flags).stdout.splitlines()
    starts = [match.start() for match in re.finditer(r"\S+", header)]
    cells = [row[start:end].strip() for start, end in zip(starts, [*starts[1:], None])]
    return dict(zip(header.split(), cells, strict=True))


def test_kubectl_get_reads_like_kubectls_own_tables(control_plane, operator, namespace) -> None:
    install_chart_rbac(control_plane, namespace)
    multislice = copy.deepcopy(EXAMPLE)
    multislice["spec"]["resources"] = {"accelerator": "tpu-v6e-slice", "topology": "4x4", "slices": 2}
    create(control_plane, namespace, multislice)
    wait_for(lambda: status_of(control_plane, namespace).get("jobSetName"), "the JobSet")
    run_worker_pod(control_plane, namespace, attempt=0)
    wait_for(lambda: status_of(control_plane, namespace).get("phase") == "Running", "Running")
    worker = worker_api(control_plane, namespace)
    from layertap.run.reporter import StatusReporter

    reporter = StatusReporter(worker, namespace, "qwen-arc", interval=0)
    reporter.update(
        {
            "samplesDone": 50,
            "samplesTotal": 400,
            "percent": 12.5,
            "completed": "12.5%",
            "tokensPerSecond": 1234.5,
            "etaSeconds": 7980,
            "eta": "2h13m",
        }
    )
    reporter.close()

    shown = columns(control_plane, namespace)
    ages = {key: shown.pop(key) for key in ("LAST-REPORT", "AGE")}
    assert shown == {
        "NAME": "qwen-arc",
        "PHASE": "Running",
        "REASON": "Running",
        "PROGRESS": "12.5%",
        "TOKENS/S": "1234.5",
        "ETA": "2h13m",
        "RESTARTS": "0",
    }
    assert all(re.fullmatch(r"\d+s", age) for age in ages.values()), ages
    wide = columns(control_plane, namespace, "-o", "wide")
    assert [wide[key] for key in ("ACCELERATOR", "SHAPE", "JOBSET", "OUTPUT")] == [
        "tpu-v6e-slice",
        "2x4x4",
        "qwen-arc",
        "gs://activations/qwen-arc",
    ]

    # Suspended: the rate and ETA of workers that no longer run are gone; what is done stays.
    control_plane.kubectl("patch", "ae", "qwen-arc", "-n", namespace, "--type=merge", "-p", '{"spec":{"suspend":true}}')
    wait_for(lambda: columns(control_plane, namespace)["PHASE"] == "Suspended", "Suspended")
    shown = columns(control_plane, namespace)
    assert (shown["PROGRESS"], shown["TOKENS/S"], shown["ETA"]) == ("12.5%", "", "")


def test_a_changed_topology_leaves_the_shape_of_what_runs(control_plane, operator, namespace) -> None:
    create(control_plane, namespace)
    wait_for(lambda: status_of(control_plane, namespace).get("jobSetName"), "the JobSet")
    patch = {"spec": {"resources": {"topology": "4x8"}}}
    control_plane.kubectl("patch", "ae", "qwen-arc", "-n", namespace, "--type=merge", "-p", json.dumps(patch))
    wait_for(
        lambda: condition(status_of(control_plane, namespace), "SpecApplied").get("status") == "False", "SpecApplied"
    )
    status = status_of(control_plane, namespace)
    assert status["shape"] == "8x8" and "runs 16 worker pods" in condition(status, "JobSetCreated")["message"]
    assert "new output.uri" in condition(status, "SpecApplied")["message"]
    assert columns(control_plane, namespace, "-o", "wide")["SHAPE"] == "8x8"


def test_events_come_from_the_operator(control_plane, operator, namespace) -> None:
    create(control_plane, namespace)
    wait_for(lambda: status_of(control_plane, namespace).get("jobSetName"), "the JobSet")

    def events():
        return [e for e in control_plane.get_list("events", namespace) if e["involvedObject"]["name"] == "qwen-arc"]

    wait_for(events, "an Event")
    assert {e["source"]["component"] for e in events()} == {"layertap-operator"}
    assert {e["reportingComponent"] for e in events()} == {"layertap-operator"}


def test_a_failing_worker_says_why_in_the_status(control_plane, operator, namespace) -> None:
    from layertap.run.reporter import StatusReporter

    install_chart_rbac(control_plane, namespace)
    create(control_plane, namespace)
    message = "layertap extract: error: extraction.layers: [30] out of range for a model of 24 layers"
    StatusReporter(worker_api(control_plane, namespace), namespace, "qwen-arc").report_error(
        message, pod="qwen-arc-worker-0-0"
    )
    error = status_of(control_plane, namespace)["lastError"]
    assert (error["message"], error["pod"]) == (message, "qwen-arc-worker-0-0") and error["time"]


def test_the_failed_pods_own_words_reach_the_condition_the_event_and_kubectl_get(
    control_plane, operator, namespace
) -> None:
    create(control_plane, namespace)
    wait_for(lambda: status_of(control_plane, namespace).get("jobSetName"), "the JobSet")
    run_worker_pod(control_plane, namespace, attempt=0)
    cause = "layertap extract: error: extraction.layers: [30] out of range for a model of 24 layers"
    terminated = {
        "exitCode": 2,
        "reason": "Error",
        "message": cause + "\n",
        "startedAt": "2026-01-01T00:00:00Z",
        "finishedAt": "2026-01-01T00:00:05Z",
    }  # what a kubelet writes from /dev/termination-log
    control_plane.kubectl(
        "patch",
        "pod",
        "qwen-arc-worker-0-0-abcde",
        "-n",
        namespace,
        "--subresource=status",
        "--type=merge",
        "-p",
        json.dumps(
            {
                "status": {
                    "phase": "Failed",
                    "containerStatuses": [
                        {
                            "name": "worker",
                            "image": "worker:1",
                            "imageID": "",
                            "ready": False,
                            "restartCount": 0,
                            "state": {"terminated": terminated},
                        }
                    ],
                }
            }
        ),
    )
    write_jobset_status(
        control_plane,
        namespace,
        {
            "conditions": [
                {
                    "type": "Failed",
                    "status": "True",
                    "reason": "FailedJobs",
                    "lastTransitionTime": "2026-01-01T00:00:06Z",
                    "message": "jobset failed due to FailJobSetFailurePolicyAction",
                }
            ]
        },
    )
    wait_for(lambda: status_of(control_plane, namespace).get("phase") == "Failed", "Failed")
    expected = f"worker pod qwen-arc-worker-0-0-abcde exited with code 2: {cause}"
    assert expected in condition(status_of(control_plane, namespace), "Failed")["message"]
    assert expected in columns(control_plane, namespace, "-o", "wide")["MESSAGE"]
    warnings = [e for e in control_plane.get_list("events", namespace) if e["type"] == "Warning"]
    assert [e["reason"] for e in warnings if expected in e["message"]] == ["FailedJobs"], warnings


def test_kubectl_explain_describes_every_field(control_plane, operator) -> None:
    """kubectl explain reads the server's OpenAPI, published from the CRD's schema: every
    field's description (from the pydantic models) must reach it."""
    from layertap_api.resource import ActivationExtractionSpec

    def described(path: str, model) -> None:
        for name, field in model.model_fields.items():
            text = control_plane.kubectl("explain", f"activationextraction.{path}.{field.alias or name}").stdout
            assert " ".join(field.description.split()[:4]) in " ".join(text.split()), (path, name, text)

    described("spec", ActivationExtractionSpec)
    described("spec.resources", ActivationExtractionSpec.model_fields["resources"].annotation)


def test_the_jobsets_changes_reach_the_status_without_waiting_for_a_resync(control_plane, operator, namespace) -> None:
    operator.stop()
    operator.start(resync_seconds=300)  # only the JobSet watch can make the status follow in time
    try:
        create(control_plane, namespace)
        wait_for(lambda: status_of(control_plane, namespace).get("jobSetName"), "the JobSet")
        run_worker_pod(control_plane, namespace, attempt=0)
        write_jobset_status(
            control_plane,
            namespace,
            {
                "replicatedJobsStatus": [
                    {"name": "worker", "ready": 1, "succeeded": 0, "failed": 0, "active": 16, "suspended": 0}
                ]
            },
        )
        wait_for(lambda: status_of(control_plane, namespace).get("phase") == "Running", "Running", timeout=10)

        # A JobSet deleted under a running resource comes back, and says so.
        control_plane.kubectl("delete", "jobset", "qwen-arc", "-n", namespace, "--wait=false")
        wait_for(
            lambda: any(
                e["reason"] == "JobSetRecreated" and e["type"] == "Warning"
                for e in control_plane.get_list("events", namespace)
            ),
            "a JobSetRecreated Warning",
            15,
        )
        assert (
            control_plane.get("jobset", "qwen-arc", namespace)["metadata"]["labels"]["layertap.dev/extraction"]
            == "qwen-arc"
        )

        write_jobset_status(
            control_plane,
            namespace,
            JOBSET_COMPLETED,
        )
        wait_for(lambda: status_of(control_plane, namespace).get("phase") == "Succeeded", "Succeeded", timeout=10)
    finally:
        operator.stop()
        operator.start()


def _crd_without_the_queue_rule() -> dict:
    """The CRD as it was before it had the rule that a Kueue priority needs queueName."""
    older = crd()
    spec = older["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]
    spec["x-kubernetes-validations"] = [
        r for r in spec["x-kubernetes-validations"] if r["fieldPath"] != ".workloadPriorityClassName"
    ]
    return older


def test_a_spec_stored_before_the_crd_had_its_rule_fails_once(control_plane, operator, namespace) -> None:
    """A resource stored under an older CRD that lacked a rule (here: workloadPriorityClassName
    without queueName) reaches the operator: phase Failed, reason InvalidSpec, the one-line
    explanation, one Warning however many resyncs pass, and no JobSet."""
    invalid = copy.deepcopy(EXAMPLE)
    invalid["spec"]["workloadPriorityClassName"] = "high"
    # --force-conflicts: the CRD may be helm's, after tests/cluster/test_chart_install.py in the same session.
    control_plane.kubectl(
        "apply",
        "--server-side",
        "--force-conflicts",
        "--field-manager=layertap-tests",
        "-f",
        "-",
        input=yaml.safe_dump(_crd_without_the_queue_rule()),
    )
    try:
        create(control_plane, namespace, invalid)
    finally:
        control_plane.apply_crd(CRD)
    status = wait_for(
        lambda: (s := status_of(control_plane, namespace)).get("reason") == "InvalidSpec" and s, "InvalidSpec"
    )
    assert status["phase"] == "Failed" and "\n" not in status["message"] and "queueName" in status["message"]
    assert columns(control_plane, namespace)["PHASE"] == "Failed"
    time.sleep(3)  # three resyncs at 1 s
    warnings = [
        e
        for e in control_plane.get_list("events", namespace)
        if e["involvedObject"]["name"] == "qwen-arc" and e["reason"] == "InvalidSpec"
    ]
    assert len(warnings) == 1 and warnings[0].get("count", 1) == 1, warnings
    assert not control_plane.get_list("jobsets", namespace)


def test_a_reconcile_lists_no_pods(control_plane, operator, namespace) -> None:
    """The pods come from the operator's watch, not a LIST per pass: across several resyncs
    (1 s here) of a running resource, the API server answers no pod LIST, while the status
    still follows the pod."""
    create(control_plane, namespace)
    wait_for(lambda: status_of(control_plane, namespace).get("jobSetName"), "the JobSet")
    run_worker_pod(control_plane, namespace, attempt=0)
    wait_for(lambda: status_of(control_plane, namespace).get("phase") == "Running", "Running from the watched pod")
    passes = ("layertap_operator_reconcile_seconds_count", ())
    lists, before = control_plane.api_requests()["LIST", "pods"], operator.metrics()[passes]
    wait_for(lambda: operator.metrics()[passes] >= before + 3, "three more passes")
    assert control_plane.api_requests()["LIST", "pods"] == lists


def test_a_resource_asking_beyond_the_policy_gets_no_jobset(control_plane, operator, namespace) -> None:
    """The operator's own check of the chart's policy (here its default, the strictest), for
    resources the admission policy did not see (none is installed in this namespace): Failed,
    PolicyDenied, the value to change, one Warning; allowed again once the spec asks for less."""
    privileged = copy.deepcopy(EXAMPLE)
    privileged["spec"]["privileged"] = True
    create(control_plane, namespace, privileged)
    status = wait_for(
        lambda: (s := status_of(control_plane, namespace)).get("reason") == "PolicyDenied" and s, "PolicyDenied"
    )
    assert status["phase"] == "Failed" and "policy.allowPrivileged" in status["message"], status
    time.sleep(3)  # three resyncs at 1 s
    warnings = [
        e
        for e in control_plane.get_list("events", namespace)
        if e["involvedObject"]["name"] == "qwen-arc" and e["reason"] == "PolicyDenied"
    ]
    assert len(warnings) == 1 and warnings[0]["type"] == "Warning", warnings
    assert not control_plane.get_list("jobsets", namespace)

    control_plane.kubectl(
        "patch", "ae", "qwen-arc", "-n", namespace, "--type=merge", "-p", '{"spec":{"privileged":false}}'
    )
    wait_for(lambda: status_of(control_plane, namespace).get("jobSetName"), "the JobSet once the spec is allowed")
