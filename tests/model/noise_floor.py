"""bfloat16 against transformers' own noise: how far LayerTap's bfloat16 forward lands from
transformers' float32 one, beside how far transformers' bfloat16 forward lands from it.

Shared by tests/model/test_noise_floor.py (CPU, small models) and benchmarks/gpu_numerics.py
(a GPU, Qwen2.5-0.5B shapes); imports torch and transformers (the `.[parity]` extra).

Every comparison is per layer and per site, over the real tokens of a few samples, and
relative to the reference's RMS at that layer and site: max |a - b| / RMS and mean |a - b| / RMS.
"""

from __future__ import annotations

from dataclasses import dataclass

import jax
import jax.numpy as jnp
import numpy as np
import torch
import transformers

from layertap.model import LayerTap, load_checkpoint, make_extract_fn
from layertap_api.spec import SITES


def hf_model(directory, dtype=torch.float32, device: str = "cpu"):
    """transformers' PyTorch model of the checkpoint, eager attention, in `dtype` on `device`."""
    model = transformers.AutoModelForCausalLM.from_pretrained(directory, dtype=dtype, attn_implementation="eager")
    return model.to(device).eval()


def hf_sites(model, token_ids: np.ndarray, sites=SITES) -> dict[str, np.ndarray]:
    """site -> [L, B, T, ...] from forward hooks on transformers' modules (`hf_model`), as
    float32: resid_pre: the decoder layer's input; attn_z: o_proj's input (heads x head size);
    attn_out: self_attn's output; resid_mid: post_attention_layernorm's input (the residual
    after attention); mlp_hidden: down_proj's input; mlp_out: mlp's output; resid_post: the
    decoder layer's output. Only `sites` are kept."""
    config = model.config
    heads = config.num_attention_heads
    head_dim = getattr(config, "head_dim", None) or config.hidden_size // heads
    seen: dict[str, list] = {site: [] for site in SITES}

    def keep(site, take):
        if site not in sites:
            return lambda *_: None
        return lambda module, args, out=None: seen[site].append(take(args, out).detach().float().cpu().numpy())

    hooks = []
    for layer in model.model.layers:
        hooks += [
            layer.register_forward_pre_hook(keep("resid_pre", lambda a, o: a[0])),
            layer.self_attn.o_proj.register_forward_pre_hook(
                keep("attn_z", lambda a, o: a[0].reshape(*a[0].shape[:2], heads, head_dim))
            ),
            layer.self_attn.register_forward_hook(keep("attn_out", lambda a, o: o[0])),
            layer.post_attention_layernorm.register_forward_pre_hook(keep("resid_mid", lambda a, o: a[0])),
            layer.mlp.down_proj.register_forward_pre_hook(keep("mlp_hidden", lambda a, o: a[0])),
            layer.mlp.register_forward_hook(keep("mlp_out", lambda a, o: o)),
            layer.register_forward_hook(keep("resid_post", lambda a, o: o[0] if isinstance(o, tuple) else o)),
        ]
    with torch.inference_mode():
        model.model(torch.from_numpy(token_ids).long().to(model.device))
    for hook in hooks:
        hook.remove()
    return {site: np.stack(seen[site]) for site in sites}


def hf_tokens(directory, samples: list[np.ndarray], dtype, device: str = "cpu", sites=SITES) -> dict[str, np.ndarray]:
    """site -> [L, tokens, ...]: each sample run alone (no padding), tokens concatenated."""
    model = hf_model(directory, dtype, device)
    runs = [hf_sites(model, sample[None], sites) for sample in samples]
    return {site: np.concatenate([run[site][:, 0] for run in runs], axis=1) for site in sites}


def packed_rows(samples: list[np.ndarray], per_row: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(token ids, positions, segment ids, where) for `samples` packed `per_row` to a row and
    padded (segment 0) to the longest row; `where` [tokens, 2] is each real token's (row, column),
    in sample order."""
    rows = [samples[i : i + per_row] for i in range(0, len(samples), per_row)]
    width = max(sum(len(s) for s in row) for row in rows)
    ids, positions, segments = (np.zeros((len(rows), width), np.int32) for _ in range(3))
    where = []
    for r, row in enumerate(rows):
        start = 0
        for segment, sample in enumerate(row, start=1):
            span = slice(start, start + len(sample))
            ids[r, span], positions[r, span], segments[r, span] = sample, np.arange(len(sample)), segment
            where += [(r, c) for c in range(span.start, span.stop)]
            start = span.stop
    return ids, positions, segments, np.asarray(where)


def layertap_tokens(config, params, samples, per_row: int, compute_dtype, sites=SITES) -> dict[str, np.ndarray]:
    """site -> [L, tokens, ...] of LayerTap's forward (attention as `choose_implementation`
    picks it, `$LAYERTAP_ATTENTION` included), samples packed `per_row` to a row, as float32."""
    tap = LayerTap.for_model(list(range(config.num_hidden_layers)), config.num_hidden_layers, sites=sites)
    ids, positions, segments, where = packed_rows(samples, per_row)
    fn = jax.jit(make_extract_fn(config, tap, compute_dtype, out_dtype=jnp.float32))
    out = fn(params, jnp.asarray(ids), jnp.asarray(positions), jnp.asarray(segments))
    return {site: np.asarray(value)[:, where[:, 0], where[:, 1]] for site, value in out.items()}


def rms(values: np.ndarray) -> np.ndarray:
    """[L] root mean square per layer, over tokens and features."""
    return np.sqrt(np.mean(np.square(values.reshape(len(values), -1)), axis=1))


def relative_errors(actual: np.ndarray, expected: np.ndarray, scale: np.ndarray | None = None):
    """(max, mean) per layer of |actual - expected| / scale (default: RMS(expected))."""
    scale = rms(expected) if scale is None else scale
    diff = np.abs(actual - expected).reshape(len(expected), -1)
    return diff.max(axis=1) / scale, diff.mean(axis=1) / scale


@dataclass(frozen=True)
class Floor:
    """Per layer, at one site: ours (LayerTap bf16 vs transformers f32), theirs (transformers
    bf16 vs transformers f32), packed (LayerTap bf16 two samples a row vs one a row,
    relative to transformers f32's RMS); each a (max, mean) pair of [L] arrays."""

    ours: tuple[np.ndarray, np.ndarray]
    theirs: tuple[np.ndarray, np.ndarray]
    packed: tuple[np.ndarray, np.ndarray]

    def ratio(self, which: int) -> np.ndarray:
        """ours / theirs per layer, of the max (0) or the mean (1)."""
        return self.ours[which] / self.theirs[which]


def transformers_tokens(directory, samples: list[np.ndarray], device: str = "cpu", sites=SITES) -> tuple[dict, dict]:
    """(float32, bfloat16) `hf_tokens` of transformers: the reference and its own noise."""
    return tuple(hf_tokens(directory, samples, dtype, device, sites) for dtype in (torch.float32, torch.bfloat16))


def measure(directory, samples: list[np.ndarray], references: tuple[dict, dict]) -> dict[str, Floor]:
    """site -> Floor for the checkpoint in `directory` over `samples` (token id arrays), given
    `transformers_tokens` of the same; LayerTap runs on JAX's default device."""
    reference, theirs = references
    config, params = load_checkpoint(directory, jnp.bfloat16)
    sites = tuple(reference)
    alone = layertap_tokens(config, params, samples, 1, jnp.bfloat16, sites)
    packed = layertap_tokens(config, params, samples, 2, jnp.bfloat16, sites)
    return {
        site: Floor(
            ours=relative_errors(alone[site], reference[site]),
            theirs=relative_errors(theirs[site], reference[site]),
            packed=relative_errors(packed[site], alone[site], rms(reference[site])),
        )
        for site in sites
    }


def table(floors: dict[str, Floor]) -> list[str]:
    """Markdown rows: site, layer, ours, theirs, ratio (max and mean), packed vs unpacked."""
    lines = [
        "| site | layer | ours max | theirs max | ratio | ours mean | theirs mean | ratio | packed max | packed mean |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for site, floor in floors.items():
        for layer in range(len(floor.ours[0])):
            lines.append(
                f"| {site} | {layer} | {floor.ours[0][layer]:.4f} | {floor.theirs[0][layer]:.4f} | "
                f"{floor.ratio(0)[layer]:.2f} | {floor.ours[1][layer]:.5f} | {floor.theirs[1][layer]:.5f} | "
                f"{floor.ratio(1)[layer]:.2f} | {floor.packed[0][layer]:.4f} | {floor.packed[1][layer]:.5f} |"
            )
    return lines
