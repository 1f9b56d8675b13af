"""text-jsonl: one JSON object per line with a "text" field; one sample per line.

The URI is a file or a directory of `*.jsonl` files (read in name order), local or gs://
(streamed in ranged reads, never downloaded whole).
"""

from __future__ import annotations

import io
import json
from collections.abc import Callable, Iterator

import numpy as np

from layertap.arc.sources import list_sources
from layertap.data.sample import OTHER_SEGMENT, Sample
from layertap.errors import LayerTapError

SEGMENT_NAMES = {OTHER_SEGMENT: "text"}


def read_texts(uri: str) -> Iterator[tuple[str, int, str]]:
    """(file, line number from 0, text) for every non-blank line; a bad line is an error naming it."""
    for source in list_sources(uri, (".jsonl",), "text-jsonl"):
        with io.TextIOWrapper(source.open(), encoding="utf-8") as lines:
            for number, line in enumerate(lines):
                if not line.strip():
                    continue
                try:
                    record = json.loads(line)
                except json.JSONDecodeError as error:
                    raise LayerTapError(f"{source.name}:{number + 1}: not valid JSON ({error.msg})") from None
                text = record.get("text") if isinstance(record, dict) else None
                if not isinstance(text, str):
                    raise LayerTapError(f'{source.name}:{number + 1}: expected an object with a string "text" field')
                yield source.name, number, text


def text_samples(uri: str, encode: Callable[[str], list[int]]) -> Iterator[Sample]:
    """Tokenized samples in reading order; the sample index counts the non-blank lines read."""
    for index, (file, line, text) in enumerate(read_texts(uri)):
        token_ids = np.asarray(encode(text), dtype=np.int32)
        yield Sample(
            index=index,
            token_ids=token_ids,
            segments=np.full(token_ids.shape, OTHER_SEGMENT, dtype=np.int16),
            meta={"file": file, "line": line},
        )
