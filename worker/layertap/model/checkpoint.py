"""Hugging Face safetensors checkpoints -> (DecoderConfig, params pytree), without torch
(Qwen2, Qwen3 and Llama 3 name their tensors alike; the config says which ones exist).

The params pytree is what `Decoder` (linen) expects; HF's `[out, in]` Linear weights
are transposed and split into heads here, once, on the host.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
from safetensors import SafetensorError, safe_open

from layertap.errors import LayerTapError
from layertap.model.config import DecoderConfig
from layertap.model.modules import Dtype
from layertap_api.contract import ENV_CACHE

SINGLE_FILE = "model.safetensors"
INDEX_FILE = "model.safetensors.index.json"
# What a tokenizer may be read from (transformers' fast tokenizers and Qwen's chat template).
TOKENIZER_FILES = (
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "added_tokens.json",
    "vocab.json",
    "merges.txt",
    "chat_template.jinja",
    "chat_template.json",
)
DEFAULT_CACHE_DIR = Path(os.environ.get(ENV_CACHE, Path.home() / ".cache" / "layertap")) / "models"


def resolve_checkpoint_dir(path: str | Path, cache_dir: str | Path | None = None) -> Path:
    """A local directory holding the checkpoint; gs:// URIs are copied to `cache_dir` first,
    hf:// ones resolved through the Hugging Face cache (`layertap.io.hub`)."""
    if str(path).startswith("hf://"):
        from layertap.io.hub import model_dir  # only hf:// models need huggingface_hub

        return model_dir(str(path))
    if str(path).startswith("gs://"):
        from layertap.io.fetch import fetch_dir  # only gs:// checkpoints need the storage stack

        return Path(fetch_dir(str(path), Path(cache_dir or DEFAULT_CACHE_DIR)))
    local = Path(path)
    if not local.is_dir():
        raise LayerTapError(f"{local}: checkpoint directory not found")
    return local


def checkpoint_files(directory: Path) -> list[str]:
    """The files of a checkpoint that LayerTap reads: config, weights (and index), tokenizer."""
    weights = {file.relative_to(directory).as_posix() for _, file in _weight_files(directory) if file.is_file()}
    if (directory / INDEX_FILE).exists() and SINGLE_FILE not in weights:
        weights.add(INDEX_FILE)
    present = [name for name in ("config.json", *TOKENIZER_FILES) if (directory / name).is_file()]
    return sorted(weights | set(present))


def load_checkpoint(
    path: str | Path,
    dtype: Dtype = jnp.float32,
    *,
    sharding: jax.sharding.Sharding | dict | None = None,
    cache_dir: str | Path | None = None,
    blocks: int | None = None,
    head: bool = False,
) -> tuple[DecoderConfig, dict]:
    """Read config.json and the safetensors weights of a checkpoint (any family in config.FAMILIES).

    path: a local directory or gs:// URI holding `model.safetensors` or a sharded
        `model.safetensors.index.json`.
    dtype: the dtype the weights are cast to (the compute dtype).
    sharding: where the params go: a Sharding or a pytree of them (a global sharding
        works in multi-process runs, as every process reads the same files); None puts
        them on the default device.
    blocks: load only the first `blocks` decoder blocks (the decoder stops after the last
        tapped one, `LayerTap.blocks_to_run`); None loads them all.
    head: also load the final norm and the LM head (generation needs them; extraction
        never does, so by default they are not read).
    """
    directory = resolve_checkpoint_dir(path, cache_dir)
    config = DecoderConfig.from_file(directory / "config.json")
    return config, load_params(directory, config, dtype, sharding=sharding, blocks=blocks, head=head)


def load_params(
    directory: Path,
    config: DecoderConfig,
    dtype: Dtype = jnp.float32,
    *,
    sharding: jax.sharding.Sharding | dict | None = None,
    blocks: int | None = None,
    head: bool = False,
) -> dict:
    """The weights of a local checkpoint directory whose config is already read (see
    `load_checkpoint` for the arguments)."""
    np_dtype = np.dtype(jnp.dtype(dtype))
    with ExitStack() as stack:
        read = _tensor_reader(directory, stack)
        try:
            host_params = hf_to_params(
                config, lambda name, shape: _checked(read, name, shape).astype(np_dtype), blocks=blocks, head=head
            )
        except LayerTapError as error:
            if head and "tensor lm_head.weight" in str(error):
                raise LayerTapError(
                    f"{error}: config.json says tie_word_embeddings=false, and generation needs the LM head"
                ) from error
            raise
    if sharding is None:
        return jax.device_put(host_params)
    return jax.device_put(host_params, sharding)


def hf_to_params(
    config: DecoderConfig,
    get: Callable[[str, tuple[int, ...]], np.ndarray],
    blocks: int | None = None,
    head: bool = False,
) -> dict:
    """Map HF tensor names to the decoder's params (the first `blocks` decoder blocks, default
    all; with `head`, also the final norm and the untied LM head as a [D, V] kernel);
    `get(name, hf_shape)` returns one tensor."""
    d, f = config.hidden_size, config.intermediate_size
    n, k, h = config.num_attention_heads, config.num_key_value_heads, config.head_dim

    def attention(prefix: str) -> dict[str, np.ndarray | dict]:
        out: dict[str, np.ndarray | dict] = {}
        for name, heads in (("q", n), ("k", k), ("v", k)):
            # HF Linear weight [heads*H, D] -> kernel [D, heads, H]; bias [heads*H] -> [heads, H].
            out[f"{name}_kernel"] = get(f"{prefix}.{name}_proj.weight", (heads * h, d)).T.reshape(d, heads, h)
            if config.qkv_bias:
                out[f"{name}_bias"] = get(f"{prefix}.{name}_proj.bias", (heads * h,)).reshape(heads, h)
        out["o_kernel"] = get(f"{prefix}.o_proj.weight", (d, n * h)).T.reshape(n, h, d)
        if config.o_bias:
            out["o_bias"] = get(f"{prefix}.o_proj.bias", (d,))
        if config.qk_norm:
            out |= {f"{name}_norm": {"scale": get(f"{prefix}.{name}_norm.weight", (h,))} for name in ("q", "k")}
        return out

    params: dict = {"embed_tokens": get("model.embed_tokens.weight", (config.vocab_size, d))}
    for layer in range(config.num_hidden_layers if blocks is None else blocks):
        prefix = f"model.layers.{layer}"
        params[f"layers_{layer}"] = {
            "input_layernorm": {"scale": get(f"{prefix}.input_layernorm.weight", (d,))},
            "self_attn": attention(f"{prefix}.self_attn"),
            "post_attention_layernorm": {"scale": get(f"{prefix}.post_attention_layernorm.weight", (d,))},
            "mlp": {
                "gate_kernel": get(f"{prefix}.mlp.gate_proj.weight", (f, d)).T,
                "up_kernel": get(f"{prefix}.mlp.up_proj.weight", (f, d)).T,
                "down_kernel": get(f"{prefix}.mlp.down_proj.weight", (d, f)).T,
            },
        }
    if head:
        params["norm"] = {"scale": get("model.norm.weight", (d,))}
        if not config.tie_word_embeddings:
            params["lm_head"] = get("lm_head.weight", (config.vocab_size, d)).T
    return params


TensorReader = Callable[[str], tuple[np.ndarray, Path]]


def _checked(read: TensorReader, name: str, shape: tuple[int, ...]) -> np.ndarray:
    tensor, source = read(name)
    if tensor.shape != shape:
        raise LayerTapError(f"{source}: tensor {name} has shape {tensor.shape}, config.json implies {shape}")
    if not np.issubdtype(tensor.dtype, np.floating) and tensor.dtype.name != "bfloat16":
        raise LayerTapError(f"{source}: tensor {name} has dtype {tensor.dtype}, expected a float type")
    return tensor


def _tensor_reader(directory: Path, stack: ExitStack) -> TensorReader:
    """name -> (tensor, file it came from), over one file or a sharded index."""
    files = dict(_weight_files(directory))
    handles: dict[Path, object] = {}

    def read(name: str) -> tuple[np.ndarray, Path]:
        file = files.get(name) or files.get("*")
        if file is None:
            raise LayerTapError(f"{directory / INDEX_FILE}: no entry for tensor {name}")
        if file not in handles:
            if not file.exists():
                raise LayerTapError(f"{file}: weight file not found")
            try:
                handles[file] = stack.enter_context(safe_open(file, framework="numpy"))
            except (SafetensorError, OSError, ValueError) as error:
                raise LayerTapError(f"{file}: not a readable safetensors file ({error})") from error
        if name not in handles[file].keys():  # noqa: SIM118 - safe_open handles have keys(), not __contains__
            raise LayerTapError(f"{file}: missing tensor {name}")
        try:
            return handles[file].get_tensor(name), file
        except (SafetensorError, OSError, ValueError) as error:
            raise LayerTapError(f"{file}: tensor {name} is not readable ({error})") from error

    return read


def _weight_files(directory: Path) -> Iterator[tuple[str, Path]]:
    """(tensor name, file) pairs; name "*" when a single file holds everything."""
    if (directory / SINGLE_FILE).exists():
        yield "*", directory / SINGLE_FILE
        return
    index = directory / INDEX_FILE
    if not index.exists():
        raise LayerTapError(f"{directory}: no {SINGLE_FILE} or {INDEX_FILE} (is this a safetensors checkpoint?)")
    try:
        weight_map = json.loads(index.read_text())["weight_map"]
    except (json.JSONDecodeError, UnicodeDecodeError, KeyError, TypeError) as error:
        raise LayerTapError(f"{index}: not a valid safetensors index (needs a 'weight_map' object)") from error
    if not isinstance(weight_map, dict):
        raise LayerTapError(f"{index}: not a valid safetensors index ('weight_map' must map tensor names to files)")
    for name, file in weight_map.items():
        if not isinstance(file, str) or Path(file).is_absolute() or ".." in Path(file).parts:
            raise LayerTapError(f"{index}: shard {file!r} of tensor {name} lies outside the checkpoint directory")
        yield name, directory / file
