"""Restart to first step on CPU, with and without the persistent compilation cache.

A restarted worker is a new process on a new pod: it imports, loads the checkpoint,
compiles its step programs and runs. This starts `layertap extract` as a fresh process on
an empty /tmp (TMPDIR) three ways, over the same one-step ARC run at Qwen2.5-0.5B's layer
shapes (random weights, fewer layers on a small machine):

    off    output.compilationCache: off (what every restart paid before the cache)
    cold   the cache is empty: this attempt compiles and stores
    warm   a restart: the cache holds what the last attempt compiled

and reports each process's wall time (start to exit; the run is one step, so this is
restart-to-first-step plus the final commit) and the compile time it printed, with warm
over off as the ratio, all taken in one run.

    .venv/bin/python benchmarks/bench_restart.py                    # 8 layers, float32
    .venv/bin/python benchmarks/bench_restart.py --layers-in-model 24 --dtype bfloat16
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench_extract import parse_args, write_inputs


def start_and_wait(args, model: Path, tasks: Path, output: Path, cache: str, tmp: Path) -> tuple[float, float]:
    shutil.rmtree(output, ignore_errors=True)
    shutil.rmtree(tmp, ignore_errors=True)  # a new pod: nothing local survives
    tmp.mkdir()
    argv = [
        sys.executable,
        "-m",
        "layertap.cli",
        "extract",
        "--model",
        str(model),
        "--dataset",
        str(tasks),
        "--format",
        "arc-json",
        "--max-tokens",
        str(args.max_tokens),
        "--over-limit",
        "shorten",
        "--dtype",
        args.dtype,
        "--batch-size",
        str(args.batch_size),
        "--max-samples",
        str(args.batch_size),
        "--output",
        str(output),
        "--compilation-cache",
        cache,
        "--no-progress",
    ]
    env = {**os.environ, "JAX_PLATFORMS": "cpu", "TMPDIR": str(tmp)}
    started = time.perf_counter()
    result = subprocess.run(argv, env=env, capture_output=True, text=True, check=True)
    wall = time.perf_counter() - started
    compile_s = float(re.search(r"compilation ([0-9.]+) s apart", result.stdout).group(1))
    return wall, compile_s


def main() -> None:
    args = parse_args(__doc__.splitlines()[0], layers_in_model=8, batch_size=4, max_tokens=2048)
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="layertap-bench-restart-"))
    model, tasks = write_inputs(workdir, args)
    cache = workdir / "jax-cache"
    shutil.rmtree(cache, ignore_errors=True)
    runs = {}
    for name, where in (("off", "off"), ("cold", str(cache)), ("warm", str(cache))):
        runs[name] = start_and_wait(args, model, tasks, workdir / "out", where, workdir / "pod-tmp")
    print(
        f"restart to first step, CPU, {args.layers_in_model} layers at Qwen2.5-0.5B shapes, {args.dtype}, "
        f"{args.batch_size} rows of up to {args.max_tokens} tokens"
    )
    print(f"{'cache':<6} {'process wall s':>15} {'compile s':>10}")
    for name, (wall, compile_s) in runs.items():
        print(f"{name:<6} {wall:>15.1f} {compile_s:>10.2f}")
    off, warm = runs["off"], runs["warm"]
    print(f"warm / off: wall {warm[0] / off[0]:.2f}x, compile {warm[1] / off[1]:.2f}x")
    if not args.workdir:
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
