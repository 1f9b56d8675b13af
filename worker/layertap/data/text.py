"""Plain-text datasets, one sample per record with a string "text" field.

- text-jsonl: one JSON object per line;
- parquet: one row per record (e.g. a Hugging Face `datasets` export), a "text" column.

The URI is a file or a directory of such files (read in name order), local or gs://
(streamed in ranged reads, never downloaded whole).
"""

from __future__ import annotations

import io
import json
from collections.abc import Callable, Iterator

import numpy as np

from layertap.arc.sources import Source, list_sources, open_parquet
from layertap.data.sample import OTHER_SEGMENT, Sample
from layertap.errors import LayerTapError

SEGMENT_NAMES = {OTHER_SEGMENT: "text"}
SUFFIXES = {"text-jsonl": ".jsonl", "parquet": ".parquet"}
PARQUET_BATCH_ROWS = 1024


def read_texts(uri: str, format: str = "text-jsonl") -> Iterator[tuple[str, int, str]]:
    """(file, record number from 0, text) of every record; a bad record is an error naming it."""
    read = _jsonl_texts if format == "text-jsonl" else _parquet_texts
    for source in list_sources(uri, (SUFFIXES[format],), format):
        yield from read(source)


def text_samples(uri: str, encode: Callable[[str], list[int]], format: str = "text-jsonl") -> Iterator[Sample]:
    """Tokenized samples in reading order; the sample index counts the records read."""
    for index, (file, record, text) in enumerate(read_texts(uri, format)):
        token_ids = np.asarray(encode(text), dtype=np.int32)
        yield Sample(
            index=index,
            token_ids=token_ids,
            segments=np.full(token_ids.shape, OTHER_SEGMENT, dtype=np.int16),
            meta={"file": file, "line" if format == "text-jsonl" else "row": record},
        )


def _jsonl_texts(source: Source) -> Iterator[tuple[str, int, str]]:
    """Blank lines are skipped; numbers are 0-based lines (errors show them 1-based)."""
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


def _parquet_texts(source: Source) -> Iterator[tuple[str, int, str]]:
    import pyarrow as pa  # only parquet inputs need pyarrow

    with open_parquet(source) as parquet:
        if "text" not in parquet.schema_arrow.names or not pa.types.is_string(parquet.schema_arrow.field("text").type):
            raise LayerTapError(f'{source.name}: needs a string column "text"; it has {parquet.schema_arrow.names}')
        row = 0
        for batch in parquet.iter_batches(batch_size=PARQUET_BATCH_ROWS, columns=["text"]):
            for text in batch.column(0).to_pylist():
                if text is None:
                    raise LayerTapError(f'{source.name}, row {row}: "text" is null')
                yield source.name, row, text
                row += 1
