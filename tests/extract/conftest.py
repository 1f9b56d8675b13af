from __future__ import annotations

import json
from pathlib import Path

import pytest

from layertap.cli import main
from layertap.model import write_random_checkpoint

# Varied lengths, some with chat-control tokens, so packing and special-token exclusion both matter.
TEXTS = [
    "The quick brown fox jumps over the lazy dog.",
    "<|im_start|>user\nFind the rule that maps the input grid to the output grid.<|im_end|>",
    "Sparse autoencoders find interpretable features in the residual stream. " * 3,
    "0123456789",
    "Each layer reads from and writes to the residual stream.",
    "<|im_start|>assistant\nThe answer is 42.<|im_end|>\n",
    "Given the training examples, predict the output for the test input. " * 2,
    "a",
    "Activations are written in shards; a shard becomes visible only when it is complete.",
    "The grid has 3 rows and 7 columns. " * 4,
    "user assistant system input output example test train rule colour colors",
    "Lazy dogs and quick foxes. " * 5,
]


@pytest.fixture(scope="session")
def checkpoint(tmp_path_factory) -> Path:
    """A tiny random Qwen2 (4 layers, hidden 64) with its tokenizer."""
    return write_random_checkpoint(tmp_path_factory.mktemp("ckpt"), seed=0)


def write_jsonl(path: Path, texts: list[str]) -> Path:
    path.write_text("".join(json.dumps({"text": text}) + "\n" for text in texts))
    return path


@pytest.fixture
def dataset(tmp_path) -> Path:
    return write_jsonl(tmp_path / "texts.jsonl", TEXTS)


def extract(checkpoint: Path, dataset: Path, output: Path, *flags: str) -> int:
    """`layertap extract` in this process, float32 end to end unless flags say otherwise."""
    argv = ["extract", "--model", str(checkpoint), "--dataset", str(dataset), "--format", "text-jsonl"]
    argv += ["--output", str(output), "--dtype", "float32", "--storage-dtype", "float32", "--no-progress"]
    return main(argv + list(flags))
