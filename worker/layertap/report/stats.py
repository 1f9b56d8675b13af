"""The per-layer statistics the report's figures read: the one seam to the store's statistics.

`layer_statistics(run, layers, site)` gives, per layer, the store's `LayerStats`
(`run.stats().layer(layer, site=...)`, docs/format.md "Statistics"). A run written without
statistics (by `layertap predict`, or by a LayerTap from before they were kept) gets the
same quantities computed from its stored rows (`statistics.layer_of_rows`: one pass per
layer, a shard at a time).
"""

from __future__ import annotations

import logging

from layertap.store import statistics
from layertap.store.reader import Run

log = logging.getLogger(__name__)


def layer_statistics(run: Run, layers: list[int], site: str) -> tuple[dict[int, statistics.LayerStats], str]:
    """Layer -> its statistics at `site` (layers and site checked by the caller), and where
    they come from, in words."""
    if has_statistics(run):
        stats = run.stats()
        return {layer: stats.layer(layer, site=site) for layer in layers}, "kept by the extraction"
    log.warning(
        "%s has no statistics: computing them from its %s stored rows, one pass per layer",
        run.uri,
        f"{run.num_tokens:,}",
    )
    computed = {layer: statistics.layer_of_rows(run.iter_layer(layer, site=site)) for layer in layers}
    return computed, "computed from the stored rows (the run was written without statistics)"


def has_statistics(run: Run) -> bool:
    """A finished run lists its merged statistics in the manifest (docs/format.md)."""
    return run.manifest.get("statistics") is not None
