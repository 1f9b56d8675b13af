from __future__ import annotations

import argparse
import json

import pytest
import yaml

from layertap.errors import LayerTapError
from layertap.model.tap import default_layers
from layertap.run import cli
from layertap.run.config import parse_layers

RESOURCE = """
apiVersion: layertap.dev/v1alpha1
kind: ActivationExtraction
metadata: {name: arc-0}
spec:
  model: {uri: /models/qwen, dtype: float32}
  dataset: {uri: /data/texts.jsonl, format: text-jsonl, maxTokens: 512}
  extraction: {layers: [10, 12], positions: last}
  output: {uri: gs://bucket/runs/arc-0}
  resources: {accelerator: tpu-v5-lite-podslice, topology: 4x4, mesh: {model: 2}}
  image: example/worker:1
"""


def parse(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    cli.add_arguments(parser, cli.EXTRACT)
    return parser.parse_args(argv)


def test_a_whole_resource_is_read_and_cluster_fields_are_left_to_the_operator(tmp_path):
    (tmp_path / "ae.yaml").write_text(RESOURCE)
    job = cli.job_from_args(parse("--config", str(tmp_path / "ae.yaml")), cli.EXTRACT, env={})
    model_axis = job.mesh.model
    assert job.model.uri == "/models/qwen" and job.dataset.max_tokens == 512
    assert job.extraction.layers == [10, 12] and job.extraction.positions == "last"
    assert model_axis == 2
    assert job.devices is None  # run by hand: the TPUs are the cluster's, this machine runs on what it has


def test_flags_override_the_file(tmp_path):
    (tmp_path / "ae.yaml").write_text(RESOURCE)
    args = parse(
        "--config",
        str(tmp_path / "ae.yaml"),
        "--layers",
        "3-5",
        "--positions",
        "all",
        "--batch-size",
        "16",
        "--no-exclude-special-tokens",
        "--model-parallel",
        "1",
    )
    job = cli.job_from_args(args, cli.EXTRACT, env={})
    model_axis = job.mesh.model
    assert job.extraction.layers == [3, 4, 5] and job.extraction.positions == "all"
    assert job.extraction.batch_size == 16 and job.extraction.exclude_special_tokens is False
    assert job.dataset.max_tokens == 512 and model_axis == 1


def test_the_spec_comes_from_the_environment_in_a_cluster():
    env = {
        "LAYERTAP_SPEC": (
            '{"model": {"uri": "/m"}, "dataset": {"uri": "/d", "format": "arc-json"}, "output": {"uri": "/o"}}'
        )
    }
    job = cli.job_from_args(parse(), cli.EXTRACT, env=env)
    model_axis = job.mesh.model
    assert job.dataset.format == "arc-json" and model_axis == 1


def test_in_a_cluster_the_worker_expects_the_resources_devices():
    resource = yaml.safe_load(RESOURCE)
    env = {"LAYERTAP_SPEC": json.dumps(resource["spec"])}
    devices = cli.job_from_args(parse(), cli.EXTRACT, env=env).devices
    assert (devices.platform, devices.per_host, devices.accelerator) == ("tpu", 4, "tpu-v5-lite-podslice")


@pytest.mark.parametrize(
    "text, message",
    [
        ("spec:\n  model: {uri: /m}\n  output: {uri: /o}\n", r"ae.yaml: dataset: Field required"),
        (
            "model: {uri: /m, dtype: float64}\ndataset: {uri: /d, format: text-jsonl}\noutput: {uri: /o}\n",
            r"ae.yaml: model.dtype",
        ),
        (
            "model: {uri: /m}\ndataset: {uri: /d, format: text-jsonl, maxTokenz: 3}\noutput: {uri: /o}\n",
            r"dataset.maxTokenz",
        ),
        ("- just a list\n", r"ae.yaml: expected an ActivationExtraction"),
        # had listed the Pod's fields as unknown ones of a spec
        ("kind: Pod\nspec: {containers: []}\n", r"ae.yaml: kind 'Pod' is not ActivationExtraction: give an"),
        ("model: {uri: [\n", r"ae.yaml: not valid YAML"),
    ],
)
def test_bad_config_names_the_file_and_field(tmp_path, text, message):
    (tmp_path / "ae.yaml").write_text(text)
    with pytest.raises(LayerTapError, match=message):
        cli.job_from_args(parse("--config", str(tmp_path / "ae.yaml")), cli.EXTRACT, env={})


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--model", "/m", "--dataset", "/d", "--output", "/o"], r"^command line: dataset.format \(--format\): Field"),
        (["--model", "/m"], r"dataset \(--dataset\): Field required; output \(--output\): Field required$"),
        (
            ["--model", "/m", "--dataset", "/d", "--format", "text-jsonl", "--output", "/o", "--max-tokens", "3"],
            r"dataset.maxTokens \(--max-tokens\): Input should be greater than or equal to",
        ),
    ],
)
def test_flags_alone_errors_name_the_flag(argv, message):
    with pytest.raises(LayerTapError, match=message):
        cli.job_from_args(parse(*argv), cli.EXTRACT, env={})


def test_the_mesh_flag_error_is_left_as_it_is():
    """Its field `model` is the mesh's, not the model's: not "(--model)"."""
    argv = ["--model", "/m", "--dataset", "/d", "--format", "text-jsonl", "--output", "/o", "--model-parallel", "0"]
    with pytest.raises(LayerTapError, match=r"^--model-parallel: model: Input should be greater than or equal to 1$"):
        cli.job_from_args(parse(*argv), cli.EXTRACT, env={})


def test_missing_config_file():
    with pytest.raises(LayerTapError, match="nope.yaml: no such config file"):
        cli.job_from_args(parse("--config", "nope.yaml"), cli.EXTRACT, env={})


def test_default_layers_are_the_upper_part_of_the_model():
    assert default_layers(24) == list(range(10, 24))
    assert default_layers(28) == list(range(11, 28))
    assert default_layers(4) == [1, 2, 3]


def test_layer_ranges():
    assert parse_layers("10-13") == [10, 11, 12, 13]
    assert parse_layers("1,3,5-6") == [1, 3, 5, 6]
    for bad in ("ten", "3-", "-3", "3--5", ""):
        with pytest.raises(LayerTapError, match="--layers"):
            parse_layers(bad)


def test_selection_flags_set_dataset_select(tmp_path):
    (tmp_path / "ae.yaml").write_text(RESOURCE)
    config = ("--config", str(tmp_path / "ae.yaml"))
    job = cli.job_from_args(
        parse(*config, "--task-ids", "3,1,7", "--offset", "1", "--sample", "2", "--select-seed", "9", "--limit", "1"),
        cli.EXTRACT,
        env={},
    )
    selection = job.dataset.select
    assert (selection.ids, selection.offset, selection.sample, selection.seed, selection.limit) == (
        ["3", "1", "7"],
        1,
        2,
        9,
        1,
    )
    assert job.dataset.max_tokens == 512  # the rest of dataset is the file's
    # unset: no selection, outputs as before
    assert cli.job_from_args(parse(*config), cli.EXTRACT, env={}).dataset.select is None
    assert cli.job_from_args(parse(*config, "--limit", "5"), cli.EXTRACT, env={}).dataset.select.limit == 5
    with pytest.raises(
        LayerTapError, match=r"ae.yaml: dataset.select.offset: Input should be greater than or equal to 0"
    ):
        cli.job_from_args(parse(*config, "--offset", "-1"), cli.EXTRACT, env={})
    with pytest.raises(LayerTapError, match=r"dataset.select.ids: 3 listed more than once"):
        cli.job_from_args(parse(*config, "--task-ids", "3,3"), cli.EXTRACT, env={})
