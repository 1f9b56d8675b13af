"""Segment labels: which part of an ARC prompt a character (and then a token) belongs to.

Label 0 is other text (instructions, chat scaffolding), as in `layertap.data.sample`.
Examples are numbered from 1, as the prompt numbers them.
"""

from __future__ import annotations

from collections.abc import Iterable

OTHER, SYSTEM, TEST_INPUT, ANSWER = 0, 1, 2, 3
MAX_EXAMPLES = 50  # more train pairs than any ARC-AGI or BARC task has; labels stay small


def example_label(k: int, grid: str) -> int:
    """Label of example k's (1-based) "input" or "output" grid."""
    if not 1 <= k <= MAX_EXAMPLES:
        raise ValueError(f"example {k} is outside 1..{MAX_EXAMPLES}")
    return 2 + 2 * k + (grid == "output")


# Tokens the model generated (mode predict), after the prompt: not part of any prompt grid.
GENERATED = example_label(MAX_EXAMPLES, "output") + 1

segment_names: dict[int, str] = {OTHER: "other", SYSTEM: "system", TEST_INPUT: "test-input", ANSWER: "answer"}
for _k in range(1, MAX_EXAMPLES + 1):
    segment_names[example_label(_k, "input")] = f"example-{_k}-input"
    segment_names[example_label(_k, "output")] = f"example-{_k}-output"
# A prediction's activations also hold the generated tokens (extraction runs never do).
prediction_segment_names = {**segment_names, GENERATED: "generated"}

# Names that select several labels at once.
SEGMENT_GROUPS: dict[str, tuple[int, ...]] = {
    "example-input": tuple(example_label(k, "input") for k in range(1, MAX_EXAMPLES + 1)),
    "example-output": tuple(example_label(k, "output") for k in range(1, MAX_EXAMPLES + 1)),
    "grids": tuple(label for label in segment_names if label not in (OTHER, SYSTEM)),
}


def select_labels(names: Iterable[str]) -> list[int]:
    """The labels that segment names (e.g. ["test-input", "example-output"]) select."""
    by_name = {name: label for label, name in segment_names.items()}
    labels: set[int] = set()
    for name in names:
        if name in by_name:
            labels.add(by_name[name])
        elif name in SEGMENT_GROUPS:
            labels.update(SEGMENT_GROUPS[name])
        else:
            known = ", ".join(
                ["other", "system", "test-input", "answer", "example-K-input", "example-K-output", *SEGMENT_GROUPS]
            )
            raise ValueError(f"extraction.segments: unknown segment {name!r}; known: {known}")
    return sorted(labels)
