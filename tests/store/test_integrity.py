"""Nothing damaged is returned or trusted: checksums on the read path, committed shards
checked before a resume trusts them, damaged index files named."""

from __future__ import annotations

import json

import ml_dtypes
import numpy as np
import pytest

import layertap
from layertap.cli import main
from layertap.errors import LayerTapError
from layertap.store import finalize_run, layout, open_writer

from .units import add, expected_layer, make_units, meta_for, units_listed


def write(path, units, finalize=True):
    with open_writer(str(path), meta_for(), shard_bytes=4096) as writer:
        for unit in units:
            add(writer, **unit.kwargs())
    return finalize_run(str(path)) if finalize else None


def flip_a_byte(path, offset):
    data = bytearray(path.read_bytes())
    data[offset] ^= 0x01
    path.write_bytes(bytes(data))


def offset_in(run_path, shard_index, tensor):
    """A byte inside a tensor of a shard."""
    info = layertap.open(str(run_path)).shards[shard_index].tensors[tensor]
    return info.offset + info.nbytes // 2


@pytest.fixture
def run_dir(tmp_path):
    units = make_units(6)
    manifest = write(tmp_path, units)
    assert manifest["num_shards"] > 2
    return tmp_path, units, manifest


def test_every_tensor_of_a_committed_shard_has_a_checksum(run_dir):
    _, _, manifest = run_dir
    for shard in manifest["shards"]:
        assert set(shard["tensors"]) == {f"layer.{n}" for n in (2, 5, 7)} | set(layout.TOKEN_COLUMNS)


@pytest.mark.parametrize(
    "read",
    [
        lambda run: run.read_layer(7),
        lambda run: list(run.iter_layer(7, segments=[2])),
        lambda run: [np.asarray(m).sum() for m in run.memmap(7)],
    ],
    ids=["read_layer", "iter_layer", "memmap"],
)
def test_a_flipped_byte_is_an_error_naming_the_shard(run_dir, read):
    path, _, manifest = run_dir
    victim = manifest["shards"][1]["shard"]
    flip_a_byte(path / victim, offset_in(path, 1, "layer.7"))
    with pytest.raises(LayerTapError, match=rf"{victim}: tensor .* has CRC32C .* the shard is damaged"):
        read(layertap.open(str(path)))
    read(layertap.open(str(path), checksums=False))  # the trusted-read opt-out reads it as is


def test_verify_command_lists_damage_and_exits_non_zero(run_dir, capsys):
    path, _, manifest = run_dir
    assert main(["verify", str(path)]) == 0
    assert "every size and CRC32C matches" in capsys.readouterr().out
    flip_a_byte(path / manifest["shards"][0]["shard"], offset_in(path, 0, "token_ids"))
    (path / manifest["shards"][2]["samples"]).unlink()
    assert main(["verify", str(path)]) == 1
    captured = capsys.readouterr()
    assert manifest["shards"][0]["shard"] in captured.err and "sample sidecar is missing" in captured.err
    assert "2 problems" in captured.out


@pytest.mark.parametrize(
    "damage",
    [
        lambda path, entry: (path / entry["shard"]).unlink(),
        lambda path, entry: (path / entry["shard"]).write_bytes((path / entry["shard"]).read_bytes()[:-10]),
        lambda path, entry: (path / entry["samples"]).unlink(),
        lambda path, entry: (path / layout.commit_key(entry["process_index"], entry["seq"])).write_text("{broken"),
        lambda path, entry: flip_a_byte(path / entry["shard"], -5),  # same size: only its CRC32C tells
        lambda path, entry: (path / entry["samples"]).write_bytes(b"x" * (path / entry["samples"]).stat().st_size),
    ],
    ids=[
        "shard deleted",
        "shard truncated",
        "sidecar deleted",
        "commit record broken",
        "byte flipped",
        "sidecar garbled",
    ],
)
def test_a_resume_recomputes_what_a_damaged_commit_held(run_dir, damage):
    path, units, manifest = run_dir
    entry = manifest["shards"][1]
    lost = {unit for unit, _, _ in entry["units"]}
    damage(path, entry)
    with open_writer(str(path), meta_for(), shard_bytes=4096) as writer:
        assert writer.committed_units() == {u.unit_id for u in units} - lost
        assert layout.commit_key(0, entry["seq"]) in writer.untrusted
        for unit in units:
            if unit.unit_id in lost:
                add(writer, **unit.kwargs())
    manifest = finalize_run(str(path))
    assert units_listed(manifest) == [u.unit_id for u in units]
    run = layertap.open(str(path))
    run.verify()  # every listed shard is there and intact
    batch = run.read_layer(5)
    np.testing.assert_array_equal(
        batch.activations[np.argsort(batch.token_ids, kind="stable")],
        expected_layer(units, 1).astype(ml_dtypes.bfloat16).astype(np.float32),
    )


def test_finalize_refuses_to_list_a_missing_shard(run_dir):
    path, _, manifest = run_dir
    (path / manifest["shards"][0]["shard"]).unlink()
    with pytest.raises(LayerTapError, match="shard .* is missing; resume the run"):
        finalize_run(str(path))


@pytest.mark.parametrize(
    "key, content, message",
    [
        (layout.MANIFEST_KEY, "{not json", "the manifest is damaged"),
        (layout.MANIFEST_KEY, json.dumps({"format": layout.FORMAT}), r"the manifest is damaged \(no meta"),
        (layout.RUN_KEY, "[]", "the run's provenance is damaged"),
    ],
)
def test_damaged_index_files_are_named(run_dir, key, content, message):
    path, _, _ = run_dir
    if key == layout.RUN_KEY:
        (path / layout.MANIFEST_KEY).unlink()
    (path / key).write_text(content)
    with pytest.raises(LayerTapError, match=rf"{key}: {message}"):
        layertap.open(str(path))


def test_an_unreadable_commit_record_is_named_by_readers(tmp_path):
    units = make_units(3)
    write(tmp_path, units, finalize=False)
    (tmp_path / layout.commit_key(0, 0)).write_bytes(b"\xff\xfe")
    with pytest.raises(LayerTapError, match=r"s000000.json: the commit record is damaged"):
        layertap.open(str(tmp_path))
