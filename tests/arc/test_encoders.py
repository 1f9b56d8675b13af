from __future__ import annotations

import numpy as np
import pytest

from layertap.arc.encoders import DEFAULT_ENCODER, build_encoder
from layertap.arc.grids import GridError

GRID = np.array([[0, 1, 2], [3, 4, 0]], dtype=np.int8)

# The exact text of the arc24 conventions (ironbar/arc24, scripts/arc24/encoders.py).
GOLDEN = {
    "Minimal": "012\n340",
    "WithSeparation('|')": "0|1|2\n3|4|0",
    "WithSeparation(', ')": "0, 1, 2\n3, 4, 0",
    "RepeatNumber(3)": "000111222\n333444000",
    "CodeBlock(Minimal)": "```grid\n012\n340\n```",
    "Shape(Minimal)": "```grid shape: 2x3\n012\n340\n```",
    "RowNumber(Minimal)": "1 012\n2 340",
    "ReplaceNumber(Minimal)": "ñò÷\nûąñ",
    "Shape(RowNumber(Minimal))": "```grid shape: 2x3\n1 012\n2 340\n```",
    "CodeBlock(RepeatNumber(2))": "```grid\n001122\n334400\n```",
    "Shape(RowNumber(ReplaceNumber(Minimal)))": "```grid shape: 2x3\n1 ñò÷\n2 ûąñ\n```",
    "RowNumber(Shape(Minimal))": "1 ```grid shape: 2x3\n2 012\n3 340\n4 ```",
    "ReplaceNumber(Shape(Minimal))": "```grid shape: ÷xû\nñò÷\nûąñ\n```",
}


@pytest.mark.parametrize(("spec", "text"), GOLDEN.items())
def test_golden_text_decode_and_cell_offsets(spec, text) -> None:
    encoder = build_encoder(spec)
    encoded = encoder.encode(GRID)
    assert encoded.text == text
    assert str(build_encoder(str(encoder))) == str(encoder)  # the canonical spec parses back
    assert np.array_equal(encoder.decode(text), GRID)
    # Each cell offset points at the cell's own digit (or its ReplaceNumber symbol).
    digits = encoded.text.translate(str.maketrans("ñò÷ûąćďęĚĞ", "0123456789"))
    assert [int(digits[i]) for i in encoded.cell_starts.ravel()] == GRID.ravel().tolist()
    assert encoded.text.startswith(encoder.answer_prefix)


def test_arc24_names_are_aliases() -> None:
    arc24 = "GridShapeEncoder(RowNumberEncoder(MinimalGridEncoder()))"
    assert str(build_encoder(arc24)) == DEFAULT_ENCODER
    assert str(build_encoder("GridWithSeparationEncoder('|')")) == "WithSeparation('|')"


# Every encoder class at least once (the golden table covers the other compositions).
CORPUS_SPECS = (
    "Minimal",
    "WithSeparation('|')",
    "CodeBlock(RepeatNumber(3))",
    DEFAULT_ENCODER,
    "Shape(RowNumber(ReplaceNumber(Minimal)))",
)


@pytest.mark.slow
def test_every_arc_grid_round_trips_through_every_encoder(arc_tasks) -> None:
    grids = [g for t in arc_tasks for p in t.train + t.test for g in p.grids().values()]
    assert len(grids) > 15_000
    for spec in CORPUS_SPECS:
        encoder = build_encoder(spec)
        for grid in grids:
            encoded = encoder.encode(grid)
            assert np.array_equal(encoder.decode(encoded.text), grid), (spec, grid)
            assert encoded.cell_starts.shape == grid.shape


@pytest.mark.parametrize(
    ("spec", "reason"),
    [
        ("__import__('os').system('true')", r"expected an encoder name or call"),
        ("Minimal.__class__", r"expected an encoder name or call"),
        ("Shape(lambda: 1)", r"expected an encoder name or call"),
        ("Eval(Minimal)", r"unknown encoder 'Eval'; known: Minimal, WithSeparation"),
        ("Shape()", r"Shape takes one encoder"),
        ("Shape(Minimal, Minimal)", r"Shape takes one encoder"),
        ("RepeatNumber('3')", r"RepeatNumber expects a int literal"),
        ("RepeatNumber(n=3)", r"expected an encoder name or call"),
        ("WithSeparation('1')", r"separator '1' must be non-empty, without digits"),
        ("Shape(RowNumber(Minimal)", r"not a valid spec"),
        ("Shape(" * 12 + "Minimal" + ")" * 12, r"nested too deeply"),
    ],
)
def test_unsafe_or_wrong_specs_are_rejected(spec, reason) -> None:
    with pytest.raises(ValueError, match=reason):
        build_encoder(spec)


@pytest.mark.parametrize(
    ("spec", "text", "reason"),
    [
        ("Minimal", "01\n2", r"not rectangular"),
        ("Minimal", "0a", r"not made of digits"),
        ("Shape(Minimal)", "```grid shape: 3x3\n01\n23\n```", r"header says '3x3' but the grid is 2x2"),
        ("CodeBlock(Minimal)", "012", r"no ```grid block"),
        ("RepeatNumber(3)", "000112", r"not each digit repeated 3 times"),
        ("RowNumber(Minimal)", "012", r"does not start with a row number"),
    ],
)
def test_decoders_reject_malformed_text(spec, text, reason) -> None:
    with pytest.raises(GridError, match=reason):
        build_encoder(spec).decode(text)
