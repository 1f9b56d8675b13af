"""The operator <-> worker contract, end to end on paper: for every example resource and every
pod of its JobSet, the environment `build_jobset` writes (resolved as a kubelet would: the
downward API, the Job's completion index) goes into the worker's own detection, which must
find its place in the run, its coordinator, its slice, its resource and its spec."""

from __future__ import annotations

import argparse
import re
from pathlib import Path

import pytest
import yaml

from layertap.run import cli
from layertap.run.distributed import detect
from layertap.run.reporter import StatusReporter
from layertap_api import contract
from layertap_api.resource import ActivationExtraction
from layertap_operator.builder import Owner, build_jobset

EXAMPLES = sorted((Path(__file__).resolve().parents[1] / "manifests" / "examples").glob("*.yaml"))
NAMESPACE = "research"
FIELD_REF = re.compile(r"metadata\.(annotations|labels)\['([^']+)'\]|metadata\.(name|namespace)")


def pods(jobset: dict):
    """(slice, host, pod metadata, container) of every pod the JobSet's Jobs create."""
    for replicated in jobset["spec"]["replicatedJobs"]:
        job = replicated["template"]["spec"]
        assert job["completionMode"] == "Indexed" and job["parallelism"] == job["completions"]
        for slice_id in range(replicated["replicas"]):
            for host in range(job["completions"]):
                # What the JobSet and Job controllers stamp on each pod (sigs.k8s.io/jobset, batch/v1).
                hostname = f"{jobset['metadata']['name']}-{replicated['name']}-{slice_id}-{host}"
                metadata = {
                    "name": f"{hostname}-x7k2p",
                    "namespace": jobset["metadata"]["namespace"],
                    "annotations": {contract.JOBSET_JOB_INDEX_ANNOTATION: str(slice_id)},
                    "labels": {**job["template"]["metadata"]["labels"], contract.JOBSET_RESTART_ATTEMPT_LABEL: "0"},
                    "hostname": hostname,
                }
                (container,) = job["template"]["spec"]["containers"]
                yield slice_id, host, metadata, container


def kubelet_env(metadata: dict, container: dict, host: int) -> dict[str, str]:
    """The container's environment as a kubelet resolves it (fieldRefs of the downward API)."""
    env = {contract.ENV_JOB_COMPLETION_INDEX: str(host)}  # Kubernetes sets it in Indexed Jobs
    for var in container["env"]:
        if "value" in var:
            env[var["name"]] = var["value"]
            continue
        path = var["valueFrom"]["fieldRef"]["fieldPath"]
        match = FIELD_REF.fullmatch(path)
        assert match, f"{var['name']}: a kubelet does not resolve {path}"
        kind, key, field = match.groups()
        env[var["name"]] = metadata[kind][key] if kind else metadata[field]
    return env


def parse_args(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    cli.add_arguments(parser, cli.EXTRACT)
    return parser.parse_args(argv)


@pytest.mark.parametrize("example", EXAMPLES, ids=lambda path: path.name)
def test_every_pod_finds_its_place_from_the_builders_environment(example):
    resource = ActivationExtraction.model_validate(yaml.safe_load(example.read_text()))
    name, spec = resource.metadata["name"], resource.spec
    jobset = build_jobset(spec, Owner(name, NAMESPACE, "uid-1"), "worker:1")
    subdomain = jobset["spec"]["network"].get("subdomain") or name  # JobSet's default
    res = spec.resources
    seen = []
    for slice_id, host, metadata, container in pods(jobset):
        env = kubelet_env(metadata, container, host)
        placement = contract.WorkerEnvironment.parse(env).placement
        process_id = slice_id * res.hosts_per_slice + host
        assert (placement.process_id, placement.num_processes, placement.slice_id) == (
            process_id,
            res.process_count,
            slice_id,
        )
        setup = detect(env=env)
        assert (setup.source, setup.process_id, setup.num_processes) == ("jobset", process_id, res.process_count)
        assert setup.coordinator == placement.coordinator and setup.slice_id == slice_id
        if contract.ENV_MEGASCALE_COORDINATOR in env:  # TPU multislice: what libtpu reads
            assert env[contract.ENV_MEGASCALE_SLICE_ID] == str(slice_id)
            assert env[contract.ENV_MEGASCALE_NUM_SLICES] == str(res.slices)
            assert env[contract.ENV_MEGASCALE_COORDINATOR] == placement.coordinator.rsplit(":", 1)[0]
        # On GKE, TPU pods also get TPU_WORKER_HOSTNAMES/TPU_WORKER_ID, and JAX detects the slice.
        assert detect(env={**env, "TPU_WORKER_HOSTNAMES": "a,b", "TPU_WORKER_ID": str(host)}).source == "tpu"
        # The coordinator is process 0's DNS name in the JobSet's headless service, on the declared port.
        host0 = contract.pod_hostname(name, 0, 0)
        assert placement.coordinator == f"{host0}.{subdomain}:{container['ports'][0]['containerPort']}"
        assert (host0 == metadata["hostname"]) is (process_id == 0)

        # The metrics port the worker serves on is the one the pod declares for scraping.
        declared = {port["name"]: port["containerPort"] for port in container["ports"]}
        assert env[contract.ENV_METRICS_PORT] == str(declared["metrics"]) and env[contract.ENV_RESTART_ATTEMPT] == "0"

        reporter = StatusReporter.from_environment(env, api=object())
        assert (reporter.namespace, reporter.name) == (NAMESPACE, name)
        assert cli.job_from_args(parse_args(), cli.EXTRACT, env=env) == spec.worker_spec()
        seen.append(process_id)
    assert sorted(seen) == list(range(res.process_count))


def test_a_pod_outside_a_cluster_has_no_placement_and_no_reporter():
    assert contract.WorkerEnvironment.parse({}) == contract.WorkerEnvironment()
    assert StatusReporter.from_environment({}) is None
    assert detect(env={}).source == "single"


@pytest.mark.parametrize(
    "change, message",
    [
        ({contract.ENV_JOB_INDEX: "one"}, "JOB_INDEX='one' is not an integer"),
        ({contract.ENV_NUM_PROCESSES: None}, "LAYERTAP_NUM_PROCESSES is not set"),
        ({contract.ENV_REPLICATED_JOB_NAME: None}, "REPLICATED_JOB_NAME is not set"),
        ({contract.ENV_JOB_COMPLETION_INDEX: "4"}, "process id 4 is outside 0..3"),
    ],
)
def test_a_broken_environment_is_named(change, message):
    env = {
        contract.ENV_JOBSET_NAME: "run",
        contract.ENV_REPLICATED_JOB_NAME: contract.REPLICATED_JOB,
        contract.ENV_NUM_PROCESSES: "4",
        contract.ENV_PROCESSES_PER_JOB: "4",
    }
    env.update(change)
    env = {key: value for key, value in env.items() if value is not None}
    with pytest.raises(contract.ContractError, match=re.escape(message)):
        contract.WorkerEnvironment.parse(env)
