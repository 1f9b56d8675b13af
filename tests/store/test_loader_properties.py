"""run.loader's promises over drawn settings (hypothesis, derandomized): every token once per
epoch across the processes (or, with drop_last, all but less than a batch a process), whole
batches where asked, and a state saved after any batch resuming to the identical rest.
Also drawn: the equal batch counts a sharding over several JAX processes asks for (set here
on each process's loader directly, as that sharding sets it: tests/store/test_loader_sharding.py
runs the real thing over jax.distributed)."""

from __future__ import annotations

import json

import numpy as np
import pytest
from derandomized import DERANDOMIZED
from hypothesis import given, note, settings
from hypothesis import strategies as st

import layertap

from .test_loader import LAYER, write
from .units import make_units

PROPERTY = settings(DERANDOMIZED, max_examples=60)


@pytest.fixture(scope="module")
def run_uri(tmp_path_factory):
    return write(tmp_path_factory.mktemp("loader-properties") / "run", make_units(30, seed=9))


def open_loader(run_uri, process: int, settings: dict, state=None):
    options = {key: value for key, value in settings.items() if key != "even"}
    loader = layertap.open(run_uri).loader(LAYER, columns=True, process_index=process, state=state, **options)
    if settings["even"]:  # what a sharding over several JAX processes sets
        loader._even, loader.drop_last = True, True
    return loader


def served(loader) -> list[tuple[int, list[int]]]:
    """(epoch, token ids) of each batch."""
    out = []
    for batch in loader:
        state = loader.state()
        out.append((state["epoch"] - (state["window"] == 0 and state["offset"] == 0), batch.token_ids.tolist()))
    return out


@PROPERTY
@given(
    batch_size=st.integers(1, 150),
    buffer_bytes=st.sampled_from([2_000, 6_000, 20_000, 1 << 30]),  # windows of a shard to the whole run
    process_count=st.integers(1, 3),
    epochs=st.integers(1, 2),
    drop_last=st.booleans(),
    even=st.booleans(),
    seed=st.integers(0, 3),
    stop=st.floats(0, 1),
)
def test_every_token_once_and_resume_anywhere(
    run_uri, batch_size, buffer_bytes, process_count, epochs, drop_last, even, seed, stop
):
    settings = {"batch_size": batch_size, "buffer_bytes": buffer_bytes, "process_count": process_count}
    settings |= {"epochs": epochs, "drop_last": drop_last, "even": even, "seed": seed}
    run = layertap.open(run_uri)
    every = np.sort(np.concatenate([b.token_ids for b in run.iter_layer(LAYER)]))
    try:
        parts = [served(open_loader(run_uri, p, settings)) for p in range(process_count)]
    except layertap.LayerTapError as error:  # a process with fewer tokens than a batch: named, not served
        assert even and "fewer than a batch" in str(error)
        return
    for epoch in range(epochs):
        mine = [[ids for e, ids in part if e == epoch] for part in parts]
        flat = [t for part in mine for ids in part for t in ids]
        assert len(flat) == len(set(flat))  # no token twice in an epoch, in any process
        assert set(flat) <= set(every.tolist())
        if even:  # every process the same whole batches: the most the one with the fewest tokens has
            loaders = [open_loader(run_uri, p, settings) for p in range(process_count)]
            fewest = min(sum(run.shards[i].entry["tokens"] for i in one.shard_order(epoch)) for one in loaders)
            assert [len(part) for part in mine] == [fewest // batch_size] * process_count
            assert all(len(ids) == batch_size for part in mine for ids in part)
        elif drop_last:
            assert all(len(ids) == batch_size for part in mine for ids in part)
            assert len(every) - len(flat) < batch_size * process_count
        else:
            assert len(flat) == len(every)
            for part in mine:
                assert all(len(ids) == batch_size for ids in part[:-1])

    process = process_count - 1
    whole = parts[process]
    at = round(stop * len(whole))
    note(f"resume after batch {at} of {len(whole)}")
    loader = open_loader(run_uri, process, settings)
    state = None
    if at:
        for count, _ in enumerate(loader, 1):
            if count == at:
                break
        state = json.loads(json.dumps(loader.state()))
    assert served(open_loader(run_uri, process, settings, state=state)) == whole[at:]
