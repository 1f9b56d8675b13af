"""Run progress: a local progress bar in tokens/s, and the resource status in a cluster.

Every process knows the whole plan and runs the same steps, so the counts of one process
are the run's. Two counts: tokens computed (the bar: what the accelerators are doing) and
samples/tokens committed (the resource status: what is durable). Shards and bytes come
from this process's writer, times the process count (each process writes an equal share
of the rows of every step).
"""

from __future__ import annotations

import sys
import time

from tqdm import tqdm


class Progress:
    def __init__(
        self,
        *,
        samples_total: int,
        tokens_total: int,
        samples_done: int = 0,
        tokens_done: int = 0,
        process_count: int = 1,
        show_bar: bool = True,
        reporter=None,
    ) -> None:
        self.samples_total, self.tokens_total = samples_total, tokens_total
        self.tokens_computed = tokens_done
        self.samples_committed, self.tokens_committed = samples_done, tokens_done
        self.shards_written = self.bytes_written = 0
        self._process_count = process_count
        self._started, self._tokens_at_start = time.monotonic(), tokens_done
        self._reporter = reporter
        self._bar = tqdm(
            total=tokens_total,
            initial=tokens_done,
            unit="tok",
            unit_scale=True,
            dynamic_ncols=True,
            disable=not show_bar or None,  # None: tqdm hides itself when stderr is not a terminal
            file=sys.stderr,
        )

    @property
    def tokens_per_second(self) -> float:
        elapsed = time.monotonic() - self._started
        return (self.tokens_computed - self._tokens_at_start) / elapsed if elapsed > 0 else 0.0

    def computed(self, tokens: int) -> None:
        self.tokens_computed += tokens
        self._bar.update(tokens)
        if self._reporter is not None:  # rate and ETA move with every step; done counts stay durable-only
            self._reporter.update(self.as_status())

    def committed(self, samples: int, tokens: int, shards: int, bytes_: int) -> None:
        """Samples/tokens newly durable; shards/bytes: this process's writer totals."""
        self.samples_committed += samples
        self.tokens_committed += tokens
        self.shards_written, self.bytes_written = shards * self._process_count, bytes_ * self._process_count
        self._bar.set_postfix(committed=f"{self.samples_committed}/{self.samples_total} samples", refresh=False)
        if self._reporter is not None:
            self._reporter.update(self.as_status())

    def as_status(self) -> dict:
        """status.progress of the resource (camelCase keys)."""
        rate = self.tokens_per_second
        percent = round(100.0 * self.samples_committed / self.samples_total, 1) if self.samples_total else 100.0
        status = {
            "samplesDone": self.samples_committed,
            "samplesTotal": self.samples_total,
            "tokensDone": self.tokens_committed,
            "shardsWritten": self.shards_written,
            "bytesWritten": self.bytes_written,
            "tokensPerSecond": round(rate, 1),
            "percent": percent,
            "completed": f"{percent:.1f}%",
        }
        if rate > 0:
            status["etaSeconds"] = round((self.tokens_total - self.tokens_computed) / rate)
            status["eta"] = human_duration(status["etaSeconds"])
        return status

    def close(self) -> None:
        self._bar.close()
        if self._reporter is not None:
            self._reporter.update(self.as_status())
            self._reporter.close()


def human_duration(seconds: int) -> str:
    """Seconds as kubectl shows ages: 45s, 7m30s, 42m, 2h13m, 3d4h."""
    minutes, hours, days = seconds // 60, seconds // 3600, seconds // 86400
    if seconds < 60:
        return f"{seconds}s"
    if minutes < 10:
        return f"{minutes}m{seconds % 60}s" if seconds % 60 else f"{minutes}m"
    if hours < 1:
        return f"{minutes}m"
    if days < 1:
        return f"{hours}h{minutes % 60}m" if minutes % 60 else f"{hours}h"
    return f"{days}d{hours % 24}h" if hours % 24 else f"{days}d"
