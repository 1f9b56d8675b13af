"""The store against a real GCS emulator (fake-gcs-server) through google-cloud-storage."""

from __future__ import annotations

import json
import threading
import uuid

import ml_dtypes
import numpy as np
import pytest
from gcs_emulator import Emulator, FaultyProxy

import layertap
from layertap.errors import LayerTapError
from layertap.io import gcs as gcs_store
from layertap.io import open_store
from layertap.io.fetch import fetch_dir
from layertap.store import TokenRecords, finalize_run, layout, open_writer
from layertap_api.contract import ENV_GCS_RETRY_SECONDS

from .units import add, expected_layer, make_units, meta_for, units_listed

pytestmark = [pytest.mark.storage, pytest.mark.timeout(300)]
BUCKET = "layertap-test"


@pytest.fixture(scope="module")
def emulator(tmp_path_factory):
    server = Emulator(tmp_path_factory.mktemp("gcs") / "data")
    server.start()
    server.create_bucket(BUCKET)
    yield server
    server.stop()


@pytest.fixture
def gcs(emulator, monkeypatch):
    """A fresh gs:// prefix on the emulator; small upload chunks so that a shard takes several."""
    monkeypatch.setenv("STORAGE_EMULATOR_HOST", emulator.url)
    monkeypatch.setenv(ENV_GCS_RETRY_SECONDS, "60")
    monkeypatch.setattr(gcs_store, "UPLOAD_CHUNK_BYTES", 256 * 1024)
    return f"gs://{BUCKET}/runs/{uuid.uuid4().hex[:8]}"


@pytest.fixture
def proxy(emulator, monkeypatch):
    proxy = FaultyProxy(emulator.url)
    monkeypatch.setenv("STORAGE_EMULATOR_HOST", proxy.url)
    yield proxy
    proxy.close()


def bf16(x):
    return x.astype(ml_dtypes.bfloat16).astype(np.float32)


def write(uri, units, **kwargs):
    with open_writer(uri, meta_for(), **kwargs) as writer:
        for unit in units:
            add(writer, **unit.kwargs())
    return writer


def check_run(uri, units):
    """The run holds every unit exactly once, every shard object is committed and intact."""
    manifest = finalize_run(uri)
    assert units_listed(manifest) == sorted(u.unit_id for u in units)
    objects = open_store(uri).list(layout.SHARDS)
    assert sorted(objects) == sorted(s["shard"] for s in manifest["shards"])  # no partial or orphan object
    assert all(objects[s["shard"]].size == s["bytes"] for s in manifest["shards"])
    run = layertap.open(uri)
    run.verify()
    batch = run.read_layer(5)
    order = np.argsort(batch.token_ids, kind="stable")
    np.testing.assert_array_equal(batch.activations[order], bf16(expected_layer(units, 1)))
    np.testing.assert_array_equal(
        batch.cell[order], np.concatenate([u.cell for u in sorted(units, key=lambda u: u.unit_id)])
    )
    assert run.samples() == {i: meta for u in units for i, meta in u.samples.items()}
    return manifest


def big_units(count, start=0):
    # ~24 KiB per token in bfloat16, ~0.5 MiB per unit: a shard over 8 MiB is uploaded
    # resumably, in 256 KiB chunks here; smaller ones in one request.
    return make_units(count, start=start, hidden=4096, seed=start)


SHARD = 9 * 1024 * 1024


def test_round_trip(gcs):
    units = make_units(25)
    write(gcs, units, shard_bytes=20_000)
    manifest = check_run(gcs, units)
    assert manifest["num_shards"] > 3
    # object names start with a hash, not a sequence number (GCS request-rate guidance)
    first_chars = {s["shard"].split("/")[1][:2] for s in manifest["shards"]}
    assert len(first_chars) > 1
    run = layertap.open(gcs)
    assert run.finalized and len(run.read_layer(2, segments=["test-input"])) > 0


def test_a_layer_is_read_in_few_requests_a_shard(gcs, proxy):
    """Reading a layer back: the shard's header, then its token columns and the layer, with
    tensors that lie together in the file coalesced into one ranged GET (7 a shard before)."""
    units = make_units(12)
    write(gcs, units, shard_bytes=10_000)
    manifest = finalize_run(gcs)
    run = layertap.open(gcs)
    proxy.seen.clear()
    batch = run.read_layer(5)
    order = np.argsort(batch.token_ids, kind="stable")
    np.testing.assert_array_equal(batch.activations[order], bf16(expected_layer(units, 1)))
    shard_reads = [path for method, path, _ in proxy.seen if method == "GET" and "alt=media" in path]
    assert manifest["num_shards"] > 3
    assert len(shard_reads) <= 3 * manifest["num_shards"]


def test_a_process_resuming_reads_its_own_commits_alone(gcs, proxy):
    """With own_commits_only, a restarted process lists its own folder of commit records and
    looks up the objects they name: no request touches another process's records, and a
    missing shard of its own is still found."""
    units = make_units(16)
    for process in range(2):
        with open_writer(gcs, meta_for(), process, 2, shard_bytes=5_000) as writer:
            for unit in units[process::2]:
                add(writer, **unit.kwargs())
    store = open_store(gcs)
    own = sorted(k for k in store.list(layout.commit_prefix(1)) if k.endswith(".json"))
    lost = json.loads(store.read(own[0]))
    store.delete(lost["shard"])
    proxy.seen.clear()
    with open_writer(gcs, meta_for(), 1, 2, shard_bytes=5_000, own_commits_only=True) as writer:
        assert writer.committed_units() == {u.unit_id for u in units[1::2]} - {u for u, _, _ in lost["units"]}
        assert "is missing" in writer.untrusted[own[0]]
    touched = " ".join(path for _, path, _ in proxy.seen)
    assert "p00001" in touched and "p00000" not in touched
    assert len(proxy.seen) < 4 * len(own) + 10  # a listing, then a record and its 2-3 objects each


def test_a_shard_of_only_empty_units_reads_back(gcs):
    """A process whose rows of a step are all padding commits a unit of no tokens; its empty
    tensors are read without a request (GCS answers an empty range with 416)."""
    empty = TokenRecords.of(
        np.zeros((3, 0, 24), np.float32),
        **{name: np.zeros(0) for name in ("token_ids", "sample_index", "position", "segment")},
    )
    with open_writer(gcs, meta_for()) as writer:
        writer.add(0, empty, {})
    finalize_run(gcs)
    run = layertap.open(gcs)
    assert run.num_tokens == 0 and len(run.read_layer(5)) == 0 and run.problems() == []


def test_upload_errors_are_retried_without_partial_or_duplicate_shards(gcs, proxy):
    units = big_units(24)
    counter = {"chunk": 0, "commit": 0}
    lock = threading.Lock()

    def fault(request):
        with lock:
            if request.method == "PUT" and "upload_id" in request.path:  # a resumable chunk
                counter["chunk"] += 1
                n = counter["chunk"]
                return {3: ("status", 503), 5: ("drop",), 8: ("status", 429), 11: ("lose", 503)}.get(n)
            if request.method == "POST" and b'"name": "runs/' in request.body and b"/commits/" in request.body:
                counter["commit"] += 1
                return ("lose", 503) if counter["commit"] == 1 else None
        return None

    proxy.fault = fault
    write(gcs, units, shard_bytes=SHARD, parallel_shards=2)
    what = [s[2] for s in proxy.seen]
    assert {"status 503", "drop", "status 429"} <= set(what) and any(w.startswith("lost") for w in what)
    proxy.fault = lambda request: None
    check_run(gcs, units)


def test_server_down_mid_run_then_back(gcs, emulator):
    units = big_units(24)
    writer = open_writer(gcs, meta_for(), shard_bytes=SHARD)
    for unit in units[:10]:
        add(writer, **unit.kwargs())
    emulator.stop()
    restart = threading.Timer(2.0, emulator.start)
    restart.start()
    for unit in units[10:]:
        add(writer, **unit.kwargs())
    assert writer.progress().shards == 0 and not restart.finished.is_set()  # uploads are waiting
    writer.close()
    restart.join()
    check_run(gcs, units)


def test_a_shard_damaged_in_place_is_recomputed_on_resume(gcs):
    """GCS lists each object's CRC32C: a committed shard whose bytes changed (same size) is
    not trusted, without reading it."""
    units = big_units(6)
    manifest = finalize_run(write(gcs, units, shard_bytes=SHARD).uri)
    store = open_store(gcs)
    entry = manifest["shards"][0]
    data = bytearray(store.read(entry["shard"]))
    data[len(data) // 2] ^= 0x01
    store.write(entry["shard"], bytes(data))
    with open_writer(gcs, meta_for(), shard_bytes=SHARD) as writer:
        assert "has CRC32C" in writer.untrusted[layout.commit_key(0, entry["seq"])]
        lost = {unit for unit, _, _ in entry["units"]}
        assert writer.committed_units() == {u.unit_id for u in units} - lost
        for unit in units:
            if unit.unit_id in lost:
                add(writer, **unit.kwargs())
    check_run(gcs, units)


def test_resume_of_a_half_written_run(gcs):
    units = big_units(30)
    write(gcs, units[:20], shard_bytes=SHARD)
    store = open_store(gcs)
    own = [layout.seq_of_commit_key(k) for k in store.list(layout.commit_prefix(0))]
    # The crashed attempt had uploaded its next shard, but died before committing it.
    orphan = layout.shard_key(0, max(own) + 1)
    store.put(orphan, [memoryview(b"an upload whose commit record was never written")])

    with open_writer(gcs, meta_for(), shard_bytes=SHARD) as writer:
        assert writer.committed_units() == set(range(20))
        for unit in units:
            if unit.unit_id not in writer.committed_units():
                add(writer, **unit.kwargs())
    manifest = check_run(gcs, units)
    assert orphan in {s["shard"] for s in manifest["shards"]}  # the same name, now the real shard


def test_units_larger_than_a_shard_on_gcs_parts_resume_and_repair(gcs):
    """Split units' parts are objects like shards: an orphan part of a crashed attempt is
    replaced, a part damaged in place is seen in the listing's CRC32C and its unit recomputed."""
    units = make_units(12, seed=12)  # 5-40 rows of 168 B: the larger units are 2-4 parts of 2,000 B
    write(gcs, units[:6], shard_bytes=2_000)
    store = open_store(gcs)
    seq = max(layout.seq_of_commit_key(k) for k in store.list(layout.commit_prefix(0))) + 1
    orphan = layout.part_key(0, seq, 0)  # a crashed attempt's part, never committed
    store.put(orphan, [memoryview(b"a part whose commit record was never written")])
    with open_writer(gcs, meta_for(), shard_bytes=2_000) as writer:
        for unit in units[6:]:
            add(writer, **unit.kwargs())
    manifest = check_run(gcs, units)
    parts = [s for s in manifest["shards"] if "part" in s]
    assert parts and all(s["bytes"] <= 2_000 + 1_024 for s in parts)  # the bound, and a header of < 1 KiB

    entry = parts[-1]
    data = bytearray(store.read(entry["shard"]))
    data[-3] ^= 0x01
    store.write(entry["shard"], bytes(data))
    with open_writer(gcs, meta_for(), shard_bytes=2_000) as writer:
        assert "has CRC32C" in writer.untrusted[layout.commit_key(0, entry["seq"])]
        ((lost, _, _),) = entry["units"]
        assert writer.committed_units() == {u.unit_id for u in units} - {lost}
        add(writer, **units[lost].kwargs())
    check_run(gcs, units)


def test_fetch_dir_copies_a_checkpoint_and_refreshes_only_what_changed(gcs, tmp_path):
    store = open_store(f"{gcs}/ckpt")
    files = {
        "config.json": b'{"model_type": "qwen2"}',
        "model.safetensors": np.arange(300_000, dtype=np.uint8).tobytes(),
        "tokenizer/tokenizer.json": b"{}",
    }
    for key, data in files.items():
        store.write(key, data)
    local = fetch_dir(f"{gcs}/ckpt", tmp_path / "cache")
    copied = {p.relative_to(local).as_posix(): p.read_bytes() for p in local.rglob("*") if p.is_file()}
    assert {k: v for k, v in copied.items() if not k.startswith(".")} == files
    before = (local / "model.safetensors").stat().st_mtime_ns
    store.write("config.json", b'{"model_type": "qwen2", "changed": true}')
    again = fetch_dir(f"{gcs}/ckpt", tmp_path / "cache")
    assert again == local and (local / "config.json").read_bytes().endswith(b"true}")
    assert (local / "model.safetensors").stat().st_mtime_ns == before  # not downloaded again


def test_fetch_dir_of_an_empty_prefix_says_so(gcs, tmp_path):
    with pytest.raises(layertap.errors.LayerTapError, match="no objects under this prefix"):
        fetch_dir(f"{gcs}/nothing-here", tmp_path)


def test_access_denied_says_what_the_service_account_needs(gcs, proxy):
    proxy.fault = lambda request: ("status", 403)
    with pytest.raises(layertap.errors.LayerTapError, match="access denied .* roles/storage.objectUser"):
        open_writer(gcs, meta_for())


def test_a_missing_bucket_is_named(gcs):
    with pytest.raises(layertap.errors.LayerTapError, match="no-such-bucket.*the bucket does not exist"):
        open_writer("gs://no-such-bucket/run", meta_for())


class BucketListingAnEscapingName:
    """Test double for a bucket holding an object named `ckpt/../escaped`: GCS allows such
    names, but the emulator normalises them. Wraps the real emulator store, adding the name."""

    def __init__(self, store):
        self.store = store

    def list(self, prefix):
        return {**self.store.list(prefix), "../escaped": self.store.stat("config.json")}

    def __getattr__(self, name):
        return getattr(self.store, name)


def test_fetch_dir_refuses_an_object_named_to_leave_the_cache(gcs, tmp_path, monkeypatch):
    from layertap.io import fetch

    store = open_store(f"{gcs}/ckpt")
    store.write("config.json", b"{}")
    monkeypatch.setattr(fetch, "open_store", lambda uri: BucketListingAnEscapingName(open_store(uri)))
    with pytest.raises(layertap.errors.LayerTapError, match=r"refusing the stored name '\.\./escaped'"):
        fetch_dir(f"{gcs}/ckpt", tmp_path / "cache")
    assert not list((tmp_path / "cache").rglob("escaped"))


def test_an_output_holding_other_files_is_refused_not_written_into(gcs):
    store = open_store(gcs)
    store.write("config.json", b"{}")  # say, a checkpoint's
    store.write("model/part-0.safetensors", b"x")
    assert store.names(limit=100) == {"config.json", "model"}
    with pytest.raises(LayerTapError, match=r"holds files that are not a LayerTap run's \(config.json, model\): write"):
        write(gcs, make_units(2))
    assert store.names(limit=100) == {"config.json", "model"}  # nothing written beside them
    assert open_store(f"{gcs}/fresh").names(limit=100) == set()
