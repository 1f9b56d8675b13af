"""Builders for test runs: random units with known contents."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from layertap.store import TokenRecords

LAYERS = [2, 5, 7]
HIDDEN = 24


@dataclass(frozen=True)
class Unit:
    unit_id: int
    activations: np.ndarray  # [L, N, D] float32
    token_ids: np.ndarray
    sample_index: np.ndarray
    position: np.ndarray
    segment: np.ndarray
    cell: np.ndarray  # [N, 3]
    samples: dict[int, dict]

    def kwargs(self) -> dict:
        """The unit's fields, for `add`."""
        return dict(vars(self))


def add(writer, unit_id, activations, samples, **columns) -> None:
    """`writer.add` of one unit given as arrays (see Unit)."""
    writer.add(unit_id, TokenRecords.of(activations, **columns), samples)


def make_units(count: int, *, seed: int = 0, layers=LAYERS, hidden: int = HIDDEN, start: int = 0) -> list[Unit]:
    """`count` units of 5-40 tokens; unit u holds samples 2u and 2u+1 and tokens 1000u + i.

    Tokens of segment 2 ("test-input") are grid cells (i // 5, i % 5, i % 10), the others -1.
    """
    rng = np.random.default_rng(seed)
    units = []
    for u in range(start, start + count):
        n = int(rng.integers(5, 40))
        half = n // 2
        segment = (np.arange(n) % 3).astype(np.int16)
        i = np.arange(n)
        cell = np.where((segment == 2)[:, None], np.stack([i // 5, i % 5, i % 10], axis=1), -1).astype(np.int16)
        units.append(
            Unit(
                unit_id=u,
                activations=(rng.standard_normal((len(layers), n, hidden)) * 3).astype(np.float32),
                token_ids=(1000 * u + np.arange(n)).astype(np.int32),
                sample_index=np.where(np.arange(n) < half, 2 * u, 2 * u + 1),
                position=np.concatenate([np.arange(half), np.arange(n - half)]),
                segment=segment,
                cell=cell,
                samples={
                    2 * u: {"task_id": f"task{u:03d}", "copy": 0, "augmentation": None},
                    2 * u + 1: {"task_id": f"task{u:03d}", "copy": 1, "augmentation": {"dihedral": u % 8}},
                },
            )
        )
    return units


def meta_for(storage_dtype: str = "bfloat16", layers=LAYERS) -> dict:
    return {
        "layers": list(layers),
        "storage_dtype": storage_dtype,
        "model": {"uri": "tiny-random-qwen2", "config_sha256": "0" * 64},
        "segment_names": ["other", "train-input", "test-input"],
    }


def expected_layer(units: list[Unit], layer_pos: int) -> np.ndarray:
    return np.concatenate([u.activations[layer_pos] for u in sorted(units, key=lambda u: u.unit_id)])


def units_listed(manifest: dict) -> list:
    """The units a manifest lists, each commit's once: a unit larger than a shard is listed
    in each of its part files (`part`: [k, of])."""
    return sorted(u for s in manifest["shards"] if s.get("part", [0])[0] == 0 for u, _, _ in s["units"])
