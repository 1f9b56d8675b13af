"""What process 0 shares of the Hub cache is copied into the other processes' caches, and
an object whose name would land outside the cache is refused (a real fake-gcs-server)."""

from __future__ import annotations

import uuid

import pytest

from layertap.errors import LayerTapError
from layertap.io import open_store
from layertap.io.hub_share import receive
from layertap.io.local import LocalStore
from layertap.io.store import ObjectInfo
from layertap_api.hub import parse_hub_uri

pytestmark = [pytest.mark.storage, pytest.mark.timeout(120)]
BUCKET = "layertap-hub-share-test"
REF = parse_hub_uri("hf://org/data", "dataset")


@pytest.fixture(scope="module")
def emulator(gcs_emulator):
    gcs_emulator.create_bucket(BUCKET)
    return gcs_emulator


@pytest.fixture
def shared(emulator, monkeypatch):
    """A run's shared Hub cache on gs://, one run per test."""
    monkeypatch.setenv("STORAGE_EMULATOR_HOST", emulator.url)
    return open_store(f"gs://{BUCKET}/{uuid.uuid4().hex[:8]}/.hf-cache")


def test_shared_files_land_in_the_cache(shared, tmp_path):
    shared.write("datasets--org--data/refs/main", b"abc123")
    shared.write("datasets--org--data/snapshots/abc123/data/train.parquet", b"rows")
    receive(REF, shared, tmp_path / "cache")
    snapshot = tmp_path / "cache" / "datasets--org--data" / "snapshots" / "abc123" / "data" / "train.parquet"
    assert snapshot.read_bytes() == b"rows"
    assert (tmp_path / "cache" / "datasets--org--data" / "refs" / "main").read_text() == "abc123"


class SharedStoreWithAnEscapingName(LocalStore):
    """Test double for a bucket holding an object named `../..`: GCS allows such names, but
    neither the emulator (it normalises the path) nor a directory can hold one here."""

    ESCAPING = "datasets--org--data/../../escaped"

    def list(self, prefix: str) -> dict[str, ObjectInfo]:
        return {**super().list(prefix), self.ESCAPING: ObjectInfo(size=5, version="1")}


def test_an_object_named_to_leave_the_cache_is_refused(tmp_path):
    shared = SharedStoreWithAnEscapingName(str(tmp_path / "shared"))
    shared.write("datasets--org--data/refs/main", b"abc123")
    with pytest.raises(LayerTapError, match=r"datasets--org--data/\.\./\.\./escaped: refusing .* leaves the Hub cache"):
        receive(REF, shared, tmp_path / "cache")
    assert not (tmp_path / "escaped").exists()


def _job(tmp_path, **output):
    from layertap_api.spec import JobSpec

    return JobSpec.model_validate(
        {
            "model": {"uri": "hf://org/tiny"},
            "dataset": {"uri": str(tmp_path / "data.jsonl"), "format": "text-jsonl"},
            "output": {"uri": str(tmp_path / "run"), **output},
        }
    )


@pytest.mark.parametrize(
    ("output", "shared_at"),
    [({}, "run/.hf-cache"), ({"hubCache": "private/hub"}, "private/hub"), ({"hubCache": "off"}, None)],
)
def test_where_process_0_shares_the_hub_files(tmp_path, monkeypatch, output, shared_at):
    """output.hubCache moves the shared copy of the Hub's files (gated weights among them) out of
    the run's output, or turns it off: then every process prepares alone and nothing is copied."""
    from hub_cache import write_commit

    from layertap.io.hub_share import prepared_once_per_run

    commit = write_commit(tmp_path / "cache", "org/tiny", {"model.safetensors": b"weights"})
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "cache"))
    barriers = []
    job = _job(tmp_path, **({k: str(tmp_path / v) if v != "off" else v for k, v in output.items()}))
    assert prepared_once_per_run(job, lambda j: "prepared", 0, 2, barriers.append) == "prepared"
    copies = sorted(p.relative_to(tmp_path).as_posix() for p in tmp_path.rglob("model.safetensors"))
    original = f"cache/models--org--tiny/snapshots/{commit}/model.safetensors"
    if shared_at is None:
        assert (copies, barriers) == ([original], [])
    else:
        shared = f"{shared_at}/models--org--tiny/snapshots/{commit}/model.safetensors"
        assert copies == sorted([original, shared]) and len(barriers) == 1
