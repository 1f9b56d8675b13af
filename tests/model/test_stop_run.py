"""RunStop: a closing code fence found however the tokenizer splits it."""

from __future__ import annotations

import jax.numpy as jnp
import pytest

from layertap.model.generate import RunStop

TEXTS = ["a", "`", "``", "x`", "``y", "```", "b```c", "\n"]
STOP = RunStop.of_texts(TEXTS)


def first_stop(pieces: list[str]) -> int | None:
    """The 1-based position of the token that completes ``` , None if none does."""
    run = jnp.zeros(1, jnp.int32)
    for position, piece in enumerate(pieces, 1):
        closes, run = STOP.step(run, jnp.array([TEXTS.index(piece)]))
        if bool(closes[0]):
            return position
    return None


@pytest.mark.parametrize(
    ("pieces", "expected"),
    [
        (["a", "```"], 2),
        (["b```c"], 1),
        (["`", "`", "`"], 3),
        (["x`", "``y"], 2),
        (["``", "`", "a"], 2),
        (["`", "a", "``"], None),  # the run is broken
        (["\n", "x`", "\n", "``"], None),
        (["a", "a"], None),
    ],
)
def test_a_fence_is_found_across_token_boundaries(pieces, expected):
    assert first_stop(pieces) == expected
