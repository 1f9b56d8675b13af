"""The pod runner: a test double of the kubelet and the container runtime, for the fake
(kwok) nodes of the e2e cluster. It runs as its own process, as root:

    python tests/e2e/podrunner.py --config RUNNER.json

For every pod the scheduler binds to one of its nodes it does what a kubelet would, with a
local process instead of a container:
- a sandbox: the pod's own network namespace, a veth on the cluster bridge and an address,
  its hostname, and an /etc/hosts that holds its own name and, standing in for cluster DNS,
  `<hostname>.<subdomain>` of every running pod of its namespace (a JobSet's headless
  service), kept current as pods come and go;
- its volumes: an `emptyDir` is a per-pod directory; the projected ServiceAccount volume
  holds a token from the TokenRequest API bound to the pod, the cluster CA and the
  namespace, mounted where the in-cluster client looks for it; ConfigMaps and Secrets are
  read from the API;
- its container: the image's entrypoint, env and user come from the repository's own
  Dockerfile for that image (Dockerfile.operator, Dockerfile.worker), with the image's
  /opt/layertap being this checkout's virtualenv; the container's env is resolved as a
  kubelet does (values, downward-API fieldRefs, resourceFieldRefs, ConfigMap and Secret
  keys) plus KUBERNETES_SERVICE_HOST/PORT; it runs as the pod's user, in a private /dev,
  /run and /tmp, with the termination message file at its path;
- status: Running with the pod IP once the process runs, then Succeeded or Failed with the
  exit code and the termination message (or the log tail, with FallbackToLogsOnError);
  `restartPolicy: Always` restarts the process;
- deletion: SIGTERM to the process group, SIGKILL after the grace period, then the pod is
  deleted with grace 0, as a kubelet does once its containers are gone.

What stands in for GKE itself, named so: a node's accelerators (`google.com/tpu`,
`nvidia.com/gpu` limits) are simulated by as many CPU devices (JAX_PLATFORMS=cpu,
`--xla_force_host_platform_device_count`, and LAYERTAP_SIMULATED_ACCELERATOR naming the
platform stood in for), except on a node annotated as broken, whose pods keep the
JobSet's JAX_PLATFORMS and find no accelerator at all; GCS is the emulator (STORAGE_EMULATOR_HOST,
standing in for Workload Identity's access); the API server is reached at its own address
(there is no kube-proxy for the `kubernetes` Service's cluster IP). Readiness and liveness
probes are not run: a started container counts as ready.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import ipaddress
import json
import logging
import os
import re
import shlex
import shutil
import signal
import subprocess
import threading
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import kubernetes
from kubernetes.client.exceptions import ApiException

log = logging.getLogger("podrunner")
REPO = Path(__file__).resolve().parents[2]
VENV = REPO / ".venv"
SA_MOUNT = "/var/run/secrets/kubernetes.io/serviceaccount"
ACCELERATOR_RESOURCES = ("google.com/tpu", "nvidia.com/gpu")
IMAGES = {"layertap-operator": REPO / "Dockerfile.operator", "layertap-worker": REPO / "Dockerfile.worker"}
DEVICES = ("null", "zero", "full", "random", "urandom", "tty")
BROKEN_ACCELERATOR_ANNOTATION = "layertap.dev/simulate-broken-accelerator"  # simulated_gke.py sets it on some nodes


@dataclass(frozen=True)
class Config:
    """What the cluster tells the runner (a JSON file, see simulated_gke.py)."""

    kubeconfig: str
    workdir: str
    bridge: str  # the host side of every pod's veth is plugged into this bridge
    gateway: str  # the bridge's address, the pods' default route; the API server listens here
    subnet: str  # pod addresses come from here
    api_port: int
    ca_file: str  # the API server's CA, for the pods' ServiceAccount volume
    node_selector: str  # label selector of the nodes this runner serves
    extra_env: dict[str, str] = field(default_factory=dict)  # the GKE stand-ins (GCS emulator)


@dataclass(frozen=True)
class Image:
    """The runtime facts of an image, read from its Dockerfile's last stage."""

    entrypoint: list[str]
    cmd: list[str]
    env: dict[str, str]
    user: tuple[int, int] | None
    passwd: tuple[str, ...] = ()  # /etc/passwd lines of the users the image creates


def read_image(dockerfile: Path, target: str | None = None) -> Image:
    """ENTRYPOINT, CMD, ENV, USER and `useradd` users of a build target (default: the last
    stage), through the stages it builds on (exec forms only, as ours are written)."""
    text = re.sub(r"\\\n\s*", " ", dockerfile.read_text())
    stages: dict[str, tuple[str, list[str]]] = {}
    order = []
    for line in text.splitlines():
        word, _, rest = line.strip().partition(" ")
        if word == "FROM":
            base, _, name = rest.partition(" AS ")
            order.append(name.strip() or f"stage{len(order)}")
            stages[order[-1]] = (base.strip(), [])
        elif order and word and not word.startswith("#"):
            stages[order[-1]][1].append(line.strip())
    chain, stage = [], target or order[-1]
    while stage in stages:
        chain.insert(0, stage)
        stage = stages[stage][0]
    entrypoint, cmd, env, user, passwd = [], [], {}, None, []
    for line in (line for name in chain for line in stages[name][1]):
        word, _, rest = line.partition(" ")
        useradd = re.search(r"useradd .*--uid (\d+).*--home-dir (\S+) (\S+)", rest) if word == "RUN" else None
        if useradd:
            uid, home, name = useradd.groups()
            passwd.append(f"{name}:x:{uid}:{uid}::{home}:/bin/sh")
        elif word == "ENTRYPOINT":
            entrypoint = json.loads(rest)
        elif word == "CMD":
            cmd = json.loads(rest)
        elif word == "ENV":
            for key, value in (item.split("=", 1) for item in shlex.split(rest)):
                env[key] = value.replace("$PATH", "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin")
        elif word == "USER":
            uid, _, gid = rest.strip().partition(":")
            user = (int(uid), int(gid or uid))
    return Image(entrypoint, cmd, env, user, tuple(passwd))


def interpreter_mounts() -> list[str]:
    """The virtualenv's Python installation, reachable by the pod's (non-root) user: where it
    lies under a directory others may not enter (pyenv under /root), that directory is
    covered by a tmpfs holding just the installation, at the same path."""
    home = Path(os.path.realpath(VENV / "bin" / "python")).parents[1]  # e.g. /root/.pyenv/versions/3.11.7
    closed = next((d for d in reversed(home.parents) if d != Path("/") and not os.stat(d).st_mode & 0o001), None)
    if closed is None:
        return []
    return [
        f"mkdir /run/.python && mount --bind {home} /run/.python",
        f"mount -t tmpfs -o mode=755 tmpfs {closed}",
        f"mkdir -p {home} && mount --bind /run/.python {home} && umount /run/.python && rmdir /run/.python",
    ]


def image_for(name: str) -> Image:
    repository = name.rsplit("/", 1)[-1].split(":")[0].split("@")[0]
    if repository not in IMAGES:
        raise PodError("ErrImagePull", f"the pod runner knows the images {sorted(IMAGES)}, not {name}")
    return read_image(IMAGES[repository])


class PodError(Exception):
    """A pod that cannot be started; reason as a kubelet would give it."""

    def __init__(self, reason: str, message: str):
        super().__init__(message)
        self.reason, self.message = reason, message


def now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass
class Sandbox:
    netns: str
    veth: str
    ip: str
    directory: Path


@dataclass
class RunningPod:
    uid: str
    namespace: str
    name: str
    hostname: str
    subdomain: str | None
    sandbox: Sandbox
    restart_policy: str
    process: subprocess.Popen | None = None
    started: str = ""
    restarts: int = 0
    stopping: bool = False
    finished: threading.Event = field(default_factory=threading.Event)


class PodRunner:
    def __init__(self, config: Config) -> None:
        self.config = config
        client = kubernetes.config.new_client_from_config(config_file=config.kubeconfig)
        self.api = kubernetes.client.CoreV1Api(client)
        self.workdir = Path(config.workdir)
        self.pods: dict[str, RunningPod] = {}
        self.lock = threading.RLock()
        network = ipaddress.ip_network(config.subnet)
        self.free_ips = [str(ip) for ip in list(network.hosts())[256:]]  # .0.x is the bridge's
        self.nodes: dict[str, dict] = {}
        self.stopping = False

    # -- the loop --------------------------------------------------------------------------

    def run(self) -> None:
        while not self.stopping:
            try:
                self.refresh_nodes()
                pods = self.api.list_pod_for_all_namespaces(field_selector="spec.nodeName!=")
                for pod in pods.items:
                    self.reconcile(pod)
                watch = kubernetes.watch.Watch()
                stream = watch.stream(
                    self.api.list_pod_for_all_namespaces,
                    field_selector="spec.nodeName!=",
                    resource_version=pods.metadata.resource_version,
                    timeout_seconds=60,
                )
                for event in stream:
                    if self.stopping:
                        break
                    if event["type"] in ("ADDED", "MODIFIED"):
                        self.reconcile(event["object"])
            except Exception:
                if not self.stopping:
                    log.exception("watch failed; restarting it")
                    time.sleep(1)

    def refresh_nodes(self) -> None:
        nodes = self.api.list_node(label_selector=self.config.node_selector).items
        self.nodes = {node.metadata.name: node for node in nodes}

    def reconcile(self, pod) -> None:
        node = pod.spec.node_name
        if node not in self.nodes:
            self.refresh_nodes()
            if node not in self.nodes:
                return
        uid = pod.metadata.uid
        with self.lock:
            known = self.pods.get(uid)
            if pod.metadata.deletion_timestamp is not None:
                if known is None or not known.stopping:
                    if known is not None:
                        known.stopping = True
                    threading.Thread(target=self.delete, args=(pod, known), daemon=True).start()
                return
            if known is None and pod.status.phase not in ("Succeeded", "Failed"):
                placeholder = RunningPod(uid, pod.metadata.namespace, pod.metadata.name, "", None, None, "Never")
                self.pods[uid] = placeholder
                threading.Thread(target=self.start, args=(pod, placeholder), daemon=True).start()

    # -- starting ---------------------------------------------------------------------------

    def start(self, pod, running: RunningPod) -> None:
        try:
            self._start(pod, running)
        except PodError as error:
            log.warning("%s/%s: %s: %s", running.namespace, running.name, error.reason, error.message)
            self.patch_status(running, self.waiting_status(pod, error.reason, error.message))
        except Exception as error:
            log.exception("%s/%s could not start", running.namespace, running.name)
            self.patch_status(running, self.waiting_status(pod, "RunContainerError", str(error)))

    def _start(self, pod, running: RunningPod) -> None:
        spec = pod.spec
        if len(spec.containers) != 1 or spec.init_containers:
            raise PodError("CreateContainerConfigError", "the pod runner runs pods of exactly one container")
        container = spec.containers[0]
        image = image_for(container.image)
        with self.lock:
            ip = self.free_ips.pop(0)
        directory = self.workdir / "pods" / f"{pod.metadata.namespace}_{pod.metadata.name}_{pod.metadata.uid[:8]}"
        directory.mkdir(parents=True)
        sandbox = Sandbox(f"lt-{pod.metadata.uid[:8]}", f"ltv{pod.metadata.uid[:8]}", ip, directory)
        running.hostname = spec.hostname or pod.metadata.name
        running.subdomain = spec.subdomain
        running.sandbox = sandbox
        running.restart_policy = spec.restart_policy or "Always"
        self.make_network(sandbox)
        uid, gid, groups = self.identity(pod, container, image)
        mounts = self.volumes(pod, container, directory, uid, gid)
        env = self.environment(pod, container, image, ip, self.nodes[spec.node_name])
        argv = (container.command or image.entrypoint) + (
            container.args if container.args is not None else ([] if container.command else image.cmd)
        )
        host_passwd = Path("/etc/passwd").read_text()
        (directory / "passwd").write_text(host_passwd.rstrip("\n") + "".join(f"\n{u}" for u in image.passwd) + "\n")
        script = self.setup_script(pod, container, sandbox, mounts, uid, gid, groups, env, argv)
        (directory / "setup.sh").write_text(script)
        with self.lock:
            self.write_hosts_files()
            if running.stopping:
                return
            self.launch(pod, running)

    def make_network(self, sandbox: Sandbox) -> None:
        prefix = ipaddress.ip_network(self.config.subnet).prefixlen
        # Noted first, so that whoever cleans up after us finds it (simulated_gke.py).
        (self.workdir / "netns").mkdir(parents=True, exist_ok=True)
        (self.workdir / "netns" / sandbox.netns).touch()
        commands = [
            ["ip", "netns", "add", sandbox.netns],
            ["ip", "link", "add", sandbox.veth, "type", "veth", "peer", "name", "eth0", "netns", sandbox.netns],
            ["ip", "link", "set", sandbox.veth, "master", self.config.bridge, "up"],
            ["ip", "-n", sandbox.netns, "addr", "add", f"{sandbox.ip}/{prefix}", "dev", "eth0"],
            ["ip", "-n", sandbox.netns, "link", "set", "eth0", "up"],
            ["ip", "-n", sandbox.netns, "link", "set", "lo", "up"],
            ["ip", "-n", sandbox.netns, "route", "add", "default", "via", self.config.gateway],
        ]
        for command in commands:
            subprocess.run(command, check=True, capture_output=True)

    def identity(self, pod, container, image: Image) -> tuple[int, int, list[int]]:
        pod_context = pod.spec.security_context
        context = container.security_context
        uid = next((c.run_as_user for c in (context, pod_context) if c and c.run_as_user is not None), None)
        gid = next((c.run_as_group for c in (context, pod_context) if c and c.run_as_group is not None), None)
        if uid is None:
            uid = image.user[0] if image.user else 0
        if gid is None:
            gid = image.user[1] if image.user else 0
        non_root = next(
            (c.run_as_non_root for c in (context, pod_context) if c and c.run_as_non_root is not None), False
        )
        if non_root and uid == 0:
            raise PodError("CreateContainerConfigError", "container has runAsNonRoot and image will run as root")
        fs_group = pod_context.fs_group if pod_context else None
        return uid, gid, [fs_group] if fs_group is not None else []

    def volumes(self, pod, container, directory: Path, uid: int, gid: int) -> list[tuple[Path, str, bool]]:
        """(host path, mount path, read-only) of every volume mount, the files written."""
        fs_group = pod.spec.security_context.fs_group if pod.spec.security_context else None
        owner = (uid, fs_group if fs_group is not None else gid)
        by_name = {volume.name: volume for volume in pod.spec.volumes or []}
        mounts = []
        for mount in container.volume_mounts or []:
            volume = by_name.get(mount.name)
            if volume is None:
                raise PodError("CreateContainerConfigError", f"no volume {mount.name}")
            path = directory / "volumes" / mount.name
            if not path.exists():
                path.mkdir(parents=True)
                if volume.empty_dir is not None:
                    os.chown(path, *owner)
                elif volume.projected is not None:
                    self.projected(pod, volume.projected, path)
                elif volume.config_map is not None:
                    data = self.api.read_namespaced_config_map(volume.config_map.name, pod.metadata.namespace).data
                    for key, value in (data or {}).items():
                        (path / key).write_text(value)
                elif volume.secret is not None:
                    data = self.api.read_namespaced_secret(volume.secret.secret_name, pod.metadata.namespace).data
                    for key, value in (data or {}).items():
                        (path / key).write_bytes(base64.b64decode(value))
                else:
                    raise PodError("CreateContainerConfigError", f"volume {mount.name}: a kind the pod runner lacks")
                if volume.empty_dir is None:
                    for item in path.iterdir():
                        item.chmod(0o644)
            source = path / mount.sub_path if mount.sub_path else path
            mounts.append((source, mount.mount_path, bool(mount.read_only)))
        return mounts

    def projected(self, pod, projected, path: Path) -> None:
        """The ServiceAccount volume: a bound token, the cluster CA, the namespace."""
        for source in projected.sources:
            if source.service_account_token is not None:
                request = kubernetes.client.AuthenticationV1TokenRequest(
                    spec=kubernetes.client.V1TokenRequestSpec(
                        audiences=[source.service_account_token.audience]
                        if source.service_account_token.audience
                        else [],
                        expiration_seconds=source.service_account_token.expiration_seconds or 3607,
                        bound_object_ref=kubernetes.client.V1BoundObjectReference(
                            kind="Pod", api_version="v1", name=pod.metadata.name, uid=pod.metadata.uid
                        ),
                    )
                )
                token = self.api.create_namespaced_service_account_token(
                    pod.spec.service_account_name or "default", pod.metadata.namespace, request
                )
                (path / source.service_account_token.path).write_text(token.status.token)
            elif source.config_map is not None:  # kube-root-ca.crt
                for item in source.config_map.items or []:
                    shutil.copy(self.config.ca_file, path / item.path)
            elif source.downward_api is not None:
                for item in source.downward_api.items or []:
                    (path / item.path).write_text(self.field(pod, item.field_ref.field_path))

    def field(self, pod, path: str) -> str:
        """A downward-API fieldRef, as a kubelet resolves it."""
        match = re.fullmatch(r"metadata\.(annotations|labels)\['([^']+)'\]", path)
        if match:
            values = pod.metadata.annotations if match.group(1) == "annotations" else pod.metadata.labels
            return (values or {}).get(match.group(2), "")
        simple = {
            "metadata.name": pod.metadata.name,
            "metadata.namespace": pod.metadata.namespace,
            "metadata.uid": pod.metadata.uid,
            "spec.nodeName": pod.spec.node_name,
            "spec.serviceAccountName": pod.spec.service_account_name,
            "status.hostIP": self.config.gateway,
            "status.podIP": self.pods[pod.metadata.uid].sandbox.ip,
        }
        if path not in simple:
            raise PodError("CreateContainerConfigError", f"fieldRef {path}: not supported by the pod runner")
        return simple[path] or ""

    def environment(self, pod, container, image: Image, ip: str, node) -> dict[str, str]:
        env = dict(image.env)
        env.update(
            {
                "HOSTNAME": pod.spec.hostname or pod.metadata.name,
                "KUBERNETES_SERVICE_HOST": self.config.gateway,
                "KUBERNETES_SERVICE_PORT": str(self.config.api_port),
                "KUBERNETES_SERVICE_PORT_HTTPS": str(self.config.api_port),
                "KUBERNETES_PORT": f"tcp://{self.config.gateway}:{self.config.api_port}",
            }
        )
        limits = (container.resources.limits or {}) if container.resources else {}
        for var in container.env or []:
            if var.value is not None or var.value_from is None:
                env[var.name] = var.value or ""
            elif var.value_from.field_ref is not None:
                env[var.name] = self.field(pod, var.value_from.field_ref.field_path)
            elif var.value_from.resource_field_ref is not None:
                env[var.name] = str(limits.get(var.value_from.resource_field_ref.resource.removeprefix("limits."), ""))
            elif var.value_from.config_map_key_ref is not None:
                ref = var.value_from.config_map_key_ref
                env[var.name] = self.api.read_namespaced_config_map(ref.name, pod.metadata.namespace).data[ref.key]
            elif var.value_from.secret_key_ref is not None:
                ref = var.value_from.secret_key_ref
                data = self.api.read_namespaced_secret(ref.name, pod.metadata.namespace).data
                env[var.name] = base64.b64decode(data[ref.key]).decode()
        # GKE stand-ins: accelerators simulated by CPU devices, GCS by the emulator.
        chips = next((int(limits[name]) for name in ACCELERATOR_RESOURCES if name in limits), 0)
        broken = (node.metadata.annotations or {}).get(BROKEN_ACCELERATOR_ANNOTATION) == "true"
        if chips and not broken:
            env["LAYERTAP_SIMULATED_ACCELERATOR"] = "tpu" if "google.com/tpu" in limits else "gpu"
            env["JAX_PLATFORMS"] = "cpu"
            env["XLA_FLAGS"] = f"--xla_force_host_platform_device_count={chips}"
        env.update(self.config.extra_env)
        return env

    def setup_script(self, pod, container, sandbox: Sandbox, mounts, uid, gid, groups, env, argv) -> str:
        """The shell commands that turn the network namespace into the pod's sandbox and exec
        the container's process (run as root inside `ip netns exec`, which gives a private
        mount namespace)."""
        termination = container.termination_message_path or "/dev/termination-log"
        (sandbox.directory / "termination-log").touch()
        os.chown(sandbox.directory / "termination-log", uid, gid)
        pod_dir = "/run/.pod"  # the pod's directory, where no volume mount can hide it
        lines = [
            "set -e",
            f"hostname {shlex.quote(pod.spec.hostname or pod.metadata.name)}",
            f"mount --bind {sandbox.directory}/hosts /etc/hosts",
            f"mount --bind {sandbox.directory}/passwd /etc/passwd",  # with the image's users
            # A private /run (where the ServiceAccount volume goes) and /opt (where the image's
            # virtualenv goes), so that nothing is created on the host's filesystem.
            "mount -t tmpfs -o mode=755 tmpfs /run",
            f"mkdir {pod_dir} && mount --bind {sandbox.directory} {pod_dir}",
            "mount -t tmpfs -o mode=755 tmpfs /opt",
            f"mkdir -p /opt/layertap && mount --bind {VENV} /opt/layertap",
            f"mkdir /run/.repo && mount --bind {REPO} /run/.repo",  # for a volume that hides the checkout
            *interpreter_mounts(),
            # A private /dev with the usual devices and the termination message file.
            "mkdir -p /run/hostdev && mount --bind /dev /run/hostdev",
            "mount -t tmpfs -o mode=755 tmpfs /dev",
            *(f"touch /dev/{d} && mount --bind /run/hostdev/{d} /dev/{d}" for d in DEVICES),
            "mkdir -p /dev/shm /dev/pts && mount -t tmpfs -o mode=1777 tmpfs /dev/shm",
            "ln -s /proc/self/fd /dev/fd && ln -s /proc/self/fd/0 /dev/stdin",
            "ln -s /proc/self/fd/1 /dev/stdout && ln -s /proc/self/fd/2 /dev/stderr",
            "umount /run/hostdev && rmdir /run/hostdev",
            f"mkdir -p {shlex.quote(str(Path(termination).parent))} && touch {shlex.quote(termination)}",
            f"mount --bind {pod_dir}/termination-log {shlex.quote(termination)}",
        ]
        for source, target, read_only in mounts:
            source = f"{pod_dir}/{source.relative_to(sandbox.directory)}"
            lines.append(f"mkdir -p {shlex.quote(target)} && mount --bind {shlex.quote(source)} {shlex.quote(target)}")
            if read_only:
                lines.append(f"mount -o remount,bind,ro {shlex.quote(target)}")
        if any(REPO.is_relative_to(target) for _, target, _ in mounts):
            # A volume (the /tmp emptyDir, for a checkout under /tmp) hides the checkout, where
            # the virtualenv's scripts (their shebangs) and the editable install point: show it
            # there again, as an image holds its installation.
            lines.append(f"mkdir -p {shlex.quote(str(REPO))} && mount --bind /run/.repo {shlex.quote(str(REPO))}")
        privileges = ["setpriv", f"--reuid={uid}", f"--regid={gid}"]
        privileges += [f"--groups={','.join(map(str, groups))}"] if groups else ["--clear-groups"]
        context = container.security_context
        if context is not None and context.allow_privilege_escalation is False:
            privileges.append("--no-new-privs")
        workdir = "/tmp" if any(target == "/tmp" for _, target, _ in mounts) else "/"
        exported = " ".join(f"{key}={shlex.quote(value)}" for key, value in sorted(env.items()))
        lines.append(f"cd {workdir}")
        lines.append(f"exec {' '.join(privileges)} env -i {exported} {' '.join(shlex.quote(a) for a in argv)}")
        return "\n".join(lines) + "\n"

    def launch(self, pod, running: RunningPod) -> None:
        sandbox = running.sandbox
        # stays open as the container's stdout for the process's whole life, past this call
        output = open(sandbox.directory / "container.log", "ab")  # noqa: SIM115
        running.process = subprocess.Popen(
            ["ip", "netns", "exec", sandbox.netns, "unshare", "--uts", "sh", str(sandbox.directory / "setup.sh")],
            stdout=output,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        running.started = now()
        (sandbox.directory / "pid").write_text(str(running.process.pid))
        log.info("%s/%s: started pid %d at %s", running.namespace, running.name, running.process.pid, sandbox.ip)
        self.patch_status(running, self.running_status(pod, running))
        threading.Thread(target=self.wait, args=(pod, running), daemon=True).start()

    # -- running and stopping -------------------------------------------------------------

    def wait(self, pod, running: RunningPod) -> None:
        code = running.process.wait()
        exit_code = 128 - code if code < 0 else code  # a signal: 128 + its number, as runtimes report
        finished = now()
        with self.lock:
            stopping = running.stopping
        if running.restart_policy == "Always" and not stopping and not self.stopping:
            running.restarts += 1
            log.info("%s/%s exited with %d; restarting", running.namespace, running.name, exit_code)
            time.sleep(min(2**running.restarts, 30))  # the kubelet's crash-loop back-off, shortened
            with self.lock:
                if not running.stopping:
                    self.launch(pod, running)
                    return
        message = self.termination_message(pod, running, exit_code)
        log.info("%s/%s exited with %d", running.namespace, running.name, exit_code)
        # The terminal status, also of a pod being deleted (as a kubelet writes it before the pod
        # goes: the Job controller's pod failure policy reads it); a runner going away leaves
        # its pods as they were.
        if not self.stopping:
            self.patch_status(running, self.terminated_status(pod, running, exit_code, finished, message))
        self.teardown(running)
        running.finished.set()

    def termination_message(self, pod, running: RunningPod, exit_code: int) -> str:
        container = pod.spec.containers[0]
        message = (running.sandbox.directory / "termination-log").read_text(errors="replace")[-4096:]
        if not message and exit_code != 0 and container.termination_message_policy == "FallbackToLogsOnError":
            lines = (running.sandbox.directory / "container.log").read_text(errors="replace").splitlines()
            message = "\n".join(lines[-80:])[-2048:]
        return message

    def delete(self, pod, running: RunningPod | None) -> None:
        """A pod marked for deletion: stop its process (SIGTERM, SIGKILL after the grace
        period), then remove the pod object, as a kubelet does."""
        if running is not None:
            deadline = time.monotonic() + 60
            while running.process is None and time.monotonic() < deadline and running.sandbox is not None:
                time.sleep(0.1)  # still starting
            process = running.process
            if process is not None and process.poll() is None:
                grace = pod.metadata.deletion_grace_period_seconds
                grace = 30 if grace is None else grace
                try:
                    os.killpg(process.pid, signal.SIGTERM)
                    process.wait(timeout=grace)
                except (subprocess.TimeoutExpired, ProcessLookupError):
                    with contextlib.suppress(ProcessLookupError):
                        os.killpg(process.pid, signal.SIGKILL)
                running.finished.wait(timeout=30)
            elif process is None:
                self.teardown(running)
        try:
            self.api.delete_namespaced_pod(
                pod.metadata.name,
                pod.metadata.namespace,
                grace_period_seconds=0,
                body=kubernetes.client.V1DeleteOptions(
                    grace_period_seconds=0, preconditions=kubernetes.client.V1Preconditions(uid=pod.metadata.uid)
                ),
            )
        except ApiException as error:
            if error.status not in (404, 409):
                log.warning("deleting %s/%s: %s", pod.metadata.namespace, pod.metadata.name, error.reason)
        with self.lock:
            self.pods.pop(pod.metadata.uid, None)

    def teardown(self, running: RunningPod) -> None:
        sandbox = running.sandbox
        if sandbox is None:
            return
        subprocess.run(["ip", "link", "del", sandbox.veth], capture_output=True)
        subprocess.run(["ip", "netns", "del", sandbox.netns], capture_output=True)
        (self.workdir / "netns" / sandbox.netns).unlink(missing_ok=True)
        with self.lock:
            if sandbox.ip not in self.free_ips:
                self.free_ips.append(sandbox.ip)
            running.sandbox = Sandbox(sandbox.netns, sandbox.veth, "", sandbox.directory)
            self.write_hosts_files()

    def stop_all(self) -> None:
        self.stopping = True
        with self.lock:
            pods = list(self.pods.values())
        for running in pods:
            if running.process is not None and running.process.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(running.process.pid, signal.SIGKILL)
        for running in pods:
            if running.process is not None:
                running.process.wait()
            running.finished.wait(timeout=10)
            self.teardown(running)

    # -- /etc/hosts, the stand-in for cluster DNS ---------------------------------------------

    def write_hosts_files(self) -> None:
        live = [p for p in self.pods.values() if p.sandbox is not None and p.sandbox.ip]
        for pod in live:
            lines = ["127.0.0.1\tlocalhost", "::1\tlocalhost ip6-localhost ip6-loopback"]
            own = [pod.hostname]
            if pod.subdomain:  # its own name in the headless service, as cluster DNS would answer
                own[:0] = [
                    f"{pod.hostname}.{pod.subdomain}.{pod.namespace}.svc.cluster.local",
                    f"{pod.hostname}.{pod.subdomain}",
                ]
            lines.append(f"{pod.sandbox.ip}\t{' '.join(own)}")
            for other in live:
                if other is not pod and other.namespace == pod.namespace and other.subdomain:
                    fqdn = f"{other.hostname}.{other.subdomain}.{other.namespace}.svc.cluster.local"
                    lines.append(f"{other.sandbox.ip}\t{fqdn} {other.hostname}.{other.subdomain}")
            path = pod.sandbox.directory / "hosts"
            # Rewritten in place: the pod's /etc/hosts is a bind mount of this very file.
            with open(path, "a+") as hosts:
                hosts.seek(0)
                hosts.truncate()
                hosts.write("\n".join(lines) + "\n")

    # -- status ------------------------------------------------------------------------------

    def patch_status(self, running: RunningPod, status: dict) -> None:
        try:
            self.api.patch_namespaced_pod_status(running.name, running.namespace, {"status": status})
        except ApiException as error:
            if error.status != 404:
                log.warning("status of %s/%s: %s %s", running.namespace, running.name, error.status, error.reason)

    @staticmethod
    def conditions(ready: bool, reason: str = "") -> list[dict]:
        stamp = now()
        out = [
            {"type": "PodReadyToStartContainers", "status": "True", "lastTransitionTime": stamp},
            {"type": "Initialized", "status": "True", "lastTransitionTime": stamp},
        ]
        for kind in ("ContainersReady", "Ready"):
            condition = {"type": kind, "status": "True" if ready else "False", "lastTransitionTime": stamp}
            if reason:
                condition["reason"] = reason
            out.append(condition)
        return out

    def running_status(self, pod, running: RunningPod) -> dict:
        container = pod.spec.containers[0]
        return {
            "phase": "Running",
            "hostIP": self.config.gateway,
            "hostIPs": [{"ip": self.config.gateway}],
            "podIP": running.sandbox.ip,
            "podIPs": [{"ip": running.sandbox.ip}],
            "startTime": pod.status.start_time.strftime("%Y-%m-%dT%H:%M:%SZ")
            if pod.status.start_time
            else running.started,
            "conditions": self.conditions(True),
            "containerStatuses": [
                {
                    "name": container.name,
                    "image": container.image,
                    "imageID": "",
                    "ready": True,
                    "started": True,
                    "restartCount": running.restarts,
                    "state": {"running": {"startedAt": running.started}},
                }
            ],
        }

    def terminated_status(self, pod, running: RunningPod, exit_code: int, finished: str, message: str) -> dict:
        container = pod.spec.containers[0]
        terminated = {
            "exitCode": exit_code,
            "reason": "Completed" if exit_code == 0 else "Error",
            "startedAt": running.started,
            "finishedAt": finished,
        }
        if message:
            terminated["message"] = message
        return {
            "phase": "Succeeded" if exit_code == 0 else "Failed",
            "conditions": self.conditions(False, "PodCompleted" if exit_code == 0 else "PodFailed"),
            "containerStatuses": [
                {
                    "name": container.name,
                    "image": container.image,
                    "imageID": "",
                    "ready": False,
                    "started": False,
                    "restartCount": running.restarts,
                    "state": {"terminated": terminated},
                }
            ],
        }

    def waiting_status(self, pod, reason: str, message: str) -> dict:
        container = pod.spec.containers[0]
        return {
            "phase": "Pending",
            "containerStatuses": [
                {
                    "name": container.name,
                    "image": container.image,
                    "imageID": "",
                    "ready": False,
                    "restartCount": 0,
                    "state": {"waiting": {"reason": reason, "message": message}},
                }
            ],
        }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", required=True, help="the runner's JSON configuration (see Config)")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    config = Config(**json.loads(Path(args.config).read_text()))
    runner = PodRunner(config)

    def on_signal(*_):
        runner.stop_all()
        os._exit(0)

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    runner.run()


if __name__ == "__main__":
    main()
