"""The activation store: size-bounded safetensors shards, local or gs://, with a manifest.

- `open_writer(uri, meta, process_index, process_count)` -> ShardWriter (see writer.py)
- `finalize_run(uri)` merges the processes' commit records into manifest.json
- `open_run(uri)` (also `layertap.open`) reads a run
- `fs.fetch_dir(uri, cache_dir)` copies a gs:// directory (a checkpoint) to local disk

The format is specified in docs/format.md.
"""

from __future__ import annotations

from layertap.store.index import finalize_run
from layertap.store.reader import Batch, Run, open_run
from layertap.store.writer import ShardWriter, WriterProgress, open_writer

__all__ = ["Batch", "Run", "ShardWriter", "WriterProgress", "finalize_run", "open_run", "open_writer"]
