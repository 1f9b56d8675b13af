"""Real multi-process runs: several `layertap extract` processes on CPU, joined by jax.distributed (gloo)."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import layertap
from layertap.model import write_random_checkpoint


@pytest.fixture(scope="session")
def checkpoint(tmp_path_factory) -> Path:
    return write_random_checkpoint(tmp_path_factory.mktemp("ckpt"), seed=1)


SENTENCE = "the quick brown fox jumps over a lazy dog while sparse features light up"


@pytest.fixture(scope="session")
def dataset(tmp_path_factory) -> Path:
    """Enough samples of varied length for dozens of steps."""
    rng = np.random.default_rng(0)
    words = SENTENCE.split()
    path = tmp_path_factory.mktemp("data") / "texts.jsonl"
    lines = [" ".join(rng.choice(words, size=rng.integers(2, 60))) for _ in range(400)]
    lines[7] = "<|im_start|>user\n" + lines[7] + "<|im_end|>"
    path.write_text("".join(json.dumps({"text": line}) + "\n" for line in lines))
    return path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def launch(
    processes: int, devices: int, checkpoint: Path, dataset: Path, output: Path, logs: Path, *flags: str, rank_env=None
):
    """Start `processes` extract processes with `devices` CPU devices each (`rank_env(rank)`:
    environment of one process on top of the shared one); returns the Popen list."""
    port = free_port()
    env = {
        **os.environ,
        "JAX_PLATFORMS": "cpu",
        "XLA_FLAGS": f"--xla_force_host_platform_device_count={devices}",
        "PYTHONUNBUFFERED": "1",
    }
    logs.mkdir(parents=True, exist_ok=True)
    argv = [sys.executable, "-m", "layertap.cli", "extract", "--model", str(checkpoint), "--dataset", str(dataset)]
    argv += ["--format", "text-jsonl", "--output", str(output), "--dtype", "float32", "--storage-dtype", "float32"]
    argv += ["--layers", "1,3", "--no-progress", *flags]
    if processes > 1:
        argv += ["--coordinator", f"127.0.0.1:{port}", "--num-processes", str(processes)]
    procs = []
    for rank in range(processes):
        rank_argv = argv + (["--process-id", str(rank)] if processes > 1 else [])
        log = (logs / f"p{rank}.log").open("w")
        own = {**env, **(rank_env(rank) if rank_env else {})}
        procs.append(subprocess.Popen(rank_argv, env=own, stdout=log, stderr=subprocess.STDOUT))
    return procs


def wait_all(procs, logs: Path, timeout: float = 240) -> list[int]:
    codes = []
    for rank, proc in enumerate(procs):
        try:
            codes.append(proc.wait(timeout=timeout))
        except subprocess.TimeoutExpired:
            for p in procs:
                p.kill()
            raise AssertionError(f"process {rank} hung; log:\n{(logs / f'p{rank}.log').read_text()[-3000:]}") from None
    return codes


def logs_text(logs: Path) -> str:
    return "\n".join(f"--- {p.name}\n{p.read_text()[-3000:]}" for p in sorted(logs.glob("*.log")))


def read_layer_sorted(output: Path, layer: int):
    """Rows of a layer in (sample, position) order, whatever the process count that wrote them."""
    batch = layertap.open(str(output)).read_layer(layer)
    order = np.lexsort((batch.position, batch.sample_index))
    return {
        name: getattr(batch, name)[order]
        for name in ("activations", "token_ids", "sample_index", "position", "segment")
    }
