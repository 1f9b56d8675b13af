"""The persistent compilation cache: a restarted worker (a fresh process with an empty /tmp,
as a new pod is) loads what the last attempt compiled instead of compiling again."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys

import numpy as np
import pytest

import layertap

from .test_stop import argv

BUCKET = "compile-cache"
PROBE = (
    "import sys, jax.monitoring as m, layertap.cli as c\n"
    "hits = []\n"
    "m.register_event_listener(lambda event, **_: hits.append(event) if event.endswith('cache_hits') else None)\n"
    "code = c.main(sys.argv[1:])\n"
    "print('cache hits:', len(hits))\n"
    "sys.exit(code)\n"
)


@pytest.fixture
def pod_tmp(tmp_path):
    """The worker's /tmp (where JAX's local cache directory lives), emptied before each run."""
    path = tmp_path / "pod-tmp"
    path.mkdir()
    return path


def run(pod_tmp, *args: str, **env: str) -> subprocess.CompletedProcess:
    """`layertap extract` in a fresh process, counting JAX's persistent-cache hits."""
    shutil.rmtree(pod_tmp)  # a new pod: nothing local survives
    pod_tmp.mkdir()
    # JAX keeps only programs that took a second or more to compile; the tiny test model's take less.
    env = {
        **os.environ,
        "JAX_PLATFORMS": "cpu",
        "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS": "0",
        "TMPDIR": str(pod_tmp),
        **env,
    }
    result = subprocess.run([sys.executable, "-c", PROBE, *args], env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    return result


def hits(result: subprocess.CompletedProcess) -> int:
    return int(result.stdout.rsplit("cache hits:", 1)[1])


def test_a_restart_loads_compiled_programs_instead_of_compiling(checkpoint, dataset, tmp_path, pod_tmp):
    first = run(pod_tmp, *argv(checkpoint, dataset, tmp_path / "first")[3:])
    entries = sorted(path.name for path in (tmp_path / "first" / ".jax-cache").iterdir())
    assert entries and hits(first) == 0
    assert "compilation cache" in first.stdout and ": 0 compiled programs found" in first.stdout

    # A new attempt of the same run, on a new pod: what it recomputes, it does not recompile.
    shutil.rmtree(tmp_path / "first" / "commits")
    second = run(pod_tmp, *argv(checkpoint, dataset, tmp_path / "first")[3:])
    assert f": {len(entries)} compiled programs found" in second.stdout
    assert hits(second) == len(entries)
    assert sorted(path.name for path in (tmp_path / "first" / ".jax-cache").iterdir()) == entries  # nothing new


def test_runs_can_share_a_cache_on_gcs(checkpoint, dataset, tmp_path, pod_tmp, gcs_emulator):
    gcs_emulator.create_bucket(BUCKET)
    cache = f"gs://{BUCKET}/jax-cache"
    gcs = {"STORAGE_EMULATOR_HOST": gcs_emulator.url}
    first = run(pod_tmp, *argv(checkpoint, dataset, tmp_path / "first")[3:], "--compilation-cache", cache, **gcs)
    second = run(pod_tmp, *argv(checkpoint, dataset, tmp_path / "second")[3:], "--compilation-cache", cache, **gcs)
    assert hits(first) == 0 and hits(second) >= 1
    assert not (tmp_path / "first" / ".jax-cache").exists()
    for layer in (1, 3):  # the loaded program computes what the compiled one did
        a = layertap.open(str(tmp_path / "first")).read_layer(layer)
        b = layertap.open(str(tmp_path / "second")).read_layer(layer)
        np.testing.assert_array_equal(
            a.activations[np.lexsort((a.position, a.sample_index))],
            b.activations[np.lexsort((b.position, b.sample_index))],
        )


def test_the_cache_can_be_turned_off(checkpoint, dataset, tmp_path, pod_tmp):
    result = run(pod_tmp, *argv(checkpoint, dataset, tmp_path / "out")[3:], "--compilation-cache", "off")
    assert not (tmp_path / "out" / ".jax-cache").exists() and "compilation cache" not in result.stdout
