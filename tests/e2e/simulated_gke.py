"""A simulated GKE TPU cluster on one machine, every component real but the kubelet:

- etcd and kube-apiserver (tests/kube.py), serving on a bridge address that pods reach;
- kube-controller-manager (the Job controller, the garbage collector, ServiceAccounts, ...)
  and kube-scheduler, from the same pinned k8s.io/kubernetes;
- the JobSet controller with its admission webhooks (a serving certificate made here, the
  upstream webhook configurations pointed at it), so JobSet defaulting and validation are
  the real ones;
- Kueue with its webhooks, for the `batch/job` and `jobset.x-k8s.io/jobset` integrations;
- kwok keeping fake Nodes alive, labelled, sized and tainted as GKE node pools
  (`NODE_POOLS`); kwok runs no pods;
- the pod runner (podrunner.py), the kubelet's stand-in, which runs each pod bound to a fake
  node as local processes in its own network namespace;
- fake-gcs-server as GCS.

Needs root (network namespaces, a bridge, mount namespaces) and the binaries of
tests/setup.d/10-controlplane.sh and 20-helm.sh. Used by tests/e2e/conftest.py, and by a
person through tests/e2e/local-cluster.sh (`python tests/e2e/simulated_gke.py up DIR`).
"""

from __future__ import annotations

import argparse
import base64
import datetime
import ipaddress
import json
import os
import random
import signal
import ssl
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path

import yaml
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests/: kube, gcs_emulator
sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "api"))

from gcs_emulator import Emulator
from kube import BIN, ControlPlane, free_port, running_control_plane, stop, wait_for

from layertap_api.catalog import ACCELERATORS, TPU_ACCELERATOR_LABEL, TPU_RESOURCE, TPU_TOPOLOGY_LABEL

E2E_BINARIES = ("kube-controller-manager", "kube-scheduler", "jobset", "kueue", "kwok")
FAKE_NODE_LABEL = "layertap.dev/fake-node"
BROKEN_ACCELERATOR_ANNOTATION = "layertap.dev/simulate-broken-accelerator"
NODEPOOL_LABEL = "cloud.google.com/gke-nodepool"
BUCKET = "layertap-e2e"
KUEUE_FRAMEWORKS = ["batch/job", "jobset.x-k8s.io/jobset"]
# Webhooks Kueue serves for its own kinds and the two integrations above (the others in its
# upstream manifests are for frameworks that are not enabled, and nothing would answer them).
KUEUE_WEBHOOK_GROUPS = {"kueue.x-k8s.io", "batch", "jobset.x-k8s.io"}
KUEUE_CONVERTED_CRDS = ["localqueues", "clusterqueues", "cohorts", "workloads", "multikueueclusters"]


@dataclass(frozen=True)
class NodePool:
    """A GKE node pool: `nodes` nodes with these labels, capacity and taints."""

    name: str
    nodes: int
    labels: dict[str, str]
    capacity: dict[str, str]
    taints: tuple[dict, ...] = ()
    annotations: tuple[tuple[str, str], ...] = ()


def tpu_pool(name: str, accelerator: str, topology: str, broken: bool = False) -> NodePool:
    """A TPU slice as GKE makes it: one node per host, the accelerator and topology labels,
    `google.com/tpu` chips per node, and the `google.com/tpu` NoSchedule taint."""
    shape = ACCELERATORS[accelerator].topologies[topology]
    return NodePool(
        name,
        shape.hosts,
        {
            TPU_ACCELERATOR_LABEL: accelerator,
            TPU_TOPOLOGY_LABEL: topology,
            "node.kubernetes.io/instance-type": shape.machine_type,
        },
        {"cpu": "24", "memory": "48Gi", "pods": "110", TPU_RESOURCE: str(shape.chips_per_host)},
        ({"key": TPU_RESOURCE, "value": "present", "effect": "NoSchedule"},),
        # The pod runner simulates no chips on a broken node: its pods see no TPU at all.
        ((BROKEN_ACCELERATOR_ANNOTATION, "true"),) if broken else (),
    )


NODE_POOLS = (
    NodePool(
        "default-pool",
        2,
        {"node.kubernetes.io/instance-type": "e2-standard-16"},
        {"cpu": "16", "memory": "64Gi", "pods": "110"},
    ),
    tpu_pool("v5e-4x4", "tpu-v5-lite-podslice", "4x4"),  # multi-host: 4 nodes x 4 chips
    tpu_pool("v5e-2x2-a", "tpu-v5-lite-podslice", "2x2"),  # single-host slices, two of them
    tpu_pool("v5e-2x2-b", "tpu-v5-lite-podslice", "2x2"),
    tpu_pool("v6e-4x4-a", "tpu-v6e-slice", "4x4"),  # two multi-host slices for multislice
    tpu_pool("v6e-4x4-b", "tpu-v6e-slice", "4x4"),
    tpu_pool("v6e-2x4-broken", "tpu-v6e-slice", "2x4", broken=True),  # a node whose TPUs cannot be opened
)


@dataclass(frozen=True)
class Cluster:
    """A running simulated cluster."""

    plane: ControlPlane
    workdir: Path
    gateway: str  # the bridge's address: the API server and GCS emulator listen here
    gcs: str  # the emulator's URL
    bucket: str
    podrunner_log: Path

    def kubectl(self, *args: str, **kwargs):
        return self.plane.kubectl(*args, **kwargs)

    def helm(self, *args: str, **kwargs):
        return self.plane.helm(*args, **kwargs)


def missing() -> list[str]:
    from kube import missing_binaries

    return missing_binaries(*E2E_BINARIES)


@contextmanager
def running_cluster(workdir: Path, pools: tuple[NodePool, ...] = NODE_POOLS) -> Iterator[Cluster]:
    """Start everything (about 15 s), yield the cluster, stop everything."""
    workdir.mkdir(parents=True, exist_ok=True)
    logs = workdir / "logs"
    logs.mkdir(exist_ok=True)
    with ExitStack() as stack:
        bridge, gateway, subnet = stack.enter_context(_bridge())
        plane = stack.enter_context(running_control_plane(workdir, address=gateway))
        certs = _webhook_certificates(workdir / "webhook-certs")
        processes: list[subprocess.Popen] = []
        stack.callback(lambda: [stop(p) for p in reversed(processes)])

        def start(name: str, cmd: list[str], env: dict | None = None) -> subprocess.Popen:
            with (logs / f"{name}.log").open("w") as out:
                process = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=env)
            processes.append(process)
            return process

        kubeconfig = str(plane.kubeconfig)
        port = free_port()
        start(
            "kube-controller-manager",
            [
                str(BIN / "kube-controller-manager"),
                f"--kubeconfig={kubeconfig}",
                "--leader-elect=false",
                "--bind-address=127.0.0.1",
                f"--secure-port={port}",
                f"--cert-dir={workdir / 'kcm-certs'}",
                f"--service-account-private-key-file={plane.service_account_key}",
                f"--root-ca-file={plane.ca_file}",
                "--use-service-account-credentials=false",
                # Its serving certificate is no CA: publishing it as a trust bundle only loops on errors.
                "--controllers=*,-kube-apiserver-serving-clustertrustbundle-publisher-controller",
                "--v=1",
            ],
        )
        _wait_https(f"https://127.0.0.1:{port}/healthz", "kube-controller-manager", processes[-1])
        port = free_port()
        start(
            "kube-scheduler",
            [
                str(BIN / "kube-scheduler"),
                f"--kubeconfig={kubeconfig}",
                "--leader-elect=false",
                "--bind-address=127.0.0.1",
                f"--secure-port={port}",
                f"--cert-dir={workdir / 'scheduler-certs'}",
                "--v=1",
            ],
        )
        _wait_https(f"https://127.0.0.1:{port}/readyz", "kube-scheduler", processes[-1])

        # JobSet: its CRD is installed by the control plane; then the controller, then its webhooks.
        webhook_port, health_port = free_port(), free_port()
        config = workdir / "jobset-config.yaml"
        config.write_text(
            yaml.safe_dump(
                _controller_config("config.jobset.x-k8s.io/v1alpha1", webhook_port, health_port, certs.parent)
            )
        )
        start("jobset", [str(BIN / "jobset"), f"--kubeconfig={kubeconfig}", f"--config={config}"])
        _wait_http(f"http://127.0.0.1:{health_port}/readyz", "the JobSet controller", processes[-1])
        plane.apply(
            _webhooks(
                BIN / "manifests" / "jobset" / "webhooks.yaml", "jobset", webhook_port, certs, _jobset_pod_selector
            )
        )

        # Kueue: its CRDs, its namespace, the controller, its webhooks and CRD conversion.
        for crd in sorted((BIN / "manifests" / "kueue" / "crds").glob("*.yaml")):
            plane.apply(crd)
        for crd in sorted((BIN / "manifests" / "kueue" / "crds").glob("*.yaml")):
            name = yaml.safe_load(crd.read_text())["metadata"]["name"]
            wait_for(
                lambda name=name: (
                    "True"
                    in plane.kubectl(
                        "get",
                        "crd",
                        name,
                        "-o",
                        "jsonpath={.status.conditions[?(@.type=='Established')].status}",
                        check=False,
                    ).stdout
                ),
                f"CRD {name}",
            )
        plane.kubectl("create", "namespace", "kueue-system")
        webhook_port, health_port = free_port(), free_port()
        config = workdir / "kueue-config.yaml"
        config.write_text(
            yaml.safe_dump(
                {
                    **_controller_config("config.kueue.x-k8s.io/v1beta2", webhook_port, health_port, certs.parent),
                    "namespace": "kueue-system",
                    "integrations": {"frameworks": KUEUE_FRAMEWORKS},
                    # The visibility API server and MultiKueue are not used and want more than we serve.
                    "featureGates": {"VisibilityOnDemand": False, "MultiKueue": False},
                }
            )
        )
        start("kueue", _kueue_command(workdir, certs.parent, kubeconfig, config))
        _wait_http(f"http://127.0.0.1:{health_port}/readyz", "Kueue", processes[-1], timeout=120)
        plane.apply(_webhooks(BIN / "manifests" / "kueue" / "webhooks.yaml", "kueue", webhook_port, certs, None))
        convert_kueue_crds_through(plane, webhook_port, certs)

        # kwok keeps the fake nodes Ready; nodes as GKE labels, sizes and taints them.
        start(
            "kwok",
            [
                str(BIN / "kwok"),
                f"--kubeconfig={kubeconfig}",
                f"--config={BIN / 'manifests' / 'kwok' / 'stages.yaml'}",
                f"--manage-nodes-with-label-selector={FAKE_NODE_LABEL}=true",
                "--node-lease-duration-seconds=40",
                f"--node-ip={gateway}",
            ],
            env={**os.environ, "KWOK_WORKDIR": str(workdir / "kwok")},
        )
        plane.apply([node for pool in pools for node in _nodes(pool)])
        names = [f"{pool.name}-{i}" for pool in pools for i in range(pool.nodes)]
        wait_for(lambda: _ready_nodes(plane) >= set(names), "the fake nodes to be Ready", timeout=60)

        emulator = Emulator(workdir / "gcs", host=gateway)
        (workdir / "gcs").mkdir(exist_ok=True)
        emulator.start()
        stack.callback(emulator.stop)
        emulator.create_bucket(BUCKET)

        runner_config = workdir / "podrunner.json"
        runner_config.write_text(
            json.dumps(
                {
                    "kubeconfig": kubeconfig,
                    "workdir": str(workdir / "podrunner"),
                    "bridge": bridge,
                    "gateway": gateway,
                    "subnet": subnet,
                    "api_port": int(plane.server.rsplit(":", 1)[1]),
                    "ca_file": str(plane.ca_file),
                    "node_selector": f"{FAKE_NODE_LABEL}=true",
                    "extra_env": {"STORAGE_EMULATOR_HOST": emulator.url},
                }
            )
        )
        stack.callback(_remove_sandboxes, workdir / "podrunner" / "netns")  # after the runner stopped
        start("podrunner", [sys.executable, str(Path(__file__).with_name("podrunner.py")), f"--config={runner_config}"])
        yield Cluster(plane, workdir, gateway, emulator.url, BUCKET, logs / "podrunner.log")


@contextmanager
def _bridge() -> Iterator[tuple[str, str, str]]:
    """A Linux bridge on a free 10.x.0.0/16: (name, gateway address, subnet)."""
    taken = subprocess.run(["ip", "-j", "addr"], capture_output=True, text=True, check=True).stdout
    used = {
        ipaddress.ip_interface(f"{a['local']}/{a['prefixlen']}").network
        for link in json.loads(taken)
        for a in link.get("addr_info", [])
        if a.get("family") == "inet"
    }
    octets = [o for o in range(200, 250) if not any(n.overlaps(ipaddress.ip_network(f"10.{o}.0.0/16")) for n in used)]
    subnet = ipaddress.ip_network(f"10.{random.choice(octets)}.0.0/16")
    name = f"ltbr{os.getpid() % 100000}"
    gateway = str(next(subnet.hosts()))
    # A fixed MAC: a bridge otherwise takes the lowest of its ports' addresses, which changes
    # as pods come and go, and the pods' cached address of their gateway goes stale (their
    # connections to the API server then stall for as long as their ARP entries live).
    mac = "02:4c:54:" + ":".join(f"{random.randrange(256):02x}" for _ in range(3))
    for command in (
        ["ip", "link", "add", name, "address", mac, "type", "bridge"],
        ["ip", "addr", "add", f"{gateway}/{subnet.prefixlen}", "dev", name],
        ["ip", "link", "set", name, "up"],
    ):
        subprocess.run(command, check=True, capture_output=True)
    try:
        yield name, gateway, str(subnet)
    finally:
        subprocess.run(["ip", "link", "del", name], capture_output=True)


def _remove_sandboxes(noted: Path) -> None:
    """The network namespaces of pods the runner had no time to tear down."""
    for marker in noted.glob("*") if noted.is_dir() else []:
        subprocess.run(["ip", "netns", "del", marker.name], capture_output=True)
        marker.unlink()


def _webhook_certificates(directory: Path) -> Path:
    """A CA and a serving certificate for 127.0.0.1 (tls.crt, tls.key) shared by the JobSet
    and Kueue webhook servers; returns the CA file."""
    directory.mkdir(parents=True, exist_ok=True)
    start = datetime.datetime.now(datetime.UTC) - datetime.timedelta(minutes=5)
    end = start + datetime.timedelta(days=2)
    ca_key, key = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "layertap-e2e-webhook-ca")])
    ca = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(end)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(ca_key, hashes.SHA256())
    )
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")]))
        .issuer_name(ca_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(end)
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1")), x509.DNSName("localhost")]),
            critical=False,
        )
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    (directory / "ca.crt").write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    (directory / "tls.crt").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    (directory / "tls.key").write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    return directory / "ca.crt"


def _controller_config(api_version: str, webhook_port: int, health_port: int, cert_dir: Path) -> dict:
    """A controller-runtime manager's configuration: our own certificate (no in-cluster cert
    management), one replica without leader election, no metrics, explicit ports."""
    return {
        "apiVersion": api_version,
        "kind": "Configuration",
        "internalCertManagement": {"enable": False},
        "webhook": {"port": webhook_port, "host": "127.0.0.1", "certDir": str(cert_dir)},
        "metrics": {"bindAddress": "0"},
        "health": {"healthProbeBindAddress": f"127.0.0.1:{health_port}"},
        "leaderElection": {"leaderElect": False},
    }


def _jobset_pod_selector(webhook: dict) -> None:
    """What JobSet's kustomize patches add: its pod webhooks see JobSet pods only."""
    if any("pods" in rule["resources"] for rule in webhook["rules"]):
        webhook["objectSelector"] = {
            "matchExpressions": [{"key": "jobset.sigs.k8s.io/jobset-name", "operator": "Exists"}]
        }


def _webhooks(manifests: Path, prefix: str, port: int, ca_file: Path, patch) -> list[dict]:
    """The upstream webhook configurations, pointed at https://127.0.0.1:port with our CA."""
    ca_bundle = base64.b64encode(ca_file.read_bytes()).decode()
    out = []
    for doc in yaml.safe_load_all(manifests.read_text()):
        if not doc:
            continue
        doc["metadata"] = {"name": f"{prefix}-{doc['metadata']['name']}"}
        hooks = []
        for webhook in doc["webhooks"]:
            groups = {group for rule in webhook["rules"] for group in rule["apiGroups"]}
            if prefix == "kueue" and not groups <= KUEUE_WEBHOOK_GROUPS:
                continue
            path = webhook["clientConfig"]["service"]["path"]
            webhook["clientConfig"] = {"url": f"https://127.0.0.1:{port}{path}", "caBundle": ca_bundle}
            if patch is not None:
                patch(webhook)
            hooks.append(webhook)
        doc["webhooks"] = hooks
        out.append(doc)
    return out


def convert_kueue_crds_through(plane, webhook_port: int, certs: Path) -> None:
    """Point the conversion of Kueue's multi-version CRDs at its webhook on loopback."""
    ca_bundle = base64.b64encode(certs.read_bytes()).decode()
    for crd in KUEUE_CONVERTED_CRDS:
        conversion = {
            "strategy": "Webhook",
            "webhook": {
                "conversionReviewVersions": ["v1"],
                "clientConfig": {"url": f"https://127.0.0.1:{webhook_port}/convert", "caBundle": ca_bundle},
            },
        }
        plane.kubectl(
            "patch",
            "crd",
            f"{crd}.kueue.x-k8s.io",
            "--type=merge",
            "-p",
            json.dumps({"spec": {"conversion": conversion}}),
        )


def _kueue_command(workdir: Path, cert_dir: Path, kubeconfig: str, config: Path) -> list[str]:
    """Kueue without in-cluster cert management insists on a metrics certificate at the fixed
    path /etc/kueue/metrics/certs (even with metrics off): give it a private mount namespace
    whose /etc is an overlay holding ours, so the host's /etc is untouched."""
    overlay = workdir / "kueue-etc"
    (overlay / "upper").mkdir(parents=True, exist_ok=True)
    (overlay / "work").mkdir(exist_ok=True)
    script = (
        f"mount -t overlay overlay -o lowerdir=/etc,upperdir={overlay / 'upper'},workdir={overlay / 'work'} /etc"
        f" && mkdir -p /etc/kueue/metrics/certs && cp {cert_dir}/tls.crt {cert_dir}/tls.key /etc/kueue/metrics/certs/"
        ' && exec "$@"'
    )
    return [
        "unshare",
        "-m",
        "sh",
        "-c",
        script,
        "kueue",
        str(BIN / "kueue"),
        f"--kubeconfig={kubeconfig}",
        f"--config={config}",
    ]


def _nodes(pool: NodePool) -> Iterator[dict]:
    for i in range(pool.nodes):
        name = f"{pool.name}-{i}"
        yield {
            "apiVersion": "v1",
            "kind": "Node",
            "metadata": {
                "name": name,
                "annotations": dict(pool.annotations),
                "labels": {
                    FAKE_NODE_LABEL: "true",
                    NODEPOOL_LABEL: pool.name,
                    "kubernetes.io/hostname": name,
                    "kubernetes.io/os": "linux",
                    "kubernetes.io/arch": "amd64",
                    "topology.kubernetes.io/zone": "us-central2-b",
                    **pool.labels,
                },
            },
            "spec": {"taints": list(pool.taints)},
            "status": {"capacity": pool.capacity, "allocatable": pool.capacity},
        }


def _ready_nodes(plane: ControlPlane) -> set[str]:
    nodes = plane.get_list("nodes")
    return {
        n["metadata"]["name"]
        for n in nodes
        if any(c["type"] == "Ready" and c["status"] == "True" for c in n.get("status", {}).get("conditions", []))
    }


def _wait_https(url: str, what: str, process: subprocess.Popen, timeout: float = 60) -> None:
    context = ssl.create_default_context()
    context.check_hostname, context.verify_mode = False, ssl.CERT_NONE  # self-signed; only the health answer counts
    _wait_http(url, what, process, timeout, context)


def _wait_http(url: str, what: str, process: subprocess.Popen, timeout: float = 60, context=None) -> None:
    def healthy() -> bool:
        if process.poll() is not None:
            raise RuntimeError(f"{what} exited with {process.returncode}; see its log")
        try:
            with urllib.request.urlopen(url, timeout=2, context=context) as response:
                return response.status == 200
        except OSError:
            return False

    wait_for(healthy, what, timeout)


def main() -> None:
    parser = argparse.ArgumentParser(description="run the simulated GKE TPU cluster until stopped")
    parser.add_argument("command", choices=["up"])
    parser.add_argument("workdir", type=Path)
    args = parser.parse_args()
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))  # unwinds the context: every component stops
    with running_cluster(args.workdir) as cluster:
        (args.workdir / "cluster.json").write_text(
            json.dumps(
                {
                    "kubeconfig": str(cluster.plane.kubeconfig),
                    "gcs": cluster.gcs,
                    "bucket": cluster.bucket,
                    "gateway": cluster.gateway,
                }
            )
        )
        print(f"cluster up: KUBECONFIG={cluster.plane.kubeconfig}", flush=True)
        while True:
            time.sleep(3600)


if __name__ == "__main__":
    main()
