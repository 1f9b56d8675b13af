"""The tree is formatted and lint-clean by the rules in pyproject.toml ([tool.ruff])."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RUFF = [sys.executable, "-m", "ruff"]


def test_the_tree_is_formatted():
    result = subprocess.run([*RUFF, "format", "--check", "."], cwd=ROOT, capture_output=True, text=True)
    assert result.returncode == 0, f"run `ruff format .`:\n{result.stdout}{result.stderr}"


def test_the_tree_is_lint_clean():
    result = subprocess.run(
        [*RUFF, "check", "--output-format", "concise", "."], cwd=ROOT, capture_output=True, text=True
    )
    assert result.returncode == 0, f"run `ruff check .`:\n{result.stdout}{result.stderr}"


def test_the_check_sees_a_long_line(tmp_path):
    """The rules do reject what they should (the check is not vacuous)."""
    bad = tmp_path / "bad.py"
    bad.write_text(f"x = {'1 + ' * 60}1\n")
    result = subprocess.run(
        [*RUFF, "check", "--config", str(ROOT / "pyproject.toml"), "--select", "E501", str(bad)],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 1 and "E501" in result.stdout
