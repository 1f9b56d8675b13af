"""bfloat16 against transformers' own noise on one GPU (issue 30), at the Qwen2.5-0.5B shapes.

Per layer and site: how far LayerTap's bfloat16 forward lands from transformers' float32
forward (ours), beside how far transformers' bfloat16 forward lands from the same (theirs),
max and mean |error| / RMS over the real tokens of the samples, their ratio, and LayerTap's
bfloat16 with the samples packed two to a row against one to a row (packed). The rule of
tests/model/test_noise_floor.py: ours <= 1.5x theirs, packed <= theirs, at every layer.

A random checkpoint with the real shapes (no hub download); transformers runs eager attention
on CUDA when torch has it (else on the CPU, which the header says); LayerTap runs on JAX's
default device with the attention `--attention` names ($LAYERTAP_ATTENTION; auto: cuDNN for
bfloat16 on a CUDA GPU). On a CPU, with small arguments, it proves that it runs:

    .venv/bin/python benchmarks/gpu_numerics.py --num-layers 2 --lengths 40 24 30 34
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path

from bench_forward import QWEN25_05B

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests.model.noise_floor

RULE = 1.5


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--num-layers", type=int, default=QWEN25_05B["num_hidden_layers"])
    parser.add_argument(
        "--lengths", nargs="+", type=int, default=[1100, 948, 1024, 1024], help="sample lengths (packed in pairs)"
    )
    parser.add_argument("--sites", nargs="+", default=["resid_post", "attn_out", "mlp_out"])
    parser.add_argument("--attention", nargs="+", default=["auto"], choices=["auto", "xla", "cudnn"])
    args = parser.parse_args()

    import jax
    import numpy as np
    import torch

    from layertap.model import write_random_checkpoint
    from layertap.model.attention import ENV_ATTENTION, choose_implementation
    from tests.model.noise_floor import measure, table, transformers_tokens

    torch_device = "cuda" if torch.cuda.is_available() else "cpu"
    device = jax.devices()[0]
    print(f"# LayerTap on {device.device_kind} (jax {jax.__version__}); transformers on {torch_device}")
    print(f"# samples of {args.lengths} tokens; packed: two to a row")
    shape = {**QWEN25_05B, "num_hidden_layers": args.num_layers}
    with tempfile.TemporaryDirectory() as scratch:
        directory = write_random_checkpoint(Path(scratch) / "qwen2.5-0.5b-random", seed=0, **shape)
        rng = np.random.default_rng(0)
        samples = [rng.integers(0, shape["vocab_size"], n).astype(np.int32) for n in args.lengths]
        references = transformers_tokens(directory, samples, torch_device, tuple(args.sites))
        for attention in args.attention:
            os.environ[ENV_ATTENTION] = attention  # read while the forward is traced
            ran = choose_implementation(jax.numpy.bfloat16, shape["hidden_size"] // shape["num_attention_heads"])
            floors = measure(directory, samples, references)
            print(f"\n### attention {ran}\n")
            print("\n".join(table(floors)))
            pairs = [(floor, which) for floor in floors.values() for which in (0, 1)]  # max, mean
            worst = max(float(floor.ratio(which).max()) for floor, which in pairs)
            packed = max(float((floor.packed[which] / floor.theirs[which]).max()) for floor, which in pairs)
            verdict = "holds" if worst <= RULE and packed <= 1 else "FAILS"
            print(f"\nworst ours/theirs {worst:.2f}, worst packed/theirs {packed:.2f}: the rule {verdict}")


if __name__ == "__main__":
    main()
