"""charts/layertap rendered by the real helm: lint, schema, Kubernetes validity, security, RBAC."""

from __future__ import annotations

import re
from pathlib import Path

import kubernetes_validate
import pytest

from layertap_api.resource import ActivationExtractionSpec
from layertap_operator.builder import Owner, build_jobset

CHART = Path(__file__).resolve().parents[2] / "charts" / "layertap"

# The chart's kubeVersion floor and the newest schemas kubernetes-validate ships.
KUBERNETES_VERSIONS = ["1.30.0", kubernetes_validate.latest_version()]
VALUE_SETS = {
    "defaults": [],
    "namespace-list": ["operator.watchNamespaces={team-a,team-b}"],
    "cluster-wide": ["operator.clusterWide=true"],
    "customised": [
        "operator.image.tag=dev",
        "operator.extraArgs={--verbose}",
        "operator.nodeSelector.pool=system",
        "operator.serviceAccount.annotations.note=x",
        "worker.serviceAccount.annotations.iam\\.gke\\.io/gcp-service-account=x@p.iam.gserviceaccount.com",
        "worker.namespaces={research}",
        "commonLabels.team=interp",
    ],
    "external-service-accounts": [
        "operator.serviceAccount.create=false",
        "operator.serviceAccount.name=existing",
        "worker.serviceAccount.create=false",
    ],
}


EXAMPLE_SPEC = {
    "model": {"uri": "gs://models/qwen2.5-0.5b"},
    "dataset": {"uri": "gs://data/arc-agi/evaluation.json", "format": "arc-json"},
    "output": {"uri": "gs://activations/run"},
    "resources": {"accelerator": "tpu-v5-lite-podslice", "topology": "4x4"},
}


def by_kind(docs: list[dict], kind: str) -> list[dict]:
    return [doc for doc in docs if doc["kind"] == kind]


def named(docs: list[dict], kind: str, name: str) -> dict:
    matches = [doc for doc in by_kind(docs, kind) if doc["metadata"]["name"] == name]
    assert len(matches) == 1, f"{kind} {name}: {len(matches)} found"
    return matches[0]


def operator_container(docs: list[dict]) -> dict:
    (deployment,) = by_kind(docs, "Deployment")
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    return container


def test_lint_strict_is_clean(helm):
    result = helm("lint", "--strict", str(CHART))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "[WARNING]" not in result.stdout and "[ERROR]" not in result.stdout, result.stdout


@pytest.mark.parametrize("name", VALUE_SETS)
@pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
def test_rendered_core_objects_are_valid_kubernetes(render, name, version):
    docs = render(*VALUE_SETS[name])
    core = [doc for doc in docs if doc["kind"] != "CustomResourceDefinition"]
    assert core
    for doc in core:
        kubernetes_validate.validate(doc, version, strict=True)


def test_every_value_is_documented():
    """helm-docs style: a `# --` comment on each value, or on every value below a plain mapping."""
    nodes: list[dict] = []  # key lines in order, with their indent and whether `# --` precedes them
    comment_block: list[str] = []
    for line in (CHART / "values.yaml").read_text().splitlines():
        match = re.match(r"^(\s*)([\w.-]+):", line)
        if match:
            nodes.append(
                {"indent": len(match[1]), "key": match[2], "doc": any(c.startswith("# --") for c in comment_block)}
            )
        comment_block = [*comment_block, line.strip()] if line.strip().startswith("#") else []

    def documented(i: int) -> bool:
        children = [j for j in range(i + 1, len(nodes)) if nodes[j]["indent"] > nodes[i]["indent"]]
        children = children[: next((k for k, j in enumerate(children) if j != i + 1 + k), len(children))]
        direct = [j for j in children if nodes[j]["indent"] == min(nodes[c]["indent"] for c in children)]
        return nodes[i]["doc"] or (bool(direct) and all(documented(j) for j in direct))

    top = [i for i, node in enumerate(nodes) if node["indent"] == 0]
    assert [nodes[i]["key"] for i in top if not documented(i)] == []


def test_operator_pod_is_locked_down(render):
    docs = render()
    (deployment,) = by_kind(docs, "Deployment")
    pod = deployment["spec"]["template"]["spec"]
    container = operator_container(docs)
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["runAsUser"] != 0
    assert container["securityContext"] == {
        "allowPrivilegeEscalation": False,
        "readOnlyRootFilesystem": True,
        "capabilities": {"drop": ["ALL"]},
    }
    assert container["resources"]["requests"] and container["resources"]["limits"]["memory"]
    # kopf standalone: one replica, never two during a rollout.
    assert deployment["spec"]["replicas"] == 1
    assert deployment["spec"]["strategy"]["type"] == "Recreate"


@pytest.mark.parametrize("port", [8080, 9443])
def test_probes_hit_kopfs_health_endpoint(render, port):
    container = operator_container(render(f"operator.healthPort={port}"))
    assert f"--liveness=http://0.0.0.0:{port}/healthz" in container["args"]
    (container_port,) = [p for p in container["ports"] if p["name"] == "health"]
    assert container_port["containerPort"] == port
    for probe in ("livenessProbe", "readinessProbe"):
        assert container[probe]["httpGet"] == {"path": "/healthz", "port": container_port["name"]}


def test_operator_serves_metrics_on_the_named_port(render):
    container = operator_container(render("operator.metricsPort=9500"))
    env = {e["name"]: e.get("value") for e in container["env"]}
    assert env["LAYERTAP_METRICS_PORT"] == "9500"
    assert {"name": "metrics", "containerPort": 9500, "protocol": "TCP"} in container["ports"]


def test_managed_prometheus_scrapes_the_operator_and_every_worker(render):
    assert not [d for d in render() if d["apiVersion"].startswith("monitoring.googleapis.com")]  # off by default

    docs = render("metrics.podMonitoring.enabled=true", "metrics.podMonitoring.interval=15s")
    (operator_monitor,) = by_kind(docs, "PodMonitoring")
    (deployment,) = by_kind(docs, "Deployment")
    pod_labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert operator_monitor["metadata"]["namespace"] == deployment["metadata"]["namespace"]
    assert operator_monitor["spec"]["selector"]["matchLabels"].items() <= pod_labels.items()
    assert operator_monitor["spec"]["endpoints"] == [{"port": "metrics", "interval": "15s"}]

    # Workers: the selector must match the labels the operator puts on the pods it makes,
    # and the port name the one it declares on their container.
    (worker_monitor,) = by_kind(docs, "ClusterPodMonitoring")
    jobset = build_jobset(ActivationExtractionSpec.model_validate(EXAMPLE_SPEC), Owner("run", "research", "u"), "w:1")
    (job,) = jobset["spec"]["replicatedJobs"]
    pod = job["template"]["spec"]["template"]
    assert worker_monitor["spec"]["selector"]["matchLabels"].items() <= pod["metadata"]["labels"].items()
    assert worker_monitor["spec"]["endpoints"] == [{"port": "metrics", "interval": "15s"}]
    (worker,) = pod["spec"]["containers"]
    assert "metrics" in [p["name"] for p in worker["ports"]]


def test_by_default_the_operator_is_bound_in_the_default_namespace_only(render):
    docs = render()
    args = operator_container(docs)["args"]
    assert "--all-namespaces" not in args and "--namespace=default" in args
    assert [b["metadata"]["name"] for b in by_kind(docs, "ClusterRoleBinding")] == ["layertap-operator-cluster"]
    operator_bindings = [rb for rb in by_kind(docs, "RoleBinding") if rb["roleRef"]["name"] == "layertap-operator"]
    assert [rb["metadata"]["namespace"] for rb in operator_bindings] == ["default"]


def test_an_empty_namespace_list_without_cluster_wide_is_refused(helm):
    result = helm("template", "layertap", str(CHART), "--set-json", "operator.watchNamespaces=[]")
    assert result.returncode != 0
    assert "list the namespaces the operator serves, or set operator.clusterWide=true" in result.stderr


def test_cluster_wide_binds_the_operator_cluster_wide(render):
    docs = render("operator.clusterWide=true")
    assert "--all-namespaces" in operator_container(docs)["args"]
    binding = named(docs, "ClusterRoleBinding", "layertap-operator")
    assert binding["roleRef"]["name"] == "layertap-operator"
    assert binding["subjects"] == [
        {"kind": "ServiceAccount", "name": "layertap-operator", "namespace": "layertap-system"}
    ]
    assert not by_kind(docs, "Role")
    # The worker account goes where `kubectl apply` without -n puts a resource.
    assert [rb["metadata"]["namespace"] for rb in by_kind(docs, "RoleBinding")] == ["default"]


def test_namespace_list_binds_the_operator_in_those_namespaces_only(render):
    docs = render("operator.watchNamespaces={team-a,team-b}")
    args = operator_container(docs)["args"]
    assert "--all-namespaces" not in args
    assert [a for a in args if a.startswith("--namespace")] == ["--namespace=team-a", "--namespace=team-b"]
    assert [b["metadata"]["name"] for b in by_kind(docs, "ClusterRoleBinding")] == ["layertap-operator-cluster"]
    operator_bindings = [rb for rb in by_kind(docs, "RoleBinding") if rb["roleRef"]["name"] == "layertap-operator"]
    assert sorted(rb["metadata"]["namespace"] for rb in operator_bindings) == ["team-a", "team-b"]
    # The worker account follows the watched namespaces unless told otherwise.
    workers = by_kind(docs, "ServiceAccount")
    assert sorted(sa["metadata"]["namespace"] for sa in workers if sa["metadata"]["name"] == "layertap-worker") == [
        "team-a",
        "team-b",
    ]


CRDS_READ = {
    "apiGroups": ["apiextensions.k8s.io"],
    "resources": ["customresourcedefinitions"],
    "verbs": ["get", "list", "watch"],
}
NAMESPACES_READ = {"apiGroups": [""], "resources": ["namespaces"], "verbs": ["list", "watch"]}


@pytest.mark.parametrize(
    ("sets", "rules"),
    [(["operator.clusterWide=true"], [CRDS_READ]), (["operator.watchNamespaces={a}"], [CRDS_READ, NAMESPACES_READ])],
)
def test_operator_cluster_scope_is_read_only_discovery(render, sets, rules):
    """kopf follows namespaces only when it serves a list of them (otherwise it watches cluster-wide)."""
    assert named(render(*sets), "ClusterRole", "layertap-operator-cluster")["rules"] == rules


def test_operator_role_only_reads_pods_and_never_secrets(render):
    rules = named(render(), "ClusterRole", "layertap-operator")["rules"]
    granted = {
        (group, resource): set(rule["verbs"])
        for rule in rules
        for group in rule["apiGroups"]
        for resource in rule["resources"]
    }
    assert granted[("jobset.x-k8s.io", "jobsets")] == {"create", "get", "list", "watch", "patch"}
    assert granted[("layertap.dev", "activationextractions/status")] == {"get", "patch"}
    # Pods and Kueue's workloads are watched to say why a run waits or failed; pods never written.
    assert granted[("", "pods")] == {"list", "watch"} and granted[("", "serviceaccounts")] == {"get"}
    assert granted[("kueue.x-k8s.io", "workloads")] == {"list", "watch", "patch"}
    assert "*" not in {verb for verbs in granted.values() for verb in verbs}
    assert not {resource for _, resource in granted} & {"secrets", "configmaps", "*"}


def test_worker_role_may_only_read_its_resource_and_patch_status(render):
    docs = render("worker.namespaces={research}")
    assert named(docs, "ClusterRole", "layertap-worker")["rules"] == [
        {"apiGroups": ["layertap.dev"], "resources": ["activationextractions"], "verbs": ["get"]},
        {"apiGroups": ["layertap.dev"], "resources": ["activationextractions/status"], "verbs": ["get", "patch"]},
    ]
    binding = named(docs, "RoleBinding", "layertap-worker")
    assert binding["metadata"]["namespace"] == "research"
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": "layertap-worker", "namespace": "research"}]


@pytest.mark.parametrize(
    ("sets", "image"),
    [
        ([], "ghcr.io/layertap/layertap-worker:0.1.0"),
        (["worker.image.tag=dev"], "ghcr.io/layertap/layertap-worker:dev"),
    ],
)
def test_operator_knows_the_default_worker_image(render, sets, image):
    env = {e["name"]: e.get("value") for e in operator_container(render(*sets))["env"]}
    assert env["LAYERTAP_WORKER_IMAGE"] == image


def test_worker_service_account_carries_workload_identity_annotation(render):
    docs = render("worker.serviceAccount.annotations.iam\\.gke\\.io/gcp-service-account=x@p.iam.gserviceaccount.com")
    worker = named(docs, "ServiceAccount", "layertap-worker")
    assert worker["metadata"]["annotations"] == {"iam.gke.io/gcp-service-account": "x@p.iam.gserviceaccount.com"}


def test_external_service_accounts_are_used_not_created(render):
    docs = render(*VALUE_SETS["external-service-accounts"])
    assert by_kind(docs, "ServiceAccount") == []
    (deployment,) = by_kind(docs, "Deployment")
    assert deployment["spec"]["template"]["spec"]["serviceAccountName"] == "existing"
    assert not [r for r in by_kind(docs, "ClusterRole") if r["metadata"]["name"].endswith("-worker")]


def test_long_release_names_are_truncated_and_stay_distinct(render):
    release = "a-long-release-name-at-helms-limit-of-fifty-three-chars"[:53]
    docs = render(release=release)
    fullname = f"{release}-layertap"
    names = [(doc["kind"], doc["metadata"]["name"]) for doc in docs if doc["kind"] != "CustomResourceDefinition"]
    assert all(len(name) <= 63 for _, name in names), names
    assert len(set(names)) == len(names)
    assert {name for kind, name in names if kind == "ClusterRole"} == {
        fullname[: 63 - len(suffix)].rstrip("-") + suffix for suffix in ("-operator-cluster", "-operator", "-worker")
    }


def test_crd_ships_with_the_chart(render):
    (crd,) = by_kind(render(), "CustomResourceDefinition")
    assert crd["metadata"]["name"] == "activationextractions.layertap.dev"


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("operator.watchNamespaces={Team_A}", "/operator/watchNamespaces/0"),
        ("operator.image.pullPolicy=Sometimes", "/operator/image/pullPolicy"),
        ("operator.replicas=2", "additional properties 'replicas' not allowed"),
        ("worker.serviceAccount.name=", "/worker/serviceAccount/name"),
    ],
)
def test_schema_rejects_bad_values_naming_the_field(helm, value, message):
    result = helm("template", "layertap", str(CHART), "--set", value)
    assert result.returncode != 0
    assert message in result.stderr


def test_notes_say_what_to_do_next(helm):
    result = helm(
        "install",
        "layertap",
        str(CHART),
        "--dry-run=client",
        "--namespace",
        "lt",
        "--set",
        "operator.watchNamespaces={research}",
    )
    assert result.returncode == 0, result.stderr
    notes = result.stdout.split("NOTES:", 1)[1]
    assert "serves ActivationExtractions in research" in notes
    assert "rollout status deployment/layertap-operator" in notes
    assert "kubectl apply -n research -f manifests/examples/" in notes
    assert "iam.gke.io/gcp-service-account" in notes


def test_the_worker_status_policy_guards_every_field_of_the_operators(render):
    """The fields a worker may not change are the status's fields but the workers' two."""
    from layertap_api.status import ExtractionStatus

    policy = named(render(), "ValidatingAdmissionPolicy", "layertap-worker-status")
    guarded = set(re.findall(r"oldObject\.\?status\.\?(\w+) ==", policy["spec"]["validations"][1]["expression"]))
    fields = {field.alias or name for name, field in ExtractionStatus.model_fields.items()}
    assert guarded == fields - {"progress", "lastError"}
