"""run.loader: shuffled token batches for training, read from real runs written by the real
writer (locally and on the GCS emulator), split over processes and resumed."""

from __future__ import annotations

import json
import logging
import uuid

import ml_dtypes
import numpy as np
import pytest

import layertap
from layertap.errors import LayerTapError
from layertap.store import dtypes, finalize_run, open_writer
from layertap.store import loader as loader_module

from .units import add, expected_layer, make_units, meta_for

LAYER = 5  # the second of units.LAYERS
UNIT_COUNT = 60  # 5-40 tokens each: ~1,300 tokens


def write(uri, units, finalize=True, **options):
    with open_writer(str(uri), meta_for(), shard_bytes=3_000, **options) as writer:
        for unit in units:
            add(writer, **unit.kwargs())
    if finalize:
        finalize_run(str(uri))
    return str(uri)


@pytest.fixture(scope="module")
def units():
    return make_units(UNIT_COUNT)


@pytest.fixture(scope="module")
def run_uri(tmp_path_factory, units):
    return write(tmp_path_factory.mktemp("loader") / "run", units)


def all_tokens(units) -> np.ndarray:
    return np.sort(np.concatenate([u.token_ids for u in units]))


def collect(loader) -> list:
    return list(loader)


def token_ids(batches) -> np.ndarray:
    return np.concatenate([b.token_ids for b in batches]) if batches else np.empty(0, np.int32)


def test_the_run_has_many_shards(run_uri):
    assert len(layertap.open(run_uri).shards) >= 15  # so that windows and processes have shards to mix


@pytest.mark.parametrize("buffer_bytes", [1 << 30, 4_000])  # one window; many windows of a shard or two
def test_every_token_exactly_once_per_epoch_with_its_own_values(run_uri, units, buffer_bytes):
    run = layertap.open(run_uri)
    batches = collect(run.loader(LAYER, batch_size=64, seed=3, columns=True, buffer_bytes=buffer_bytes))
    assert [len(b) for b in batches[:-1]] == [64] * (len(batches) - 1) and 0 < len(batches[-1]) <= 64
    ids = token_ids(batches)
    np.testing.assert_array_equal(np.sort(ids), all_tokens(units))  # each token once, none missing
    values = np.concatenate([b.activations for b in batches])
    expected = expected_layer(units, 1).astype(ml_dtypes.bfloat16).astype(np.float32)
    by_id = np.concatenate([u.token_ids for u in sorted(units, key=lambda u: u.unit_id)])
    np.testing.assert_array_equal(values, expected[np.searchsorted(by_id, ids)])
    assert values.dtype == np.float32


def test_three_processes_split_the_run_without_overlap(run_uri, units):
    run = layertap.open(run_uri)
    parts = [
        token_ids(collect(run.loader(LAYER, batch_size=50, seed=1, process_index=p, process_count=3, columns=True)))
        for p in range(3)
    ]
    union = np.concatenate(parts)
    assert len(np.unique(union)) == len(union)  # no token in two processes
    np.testing.assert_array_equal(np.sort(union), all_tokens(units))
    assert max(map(len, parts)) - min(map(len, parts)) <= max(s.entry["tokens"] for s in run.shards)


def test_shuffle_mixes_shards_and_rows(run_uri):
    run = layertap.open(run_uri)
    ids = token_ids(collect(run.loader(LAYER, batch_size=64, seed=0, columns=True, buffer_bytes=1 << 30)))
    # tokens are 1000 * unit + i and units are stored in order: sequential reading gives a
    # rank correlation of 1; shuffled, it is near 0
    rank_correlation = np.corrcoef(np.argsort(np.argsort(ids)), np.arange(len(ids)))[0, 1]
    assert abs(rank_correlation) < 0.2
    first = token_ids(collect(run.loader(LAYER, batch_size=64, seed=0, columns=True)))[:64] // 1000
    assert len(np.unique(first)) >= 20  # the first batch draws from many units (of ~60)
    in_order = token_ids(collect(run.loader(LAYER, batch_size=64, shuffle=False, columns=True)))
    np.testing.assert_array_equal(in_order, np.sort(in_order))


def test_same_seed_same_order_other_seed_or_epoch_another(run_uri):
    run = layertap.open(run_uri)

    def order(**options):
        return token_ids(collect(run.loader(LAYER, batch_size=64, columns=True, **options)))

    np.testing.assert_array_equal(order(seed=7), order(seed=7))
    assert not np.array_equal(order(seed=7), order(seed=8))
    two = order(seed=7, epochs=2)
    half = len(two) // 2
    np.testing.assert_array_equal(np.sort(two[:half]), np.sort(two[half:]))  # each epoch covers every token
    assert not np.array_equal(two[:half], two[half:])  # in another order


@pytest.mark.parametrize("buffer_bytes", [1 << 30, 4_000])
@pytest.mark.parametrize("stop_after", [1, 4, 9, 33])  # 33: in the second epoch
def test_a_saved_state_resumes_to_the_identical_next_batches(run_uri, buffer_bytes, stop_after):
    run = layertap.open(run_uri)
    options = {"batch_size": 48, "seed": 11, "epochs": 2, "buffer_bytes": buffer_bytes, "columns": True}
    whole = collect(run.loader(LAYER, **options))
    loader = run.loader(LAYER, **options)
    for count, _ in enumerate(loader, 1):
        if count == stop_after:
            break
    saved = json.loads(json.dumps(loader.state()))  # JSON-able, and small
    assert len(json.dumps(saved)) < 1_000
    resumed = collect(layertap.open(run_uri).loader(LAYER, **options, state=saved))
    assert len(resumed) == len(whole) - stop_after
    for got, want in zip(resumed, whole[stop_after:], strict=True):
        np.testing.assert_array_equal(got.token_ids, want.token_ids)
        np.testing.assert_array_equal(got.activations, want.activations)


def test_a_state_of_other_settings_is_refused(run_uri):
    run = layertap.open(run_uri)
    loader = run.loader(LAYER, batch_size=48, seed=11)
    next(iter(loader))
    with pytest.raises(LayerTapError, match="saved with seed=11, this loader has 12"):
        run.loader(LAYER, batch_size=48, seed=12, state=loader.state())
    with pytest.raises(LayerTapError, match="not a layertap-loader/1 state"):
        run.loader(LAYER, state={"epoch": 0})


@pytest.mark.parametrize(
    "change, message",
    [
        ({"epoch": "1"}, r"state's epoch is '1', not a count"),
        ({"offset": -5}, r"state's offset is -5, not a count"),
        ({"window": True}, r"state's window is True, not a count"),
        ({"offset": None}, r"state's offset is None, not a count"),
        ({"window": 99}, r"state's window 99 is past epoch 0's windows of this process \(0\.\.\d+\)"),
        ({"offset": 10**9}, r"state's offset 1000000000 is past the \d+ rows of window 0 of epoch 0"),
    ],
)
def test_a_state_edited_out_of_range_is_refused_not_served_empty(run_uri, change, message):
    """Hand-edited or damaged positions: before, some were Python errors and others resumed
    to no batches at all, silently."""
    run = layertap.open(run_uri)
    loader = run.loader(LAYER, batch_size=48, seed=11, buffer_bytes=1 << 30)
    next(iter(loader))
    state = loader.state() | change
    with pytest.raises(LayerTapError, match=message):
        collect(run.loader(LAYER, batch_size=48, seed=11, buffer_bytes=1 << 30, state=state))


def test_a_state_after_the_last_epoch_resumes_to_nothing(run_uri):
    run = layertap.open(run_uri)
    loader = run.loader(LAYER, batch_size=48, seed=11)
    assert collect(loader) and loader.state()["epoch"] == 1
    assert collect(run.loader(LAYER, batch_size=48, seed=11, state=loader.state())) == []
    assert collect(run.loader(LAYER, batch_size=48, seed=11, epochs=2, state=loader.state()))  # one more epoch


@pytest.mark.parametrize("columns", [False, True])
def test_the_buffer_stays_within_its_cap(run_uri, units, columns):
    run = layertap.open(run_uri)
    row_bytes = 24 * 2 + (24 if columns else 0)  # 24 bfloat16 values (and 24 B of token columns)
    largest_shard = max(s.entry["tokens"] for s in run.shards) * row_bytes
    cap = 4 * largest_shard
    loader = run.loader(LAYER, batch_size=32, seed=2, buffer_bytes=cap, columns=columns)
    assert loader.row_bytes == row_bytes
    assert len(loader.windows(0)) >= 4  # the cap makes it hold a part of the run only
    rows = sum(len(batch) for batch in loader)
    assert rows == len(all_tokens(units))
    assert largest_shard <= loader.peak_bytes <= cap  # the loader's own accounting of the rows it held
    assert loader.held_bytes == 0  # everything it read has left


def test_filters_by_segment_task_position_and_token(run_uri, units):
    run = layertap.open(run_uri)
    every = run.read_layer(LAYER)

    def loaded(**filters):
        return np.sort(token_ids(collect(run.loader(LAYER, batch_size=40, seed=5, columns=True, **filters))))

    np.testing.assert_array_equal(loaded(segments=["test-input"]), np.sort(every.token_ids[every.segment == 2]))
    tasks = {"task003", "task017"}
    samples = [i for i, meta in run.samples().items() if meta["task_id"] in tasks]
    np.testing.assert_array_equal(
        loaded(tasks=sorted(tasks)), np.sort(every.token_ids[np.isin(every.sample_index, samples)])
    )
    np.testing.assert_array_equal(loaded(positions=range(3)), np.sort(every.token_ids[every.position < 3]))
    # read_layer takes the loader's filters too
    np.testing.assert_array_equal(np.sort(run.read_layer(LAYER, tasks=sorted(tasks)).token_ids), loaded(tasks=tasks))
    np.testing.assert_array_equal(np.sort(run.read_layer(LAYER, positions=[0, 2]).token_ids), loaded(positions=[0, 2]))
    assert len(run.read_layer(LAYER, tasks="task003", positions=0)) == len(loaded(tasks="task003", positions=0)) > 0
    np.testing.assert_array_equal(
        loaded(segments=[1], exclude_tokens=[1001, 2001]),
        np.sort(every.token_ids[(every.segment == 1) & ~np.isin(every.token_ids, [1001, 2001])]),
    )
    # one value alone is one filter value, not its characters (a string had been iterated)
    np.testing.assert_array_equal(loaded(segments="test-input"), loaded(segments=["test-input"]))
    np.testing.assert_array_equal(loaded(tasks="task003"), loaded(tasks=["task003"]))
    np.testing.assert_array_equal(loaded(positions=12), loaded(positions=[12]))
    with pytest.raises(LayerTapError, match="positions must be integers, got '12'"):
        loaded(positions="12")  # np.fromiter had read positions 1 and 2
    with pytest.raises(LayerTapError, match="exclude_tokens must be integers"):
        loaded(exclude_tokens=["a"])
    with pytest.raises(LayerTapError, match="no tokens of layer 5 .resid_post. match the loader's filters"):
        loaded(tasks=["no-such-task"])
    with pytest.raises(LayerTapError, match="match the loader's filters"):  # not an endless search
        next(iter(run.loader(LAYER, tasks=["no-such-task"], epochs=None)))


def test_formats_dtypes_and_drop_last(run_uri, units):
    run = layertap.open(run_uri)
    stored = next(iter(run.loader(LAYER, batch_size=16, dtype=None)))
    assert stored.dtype == ml_dtypes.bfloat16 and stored.shape == (16, 24)
    torch = pytest.importorskip("torch")
    tensor = next(iter(run.loader(LAYER, batch_size=16, format="torch")))
    assert isinstance(tensor, torch.Tensor) and tuple(tensor.shape) == (16, 24)
    as_stored = next(iter(run.loader(LAYER, batch_size=16, format="torch", dtype=None)))  # torch's own bfloat16
    assert as_stored.dtype == torch.bfloat16
    np.testing.assert_array_equal(as_stored.float().numpy(), stored.astype(np.float32))
    jax = pytest.importorskip("jax")
    plain = collect(run.loader(LAYER, batch_size=16, seed=2))
    arrays = collect(run.loader(LAYER, batch_size=16, seed=2, format="jax"))
    assert all(isinstance(a, jax.Array) and a.dtype == np.float32 for a in arrays)
    np.testing.assert_array_equal(np.concatenate([np.asarray(a) for a in arrays]), np.concatenate(plain))
    sizes = [len(b) for b in run.loader(LAYER, batch_size=100, drop_last=True)]
    assert sizes == [100] * (len(all_tokens(units)) // 100)


def test_a_jax_batch_widened_on_its_device_equals_the_host_cast(run_uri):
    """On an accelerator a float32 JAX batch crosses as stored (bfloat16) and is widened by
    XLA there; CPU devices cast on the host. The device's convert is forced here on CPU's
    XLA (the same op an accelerator runs): the values must be the host cast's, bit for bit."""
    pytest.importorskip("jax")
    run = layertap.open(run_uri)
    assert not loader_module._widen_on_device("bfloat16", np.float32, None)  # CPU devices: the host casts
    assert not loader_module._widen_on_device("bfloat16", None, None)  # as stored: nothing to widen
    assert not loader_module._widen_on_device("float32", np.float32, None)
    loader = run.loader(LAYER, batch_size=16, seed=2, format="jax")
    loader._widen_on_device = True
    assert loader._new_batch()["values"].dtype == ml_dtypes.bfloat16  # gathered as stored: half the bytes moved
    widened = collect(loader)
    assert all(a.dtype == np.float32 for a in widened)
    plain = collect(run.loader(LAYER, batch_size=16, seed=2))
    np.testing.assert_array_equal(np.concatenate([np.asarray(a) for a in widened]), np.concatenate(plain))


def test_int8_runs_are_decoded(tmp_path):
    units = make_units(8, seed=4)
    with open_writer(str(tmp_path / "run"), meta_for("int8"), shard_bytes=1_000) as writer:
        for unit in units:
            add(writer, **unit.kwargs())
    run = layertap.open(str(tmp_path / "run"))
    batches = collect(run.loader(LAYER, batch_size=32, seed=0, columns=True))
    got = np.concatenate([b.activations for b in batches])[np.argsort(token_ids(batches))]
    reference = run.read_layer(LAYER)
    np.testing.assert_array_equal(got, reference.activations[np.argsort(reference.token_ids)])


def test_a_run_still_being_written_reads_what_is_committed_and_says_so(tmp_path, units, caplog):
    uri = write(tmp_path / "run", units[:20], finalize=False)
    with caplog.at_level(logging.WARNING, logger="layertap.store.loader"):
        loader = layertap.open(uri).loader(LAYER, batch_size=64, columns=True)
    assert not loader.complete
    assert "still being written" in caplog.text
    np.testing.assert_array_equal(np.sort(token_ids(collect(loader))), all_tokens(units[:20]))
    assert layertap.open(write(tmp_path / "done", units[:5])).loader(LAYER).complete


def test_what_the_run_lacks_is_an_error_naming_what_it_has(run_uri):
    run = layertap.open(run_uri)
    with pytest.raises(LayerTapError, match=r"layer 3 was not extracted \(layers: \[2, 5, 7\]\)"):
        run.loader(3)
    with pytest.raises(LayerTapError, match="site 'mlp_out' was not extracted .sites: resid_post"):
        run.loader(LAYER, site="mlp_out")
    with pytest.raises(LayerTapError, match="process_index 3 is not an integer in 0..2"):
        run.loader(LAYER, process_index=3, process_count=3)
    with pytest.raises(LayerTapError, match="process_count must be an integer of at least 1, got 0"):
        run.loader(LAYER, process_count=0)  # had said "process_index 0 is not in 0..-1"
    with pytest.raises(LayerTapError, match=r"\d+ shards for 100 processes: .* as many processes as shards"):
        run.loader(LAYER, process_index=0, process_count=100)
    with pytest.raises(LayerTapError, match="batch_size must be an integer of at least 1, got 0"):
        run.loader(LAYER, batch_size=0)
    with pytest.raises(LayerTapError, match="batch_size must be an integer .* got 64.0"):
        run.loader(LAYER, batch_size=64.0)
    with pytest.raises(LayerTapError, match="seed must be a non-negative integer, got -1"):
        run.loader(LAYER, seed=-1)  # numpy's seeding would have refused it only at the first batch
    with pytest.raises(LayerTapError, match="seed must be a non-negative integer, got 'abc'"):
        run.loader(LAYER, seed="abc")
    with pytest.raises(LayerTapError, match="epochs must be an integer of at least 1 .* got 1.5"):
        run.loader(LAYER, epochs=1.5)  # had run two epochs
    with pytest.raises(LayerTapError, match="prefetch must be an integer of at least 1, got 1.5"):
        run.loader(LAYER, prefetch=1.5)
    with pytest.raises(LayerTapError, match="buffer_bytes must be a number of bytes .* got '1GB'"):
        run.loader(LAYER, buffer_bytes="1GB")  # had failed at the first batch, comparing str and int
    with pytest.raises(LayerTapError, match="shuffle must be True or False, got 'no'"):
        run.loader(LAYER, shuffle="no")  # a non-empty string is true: it had shuffled
    with pytest.raises(LayerTapError, match="drop_last must be True or False"):
        run.loader(LAYER, drop_last=None)
    with pytest.raises(LayerTapError, match=r"layer True was not extracted"):
        run.loader(True)  # True == 1, but is no layer
    with pytest.raises(LayerTapError, match="sharding must be a jax.sharding.Sharding, e.g. .* got 'data'"):
        run.loader(LAYER, format="jax", sharding="data")  # had been an AttributeError (device_set)
    with pytest.raises(LayerTapError, match="tasks must be one value or a list of them, got 3.5"):
        run.loader(LAYER, tasks=3.5)
    for dtype in ("int32", np.int8, "no-such-dtype"):  # an integer dtype would truncate the activations
        with pytest.raises(LayerTapError, match="is not one activations can be read as: use one of float32"):
            run.loader(LAYER, dtype=dtype)
        with pytest.raises(LayerTapError, match="is not one activations can be read as"):
            next(run.iter_layer(LAYER, dtype=dtype))


def test_a_batch_larger_than_an_epoch_with_drop_last_is_an_error_not_an_endless_loop(run_uri, units):
    """Every epoch's rows fewer than a batch, and the short batch dropped: with epochs=None the
    loader had looked for a batch forever (train_sae.py with a large --batch-size hung)."""
    run = layertap.open(run_uri)
    tokens = len(all_tokens(units))
    for epochs in (None, 1):
        with pytest.raises(LayerTapError, match=f"an epoch has {tokens} tokens of layer 5 .* a batch of {tokens + 1}"):
            next(iter(run.loader(LAYER, batch_size=tokens + 1, drop_last=True, epochs=epochs)))
    assert [len(b) for b in run.loader(LAYER, batch_size=tokens + 1)] == [tokens]  # kept: one short batch
    # one batch an epoch, the rest dropped: epoch after epoch
    one_each = iter(run.loader(LAYER, batch_size=tokens // 2 + 1, drop_last=True, epochs=None))
    assert [len(next(one_each)) for _ in range(3)] == [tokens // 2 + 1] * 3


def test_numpy_integers_make_a_json_state(run_uri):
    run = layertap.open(run_uri)
    loader = run.loader(
        np.int64(LAYER), batch_size=np.int64(64), seed=np.int32(3), epochs=np.int64(1), shuffle=np.bool_(True)
    )
    next(iter(loader))
    state = json.loads(json.dumps(loader.state()))
    resumed = run.loader(LAYER, batch_size=64, seed=3, state=state)
    np.testing.assert_array_equal(next(iter(resumed)), collect(run.loader(LAYER, batch_size=64, seed=3))[1])


ABANDONED_BY_THE_COLLECTOR = """
import gc, os, sys, threading, time
from concurrent.futures import thread as pool_threads
import layertap
from layertap.store import loader as loader_module

read_shard = loader_module.Loader._read_shard
def slow_read_shard(self, index):  # a slow store: a window's read is under way for a while
    time.sleep(0.01)
    return read_shard(self, index)
loader_module.Loader._read_shard = slow_read_shard
loader_module.READ_AHEAD = 1  # each shard's read is submitted when the one before is done

loader = layertap.open(sys.argv[1]).loader(5, batch_size=64, epochs=None)
iterator = iter(loader)
next(iterator)  # the next epoch's window is being read now
cycle = [iterator]
cycle.append(cycle)  # only the garbage collector frees it
del iterator, cycle

def collect():  # as in a thread starting a pool's worker, which holds this lock (it hung the suite)
    with pool_threads._global_shutdown_lock:
        gc.collect()
collector = threading.Thread(target=collect, daemon=True)
collector.start()
collector.join(30)
if collector.is_alive():
    print("deadlocked", flush=True)
    os._exit(1)  # its pools' threads would never let the interpreter exit
print("collected", len(next(iter(loader))), flush=True)  # and the loader serves again
"""


def test_an_iterator_dropped_anywhere_by_the_garbage_collector_does_not_deadlock(run_uri):
    """The collector may finalize a dropped iterator in any thread, even one that holds a lock
    the iterator's reads need; the iterator must not wait for its reads there (it had: the
    test suite hung). Its own process: a deadlock here would stop every thread pool."""
    import subprocess
    import sys

    result = subprocess.run(
        [sys.executable, "-c", ABANDONED_BY_THE_COLLECTOR, run_uri], capture_output=True, text=True, timeout=120
    )
    assert result.stdout.split() == ["collected", "64"], result.stdout + result.stderr


def test_a_damaged_shard_is_named_not_served(tmp_path, units):
    uri = write(tmp_path / "run", units[:10])
    run = layertap.open(uri)
    shard = run.shards[0]
    path = shard.local_path
    data = bytearray(path.read_bytes())
    data[shard.tensors["layer.5"].offset + 3] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(LayerTapError, match=f"{shard.key}: tensor layer.5 has CRC32C"):
        collect(layertap.open(uri).loader(LAYER, batch_size=8))


@pytest.mark.storage
def test_from_the_gcs_emulator(gcs_emulator, monkeypatch, units):
    monkeypatch.setenv("STORAGE_EMULATOR_HOST", gcs_emulator.url)
    bucket = f"loader-{uuid.uuid4().hex[:8]}"
    gcs_emulator.create_bucket(bucket)
    uri = write(f"gs://{bucket}/run", units[:25])
    run = layertap.open(uri)
    assert len(run.shards) >= 5
    parts = [
        token_ids(collect(run.loader(LAYER, batch_size=32, seed=9, process_index=p, process_count=2, columns=True)))
        for p in range(2)
    ]
    union = np.concatenate(parts)
    np.testing.assert_array_equal(np.sort(union), all_tokens(units[:25]))
    assert len(np.unique(union)) == len(union)


def test_a_state_of_other_shards_is_refused(tmp_path, units):
    uri = write(tmp_path / "run", units[:12], finalize=False)
    loader = layertap.open(uri).loader(LAYER, batch_size=16)
    next(iter(loader))
    write(tmp_path / "run", units[12:20], finalize=False)  # the run grew meanwhile
    with pytest.raises(LayerTapError, match="saved with shards="):
        layertap.open(uri).loader(LAYER, batch_size=16, state=loader.state())


def test_a_resume_across_epochs_with_dropped_short_batches(run_uri):
    run = layertap.open(run_uri)
    options = {"batch_size": 100, "seed": 4, "epochs": 3, "drop_last": True, "buffer_bytes": 6_000, "columns": True}
    whole = collect(run.loader(LAYER, **options))
    per_epoch = len(all_tokens(make_units(UNIT_COUNT))) // 100
    assert len(whole) == 3 * per_epoch  # each epoch's short last batch dropped
    for stop_after in (per_epoch - 1, per_epoch, per_epoch + 1, 2 * per_epoch + 3):
        loader = run.loader(LAYER, **options)
        for count, _ in enumerate(loader, 1):
            if count == stop_after:
                break
        resumed = collect(run.loader(LAYER, **options, state=loader.state()))
        assert [b.token_ids.tolist() for b in resumed] == [b.token_ids.tolist() for b in whole[stop_after:]]


def test_the_bfloat16_to_float32_conversion_is_exact_for_every_bit_pattern():
    every = np.arange(1 << 16, dtype=np.uint32).astype(np.uint16).view(ml_dtypes.bfloat16).reshape(256, 256)
    out = np.empty(every.shape, np.float32)
    dtypes.cast_into(every, out)  # the loader's and the reader's cast, NaNs, infinities and subnormals included
    np.testing.assert_array_equal(out.view(np.uint32), every.astype(np.float32).view(np.uint32))


def test_other_dtypes_are_converted_as_gathered(run_uri, units, monkeypatch):
    monkeypatch.setattr(loader_module, "CHUNK_ROWS", 7)  # a shard's rows of a batch come in several chunks
    run = layertap.open(run_uri)
    batches = collect(run.loader(LAYER, batch_size=600, seed=2, dtype=np.float16, columns=True))
    values = np.concatenate([b.activations for b in batches])
    assert values.dtype == np.float16
    expected = expected_layer(units, 1).astype(ml_dtypes.bfloat16).astype(np.float16)
    by_id = np.concatenate([u.token_ids for u in sorted(units, key=lambda u: u.unit_id)])
    np.testing.assert_array_equal(values, expected[np.searchsorted(by_id, token_ids(batches))])
