"""The decoder (Qwen2, Qwen3, Llama 3: config.FAMILIES): config, checkpoint loading, the
extraction forward, the tokenizer."""

from layertap.model.checkpoint import load_checkpoint
from layertap.model.config import DecoderConfig
from layertap.model.extract import make_extract_fn
from layertap.model.random_checkpoint import write_random_checkpoint
from layertap.model.tap import LayerTap
from layertap.model.tokenizer import load_tokenizer, special_token_ids

__all__ = [
    "DecoderConfig",
    "LayerTap",
    "load_checkpoint",
    "load_tokenizer",
    "make_extract_fn",
    "special_token_ids",
    "write_random_checkpoint",
]
