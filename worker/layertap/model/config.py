"""DecoderConfig: the model's shape, read from a Hugging Face `config.json`, and the table of
the decoder families it can be (FAMILIES)."""

from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from layertap.errors import LayerTapError


@dataclass(frozen=True)
class Family:
    """How one decoder family differs from the block they share (pre-norm attention with
    rotary embeddings + SwiGLU MLP): one row per Hugging Face `model_type`. Nothing outside
    `model/` asks which family a model is; it asks the config for the answer instead."""

    architecture: str  # the class its config.json names
    bias: Literal["qkv", "attention_bias"]
    """qkv: q/k/v always have biases, o_proj never (Qwen2: no switch in HF either);
    attention_bias: q/k/v and o_proj have them exactly when config.json's attention_bias is true."""
    stop_tokens: tuple[str, ...]  # end of turn and end of text, beside the tokenizer's EOS
    qk_norm: bool = False  # RMSNorm of each query and key head before rotary (Qwen3)
    rope_types: tuple[str, ...] = ("default", "llama3")  # the rope_scaling types computed (HF's names)
    # Chat templates: none needs its own handling; prompts render the template the tokenizer
    # ships and check that every message lands in it verbatim (arc/prompts.py).


CHATML_STOPS = ("<|im_end|>", "<|endoftext|>")
FAMILIES = {
    "qwen2": Family("Qwen2ForCausalLM", bias="qkv", stop_tokens=CHATML_STOPS),
    "qwen3": Family("Qwen3ForCausalLM", bias="attention_bias", stop_tokens=CHATML_STOPS, qk_norm=True),
    "llama": Family("LlamaForCausalLM", bias="attention_bias", stop_tokens=("<|eot_id|>", "<|end_of_text|>")),
}
SUPPORTED_MODEL_TYPES = tuple(FAMILIES)


# A config.json value of each field's type (annotations are strings here): a string where a
# number belongs is named, not met later as a failure deep in the model.
_FIELD_KINDS = {
    "int": ((int,), "an integer"),
    "int | None": ((int, type(None)), "an integer"),
    "float": ((int, float), "a number"),
    "bool": ((bool,), "true or false"),
    "str": ((str,), "a string"),
}


@dataclass(frozen=True)
class DecoderConfig:
    """The hyper-parameters of a decoder (names as in Hugging Face's config.json); its
    family (`model_type`) says how the block differs (FAMILIES)."""

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
    """Families with bias="attention_bias": biases on q/k/v and o_proj (qwen2 ignores it)."""
    rope_type: str = "default"
    rope_factor: float = 1.0
    rope_low_freq_factor: float = 1.0
    rope_high_freq_factor: float = 4.0
    rope_original_max_positions: int = 8192

    def __post_init__(self) -> None:
        if self.model_type not in FAMILIES:
            raise ValueError(f"model_type must be one of {', '.join(SUPPORTED_MODEL_TYPES)}, got {self.model_type!r}")
        if self.rope_type not in self.family.rope_types:
            raise ValueError(f"rope type must be one of {', '.join(self.family.rope_types)}, got {self.rope_type!r}")
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
    def family(self) -> Family:
        return FAMILIES[self.model_type]

    @property
    def qkv_bias(self) -> bool:
        return self.family.bias == "qkv" or self.attention_bias

    @property
    def o_bias(self) -> bool:
        return self.family.bias == "attention_bias" and self.attention_bias

    @property
    def qk_norm(self) -> bool:
        return self.family.qk_norm

    def stop_token_ids(self, tokenizer) -> list[int]:
        """Ids that end an answer: the family's end of turn and end of text (where the
        vocabulary has them) and the tokenizer's EOS."""
        vocab = tokenizer.get_vocab()
        ids = {vocab.get(token) for token in self.family.stop_tokens} | {tokenizer.eos_token_id}
        return sorted(i for i in ids if i is not None and i >= 0)

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
    def from_dict(cls, raw: dict[str, Any], source: str = "config.json") -> DecoderConfig:
        """Build from a HF config dict; `source` names the file in error messages."""
        architectures = raw.get("architectures") or []
        if not isinstance(architectures, list) or not all(isinstance(a, str) for a in architectures):
            raise LayerTapError(f"{source}: architectures must be a list of class names, got {architectures!r}")
        model_type = raw.get("model_type")
        family = FAMILIES.get(model_type) if isinstance(model_type, str) else None
        if family is None or (architectures and family.architecture not in architectures):
            supported = ", ".join(f"{t} ({f.architecture})" for t, f in FAMILIES.items())
            raise LayerTapError(
                f"{source}: model_type={model_type!r} architectures={architectures} is not supported; "
                f"LayerTap runs {supported}"
            )
        for key in ("rope_scaling", "rope_parameters"):
            if raw.get(key) is not None and not isinstance(raw[key], dict):
                raise LayerTapError(f"{source}: {key} must be an object, got {raw[key]!r}")
        rope_scaling = raw.get("rope_scaling") or (raw.get("rope_parameters") or {})
        rope_type = rope_scaling.get("rope_type", rope_scaling.get("type", "default"))
        if rope_type not in family.rope_types:
            raise LayerTapError(
                f"{source}: rope scaling {rope_scaling} is not supported for {model_type} "
                f"({', '.join(family.rope_types)} only)"
            )
        if raw.get("use_sliding_window"):
            raise LayerTapError(f"{source}: use_sliding_window=true is not supported (full attention only)")
        if raw.get("mlp_bias"):
            raise LayerTapError(f"{source}: mlp_bias=true is not supported (SwiGLU without biases only)")
        rope_theta = raw.get("rope_theta", (raw.get("rope_parameters") or {}).get("rope_theta", 1_000_000.0))
        fields = {f.name for f in dataclasses.fields(cls)}
        values = {k: v for k, v in raw.items() if k in fields}
        values["rope_theta"] = _number(rope_theta, "rope_theta", source)
        values["rope_type"] = rope_type
        if rope_type == "llama3":
            needed = ("factor", "low_freq_factor", "high_freq_factor", "original_max_position_embeddings")
            if missing := [key for key in needed if key not in rope_scaling]:
                raise LayerTapError(f"{source}: rope scaling of type llama3 needs {', '.join(missing)}")
            values |= {
                "rope_factor": _number(rope_scaling["factor"], "rope_scaling.factor", source),
                "rope_low_freq_factor": _number(
                    rope_scaling["low_freq_factor"], "rope_scaling.low_freq_factor", source
                ),
                "rope_high_freq_factor": _number(
                    rope_scaling["high_freq_factor"], "rope_scaling.high_freq_factor", source
                ),
                "rope_original_max_positions": int(
                    _number(
                        rope_scaling["original_max_position_embeddings"],
                        "rope_scaling.original_max_position_embeddings",
                        source,
                    )
                ),
            }
        for field in dataclasses.fields(cls):
            kinds, what = _FIELD_KINDS[field.type]
            value = values.get(field.name)
            if field.name in values and (
                not isinstance(value, kinds) or (isinstance(value, bool) and bool not in kinds)
            ):
                raise LayerTapError(f"{source}: {field.name} must be {what}, got {value!r}")
        try:
            return cls(**values)
        except (TypeError, ValueError, KeyError) as error:
            raise LayerTapError(f"{source}: {error}") from error

    @classmethod
    def from_file(cls, path: str | Path) -> DecoderConfig:
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
            "architectures": [self.family.architecture],
            "model_type": fields.pop("model_type"),
            **fields,
            "max_position_embeddings": 32768,
            "use_sliding_window": False,
            "torch_dtype": "float32",
        }
        if self.family.bias == "attention_bias":
            out["mlp_bias"] = False
        else:  # HF's config of this family has no such switch
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


def _number(value: Any, name: str, source: str) -> float:
    """A finite number from config.json (JSON has no NaN, but Python's json reads one)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise LayerTapError(f"{source}: {name} must be a number, got {value!r}")
    return float(value)
