"""LayerTap: which activations the decoder hands back, as a configured feature.

After gemma's `sow_lib` (flax examples/gemma): a frozen config decides what is captured,
and each module sows a site at the one place it computes it, rather than hooks patched in
from outside. The config also tells the decoder where to stop.

Sites follow TransformerLens' hook names (docs/format.md maps them to Hugging Face modules):

  resid_pre   the block's input (hook_resid_pre)            [D]
  attn_z      each head's output before o_proj (attn.hook_z) [N, H]
  attn_out    the attention's output, o_proj included        [D]
  resid_mid   after the attention's residual add             [D]
  mlp_hidden  silu(gate) * up, the MLP's inner activation    [F]   (mlp.hook_post)
  mlp_out     the MLP's output                               [D]
  resid_post  the block's output (HF hidden_states[i + 1])   [D]
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import jax
import jax.numpy as jnp

from layertap.errors import LayerTapError
from layertap_api.spec import SITES, Site

DEFAULT_SITES: tuple[Site, ...] = ("resid_post",)

# How far into its block a site is computed: 0 before the block runs, 1 once attention has
# run, 2 once the MLP has run. The last tapped block runs only as far as its sites need.
SITE_STAGE: dict[str, int] = {
    "resid_pre": 0,
    "attn_z": 1,
    "attn_out": 1,
    "resid_mid": 1,
    "mlp_hidden": 2,
    "mlp_out": 2,
    "resid_post": 2,
}
ATTENTION, FULL = 1, 2
# Where a site is sown inside its block (module path below `layers_{i}`).
SITE_PATH: dict[str, tuple[str, ...]] = {"attn_z": ("self_attn", "attn_z"), "mlp_hidden": ("mlp", "mlp_hidden")}


def site_shape(site: str, config) -> tuple[int, ...]:
    """The shape of one token's activation at `site` (config: a DecoderConfig)."""
    if site == "attn_z":
        return (config.num_attention_heads, config.head_dim)
    if site == "mlp_hidden":
        return (config.intermediate_size,)
    return (config.hidden_size,)


@dataclass(frozen=True)
class LayerTap:
    """Capture `sites` at each of these decoder blocks (0-based; resid_post of layer i is HF
    hidden_states[i + 1])."""

    layers: tuple[int, ...]
    sites: tuple[Site, ...] = DEFAULT_SITES

    @classmethod
    def for_model(
        cls,
        requested: Sequence[int] | None,
        num_layers: int,
        model: str = "the model",
        sites: Sequence[str] | None = None,
    ) -> LayerTap:
        """The tap of `extraction.layers` (in increasing order; None: the upper part of the
        model, `default_layers`) and `extraction.sites` (in the order of SITES; None:
        resid_post) for a model of `num_layers` blocks named `model` in errors."""
        layers = sorted(requested) if requested is not None else default_layers(num_layers)
        return cls.validated(layers, num_layers, model=model, sites=sites)

    @classmethod
    def validated(
        cls,
        layers: Sequence[int],
        num_layers: int,
        field: str = "extraction.layers",
        model: str = "the model",
        sites: Sequence[str] | None = None,
    ) -> LayerTap:
        """A tap of these layers, in this order; bad input names `field` (or extraction.sites)."""
        layers = tuple(int(layer) for layer in layers)
        if not layers:
            raise LayerTapError(f"{field}: at least one layer is needed")
        if len(set(layers)) != len(layers):
            raise LayerTapError(f"{field}: duplicate layers in {list(layers)}")
        sites = checked_sites(sites)
        out_of_range = [layer for layer in layers if not 0 <= layer < num_layers]
        if out_of_range:
            where = "" if sites == DEFAULT_SITES else f" for sites {', '.join(sites)}"
            raise LayerTapError(
                f"{field}: {out_of_range} out of range{where}; {model} has {num_layers} layers (0-{num_layers - 1})"
            )
        return cls(layers, sites)

    @property
    def last_stage(self) -> int:
        """How far the last tapped block runs (SITE_STAGE)."""
        return max(SITE_STAGE[site] for site in self.sites)

    @property
    def blocks_to_run(self) -> int:
        """Blocks whose weights the forward needs: up to the last tapped one, unless only its
        input (resid_pre) is captured there."""
        return max(self.layers) + (1 if self.last_stage > 0 else 0)

    def stage(self, layer: int) -> int:
        """How far block `layer` runs: fully below the last tapped block."""
        return self.last_stage if layer == max(self.layers) else FULL

    def sites_at(self, layer: int) -> frozenset[str]:
        return frozenset(self.sites) if layer in self.layers else frozenset()

    def sites_entry(self) -> dict[str, list[str]]:
        """The `sites` entry of a run's meta and identity; none for resid_post alone, so such
        runs stay byte for byte what they were before sites existed."""
        return {} if self.sites == DEFAULT_SITES else {"sites": list(self.sites)}

    def collect(self, sown: Mapping) -> dict[str, jax.Array]:
        """The sites sown by the decoder's blocks (the `taps` collection), stacked per site:
        site -> [len(layers), B, T, *site_shape], sites and layers in this tap's order."""

        def sown_at(layer: int, site: str) -> jax.Array:
            node = sown[f"layers_{layer}"]
            for key in SITE_PATH.get(site, (site,)):
                node = node[key]
            return node

        return {site: jnp.stack([sown_at(layer, site) for layer in self.layers]) for site in self.sites}


def checked_sites(sites: Sequence[str] | None) -> tuple[Site, ...]:
    """Sites in the canonical order of SITES (None: resid_post); unknown or repeated ones are
    an error naming extraction.sites."""
    if sites is None:
        return DEFAULT_SITES
    unknown = [site for site in sites if site not in SITES]
    if unknown:
        raise LayerTapError(f"extraction.sites: {unknown} are not sites; choose from {', '.join(SITES)}")
    if len(set(sites)) != len(sites) or not sites:
        raise LayerTapError(f"extraction.sites: list each site once, at least one (got {list(sites)})")
    return tuple(site for site in SITES if site in sites)


def default_layers(num_layers: int) -> list[int]:
    """The upper part of the model: 10-23 for a 24-layer model."""
    return list(range(math.floor(10 * num_layers / 24), num_layers))
