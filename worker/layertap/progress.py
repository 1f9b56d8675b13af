"""Run progress: a local progress bar in tokens/s, and the resource status in a cluster.

Counts are global (every process knows the whole plan), so whichever process reports
shows the whole run. Only process 0 reports to the resource status.
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
        show_bar: bool = True,
        reporter=None,
    ) -> None:
        self.samples_total, self.tokens_total = samples_total, tokens_total
        self.samples_done, self.tokens_done = samples_done, tokens_done
        self.shards_written = self.bytes_written = 0
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
        return (self.tokens_done - self._tokens_at_start) / elapsed if elapsed > 0 else 0.0

    def advance(self, samples: int, tokens: int) -> None:
        self.samples_done += samples
        self.tokens_done += tokens
        self._bar.update(tokens)
        self._bar.set_postfix(samples=f"{self.samples_done}/{self.samples_total}", refresh=False)
        if self._reporter is not None:
            self._reporter.update(self.as_status())

    def written(self, shards: int, bytes_: int) -> None:
        self.shards_written, self.bytes_written = shards, bytes_

    def as_status(self) -> dict:
        """status.progress of the resource (camelCase keys)."""
        rate = self.tokens_per_second
        left = self.tokens_total - self.tokens_done
        return {
            "samplesDone": self.samples_done,
            "samplesTotal": self.samples_total,
            "tokensDone": self.tokens_done,
            "shardsWritten": self.shards_written,
            "bytesWritten": self.bytes_written,
            "tokensPerSecond": round(rate, 1),
            "etaSeconds": round(left / rate) if rate > 0 else None,
            "percent": round(100.0 * self.tokens_done / self.tokens_total, 1) if self.tokens_total else 100.0,
        }

    def close(self) -> None:
        self._bar.close()
        if self._reporter is not None:
            self._reporter.update(self.as_status())
            self._reporter.close()
