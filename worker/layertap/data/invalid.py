"""Invalid records in a dataset: where and why, and how many a lenient read skipped."""

from __future__ import annotations

from dataclasses import dataclass, field

from layertap.errors import LayerTapError
from layertap.humanize import plural

SKIP_HINT = "dataset.skipInvalid: true skips and counts such records"


class InvalidRecord(LayerTapError):
    """One task, line or row that cannot be read; the message names where and why."""

    def __init__(self, where: str, reason: str):
        super().__init__(f"{where}: {reason}")
        self.where, self.reason = where, reason


@dataclass
class ReadStats:
    """What a read did: records read, records skipped (with the first few reasons)."""

    read: int = 0
    skipped: int = 0
    examples: list[str] = field(default_factory=list)

    def skip(self, error: InvalidRecord) -> None:
        self.skipped += 1
        if len(self.examples) < 5:
            self.examples.append(str(error))

    def report(self) -> str:
        """'' when nothing was skipped, else how many and the first reasons."""
        if not self.skipped:
            return ""
        examples = "; ".join(self.examples[:3])
        return f"{plural(self.skipped, 'invalid record')} skipped (dataset.skipInvalid), e.g. {examples}"
