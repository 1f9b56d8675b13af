from __future__ import annotations

import numpy as np
import pytest

from layertap.model import load_checkpoint, write_random_checkpoint

# Tests marked family_agnostic (generation's sampling, stopping, taps: no family's code) run on
# this family in the fast tier and on the others only with the slow ones (tests/run.sh --all).
FAST_TIER_FAMILY = "llama3-rope-scaling"


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        family = getattr(item, "callspec", None) and item.callspec.params.get("checkpoint")
        if item.get_closest_marker("family_agnostic") and family != FAST_TIER_FAMILY:
            item.add_marker(pytest.mark.slow)


@pytest.fixture(scope="session")
def tiny_dir(tmp_path_factory):
    """The default tiny random checkpoint (4 layers, hidden 64, 4 heads, 2 KV heads)."""
    return write_random_checkpoint(tmp_path_factory.mktemp("tiny"), seed=0)


@pytest.fixture(scope="session")
def tiny(tiny_dir):
    """(config, float32 params) of the tiny checkpoint."""
    return load_checkpoint(tiny_dir)


def random_ids(vocab_size: int, *shape: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, vocab_size, size=shape, dtype=np.int32)


def dense_attention(q_bktgh, k_bksh, v_bksh, segment_ids_bt):
    """The textbook form in float64: full [T, S] logits, one mask, one softmax."""
    q, k, v = (np.asarray(x, np.float64) for x in (q_bktgh, k_bksh, v_bksh))
    t = q.shape[2]
    logits = np.einsum("bktgh,bksh->bktgs", q, k)
    allowed = (segment_ids_bt[:, :, None] == segment_ids_bt[:, None, :]) & np.tril(np.ones((t, t), bool))
    logits = np.where(allowed[:, None, :, None, :], logits, -np.inf)
    probs = np.exp(logits - logits.max(-1, keepdims=True))
    probs /= probs.sum(-1, keepdims=True)
    return np.einsum("bktgs,bksh->bktgh", probs, v)
