"""The chart's policy on a real API server: what an ActivationExtraction may ask for (its
ValidatingAdmissionPolicy, with the operator's own messages), and whose status a worker may
change (a token bound to one of the resource's worker pods).

Each test renders the chart's policies for its own namespace (a release per test, bound with
`operator.watchNamespaces={NS}`), so the policies of one test never reach another's resources.
"""

from __future__ import annotations

import copy
import json
import subprocess
from pathlib import Path

import pytest
import yaml
from kube import wait_for

from layertap_api.resource import ActivationExtractionSpec
from layertap_operator.policy import Policy, violations

REPO = Path(__file__).resolve().parents[2]
CHART = REPO / "charts/layertap"
CRD = CHART / "crds/layertap.dev_activationextractions.yaml"

RESOURCE = {
    "apiVersion": "layertap.dev/v1alpha1",
    "kind": "ActivationExtraction",
    "metadata": {"name": "qwen-arc"},
    "spec": {
        "model": {"uri": "gs://models/qwen2.5-0.5b"},
        "dataset": {"uri": "gs://data/arc-agi/evaluation.json", "format": "arc-json"},
        "output": {"uri": "gs://activations/qwen-arc"},
        "resources": {"accelerator": "cpu", "hosts": 1},
    },
}

ASKS = {
    "privileged": {"privileged": True},
    "image": {"image": "registry.example/miner:1"},
    "serviceAccountName": {"serviceAccountName": "deployer"},
    "hubTokenSecret": {"hubTokenSecret": {"name": "prod-db", "key": "password"}},
}


def install_policy(control_plane, namespace: str, *sets: str, show: str = "templates/policy/admission.yaml") -> str:
    """The chart's objects of `show` for a release serving `namespace` alone; returns the
    LAYERTAP_POLICY the same values give the operator."""
    control_plane.apply_crd(CRD)
    args = ["template", f"p-{namespace}"[:53], str(CHART), "-n", namespace]
    for value in (f"operator.watchNamespaces={{{namespace}}}", *sets):
        args += ["--set", value]
    control_plane.apply(control_plane.helm(*args, "--show-only", show).stdout)
    deployment = yaml.safe_load(control_plane.helm(*args, "--show-only", "templates/operator/deployment.yaml").stdout)
    (env,) = [
        e["value"]
        for e in deployment["spec"]["template"]["spec"]["containers"][0]["env"]
        if e["name"] == "LAYERTAP_POLICY"
    ]
    return env


def asking(name: str, **fields) -> dict:
    resource = copy.deepcopy(RESOURCE)
    resource["metadata"]["name"] = name
    resource["spec"].update(fields)
    return resource


def refusal(control_plane, namespace: str, resource: dict) -> str:
    """The server's answer to creating `resource` (dry run): '' when admitted."""
    result = control_plane.kubectl(
        "create", "--dry-run=server", "-n", namespace, "-f", "-", input=json.dumps(resource), check=False
    )
    return "" if result.returncode == 0 else result.stderr


def wait_until_enforced(control_plane, namespace: str) -> None:
    """A new policy takes the API server a moment to load."""
    wait_for(lambda: refusal(control_plane, namespace, asking("probe", privileged=True)), "the policy", timeout=30)


@pytest.mark.parametrize("field", ASKS)
def test_asking_beyond_the_default_policy_is_refused_naming_the_value(control_plane, namespace, field) -> None:
    operator_policy = Policy.from_json(install_policy(control_plane, namespace))
    wait_until_enforced(control_plane, namespace)
    assert refusal(control_plane, namespace, RESOURCE) == ""
    resource = asking("qwen-arc", **ASKS[field])
    answer = refusal(control_plane, namespace, resource)
    # The operator's defence says exactly what admission says, from the same chart values.
    (expected,) = violations(ActivationExtractionSpec.model_validate(resource["spec"]), operator_policy)
    assert "denied request" in answer and expected in answer, answer


def test_the_charts_values_admit_what_they_name(control_plane, namespace) -> None:
    install_policy(
        control_plane,
        namespace,
        "policy.allowPrivileged=true",
        "policy.allowedImagePrefixes={registry.example/layertap/}",
        "policy.allowedServiceAccounts={gcs-reader}",
        "policy.allowedHubTokenSecrets={hf-token}",
    )
    wait_for(
        lambda: refusal(control_plane, namespace, asking("probe", image="elsewhere.example/x:1")), "the policy", 30
    )
    allowed = asking(
        "qwen-arc",
        privileged=True,
        image="registry.example/layertap/worker:2",
        serviceAccountName="gcs-reader",
        hubTokenSecret={"name": "hf-token"},
    )
    assert refusal(control_plane, namespace, allowed) == ""
    assert refusal(control_plane, namespace, asking("qwen-arc", serviceAccountName="layertap-worker")) == ""
    answer = refusal(control_plane, namespace, asking("qwen-arc", image="registry.example/layertap-evil/worker:2"))
    assert "starting with: registry.example/layertap/ (the chart's policy.allowedImagePrefixes)" in answer, answer


def test_a_tightened_policy_refuses_spec_changes_but_not_the_operators_bookkeeping(control_plane, namespace) -> None:
    """A resource admitted while privileged was allowed: after the chart turns it off, its
    finalizer and annotations can still change (so it can be deleted), its spec cannot."""
    install_policy(control_plane, namespace, "policy.allowPrivileged=true")
    wait_for(lambda: not refusal(control_plane, namespace, asking("probe", privileged=True)), "the policy", 30)
    control_plane.kubectl("create", "-n", namespace, "-f", "-", input=json.dumps(asking("old", privileged=True)))
    install_policy(control_plane, namespace)
    wait_until_enforced(control_plane, namespace)

    bookkeeping = {"metadata": {"annotations": {"operator.layertap.dev/last": "x"}, "finalizers": ["a.b/c"]}}
    control_plane.kubectl("patch", "ae", "old", "-n", namespace, "--type=merge", "-p", json.dumps(bookkeeping))
    control_plane.kubectl(
        "patch", "ae", "old", "-n", namespace, "--type=merge", "-p", '{"metadata":{"finalizers":null}}'
    )
    with pytest.raises(subprocess.CalledProcessError) as refused:
        control_plane.kubectl("patch", "ae", "old", "-n", namespace, "--type=merge", "-p", '{"spec":{"suspend":true}}')
    assert "policy.allowPrivileged" in refused.value.stderr


def test_the_policy_of_one_release_stays_in_its_namespaces(control_plane, namespace) -> None:
    install_policy(control_plane, namespace)
    wait_until_enforced(control_plane, namespace)
    control_plane.kubectl("create", "namespace", f"{namespace}-other")
    assert refusal(control_plane, f"{namespace}-other", asking("qwen-arc", privileged=True)) == ""


# --- whose status a worker may change ----------------------------------------------------------


def worker_pod(control_plane, namespace: str, name: str, account: str = "layertap-worker") -> None:
    """A pod as the Job controller makes it (none runs here): its name is what the token binds."""
    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name},
        "spec": {"serviceAccountName": account, "containers": [{"name": "worker", "image": "worker:1"}]},
    }
    control_plane.apply(pod, namespace)


def patch_status(
    control_plane, namespace: str, resource: str, kubeconfig: Path, status: dict | None = None
) -> subprocess.CompletedProcess:
    status = status or {"progress": {"samplesDone": 1}}
    return control_plane.kubectl(
        f"--kubeconfig={kubeconfig}",
        "patch",
        "ae",
        resource,
        "-n",
        namespace,
        "--subresource=status",
        "--type=merge",
        "-p",
        json.dumps({"status": status}),
        check=False,
    )


def test_a_worker_may_change_the_status_of_its_own_resource_only(control_plane, namespace) -> None:
    install_policy(control_plane, namespace)
    install_policy(control_plane, namespace, show="templates/worker/rbac.yaml")
    wait_until_enforced(control_plane, namespace)
    for name in ("qwen-arc", "other", "qwen-arc-worker-0-0"):  # the last: a name that extends the first
        control_plane.kubectl("create", "-n", namespace, "-f", "-", input=json.dumps(asking(name)))
    worker_pod(control_plane, namespace, "qwen-arc-worker-0-0-abcde")
    own = control_plane.kubeconfig_for("layertap-worker", namespace, pod="qwen-arc-worker-0-0-abcde")

    def denied_status():
        result = patch_status(control_plane, namespace, "other", own)
        return result.returncode != 0 and result.stderr

    answer = wait_for(denied_status, "the worker-status policy", timeout=30)
    assert "qwen-arc-worker-0-0-abcde may not change the status of other" in answer, answer
    assert patch_status(control_plane, namespace, "qwen-arc-worker-0-0", own).returncode != 0
    mine = patch_status(control_plane, namespace, "qwen-arc", own)
    assert mine.returncode == 0, mine.stderr
    assert control_plane.get("ae", "qwen-arc", namespace)["status"]["progress"]["samplesDone"] == 1

    # Of its own resource's status, progress and lastError only: the rest is the operator's.
    failure = {"lastError": {"message": "out of memory", "pod": "qwen-arc-worker-0-0-abcde"}}
    assert patch_status(control_plane, namespace, "qwen-arc", own, failure).returncode == 0
    phase = patch_status(control_plane, namespace, "qwen-arc", own, {"phase": "Succeeded"})
    assert "a worker may change status.progress and status.lastError only" in phase.stderr, phase.stderr
    control_plane.kubectl(  # the operator (here: the admin) writes its part
        "patch",
        "ae",
        "qwen-arc",
        "-n",
        namespace,
        "--subresource=status",
        "--type=merge",
        "-p",
        '{"status":{"phase":"Running"}}',
    )
    assert patch_status(control_plane, namespace, "qwen-arc", own, {"progress": {"samplesDone": 2}}).returncode == 0
    assert control_plane.get("ae", "qwen-arc", namespace)["status"]["phase"] == "Running"

    # The same account without a pod: a token anyone with `create serviceaccounts/token` could make.
    unbound = patch_status(
        control_plane, namespace, "qwen-arc", control_plane.kubeconfig_for("layertap-worker", namespace)
    )
    assert "a token not bound to a pod" in unbound.stderr, unbound.stderr


# --- Pod Security, a third check the docs recommend ----------------------------------------------


def test_worker_pods_meet_pod_security_restricted(control_plane, namespace) -> None:
    """docs/operator.md: labelling a served namespace `restricted` refuses no worker pod the
    defaults make. (This API server refuses privileged containers outright: --allow-privileged
    is off, so the privileged pod is not tried here.)"""
    from layertap_operator.builder import Owner, build_jobset

    control_plane.kubectl("label", "namespace", namespace, "pod-security.kubernetes.io/enforce=restricted")
    account = {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": "layertap-worker"}}
    control_plane.apply(account, namespace)
    spec = ActivationExtractionSpec.model_validate(RESOURCE["spec"])
    jobset = build_jobset(spec, Owner("qwen-arc", namespace, "uid-1"), "registry.example/worker:1")
    template = jobset["spec"]["replicatedJobs"][0]["template"]["spec"]["template"]
    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "qwen-arc-worker-0-0-abcde"},
        "spec": template["spec"],
    }
    assert refusal(control_plane, namespace, pod) == ""
    pod["spec"]["containers"][0]["securityContext"]["allowPrivilegeEscalation"] = True  # the level is enforced
    assert 'violates PodSecurity "restricted' in refusal(control_plane, namespace, pod)
