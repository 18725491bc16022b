"""What the Trainer logs about training: the running loss between log steps.

(The progress bars and log writers of the Trainer will live here too.)
"""

from __future__ import annotations

import math
from typing import Any

__all__ = ["LossTracker"]


class LossTracker:
    """transformers' loss bookkeeping: the mean window loss since the last log, and the running total.

    Plain floats: train_step has already synchronised to check the loss, so reading it is free.
    """

    def __init__(self, *, nan_filter: bool) -> None:
        self.nan_filter = nan_filter
        self.since_log = 0.0
        self.pending = 0
        self.logged = 0.0
        self.last: Any = None

    def add(self, out: Any) -> None:
        loss = out.loss.item()
        # logging_nan_inf_filter: a non-finite loss counts as the mean of the others since the last log.
        if self.nan_filter and not math.isfinite(loss):
            loss = self.since_log / (1 + self.pending)
        self.since_log, self.pending, self.last = self.since_log + loss, self.pending + 1, out

    def flush(self) -> dict[str, float]:
        logs = {"loss": self.since_log / self.pending, "grad_norm": self.last.grad_norm.item(), "learning_rate": self.last.lr}
        self.logged += self.since_log
        self.since_log, self.pending = 0.0, 0
        return logs

    def total(self) -> float:
        return self.logged + self.since_log

    def snapshot(self) -> dict[str, Any]:
        """What a checkpoint needs so the next log after a resume averages the same steps."""
        return {"since_log": self.since_log, "pending": self.pending}

    def restore(self, saved: dict[str, Any] | None) -> None:
        if saved:
            self.since_log, self.pending = float(saved["since_log"]), int(saved["pending"])
