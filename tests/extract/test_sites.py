"""`extraction.sites` end to end: what `layertap extract` stores at each site equals the
forward's value there, read back by layer and site; the default stays resid_post as before."""

from __future__ import annotations

import json

import jax.numpy as jnp
import numpy as np
import pytest
from safetensors import safe_open

import layertap
from layertap.errors import LayerTapError
from layertap.model import LayerTap, load_checkpoint, load_tokenizer, make_extract_fn, special_token_ids
from layertap.store import dtypes

from .conftest import TEXTS, extract

LAYERS = [1, 3]
SITES = ["resid_pre", "attn_z", "attn_out", "resid_mid", "mlp_hidden", "mlp_out", "resid_post"]


@pytest.fixture(scope="module")
def expected(checkpoint):
    """site -> [L, kept tokens of every sample in order, ...] from a plain forward per sample."""
    config, params = load_checkpoint(checkpoint, jnp.float32)
    tokenizer = load_tokenizer(checkpoint)
    special = np.array(sorted(special_token_ids(tokenizer)))
    forward = make_extract_fn(config, LayerTap.for_model(LAYERS, config.num_hidden_layers, sites=SITES))
    parts: dict[str, list] = {site: [] for site in SITES}
    for text in TEXTS:
        ids = np.asarray(tokenizer.encode(text, add_special_tokens=False), np.int32)
        out = forward(params, ids[None], np.arange(len(ids), dtype=np.int32)[None], np.ones((1, len(ids)), np.int32))
        kept = ~np.isin(ids, special)
        for site in SITES:
            parts[site].append(np.asarray(out[site])[:, 0, kept])
    return {site: np.concatenate(values, axis=1) for site, values in parts.items()}


def sorted_rows(run, layer, site):
    batch = run.read_layer(layer, site=site)
    return batch.activations[np.lexsort((batch.position, batch.sample_index))]


def test_every_site_is_stored_and_read_back_by_layer_and_site(checkpoint, dataset, tmp_path, expected):
    flags = ("--layers", "1,3", "--sites", "mlp_hidden,resid_pre,attn_z,resid_post,attn_out,mlp_out,resid_mid")
    assert (
        extract(checkpoint, dataset, tmp_path / "out", *flags, "--storage-dtype", "float32", "--batch-size", "2") == 0
    )
    run = layertap.open(str(tmp_path / "out"))
    config, _ = load_checkpoint(checkpoint)
    assert run.sites == SITES  # block order, whatever order they were asked in
    assert run.shape("attn_z") == (config.num_attention_heads, config.head_dim)
    assert run.shape("mlp_hidden") == (config.intermediate_size,)
    for i, layer in enumerate(LAYERS):
        for site in SITES:
            rows = sorted_rows(run, layer, site)
            want = expected[site][i]
            # packed rows sum in another order than one sequence alone: float32 noise, ~1e-6 of RMS
            np.testing.assert_allclose(rows, want, atol=3e-5 * np.sqrt(np.mean(want**2)), rtol=0, err_msg=site)
    shard = run.shards[0].local_path
    with safe_open(shard, "np") as f:
        names = set(f.keys())
        assert json.loads(f.metadata()["sites"]) == SITES
    assert {"layer.1", "layer.3.attn_z", "layer.1.mlp_hidden", "layer.3.resid_pre"} <= names
    # the disk estimate counts every site: bytes per stored token as written (columns included)
    per_row = dtypes.stored_bytes_per_row(
        "float32",
        2,
        [config.hidden_size] * 5 + [config.intermediate_size, config.num_attention_heads * config.head_dim],
    )
    tensors = sum(np.prod(run.shape(site)) * 4 * 2 for site in SITES)
    assert per_row == tensors + 24
    assert run.manifest["total_bytes"] > run.num_tokens * per_row > 0.9 * run.manifest["total_bytes"]


def test_default_sites_write_the_same_shards_as_resid_post_named(checkpoint, dataset, tmp_path):
    assert extract(checkpoint, dataset, tmp_path / "default", "--layers", "2") == 0
    assert extract(checkpoint, dataset, tmp_path / "named", "--layers", "2", "--sites", "resid_post") == 0
    default, named = (sorted((tmp_path / name / "shards").iterdir()) for name in ("default", "named"))
    assert [p.read_bytes() for p in default] == [p.read_bytes() for p in named]
    with safe_open(default[0], "np") as f:
        names = set(f.keys())  # safetensors' safe_open is not iterable: keys() it is
        assert "sites" not in f.metadata() and names >= {"layer.2"} and not any(".resid" in k for k in names)
    run = layertap.open(str(tmp_path / "default"))
    assert run.sites == ["resid_post"]
    with pytest.raises(LayerTapError, match=r"site 'mlp_out' was not extracted \(sites: resid_post\)"):
        run.read_layer(2, site="mlp_out")


def test_int8_and_pooled_sites(checkpoint, dataset, tmp_path, expected):
    flags = ("--layers", "1,3", "--sites", "attn_z,mlp_hidden", "--storage-dtype", "int8")
    assert extract(checkpoint, dataset, tmp_path / "q", *flags) == 0
    run = layertap.open(str(tmp_path / "q"))
    for site in ("attn_z", "mlp_hidden"):
        rows = sorted_rows(run, 3, site)
        want = expected[site][1]
        step = np.abs(want.reshape(len(want), -1)).max(axis=1) / 127  # one scale per token and layer
        assert (np.abs(rows - want).reshape(len(want), -1) <= 0.5 * step[:, None] + 1e-6).all()
    assert (
        extract(checkpoint, dataset, tmp_path / "mean", "--layers", "3", "--sites", "attn_z", "--positions", "mean")
        == 0
    )
    pooled = layertap.open(str(tmp_path / "mean")).read_layer(3, site="attn_z")
    assert pooled.activations.shape[1:] == run.shape("attn_z") and len(pooled) == len(TEXTS)


def test_bad_sites_are_refused_before_anything_is_written(checkpoint, dataset, tmp_path, capsys):
    with pytest.raises(SystemExit):
        extract(checkpoint, dataset, tmp_path / "x", "--sites", "resid_post,hook_q")
    assert "hook_q: not a site; choose from resid_pre" in capsys.readouterr().err
    assert extract(checkpoint, dataset, tmp_path / "y", "--layers", "1,7", "--sites", "mlp_out") != 0
    assert "extraction.layers: [7] out of range for sites mlp_out" in capsys.readouterr().err
    assert not (tmp_path / "y").exists()
