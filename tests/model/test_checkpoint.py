from __future__ import annotations

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from safetensors.numpy import load_file, save_file

from layertap.errors import LayerTapError
from layertap.model import load_checkpoint, make_extract_fn, write_random_checkpoint


def test_kernels_keep_head_structure(tiny_dir, tiny):
    config, params = tiny
    hf = load_file(tiny_dir / "model.safetensors")
    attn = params["layers_2"]["self_attn"]
    d, h = config.hidden_size, config.head_dim
    q_weight = hf["model.layers.2.self_attn.q_proj.weight"]  # [N*H, D]
    # Head 1 of the query kernel is rows h..2h of HF's weight, transposed.
    np.testing.assert_array_equal(attn["q_kernel"][:, 1, :], q_weight[h : 2 * h].T)
    assert attn["k_kernel"].shape == (d, config.num_key_value_heads, h)
    assert attn["o_kernel"].shape == (config.num_attention_heads, h, d)
    np.testing.assert_array_equal(params["layers_2"]["mlp"]["down_kernel"], hf["model.layers.2.mlp.down_proj.weight"].T)
    assert "norm" not in params and "lm_head" not in params  # never used by extraction


def test_sharded_checkpoint_loads_the_same_params(tmp_path, tiny):
    directory = write_random_checkpoint(tmp_path, seed=0, shards=3)
    assert len(list(directory.glob("model-*-of-00003.safetensors"))) == 3
    _, sharded = load_checkpoint(directory)
    _, single = tiny
    assert jax.tree.structure(sharded) == jax.tree.structure(single)
    jax.tree.map(np.testing.assert_array_equal, sharded, single)


def test_casts_to_the_requested_dtype(tiny_dir):
    _, params = load_checkpoint(tiny_dir, jnp.bfloat16)
    assert {leaf.dtype for leaf in jax.tree.leaves(params)} == {jnp.dtype(jnp.bfloat16)}


def test_places_params_with_the_given_sharding(tiny_dir):
    device = jax.devices()[0]
    _, params = load_checkpoint(tiny_dir, sharding=jax.sharding.SingleDeviceSharding(device))
    assert all(leaf.devices() == {device} for leaf in jax.tree.leaves(params))


def test_loads_only_the_blocks_asked_for(tiny_dir, tiny):
    config, full = tiny
    _, first_two = load_checkpoint(tiny_dir, blocks=2)
    assert set(first_two) == {"embed_tokens", "layers_0", "layers_1"}
    jax.tree.map(np.testing.assert_array_equal, first_two["layers_1"], full["layers_1"])
    # the decoder tapped at layer 1 runs on them exactly as on the full params
    extract = jax.jit(make_extract_fn(config, [1]))
    ids = np.arange(12, dtype=np.int32).reshape(2, 6) % config.vocab_size
    positions = np.tile(np.arange(6, dtype=np.int32), (2, 1))
    segments = np.ones((2, 6), np.int32)
    np.testing.assert_array_equal(
        extract(first_two, ids, positions, segments)["resid_post"],
        extract(full, ids, positions, segments)["resid_post"],
    )


def test_block_matmul_params_counts_a_blocks_kernels(tiny):
    config, params = tiny
    kernels = [leaf for path, leaf in jax.tree_util.tree_leaves_with_path(params["layers_0"]) if "kernel" in str(path)]
    assert len(kernels) == 7 and sum(kernel.size for kernel in kernels) == config.block_matmul_params


def test_seed_decides_the_weights(tmp_path):
    a = load_file(write_random_checkpoint(tmp_path / "a", seed=1) / "model.safetensors")
    b = load_file(write_random_checkpoint(tmp_path / "b", seed=1) / "model.safetensors")
    c = load_file(write_random_checkpoint(tmp_path / "c", seed=2) / "model.safetensors")
    name = "model.layers.0.mlp.up_proj.weight"
    np.testing.assert_array_equal(a[name], b[name])
    assert not np.array_equal(a[name], c[name])


def test_untied_checkpoint_has_an_lm_head_that_is_not_loaded(tmp_path):
    directory = write_random_checkpoint(tmp_path, tie_word_embeddings=False, num_hidden_layers=2)
    assert "lm_head.weight" in load_file(directory / "model.safetensors")
    config, params = load_checkpoint(directory)
    assert not config.tie_word_embeddings and set(params) == {"embed_tokens", "layers_0", "layers_1"}


@pytest.fixture
def ckpt(tmp_path):
    return write_random_checkpoint(tmp_path / "ckpt", num_hidden_layers=2)


def test_missing_directory(tmp_path):
    with pytest.raises(LayerTapError, match=f"{tmp_path / 'nope'}: checkpoint directory not found"):
        load_checkpoint(tmp_path / "nope")


def test_missing_weights_name_the_directory(ckpt):
    (ckpt / "model.safetensors").unlink()
    with pytest.raises(LayerTapError, match=f"{ckpt}: no model.safetensors or model.safetensors.index.json"):
        load_checkpoint(ckpt)


def test_corrupt_file_is_named(ckpt):
    weights = ckpt / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:1000])
    with pytest.raises(LayerTapError, match=f"{weights}: not a readable safetensors file"):
        load_checkpoint(ckpt)


def test_missing_tensor_is_named(ckpt):
    weights = ckpt / "model.safetensors"
    tensors = load_file(weights)
    del tensors["model.layers.1.mlp.gate_proj.weight"]
    save_file(tensors, weights)
    with pytest.raises(LayerTapError, match=f"{weights}: missing tensor model.layers.1.mlp.gate_proj.weight"):
        load_checkpoint(ckpt)


def test_shape_disagreeing_with_config_is_named(ckpt):
    config = json.loads((ckpt / "config.json").read_text())
    (ckpt / "config.json").write_text(json.dumps({**config, "intermediate_size": 96}))
    with pytest.raises(LayerTapError, match=r"model.safetensors: tensor model.layers.0.mlp.gate_proj.weight has shape"):
        load_checkpoint(ckpt)


def test_missing_shard_is_named(tmp_path):
    directory = write_random_checkpoint(tmp_path, num_hidden_layers=2, shards=2)
    (directory / "model-00002-of-00002.safetensors").unlink()
    with pytest.raises(LayerTapError, match="model-00002-of-00002.safetensors: weight file not found"):
        load_checkpoint(directory)


@pytest.mark.parametrize("shard", ["../outside.safetensors", "/etc/passwd"])
def test_index_cannot_point_outside_the_checkpoint(tmp_path, shard):
    directory = write_random_checkpoint(tmp_path, num_hidden_layers=2, shards=2)
    index_path = directory / "model.safetensors.index.json"
    index = json.loads(index_path.read_text())
    index["weight_map"]["model.embed_tokens.weight"] = shard
    index_path.write_text(json.dumps(index))
    with pytest.raises(LayerTapError, match=f"{index_path}: .*outside the checkpoint directory"):
        load_checkpoint(directory)


def test_broken_index_is_named(tmp_path):
    directory = write_random_checkpoint(tmp_path, num_hidden_layers=2, shards=2)
    index_path = directory / "model.safetensors.index.json"
    index_path.write_text('{"metadata": {}}')
    with pytest.raises(LayerTapError, match=f"{index_path}: not a valid safetensors index"):
        load_checkpoint(directory)


def test_bfloat16_weights_on_disk_load_as_float32(ckpt):
    """Qwen2.5 checkpoints are stored in bfloat16."""
    import ml_dtypes

    weights = ckpt / "model.safetensors"
    tensors = {name: t.astype(ml_dtypes.bfloat16) for name, t in load_file(weights).items()}
    save_file(tensors, weights)
    _, params = load_checkpoint(ckpt, jnp.float32)
    expected = tensors["model.layers.1.mlp.up_proj.weight"].astype(np.float32).T
    np.testing.assert_array_equal(params["layers_1"]["mlp"]["up_kernel"], expected)
