"""Bad input to `layertap report`: a clear message naming what is wrong, exit 2, and nothing
written (not even an empty directory)."""

from __future__ import annotations

import shutil

import numpy as np
import pytest
from safetensors.numpy import save_file

from layertap.cli import main


def refuse(capsys, argv, *expected) -> str:
    assert main(argv) == 2
    err = capsys.readouterr().err
    for text in expected:
        assert text in err, err
    return err


@pytest.fixture
def out(tmp_path):
    path = tmp_path / "report"
    yield path
    assert not path.exists(), "a refused report left files behind"
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".report")] == []


def test_a_run_still_being_written(arc_run, tmp_path, out, capsys):
    unfinished = tmp_path / "unfinished"
    shutil.copytree(arc_run, unfinished, ignore=shutil.ignore_patterns("manifest.json", ".jax-cache"))
    refuse(
        capsys,
        ["report", str(unfinished), "--output", str(out)],
        f"{unfinished} is still being written",
        "the report reads a finished run",
    )


def test_not_a_run(tmp_path, out, capsys):
    refuse(capsys, ["report", str(tmp_path), "--output", str(out)], "not a LayerTap run")


@pytest.mark.parametrize(
    "flags, expected",
    [
        (["--layers", "0,2"], ["--layers: layer 0 is not stored", "(layers: [1, 2, 3])"]),
        (["--layer", "7"], ["--layer: layer 7 is not stored"]),
        (["--site", "mlp_out"], ["--site: site 'mlp_out' is not stored", "(sites: resid_post)"]),
        (["--tasks", "017c7c7b,ffffffff"], ["--tasks: task 'ffffffff' is not in", "007bbfb7, 00d62c1b, 017c7c7b"]),
        (["--quantity", "pca:0"], ["pca:K needs a component K >= 1"]),
        (["--quantity", "mean"], ["expected norm, pca:K or direction:FILE"]),
        (["--quantity", "norm", "--feature", "3"], ["--feature and --tensor go with --quantity direction:FILE"]),
    ],
)
def test_what_the_run_does_not_hold(arc_run, out, capsys, flags, expected):
    refuse(capsys, ["report", str(arc_run), "--output", str(out), *flags], *expected)


def test_directions_of_the_wrong_shape_or_file(arc_run, tmp_path, out, capsys):
    rng = np.random.default_rng(0)
    np.save(tmp_path / "wide.npy", rng.normal(size=65))
    np.save(tmp_path / "matrix.npy", rng.normal(size=(10, 64)))
    np.save(tmp_path / "odd.npy", rng.normal(size=(10, 63)))
    np.save(tmp_path / "zero.npy", np.zeros(64))
    save_file({"W_dec": rng.normal(size=(8, 64)), "W_enc": rng.normal(size=(64, 8))}, str(tmp_path / "sae.safetensors"))
    (tmp_path / "vector.txt").write_text("1 2 3")
    np.save(tmp_path / "words.npy", np.array(["up"] * 64))
    np.save(tmp_path / "complex.npy", rng.normal(size=64) * 1j)
    (tmp_path / "empty.npy").write_bytes(b"")
    cases = [
        (["direction:" + str(tmp_path / "words.npy")], ["words.npy holds <U2 values; a direction is real numbers"]),
        (["direction:" + str(tmp_path / "complex.npy")], ["complex.npy holds complex128 values"]),
        (["direction:" + str(tmp_path / "empty.npy")], ["empty.npy is not a numpy array file"]),
        (["direction:" + str(tmp_path / "wide.npy")], ["wide.npy has width 65; the site is 64 wide"]),
        (
            ["direction:" + str(tmp_path / "matrix.npy")],
            ["matrix.npy is a matrix [10, 64]; pick a feature with --feature N"],
        ),
        (
            ["direction:" + str(tmp_path / "matrix.npy"), "--feature", "10"],
            ["--feature 10: matrix.npy has features 0..9"],
        ),
        (["direction:" + str(tmp_path / "odd.npy"), "--feature", "1"], ["no axis of the site's width 64"]),
        (["direction:" + str(tmp_path / "zero.npy")], ["zero.npy is zero; it has no direction"]),
        (
            ["direction:" + str(tmp_path / "sae.safetensors")],
            ["holds 2 tensors (W_dec, W_enc); name one with --tensor"],
        ),
        (["direction:" + str(tmp_path / "sae.safetensors"), "--tensor", "b_enc"], ["--tensor b_enc: not in"]),
        (["direction:" + str(tmp_path / "vector.txt")], ["should be a .npy or .safetensors file"]),
        (["direction:" + str(tmp_path / "missing.npy")], ["missing.npy is not a file"]),
    ]
    for flags, expected in cases:
        argv = ["report", str(arc_run), "--output", str(out), "--quantity", *flags]
        refuse(capsys, argv, *expected)
        assert not out.exists()


def test_an_output_that_is_not_a_report_is_never_replaced(arc_run, tmp_path, capsys):
    taken = tmp_path / "notes"
    taken.mkdir()
    (taken / "thesis.tex").write_text("precious")
    refuse(
        capsys,
        ["report", str(arc_run), "--output", str(taken)],
        f"--output: {taken} exists and is not a LayerTap report",
    )
    assert [p.name for p in taken.iterdir()] == ["thesis.tex"]


def test_a_report_replaces_an_earlier_report(arc_run, tmp_path, capsys):
    out = tmp_path / "again"
    out.mkdir()
    (out / "report.html").write_text("an earlier report")
    (out / "task-gone.png").write_bytes(b"old")
    assert main(["report", str(arc_run), "--output", str(out), "--tasks", "007bbfb7", "--layers", "3"]) == 0
    assert "layertap report: 5 figures" in capsys.readouterr().out
    assert "task-gone.png" not in {p.name for p in out.iterdir()} and "task-007bbfb7.png" in {
        p.name for p in out.iterdir()
    }
    assert sorted(p.name for p in tmp_path.iterdir()) == ["again"]  # no staging left beside it


@pytest.mark.parametrize("command", ["report", "verify"])
def test_a_file_or_nothing_where_a_run_belongs(tmp_path, out, capsys, command):
    (tmp_path / "a-file").write_text("x")
    argv = [command, str(tmp_path / "a-file")] + (["--output", str(out)] if command == "report" else [])
    refuse(capsys, argv, "a-file is a file: a run is a directory")
    argv[1] = str(tmp_path / "nothing")
    refuse(capsys, argv, "nothing is not there: a run is a directory")
