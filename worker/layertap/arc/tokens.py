"""Per-token labels from tokenizer offsets: the prompt part and the grid cell of each token.

Tokens are mapped to characters through the tokenizer's offset mapping, never by
guessing from token strings, so merges across boundaries cannot mislabel a cell:
- a grid cell belongs to the token that contains the first character of its text;
- a token's segment is that of its first non-whitespace character (a newline merged
  onto a grid's closing fence stays with the grid), or, for a cell's token, the cell's grid.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from layertap.arc.prompts import Prompt

_WHITESPACE = np.array([ord(c) for c in " \t\n\r\x0b\x0c"], dtype=np.uint32)


@dataclass(frozen=True)
class TokenLabels:
    """segments: [T] int16; cells: [T, 3] int16 (row, col, colour), -1 off-grid;
    merged_cells: cells whose first character fell in a token already holding a cell
    (a tokenizer that merges digits; never with Qwen2's single-digit split)."""

    segments: np.ndarray
    cells: np.ndarray
    merged_cells: int


def label_tokens(prompt: Prompt, offsets: np.ndarray) -> TokenLabels:
    """Labels for tokens whose character spans in `prompt.text` are `offsets` [T, 2]."""
    offsets = np.asarray(offsets, dtype=np.int64).reshape(-1, 2)
    starts, ends = offsets[:, 0], offsets[:, 1]
    num_chars = len(prompt.text)

    char_segment = np.zeros(num_chars + 1, dtype=np.int16)  # +1: a sentinel for empty tokens
    for start, end, label in prompt.spans:
        char_segment[start:end] = label
    codes = np.frombuffer(prompt.text.encode("utf-32-le"), dtype=np.uint32)
    visible = np.flatnonzero(~np.isin(codes, _WHITESPACE))
    first_visible = visible[np.minimum(np.searchsorted(visible, starts), len(visible) - 1)] if len(visible) else starts
    anchor = np.where((first_visible >= starts) & (first_visible < ends), first_visible, np.minimum(starts, num_chars))
    segments = char_segment[anchor]

    cells = np.full((len(offsets), 3), -1, dtype=np.int16)
    in_text = prompt.cell_starts < (ends.max() if len(ends) else 0)  # a truncated prompt loses cells
    cell_starts = prompt.cell_starts[in_text]
    # Token holding each cell's first character: the first token starting at or before it.
    order = np.argsort(starts, kind="stable")
    sorted_starts = starts[order]
    candidate = np.searchsorted(sorted_starts, cell_starts, side="right") - 1
    first_same_start = np.searchsorted(sorted_starts, sorted_starts[candidate], side="left")
    token = order[first_same_start]
    if np.any(ends[token] <= cell_starts):
        missing = int(cell_starts[np.argmax(ends[token] <= cell_starts)])
        raise ValueError(f"no token covers character {missing} of the prompt (offsets do not match the text)")
    unique_tokens, first = np.unique(token, return_index=True)
    cells[unique_tokens] = prompt.cells[in_text][first]
    segments[unique_tokens] = prompt.cell_labels[in_text][first]
    return TokenLabels(segments=segments, cells=cells, merged_cells=int(len(token) - len(unique_tokens)))
