"""text-jsonl: one JSON object per line with a "text" field; one sample per line."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np

from layertap.data.sample import OTHER_SEGMENT, Sample
from layertap.errors import LayerTapError

SEGMENT_NAMES = {OTHER_SEGMENT: "text"}


def read_texts(path: Path) -> Iterator[tuple[int, str]]:
    """(line number from 0, text) for every non-blank line; a bad line is an error naming it."""
    with path.open(encoding="utf-8") as lines:
        for number, line in enumerate(lines):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as error:
                raise LayerTapError(f"{path}:{number + 1}: not valid JSON ({error.msg})") from None
            text = record.get("text") if isinstance(record, dict) else None
            if not isinstance(text, str):
                raise LayerTapError(f'{path}:{number + 1}: expected an object with a string "text" field')
            yield number, text


def text_samples(path: Path, encode: Callable[[str], list[int]]) -> Iterator[Sample]:
    """Tokenized samples in file order; the sample index is the line's rank among non-blank lines."""
    for index, (line, text) in enumerate(read_texts(path)):
        token_ids = np.asarray(encode(text), dtype=np.int32)
        yield Sample(
            index=index,
            token_ids=token_ids,
            segments=np.full(token_ids.shape, OTHER_SEGMENT, dtype=np.int16),
            meta={"line": line},
        )
