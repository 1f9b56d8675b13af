"""Object-store and file I/O for every part of LayerTap: one `Store` interface that local
directories and gs:// prefixes both implement, dataset files opened as streams, and
directories (checkpoints) fetched to a local cache."""

from layertap.io.store import ObjectInfo, Store, is_gcs, open_store

__all__ = ["ObjectInfo", "Store", "is_gcs", "open_store"]
