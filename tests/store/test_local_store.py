"""The writer and reader on a local directory: round trip, shards, resume, errors."""

from __future__ import annotations

import errno
import json
import os
import threading

import ml_dtypes
import numpy as np
import pytest

import layertap
from layertap.errors import LayerTapError
from layertap.io.local import LocalStore
from layertap.store import finalize_run, layout, open_writer

from .units import LAYERS, add, expected_layer, make_units, meta_for


def write(uri, units, storage_dtype="bfloat16", **kwargs):
    with open_writer(str(uri), meta_for(storage_dtype), **kwargs) as writer:
        for unit in units:
            add(writer, **unit.kwargs())
    return writer


def in_unit_order(batch):
    """Rows sorted back into unit order (shards may complete in any order)."""
    order = np.argsort(batch.token_ids, kind="stable")
    return batch.activations[order]


@pytest.mark.parametrize(
    "storage_dtype, cast",
    [("float32", np.float32), ("bfloat16", ml_dtypes.bfloat16), ("float16", np.float16)],
)
def test_round_trip_is_exact_up_to_the_storage_cast(tmp_path, units, storage_dtype, cast):
    write(tmp_path, units, storage_dtype, shard_bytes=20_000)
    manifest = finalize_run(str(tmp_path))
    assert manifest["num_shards"] > 3  # the size bound cut several shards
    run = layertap.open(str(tmp_path))
    assert run.num_tokens == sum(len(u.token_ids) for u in units)
    for i, layer in enumerate(LAYERS):
        batch = run.read_layer(layer)
        got = in_unit_order(batch)
        np.testing.assert_array_equal(got, expected_layer(units, i).astype(cast).astype(np.float32))
    batch = run.read_layer(LAYERS[0])
    order = np.argsort(batch.token_ids, kind="stable")
    all_units = sorted(units, key=lambda u: u.unit_id)
    for column in ("token_ids", "sample_index", "position", "segment", "cell"):
        want = np.concatenate([getattr(u, column) for u in all_units])
        np.testing.assert_array_equal(getattr(batch, column)[order], want)


def test_cells_and_sample_provenance_come_back_with_the_rows(tmp_path, units):
    write(tmp_path, units, shard_bytes=20_000)
    manifest = finalize_run(str(tmp_path))
    run = layertap.open(str(tmp_path))
    assert run.samples() == {i: meta for u in units for i, meta in u.samples.items()}
    # every shard's sidecar holds exactly the samples of its rows
    for shard in manifest["shards"]:
        sidecar = json.loads((tmp_path / shard["samples"]).read_text())
        assert sidecar["shard"] == shard["shard"]
        rows = {int(i) for i in run.shards[manifest["shards"].index(shard)].read("sample_index")}
        assert {int(i) for i in sidecar["samples"]} == rows
    grid = run.read_layer(5, segments=["test-input"])
    assert len(grid) > 0 and (grid.cell >= 0).all() and grid.cell.shape == (len(grid), 3)
    rest = run.read_layer(5, segments=[0, 1])
    assert (rest.cell == -1).all()
    meta = run.samples()[int(grid.sample_index[0])]
    assert meta["task_id"] == f"task{int(grid.sample_index[0]) // 2:03d}"


def test_a_unit_without_cells_or_provenance_stores_minus_one_and_no_meta(tmp_path):
    unit = make_units(1)[0]
    with open_writer(str(tmp_path), meta_for()) as writer:
        add(writer, **{**unit.kwargs(), "cell": None, "samples": None})
    run = layertap.open(str(tmp_path))
    batch = run.read_layer(2)
    assert batch.cell.shape == (len(unit.token_ids), 3) and (batch.cell == -1).all()
    assert run.samples() == {}


def test_int8_error_stays_within_half_a_step_of_each_row(tmp_path, units):
    write(tmp_path, units, "int8")
    run = layertap.open(str(tmp_path))
    got = in_unit_order(run.read_layer(5))
    want = expected_layer(units, 1)
    step = np.abs(want).max(axis=1, keepdims=True) / 127
    assert np.all(np.abs(got - want) <= step / 2 + 1e-6)
    assert not np.array_equal(got, want)  # it is a lossy format


def test_units_that_fit_are_never_split_and_shards_respect_the_size_bound(tmp_path, units):
    write(tmp_path, units, shard_bytes=15_000)
    manifest = finalize_run(str(tmp_path))
    unit_ids = [u for shard in manifest["shards"] for u, _, _ in shard["units"]]
    assert sorted(unit_ids) == [u.unit_id for u in units]
    largest_unit = max(u.activations[:, :, :].size * 2 + 14 * len(u.token_ids) for u in units)
    for shard in manifest["shards"]:
        assert shard["bytes"] <= 15_000 + largest_unit + 4096  # + header
        rows = [end - start for _, start, end in shard["units"]]
        assert sum(rows) == shard["tokens"]


def test_manifest_holds_provenance_sizes_and_checksums(tmp_path, units):
    write(tmp_path, units, shard_bytes=30_000)
    manifest = finalize_run(str(tmp_path))
    on_disk = json.loads((tmp_path / layout.MANIFEST_KEY).read_text())
    assert on_disk == manifest
    assert manifest["meta"]["model"]["config_sha256"] == "0" * 64
    assert manifest["layers"] == LAYERS and manifest["storage_dtype"] == "bfloat16"
    assert manifest["hidden_size"] == 24 and manifest["writer"].startswith("layertap ")
    for shard in manifest["shards"]:
        assert (tmp_path / shard["shard"]).stat().st_size == shard["bytes"]
    layertap.open(str(tmp_path)).verify()
    # a flipped byte is caught
    victim = tmp_path / manifest["shards"][0]["shard"]
    data = bytearray(victim.read_bytes())
    data[-1] ^= 0xFF
    victim.write_bytes(bytes(data))
    with pytest.raises(LayerTapError, match="CRC32C"):
        layertap.open(str(tmp_path)).verify()


def test_resume_skips_committed_units_and_cleans_up_a_crashed_attempt(tmp_path):
    units = make_units(20)
    write(tmp_path, units[:8], shard_bytes=10_000)
    # A crashed attempt left an uploaded-but-uncommitted shard and sidecar, and a half-written temp file.
    orphan = tmp_path / layout.shard_key(0, 999)
    orphan.write_bytes(b"not committed")
    orphan_sidecar = tmp_path / layout.samples_key(0, 999)
    orphan_sidecar.write_text('{"samples": {"0": "stale"}}')
    (tmp_path / "shards" / ".tmp-half-written").write_bytes(b"x" * 100)
    assert layertap.open(str(tmp_path)).num_tokens == sum(len(u.token_ids) for u in units[:8])

    with open_writer(str(tmp_path), meta_for(), shard_bytes=10_000) as writer:
        done = writer.committed_units()
        assert done == {u.unit_id for u in units[:8]}
        for unit in units:
            if unit.unit_id not in done:
                add(writer, **unit.kwargs())
    manifest = finalize_run(str(tmp_path))
    assert manifest["num_units"] == 20
    seqs = [s["seq"] for s in manifest["shards"]]
    assert len(set(seqs)) == len(seqs)  # numbering continued after the first attempt
    assert not orphan.exists() and not (tmp_path / "shards" / ".tmp-half-written").exists()
    assert not orphan_sidecar.exists()
    assert layertap.open(str(tmp_path)).samples() == {i: meta for u in units for i, meta in u.samples.items()}
    got = in_unit_order(layertap.open(str(tmp_path)).read_layer(7))
    np.testing.assert_array_equal(got, expected_layer(units, 2).astype(ml_dtypes.bfloat16).astype(np.float32))


def test_an_output_holding_other_files_is_refused_not_written_into(tmp_path, units):
    """A checkpoint's or dataset's directory given as the output: refused before anything is
    written there. A run's own names (and the compilation cache) are not other files."""
    (tmp_path / "config.json").write_text("{}")
    (tmp_path / "tokenizer").mkdir()
    with pytest.raises(LayerTapError, match=r"holds files that are not a LayerTap run's \(config.json, tokenizer\)"):
        write(tmp_path, units[:2])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["config.json", "tokenizer"]
    (tmp_path / "run" / ".jax-cache").mkdir(parents=True)  # a cache: made before the run is claimed
    write(tmp_path / "run", units[:2])
    assert layertap.open(str(tmp_path / "run")).num_tokens == sum(len(u.token_ids) for u in units[:2])


def test_resume_with_other_settings_is_refused(tmp_path, units):
    write(tmp_path, units[:2])
    with pytest.raises(LayerTapError, match=r"other inputs or settings: layers: \[2, 5, 7\] -> \[1, 2, 3\]"):
        open_writer(str(tmp_path), meta_for(layers=[1, 2, 3]))


def test_processes_write_their_own_shards_and_finalize_merges_them(tmp_path):
    units = make_units(12)
    for process in (0, 1):
        with open_writer(str(tmp_path), meta_for(), process, 2, shard_bytes=10_000) as writer:
            for unit in units[process::2]:
                add(writer, **unit.kwargs())
    manifest = finalize_run(str(tmp_path))
    assert manifest["processes"] == [0, 1] and manifest["num_units"] == 12
    assert all(f"-p0000{s['process_index']}-" in s["shard"] for s in manifest["shards"])
    assert {p.name for p in (tmp_path / "commits").iterdir()} == {"p00000", "p00001"}


def test_a_unit_written_by_two_processes_fails_finalize(tmp_path):
    units = make_units(3)
    for process in (0, 1):
        with open_writer(str(tmp_path), meta_for(), process, 2) as writer:
            add(writer, **units[process].kwargs())
    # process 1 (wrongly) also writes unit 0 in a later attempt, not knowing about process 0's
    (tmp_path / "commits" / "p00000").rename(tmp_path / "hidden")
    with open_writer(str(tmp_path), meta_for(), 1, 2) as writer:
        add(writer, **units[0].kwargs())
    (tmp_path / "hidden").rename(tmp_path / "commits" / "p00000")
    with pytest.raises(LayerTapError, match="unit 0 is in two shards"):
        finalize_run(str(tmp_path))


def test_filters_by_segment_name_and_token(tmp_path, units):
    write(tmp_path, units)
    run = layertap.open(str(tmp_path))
    test_input = run.read_layer(2, segments=["test-input"])
    assert len(test_input) > 0 and set(test_input.segment) == {2}
    by_label = run.read_layer(2, segments=[2])
    np.testing.assert_array_equal(by_label.token_ids, test_input.token_ids)
    wanted = [1000 * 3 + 1, 1000 * 7 + 2, 999_999]
    picked = run.read_layer(2, tokens=wanted)
    assert sorted(picked.token_ids) == [3001, 7002]
    dropped = run.read_layer(2, exclude_tokens=[3001])
    assert len(dropped) == run.num_tokens - 1 and 3001 not in dropped.token_ids
    with pytest.raises(LayerTapError, match="unknown segment 'answer' .known: other, test-input, train-input.$"):
        run.read_layer(2, segments=["answer"])
    with pytest.raises(LayerTapError, match="unknown segment 'test_input' .did you mean 'test-input'"):
        run.read_layer(2, segments=["test_input"])
    with pytest.raises(LayerTapError, match=r"layer 3 was not extracted \(layers: \[2, 5, 7\]\)"):
        run.read_layer(3)
    # one value alone is a list of one: "test-input" is not its letters
    np.testing.assert_array_equal(run.read_layer(2, segments="test-input").token_ids, test_input.token_ids)
    np.testing.assert_array_equal(run.read_layer(2, segments=2).token_ids, test_input.token_ids)
    assert len(run.read_layer(2, tokens=3001)) == len(run.read_layer(2, tokens=[3001])) == 1
    with pytest.raises(LayerTapError, match="tokens must be integers"):
        run.read_layer(2, tokens="3001")
    with pytest.raises(LayerTapError, match=r"layer '5' was not extracted \(layers: \[2, 5, 7\]\)"):
        run.read_layer("5")  # a string, not the layer 5: the message says so
    with pytest.raises(LayerTapError, match="segments are names or integer labels, got 2.7"):
        run.read_layer(2, segments=[2.7])  # int() had made it segment 2
    with pytest.raises(LayerTapError, match="segments must be one value or a list of them, got 2.5"):
        run.read_layer(2, segments=2.5)  # had been a TypeError
    with pytest.raises(LayerTapError, match="tokens must be one value or a list of them"):
        run.read_layer(2, tokens=object())


def test_a_run_is_written_and_opened_from_a_path_too(tmp_path, units):
    with open_writer(tmp_path / "run", meta_for()) as writer:  # a pathlib.Path, not a str
        for unit in units[:3]:
            add(writer, **unit.kwargs())
    finalize_run(tmp_path / "run")
    assert layertap.open(tmp_path / "run").num_tokens == layertap.open(str(tmp_path / "run")).num_tokens > 0
    for nothing in (None, b"run"):
        with pytest.raises(LayerTapError, match="is not a location: give a local directory"):
            layertap.open(nothing)


def test_memmap_exposes_the_stored_rows_without_reading_them(tmp_path, units):
    write(tmp_path, units, shard_bytes=20_000)
    run = layertap.open(str(tmp_path))
    maps = run.memmap(5)
    assert all(isinstance(m, np.memmap) and m.dtype == ml_dtypes.bfloat16 for m in maps)
    stored = np.concatenate([np.asarray(m) for m in maps]).astype(np.float32)
    np.testing.assert_array_equal(stored, run.read_layer(5).activations)


def test_reading_a_run_in_progress_sees_only_committed_shards(tmp_path, units):
    write(tmp_path, units[:5])
    run = layertap.open(str(tmp_path))
    assert not run.finalized and run.num_tokens == sum(len(u.token_ids) for u in units[:5])


@pytest.mark.parametrize(
    "change, message",
    [
        (lambda a: dict(a, activations=a["activations"][:2]), r"resid_post activations must be \[L=3, N, \.\.\.\]"),
        (
            lambda a: dict(a, activations={"mlp_out": a["activations"]}),
            r"must hold the sites \['resid_post'\], got \['mlp_out'\]",
        ),
        (lambda a: dict(a, token_ids=a["token_ids"][:-1]), r"token_ids must be \[N="),
        (lambda a: dict(a, activations=a["activations"].astype(np.int32)), "must be floating point"),
        (lambda a: dict(a, unit_id=1.5), "unit id must be an int or str"),
        (lambda a: dict(a, cell=a["cell"][:, :2]), r"cell must be \[N=\d+, 3\]"),
        (lambda a: dict(a, samples={0: {}}), r"samples must describe exactly .* missing \[1\], extra \[\]"),
        (lambda a: dict(a, samples={**a["samples"], 7: {}}), r"missing \[\], extra \[7\]"),
        (lambda a: dict(a, samples={0: {"x": np.int64(1)}, 1: {}}), "provenance must be JSON-serialisable"),
    ],
)
def test_add_rejects_malformed_units(tmp_path, change, message):
    args = change(make_units(1)[0].kwargs())
    with open_writer(str(tmp_path), meta_for()) as writer, pytest.raises(ValueError, match=message):
        add(writer, **args)


def test_adding_a_unit_twice_is_refused(tmp_path):
    unit = make_units(1)[0]
    write(tmp_path, [unit])
    with (
        open_writer(str(tmp_path), meta_for()) as writer,
        pytest.raises(ValueError, match="unit 0 was already written"),
    ):
        add(writer, **unit.kwargs())


def test_a_failing_store_surfaces_as_an_error_naming_the_output(tmp_path):
    (tmp_path / "shards").write_text("a file where the shards folder should be")
    writer = open_writer(str(tmp_path), meta_for())
    add(writer, **make_units(1)[0].kwargs())
    with pytest.raises(LayerTapError, match=str(tmp_path)):
        writer.close()


def test_a_shard_deleted_while_written_asks_whether_another_run_writes_there(tmp_path, monkeypatch):
    """Another process finalizing the same output deletes the temporary files it finds: the
    writer whose file went says what probably happened, not only FileNotFoundError."""
    put = LocalStore.put

    def put_while_finalized_elsewhere(self, key, buffers, crc32c=None):
        def deleted_midway():
            for i, buffer in enumerate(buffers):
                if i == 1:
                    self.remove_temporaries()  # what another process's finalize_run does
                yield buffer

        return put(self, key, deleted_midway(), crc32c)

    monkeypatch.setattr(LocalStore, "put", put_while_finalized_elsewhere)
    writer = open_writer(str(tmp_path), meta_for())
    add(writer, **make_units(1)[0].kwargs())
    with pytest.raises(LayerTapError, match=r"\.tmp-.* was deleted while it was written: is another run writing to"):
        writer.close()


def test_a_full_disk_says_so_and_that_the_same_command_resumes(tmp_path, monkeypatch):
    """ENOSPC from the disk (raised here by the store: a full filesystem needs root to make)."""

    def full(self, key, buffers, crc32c=None):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(LocalStore, "put", full)
    writer = open_writer(str(tmp_path), meta_for())
    add(writer, **make_units(1)[0].kwargs())
    with pytest.raises(LayerTapError, match="the disk is full .No space left on device.; free some space or write"):
        writer.close()


def added_while_the_store_is_slow(tmp_path, monkeypatch, units, **writer_options) -> int:
    """How many units `add` took before it blocked, while the store holds back every shard;
    then the store is released and every unit must become durable."""
    release = threading.Event()
    real_put = LocalStore.put

    def slow_put(self, key, buffers, **kwargs):
        if key.startswith("shards/"):
            release.wait(30)
        return real_put(self, key, buffers, **kwargs)

    monkeypatch.setattr(LocalStore, "put", slow_put)
    added = []
    writer = open_writer(str(tmp_path), meta_for(), shard_bytes=1, parallel_shards=1, **writer_options)

    def produce():
        for unit in units:
            add(writer, **unit.kwargs())
            added.append(unit.unit_id)

    producer = threading.Thread(target=produce)
    producer.start()
    producer.join(1.0)
    assert producer.is_alive(), "add never blocked"
    before_release = len(added)
    release.set()
    producer.join(30)
    writer.close()
    assert writer.committed_units() == {u.unit_id for u in units}
    return before_release


def test_add_blocks_while_the_store_is_slow_so_memory_stays_bounded(tmp_path, monkeypatch):
    # shard_bytes=1 cuts every unit into one-row parts: one part in the store, the unit's next
    # waiting for a slot, two units queued (whole units: a shard sealed, one packed, two queued)
    assert added_while_the_store_is_slow(tmp_path, monkeypatch, make_units(12), queue_units=2) <= 5


def test_the_queue_holds_at_most_queue_bytes_of_activations(tmp_path, monkeypatch):
    units = make_units(12, seed=3)
    largest = max(u.activations.nbytes for u in units)
    # one part in the store, the unit's next waiting for a slot, one queued (by bytes: a hundred would fit
    # by count)
    assert added_while_the_store_is_slow(tmp_path, monkeypatch, units, queue_units=100, queue_bytes=largest) <= 4


def test_a_unit_in_parts_is_stored_exactly_as_the_whole_unit(tmp_path):
    """The runner hands a unit as one part per device, each a view of a larger buffer whose
    rows are strided across layers: the shards are byte-identical to the unit given whole."""
    from layertap.store import TokenRecords

    units = make_units(6, seed=4)
    write(tmp_path / "whole", units)
    with open_writer(str(tmp_path / "parts"), meta_for()) as writer:
        for unit in units:
            cut = len(unit.token_ids) // 3
            parts = []
            for rows in (slice(0, cut), slice(cut, None)):
                n = len(unit.token_ids[rows])
                padded = np.zeros((len(LAYERS), 1, n + 5, unit.activations.shape[2]), np.float32)  # [L, 1, C, D]
                padded[:, 0, :n] = unit.activations[:, rows]
                columns = {
                    name: getattr(unit, name)[rows] for name in ("token_ids", "sample_index", "position", "segment")
                }
                parts.append(TokenRecords.of(padded[:, 0, :n], cell=unit.cell[rows], **columns))
            writer.add(unit.unit_id, parts, unit.samples)
    whole, split = (sorted((tmp_path / name / "shards").iterdir()) for name in ("whole", "parts"))
    assert [p.name for p in whole] == [p.name for p in split] and whole
    for a, b in zip(whole, split):
        assert a.read_bytes() == b.read_bytes(), a.name
    finalize_run(str(tmp_path / "parts"))
    layertap.open(str(tmp_path / "parts")).verify()  # every shard's size and CRC32C hold


@pytest.mark.parametrize("key", ["../outside", "shards/../../outside", "/etc/hostname"])
def test_a_stored_name_that_leaves_the_run_is_refused(tmp_path, key):
    """Keys come from commit records, manifests and listings: a damaged one never names a
    file outside the store's directory, for reading or for writing."""
    from layertap.io import open_store

    store = open_store(str(tmp_path / "run"))
    for touch in (store.read, store.exists, store.stat, lambda k: store.write(k, b"x")):
        with pytest.raises(LayerTapError, match="refusing the stored name .* damaged"):
            touch(key)
    assert not (tmp_path / "outside").exists()


def test_numbered_segment_names_are_listed_folded():
    """An ARC run has example-1-input .. example-50-input: the message lists one entry."""
    from layertap.store.reader import _known

    names = [f"example-{k}-{side}" for k in range(1, 51) for side in ("input", "output")] + ["test-input"]
    assert _known("nope", names) == "known: example-K-input, example-K-output, test-input; K: 1-50"
    assert _known("example-7-inptu", names).startswith("did you mean 'example-7-input'? ")
