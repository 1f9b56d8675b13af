"""The hf:// tests run against a Hugging Face cache prepared in tmp_path (tests/hub_cache.py),
with the Hub switched off: HF_HUB_OFFLINE=1 and HF_HUB_CACHE / HF_HOME in tmp_path, so they
never touch the network or the user's own cache."""

from __future__ import annotations

from pathlib import Path

import pytest

from layertap.model import write_random_checkpoint
from layertap_api import contract


@pytest.fixture
def hub(tmp_path, monkeypatch) -> Path:
    """An empty Hub cache that huggingface_hub reads offline; returns its folder."""
    cache = tmp_path / "hf-cache"
    monkeypatch.setenv(contract.ENV_HF_HUB_CACHE, str(cache))
    monkeypatch.setenv(contract.ENV_HF_HOME, str(tmp_path / "hf-home"))
    monkeypatch.setenv(contract.ENV_HF_HUB_OFFLINE, "1")
    return cache


@pytest.fixture(scope="session")
def checkpoint(tmp_path_factory) -> Path:
    """A tiny random Qwen2 (4 layers, hidden 64) with its tokenizer, as a local directory."""
    return write_random_checkpoint(tmp_path_factory.mktemp("ckpt"), seed=0)
