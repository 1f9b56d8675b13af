"""Index files damaged in their shape (commit records, manifests, sample sidecars and
run.json: a field dropped, or given another JSON value; hypothesis, derandomized): opening,
reading, verifying, resuming and finalizing the run end in a LayerTapError naming what is
damaged, or go on; never another error. And a resume after a commit record was named
damaged leaves a run that reads back whole."""

from __future__ import annotations

import contextlib
import json
import shutil

import ml_dtypes
import numpy as np
import pytest
from derandomized import DERANDOMIZED
from hypothesis import given, note, settings
from hypothesis import strategies as st

import layertap
from layertap.errors import LayerTapError
from layertap.store import finalize_run, layout, open_writer

from .units import add, expected_layer, make_units, meta_for

UNITS = make_units(5)
SHARD_BYTES = 4096  # units of more rows than this are split in parts: both kinds of record

JSON = st.recursive(
    st.none() | st.booleans() | st.integers(-2, 2**40) | st.floats(allow_nan=False) | st.text(max_size=4),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=3), inner, max_size=2),
    max_leaves=5,
)
PROPERTY = settings(DERANDOMIZED, max_examples=100)


def write_run(path, finalize: bool) -> None:
    with open_writer(str(path), meta_for(), shard_bytes=SHARD_BYTES) as writer:
        for unit in UNITS:
            add(writer, **unit.kwargs())
    if finalize:
        finalize_run(str(path))


@pytest.fixture(scope="module")
def templates(tmp_path_factory):
    """A run as its writers left it (commit records only) and the same run finalized."""
    root = tmp_path_factory.mktemp("templates")
    write_run(root / "committed", finalize=False)
    write_run(root / "finalized", finalize=True)
    records = sorted((root / "committed" / layout.COMMITS).rglob("*.json"))
    assert any("parts" in json.loads(r.read_text()) for r in records)  # a split unit's record too
    assert any("parts" not in json.loads(r.read_text()) for r in records)
    return root


def damage(data, document: dict) -> str:
    """Drop one field of the document or give it another value; returns where. The place is
    drawn a level at a time (a top-level field is as likely as any other, however large
    the lists beside it): stop at this one, or go into one of its children."""
    parent, at = document, []
    while True:
        keys = list(parent) if isinstance(parent, dict) else list(range(len(parent)))
        if not keys:
            break
        key = data.draw(st.sampled_from(keys))
        at.append(key)
        if not isinstance(parent[key], dict | list) or not parent[key] or data.draw(st.booleans()):
            break
        parent = parent[key]
    if not at:
        return "nothing (empty)"
    if isinstance(parent, dict) and data.draw(st.booleans()):
        del parent[at[-1]]
        return f"dropped {at}"
    parent[at[-1]] = data.draw(JSON)
    return f"{at} = {parent[at[-1]]!r}"


def ends_cleanly(action) -> None:
    with contextlib.suppress(LayerTapError):
        action()


def read_everything(path) -> None:
    run = layertap.open(str(path))
    run.verify()
    run.read_layer(5)
    run.samples()
    run.stats()
    for batch in run.loader(5, batch_size=16, tasks=[UNITS[1].samples[2]["task_id"]]):  # reads the sidecars
        assert len(batch)


def reads_back_whole(path) -> None:
    batch = layertap.open(str(path)).read_layer(5)
    order = np.argsort(batch.token_ids, kind="stable")
    expected = expected_layer(UNITS, 1).astype(ml_dtypes.bfloat16).astype(np.float32)
    np.testing.assert_array_equal(batch.activations[order], expected)


@PROPERTY
@given(data=st.data())
def test_a_commit_record_damaged_in_shape_is_named_and_recomputed(templates, tmp_path_factory, data):
    path = tmp_path_factory.mktemp("run") / "run"
    shutil.copytree(templates / "committed", path)
    key = data.draw(st.sampled_from(sorted((path / layout.COMMITS).rglob("*.json"))))
    record = json.loads(key.read_text())
    note(f"{key.name}: {damage(data, record)}")
    key.write_text(json.dumps(record))

    ends_cleanly(lambda: read_everything(path))
    ends_cleanly(lambda: finalize_run(str(path)))
    try:
        writer = open_writer(str(path), meta_for(), shard_bytes=SHARD_BYTES)  # the resume
    except LayerTapError:  # e.g. the record names another run: refused, said
        return
    with writer:
        untrusted = str(key.relative_to(path)) in writer.untrusted
        done = writer.committed_units()
        for unit in UNITS:
            if unit.unit_id not in done:
                add(writer, **unit.kwargs())
    if untrusted:  # named as damaged: its units were computed again
        finalize_run(str(path))
        reads_back_whole(path)
    else:  # a damage that still reads as a record (another valid seq, unit id, ...): said, or read
        ends_cleanly(lambda: finalize_run(str(path)))
        ends_cleanly(lambda: read_everything(path))


@PROPERTY
@given(data=st.data())
def test_a_manifest_damaged_in_shape_is_named(templates, tmp_path_factory, data):
    path = tmp_path_factory.mktemp("run") / "run"
    shutil.copytree(templates / "finalized", path)
    manifest = json.loads((path / layout.MANIFEST_KEY).read_text())
    note(damage(data, manifest))
    (path / layout.MANIFEST_KEY).write_text(json.dumps(manifest))
    ends_cleanly(lambda: read_everything(path))


@PROPERTY
@given(data=st.data())
def test_a_sidecar_or_run_json_damaged_in_shape_is_named(templates, tmp_path_factory, data):
    kind = data.draw(st.sampled_from(["committed", "finalized"]))
    path = tmp_path_factory.mktemp("run") / "run"
    shutil.copytree(templates / kind, path)
    key = data.draw(st.sampled_from([path / layout.RUN_KEY, *sorted((path / "samples").rglob("*.json"))]))
    document = json.loads(key.read_text())
    note(f"{kind} {key.name}: {damage(data, document)}")
    key.write_text(json.dumps(document))
    ends_cleanly(lambda: read_everything(path))
    with contextlib.suppress(LayerTapError), open_writer(str(path), meta_for(), shard_bytes=SHARD_BYTES) as writer:
        for unit in UNITS:
            if unit.unit_id not in writer.committed_units():
                add(writer, **unit.kwargs())
    ends_cleanly(lambda: finalize_run(str(path)))


def test_a_units_entry_of_the_wrong_shape_is_named_not_a_python_error(tmp_path):
    write_run(tmp_path, finalize=False)
    key = tmp_path / layout.commit_key(0, 0)
    record = json.loads(key.read_text())
    record["units"] = [[record["units"][0][0], 0]]  # one number short
    key.write_text(json.dumps(record))
    with pytest.raises(LayerTapError, match=r"s000000.json: the commit record is damaged \(no units.0.2\)"):
        layertap.open(str(tmp_path))


def test_rows_that_do_not_add_up_are_named(tmp_path):
    write_run(tmp_path, finalize=True)
    manifest = json.loads((tmp_path / layout.MANIFEST_KEY).read_text())
    entry = manifest["shards"][0]
    entry["units"][0][2] += 1
    (tmp_path / layout.MANIFEST_KEY).write_text(json.dumps(manifest))
    with pytest.raises(LayerTapError, match=r"manifest is damaged \(shards.0: its units hold \d+ rows, its tokens say"):
        layertap.open(str(tmp_path))
