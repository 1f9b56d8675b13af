"""Run progress: a local progress bar, and the resource's `status.progress` in a cluster.

Extraction: every process knows the whole plan and runs the same steps, so the counts of
one process are the run's. Two counts: tokens computed (the bar: what the accelerators are
doing) and samples/tokens committed (the resource status: what is durable). Shards and
bytes come from this process's writer, times the process count (each process writes an
equal share of the rows of every step).

Prediction: samples are answers, committed by every process as it goes; the tokens are those
generated, whose total nobody knows ahead, so the bar counts answers and the ETA follows
the answers' pace.
"""

from __future__ import annotations

import sys
import time

from tqdm import tqdm

from layertap.humanize import human_duration
from layertap_api import status


class Progress:
    def __init__(
        self,
        *,
        samples_total: int,
        tokens_total: int | None,
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
        self._samples_at_start = samples_done
        self.tasks: dict = {}  # mode predict: tasks_done, tasks_total, score (status.Progress's fields)
        self.non_finite: str | None = None  # where stored values were first NaN or infinite
        by_tokens = tokens_total is not None  # else the bar counts samples (answers)
        self._bar = tqdm(
            total=tokens_total if by_tokens else samples_total,
            initial=tokens_done if by_tokens else samples_done,
            unit="tok" if by_tokens else "answer",
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
        if self.tokens_total is not None:
            self._bar.update(tokens)
        if self._reporter is not None:  # rate and ETA move with every step; done counts stay durable-only
            self._reporter.update(self.as_status())

    def committed(self, samples: int, tokens: int, shards: int, bytes_: int) -> None:
        """Samples/tokens newly durable; shards/bytes: this process's writer totals."""
        self.samples_committed += samples
        self.tokens_committed += tokens
        self.shards_written, self.bytes_written = shards * self._process_count, bytes_ * self._process_count
        if self.tokens_total is None:
            self._bar.update(samples)
        else:
            self._bar.set_postfix(committed=f"{self.samples_committed}/{self.samples_total} samples", refresh=False)
        if self._reporter is not None:
            self._reporter.update(self.as_status())

    def answered(self, answers: int, tokens: int, **tasks) -> None:
        """Mode predict: answers committed (and the tokens generated for them); `tasks`:
        tasks_done, tasks_total, score, as they stand now."""
        self.tokens_computed += tokens
        self.tasks.update(tasks)
        self.committed(answers, tokens, 0, 0)

    def saw_non_finite(self, where: str) -> None:
        """Stored values were NaN or infinite (the first time only is kept and reported)."""
        if self.non_finite is None:
            self.non_finite = where
            if self._reporter is not None:
                self._reporter.update(self.as_status())

    def as_status(self) -> status.Progress:
        """status.progress of the resource."""
        rate = self.tokens_per_second
        percent = round(100.0 * self.samples_committed / self.samples_total, 1) if self.samples_total else 100.0
        fields = {"tokens_per_second": round(rate, 1), "percent": percent, "completed": f"{percent:.1f}%"}
        if self.tokens_total is not None:  # extraction: durable tokens, shards and bytes
            fields |= {
                "tokens_done": self.tokens_committed,
                "shards_written": self.shards_written,
                "bytes_written": self.bytes_written,
            }
        eta = self._eta(rate)
        if eta is not None:
            fields |= {"eta_seconds": eta, "eta": human_duration(eta)}
        if self.non_finite is not None:
            fields["non_finite"] = self.non_finite
        return status.Progress(
            samples_done=self.samples_committed, samples_total=self.samples_total, **fields, **self.tasks
        )

    def _eta(self, rate: float) -> int | None:
        if self.tokens_total is not None:
            return round((self.tokens_total - self.tokens_computed) / rate) if rate > 0 else None
        done_here = self.samples_committed - self._samples_at_start
        elapsed = time.monotonic() - self._started
        if done_here <= 0 or elapsed <= 0:
            return None
        return round(elapsed / done_here * (self.samples_total - self.samples_committed))

    def close(self) -> None:
        self._bar.close()
        if self._reporter is not None:
            self._reporter.update(self.as_status())
            self._reporter.close()


# END
