"""Counting XLA compiles, for tests that hold a program to fixed shapes, and a `layertap`
command run as a fresh pod would run it, counting its persistent-cache hits."""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import jax.monitoring

BACKEND_COMPILE = "/jax/core/compile/backend_compile_duration"


@contextlib.contextmanager
def counting_compiles() -> Iterator[list[int]]:
    """[n]: the backend compiles that happened inside the block so far."""
    count = [0]

    def listener(event: str, _seconds: float, **_kwargs) -> None:
        if event == BACKEND_COMPILE:
            count[0] += 1

    jax.monitoring.register_event_duration_secs_listener(listener)
    try:
        yield count
    finally:
        jax.monitoring.unregister_event_duration_listener(listener)


PROBE = (
    "import sys, jax.monitoring as m, layertap.cli as c\n"
    "hits = []\n"
    "m.register_event_listener(lambda event, **_: hits.append(event) if event.endswith('cache_hits') else None)\n"
    "code = c.main(sys.argv[1:])\n"
    "print('cache hits:', len(hits))\n"
    "sys.exit(code)\n"
)


def run_in_new_pod(pod_tmp: Path, *args: str, **env: str) -> subprocess.CompletedProcess:
    """`layertap ARGS` in a fresh process with an empty /tmp (where JAX's local cache
    directory lives), as a new pod has, counting JAX's persistent-cache hits."""
    shutil.rmtree(pod_tmp, ignore_errors=True)
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


def cache_hits(result: subprocess.CompletedProcess) -> int:
    return int(result.stdout.rsplit("cache hits:", 1)[1])
