"""A real Kubernetes control plane for the cluster tests: etcd + kube-apiserver on loopback
(started by tests/kube.py, which the e2e tier shares).

The binaries are built by tests/setup.d/10-controlplane.sh (from the versions pinned in
tests/controlplane/go.mod), kubectl and helm installed by tests/setup.d/20-helm.sh; all of
them land in tests/controlplane/bin/. Without them the cluster tests are skipped with the
command to run.

Fixtures:

``control_plane`` (session): a running API server with the JobSet CRD installed. It has
  - ``kubeconfig``: path of an admin kubeconfig (system:masters, token auth, TLS verified)
  - ``env``: os.environ plus KUBECONFIG and a PATH that finds our kubectl and helm first;
    pass it to any subprocess (``kopf run``, the operator) that should talk to the server
  - ``server``: the https URL; ``jobset_crd``: path of the installed JobSet CRD YAML
  - ``kubectl(*args, input=None, check=True)`` and ``helm(...)``: run the tool against
    the server and return the CompletedProcess (text mode; on failure with check=True a
    ``CommandFailed``, a CalledProcessError whose message carries stderr)
  - ``apply(manifests, namespace=None, dry_run=False)``: server-side apply of a path, a
    YAML string, a dict or a list of dicts; returns kubectl's output
  - ``get(kind, name, namespace=None) -> dict`` and ``get_list(kind, namespace=None) -> list``
  - ``kubeconfig_for(service_account, namespace, pod=None) -> Path``: a kubeconfig that acts
    as the ServiceAccount with a real token from the TokenRequest API, so code run with it is
    held to that account's RBAC; with ``pod``, the token is bound to that pod as a kubelet's
    is (the chart's worker-status admission policy reads the pod's name from it)
  - ``apply_crd(path)``: apply a CRD and wait until it is Established

``namespace`` (function): a fresh namespace for one test (namespaces are never reused).

What this control plane lacks (no kube-controller-manager, no scheduler, no kubelet, no
JobSet controller): pods never run, owner-reference garbage collection and namespace
deletion never happen, namespaces get no `default` ServiceAccount, and a JobSet's status
changes only when a test writes it through the status subresource, as the JobSet
controller would. Authorization is RBAC only, so `kubectl auth can-i --as=...` and
``kubeconfig_for`` identities are held to the roles a test installs.
"""

from __future__ import annotations

import itertools
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from kube import BIN, ControlPlane, missing_binaries, running_control_plane

_namespace_counter = itertools.count()


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    here = Path(__file__).parent
    for item in items:
        if here in item.path.parents:
            item.add_marker(pytest.mark.cluster)


@pytest.fixture(scope="session")
def control_plane() -> Iterator[ControlPlane]:
    missing = missing_binaries()
    if missing:
        pytest.skip(
            f"test control plane not built ({', '.join(missing)} missing in {BIN}): "
            "run bash tests/setup.d/10-controlplane.sh && bash tests/setup.d/20-helm.sh"
        )
    # Not under pytest's basetemp: a concurrent pytest session may prune it while we run.
    workdir = Path(tempfile.mkdtemp(prefix="layertap-controlplane-"))
    try:
        with running_control_plane(workdir) as plane:
            yield plane
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


@pytest.fixture
def namespace(control_plane: ControlPlane, request: pytest.FixtureRequest) -> str:
    """A fresh namespace; without a namespace controller a deleted one never goes away, so none is reused."""
    base = "".join(c if c.isalnum() else "-" for c in request.node.name.lower())[:40].strip("-")
    name = f"{base}-{next(_namespace_counter)}"
    control_plane.kubectl("create", "namespace", name)
    return name
