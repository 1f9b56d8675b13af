"""The JobSet builder: a table of resources -> the JobSet shape GKE needs, all valid under the real JobSet CRD."""

from __future__ import annotations

import json

import pytest

from layertap_api import contract as wire
from layertap_api.resource import ActivationExtractionSpec
from layertap_operator import constants as c
from layertap_operator.builder import Owner, build_jobset

OWNER = Owner(name="qwen-arc", namespace="research", uid="0b7c6a52-4f0e-4b1e-9d57-6c1f1b0f2a11")
IMAGE = "us-docker.pkg.dev/p/layertap/worker:0.1.0"


@pytest.fixture
def build(spec_dict):
    def build(**spec_fields) -> dict:
        resources = spec_fields.pop("resources", {})
        spec = ActivationExtractionSpec.model_validate({**spec_dict(**resources), **spec_fields})
        return build_jobset(spec, OWNER, IMAGE)

    return build


def pod(jobset: dict) -> dict:
    return jobset["spec"]["replicatedJobs"][0]["template"]["spec"]["template"]["spec"]


def env(jobset: dict) -> dict[str, object]:
    return {e["name"]: e.get("value", e.get("valueFrom")) for e in pod(jobset)["containers"][0]["env"]}


TABLE = [
    # resources, slices, hosts per slice, device resource and count per pod, node selector, exclusive
    (
        {"accelerator": "tpu-v5-lite-podslice", "topology": "8x8"},
        1,
        16,
        ("google.com/tpu", "4"),
        {"cloud.google.com/gke-tpu-accelerator": "tpu-v5-lite-podslice", "cloud.google.com/gke-tpu-topology": "8x8"},
        True,
    ),
    (
        {"accelerator": "tpu-v6e-slice", "topology": "4x4", "slices": 2},
        2,
        4,
        ("google.com/tpu", "4"),
        {"cloud.google.com/gke-tpu-accelerator": "tpu-v6e-slice", "cloud.google.com/gke-tpu-topology": "4x4"},
        True,
    ),
    (
        {"accelerator": "tpu-v5-lite-podslice", "topology": "2x4"},
        1,
        1,
        ("google.com/tpu", "8"),
        {"cloud.google.com/gke-tpu-accelerator": "tpu-v5-lite-podslice", "cloud.google.com/gke-tpu-topology": "2x4"},
        False,
    ),
    (
        {"accelerator": "tpu-v5p-slice", "topology": "4x4x4"},
        1,
        16,
        ("google.com/tpu", "4"),
        {"cloud.google.com/gke-tpu-accelerator": "tpu-v5p-slice", "cloud.google.com/gke-tpu-topology": "4x4x4"},
        True,
    ),
    (
        {"accelerator": "nvidia-l4", "hosts": 2, "gpusPerHost": 4},
        1,
        2,
        ("nvidia.com/gpu", "4"),
        {"cloud.google.com/gke-accelerator": "nvidia-l4"},
        False,
    ),
    ({"accelerator": "cpu", "hosts": 3}, 1, 3, None, None, False),
]


@pytest.mark.parametrize(("resources", "slices", "hosts", "device", "selector", "exclusive"), TABLE)
def test_shape_per_accelerator(resources, slices, hosts, device, selector, exclusive, build, validate_jobset) -> None:
    jobset = build(resources=resources)
    assert validate_jobset(jobset) == []
    (replicated,) = jobset["spec"]["replicatedJobs"]
    job = replicated["template"]["spec"]
    assert replicated["replicas"] == slices
    assert (job["parallelism"], job["completions"], job["backoffLimit"]) == (hosts, hosts, 0)
    assert job["completionMode"] == "Indexed"
    limits = pod(jobset)["containers"][0]["resources"].get("limits", {})
    if device:
        assert limits[device[0]] == device[1]
        assert pod(jobset)["tolerations"] == [{"key": device[0], "operator": "Exists", "effect": "NoSchedule"}]
    else:
        assert "tolerations" not in pod(jobset) and not any("/" in k for k in limits)
    assert pod(jobset).get("nodeSelector") == selector
    annotations = jobset["metadata"].get("annotations", {})
    assert (annotations.get(c.EXCLUSIVE_TOPOLOGY_ANNOTATION) == "cloud.google.com/gke-nodepool") is exclusive
    assert env(jobset)[wire.ENV_NUM_PROCESSES] == str(slices * hosts)
    assert env(jobset)[wire.ENV_PROCESSES_PER_JOB] == str(hosts)
    assert (wire.ENV_MEGASCALE_NUM_SLICES in env(jobset)) is (slices > 1)


def test_v5e_8x8_in_full(build, validate_jobset) -> None:
    jobset = build(maxRestarts=5, activeDeadlineSeconds=7200, ttlSecondsAfterFinished=600, queueName="tpu-queue")
    assert validate_jobset(jobset) == []
    meta = jobset["metadata"]
    assert (meta["name"], meta["namespace"]) == ("qwen-arc", "research")
    assert meta["labels"][c.KUEUE_QUEUE_LABEL] == "tpu-queue"
    assert meta["labels"][c.LABEL_EXTRACTION] == "qwen-arc"
    assert meta["ownerReferences"] == [
        {
            "apiVersion": "layertap.dev/v1alpha1",
            "kind": "ActivationExtraction",
            "name": "qwen-arc",
            "uid": OWNER.uid,
            "controller": True,
            "blockOwnerDeletion": True,
        }
    ]
    spec = jobset["spec"]
    assert spec["suspend"] is True  # queued: Kueue unsuspends on admission
    assert spec["failurePolicy"]["maxRestarts"] == 5
    # An invalid spec fails at once; a disruption restarts without counting; the rest counts.
    rules = {rule["name"]: rule["action"] for rule in spec["failurePolicy"]["rules"]}
    assert rules == {"InvalidSpec": "FailJobSet", "Disrupted": "RestartJobSetAndIgnoreMaxRestarts"}
    job = spec["replicatedJobs"][0]["template"]["spec"]
    invalid, disrupted = job["podFailurePolicy"]["rules"]
    assert invalid["onExitCodes"]["values"] == [wire.EXIT_INVALID] and invalid["action"] == "FailJob"
    assert disrupted["onPodConditions"] == [{"type": "DisruptionTarget", "status": "True"}]
    assert spec["ttlSecondsAfterFinished"] == 600
    assert spec["network"]["enableDNSHostnames"] is True
    assert spec["replicatedJobs"][0]["template"]["spec"]["activeDeadlineSeconds"] == 7200
    p = pod(jobset)
    assert p["restartPolicy"] == "Never" and p["serviceAccountName"] == "layertap-worker"
    assert p["securityContext"]["runAsNonRoot"] is True
    container = p["containers"][0]
    assert container["image"] == IMAGE
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    assert container["securityContext"]["capabilities"] == {"drop": ["ALL"]}
    e = env(jobset)
    # The worker gets the validated spec with the defaults filled in, and finds its place from JobSet.
    shipped = ActivationExtractionSpec.model_validate(json.loads(e[wire.ENV_SPEC]))
    assert shipped.extraction.layers == list(range(10, 24)) and shipped.extraction.storage_dtype == "bfloat16"
    assert e[wire.ENV_JOBSET_NAME] == "qwen-arc" and e[wire.ENV_REPLICATED_JOB_NAME] == wire.REPLICATED_JOB
    assert e[wire.ENV_JOB_INDEX] == {"fieldRef": {"fieldPath": "metadata.annotations['jobset.sigs.k8s.io/job-index']"}}
    assert (e[wire.ENV_EXTRACTION_NAME], e[wire.ENV_EXTRACTION_NAMESPACE]) == ("qwen-arc", "research")


def test_multislice_environment(build) -> None:
    e = env(build(resources={"accelerator": "tpu-v6e-slice", "topology": "4x4", "slices": 2}))
    assert e[wire.ENV_MEGASCALE_COORDINATOR] == "qwen-arc-worker-0-0.qwen-arc"
    assert e[wire.ENV_MEGASCALE_NUM_SLICES] == "2"
    assert e[wire.ENV_MEGASCALE_SLICE_ID] == e[wire.ENV_JOB_INDEX]


def test_a_hub_token_comes_from_its_secret_and_never_from_the_spec(build) -> None:
    assert wire.ENV_HF_TOKEN not in env(build())
    e = env(build(model={"uri": "hf://meta-llama/Llama-3.2-1B"}, hubTokenSecret={"name": "hf-token"}))
    assert e[wire.ENV_HF_TOKEN] == {"secretKeyRef": {"name": "hf-token", "key": "token"}}
    assert json.loads(e[wire.ENV_SPEC])["hubTokenSecret"] == {"name": "hf-token", "key": "token"}  # a name, no value


@pytest.mark.parametrize(("fields", "suspended"), [({}, False), ({"suspend": True}, True), ({"queueName": "q"}, True)])
def test_suspend(fields: dict, suspended: bool, build) -> None:
    assert build(**fields)["spec"]["suspend"] is suspended


def test_mesh_and_requests_reach_the_pod(build) -> None:
    jobset = build(resources={"accelerator": "cpu", "hosts": 2, "mesh": {"model": 2}, "cpu": "8", "memory": "32Gi"})
    container = pod(jobset)["containers"][0]
    assert json.loads(env(jobset)[wire.ENV_SPEC])["resources"]["mesh"] == {"model": 2}
    assert container["resources"] == {"requests": {"cpu": "8", "memory": "32Gi"}, "limits": {"memory": "32Gi"}}


@pytest.mark.parametrize("mode", ["extract", "predict"])
def test_the_worker_runs_the_subcommand_of_the_mode(build, mode) -> None:
    jobset = build(mode=mode)
    assert pod(jobset)["containers"][0]["command"] == ["layertap", mode]
    assert json.loads(env(jobset)[wire.ENV_SPEC])["mode"] == mode


def test_same_input_same_jobset(build) -> None:
    assert build() == build()


def test_the_schema_check_catches_mistakes(build, validate_jobset) -> None:
    jobset = build()
    jobset["spec"]["failurePolicy"]["maxRestart"] = 3  # typo: pruned silently by the server
    jobset["spec"]["replicatedJobs"][0]["replicas"] = "2"  # wrong type
    problems = validate_jobset(jobset)
    assert any("failurePolicy.maxRestart: unknown field" in p for p in problems)
    assert any("replicas" in p and "integer" in p for p in problems)


def test_unprivileged_non_root_unless_asked(build, validate_jobset) -> None:
    plain = pod(build())
    assert plain["securityContext"]["runAsNonRoot"] is True and plain["securityContext"]["runAsUser"] == 65532
    assert "privileged" not in plain["containers"][0]["securityContext"]
    privileged = build(privileged=True)
    assert validate_jobset(privileged) == []
    p = pod(privileged)
    assert p["containers"][0]["securityContext"] == {"privileged": True}
    assert (p["securityContext"]["runAsNonRoot"], p["securityContext"]["runAsUser"]) == (False, 0)


def test_grace_period_priorities_and_platform_reach_the_pods(build, validate_jobset) -> None:
    jobset = build(
        terminationGracePeriodSeconds=120,
        priorityClassName="research-high",
        queueName="tpu",
        workloadPriorityClassName="urgent",
    )
    assert validate_jobset(jobset) == []
    p = pod(jobset)
    assert (p["terminationGracePeriodSeconds"], p["priorityClassName"]) == (120, "research-high")
    assert jobset["metadata"]["labels"]["kueue.x-k8s.io/priority-class"] == "urgent"
    assert env(jobset)["JAX_PLATFORMS"] == "tpu" and env(jobset)["JAX_COORDINATOR_PORT"] == "8482"
    assert env(build(resources={"accelerator": "nvidia-l4", "hosts": 2}))["JAX_PLATFORMS"] == "cuda"
    assert env(build(resources={"accelerator": "cpu"}))["JAX_PLATFORMS"] == "cpu"


def test_multislice_declares_the_megascale_port(build) -> None:
    jobset = build(resources={"accelerator": "tpu-v6e-slice", "topology": "4x4", "slices": 2})
    ports = {p["name"]: p["containerPort"] for p in pod(jobset)["containers"][0]["ports"]}
    assert ports == {
        "coordinator": wire.COORDINATOR_PORT,
        "megascale": wire.MEGASCALE_PORT,
        "metrics": wire.METRICS_PORT,
    }
    assert env(jobset)["MEGASCALE_PORT"] == str(wire.MEGASCALE_PORT)
    assert {p["name"] for p in pod(build())["containers"][0]["ports"]} == {"coordinator", "metrics"}
