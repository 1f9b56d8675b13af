"""`layertap report gs://...`: the same figures from a run in a bucket (a real GCS emulator)."""

from __future__ import annotations

import pytest
from google.cloud import storage

from layertap.cli import main

pytestmark = [pytest.mark.storage, pytest.mark.timeout(300)]
BUCKET = "layertap-report"


def test_a_gs_run_gives_the_same_figures(arc_run, report_dir, gcs_emulator, monkeypatch, tmp_path):
    monkeypatch.setenv("STORAGE_EMULATOR_HOST", gcs_emulator.url)
    gcs_emulator.create_bucket(BUCKET)
    bucket = storage.Client.create_anonymous_client().bucket(BUCKET)
    for path in arc_run.rglob("*"):
        if path.is_file() and ".jax-cache" not in path.parts:
            bucket.blob(f"runs/arc/{path.relative_to(arc_run)}").upload_from_filename(str(path))
    out = tmp_path / "from-gcs"
    assert main(["report", f"gs://{BUCKET}/runs/arc", "--output", str(out)]) == 0
    assert sorted(p.name for p in out.iterdir()) == sorted(p.name for p in report_dir.iterdir())
    for png in report_dir.glob("*.png"):
        assert (out / png.name).read_bytes() == png.read_bytes(), png.name  # the same data, drawn the same
    assert f"gs://{BUCKET}/runs/arc" in (out / "report.html").read_text()
