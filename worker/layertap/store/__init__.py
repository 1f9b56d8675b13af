"""The activation store: size-bounded safetensors shards, local or gs://, with a manifest.

- `open_writer(uri, meta, process_index, process_count)` -> ShardWriter (see writer.py)
- `finalize_run(uri)` merges the processes' commit records into manifest.json
- `open_run(uri)` (also `layertap.open`) reads a run
- `TokenRecords`: the rows of stored tokens (activations and index columns), written and read back

Objects live in a `layertap.io.Store` (a local directory or a gs:// prefix).

The format is specified in docs/format.md.
"""

from __future__ import annotations

from layertap.store.index import finalize_run
from layertap.store.reader import Run, open_run
from layertap.store.records import TokenRecords
from layertap.store.writer import ShardWriter, WriterProgress, open_writer

__all__ = ["Run", "ShardWriter", "TokenRecords", "WriterProgress", "finalize_run", "open_run", "open_writer"]
