"""SAELens (the `sae` extra) trains an SAE on a real run read directly (layertap.store.saelens):
its own trainer consumes exactly the run's tokens, every epoch, its loss falls, and a
checkpoint resumes on the very next batch."""

from __future__ import annotations

import json

import numpy as np
import pytest

import layertap
from layertap.errors import LayerTapError
from layertap.store import TokenRecords, finalize_run, open_writer, saelens

from .test_split_units import add
from .units import HIDDEN, make_units, meta_for

# importing sae_lens (it imports transformer_lens) takes ~10 s on 2 cores: imported by a
# fixture, so that deselecting the slow tier imports nothing
pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]

LAYER = 7
BATCH = 32
EPOCHS = 15


@pytest.fixture(scope="module")
def sae_lens():
    return pytest.importorskip("sae_lens")


@pytest.fixture(scope="module", autouse=True)
def torch(sae_lens):
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # an SAE this small: two threads spin against each other on a busy machine (10x slower)
    yield torch
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    uri = str(tmp_path_factory.mktemp("saelens") / "run")
    with open_writer(uri, meta_for(), shard_bytes=4_000) as writer:
        for unit in make_units(30, seed=5):
            add(writer, unit)  # with the statistics the scaling factor comes from
    finalize_run(uri)
    return layertap.open(uri)


@pytest.fixture
def new_sae(sae_lens, torch):
    def make(**options):
        config = sae_lens.TopKTrainingSAEConfig(**{"d_in": HIDDEN, "d_sae": 48, "k": 4, **options})
        torch.manual_seed(0)
        return sae_lens.TopKTrainingSAE(config)

    return make


def recording(trainer) -> list:
    """The batches SAELens' own loop takes from its data provider, as numpy."""
    seen = []
    provider = trainer.data_provider

    def taken():
        for batch in provider:
            seen.append(batch.numpy().copy())
            yield batch

    trainer.data_provider = taken()
    return seen


def unexplained(sae, x: np.ndarray) -> float:
    """Squared reconstruction error over the variance, in the run's units."""
    import torch

    with torch.no_grad():
        out = sae(torch.from_numpy(x)).numpy()
    return float(((out - x) ** 2).sum() / ((x - x.mean(0)) ** 2).sum())


def rows(x: np.ndarray) -> np.ndarray:
    return x[np.lexsort(x.T[::-1])]


def test_sae_lens_trains_on_exactly_the_runs_tokens_and_its_loss_falls(run, new_sae, tmp_path):
    expected = run.read_layer(LAYER).activations  # float32 [tokens, D]
    sae = new_sae(normalize_activations="expected_average_only_in")
    before = unexplained(sae, expected)
    trainer = saelens.trainer(run, LAYER, sae, tokens=EPOCHS * run.num_tokens, batch_size=BATCH, lr=3e-3)
    assert trainer.activation_scaler.scaling_factor == pytest.approx(
        np.sqrt(HIDDEN) / np.linalg.norm(expected, axis=1).mean(), rel=1e-2
    )  # from run.stats(): SAELens read no batches to estimate it
    seen = recording(trainer)
    trainer.fit()

    assert trainer.n_training_samples == EPOCHS * run.num_tokens  # SAELens' own count
    assert trainer.n_training_steps >= 200
    consumed = np.concatenate(seen)
    assert len(consumed) == EPOCHS * run.num_tokens
    for epoch in np.split(consumed, EPOCHS):  # every epoch: each of the run's tokens once, its own values
        np.testing.assert_array_equal(rows(epoch), rows(expected))
    assert not np.array_equal(consumed[: run.num_tokens], expected)  # shuffled
    # the scaling factor is folded into the weights: the SAE reconstructs the run's units
    assert sae.cfg.normalize_activations == "none"
    after = unexplained(sae, expected)
    assert after < 0.7 * before, (before, after)  # Gaussian rows: a fall, not a perfect fit
    _, config = sae.save_model(tmp_path / "sae")
    provenance = json.loads(config.read_text())["metadata"]["layertap"]
    assert provenance == {"run": run.uri, "layer": LAYER, "site": "resid_post"}


def test_a_checkpoint_resumes_on_the_next_batch(run, new_sae, tmp_path):
    options = {"tokens": 2 * run.num_tokens, "batch_size": BATCH}
    whole = saelens.trainer(run, LAYER, new_sae(), **options, checkpoint_path=tmp_path, n_checkpoints=1)
    seen = recording(whole)
    whole.fit()
    (checkpoint,) = [p for p in tmp_path.iterdir() if not p.name.startswith("final_")]
    samples = int(checkpoint.name)  # SAELens names a checkpoint by the samples seen
    steps = int(np.searchsorted(np.cumsum([len(batch) for batch in seen]), samples)) + 1

    resumed = saelens.trainer(run, LAYER, new_sae(), **options, resume=checkpoint)
    assert resumed.n_training_samples == samples
    rest = recording(resumed)
    resumed.fit()
    assert len(rest) == len(seen) - steps
    for a, b in zip(rest, seen[steps:]):
        np.testing.assert_array_equal(a, b)


def test_a_resume_from_a_directory_it_did_not_write_is_refused(run, new_sae, tmp_path):
    with pytest.raises(LayerTapError, match="no layertap-loader.json there, so not a checkpoint this trainer wrote"):
        saelens.trainer(run, LAYER, new_sae(), tokens=64, batch_size=BATCH, resume=tmp_path)


def test_an_sae_of_another_width_is_refused(run, sae_lens):
    config = sae_lens.TopKTrainingSAEConfig(d_in=HIDDEN + 1, d_sae=8, k=2)
    with pytest.raises(LayerTapError, match=f"has {HIDDEN} dimensions, the SAE's d_in is {HIDDEN + 1}"):
        saelens.trainer(run, LAYER, sae_lens.TopKTrainingSAE(config), tokens=64, batch_size=BATCH)


def test_sae_lens_on_the_demo_run(new_sae, tmp_path):
    """docs/train-sae.md's route on `layertap demo`'s run: real (random-model) activations."""
    from layertap.cli import main

    assert main(["demo", "--workdir", str(tmp_path), "--tasks", "2", "--no-progress"]) == 0
    run = layertap.open(str(tmp_path / "activations-2-tasks"))
    epochs = -(-300 * 256 // run.num_tokens)  # a few hundred steps of 256 tokens, in whole epochs
    sae = new_sae(d_in=64, d_sae=256, k=8, normalize_activations="expected_average_only_in")
    before = unexplained(sae, run.read_layer(3).activations)
    trainer = saelens.trainer(run, 3, sae, tokens=epochs * run.num_tokens, batch_size=256, lr=3e-3)
    trainer.fit()
    assert trainer.n_training_steps >= 300 and trainer.n_training_samples == epochs * run.num_tokens
    after = unexplained(sae, run.read_layer(3).activations)
    assert after < 0.1 < 0.9 < before, (before, after)


def test_attention_heads_are_flattened_to_one_vector_per_token(new_sae, tmp_path):
    uri = str(tmp_path / "heads")
    with open_writer(uri, {**meta_for(), "sites": ["attn_z"]}, shard_bytes=4_000) as writer:
        for unit in make_units(6, seed=2):
            heads = unit.activations.reshape(*unit.activations.shape[:2], 4, HIDDEN // 4)  # [L, N, heads, head size]
            columns = {name: getattr(unit, name) for name in ("token_ids", "sample_index", "position", "segment")}
            writer.add(unit.unit_id, TokenRecords.of({"attn_z": heads}, cell=unit.cell, **columns), unit.samples)
    finalize_run(uri)
    run = layertap.open(uri)
    assert run.shape("attn_z") == (4, HIDDEN // 4)
    trainer = saelens.trainer(run, LAYER, new_sae(), tokens=run.num_tokens, batch_size=BATCH, site="attn_z")
    seen = recording(trainer)
    trainer.fit()
    expected = run.read_layer(LAYER, site="attn_z").activations.reshape(run.num_tokens, HIDDEN)
    np.testing.assert_array_equal(rows(np.concatenate(seen)), rows(expected))
