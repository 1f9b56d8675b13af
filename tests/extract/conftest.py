from __future__ import annotations

import argparse
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


def flags(checkpoint: Path, dataset: Path, output: Path) -> list[str]:
    """The flags every extraction here gives: the model, the text dataset, the output."""
    return ["--model", str(checkpoint), "--dataset", str(dataset), "--format", "text-jsonl", "--output", str(output)]


def extract(checkpoint: Path, dataset: Path, output: Path, *more: str) -> int:
    """`layertap extract` in this process, float32 end to end unless flags say otherwise."""
    argv = ["extract", *flags(checkpoint, dataset, output), "--dtype", "float32", "--storage-dtype", "float32"]
    return main([*argv, "--no-progress", *more])


def prepared_by_flags(*argv: str):
    """`extract.runner.prepare` of the job these `layertap extract` flags describe (no cluster env)."""
    from layertap.extract.runner import prepare
    from layertap.run import cli

    parser = argparse.ArgumentParser()
    cli.add_arguments(parser, cli.EXTRACT)
    return prepare(cli.job_from_args(parser.parse_args(argv), cli.EXTRACT, env={}))
