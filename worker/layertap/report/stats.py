"""The per-layer statistics the report's figures read: the one seam to the store's statistics.

`layer_statistics(run, layers, site)` gives, per layer, an object with the attributes of the
store's `LayerStats` (`run.stats().layer(layer, site=...)`, docs/format.md "Statistics"):
count, mean, var, absmax, extreme_fraction [W]; norm_mean, norm_std; norm_edges [B+1] and
norm_counts [B] (token norms over log-spaced bins); norm_quantile(q); outlier_dims(top);
massive_tokens; norm_by_segment (label -> count, mean, std); norm_by_position (buckets 0, 1,
2-3, 4-7, ...; end exclusive). The figures use nothing else.

A run written without statistics (by `layertap predict`, or by a LayerTap from before they
were kept) gets the same quantities computed here from its stored rows: one pass per layer.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np

from layertap.store.reader import Run

log = logging.getLogger(__name__)

# The binning of the extraction's statistics (layertap.extract.statistics, not imported: it
# needs JAX): 16 bins per octave from 2^-10 to 2^20, the outer bins reaching 0 and infinity.
EXTREME = 10.0
BINS_PER_OCTAVE, MIN_EXPONENT, MAX_EXPONENT = 16, -10, 20
TOP_TOKENS = 16


def layer_statistics(run: Run, layers: list[int], site: str) -> tuple[dict[int, object], str]:
    """Layer -> its statistics at `site` (layers and site checked by the caller), and where
    they come from, in words."""
    if has_statistics(run):
        stats = run.stats()
        return {layer: stats.layer(layer, site=site) for layer in layers}, "kept by the extraction"
    log.warning("%s has no statistics: computing them from its %s stored rows, one pass per layer", run.uri,
                f"{run.num_tokens:,}")  # fmt: skip
    computed = {layer: ComputedLayerStats.of(run, layer, site) for layer in layers}
    return computed, "computed from the stored rows (the run was written without statistics)"


def has_statistics(run: Run) -> bool:
    """A finished run lists its merged statistics in the manifest (docs/format.md)."""
    return run.manifest.get("statistics") is not None


def norm_edges() -> np.ndarray:
    inner = 2.0 ** (MIN_EXPONENT + np.arange((MAX_EXPONENT - MIN_EXPONENT) * BINS_PER_OCTAVE + 1) / BINS_PER_OCTAVE)
    return np.concatenate([[0.0], inner, [np.inf]])


@dataclass
class ComputedLayerStats:
    """The same quantities computed here from the stored rows (bounded by what one layer of
    the run holds in memory)."""

    count: int
    mean: np.ndarray
    var: np.ndarray
    absmax: np.ndarray
    extreme_fraction: np.ndarray
    norm_mean: float
    norm_std: float
    norm_edges: np.ndarray
    norm_counts: np.ndarray
    massive_tokens: list[dict]
    norm_by_segment: dict[int, dict]
    norm_by_position: list[dict]

    @classmethod
    def of(cls, run: Run, layer: int, site: str) -> ComputedLayerStats:
        """One pass over the layer's rows, a shard at a time (memory: one shard's rows)."""
        edges = norm_edges()
        width = int(np.prod(run.shape(site)))
        count, total, squares = 0, np.zeros(width), np.zeros(width)
        absmax, extreme, hist = np.zeros(width), np.zeros(width), np.zeros(len(edges) - 1)
        segments: dict[int, np.ndarray] = {}  # label -> [count, sum, sum of squares] of norms
        positions: dict[int, np.ndarray] = {}  # bucket -> the same
        top: list[dict] = []
        for rows in run.iter_layer(layer, site=site):
            x = np.asarray(rows.activations, np.float64).reshape(len(rows), -1)
            norms = np.linalg.norm(x, axis=1)
            count += len(x)
            total += x.sum(axis=0)
            squares += (x * x).sum(axis=0)
            absmax = np.maximum(absmax, np.abs(x).max(axis=0))
            extreme += (np.abs(x) > EXTREME * (norms / np.sqrt(width))[:, None]).sum(axis=0)
            hist += np.bincount(np.clip(np.searchsorted(edges, norms, side="right") - 1, 0, len(hist) - 1), minlength=len(hist))
            _add_moments(segments, rows.segment, norms)
            _add_moments(positions, np.where(rows.position >= 0, _bit_length(rows.position), -1), norms)
            for i in np.argsort(-norms, kind="stable")[:TOP_TOKENS]:
                top.append({"norm": float(norms[i]), "sample_index": int(rows.sample_index[i]),
                            "position": int(rows.position[i]), "token_id": int(rows.token_ids[i])})  # fmt: skip
        n = max(count, 1)
        mean = total / n
        norm_n, norm_sum, norm_squares = (sum(m[i] for m in segments.values()) for i in range(3))
        norm_mean = norm_sum / max(norm_n, 1)
        return cls(
            count=count,
            mean=mean,
            var=np.maximum(squares / n - mean**2, 0.0),
            absmax=absmax,
            extreme_fraction=extreme / n,
            norm_mean=float(norm_mean),
            norm_std=float(np.sqrt(max(norm_squares / max(norm_n, 1) - norm_mean**2, 0.0))),
            norm_edges=edges,
            norm_counts=hist,
            massive_tokens=sorted(top, key=lambda t: -t["norm"])[:TOP_TOKENS],
            norm_by_segment={label: _moments(m) for label, m in sorted(segments.items()) if label >= 0},
            norm_by_position=[
                {"start": 0 if b == 0 else 2 ** (b - 1), "end": 1 if b == 0 else 2**b, **_moments(m)}
                for b, m in sorted(positions.items()) if b >= 0
            ],
        )

    def norm_quantile(self, q: float) -> float:
        """As the store's: the geometric middle of the bin where the cumulative count crosses q."""
        cumulative = np.cumsum(self.norm_counts)
        if cumulative[-1] == 0:
            return float("nan")
        b = int(np.searchsorted(cumulative, q * cumulative[-1], side="left"))
        low, high = self.norm_edges[b], self.norm_edges[b + 1]
        if low == 0 or not np.isfinite(high):
            return float(high if low == 0 else low)
        return float(np.sqrt(low * high))

    def outlier_dims(self, top: int = 10) -> list[dict]:
        """The dimensions most often extreme, then largest in magnitude."""
        order = np.lexsort((-self.absmax, -self.extreme_fraction))[:top]
        return [
            {"dim": int(d), "fraction": float(self.extreme_fraction[d]), "mean": float(self.mean[d]), "absmax": float(self.absmax[d])}
            for d in order
        ]


def _bit_length(position: np.ndarray) -> np.ndarray:
    """Bucket of position p: 0 for 0, else p's bit length (1 for 1, 2 for 2-3, 3 for 4-7, ...)."""
    p = np.maximum(position.astype(np.int64), 0)
    return np.where(p == 0, 0, np.floor(np.log2(np.maximum(p, 1))).astype(np.int64) + 1)


def _add_moments(into: dict[int, np.ndarray], keys: np.ndarray, norms: np.ndarray) -> None:
    for key in np.unique(keys).tolist():
        here = norms[keys == key]
        into[key] = into.get(key, np.zeros(3)) + [len(here), here.sum(), (here * here).sum()]


def _moments(sums: np.ndarray) -> dict:
    n, total, squares = sums
    mean = total / max(n, 1)
    return {"count": int(n), "mean": float(mean), "std": float(np.sqrt(max(squares / max(n, 1) - mean**2, 0.0)))}
