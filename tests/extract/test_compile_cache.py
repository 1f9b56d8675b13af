"""The persistent compilation cache: a restarted worker (a fresh process with an empty /tmp,
as a new pod is) loads what the last attempt compiled instead of compiling again."""

from __future__ import annotations

import shutil

import numpy as np
import pytest
from compiles import cache_hits, run_in_new_pod

import layertap
from layertap.humanize import plural

from .test_stop import argv

BUCKET = "compile-cache"


@pytest.fixture
def pod_tmp(tmp_path):
    return tmp_path / "pod-tmp"


@pytest.mark.slow
def test_a_restart_loads_compiled_programs_instead_of_compiling(checkpoint, dataset, tmp_path, pod_tmp):
    first = run_in_new_pod(pod_tmp, *argv(checkpoint, dataset, tmp_path / "first")[3:])
    entries = sorted(path.name for path in (tmp_path / "first" / ".jax-cache").iterdir())
    assert entries and cache_hits(first) == 0
    assert "compilation cache" in first.stdout and ": 0 compiled programs found" in first.stdout

    # A new attempt of the same run, on a new pod: what it recomputes, it does not recompile.
    shutil.rmtree(tmp_path / "first" / "commits")
    second = run_in_new_pod(pod_tmp, *argv(checkpoint, dataset, tmp_path / "first")[3:])
    assert f": {plural(len(entries), 'compiled program')} found" in second.stdout
    assert cache_hits(second) == len(entries)
    assert sorted(path.name for path in (tmp_path / "first" / ".jax-cache").iterdir()) == entries  # nothing new


@pytest.mark.slow
def test_runs_can_share_a_cache_on_gcs(checkpoint, dataset, tmp_path, pod_tmp, gcs_emulator):
    gcs_emulator.create_bucket(BUCKET)
    cache = f"gs://{BUCKET}/jax-cache"
    gcs = {"STORAGE_EMULATOR_HOST": gcs_emulator.url}
    first = run_in_new_pod(
        pod_tmp, *argv(checkpoint, dataset, tmp_path / "first")[3:], "--compilation-cache", cache, **gcs
    )
    second = run_in_new_pod(
        pod_tmp, *argv(checkpoint, dataset, tmp_path / "second")[3:], "--compilation-cache", cache, **gcs
    )
    assert cache_hits(first) == 0 and cache_hits(second) >= 1
    assert not (tmp_path / "first" / ".jax-cache").exists()
    for layer in (1, 3):  # the loaded program computes what the compiled one did
        a = layertap.open(str(tmp_path / "first")).read_layer(layer)
        b = layertap.open(str(tmp_path / "second")).read_layer(layer)
        np.testing.assert_array_equal(
            a.activations[np.lexsort((a.position, a.sample_index))],
            b.activations[np.lexsort((b.position, b.sample_index))],
        )


@pytest.mark.slow
def test_the_cache_can_be_turned_off(checkpoint, dataset, tmp_path, pod_tmp):
    result = run_in_new_pod(pod_tmp, *argv(checkpoint, dataset, tmp_path / "out")[3:], "--compilation-cache", "off")
    assert not (tmp_path / "out" / ".jax-cache").exists() and "compilation cache" not in result.stdout


def test_a_program_not_kept_for_a_full_disk_is_warned_of_and_the_run_goes_on(tmp_path, monkeypatch, caplog):
    """The cache saves time only: an entry it cannot store (ENOSPC, raised here by the store) is
    a warning, not the end of the run."""
    import errno
    import os

    from layertap.io.local import LocalStore
    from layertap.run.compile_cache import CompilationCache

    cache = CompilationCache(str(tmp_path / "out" / ".jax-cache"), writer=True, local_dir=tmp_path / "pod-cache")
    (tmp_path / "pod-cache").mkdir()
    (tmp_path / "pod-cache" / "jit_step-abc-cache").write_bytes(b"compiled")

    def full(self, key, data):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(LocalStore, "create", full)
    assert cache.save() == 0
    assert "the compiled program was not kept ([Errno 28] No space left on device)" in caplog.text
    monkeypatch.undo()
    assert cache.save() == 1  # kept once there is room
