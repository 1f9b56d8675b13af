from __future__ import annotations

import json

import pytest

from layertap.errors import LayerTapError
from layertap.model import DecoderConfig

QWEN25_05B = {
    "architectures": ["Qwen2ForCausalLM"],
    "model_type": "qwen2",
    "hidden_size": 896,
    "intermediate_size": 4864,
    "num_hidden_layers": 24,
    "num_attention_heads": 14,
    "num_key_value_heads": 2,
    "rope_theta": 1000000.0,
    "rms_norm_eps": 1e-06,
    "tie_word_embeddings": True,
    "vocab_size": 151936,
    "hidden_act": "silu",
    "use_sliding_window": False,
    "sliding_window": 32768,
    "torch_dtype": "bfloat16",
}


def write(tmp_path, raw) -> str:
    path = tmp_path / "config.json"
    path.write_text(json.dumps(raw) if isinstance(raw, dict) else raw)
    return path


def test_reads_qwen25_05b_config(tmp_path):
    config = DecoderConfig.from_file(write(tmp_path, QWEN25_05B).parent)
    assert (config.num_hidden_layers, config.hidden_size, config.head_dim) == (24, 896, 64)
    assert config.queries_per_kv_head == 7
    assert config.tie_word_embeddings and config.rope_theta == 1e6


def test_round_trips_through_hf_dict():
    config = DecoderConfig.from_dict(QWEN25_05B)
    assert DecoderConfig.from_dict(config.to_hf_dict()) == config


def test_explicit_head_dim_wins():
    assert DecoderConfig.from_dict({**QWEN25_05B, "head_dim": 128}).head_dim == 128


def test_rope_theta_from_transformers_v5_rope_parameters():
    raw = {k: v for k, v in QWEN25_05B.items() if k != "rope_theta"}
    raw["rope_parameters"] = {"rope_type": "default", "rope_theta": 5000.0}
    assert DecoderConfig.from_dict(raw).rope_theta == 5000.0


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (
            {"model_type": "gemma2", "architectures": ["Gemma2ForCausalLM"]},
            r"model_type='gemma2'.*not supported; LayerTap runs qwen2 \(Qwen2ForCausalLM\), qwen3 "
            r"\(Qwen3ForCausalLM\), llama",
        ),
        ({"architectures": ["Qwen2MoeForCausalLM"]}, "Qwen2MoeForCausalLM.* is not supported"),
        ({"model_type": "llama", "architectures": ["LlamaForCausalLM"], "mlp_bias": True}, "mlp_bias"),
        (
            {"model_type": "llama", "architectures": ["LlamaForCausalLM"], "rope_scaling": {"rope_type": "llama3"}},
            "factor",
        ),
        ({"num_key_value_heads": 3}, "multiple of num_key_value_heads"),
        ({"use_sliding_window": True}, "use_sliding_window"),
        ({"rope_scaling": {"type": "yarn", "factor": 4.0}}, "rope scaling"),
        ({"hidden_act": "gelu"}, "hidden_act"),
        ({"hidden_size": "896"}, "hidden_size must be an integer, got '896'"),
        ({"num_hidden_layers": 24.0}, "num_hidden_layers must be an integer, got 24.0"),
        ({"vocab_size": True}, "vocab_size must be an integer, got True"),
        ({"rms_norm_eps": "1e-6"}, "rms_norm_eps must be a number"),
        ({"tie_word_embeddings": "yes"}, "tie_word_embeddings must be true or false"),
    ],
)
def test_unsupported_configs_name_the_file(tmp_path, change, message):
    path = write(tmp_path, {**QWEN25_05B, **change})
    with pytest.raises(LayerTapError, match=message) as error:
        DecoderConfig.from_file(path)
    assert str(path) in str(error.value)


def test_missing_and_broken_files_name_the_file(tmp_path):
    with pytest.raises(LayerTapError, match=f"{tmp_path}.*no config.json"):
        DecoderConfig.from_file(tmp_path)
    path = write(tmp_path, "{not json")
    with pytest.raises(LayerTapError, match=f"{path}: not valid JSON"):
        DecoderConfig.from_file(path)


def test_llama3_and_qwen3_configs_read_as_their_families(tmp_path):
    llama = {
        **QWEN25_05B,
        "model_type": "llama",
        "architectures": ["LlamaForCausalLM"],
        "attention_bias": False,
        "rope_theta": 500000.0,
        "rope_scaling": {
            "rope_type": "llama3",
            "factor": 32.0,
            "low_freq_factor": 1.0,
            "high_freq_factor": 4.0,
            "original_max_position_embeddings": 8192,
        },
    }
    config = DecoderConfig.from_file(write(tmp_path, llama))
    assert (config.rope_type, config.rope_factor, config.qkv_bias, config.qk_norm) == ("llama3", 32.0, False, False)
    assert DecoderConfig.from_dict(config.to_hf_dict()) == config  # what the random checkpoints write reads back
    qwen3 = {**QWEN25_05B, "model_type": "qwen3", "architectures": ["Qwen3ForCausalLM"], "head_dim": 128}
    config = DecoderConfig.from_dict(qwen3)
    assert (config.qk_norm, config.qkv_bias, config.o_bias, config.head_dim) == (True, False, False, 128)


@pytest.mark.parametrize(
    "model_type, attention_bias, qkv_bias, o_bias, qk_norm",
    [
        ("qwen2", False, True, False, False),  # q/k/v biases always, o_proj never
        ("qwen2", True, True, False, False),
        ("qwen3", False, False, False, True),
        ("qwen3", True, True, True, True),
        ("llama", True, True, True, False),
    ],
)
def test_the_family_table_says_where_blocks_differ(model_type, attention_bias, qkv_bias, o_bias, qk_norm):
    config = DecoderConfig.from_dict(
        {**QWEN25_05B, "model_type": model_type, "architectures": [], "attention_bias": attention_bias}
    )
    assert (config.qkv_bias, config.o_bias, config.qk_norm) == (qkv_bias, o_bias, qk_norm)


def test_stop_tokens_are_the_familys_that_the_vocabulary_has(tmp_path):
    from layertap.model import load_tokenizer, write_random_checkpoint

    checkpoint = write_random_checkpoint(tmp_path / "model")  # Qwen's chat tokens, EOS <|endoftext|>
    tokenizer = load_tokenizer(checkpoint)
    vocab = tokenizer.get_vocab()
    qwen = DecoderConfig.from_dict({**QWEN25_05B, "architectures": []})
    llama = DecoderConfig.from_dict({**QWEN25_05B, "model_type": "llama", "architectures": []})
    assert qwen.stop_token_ids(tokenizer) == sorted({vocab["<|im_end|>"], vocab["<|endoftext|>"]})
    assert llama.stop_token_ids(tokenizer) == [tokenizer.eos_token_id]  # no <|eot_id|> here: only the EOS
