"""XLA's CPU dot paths, screened: for each configuration of XLA_FLAGS, the forward's tokens/s
against transformers in the same process (bench_forward.py, interleaved), and its parity
with transformers on a small random Qwen2 (max |error| / RMS over every layer, float32 and
bfloat16), so that a faster path is only taken if it is also right.

Each configuration runs in its own process (XLA reads XLA_FLAGS once). Ratios are taken
within each process against the same transformers run, so they compare across processes.

    .venv/bin/python benchmarks/bench_cpu_paths.py                       # T=512, 3 rounds
    .venv/bin/python benchmarks/bench_cpu_paths.py --lengths 512 2048 --repeats 5
    .venv/bin/python benchmarks/bench_cpu_paths.py --lengths 512 2048 --batch 1 4 --dtypes bfloat16
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
FUSIONS = "dot,eltwise,reduce"
CONFIGS = {
    "default": "",
    "xnnpack": "--xla_cpu_use_xnnpack=true",
    "xnn fusion": f"--xla_cpu_experimental_xnn_fusion_type={FUSIONS}",
    "ynn fusion": f"--xla_cpu_experimental_ynn_fusion_type={FUSIONS}",
    "onednn custom call": "--xla_cpu_experimental_onednn_custom_call=true",
    "onednn": "--xla_cpu_use_onednn=true",
    "onednn fusion": "--xla_cpu_experimental_onednn_fusion_type=dot",
}

PARITY = """
import sys, tempfile
import jax.numpy as jnp, numpy as np, torch, transformers
sys.path.insert(0, {tests!r})
from layertap.model import load_checkpoint, make_extract_fn, write_random_checkpoint
from model.test_parity import CONFIGS
directory = write_random_checkpoint(tempfile.mkdtemp(), seed=7, **CONFIGS["qwen2.5-0.5b-shaped"])
vocab = load_checkpoint(directory)[0].vocab_size
ids = np.random.default_rng(1).integers(0, vocab, size=(2, 300)).astype(np.int32)
theirs = transformers.AutoModelForCausalLM.from_pretrained(directory, dtype=torch.float32).eval()
theirs.model.norm = torch.nn.Identity()
with torch.inference_mode():
    expected = torch.stack(
        theirs.model(torch.from_numpy(ids).long(), output_hidden_states=True).hidden_states[1:]
    ).numpy()
for dtype in ("float32", "bfloat16"):
    config, params = load_checkpoint(directory, jnp.dtype(dtype))
    layers = list(range(config.num_hidden_layers))
    positions = np.broadcast_to(np.arange(300, dtype=np.int32), ids.shape)
    out = make_extract_fn(config, layers, jnp.dtype(dtype), jnp.float32)(
        params, ids, positions, np.ones_like(ids)
    )["resid_post"]
    rms = np.sqrt(np.mean(np.square(expected), axis=(1, 2, 3)))
    print("parity", dtype, float((np.abs(np.asarray(out) - expected).max(axis=(1, 2, 3)) / rms).max()))
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lengths", nargs="+", default=["512"])
    parser.add_argument("--batch", nargs="+", default=["1"], help="sequences per forward")
    parser.add_argument("--dtypes", nargs="+", default=["float32", "bfloat16"], choices=["float32", "bfloat16"])
    parser.add_argument("--repeats", default="3")
    parser.add_argument("--configs", nargs="+", default=list(CONFIGS), choices=list(CONFIGS))
    parser.add_argument("--parity-only", action="store_true", help="skip the speed runs")
    args = parser.parse_args()
    from bench_forward import QWEN25_05B

    from layertap.model import write_random_checkpoint

    scratch = tempfile.TemporaryDirectory()
    checkpoint = write_random_checkpoint(Path(scratch.name) / "qwen2.5-0.5b-random", seed=0, **QWEN25_05B)
    rows = []
    for name in args.configs:
        env = {**os.environ, "XLA_FLAGS": CONFIGS[name]}
        parity = subprocess.run(
            [sys.executable, "-c", PARITY.format(tests=str(HERE.parent / "tests"))],
            env=env,
            capture_output=True,
            text=True,
        )
        errors = dict(line.split()[1:] for line in parity.stdout.splitlines() if line.startswith("parity"))
        if parity.returncode != 0:
            errors = {"float32": "failed", "bfloat16": parity.stderr.strip().splitlines()[-1][:60]}
        if args.parity_only:
            rows += [(name, dtype, "-", "-", "-", "-", "-", error) for dtype, error in errors.items()]
            continue
        speed = subprocess.run(
            [
                sys.executable,
                str(HERE / "bench_forward.py"),
                "--lengths",
                *args.lengths,
                "--batch",
                *args.batch,
                "--dtypes",
                *args.dtypes,
                "--repeats",
                args.repeats,
                "--checkpoint",
                str(checkpoint),
            ],
            env=env,
            capture_output=True,
            text=True,
        )
        for line in speed.stdout.splitlines():
            cells = [c.strip() for c in line.strip("|").split("|")]
            if cells[0] in ("float32", "bfloat16"):
                dtype, length, batch, ours, theirs, ratio = cells[:6]
                rows.append((name, dtype, length, batch, ours, theirs, ratio, errors.get(dtype, "?")))
        if speed.returncode != 0:
            rows.append((name, "-", "-", "-", "failed", "-", "-", speed.stderr.strip().splitlines()[-1][:60]))
        print(f"done: {name}", file=sys.stderr, flush=True)
    print(
        "| XLA_FLAGS | dtype | T | B | LayerTap tok/s | transformers tok/s | LayerTap / transformers | max err / RMS |"
    )
    print("| --- | --- | --- | --- | ---: | ---: | ---: | ---: |")
    for row in rows:
        print("| " + " | ".join(row) + " |")


if __name__ == "__main__":
    main()
