"""ARC colours as words, as the BARC `messages` datasets write grids ("Black Blue Red")."""

from __future__ import annotations

import numpy as np

from layertap.arc.grids import GridError, to_grid

# BARC's names (its prompts renamed Grey/Teal/Maroon to Gray/Purple/Brown); the older
# names are accepted too. Lookup is case-insensitive.
COLOUR_WORDS = ("Black", "Blue", "Red", "Green", "Yellow", "Gray", "Pink", "Orange", "Purple", "Brown")
_ALIASES = {"grey": 5, "teal": 8, "maroon": 9}
WORD_TO_COLOUR = {word.lower(): colour for colour, word in enumerate(COLOUR_WORDS)} | _ALIASES


def is_colour_row(line: str) -> bool:
    """True for a line made only of colour words (one grid row)."""
    words = line.split()
    return bool(words) and all(word.lower() in WORD_TO_COLOUR for word in words)


def grid_from_words(lines: list[str]) -> np.ndarray:
    """A grid from rows of space-separated colour words."""
    rows = []
    for r, line in enumerate(lines):
        try:
            rows.append([WORD_TO_COLOUR[word.lower()] for word in line.split()])
        except KeyError as error:
            raise GridError(f"row {r}: unknown colour word {error.args[0]!r}") from None
    return to_grid(rows)


def grid_to_words(grid: np.ndarray) -> str:
    return "\n".join(" ".join(COLOUR_WORDS[c] for c in row) for row in grid.tolist())
