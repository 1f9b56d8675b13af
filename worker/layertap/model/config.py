"""Qwen2Config: the model's shape, read from a Hugging Face `config.json`."""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from layertap.errors import LayerTapError

ARCHITECTURE = "Qwen2ForCausalLM"
# Architectures whose decoder is computed exactly as Qwen2's (same HF Qwen2 modeling code).
SUPPORTED_MODEL_TYPES = ("qwen2",)


@dataclass(frozen=True)
class Qwen2Config:
    """The hyper-parameters of a Qwen2-family decoder (names as in Hugging Face's config.json).

    Qwen2 always has q/k/v biases (Llama has none) and no o_proj bias, so there is no switch.
    """

    vocab_size: int
    hidden_size: int
    intermediate_size: int
    num_hidden_layers: int
    num_attention_heads: int
    num_key_value_heads: int
    head_dim: int | None = None
    """Per-head width; None means hidden_size // num_attention_heads (as HF does)."""
    rope_theta: float = 1_000_000.0
    rms_norm_eps: float = 1e-6
    tie_word_embeddings: bool = False
    hidden_act: str = "silu"

    def __post_init__(self) -> None:
        if self.hidden_act != "silu":
            raise ValueError(f"hidden_act must be 'silu', got {self.hidden_act!r}")
        if self.num_attention_heads % self.num_key_value_heads:
            raise ValueError(
                f"num_attention_heads ({self.num_attention_heads}) must be a multiple of "
                f"num_key_value_heads ({self.num_key_value_heads})"
            )
        if self.head_dim is None:
            if self.hidden_size % self.num_attention_heads:
                raise ValueError("hidden_size must be a multiple of num_attention_heads when head_dim is unset")
            object.__setattr__(self, "head_dim", self.hidden_size // self.num_attention_heads)
        if self.head_dim % 2:
            raise ValueError(f"head_dim must be even for rotary embeddings, got {self.head_dim}")

    @property
    def queries_per_kv_head(self) -> int:
        return self.num_attention_heads // self.num_key_value_heads

    @property
    def block_matmul_params(self) -> int:
        """Weights one decoder block multiplies each token by: q/k/v/o projections and the
        3 MLP matrices (2 FLOPs per weight per token; the FLOP counts build on it)."""
        d, f, h = self.hidden_size, self.intermediate_size, self.head_dim
        n, k = self.num_attention_heads, self.num_key_value_heads
        return d * (n + 2 * k) * h + n * h * d + 3 * d * f

    @classmethod
    def from_dict(cls, raw: dict[str, Any], source: str = "config.json") -> Qwen2Config:
        """Build from a HF config dict; `source` names the file in error messages."""
        architectures = raw.get("architectures") or []
        model_type = raw.get("model_type")
        if model_type not in SUPPORTED_MODEL_TYPES or (architectures and ARCHITECTURE not in architectures):
            raise LayerTapError(
                f"{source}: model_type={model_type!r} architectures={architectures} is not a Qwen2 model "
                f"(expected model_type 'qwen2' and architecture {ARCHITECTURE})"
            )
        rope_scaling = raw.get("rope_scaling") or (raw.get("rope_parameters") or {})
        if rope_scaling.get("rope_type", rope_scaling.get("type", "default")) != "default":
            raise LayerTapError(f"{source}: rope scaling {rope_scaling} is not supported (only the default RoPE)")
        if raw.get("use_sliding_window"):
            raise LayerTapError(f"{source}: use_sliding_window=true is not supported (full attention only)")
        rope_theta = raw.get("rope_theta", (raw.get("rope_parameters") or {}).get("rope_theta", 1_000_000.0))
        fields = {f.name for f in dataclasses.fields(cls)}
        values = {k: v for k, v in raw.items() if k in fields}
        values["rope_theta"] = float(rope_theta)
        try:
            return cls(**values)
        except (TypeError, ValueError) as error:
            raise LayerTapError(f"{source}: {error}") from error

    @classmethod
    def from_file(cls, path: str | Path) -> Qwen2Config:
        """Read `config.json` (or the config.json inside a checkpoint directory)."""
        path = Path(path)
        if path.is_dir():
            path = path / "config.json"
        try:
            raw = json.loads(path.read_text())
        except FileNotFoundError as error:
            raise LayerTapError(f"{path}: no config.json (is this a Hugging Face checkpoint directory?)") from error
        except (json.JSONDecodeError, UnicodeDecodeError) as error:
            raise LayerTapError(f"{path}: not valid JSON ({error})") from error
        if not isinstance(raw, dict):
            raise LayerTapError(f"{path}: expected a JSON object")
        return cls.from_dict(raw, source=str(path))

    def to_hf_dict(self) -> dict[str, Any]:
        """The config.json content Hugging Face's Qwen2ForCausalLM reads."""
        return {
            "architectures": [ARCHITECTURE],
            "model_type": "qwen2",
            **dataclasses.asdict(self),
            "max_position_embeddings": 32768,
            "use_sliding_window": False,
            "torch_dtype": "float32",
        }
