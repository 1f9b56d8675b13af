"""A unit larger than a shard: cut by rows into part files within the bound, committed as
one record; read, verified, resumed and repaired like any shard (docs/format.md)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import ml_dtypes
import numpy as np
import pytest

import layertap
from layertap.cli import main
from layertap.errors import LayerTapError
from layertap.io.local import LocalStore
from layertap.store import TokenRecords, finalize_run, layout, open_writer, statistics
from layertap.store.writer import part_bounds

from .units import LAYERS, expected_layer, make_units, meta_for, units_listed

COLUMN_BYTES = 24  # a row's token columns
ROW_BYTES = {  # a row of 3 layers x 24 values and its columns; int8 adds a float32 scale per layer
    "bfloat16": len(LAYERS) * 24 * 2 + COLUMN_BYTES,
    "float32": len(LAYERS) * 24 * 4 + COLUMN_BYTES,
    "int8": len(LAYERS) * (24 + 4) + COLUMN_BYTES,
}
BOUND = 2_000  # make_units: 5-40 rows, 0.8-6.7 kB: the larger units split, into up to 4 parts


def unit_stats(unit) -> dict:
    return {
        (layout.DEFAULT_SITE, layer): statistics.of_rows(
            unit.activations[i], unit.segment, unit.position, unit.sample_index, unit.token_ids
        )
        for i, layer in enumerate(LAYERS)
    }


def add(writer, unit, stats=True) -> None:
    columns = {name: getattr(unit, name) for name in ("token_ids", "sample_index", "position", "segment", "cell")}
    writer.add(
        unit.unit_id, TokenRecords.of(unit.activations, **columns), unit.samples, unit_stats(unit) if stats else None
    )


def write(path, units, storage_dtype="bfloat16", **options):
    options = {"shard_bytes": BOUND, **options}
    with open_writer(str(path), meta_for(storage_dtype), **options) as writer:
        for unit in units:
            if unit.unit_id not in writer.committed_units():
                add(writer, unit)
    return writer


def run_files(path: Path) -> dict[str, bytes]:
    """Every file a run's data is made of (run.json and the manifest carry times)."""
    return {
        str(p.relative_to(path)): p.read_bytes()
        for folder in (layout.SHARDS, layout.SAMPLES, layout.STATS, layout.COMMITS)
        for p in sorted((path / folder).rglob("*"))
        if p.is_file()
    }


def data_bytes(shard) -> int:
    return sum(info.nbytes for info in shard.tensors.values())


def test_part_bounds_are_the_fewest_parts_within_the_bound_of_nearly_equal_rows():
    assert part_bounds(10, 100, 1_000) == [0, 10]  # fits (the writer splits only above the bound)
    assert part_bounds(25, 100, 1_000) == [0, 8, 16, 25]  # 3 parts of at most 10 rows
    assert part_bounds(3, 5_000, 1_000) == [0, 1, 2, 3]  # a row larger than a shard: a row each
    for rows in range(1, 200):
        bounds = part_bounds(rows, 37, 1_000)
        sizes = np.diff(bounds)
        assert sizes.min() >= 1 and sizes.max() * 37 <= 1_000 and sizes.max() - sizes.min() <= 1
        assert len(sizes) == -(-rows // (1_000 // 37))


@pytest.mark.parametrize(
    "storage_dtype, cast",
    [("bfloat16", ml_dtypes.bfloat16), ("float32", np.float32), ("int8", None)],
)
def test_a_unit_larger_than_the_bound_is_parts_within_it_that_read_back_as_the_unit(tmp_path, storage_dtype, cast):
    units = make_units(12, seed=5)
    write(tmp_path, units, storage_dtype)
    manifest = finalize_run(str(tmp_path))
    run = layertap.open(str(tmp_path))
    row_bytes = ROW_BYTES[storage_dtype]
    split = {u.unit_id for u in units if len(u.token_ids) * row_bytes > BOUND}
    assert split and any("part" not in s.entry for s in run.shards)
    assert manifest["num_units"] == len(units) and units_listed(manifest) == [u.unit_id for u in units]
    for shard in run.shards:
        assert data_bytes(shard) <= BOUND  # tensor data within the bound; the header on top
        if "part" in shard.entry:
            assert shard.entry["units"][0][0] in split and len(shard.entry["units"]) == 1
    for unit in units:  # each split unit: the fewest parts, every part named in one commit record
        parts = [s for s in run.shards if s.entry["units"][0][0] == unit.unit_id and "part" in s.entry]
        want = -(-len(unit.token_ids) // (BOUND // row_bytes)) if unit.unit_id in split else 0
        assert len(parts) == want and [s.entry["part"] for s in parts] == [[k, want] for k in range(want)]
        assert len({s.entry["seq"] for s in parts}) <= 1
    # Shards are listed in the order units were written, parts in row order: read straight
    # through, each layer is every unit end to end, the split ones included.
    for i, layer in enumerate(LAYERS):
        got = run.read_layer(layer)
        want = expected_layer(units, i)
        if cast is None:
            step = np.abs(want).max(axis=1, keepdims=True) / 127
            assert np.all(np.abs(got.activations - want) <= step / 2 + 1e-6)
        else:
            np.testing.assert_array_equal(got.activations, want.astype(cast).astype(np.float32))
    for column in ("token_ids", "sample_index", "position", "segment", "cell"):
        np.testing.assert_array_equal(getattr(got, column), np.concatenate([getattr(u, column) for u in units]))
    assert run.samples() == {i: meta for u in units for i, meta in u.samples.items()}
    assert main(["verify", str(tmp_path)]) == 0


def test_the_parts_of_a_unit_given_in_device_parts_are_the_parts_of_the_whole_unit(tmp_path):
    """Part files cut across the runner's per-device parts (strided views) hold the same bytes."""
    units = make_units(6, seed=4)
    write(tmp_path / "whole", units)
    with open_writer(str(tmp_path / "devices"), meta_for(), shard_bytes=BOUND) as writer:
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
            writer.add(unit.unit_id, parts, unit.samples, unit_stats(unit))
    whole, devices = run_files(tmp_path / "whole"), run_files(tmp_path / "devices")
    assert any("-part" in key for key in whole) and whole == devices


def test_statistics_count_a_split_unit_once(tmp_path):
    units = make_units(10, seed=6)
    write(tmp_path / "split", units)
    write(tmp_path / "whole", units, shard_bytes=1 << 20)
    want = layertap.open(str(tmp_path / "whole")).stats().layer(5)
    for finalized in (False, True):  # merged from the shard entries, then from stats.safetensors
        if finalized:
            finalize_run(str(tmp_path / "split"))
        got = layertap.open(str(tmp_path / "split")).stats().layer(5)
        assert got.count == want.count == sum(len(u.token_ids) for u in units)
        np.testing.assert_array_equal(got.norm_counts, want.norm_counts)
        np.testing.assert_allclose(got.mean, want.mean, rtol=1e-12)
    for not_a_layer in ("5", True):  # "5" is not 5, nor True 1: the message says which it was
        with pytest.raises(LayerTapError, match=f"no statistics of layer {not_a_layer!r} at site 'resid_post'"):
            layertap.open(str(tmp_path / "whole")).stats().layer(not_a_layer)


def test_units_that_fit_are_stored_as_they_always_were(tmp_path):
    """Units no larger than the bound are packed whole, several to a shard, one commit record
    per shard, as before parts existed (tests/extract/test_pinned_output.py pins the bytes)."""
    units = make_units(8, seed=7)
    largest = max(len(u.token_ids) for u in units) * ROW_BYTES["bfloat16"]
    write(tmp_path, units, shard_bytes=largest)
    manifest = finalize_run(str(tmp_path))
    assert 1 < manifest["num_shards"] < len(units)
    assert [u for s in manifest["shards"] for u, _, _ in s["units"]] == [u.unit_id for u in units]
    for shard in manifest["shards"]:
        assert "part" not in shard and "-part" not in shard["shard"]
        assert [end - start for _, start, end in shard["units"]] == [
            len(units[u].token_ids) for u, _, _ in shard["units"]
        ]
        record = json.loads((tmp_path / layout.commit_key(0, shard["seq"])).read_text())
        assert "parts" not in record and record["shard"] == shard["shard"]


def damage_a_part(path: Path) -> dict:
    entry = next(s for s in finalize_run(str(path))["shards"] if s.get("part", [0, 0])[0] == 1)
    shard = path / entry["shard"]
    data = bytearray(shard.read_bytes())
    data[-3] ^= 0x01
    shard.write_bytes(bytes(data))
    return entry


def test_a_damaged_part_is_named_by_verify_and_its_unit_recomputed_on_resume(tmp_path, capsys):
    units = make_units(8, seed=8)
    write(tmp_path / "clean", units)
    write(tmp_path / "run", units)
    entry = damage_a_part(tmp_path / "run")
    assert main(["verify", str(tmp_path / "run")]) == 1
    assert f"{entry['shard']}: " in capsys.readouterr().err
    with pytest.raises(LayerTapError, match="the shard is damaged"):
        layertap.open(str(tmp_path / "run")).read_layer(2)

    (unit_id, _, _), commit = entry["units"][0], layout.commit_key(0, entry["seq"])
    with open_writer(str(tmp_path / "run"), meta_for(), shard_bytes=BOUND) as writer:
        assert "has CRC32C" in writer.untrusted[commit]  # the part hashed: a local run's content check
        assert writer.committed_units() == {u.unit_id for u in units} - {unit_id}
        add(writer, next(u for u in units if u.unit_id == unit_id))
    finalize_run(str(tmp_path / "run"))
    assert main(["verify", str(tmp_path / "run")]) == 0
    for layer in LAYERS:  # the unit is committed again under a new sequence number: the same rows
        got, want = (layertap.open(str(tmp_path / name)).read_layer(layer) for name in ("run", "clean"))
        order = np.argsort(got.token_ids, kind="stable")
        np.testing.assert_array_equal(got.activations[order], want.activations)
        np.testing.assert_array_equal(got.token_ids[order], want.token_ids)


CHILD = """
import os, signal, sys
sys.path.insert(0, {tests!r})
from layertap.io.local import LocalStore
from store.units import make_units
from store.test_split_units import write

def die_at(method):
    real = getattr(LocalStore, method)
    def wrapped(self, key, *args, **kwargs):
        if key.startswith({key!r}):
            os.kill(os.getpid(), signal.SIGKILL)
        return real(self, key, *args, **kwargs)
    setattr(LocalStore, method, wrapped)

die_at({method!r})
write({path!r}, make_units(10, seed=9), parallel_shards=1)
"""


def first_split_seq(path: Path) -> int:
    """The sequence number of a run's first split unit's commit record."""
    records = [json.loads(p.read_text()) for p in (path / layout.commit_prefix(0)).glob("*.json")]
    return min(r["seq"] for r in records if "parts" in r)


@pytest.mark.parametrize("at", ["between part files", "before the commit record"])
def test_kill_9_while_a_unit_is_split_then_resume_gives_the_uninterrupted_run(tmp_path, at):
    units = make_units(10, seed=9)
    write(tmp_path / "clean", units, parallel_shards=1)
    seq = first_split_seq(tmp_path / "clean")
    method, key = {
        "between part files": ("put", layout.part_key(0, seq, 1)),
        "before the commit record": ("create", layout.commit_key(0, seq)),
    }[at]
    child = CHILD.format(tests=str(Path(__file__).parents[1]), key=key, method=method, path=str(tmp_path / "run"))
    done = subprocess.run([sys.executable, "-c", child], env=os.environ, capture_output=True, text=True)
    assert done.returncode == -signal.SIGKILL, done.stderr
    assert (tmp_path / "run" / layout.part_key(0, seq, 0)).exists()  # a part made durable, uncommitted
    assert not (tmp_path / "run" / layout.commit_key(0, seq)).exists()

    writer = write(tmp_path / "run", units, parallel_shards=1)
    assert writer.progress().units == len(units) - seq_units(tmp_path / "clean", seq)
    finalize_run(str(tmp_path / "run"))
    finalize_run(str(tmp_path / "clean"))
    assert run_files(tmp_path / "run") == run_files(tmp_path / "clean")  # every unit once, the same bytes
    assert main(["verify", str(tmp_path / "run")]) == 0


def seq_units(path: Path, seq: int) -> int:
    """The units committed before shard `seq`."""
    records = [json.loads(p.read_text()) for p in sorted((path / layout.commit_prefix(0)).glob("*.json"))]
    return sum(len(r["units"]) for r in records if r["seq"] < seq)


def test_an_error_between_part_files_leaves_the_unit_uncommitted_until_a_resume(tmp_path, monkeypatch):
    units = make_units(10, seed=9)
    write(tmp_path / "clean", units, parallel_shards=1)
    seq = first_split_seq(tmp_path / "clean")
    real_put = LocalStore.put

    def failing_put(self, key, *args, **kwargs):
        if key == layout.part_key(0, seq, 1):
            raise OSError(28, "No space left on device")
        return real_put(self, key, *args, **kwargs)

    monkeypatch.setattr(LocalStore, "put", failing_put)
    with pytest.raises(LayerTapError, match="No space left"):
        write(tmp_path / "run", units, parallel_shards=1)
    assert not (tmp_path / "run" / layout.commit_key(0, seq)).exists()
    monkeypatch.setattr(LocalStore, "put", real_put)
    write(tmp_path / "run", units, parallel_shards=1)
    finalize_run(str(tmp_path / "run"))
    finalize_run(str(tmp_path / "clean"))
    assert run_files(tmp_path / "run") == run_files(tmp_path / "clean")
