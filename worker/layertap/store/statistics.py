"""Per-layer statistics of a run: merged exactly from the partials the extraction computes on
device (`layertap.extract.statistics`), stored with the shards, read by `run.stats()`.

A unit's statistics travel with its records to the writer, which merges the units of a
shard and writes them to `stats/pNNNNN/sNNNNNN.safetensors` before the shard's commit
record; `finalize_run` merges every shard's into `stats.safetensors`. Since a unit is
committed exactly once, its statistics count exactly once, across hosts and restarts.

Merges are exact: counts, sums, maxima and histograms add or take the maximum; means and
sums of squared deviations combine by Chan's parallel formula in float64; the largest norms
are the largest of both lists. Norm quantiles come from a histogram of 2^(1/16)-wide bins,
so they are exact to about 2% of the value.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from layertap.errors import LayerTapError

EXTREME = 10.0  # |x_d| above 10x the token's RMS: a "massive activation" dimension
BINS_PER_OCTAVE = 16  # norm histogram: bins 2^(1/16) = 4.4% wide
MIN_EXPONENT, MAX_EXPONENT = -10, 20  # norms 2^-10 .. 2^20; below and above: first and last bin
NORM_BINS = (MAX_EXPONENT - MIN_EXPONENT) * BINS_PER_OCTAVE + 2
SEGMENT_LABELS = 64  # labels 0..63 (ARC prompts use about 30); others count in the last
POSITION_BUCKETS = 18  # 0, 1, 2-3, ..., 2^16-: bucket of position p is bit_length(p)
TOP_TOKENS = 16

Partial = dict[str, np.ndarray]  # one (site, layer): field -> array
Key = tuple[str, int]  # (site, layer)

_SUMMED = (
    "norm_hist",
    "norm_sum",
    "norm_sumsq",
    "extreme",
    "segment_count",
    "segment_sum",
    "segment_sumsq",
    "position_count",
    "position_sum",
    "position_sumsq",
)
_TOP = ("top_norm", "top_sample", "top_position", "top_token")


def from_rows(rows: Mapping[str, np.ndarray], places: Sequence[np.ndarray]) -> list[Partial]:
    """One partial per layer from a process's rows of the device's partials ([L, r, ...] per
    field, `layertap.extract.statistics.row_statistics`). `places[r]`: [W, 3] int64 (sample
    index, position, token id) of each of row r's entries, to name its largest norms."""
    count_lr = rows["count"].astype(np.float64)
    out = []
    for layer in range(count_lr.shape[0]):
        n_r = count_lr[layer]
        total = n_r.sum()
        mean_rd = rows["mean"][layer].astype(np.float64)
        mean = (n_r[:, None] * mean_rd).sum(0) / max(total, 1)
        m2 = rows["m2"][layer].astype(np.float64).sum(0) + (n_r[:, None] * (mean_rd - mean) ** 2).sum(0)
        partial: Partial = {
            "count": np.array([round(total)], np.int64),
            "mean": mean,
            "m2": m2,
            "absmax": rows["absmax"][layer].max(0).astype(np.float32),
        }
        for field in _SUMMED:
            summed = rows[field][layer].astype(np.float64).sum(0)
            counted = field in ("norm_hist", "extreme") or field.endswith("_count")
            partial[field] = np.rint(summed).astype(np.int64) if counted else np.atleast_1d(summed)
        norms, indices = rows["top_norm"][layer], rows["top_index"][layer]
        found = [
            (float(norm), *places[r][i])
            for r in range(len(norms))
            for norm, i in zip(norms[r], indices[r])
            if norm >= 0
        ]
        partial.update(_top(found))
        out.append(partial)
    return out


def of_rows(
    x: np.ndarray, segment: np.ndarray, position: np.ndarray, sample_index: np.ndarray, token_ids: np.ndarray
) -> Partial:
    """The statistics of rows read back ([N, ...] values and their token columns), in numpy:
    what the extraction computes on device, for runs written without statistics."""
    x = np.asarray(x, np.float64).reshape(len(x), -1)
    mean = x.mean(0) if len(x) else np.zeros(x.shape[1])
    norms = np.linalg.norm(x, axis=1)
    bins = np.floor((np.log2(np.maximum(norms, 1e-30)) - MIN_EXPONENT) * BINS_PER_OCTAVE).astype(np.int64) + 1
    labelled, placed = segment >= 0, position >= 0
    labels = np.clip(segment[labelled], 0, SEGMENT_LABELS - 1)
    buckets = np.clip([int(p).bit_length() for p in position[placed]], 0, POSITION_BUCKETS - 1).astype(np.int64)

    def by(keys: np.ndarray, weights: np.ndarray, size: int) -> np.ndarray:
        return np.bincount(keys, weights, minlength=size)[:size]

    top = np.argsort(-norms, kind="stable")[:TOP_TOKENS]
    return {
        "count": np.array([len(x)], np.int64),
        "mean": mean,
        "m2": ((x - mean) ** 2).sum(0),
        "absmax": np.abs(x).max(0).astype(np.float32) if len(x) else np.zeros(x.shape[1], np.float32),
        "extreme": (np.abs(x) > EXTREME * (norms / np.sqrt(x.shape[1]))[:, None]).sum(0).astype(np.int64),
        "norm_hist": np.bincount(np.clip(bins, 0, NORM_BINS - 1), minlength=NORM_BINS).astype(np.int64),
        "norm_sum": np.array([norms.sum()]),
        "norm_sumsq": np.array([(norms**2).sum()]),
        "segment_count": by(labels, None, SEGMENT_LABELS).astype(np.int64),
        "segment_sum": by(labels, norms[labelled], SEGMENT_LABELS),
        "segment_sumsq": by(labels, norms[labelled] ** 2, SEGMENT_LABELS),
        "position_count": by(buckets, None, POSITION_BUCKETS).astype(np.int64),
        "position_sum": by(buckets, norms[placed], POSITION_BUCKETS),
        "position_sumsq": by(buckets, norms[placed] ** 2, POSITION_BUCKETS),
        "top_norm": norms[top].astype(np.float32),
        "top_sample": sample_index[top].astype(np.int64),
        "top_position": position[top].astype(np.int32),
        "top_token": token_ids[top].astype(np.int32),
    }


def _top(entries: Iterable[tuple]) -> Partial:
    """The TOP_TOKENS largest (norm, sample, position, token) entries, largest first."""
    best = sorted(entries, key=lambda e: (-e[0], e[1], e[2]))[:TOP_TOKENS]
    return {
        "top_norm": np.array([e[0] for e in best], np.float32),
        "top_sample": np.array([e[1] for e in best], np.int64),
        "top_position": np.array([e[2] for e in best], np.int32),
        "top_token": np.array([e[3] for e in best], np.int32),
    }


def merge(a: Partial, b: Partial) -> Partial:
    """The statistics of both sets of tokens (exact; order does not matter)."""
    na, nb = int(a["count"][0]), int(b["count"][0])
    if na == 0 or nb == 0:
        return dict(b if na == 0 else a)
    n = na + nb
    delta = b["mean"] - a["mean"]
    merged: Partial = {
        "count": np.array([n], np.int64),
        "mean": a["mean"] + delta * (nb / n),
        "m2": a["m2"] + b["m2"] + delta**2 * (na * nb / n),
        "absmax": np.maximum(a["absmax"], b["absmax"]),
    }
    for field in _SUMMED:
        merged[field] = a[field] + b[field]
    merged.update(_top(zip(*(np.concatenate([a[f], b[f]]).tolist() for f in _TOP))))
    return merged


def merge_all(parts: Iterable[Mapping[Key, Partial]]) -> dict[Key, Partial]:
    merged: dict[Key, Partial] = {}
    for part in parts:
        for key, partial in part.items():
            merged[key] = merge(merged[key], partial) if key in merged else dict(partial)
    return merged


def encode(partials: Mapping[Key, Partial]) -> dict[str, np.ndarray]:
    """Tensors of a statistics file: `{site}.{layer}.{field}`."""
    return {
        f"{site}.{layer}.{field}": np.ascontiguousarray(value)
        for (site, layer), p in partials.items()
        for field, value in p.items()
    }


def decode(tensors: Mapping[str, np.ndarray]) -> dict[Key, Partial]:
    out: dict[Key, Partial] = {}
    for name, value in tensors.items():
        site, layer, field = name.rsplit(".", 2)
        out.setdefault((site, int(layer)), {})[field] = value
    return out


@dataclass(frozen=True)
class LayerStats:
    """What the extraction saw at one layer and site (W: one token's values, flattened)."""

    count: int  # stored rows (tokens; samples for last/mean)
    mean: np.ndarray  # [W] float64
    var: np.ndarray  # [W] float64, population variance
    absmax: np.ndarray  # [W]
    extreme_fraction: np.ndarray  # [W]: rows where |x_d| > EXTREME x the row's RMS
    norm_mean: float
    norm_std: float
    norm_edges: np.ndarray  # [NORM_BINS + 1]: 0, 2^-10, ..., 2^20, inf
    norm_counts: np.ndarray  # [NORM_BINS]
    massive_tokens: list[dict]  # the largest norms: {norm, sample_index, position, token_id}, largest first
    norm_by_segment: dict[int, dict]  # segment label -> {count, mean, std}
    norm_by_position: list[dict]  # {start, end, count, mean, std} per bucket 0, 1, 2-3, 4-7, ...

    @classmethod
    def of(cls, p: Partial) -> LayerStats:
        n = int(p["count"][0])
        norm_mean = float(p["norm_sum"][0]) / n if n else 0.0
        return cls(
            count=n,
            mean=p["mean"],
            var=p["m2"] / max(n, 1),
            absmax=p["absmax"],
            extreme_fraction=p["extreme"] / max(n, 1),
            norm_mean=norm_mean,
            norm_std=float(np.sqrt(max(float(p["norm_sumsq"][0]) / max(n, 1) - norm_mean**2, 0.0))),
            norm_edges=norm_edges(),
            norm_counts=p["norm_hist"],
            massive_tokens=[
                {"norm": float(v), "sample_index": int(s), "position": int(q), "token_id": int(t)}
                for v, s, q, t in zip(*(p[f] for f in _TOP))
            ],
            norm_by_segment={
                label: _moments(p["segment_count"][label], p["segment_sum"][label], p["segment_sumsq"][label])
                for label in np.flatnonzero(p["segment_count"]).tolist()
            },
            norm_by_position=[
                {"start": 0 if b == 0 else 2 ** (b - 1), "end": 1 if b == 0 else 2**b}
                | _moments(p["position_count"][b], p["position_sum"][b], p["position_sumsq"][b])
                for b in np.flatnonzero(p["position_count"]).tolist()
            ],
        )

    def norm_quantile(self, q: float) -> float:
        """The q-quantile of the rows' norms, to within a bin (about 2% of the value): the
        geometric middle of the bin where the cumulative count crosses q."""
        if isinstance(q, bool) or not isinstance(q, int | float | np.number) or not 0 <= q <= 1:
            raise LayerTapError(f"quantile must be a number within [0, 1], got {q!r}")
        cumulative = np.cumsum(self.norm_counts)
        if cumulative[-1] == 0:
            return float("nan")
        b = int(np.searchsorted(cumulative, q * cumulative[-1], side="left"))
        low, high = self.norm_edges[b], self.norm_edges[b + 1]
        if low == 0 or not np.isfinite(high):
            return float(high if low == 0 else low)
        return float(np.sqrt(low * high))

    def outlier_dims(self, top: int = 10) -> list[dict]:
        """The dimensions most often extreme (|x_d| > EXTREME x the row's RMS), most first."""
        if isinstance(top, bool) or not isinstance(top, int | np.integer) or top < 0:  # -3 had sliced off the last 3
            raise LayerTapError(f"top must be a non-negative integer, got {top!r}")
        order = np.lexsort((-self.absmax, -self.extreme_fraction))[:top]
        return [
            {
                "dim": int(d),
                "fraction": float(self.extreme_fraction[d]),
                "mean": float(self.mean[d]),
                "absmax": float(self.absmax[d]),
            }
            for d in order
        ]


def _moments(count, total, sumsq) -> dict:
    n = int(count)
    mean = float(total) / n
    return {"count": n, "mean": mean, "std": float(np.sqrt(max(float(sumsq) / n - mean**2, 0.0)))}


def norm_edges() -> np.ndarray:
    inner = 2.0 ** (MIN_EXPONENT + np.arange((MAX_EXPONENT - MIN_EXPONENT) * BINS_PER_OCTAVE + 1) / BINS_PER_OCTAVE)
    return np.concatenate([[0.0], inner, [np.inf]])


def layer_of_rows(batches: Iterable) -> LayerStats:
    """LayerStats of a layer's rows read back (`run.iter_layer`), one batch at a time: for
    runs written without statistics."""
    parts = [{("", 0): of_rows(b.activations, b.segment, b.position, b.sample_index, b.token_ids)} for b in batches]
    merged = merge_all(parts)
    if not merged:
        raise LayerTapError("no rows to compute statistics of")
    return LayerStats.of(merged[("", 0)])


class RunStats:
    """The statistics of a run's stored rows, by layer and site (`run.stats()`)."""

    extreme = EXTREME

    def __init__(self, partials: Mapping[Key, Partial]) -> None:
        self._partials = dict(partials)
        self.sites = sorted({site for site, _ in partials}, key=[s for s, _ in partials].index)
        self.layers = sorted({layer for _, layer in partials})

    def layer(self, layer: int, site: str = "resid_post") -> LayerStats:
        if isinstance(layer, bool) or (site, layer) not in self._partials:
            raise LayerTapError(
                f"no statistics of layer {layer!r} at site {site!r} (layers {self.layers}, sites {self.sites})"
            )
        return LayerStats.of(self._partials[(site, layer)])

    def __repr__(self) -> str:
        return f"RunStats(sites {self.sites}, layers {self.layers})"
