"""Qwen2Config: the model's shape, read from a Hugging Face `config.json`."""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from layertap.errors import LayerTapError

# Decoder families LayerTap computes, by Hugging Face model_type: the architecture their
# config.json names. They share one block (pre-norm attention + SwiGLU MLP); the fields below
# say where they differ.
ARCHITECTURES = {"qwen2": "Qwen2ForCausalLM", "qwen3": "Qwen3ForCausalLM", "llama": "LlamaForCausalLM"}
SUPPORTED_MODEL_TYPES = tuple(ARCHITECTURES)
ROPE_TYPES = ("default", "llama3")


@dataclass(frozen=True)
class Qwen2Config:
    """The hyper-parameters of a decoder (names as in Hugging Face's config.json): Qwen2,
    and the families that differ from it only in the fields below.

    - qwen2: q/k/v biases, no o_proj bias (no switch in HF's Qwen2 either);
    - qwen3: RMSNorm of each query and key head before rotary (q_norm, k_norm), biases only
      with attention_bias (then o_proj has one too);
    - llama: biases only with attention_bias (o_proj too); rope scaling of type llama3.
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
    model_type: str = "qwen2"
    attention_bias: bool = False
    """qwen3 and llama: biases on q/k/v and o_proj. qwen2 ignores it (q/k/v always, o never)."""
    rope_type: str = "default"
    rope_factor: float = 1.0
    rope_low_freq_factor: float = 1.0
    rope_high_freq_factor: float = 4.0
    rope_original_max_positions: int = 8192

    def __post_init__(self) -> None:
        if self.model_type not in ARCHITECTURES:
            raise ValueError(f"model_type must be one of {', '.join(SUPPORTED_MODEL_TYPES)}, got {self.model_type!r}")
        if self.rope_type not in ROPE_TYPES:
            raise ValueError(f"rope type must be one of {', '.join(ROPE_TYPES)}, got {self.rope_type!r}")
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
    def qkv_bias(self) -> bool:
        return self.model_type == "qwen2" or self.attention_bias

    @property
    def o_bias(self) -> bool:
        return self.model_type != "qwen2" and self.attention_bias

    @property
    def qk_norm(self) -> bool:
        return self.model_type == "qwen3"

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
        if model_type not in ARCHITECTURES or (architectures and ARCHITECTURES[model_type] not in architectures):
            supported = ", ".join(f"{t} ({a})" for t, a in ARCHITECTURES.items())
            raise LayerTapError(
                f"{source}: model_type={model_type!r} architectures={architectures} is not supported; "
                f"LayerTap runs {supported}"
            )
        rope_scaling = raw.get("rope_scaling") or (raw.get("rope_parameters") or {})
        rope_type = rope_scaling.get("rope_type", rope_scaling.get("type", "default"))
        if rope_type not in ROPE_TYPES:
            raise LayerTapError(
                f"{source}: rope scaling {rope_scaling} is not supported (default RoPE and llama3 only)"
            )
        if raw.get("use_sliding_window"):
            raise LayerTapError(f"{source}: use_sliding_window=true is not supported (full attention only)")
        if raw.get("mlp_bias"):
            raise LayerTapError(f"{source}: mlp_bias=true is not supported (SwiGLU without biases only)")
        rope_theta = raw.get("rope_theta", (raw.get("rope_parameters") or {}).get("rope_theta", 1_000_000.0))
        fields = {f.name for f in dataclasses.fields(cls)}
        values = {k: v for k, v in raw.items() if k in fields}
        values["rope_theta"] = float(rope_theta)
        values["rope_type"] = rope_type
        if rope_type == "llama3":
            needed = ("factor", "low_freq_factor", "high_freq_factor", "original_max_position_embeddings")
            if missing := [key for key in needed if key not in rope_scaling]:
                raise LayerTapError(f"{source}: rope scaling of type llama3 needs {', '.join(missing)}")
            values |= {
                "rope_factor": float(rope_scaling["factor"]),
                "rope_low_freq_factor": float(rope_scaling["low_freq_factor"]),
                "rope_high_freq_factor": float(rope_scaling["high_freq_factor"]),
                "rope_original_max_positions": int(rope_scaling["original_max_position_embeddings"]),
            }
        try:
            return cls(**values)
        except (TypeError, ValueError, KeyError) as error:
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
        """The config.json content Hugging Face's model class of this family reads."""
        fields = dataclasses.asdict(self)
        rope = {key: fields.pop(key) for key in list(fields) if key.startswith("rope_") and key != "rope_theta"}
        out = {
            "architectures": [ARCHITECTURES[self.model_type]],
            "model_type": fields.pop("model_type"),
            **fields,
            "max_position_embeddings": 32768,
            "use_sliding_window": False,
            "torch_dtype": "float32",
        }
        if self.model_type != "qwen2":
            out["mlp_bias"] = False
        else:
            del out["attention_bias"]
        if self.rope_type == "llama3":
            out["rope_scaling"] = {
                "rope_type": "llama3",
                "factor": rope["rope_factor"],
                "low_freq_factor": rope["rope_low_freq_factor"],
                "high_freq_factor": rope["rope_high_freq_factor"],
                "original_max_position_embeddings": rope["rope_original_max_positions"],
            }
        return out
