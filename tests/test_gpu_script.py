"""benchmarks/gpu_run.sh, the one script a lent GPU runs, run here at toy sizes (`smoke`):
device time is minutes, so a step that breaks must break here first. It times nothing; it
checks that every step ran and wrote its table."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]

pytestmark = pytest.mark.slow


def table_rows(text: str) -> list[list[str]]:
    """The body rows of the Markdown tables in `text`, as cells (no headers, no rules)."""
    lines = text.splitlines()
    rules = {i for i, line in enumerate(lines) if line.startswith("| ---")}
    body = [line for i, line in enumerate(lines) if line.startswith("| ") and not {i, i + 1} & rules]
    return [[cell.strip() for cell in line.strip("|").split("|")] for line in body]


@pytest.fixture(scope="module")
def smoke(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("gpu-run") / "out"
    env = {**os.environ, "PYTHON": sys.executable, "JAX_PLATFORMS": "cpu"}
    done = subprocess.run(
        ["bash", str(REPO / "benchmarks" / "gpu_run.sh"), "smoke", str(out)],
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert done.returncode == 0, done.stderr[-4000:]
    return out


def test_no_step_failed(smoke):
    log = (smoke / "log.txt").read_text()
    failed = [line for line in log.splitlines() if " failed (" in line]
    assert failed == [], log[-4000:]


def test_the_forward_times_both_projections_and_profiles_them(smoke):
    text = (smoke / "gpu_forward.md").read_text()
    rows = {(row[0], row[2]) for row in table_rows(text) if row[0] in ("bfloat16", "float32")}
    assert rows == {("bfloat16", "separate"), ("bfloat16", "fused"), ("float32", "separate")}
    for variant in ("separate", "fused"):
        assert f"projections {variant}\n" in text  # trace_summary.py's section of the profile
    assert "ms of kernels per step" in text


def test_the_flag_runs_name_their_flags(smoke):
    text = (smoke / "gpu_forward_flags.md").read_text()
    for flag in ("--xla_gpu_enable_latency_hiding_scheduler=true", "--xla_gpu_enable_triton_gemm=false"):
        assert f"XLA_FLAGS='{flag}'" in text
    assert sum(row[0] == "bfloat16" for row in table_rows(text)) == 4


def test_the_numerics_give_a_verdict_per_site_and_layer(smoke):
    text = (smoke / "gpu_numerics.md").read_text()
    sites = {(row[0], row[1]) for row in table_rows(text)}
    assert sites == {(site, layer) for site in ("resid_post", "attn_out", "mlp_out") for layer in ("0", "1")}
    assert "the rule holds" in text or "the rule FAILS" in text


def test_extraction_reports_every_position_mode_against_its_goal(smoke):
    text = (smoke / "gpu_extract.md").read_text()
    assert {row[0] for row in table_rows(text)} == {"all", "last", "mean"}
    for positions in ("all", "last", "mean"):
        assert f"positions {positions}: " in text and "of its limit" in text


def test_the_host_path_reports_both_modes(smoke):
    rows = table_rows((smoke / "bench_host_path.md").read_text())
    assert {(row[0], row[1]) for row in rows} == {("local", "all"), ("local", "last")}
