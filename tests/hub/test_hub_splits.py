"""Which files of a dataset repository hold a split: README configs, then file names."""

from __future__ import annotations

import pytest

from layertap.errors import LayerTapError
from layertap.io.hub_splits import glob_regex, layout, split_files

WHERE = "hf://datasets/org/data"


def splits(paths, metadata=None, config=None) -> dict[str, list[str]]:
    return layout(paths, metadata, config, WHERE)


def test_sharded_files_name_any_split_and_known_splits_come_first():
    paths = [
        "README.md",
        ".gitattributes",
        "data/zeta-00000-of-00001.parquet",
        "data/test-00000-of-00001.parquet",
        "data/train-00001-of-00002.parquet",
        "data/train-00000-of-00002.parquet",
    ]
    assert splits(paths) == {
        "train": ["data/train-00000-of-00002.parquet", "data/train-00001-of-00002.parquet"],
        "test": ["data/test-00000-of-00001.parquet"],
        "zeta": ["data/zeta-00000-of-00001.parquet"],
    }


def test_split_keywords_in_directory_names_win_over_file_names():
    by_name = ["train.jsonl", "dev.jsonl", "test_2.jsonl", "notes.txt.md", "extra/my-training-set.jsonl"]
    assert splits(by_name) == {
        "train": ["extra/my-training-set.jsonl", "train.jsonl"],
        "validation": ["dev.jsonl"],
        "test": ["test_2.jsonl"],
    }
    by_dir = ["train/a.parquet", "train/b.parquet", "valid/c.parquet", "test.parquet"]
    assert splits(by_dir) == {"train": ["train/a.parquet", "train/b.parquet"], "validation": ["valid/c.parquet"]}


def test_without_split_names_every_data_file_is_train_and_hidden_files_never_count():
    paths = ["corpus/part-0.parquet", "corpus/part-1.parquet", ".cache/x.parquet", "__pycache__/y.parquet", "a.py"]
    assert splits(paths) == {"train": ["corpus/part-0.parquet", "corpus/part-1.parquet"]}
    with pytest.raises(LayerTapError, match=r"hf://datasets/org/data: no data files \(.parquet"):
        splits(["README.md", "script.py"])


def test_readme_configs_choose_the_config_and_its_data_files():
    paths = ["en/train-0.parquet", "en/test-0.parquet", "fr/train-0.parquet", "fr/train-1.parquet", "main.jsonl"]
    configs = [
        {
            "config_name": "en",
            "data_files": [{"split": "train", "path": "en/train-*"}, {"split": "test", "path": "en/test-*"}],
        },
        {"config_name": "fr", "data_files": [{"split": "train", "path": ["fr/train-0.parquet", "./fr/train-1.*"]}]},
        {"config_name": "flat", "data_files": "*.jsonl"},
    ]
    metadata = {"license": "mit", "configs": configs}
    assert splits(paths, metadata, "en") == {"train": ["en/train-0.parquet"], "test": ["en/test-0.parquet"]}
    assert splits(paths, metadata, "fr") == {"train": ["fr/train-0.parquet", "fr/train-1.parquet"]}
    assert splits(paths, metadata, "flat") == {"train": ["main.jsonl"]}
    with pytest.raises(
        LayerTapError, match=r"dataset.config: .* has configurations en, fr, flat and none is the default"
    ):
        splits(paths, metadata)
    with pytest.raises(
        LayerTapError, match=r"dataset.config: 'de' is not a configuration of .* \(configs: en, fr, flat\)"
    ):
        splits(paths, metadata, "de")
    marked = {"configs": [configs[0], {**configs[1], "default": True}]}
    assert splits(paths, marked) == {"train": ["fr/train-0.parquet", "fr/train-1.parquet"]}
    assert list(splits(paths, {"configs": [configs[2]]})) == ["train"]  # the only one


def test_a_config_with_a_data_dir_reads_file_names_below_it():
    paths = ["v2/train.jsonl", "v2/validation.jsonl", "v1/train.jsonl"]
    metadata = {"configs": [{"config_name": "default", "data_dir": "v2"}]}
    assert splits(paths, metadata) == {"train": ["v2/train.jsonl"], "validation": ["v2/validation.jsonl"]}


def test_without_readme_configs_a_config_is_a_directory_as_in_the_parquet_conversion():
    paths = ["default/train/0000.parquet", "default/test/0000.parquet", "other/train/0000.parquet"]
    assert splits(paths, None, "default") == {
        "train": ["default/train/0000.parquet"],
        "test": ["default/test/0000.parquet"],
    }
    assert splits(paths, None, "other") == {"train": ["other/train/0000.parquet"]}
    with pytest.raises(
        LayerTapError, match=r"dataset.config: .* no directory 'de' \(its directories: default, other\)"
    ):
        splits(paths, None, "de")


def test_a_missing_split_names_the_field_and_the_splits():
    paths = ["data/train-00000-of-00001.parquet", "data/test-00000-of-00001.parquet"]
    assert split_files(paths, None, "test", None, WHERE) == ["data/test-00000-of-00001.parquet"]
    with pytest.raises(
        LayerTapError, match=r"dataset.split: hf://datasets/org/data has no split 'validation' \(splits: train, test\)"
    ):
        split_files(paths, None, "validation", None, WHERE)


@pytest.mark.parametrize(
    "pattern, path, matches",
    [
        ("data/train-*", "data/train-0.parquet", True),
        ("data/train-*", "data/x/train-0.parquet", False),
        ("**/train.jsonl", "train.jsonl", True),
        ("**/train.jsonl", "a/b/train.jsonl", True),
        ("en/**", "en/a/b.parquet", True),
        ("[!x]*.csv", "a.csv", True),
        ("[!x]*.csv", "x.csv", False),
        ("file?.txt", "file1.txt", True),
        ("a+b.txt", "a+b.txt", True),
    ],
)
def test_globs_match_paths_as_the_hub_does(pattern, path, matches):
    assert bool(glob_regex(pattern).match(path)) is matches
