"""The statistics `layertap extract` keeps, against numpy on the stored activations: they must
agree to float32 precision; resumed runs count each token once."""

from __future__ import annotations

import json
from contextlib import nullcontext

import numpy as np
import pytest

import layertap
from layertap.errors import LayerTapError
from layertap.run import stopping
from layertap.run.stopping import StopRequest
from layertap.store.statistics import EXTREME, TOP_TOKENS, merge
from layertap_api.contract import EXIT_INTERRUPTED

from .conftest import extract

FLAGS = ("--layers", "1,3", "--storage-dtype", "float32", "--batch-size", "2", "--shard-size-mb", "1")


def expected_of(run, layer, site="resid_post") -> dict:
    rows = run.read_layer(layer, site=site)
    x = rows.activations.reshape(len(rows), -1).astype(np.float64)
    norms = np.linalg.norm(x, axis=1)
    return {"x": x, "norms": norms, "rows": rows}


@pytest.mark.parametrize("site", ["resid_post", "attn_z"])
def test_statistics_agree_with_numpy_on_the_stored_rows(checkpoint, dataset, tmp_path, site):
    assert extract(checkpoint, dataset, tmp_path / "out", *FLAGS, "--sites", f"{site},mlp_out") == 0
    run = layertap.open(str(tmp_path / "out"))
    stats = run.stats()
    assert stats.layers == [1, 3] and set(stats.sites) == {site, "mlp_out"}
    for layer in (1, 3):
        got, want = stats.layer(layer, site), expected_of(run, layer, site)
        x, norms, rows = want["x"], want["norms"], want["rows"]
        assert got.count == len(x) > 0
        np.testing.assert_allclose(got.mean, x.mean(0), rtol=1e-5, atol=1e-6 * np.abs(x).max())
        np.testing.assert_allclose(got.var, x.var(0), rtol=1e-4, atol=1e-6 * x.var(0).max())
        np.testing.assert_array_equal(got.absmax, np.abs(x).max(0).astype(np.float32))
        rms = norms / np.sqrt(x.shape[1])
        np.testing.assert_allclose(
            got.extreme_fraction, (np.abs(x) > EXTREME * rms[:, None]).mean(0), atol=1.5 / len(x)
        )
        assert got.norm_mean == pytest.approx(norms.mean(), rel=1e-5)
        assert got.norm_std == pytest.approx(norms.std(), rel=1e-3)
        histogram, _ = np.histogram(norms, got.norm_edges)
        assert got.norm_counts.sum() == len(x) and np.abs(got.norm_counts - histogram).sum() <= 2  # edges in float32
        for q in (0.1, 0.5, 0.9):
            assert got.norm_quantile(q) == pytest.approx(np.quantile(norms, q, method="inverted_cdf"), rel=0.05)
        for q in (1.5, "0.5"):
            with pytest.raises(LayerTapError, match="quantile must be a number within .0, 1., got"):
                got.norm_quantile(q)
        assert [d["dim"] for d in got.outlier_dims(3)] == [d["dim"] for d in got.outlier_dims(x.shape[1])][:3]
        with pytest.raises(LayerTapError, match="top must be a non-negative integer, got -3"):
            got.outlier_dims(-3)  # had been every dimension but the last 3
        top = np.argsort(-norms, kind="stable")[:TOP_TOKENS]
        np.testing.assert_allclose([t["norm"] for t in got.massive_tokens], norms[top], rtol=1e-5)
        first = got.massive_tokens[0]
        match = (rows.sample_index == first["sample_index"]) & (rows.position == first["position"])
        assert match.sum() == 1 and rows.token_ids[match][0] == first["token_id"]
        for label, moments in got.norm_by_segment.items():
            of_label = norms[rows.segment == label]
            assert moments["count"] == len(of_label) and moments["mean"] == pytest.approx(of_label.mean(), rel=1e-5)
        assert sum(m["count"] for m in got.norm_by_segment.values()) == len(x)
        for bucket in got.norm_by_position:
            inside = (rows.position >= bucket["start"]) & (rows.position < bucket["end"])
            assert bucket["count"] == inside.sum()
            assert bucket["mean"] == pytest.approx(norms[inside].mean(), rel=1e-5)


def test_a_resumed_run_counts_each_token_once(checkpoint, dataset, tmp_path, monkeypatch):
    flags = (*FLAGS[:-4], "--batch-size", "1")
    assert extract(checkpoint, dataset, tmp_path / "full", *flags) == 0

    class StopAfterOneStep(StopRequest):  # as SIGTERM would, after the first step
        checks = 0

        def __bool__(self) -> bool:
            self.checks += 1
            if self.checks > 1 and not self.signal:
                self.set("a test")
            return super().__bool__()

    monkeypatch.setattr(stopping, "stop_on_termination", lambda: nullcontext(StopAfterOneStep()))
    assert extract(checkpoint, dataset, tmp_path / "out", *flags) == EXIT_INTERRUPTED
    monkeypatch.undo()
    unfinished = layertap.open(str(tmp_path / "out")).stats().layer(3)  # what is committed so far
    assert extract(checkpoint, dataset, tmp_path / "out", *flags) == 0
    resumed, full = (layertap.open(str(tmp_path / name)) for name in ("out", "full"))
    assert len(resumed.shards) == 2 and len(full.shards) == 1
    resumed, full = resumed.stats().layer(3), full.stats().layer(3)
    assert 0 < unfinished.count < resumed.count == full.count
    np.testing.assert_array_equal(resumed.norm_counts, full.norm_counts)
    np.testing.assert_array_equal(resumed.absmax, full.absmax)
    np.testing.assert_allclose(resumed.mean, full.mean, rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(resumed.var, full.var, rtol=1e-9, atol=1e-12)
    assert resumed.massive_tokens == full.massive_tokens
    manifest = json.loads((tmp_path / "out" / "manifest.json").read_text())
    assert manifest["statistics"]["key"] == "stats.safetensors"


def test_merge_is_exact_in_any_order():
    rng = np.random.default_rng(0)

    def part(n, shift):
        x = rng.normal(shift, 1, size=(n, 3))
        return x, {
            "count": np.array([n]),
            "mean": x.mean(0),
            "m2": ((x - x.mean(0)) ** 2).sum(0),
            "absmax": np.abs(x).max(0),
            **{
                f: np.zeros(2)
                for f in (
                    "norm_hist",
                    "norm_sum",
                    "norm_sumsq",
                    "extreme",
                    "segment_count",
                    "segment_sum",
                    "segment_sumsq",
                    "position_count",
                    "position_sum",
                    "position_sumsq",
                )
            },
            "top_norm": np.array([float(shift)]),
            "top_sample": np.array([shift]),
            "top_position": np.array([0]),
            "top_token": np.array([0]),
        }

    (xa, a), (xb, b), (xc, c) = part(5, 1000), part(1, -3), part(40, 7)
    everything = np.concatenate([xa, xb, xc])
    for merged in (merge(merge(a, b), c), merge(c, merge(b, a))):
        np.testing.assert_allclose(merged["mean"], everything.mean(0), rtol=1e-12)
        np.testing.assert_allclose(merged["m2"] / 46, everything.var(0), rtol=1e-9)
        assert list(merged["top_norm"]) == [1000, 7, -3]


def test_a_run_without_statistics_says_so(checkpoint, dataset, tmp_path):
    assert extract(checkpoint, dataset, tmp_path / "out", "--layers", "3") == 0
    for path in (tmp_path / "out" / "commits").rglob("*.json"):
        record = json.loads(path.read_text())
        record.pop("stats")
        path.write_text(json.dumps(record))
    (tmp_path / "out" / "manifest.json").unlink()
    with pytest.raises(LayerTapError, match="this run has no statistics"):
        layertap.open(str(tmp_path / "out")).stats()
