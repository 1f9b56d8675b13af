"""LayerTap's bfloat16 forward against transformers' own bfloat16 noise (issue 30), per
attention implementation, per layer and per site (tests/model/noise_floor.py measures).

The floor at a layer and site is how far transformers' bfloat16 forward lands from its
float32 forward, max and mean |error| / RMS over the real tokens of four samples. The rule,
at every layer and site, for the max and for the mean:
- ours (LayerTap bfloat16 vs transformers float32) <= RULE x the floor;
- packed vs unpacked (the same samples two to a row vs one to a row, LayerTap bfloat16)
  <= the floor itself.
On CPU (XLA, 2 cores) the largest ratio measured is 1.18, of a max; the means stay within
0.98-1.07 of transformers'. The max of one element is noisy at this size, hence the room.
It still catches a defect: RMSNorm computed in bfloat16 (transformers upcasts to float32)
puts attn_z's max at 1.89x the floor at layer 2 (and every mean at about 1.13x).
The xla path packs bit-identically; the cudnn path (JAX's reference implementation off a
GPU) and splash (Pallas interpret mode) do not, and stay within the floor (packed max up to
0.155 of RMS at mlp_hidden, where transformers' own floor is 0.20).
"""

from __future__ import annotations

import numpy as np
import pytest

from layertap.model import load_checkpoint, write_random_checkpoint
from layertap_api.contract import ENV_ATTENTION
from layertap_api.spec import SITES

from .conftest import random_ids
from .test_parity import CONFIGS

pytest.importorskip("torch", reason="compares against transformers' PyTorch Qwen2 (pip install .[parity])")

from .noise_floor import measure, table, transformers_tokens  # after the skip: imports torch

pytestmark = [pytest.mark.parity, pytest.mark.slow]

RULE = 1.5
# Packed two to a row: 300 positions per row, 3 query blocks of the xla path, the last partial.
LENGTHS = (170, 130, 110, 190)


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    return write_random_checkpoint(tmp_path_factory.mktemp("floor"), seed=7, **CONFIGS["qwen2.5-0.5b-shaped"])


@pytest.fixture(scope="module")
def samples(checkpoint):
    vocab = load_checkpoint(checkpoint)[0].vocab_size
    return [random_ids(vocab, n, seed=i) for i, n in enumerate(LENGTHS)]


@pytest.fixture(scope="module")
def references(checkpoint, samples):
    return transformers_tokens(checkpoint, samples)


@pytest.mark.parametrize("impl", ["xla", "cudnn", "splash"])
def test_bfloat16_is_within_transformers_own_noise(checkpoint, samples, references, impl, monkeypatch):
    monkeypatch.setenv(ENV_ATTENTION, impl)
    floors = measure(checkpoint, samples, references)
    print(f"\n{impl}:\n" + "\n".join(table(floors)))
    assert list(floors) == list(SITES)
    for site, floor in floors.items():
        for which in (0, 1):  # max, mean
            assert (floor.ratio(which) <= RULE).all(), (site, which, floor.ratio(which))
            assert (floor.packed[which] <= floor.theirs[which]).all(), (site, which, floor.packed, floor.theirs)
    if impl == "xla":  # the same dots on the same rows: packing changes nothing
        assert all(np.all(floor.packed[0] == 0) for floor in floors.values())
