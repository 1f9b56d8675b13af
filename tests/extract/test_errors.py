"""Bad input: one clear error naming the file or field, exit 2, and nothing written."""

from __future__ import annotations

import json
import re
import shutil

import pytest

from .conftest import extract, write_jsonl


def corrupt_weights(ckpt, data):
    (ckpt / "model.safetensors").write_bytes(b"\x00garbage" * 10)


def other_architecture(ckpt, data):
    config = json.loads((ckpt / "config.json").read_text())
    config |= {"model_type": "gemma2", "architectures": ["Gemma2ForCausalLM"]}
    (ckpt / "config.json").write_text(json.dumps(config))


def missing_checkpoint(ckpt, data):
    shutil.rmtree(ckpt)


def empty_dataset(ckpt, data):
    data.write_text("\n\n")


def bad_json_line(ckpt, data):
    write_jsonl(data, ["fine"])
    with data.open("a") as f:
        f.write('{"text": \n')


def no_text_field(ckpt, data):
    data.write_text('{"prompt": "x"}\n')


def only_special_tokens(ckpt, data):
    write_jsonl(data, ["<|im_start|><|im_end|>"])


@pytest.mark.parametrize(
    "break_input, flags, message",
    [
        (missing_checkpoint, (), r"ckpt: checkpoint directory not found"),
        (corrupt_weights, (), r"model.safetensors"),
        (other_architecture, (), r"config.json"),
        (None, ("--layers", "2-7"), r"extraction.layers: \[4, 5, 6, 7\] out of range; .* has 4 layers"),
        (empty_dataset, (), r"texts.jsonl: no samples"),
        (bad_json_line, (), r"texts.jsonl:2: not valid JSON"),
        (no_text_field, (), r'texts.jsonl:1: expected an object with a string "text" field'),
        (None, ("--dataset", "/nonexistent.jsonl"), r"/nonexistent.jsonl: no such file"),
        (only_special_tokens, (), r"no sample has a token left to store .*excludeSpecialTokens: false"),
        (None, ("--batch-size", "0"), r"extraction.batchSize"),
    ],
)
def test_bad_input_is_one_clear_error_and_nothing_is_written(
    checkpoint, dataset, tmp_path, capsys, break_input, flags, message
):
    ckpt = shutil.copytree(checkpoint, tmp_path / "ckpt")
    if break_input is not None:
        break_input(ckpt, dataset)
    assert extract(ckpt, dataset, tmp_path / "out", *flags) == 2
    err = capsys.readouterr().err
    assert err.startswith("layertap extract: error: ") and err.count("\n") == 1, err
    assert re.search(message, err), err
    assert not (tmp_path / "out").exists()


def test_a_full_disk_is_one_error_line_not_a_traceback(checkpoint, dataset, tmp_path, monkeypatch, capsys):
    """ENOSPC ends a command with one line saying so, exit 2 (a retry on the same disk would
    fail the same way): the shard writer's own words, and the command line's for any other
    write (a prediction's candidates, a report). Raised here by the store, and by a command:
    a full filesystem needs root to make."""
    import errno
    import os

    from layertap.arc import score_cli
    from layertap.cli import main
    from layertap.io.local import LocalStore

    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(LocalStore, "put", full)
    assert extract(checkpoint, dataset, tmp_path / "out") == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err and "writing a shard failed: the disk is full (No space left on device)" in err
    monkeypatch.setattr(score_cli, "run", full)
    assert main(["score", "submission.json", "solutions.json"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("layertap score: error: the disk is full (No space left on device); free some space")
