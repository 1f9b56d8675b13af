"""A small random checkpoint (Qwen2 by default; Qwen3 or Llama with model_type=...) with a
real tokenizer, for tests and the demo (no model hub).

Weights are numpy random numbers written with safetensors (no torch); the tokenizer is a
byte-level BPE trained on a small built-in corpus with Qwen2's pre-tokenizer (digits are
split one by one, which ARC grids rely on) and Qwen's chat template.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
from safetensors.numpy import save_file

from layertap.model.config import DecoderConfig

TINY_SHAPE = {
    "hidden_size": 64,
    "intermediate_size": 128,
    "num_hidden_layers": 4,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "rope_theta": 10_000.0,
    "rms_norm_eps": 1e-6,
    "tie_word_embeddings": True,
}
TOKENIZER_VOCAB = 640

ENDOFTEXT, IM_START, IM_END = "<|endoftext|>", "<|im_start|>", "<|im_end|>"
# Qwen2's pre-tokenizer split: one digit per piece (\p{N}), words, punctuation, whitespace.
QWEN2_SPLIT = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
)
CHAT_TEMPLATE = (
    "{%- for message in messages %}"
    "{{- '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n' }}"
    "{%- endfor %}"
    "{%- if add_generation_prompt %}{{- '<|im_start|>assistant\\n' }}{%- endif %}"
)
CORPUS = [
    "The quick brown fox jumps over the lazy dog.",
    "Sparse autoencoders find interpretable features in the residual stream of a language model.",
    "Each layer of the transformer reads from and writes to the residual stream.",
    "Find the common rule that maps an input grid to an output grid.",
    "Given the training examples, predict the output for the test input.",
    "0123456789\n00112233\n4455\n6677\n8899\n",
    "The answer is 42, and the grid has 3 rows and 7 columns.",
    "Activations are written in shards; a shard becomes visible only when it is complete.",
    "user assistant system input output example test train rule colour colors",
]


def write_random_checkpoint(
    directory: str | Path,
    *,
    seed: int = 0,
    shards: int = 1,
    **config_overrides: Any,
) -> Path:
    """Write config.json, random safetensors weights and a tokenizer to `directory`.

    shards > 1 writes `model-0000i-of-0000n.safetensors` files and a
    `model.safetensors.index.json`, as large Hugging Face checkpoints are stored.
    config_overrides replace fields of the tiny default shape (e.g. num_hidden_layers=24);
    vocab_size defaults to the tokenizer's size rounded up to a multiple of 64.
    """
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    tokenizer_size = write_tokenizer(directory)
    shape = {**TINY_SHAPE, "vocab_size": -(-tokenizer_size // 64) * 64, **config_overrides}
    config = DecoderConfig(**shape)
    (directory / "config.json").write_text(json.dumps(config.to_hf_dict(), indent=2) + "\n")
    _write_weights(directory, random_weights(config, seed), shards)
    return directory


def random_weights(config: DecoderConfig, seed: int = 0) -> dict[str, np.ndarray]:
    """HF-named float32 tensors; norm scales near 1 and non-zero biases so every term matters."""
    rng = np.random.default_rng(seed)
    d, f, h = config.hidden_size, config.intermediate_size, config.head_dim
    n, k = config.num_attention_heads, config.num_key_value_heads

    def normal(*shape: int, std: float = 0.02) -> np.ndarray:
        return rng.normal(0.0, std, size=shape).astype(np.float32)

    def scale() -> np.ndarray:
        return (1.0 + normal(d, std=0.1)).astype(np.float32)

    tensors = {"model.embed_tokens.weight": normal(config.vocab_size, d, std=1.0)}
    for layer in range(config.num_hidden_layers):
        p = f"model.layers.{layer}"
        tensors[f"{p}.input_layernorm.weight"] = scale()
        for name, heads in (("q", n), ("k", k), ("v", k)):  # drawn in this order: seeds give the same weights
            tensors[f"{p}.self_attn.{name}_proj.weight"] = normal(heads * h, d, std=d**-0.5)
            if config.qkv_bias:
                tensors[f"{p}.self_attn.{name}_proj.bias"] = normal(heads * h, std=0.1)
        tensors[f"{p}.self_attn.o_proj.weight"] = normal(d, n * h, std=(n * h) ** -0.5)
        if config.o_bias:
            tensors[f"{p}.self_attn.o_proj.bias"] = normal(d, std=0.1)
        if config.qk_norm:
            tensors |= {f"{p}.self_attn.{name}_norm.weight": (1.0 + normal(h, std=0.1)) for name in ("q", "k")}
        tensors |= {
            f"{p}.post_attention_layernorm.weight": scale(),
            f"{p}.mlp.gate_proj.weight": normal(f, d, std=d**-0.5),
            f"{p}.mlp.up_proj.weight": normal(f, d, std=d**-0.5),
            f"{p}.mlp.down_proj.weight": normal(d, f, std=f**-0.5),
        }
    tensors["model.norm.weight"] = scale()
    if not config.tie_word_embeddings:
        tensors["lm_head.weight"] = normal(config.vocab_size, d)
    return tensors


def _write_weights(directory: Path, tensors: dict[str, np.ndarray], shards: int) -> None:
    metadata = {"format": "pt"}  # what transformers expects in the header
    if shards == 1:
        save_file(tensors, directory / "model.safetensors", metadata=metadata)
        return
    names = list(tensors)
    weight_map = {}
    for i, chunk in enumerate(np.array_split(np.arange(len(names)), shards)):
        file = f"model-{i + 1:05d}-of-{shards:05d}.safetensors"
        save_file({names[j]: tensors[names[j]] for j in chunk}, directory / file, metadata=metadata)
        weight_map |= {names[j]: file for j in chunk}
    total = sum(t.nbytes for t in tensors.values())
    index = {"metadata": {"total_size": total}, "weight_map": weight_map}
    (directory / "model.safetensors.index.json").write_text(json.dumps(index, indent=2) + "\n")


def write_tokenizer(directory: Path) -> int:
    """Train the tiny BPE and save it as a transformers fast tokenizer; returns its size."""
    from tokenizers import Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    bpe = Tokenizer(models.BPE())
    bpe.normalizer = normalizers.NFC()
    bpe.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(QWEN2_SPLIT), behavior="isolated"),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ]
    )
    bpe.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=TOKENIZER_VOCAB,
        special_tokens=[ENDOFTEXT, IM_START, IM_END],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    bpe.train_from_iterator(CORPUS, trainer)
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=bpe,
        eos_token=ENDOFTEXT,
        pad_token=ENDOFTEXT,
        additional_special_tokens=[IM_START, IM_END],
        chat_template=CHAT_TEMPLATE,
        model_max_length=32768,
    )
    tokenizer.save_pretrained(directory)
    return len(tokenizer)
