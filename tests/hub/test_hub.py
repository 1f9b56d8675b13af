"""hf:// models and datasets resolved through huggingface_hub from a prepared cache: by
branch, tag and commit; only the cache when offline or when the Hub cannot be reached; clear
errors naming the reference, the field and what the repository has."""

from __future__ import annotations

import json

import huggingface_hub
import numpy as np
import pytest
from hub_cache import directory_files, parquet_bytes, repo_folder, write_commit

from layertap.datasets import load_dataset
from layertap.errors import LayerTapError
from layertap.io import hub as hf
from layertap.model.checkpoint import TOKENIZER_FILES, checkpoint_files
from layertap.model.config import DecoderConfig
from layertap_api import contract
from layertap_api.hub import HubRef, parse_hub_uri
from layertap_api.spec import DatasetSpec

TEXTS = ["alpha beta", "gamma", "delta epsilon zeta", "eta", "theta iota", "kappa", "lambda mu nu"]


class CharTokenizer:
    """One token per character: these tests are about which records are read."""

    def encode(self, text: str, add_special_tokens: bool = False) -> list[int]:
        return [ord(c) for c in text]


def texts_of(dataset) -> list[str]:
    return ["".join(map(chr, s.token_ids)) for s in dataset.samples]


# -- models ---------------------------------------------------------------------------------


def test_a_model_resolves_by_default_branch_branch_tag_and_commit(hub, checkpoint):
    first = write_commit(hub, "org/tiny", directory_files(checkpoint), refs=("main", "v1"))
    changed = {
        **directory_files(checkpoint),
        "config.json": (checkpoint / "config.json").read_bytes().replace(b"4", b"4 "),
    }
    second = write_commit(hub, "org/tiny", changed, refs=("dev",))
    snapshots = repo_folder(hub, "org/tiny") / "snapshots"

    for uri, commit in [
        ("hf://org/tiny", first),
        ("hf://org/tiny@main", first),
        ("hf://org/tiny@v1", first),
        (f"hf://org/tiny@{first}", first),
        ("hf://org/tiny@dev", second),
        (f"hf://org/tiny@{second}", second),
    ]:
        assert hf.model_dir(uri) == snapshots / commit, uri
    local = hf.model_dir("hf://org/tiny")
    assert checkpoint_files(local) == checkpoint_files(checkpoint)
    assert DecoderConfig.from_file(local / "config.json") == DecoderConfig.from_file(checkpoint / "config.json")
    assert (local / "model.safetensors").read_bytes() == (checkpoint / "model.safetensors").read_bytes()


@pytest.mark.parametrize(
    "uri, message",
    [
        (
            "hf://org/missing",
            r"hf://org/missing: not in the local cache .*hf-cache and HF_HUB_OFFLINE is set; set HF_HUB_CACHE",
        ),
        ("hf://org/tiny@v9", r"hf://org/tiny@v9: not in the local cache .*\(`hf download org/tiny --revision v9`"),
        ("hf://org/tiny@" + "0" * 40, r"hf://org/tiny@0{40}: not in the local cache"),
        ("hf://org--tiny", r"model.uri: 'hf://org--tiny': 'org--tiny' is not a model repository id"),
        (
            "hf://org/tiny@../../x",
            r"model.uri: .* the revision after '@' is empty, has spaces, '\.\.' or a leading '/'",
        ),
    ],
)
def test_a_model_the_cache_lacks_offline_is_named_with_what_to_do(hub, checkpoint, uri, message):
    write_commit(hub, "org/tiny", directory_files(checkpoint))
    with pytest.raises(LayerTapError, match=message):
        hf.model_dir(uri)


def test_when_the_hub_cannot_be_reached_the_cache_serves_and_a_gap_is_named(hub, checkpoint, monkeypatch, caplog):
    """Not offline, but the Hub's endpoint refuses connections (a closed local port: no network)."""
    monkeypatch.delenv(contract.ENV_HF_HUB_OFFLINE)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(huggingface_hub.constants, "ENDPOINT", "http://127.0.0.1:9")
    commit = write_commit(hub, "org/tiny", directory_files(checkpoint))
    assert hf.model_dir("hf://org/tiny").name == commit
    assert "hf://org/tiny: the Hub cannot be reached" in caplog.text
    with pytest.raises(
        LayerTapError, match=r"hf://org/other: not in the local cache .* and the Hub cannot be reached \(ConnectError"
    ):
        hf.model_dir("hf://org/other")


def test_only_the_files_layertap_reads_are_fetched():
    repository = [
        "config.json",
        "generation_config.json",
        "model.safetensors",
        "model-00001-of-00002.safetensors",
        "model.safetensors.index.json",
        "pytorch_model.bin",
        "onnx/model.safetensors",
        "original/consolidated.pth",
        "README.md",
        *TOKENIZER_FILES,
        "tokenizer.model",
    ]
    kept = set(
        huggingface_hub.utils.filter_repo_objects(
            repository, allow_patterns=list(hf.MODEL_FILES), ignore_patterns=list(hf.TOP_LEVEL_ONLY)
        )
    )
    assert kept == {
        "config.json",
        "model.safetensors",
        "model-00001-of-00002.safetensors",
        "model.safetensors.index.json",
        *TOKENIZER_FILES,
        "tokenizer.model",
    }


def test_the_cache_and_offline_are_read_from_the_environment_each_time():
    assert hf.hub_cache({"HF_HUB_CACHE": "/v/hub", "HF_HOME": "/h"}) == hf.Path("/v/hub")
    assert hf.hub_cache({"HF_HOME": "/h"}) == hf.Path("/h/hub")
    assert hf.hub_cache({"XDG_CACHE_HOME": "/x"}) == hf.Path("/x/huggingface/hub")
    assert hf.offline({"HF_HUB_OFFLINE": "1"}) and hf.offline({"HF_HUB_OFFLINE": "true"})


@pytest.mark.parametrize(
    "uri, kind, expected",
    [
        ("hf://Qwen/Qwen2.5-0.5B", "model", HubRef("Qwen/Qwen2.5-0.5B", "model")),
        ("hf://gpt2@refs/pr/1", "model", HubRef("gpt2", "model", "refs/pr/1")),
        ("hf://datasets/org/data@v1.0", "dataset", HubRef("org/data", "dataset", "v1.0")),
        ("hf://org/data", "dataset", HubRef("org/data", "dataset")),
    ],
)
def test_hub_references_parse_as_the_hub_spells_them(uri, kind, expected):
    ref = parse_hub_uri(uri, kind)
    assert ref == expected and not ref.pinned and ref.at("a" * 40).pinned
    assert str(ref).replace("datasets/", "") == uri.replace("datasets/", "")


@pytest.mark.parametrize(
    "uri", ["hf://", "hf://a/b/c", "hf://datasets/a/b", "hf://a/b@", "hf://-a/b", "hf://a/b.git", "gs://a/b"]
)
def test_malformed_hub_references_are_refused(uri):
    with pytest.raises(ValueError, match=r"expected hf://ORG/NAME or hf://ORG/NAME@REVISION"):
        parse_hub_uri(uri, "model")


# -- datasets -------------------------------------------------------------------------------


def parquet_repo(hub, texts=TEXTS, refs=("main",), **files) -> str:
    ids = list(range(len(texts)))
    return write_commit(
        hub,
        "org/data",
        {
            "README.md": b"---\nlicense: mit\n---\n# data\n",
            "data/train-00000-of-00001.parquet": parquet_bytes(text=texts, id=ids),
            "data/test-00000-of-00001.parquet": parquet_bytes(text=["test only"], id=[0]),
            **files,
        },
        repo_type="dataset",
        refs=refs,
    )


def hub_spec(uri="hf://org/data", **fields) -> DatasetSpec:
    return DatasetSpec(uri=uri, format=fields.pop("format", "parquet"), maxTokens=64, **fields)


def test_a_hub_dataset_reads_like_the_same_file_given_locally(hub, tmp_path):
    commit = parquet_repo(hub)
    local = tmp_path / "local"
    local.mkdir()
    (local / "part.parquet").write_bytes(parquet_bytes(text=TEXTS, id=list(range(len(TEXTS)))))

    for fields in (
        {},
        {"select": {"offset": 1, "sample": 4, "seed": 3}},
        {"select": {"ids": ["5", "2"]}},
        {"maxSamples": 3},
    ):
        from_hub = load_dataset(hub_spec(**fields), CharTokenizer())
        from_disk = load_dataset(DatasetSpec(uri=str(local), format="parquet", maxTokens=64, **fields), CharTokenizer())
        assert texts_of(from_hub) == texts_of(from_disk) and texts_of(from_hub), fields
        assert [s.index for s in from_hub.samples] == [s.index for s in from_disk.samples]
        assert [s.meta["row"] for s in from_hub.samples] == [s.meta["row"] for s in from_disk.samples]

    dataset = load_dataset(hub_spec(), CharTokenizer())
    name = f"hf://datasets/org/data@{commit}/data/train-00000-of-00001.parquet"
    assert dataset.samples[0].meta == {"file": name, "row": 0}  # by repository and commit, not the cache path
    assert list(dataset.files) == [name] and dataset.files[name]["bytes"] > 0
    assert texts_of(load_dataset(hub_spec(split="test"), CharTokenizer())) == ["test only"]
    assert texts_of(load_dataset(hub_spec(uri=f"hf://datasets/org/data@{commit}"), CharTokenizer())) == TEXTS


def test_a_jsonl_dataset_by_file_names_and_a_column_other_than_text(hub):
    lines = "".join(json.dumps({"body": text, "n": i}) + "\n" for i, text in enumerate(TEXTS))
    write_commit(
        hub, "org/data", {"train.jsonl": lines.encode(), "validation.jsonl": b'{"body": "v"}\n'}, repo_type="dataset"
    )
    assert texts_of(load_dataset(hub_spec(format="text-jsonl", column="body"), CharTokenizer())) == TEXTS
    assert texts_of(
        load_dataset(hub_spec(format="text-jsonl", column="body", split="validation"), CharTokenizer())
    ) == ["v"]
    with pytest.raises(
        LayerTapError,
        match=(
            r'train.jsonl:1: expected an object with a string "text" field \(dataset.column; this record has body, n\)'
        ),
    ):
        load_dataset(hub_spec(format="text-jsonl"), CharTokenizer())


def test_readme_configs_pick_the_files_of_a_config(hub):
    card = """---
configs:
- config_name: short
  data_files:
  - split: train
    path: short/*.parquet
- config_name: long
  default: true
  data_files: long/*.parquet
---
"""
    files = {
        "README.md": card.encode(),
        "short/a.parquet": parquet_bytes(text=["s1", "s2"]),
        "long/a.parquet": parquet_bytes(text=["l1"]),
        "long/b.parquet": parquet_bytes(text=["l2", "l3"]),
    }
    write_commit(hub, "org/data", files, repo_type="dataset")
    assert texts_of(load_dataset(hub_spec(), CharTokenizer())) == ["l1", "l2", "l3"]
    assert texts_of(load_dataset(hub_spec(config="short"), CharTokenizer())) == ["s1", "s2"]
    with pytest.raises(
        LayerTapError, match=r"dataset.config: 'medium' is not a configuration of .* \(configs: short, long\)"
    ):
        load_dataset(hub_spec(config="medium"), CharTokenizer())


@pytest.mark.parametrize(
    "fields, message",
    [
        (
            {"column": "txt"},
            r"dataset.column: 'txt' is not a column of "
            r"hf://datasets/org/data@[0-9a-f]{40}/data/train-00000-of-00001.parquet \(columns: text, id\)",
        ),
        ({"column": "id"}, r"dataset.column: 'id' of .*train-00000-of-00001.parquet holds int64, not strings"),
        (
            {"split": "validation"},
            r"dataset.split: hf://datasets/org/data \(commit [0-9a-f]{40}\) has no split 'validation' \(splits: "
            r"train, test\)",
        ),
        (
            {"format": "text-jsonl"},
            r"dataset.format: split 'train' of .* has no text-jsonl files \(.jsonl\); its files: "
            r"data/train-00000-of-00001.parquet",
        ),
        (
            {"uri": "hf://org/absent"},
            r"hf://datasets/org/absent: not in the local cache .* HF_HUB_OFFLINE is set; .*`hf download org/absent "
            r"--repo-type dataset`",
        ),
        ({"uri": "hf://org/data@v2"}, r"hf://datasets/org/data@v2: not in the local cache"),
    ],
)
def test_a_bad_dataset_reference_is_named_before_any_record_is_used(hub, fields, message):
    parquet_repo(hub)
    with pytest.raises(LayerTapError, match=message):
        load_dataset(hub_spec(**fields), CharTokenizer())


def test_hub_fields_belong_to_hub_datasets():
    with pytest.raises(ValueError, match=r"dataset.split: only hf:// datasets have splits and configs"):
        DatasetSpec(uri="/data/x.parquet", format="parquet", split="test")
    with pytest.raises(ValueError, match=r"dataset.config: only hf:// datasets"):
        DatasetSpec(uri="/data/x.parquet", format="parquet", config="en")
    with pytest.raises(
        ValueError, match=r"dataset.format: an hf:// dataset is read as text \(parquet or text-jsonl\), not arc-json"
    ):
        DatasetSpec(uri="hf://org/arc", format="arc-json")
    spec = DatasetSpec(uri="hf://org/data@refs/convert/parquet", format="parquet", config="default")
    assert spec.to_wire()["split"] == "train" and spec.to_wire()["column"] == "text"


def test_a_local_parquet_column_other_than_text(tmp_path):
    (tmp_path / "p.parquet").write_bytes(parquet_bytes(prompt=["ab", "c"]))
    spec = DatasetSpec(uri=str(tmp_path / "p.parquet"), format="parquet", column="prompt")
    assert [len(s.token_ids) for s in load_dataset(spec, CharTokenizer()).samples] == [2, 1]
    np.testing.assert_array_equal(load_dataset(spec, CharTokenizer()).samples[1].token_ids, [ord("c")])
