"""LayerTap: which residual streams the decoder hands back, as a configured feature.

After gemma's `sow_lib` (flax examples/gemma): a frozen config decides what is captured,
and the model calls `maybe_tap` at the one place a residual stream exists, rather than
hooks patched in from outside. The config also tells the decoder where to stop.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import jax
import jax.numpy as jnp

from layertap.errors import LayerTapError


@dataclass(frozen=True)
class LayerTap:
    """Capture the output of these decoder blocks (0-based; layer i is HF hidden_states[i+1])."""

    layers: tuple[int, ...]

    @classmethod
    def for_model(cls, requested: Sequence[int] | None, num_layers: int, model: str = "the model") -> LayerTap:
        """The tap of `extraction.layers` (in increasing order; None: the upper part of the
        model, `default_layers`) for a model of `num_layers` blocks named `model` in errors."""
        layers = sorted(requested) if requested is not None else default_layers(num_layers)
        return cls.validated(layers, num_layers, model=model)

    @classmethod
    def validated(
        cls, layers: Sequence[int], num_layers: int, field: str = "extraction.layers", model: str = "the model"
    ) -> LayerTap:
        """A tap of these layers, in this order; bad input names `field`."""
        layers = tuple(int(layer) for layer in layers)
        if not layers:
            raise LayerTapError(f"{field}: at least one layer is needed")
        if len(set(layers)) != len(layers):
            raise LayerTapError(f"{field}: duplicate layers in {list(layers)}")
        out_of_range = [layer for layer in layers if not 0 <= layer < num_layers]
        if out_of_range:
            raise LayerTapError(
                f"{field}: {out_of_range} out of range; {model} has {num_layers} layers (0-{num_layers - 1})"
            )
        return cls(layers)

    @property
    def blocks_to_run(self) -> int:
        """The decoder stops after the last requested block."""
        return max(self.layers) + 1

    def maybe_tap(self, layer: int, x_btd: jax.Array, taps: dict[int, jax.Array]) -> None:
        """Record the residual stream after block `layer` if it was requested."""
        if layer in self.layers:
            taps[layer] = x_btd

    def stack(self, taps: dict[int, jax.Array]) -> jax.Array:
        """[len(layers), B, T, D] in the requested order."""
        return jnp.stack([taps[layer] for layer in self.layers])


def default_layers(num_layers: int) -> list[int]:
    """The upper part of the model: 10-23 for a 24-layer model."""
    return list(range(math.floor(10 * num_layers / 24), num_layers))
