"""Sites beyond the residual stream: each against transformers' PyTorch model (forward hooks on
the matching modules), and the forward's own guarantees (where it stops, what it computes).

The float32 bound is the residual stream's (test_parity.py): max |error| per layer divided by
that layer's RMS at the site, at most 1e-4.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from layertap.errors import LayerTapError
from layertap.model import LayerTap, load_checkpoint, make_extract_fn, write_random_checkpoint
from layertap.model.tap import site_shape
from layertap_api.spec import SITES

from .conftest import random_ids
from .test_parity import CONFIGS, FLOAT32_BOUND


def run_sites(config, params, tap: LayerTap, token_ids, **kwargs) -> dict[str, np.ndarray]:
    token_ids = np.atleast_2d(token_ids).astype(np.int32)
    positions = np.broadcast_to(np.arange(token_ids.shape[1], dtype=np.int32), token_ids.shape)
    fn = jax.jit(make_extract_fn(config, tap, **kwargs))
    out = fn(params, token_ids, positions, np.ones_like(token_ids))
    return {site: np.asarray(value) for site, value in out.items()}


@pytest.fixture(scope="module", params=list(CONFIGS))
def checkpoint(request, tmp_path_factory):
    return write_random_checkpoint(tmp_path_factory.mktemp(request.param), seed=7, **CONFIGS[request.param])


@pytest.mark.parity
def test_every_site_matches_transformers_hooks_on_every_layer(checkpoint):
    from .noise_floor import hf_model, hf_sites  # imports torch: only where transformers is the reference

    config, params = load_checkpoint(checkpoint)
    token_ids = random_ids(config.vocab_size, 2, 300, seed=1)  # 3 query blocks, the last partial
    expected = hf_sites(hf_model(checkpoint), token_ids)
    tap = LayerTap.for_model(list(range(config.num_hidden_layers)), config.num_hidden_layers, sites=SITES)
    ours = run_sites(config, params, tap, token_ids)
    report = []
    for site in SITES:
        assert ours[site].shape == expected[site].shape == (config.num_hidden_layers, 2, 300, *site_shape(site, config))
        flat_ours = ours[site].reshape(config.num_hidden_layers, -1)
        flat_expected = expected[site].reshape(config.num_hidden_layers, -1)
        rms = np.sqrt(np.mean(np.square(flat_expected), axis=1))
        errors = np.abs(flat_ours - flat_expected).max(axis=1) / rms
        report.append(f"{site} {errors.max():.1e}")
        assert errors.max() <= FLOAT32_BOUND, (site, errors)
    print(f"\n{checkpoint.name} float32 max|err|/rms per site: {', '.join(report)}")


def test_default_is_resid_post_and_sites_agree_with_each_other(tiny):
    config, params = tiny
    ids = random_ids(config.vocab_size, 2, 24)
    default = run_sites(config, params, LayerTap((1, 3)), ids)
    every = run_sites(config, params, LayerTap.for_model([1, 2, 3], config.num_hidden_layers, sites=SITES), ids)
    assert list(default) == ["resid_post"]
    np.testing.assert_array_equal(every["resid_post"][[0, 2]], default["resid_post"])
    # the stream's bookkeeping: pre + attn = mid, mid + mlp = post, post of i = pre of i + 1
    np.testing.assert_allclose(every["resid_pre"] + every["attn_out"], every["resid_mid"], atol=1e-6, rtol=1e-6)
    np.testing.assert_allclose(every["resid_mid"] + every["mlp_out"], every["resid_post"], atol=1e-6, rtol=1e-6)
    np.testing.assert_array_equal(every["resid_post"][:2], every["resid_pre"][1:])
    # attn_z through o_proj is attn_out
    o_kernel = np.asarray(params["layers_2"]["self_attn"]["o_kernel"])
    through = np.einsum("btnh,nhd->btd", every["attn_z"][1], o_kernel)
    np.testing.assert_allclose(through, every["attn_out"][1], atol=1e-5)


def dots_and_params(config, params, tap: LayerTap) -> tuple[int, set]:
    """dot products in the forward, and the blocks whose weights it reads."""
    fn = make_extract_fn(config, tap)
    args = (jnp.zeros((1, 8), jnp.int32),) * 3
    jaxpr = jax.make_jaxpr(fn)(params, *args)
    dots = sum(eqn.primitive.name == "dot_general" for eqn in jaxpr.eqns)
    used = {name for name in params if name.startswith("layers_")}
    return dots, used


@pytest.mark.parametrize(
    ("sites", "dots", "blocks"),
    [
        (["resid_post"], 2 * 9, 2),  # per block: q, k, v, o, gate, up, down + two attention products
        (["attn_z"], 9 + 6, 2),  # the last block stops after attention (its o_proj included)
        (["attn_out", "resid_mid"], 9 + 6, 2),
        (["resid_pre"], 9, 1),  # the last block does not run at all
        (["resid_pre", "mlp_hidden"], 2 * 9, 2),
    ],
)
def test_the_forward_stops_where_the_last_site_is_computed(tiny, sites, dots, blocks):
    config, params = tiny
    tap = LayerTap.for_model([0, 1], config.num_hidden_layers, sites=sites)
    assert tap.blocks_to_run == blocks
    loaded = {
        name: value
        for name, value in params.items()
        if name == "embed_tokens" or name in {f"layers_{i}" for i in range(blocks)}
    }
    assert dots_and_params(config, loaded, tap)[0] == dots  # runs on only the blocks it loads


@pytest.mark.parametrize(
    ("sites", "message"),
    [
        (["resid_post", "hook_q"], r"extraction.sites: \['hook_q'\] are not sites; choose from resid_pre, attn_z"),
        (["mlp_out", "mlp_out"], "extraction.sites: list each site once"),
        ([], "extraction.sites: list each site once, at least one"),
    ],
)
def test_bad_sites_name_the_field(sites, message):
    with pytest.raises(LayerTapError, match=message):
        LayerTap.for_model([1], 4, sites=sites)


def test_a_layer_out_of_range_names_the_sites():
    with pytest.raises(
        LayerTapError, match=r"extraction.layers: \[4\] out of range for sites mlp_hidden; the model has 4 layers"
    ):
        LayerTap.for_model([1, 4], 4, sites=["mlp_hidden"])
