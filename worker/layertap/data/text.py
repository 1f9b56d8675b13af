"""Plain-text datasets, one sample per record with a string field `dataset.column` ("text").

- text-jsonl: one JSON object per line;
- parquet: one row per record (e.g. a Hugging Face `datasets` export), a string column.

The URI is a file or a directory of such files (read in name order), local or gs://
(streamed in ranged reads, never downloaded whole), or a Hugging Face Hub dataset
hf://ORG/NAME[@REVISION]: the files of `dataset.split` (of `dataset.config`), fetched into
the Hub's cache (`layertap.io.hub`) and streamed from there. Parquet is read a batch of rows
at a time and jsonl a line at a time, so no file is ever held in memory whole. A parquet file
without the column is an error naming dataset.column before any record is used; a record
that cannot be read (not UTF-8, not JSON, no string field) is an error naming file and line,
or with `dataset.skipInvalid` is skipped and counted.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Iterator
from dataclasses import replace
from itertools import islice

import numpy as np

from layertap.data.dataset import Dataset, no_samples
from layertap.data.invalid import SKIP_HINT, InvalidRecord, ReadStats
from layertap.data.sample import OTHER_SEGMENT, Sample
from layertap.data.selection import select
from layertap.errors import LayerTapError
from layertap.io.sources import Source, iter_lines, list_sources, open_parquet
from layertap_api.hub import is_hub
from layertap_api.spec import DatasetSpec

SEGMENT_NAMES = {OTHER_SEGMENT: "text"}
SUFFIXES = {"text-jsonl": ".jsonl", "parquet": ".parquet"}
PARQUET_BATCH_ROWS = 1024


def load_text_dataset(spec: DatasetSpec, tokenizer) -> Dataset:
    """Read, select (dataset.select), tokenize (no added special tokens) and limit a text-jsonl
    or parquet dataset."""

    def encode(value: str) -> list[int]:
        return tokenizer.encode(value, add_special_tokens=False)

    reading = ReadStats()
    texts = read_texts(
        spec.uri, spec.format, spec.skip_invalid, reading, column=spec.column, split=spec.split, config=spec.config
    )
    records = enumerate(texts)
    # dataset.select picks records (id: the record's position, its sample index) before any is
    # tokenized. Every host reads the same records in the same order and selects the same ones.
    records = select(
        records,
        lambda record: str(record[0]),
        spec.select,
        uri=spec.uri,
        unit="record",
        ids_hint="a text record's id is its 0-based position among the records read",
    )
    samples = islice(_tokenized(records, encode, spec.format), spec.max_samples)
    kept, over, empty = fit_to_limit(samples, spec.max_tokens, spec.over_limit)
    parts = (
        f"{over} over maxTokens ({spec.over_limit})" if over else "",
        f"{empty} empty skipped (no tokens)" if empty else "",
        reading.report(),
    )
    report = "; ".join(part for part in parts if part)
    if not kept:
        raise no_samples(spec.uri, report)
    return Dataset(samples=kept, segment_names=dict(SEGMENT_NAMES), limit_report=report, select=_select)


def _select(wanted: list[str]) -> list[int]:
    by_name = {name: label for label, name in SEGMENT_NAMES.items()}
    unknown = [name for name in wanted if name not in by_name]
    if unknown:
        raise ValueError(f"extraction.segments: {unknown} are not segments of this dataset; it has {sorted(by_name)}")
    return [by_name[name] for name in wanted]


def fit_to_limit(samples: Iterable[Sample], max_tokens: int, policy: str) -> tuple[list[Sample], int, int]:
    """Apply overLimit to plain-text samples: drop long ones, or cut them to max_tokens; skip
    empty ones (no tokens to extract). Returns the kept, the count over the limit, the empty.

    "shorten" removes ARC train pairs (the ARC reader's job); plain text has none to
    remove, so it cuts like "truncate".
    """
    kept, over, empty = [], 0, 0
    for sample in samples:
        if len(sample.token_ids) == 0:
            empty += 1
            continue
        if len(sample.token_ids) > max_tokens:
            over += 1
            if policy == "drop":
                continue
            sample = truncate(sample, max_tokens)
        kept.append(sample)
    return kept, over, empty


def truncate(sample: Sample, n: int) -> Sample:
    cells = None if sample.cells is None else sample.cells[:n]
    meta = {**sample.meta, "truncatedFrom": len(sample.token_ids)}
    return replace(sample, token_ids=sample.token_ids[:n], segments=sample.segments[:n], cells=cells, meta=meta)


def read_texts(
    uri: str,
    format: str = "text-jsonl",
    skip_invalid: bool = False,
    stats: ReadStats | None = None,
    *,
    column: str = "text",
    split: str = "train",
    config: str | None = None,
) -> Iterator[tuple[str, int, str]]:
    """(file, record number from 0, text) of every record; a bad record is an error naming
    it, or with `skip_invalid` is counted in `stats` and skipped. `split` and `config` pick
    the files of an hf:// dataset."""
    stats = stats if stats is not None else ReadStats()
    read = _jsonl_texts if format == "text-jsonl" else _parquet_texts
    for source in text_sources(uri, format, split=split, config=config):
        for record in read(source, column):
            if isinstance(record, InvalidRecord):
                if not skip_invalid:
                    raise InvalidRecord(record.where, f"{record.reason} ({SKIP_HINT})")
                stats.skip(record)
                continue
            stats.read += 1
            yield record


def text_sources(uri: str, format: str, *, split: str = "train", config: str | None = None) -> list[Source]:
    """The files of a text dataset, in reading order: a file, a directory, or one split of an
    hf:// dataset (its files of this format)."""
    suffixes = (SUFFIXES[format],)
    if is_hub(uri):
        from layertap.io.hub import dataset_sources  # only hf:// needs huggingface_hub

        return dataset_sources(uri, split=split, config=config, suffixes=suffixes, what=format)
    return list_sources(uri, suffixes, format)


def _tokenized(
    records: Iterable[tuple[int, tuple[str, int, str]]], encode: Callable[[str], list[int]], format: str
) -> Iterator[Sample]:
    for index, (file, record, text) in records:
        token_ids = np.asarray(encode(text), dtype=np.int32)
        yield Sample(
            index=index,
            token_ids=token_ids,
            segments=np.full(token_ids.shape, OTHER_SEGMENT, dtype=np.int16),
            meta={"file": file, "line" if format == "text-jsonl" else "row": record},
        )


def _jsonl_texts(source: Source, column: str = "text") -> Iterator[tuple[str, int, str] | InvalidRecord]:
    """Blank lines are skipped; records are numbered by their 0-based line (errors show it 1-based)."""
    for number, line in iter_lines(source):
        where = f"{source.name}:{number}"
        if line is None:
            yield InvalidRecord(where, "not valid UTF-8")
            continue
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as error:
            yield InvalidRecord(where, f"not valid JSON ({error.msg})")
            continue
        text = record.get(column) if isinstance(record, dict) else None
        if not isinstance(text, str):
            reason = f"expected an object with a string {json.dumps(column)} field{_fields_hint(record, column)}"
            yield InvalidRecord(where, reason)
            continue
        yield source.name, number - 1, text


def _fields_hint(record: object, column: str) -> str:
    """Where a record has no such field at all, the fields it has (the column may be misnamed)."""
    if not isinstance(record, dict) or column in record:
        return ""
    return f" (dataset.column; this record has {', '.join(map(str, record)) or 'no fields'})"


def _parquet_texts(source: Source, column: str = "text") -> Iterator[tuple[str, int, str] | InvalidRecord]:
    import pyarrow as pa  # only parquet inputs need pyarrow

    with open_parquet(source) as parquet:
        schema = parquet.schema_arrow
        if column not in schema.names:
            raise LayerTapError(
                f"dataset.column: {column!r} is not a column of {source.name} (columns: {', '.join(schema.names)})"
            )
        kind = schema.field(column).type
        if not (pa.types.is_string(kind) or pa.types.is_large_string(kind)):
            raise LayerTapError(f"dataset.column: {column!r} of {source.name} holds {kind}, not strings")
        row = 0
        for batch in parquet.iter_batches(batch_size=PARQUET_BATCH_ROWS, columns=[column]):
            for text in batch.column(0).to_pylist():
                if text is None:
                    yield InvalidRecord(f"{source.name}, row {row}", f"{json.dumps(column)} is null")
                else:
                    yield source.name, row, text
                row += 1
