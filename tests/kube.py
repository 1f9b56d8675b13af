"""A real Kubernetes control plane for tests: etcd + kube-apiserver, built from the versions
pinned in tests/controlplane (tests/setup.d/10-controlplane.sh), with kubectl and helm from
tests/setup.d/20-helm.sh, all in tests/controlplane/bin/. Shared by the cluster tier
(tests/cluster: the API server alone) and the e2e tier (tests/e2e: the whole simulated
GKE cluster around it).

`running_control_plane(workdir, address=...)` starts etcd and the API server and yields a
`ControlPlane`: the admin kubeconfig, the server URL, the environment for subprocesses, and
kubectl/helm/apply/get helpers. The API server authorizes with RBAC only (as GKE), runs the
default admission plugins plus OwnerReferencesPermissionEnforcement, and signs
ServiceAccount tokens (the TokenRequest API works).
"""

from __future__ import annotations

import base64
import collections
import ipaddress
import json
import os
import re
import secrets
import socket
import ssl
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import yaml
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

T = TypeVar("T")

REPO = Path(__file__).resolve().parents[1]
BIN = REPO / "tests" / "controlplane" / "bin"
JOBSET_CRD = BIN / "crds" / "jobset.x-k8s.io_jobsets.yaml"
REQUIRED = ("etcd", "kube-apiserver", "kubectl", "helm")
START_TIMEOUT_S = 60


@dataclass(frozen=True)
class ControlPlane:
    kubeconfig: Path  # admin (system:masters), token auth, TLS verified
    server: str
    env: dict[str, str]  # os.environ with KUBECONFIG and a PATH that finds our kubectl and helm first
    jobset_crd: Path
    workdir: Path
    token: str  # the admin token
    ca_file: Path  # the API server's CA
    service_account_key: Path  # the key ServiceAccount tokens are signed with (kube-controller-manager)

    def kubectl(self, *args: str, input: str | None = None, check: bool = True) -> subprocess.CompletedProcess[str]:
        return _run([str(BIN / "kubectl"), *args], self.env, input, check)

    def helm(self, *args: str, input: str | None = None, check: bool = True) -> subprocess.CompletedProcess[str]:
        return _run([str(BIN / "helm"), *args], self.env, input, check)

    def apply(
        self, manifests: str | Path | dict | list[dict], namespace: str | None = None, dry_run: bool = False
    ) -> str:
        """Server-side apply; dry_run asks the server to validate and admit without storing."""
        args = ["apply", "--server-side", "--field-manager=layertap-tests"]
        if namespace:
            args += ["-n", namespace]
        if dry_run:
            args.append("--dry-run=server")
        if isinstance(manifests, Path):
            return self.kubectl(*args, "-f", str(manifests)).stdout
        if not isinstance(manifests, str):
            docs = manifests if isinstance(manifests, list) else [manifests]
            manifests = yaml.safe_dump_all(docs)
        return self.kubectl(*args, "-f", "-", input=manifests).stdout

    def get(self, kind: str, name: str, namespace: str | None = None) -> dict:
        ns = ["-n", namespace] if namespace else []
        return json.loads(self.kubectl("get", kind, name, *ns, "-o", "json").stdout)

    def get_list(self, kind: str, namespace: str | None = None) -> list[dict]:
        ns = ["-n", namespace] if namespace else []
        return json.loads(self.kubectl("get", kind, *ns, "-o", "json").stdout)["items"]

    def apply_crd(self, path: Path) -> None:
        self.apply(path)
        name = yaml.safe_load(path.read_text())["metadata"]["name"]
        self.kubectl("wait", "--for=condition=Established", "--timeout=30s", f"crd/{name}")

    def api_requests(self) -> collections.Counter[tuple[str, str]]:
        """Requests the API server has answered since it started, by (verb, resource): its
        own `apiserver_request_total`, summed over the other labels."""
        request = urllib.request.Request(f"{self.server}/metrics", headers={"Authorization": f"Bearer {self.token}"})
        context = ssl.create_default_context(cafile=str(self.ca_file))
        with urllib.request.urlopen(request, context=context, timeout=10) as response:
            text = response.read().decode()
        counts: collections.Counter[tuple[str, str]] = collections.Counter()
        for line in text.splitlines():
            if line.startswith("apiserver_request_total{"):
                labels, value = line[len("apiserver_request_total{") :].rsplit("} ", 1)
                fields = dict(re.findall(r'(\w+)="([^"]*)"', labels))
                counts[fields.get("verb", ""), fields.get("resource", "")] += int(float(value))
        return counts

    def kubeconfig_for(self, service_account: str, namespace: str, pod: str | None = None) -> Path:
        """A kubeconfig whose requests carry a real token of the ServiceAccount; with `pod`, a
        token bound to that pod (it must exist and run as the account), as a kubelet mounts it."""
        bound = ["--bound-object-kind=Pod", f"--bound-object-name={pod}"] if pod else []
        token = self.kubectl(
            "create", "token", service_account, "-n", namespace, "--duration=2h", *bound
        ).stdout.strip()
        path = self.workdir / f"kubeconfig-{namespace}-{service_account}{f'-{pod}' if pod else ''}"
        config = yaml.safe_load(self.kubeconfig.read_text())
        config["users"] = [{"name": service_account, "user": {"token": token}}]
        config["contexts"][0]["context"]["user"] = service_account
        path.write_text(yaml.safe_dump(config))
        path.chmod(0o600)
        return path


class CommandFailed(subprocess.CalledProcessError):
    """A failed kubectl/helm call whose message carries the tool's stderr."""

    def __str__(self) -> str:
        return f"{' '.join(self.cmd[:4])} ... exited with {self.returncode}:\n{self.stderr}"


def _run(cmd: list[str], env: dict[str, str], input: str | None, check: bool) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(cmd, env=env, input=input, capture_output=True, text=True, timeout=120)
    if check and result.returncode != 0:
        raise CommandFailed(result.returncode, cmd, result.stdout, result.stderr)
    return result


def _write_service_account_key(directory: Path) -> tuple[Path, Path]:
    """The key pair the API server signs and verifies ServiceAccount tokens with."""
    key = ec.generate_private_key(ec.SECP256R1())
    private = directory / "sa.key"
    public = directory / "sa.pub"
    private.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    public.write_bytes(
        key.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    )
    private.chmod(0o600)
    return private, public


def _wait_etcd(url: str, process: subprocess.Popen, log: Path) -> None:
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"etcd exited with {process.returncode}:\n{log.read_text()[-4000:]}")
        try:
            with urllib.request.urlopen(f"{url}/health", timeout=5) as response:
                if json.load(response).get("health") == "true":
                    return
        except (urllib.error.URLError, ConnectionError, ValueError):
            pass
        time.sleep(0.1)
    raise RuntimeError(f"etcd not healthy after {START_TIMEOUT_S}s:\n{log.read_text()[-4000:]}")


def _wait_ready(url: str, token: str, ca_file: Path, process: subprocess.Popen, log: Path) -> None:
    context = ssl.create_default_context(cafile=str(ca_file)) if ca_file.exists() else None
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"kube-apiserver exited with {process.returncode}:\n{log.read_text()[-4000:]}")
        if context is None and ca_file.exists():
            context = ssl.create_default_context(cafile=str(ca_file))
        if context is not None:
            request = urllib.request.Request(f"{url}/readyz", headers={"Authorization": f"Bearer {token}"})
            try:
                with urllib.request.urlopen(request, context=context, timeout=5) as response:
                    if response.status == 200:
                        return
            except (urllib.error.URLError, ConnectionError, ssl.SSLError):
                pass
        time.sleep(0.25)
    raise RuntimeError(f"kube-apiserver not ready after {START_TIMEOUT_S}s:\n{log.read_text()[-4000:]}")


def _start(cmd: list[str], log: Path) -> subprocess.Popen:
    with log.open("w") as out:
        return subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT)


def _kubeconfig(server: str, ca_file: Path, token: str) -> dict:
    return {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [
            {
                "name": "layertap-test",
                "cluster": {
                    "server": server,
                    "certificate-authority-data": base64.b64encode(ca_file.read_bytes()).decode(),
                },
            }
        ],
        "users": [{"name": "admin", "user": {"token": token}}],
        "contexts": [{"name": "layertap-test", "context": {"cluster": "layertap-test", "user": "admin"}}],
        "current-context": "layertap-test",
    }


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for(check: Callable[[], T], what: str, timeout: float = 30.0) -> T:
    """`check()`'s first truthy result, polled until `timeout` seconds have passed."""
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(0.2)


def stop(process: subprocess.Popen, timeout: float = 15) -> None:
    """Terminate, and kill what does not exit within `timeout` seconds."""
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def missing_binaries(*names: str) -> list[str]:
    return [name for name in (*REQUIRED, *names) if not (BIN / name).exists()] + (
        [] if JOBSET_CRD.exists() else [JOBSET_CRD.name]
    )


@contextmanager
def running_control_plane(workdir: Path, address: str = "127.0.0.1") -> Iterator[ControlPlane]:
    """etcd and kube-apiserver, serving on `address` (the e2e tier gives a bridge address that
    pods can reach; on loopback the `kubernetes` Service gets no endpoints)."""
    processes: list[subprocess.Popen] = []
    try:
        etcd_port, etcd_peer_port, api_port = free_port(), free_port(), free_port()
        etcd_url = f"http://127.0.0.1:{etcd_port}"
        etcd_log = workdir / "etcd.log"
        etcd = _start(
            [
                str(BIN / "etcd"),
                f"--data-dir={workdir / 'etcd'}",
                f"--listen-client-urls={etcd_url}",
                f"--advertise-client-urls={etcd_url}",
                f"--listen-peer-urls=http://127.0.0.1:{etcd_peer_port}",
                f"--initial-advertise-peer-urls=http://127.0.0.1:{etcd_peer_port}",
                f"--initial-cluster=default=http://127.0.0.1:{etcd_peer_port}",
                # Test data is thrown away: skipping fsync makes every write ~10x cheaper.
                "--unsafe-no-fsync",
                "--log-level=warn",
            ],
            etcd_log,
        )
        processes.append(etcd)
        _wait_etcd(etcd_url, etcd, etcd_log)

        token = secrets.token_hex(24)
        tokens = workdir / "tokens.csv"
        tokens.write_text(f'{token},admin,admin,"system:masters"\n')
        tokens.chmod(0o600)
        sa_key, sa_pub = _write_service_account_key(workdir)
        certs = workdir / "certs"
        server = f"https://{address}:{api_port}"
        loopback = ipaddress.ip_address(address).is_loopback
        api_log = workdir / "kube-apiserver.log"
        apiserver = _start(
            [
                str(BIN / "kube-apiserver"),
                f"--etcd-servers={etcd_url}",
                f"--bind-address={address}",
                f"--advertise-address={address}",
                f"--secure-port={api_port}",
                # No --tls-cert-file: the server makes a self-signed CA and a serving cert for
                # its advertise address here.
                f"--cert-dir={certs}",
                f"--token-auth-file={tokens}",
                # RBAC only, as on GKE: the chart's roles are what the tests exercise.
                "--authorization-mode=RBAC",
                # Owner references that block deletion need rights on the owner, as on strict clusters.
                "--enable-admission-plugins=OwnerReferencesPermissionEnforcement",
                f"--service-account-key-file={sa_pub}",
                f"--service-account-signing-key-file={sa_key}",
                "--service-account-issuer=https://kubernetes.default.svc.cluster.local",
                "--service-cluster-ip-range=10.96.0.0/16",
                # On loopback the `kubernetes` Service would point at a loopback address, which is not allowed.
                *(["--endpoint-reconciler-type=none"] if loopback else []),
                "--v=0",
            ],
            api_log,
        )
        processes.append(apiserver)
        ca_file = certs / "apiserver.crt"
        _wait_ready(server, token, ca_file, apiserver, api_log)

        kubeconfig = workdir / "kubeconfig"
        kubeconfig.write_text(yaml.safe_dump(_kubeconfig(server, ca_file, token)))
        kubeconfig.chmod(0o600)
        env = {
            **os.environ,
            "KUBECONFIG": str(kubeconfig),
            "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}",
            # Keep helm's caches and config out of the user's home.
            "HELM_CACHE_HOME": str(workdir / "helm" / "cache"),
            "HELM_CONFIG_HOME": str(workdir / "helm" / "config"),
            "HELM_DATA_HOME": str(workdir / "helm" / "data"),
        }
        plane = ControlPlane(
            kubeconfig=kubeconfig,
            server=server,
            env=env,
            jobset_crd=JOBSET_CRD,
            workdir=workdir,
            token=token,
            ca_file=ca_file,
            service_account_key=sa_key,
        )
        plane.apply_crd(JOBSET_CRD)
        yield plane
    finally:
        for process in reversed(processes):
            stop(process)
