"""The package boundaries, read from the source: who may import whom.

- the worker (`worker/layertap`) never imports the operator or kopf: the worker image has neither;
- the operator never imports the worker or JAX: the operator image has neither;
- `api/` imports neither: both sides share it (the operator <-> worker contract lives there);
- plain-text datasets (`layertap.data`) never import the ARC pipeline (`layertap.arc`);
- the shared runtime (`layertap.run`) serves both commands and imports neither; `extract` and
  `predict` never import each other (what both need lives in `run`);
- the model and the activation store know nothing of runs: neither imports `run`, `extract`
  or `predict`;
- which decoder family a model is gets decided in `layertap.model` only (its FAMILIES table):
  no code elsewhere compares a `model_type` or a family's name.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def imports(path: Path) -> set[str]:
    """Every module a file imports (absolute names; `from a import b` counts as a and a.b)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.add(node.module)
            found.update(f"{node.module}.{alias.name}" for alias in node.names)
    return found


def offenders(folder: str, forbidden: tuple[str, ...]) -> dict[str, list[str]]:
    out = {}
    for path in sorted((ROOT / folder).rglob("*.py")):
        bad = sorted(name for name in imports(path) if any(name == f or name.startswith(f"{f}.") for f in forbidden))
        if bad:
            out[str(path.relative_to(ROOT))] = bad
    return out


@pytest.mark.parametrize(
    "folder, forbidden",
    [
        ("worker/layertap", ("layertap_operator", "kopf")),
        ("operator/layertap_operator", ("layertap", "jax", "flax")),
        ("api/layertap_api", ("layertap", "layertap_operator", "kopf", "kubernetes", "jax")),
        ("worker/layertap/data", ("layertap.arc",)),
        ("worker/layertap/run", ("layertap.extract", "layertap.predict")),
        ("worker/layertap/extract", ("layertap.predict",)),
        ("worker/layertap/predict", ("layertap.extract",)),
        ("worker/layertap/model", ("layertap.run", "layertap.extract", "layertap.predict", "layertap.store")),
        ("worker/layertap/store", ("layertap.run", "layertap.extract", "layertap.predict")),
    ],
)
def test_no_forbidden_imports(folder, forbidden):
    assert offenders(folder, forbidden) == {}


def test_the_check_sees_imports():
    """The graph check itself finds an import when there is one."""
    assert "layertap_api.contract" in imports(ROOT / "worker/layertap/environment.py")
    assert offenders("worker/layertap", ("layertap_api",))  # the worker does use the shared contract


FAMILY_NAMES = {"qwen2", "qwen3", "llama"}


def family_switches(path: Path) -> list[int]:
    """Lines that compare a model_type, or compare against a family's name."""
    lines = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Compare | ast.MatchValue):
            parts = [node.left, *node.comparators] if isinstance(node, ast.Compare) else [node.value]
            for part in parts:
                if (isinstance(part, ast.Attribute) and part.attr == "model_type") or (
                    isinstance(part, ast.Constant) and part.value in FAMILY_NAMES
                ):
                    lines.add(node.lineno)
    return sorted(lines)


def test_no_family_switch_outside_the_model() -> None:
    found = {
        str(path.relative_to(ROOT)): lines
        for folder in ("worker/layertap", "benchmarks")
        for path in sorted((ROOT / folder).rglob("*.py"))
        if not path.is_relative_to(ROOT / "worker/layertap/model")
        if (lines := family_switches(path))
    }
    assert found == {}


def test_the_check_sees_a_family_switch(tmp_path) -> None:
    source = tmp_path / "switch.py"
    source.write_text("def f(config):\n    return 1 if config.model_type == 'qwen3' else 0\n")
    assert family_switches(source) == [2]
