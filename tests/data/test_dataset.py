from __future__ import annotations

import json

import numpy as np
import pytest

from layertap.data.sample import Sample
from layertap.data.text import fit_to_limit, read_texts
from layertap.datasets import load_dataset
from layertap.errors import LayerTapError
from layertap_api.spec import DatasetSpec


class CharTokenizer:
    """One token per character: keeps these tests about the reader, not about BPE."""

    def encode(self, text: str, add_special_tokens: bool = False) -> list[int]:
        assert add_special_tokens is False
        return [ord(c) for c in text]


def write(path, *records) -> str:
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return str(path)


def spec(uri: str, **fields) -> DatasetSpec:
    return DatasetSpec(uri=uri, format="text-jsonl", **fields)


def test_text_samples_in_file_order_with_line_provenance(tmp_path):
    path = tmp_path / "t.jsonl"
    path.write_text('{"text": "abc"}\n\n{"text": "hello", "id": 7}\n')
    dataset = load_dataset(spec(str(path), maxTokens=8), CharTokenizer())
    assert [s.index for s in dataset.samples] == [0, 1]
    assert [s.meta["line"] for s in dataset.samples] == [0, 2] and dataset.samples[0].meta["file"] == str(path)
    np.testing.assert_array_equal(dataset.samples[1].token_ids, [ord(c) for c in "hello"])
    assert dataset.samples[0].token_ids.dtype == np.int32 and dataset.samples[0].segments.dtype == np.int16
    assert dataset.segment_names == {0: "text"} and dataset.segment_labels(["text"]) == {0}


def test_max_samples_and_over_limit(tmp_path):
    path = write(tmp_path / "t.jsonl", {"text": "a" * 20}, {"text": "b" * 5}, {"text": "c" * 30}, {"text": "d"})
    dropped = load_dataset(spec(path, maxTokens=10), CharTokenizer())
    assert [s.index for s in dropped.samples] == [1, 3] and "2 over maxTokens (drop)" in dropped.limit_report
    cut = load_dataset(spec(path, maxTokens=10, overLimit="truncate", maxSamples=3), CharTokenizer())
    assert [len(s.token_ids) for s in cut.samples] == [10, 5, 10]
    assert cut.samples[0].meta["truncatedFrom"] == 20


def test_unknown_segments_are_named(tmp_path):
    dataset = load_dataset(spec(write(tmp_path / "t.jsonl", {"text": "x"})), CharTokenizer())
    with pytest.raises(LayerTapError, match=r"extraction.segments: \['test-input'\] are not segments"):
        dataset.segment_labels(["test-input"])


@pytest.mark.parametrize(
    "content, message",
    [
        ("", r"t.jsonl: no samples to extract"),
        ('{"text": "aaaaaaaaaaaa"}\n', r"no samples to extract \(1 over maxTokens \(drop\)\)"),
        ('{"text": 3}\n', r't.jsonl:1: expected an object with a string "text" field'),
        ('["text"]\n', r"t.jsonl:1: expected an object"),
        ('{"text": "ok"}\n{oops\n', r"t.jsonl:2: not valid JSON"),
    ],
)
def test_bad_files_name_the_file_and_line(tmp_path, content, message):
    (tmp_path / "t.jsonl").write_text(content)
    with pytest.raises(LayerTapError, match=message):
        load_dataset(spec(str(tmp_path / "t.jsonl"), maxTokens=8), CharTokenizer())


def test_missing_file_is_named(tmp_path):
    with pytest.raises(LayerTapError, match=r"nope.jsonl: no such file"):
        load_dataset(spec(str(tmp_path / "nope.jsonl")), CharTokenizer())


def test_a_directory_of_jsonl_files_is_read_in_name_order(tmp_path):
    write(tmp_path / "b.jsonl", {"text": "bb"})
    write(tmp_path / "a.jsonl", {"text": "a"}, {"text": "aaa"})
    (tmp_path / "notes.txt").write_text("ignored")
    samples = load_dataset(spec(str(tmp_path)), CharTokenizer()).samples
    assert [len(s.token_ids) for s in samples] == [1, 3, 2] and [s.index for s in samples] == [0, 1, 2]
    assert samples[2].meta == {"file": str(tmp_path / "b.jsonl"), "line": 0}


def test_parquet_rows_with_a_text_column(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pa.table({"text": ["ab", "cde", "f"], "id": [1, 2, 3]}), tmp_path / "part-0.parquet")
    samples = load_dataset(DatasetSpec(uri=str(tmp_path), format="parquet"), CharTokenizer()).samples
    assert [len(s.token_ids) for s in samples] == [2, 3, 1]
    assert samples[1].meta == {"file": str(tmp_path / "part-0.parquet"), "row": 1}

    pq.write_table(pa.table({"prompt": ["x"]}), tmp_path / "part-1.parquet")
    with pytest.raises(
        LayerTapError, match=r"dataset.column: 'text' is not a column of .*part-1.parquet \(columns: prompt\)"
    ):
        load_dataset(DatasetSpec(uri=str(tmp_path), format="parquet"), CharTokenizer())
    (tmp_path / "bad.parquet").write_bytes(b"not parquet")
    with pytest.raises(LayerTapError, match=r"bad.parquet: not a readable parquet file"):
        load_dataset(DatasetSpec(uri=str(tmp_path / "bad.parquet"), format="parquet"), CharTokenizer())


def test_fit_to_limit_skips_empty_samples():
    empty = Sample(0, np.zeros(0, np.int32), np.zeros(0, np.int16))
    kept, over, empties = fit_to_limit([empty], 8, "drop")
    assert kept == [] and over == 0 and empties == 1


def test_empty_records_are_counted_in_the_report(tmp_path):
    path = tmp_path / "t.jsonl"
    path.write_text('{"text": "abc"}\n{"text": ""}\n{"text": "de"}\n')
    dataset = load_dataset(DatasetSpec(uri=str(path), format="text-jsonl"), CharTokenizer())
    assert len(dataset.samples) == 2 and "1 empty skipped (no tokens)" in dataset.limit_report
    path.write_text('{"text": ""}\n')
    with pytest.raises(LayerTapError, match="1 empty"):
        load_dataset(DatasetSpec(uri=str(path), format="text-jsonl"), CharTokenizer())


def test_read_texts_skips_blank_lines(tmp_path):
    path = tmp_path / "t.jsonl"
    path.write_text('\n  \n{"text": "x"}\n')
    assert list(read_texts(str(path), "text-jsonl")) == [(str(path), 2, "x")]


def test_select_keeps_exactly_the_selected_records(tmp_path):
    path = write(tmp_path / "t.jsonl", *({"text": letter * (i + 1)} for i, letter in enumerate("abcdefgh")))

    def texts(**select) -> list[str]:
        samples = load_dataset(spec(path, select=select), CharTokenizer()).samples
        assert [s.meta["line"] for s in samples] == [s.index for s in samples]  # the id is the record's position
        return ["".join(map(chr, s.token_ids)) for s in samples]

    assert texts(ids=["6", "1"]) == ["bb", "ggggggg"]
    assert texts(offset=5) == ["ffffff", "ggggggg", "hhhhhhhh"]
    assert texts(offset=2, limit=2) == ["ccc", "dddd"]
    sampled = texts(sample=3, seed=1)
    assert len(sampled) == 3 and sampled == sorted(sampled, key=len) and texts(sample=3, seed=1) == sampled
    assert texts(ids=["0", "2", "4", "6"], offset=1, limit=2) == ["ccc", "eeeee"]
    kept = load_dataset(spec(path, select={"offset": 1}, maxSamples=2), CharTokenizer()).samples
    assert [s.index for s in kept] == [1, 2]  # maxSamples counts after the selection

    with pytest.raises(
        LayerTapError,
        match=(
            r"dataset.select.ids: record\(s\) 8, x not in .*t.jsonl \(8 records; a text record's id is its 0-based "
            r"position"
        ),
    ):
        load_dataset(spec(path, select={"ids": ["8", "x"]}), CharTokenizer())
    with pytest.raises(LayerTapError, match=r"dataset.select.offset: 9 is past the end of .*t.jsonl \(8 records\)"):
        load_dataset(spec(path, select={"offset": 9}), CharTokenizer())
