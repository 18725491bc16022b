"""What the Trainer reports while it trains: the running loss, progress bars, and log writers.

* :class:`LossTracker`: transformers' loss bookkeeping between log steps.
* :class:`ProgressBars`: transformers' ``ProgressCallback`` (a train bar and an evaluation bar),
  with the running loss and learning rate on the train bar.
* ``report_to`` integrations (:func:`integration_callbacks`): ``"jsonl"`` (one JSON object per log,
  in ``output_dir/log.jsonl``) and ``"tensorboard"`` (``torch.utils.tensorboard``) are trainkit's;
  every record carries the step, the epoch, the logged values (loss, learning rate, grad norm,
  evaluation metrics) and the items per second since the previous record. Any other name
  transformers knows (``"wandb"``, ``"mlflow"``...) gets transformers' own callback.

Everything here writes on the world's process zero only.
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import math
import os
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from transformers.trainer_callback import ProgressCallback, TrainerCallback

from trainkit.errors import ConfigError

__all__ = ["LossTracker", "ProgressBars", "JsonlLogger", "TensorBoardLogger", "integration_callbacks", "TRAINKIT_INTEGRATIONS"]

TRAINKIT_INTEGRATIONS = ("jsonl", "tensorboard")
JSONL_NAME = "log.jsonl"


class LossTracker:
    """transformers' loss bookkeeping: the mean window loss since the last log, and the running total.

    Plain floats: train_step has already synchronised to check the loss, so reading it is free.

    Example:
        >>> from types import SimpleNamespace
        >>> import torch
        >>> tracker = LossTracker(nan_filter=True)
        >>> for loss in (1.0, float("nan"), 3.0):
        ...     tracker.add(SimpleNamespace(loss=torch.tensor(loss), grad_norm=torch.tensor(0.5), lr=0.1))
        >>> tracker.flush()  # as transformers: the NaN counts as the running sum over 1 + the steps so far
        {'loss': 1.5, 'grad_norm': 0.5, 'learning_rate': 0.1}
    """

    def __init__(self, *, nan_filter: bool) -> None:
        self.nan_filter = nan_filter
        self.since_log = 0.0
        self.pending = 0
        self.logged = 0.0
        self.carried = 0.0  # losses of steps before a resume, restored only so the next log averages them
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
        """The summed loss of this train() call's steps (transformers' train_loss numerator)."""
        return self.logged + self.since_log - self.carried

    def snapshot(self) -> dict[str, Any]:
        """What a checkpoint needs so the next log after a resume averages the same steps."""
        return {"since_log": self.since_log, "pending": self.pending}

    def restore(self, saved: dict[str, Any] | None) -> None:
        if saved:
            self.since_log, self.pending = float(saved["since_log"]), int(saved["pending"])
            self.carried = self.since_log


class ProgressBars(ProgressCallback):
    """transformers' progress bars (training, and evaluation when the loader has a length), with the
    running loss and learning rate shown on the training bar at every log.

    Example:
        >>> import io
        >>> from transformers import TrainerControl, TrainerState
        >>> bars, state = ProgressBars(), TrainerState(max_steps=10, is_world_process_zero=True)
        >>> bars.training_bar = __import__("tqdm").tqdm(total=10, file=io.StringIO())
        >>> bars.on_log(None, state, TrainerControl(), logs={"loss": 0.5, "learning_rate": 1e-3})  # also written out
        {'loss': '0.5', 'learning_rate': '0.001'}
        >>> bars.training_bar.postfix
        'loss=0.5, lr=0.001'
    """

    def on_log(self, args: Any, state: Any, control: Any, logs: dict[str, Any] | None = None, **kwargs: Any) -> None:
        if state.is_world_process_zero and self.training_bar is not None and logs and "loss" in logs:
            shown = {"loss": f"{logs['loss']:.4g}"}
            if isinstance(logs.get("learning_rate"), float):
                shown["lr"] = f"{logs['learning_rate']:.3g}"
            self.training_bar.set_postfix(shown, refresh=False)
        super().on_log(args, state, control, logs=logs, **kwargs)


def show_progress_bars(disable_tqdm: bool | None, stream: Any = None) -> bool:
    """Bars unless ``disable_tqdm``, and only on a terminal: in a log file a bar is noise (logs are printed).

    Example:
        >>> import io
        >>> show_progress_bars(False, io.StringIO()), show_progress_bars(True, io.StringIO())
        (False, False)
    """
    stream = sys.stderr if stream is None else stream
    return not disable_tqdm and bool(getattr(stream, "isatty", lambda: False)())


@contextlib.contextmanager
def transformers_bars(enabled: bool) -> Iterator[None]:
    """transformers' own progress bars (``save_pretrained``'s "Writing model shards", ...) on or off
    for a block, then as they were: ``disable_tqdm`` silences every bar, not only the Trainer's.

    Example:
        >>> from transformers.utils import logging as hf_logging
        >>> with transformers_bars(False):
        ...     hf_logging.is_progress_bar_enabled()
        False
    """
    from transformers.utils import logging as hf_logging

    before = hf_logging.is_progress_bar_enabled()
    (hf_logging.enable_progress_bar if enabled else hf_logging.disable_progress_bar)()
    try:
        yield
    finally:
        (hf_logging.enable_progress_bar if before else hf_logging.disable_progress_bar)()


class _LogWriter(TrainerCallback):
    """A ``report_to`` sink: turns each ``on_log`` into a record (step, epoch, values, items/s)."""

    def __init__(self, items_seen: Callable[[], int] | None = None) -> None:
        self.items_seen = items_seen
        self._last: tuple[float, int] | None = None

    def record(self, state: Any, logs: dict[str, Any]) -> dict[str, Any]:
        out = {"step": state.global_step, "epoch": state.epoch, **logs}
        if self.items_seen is not None:
            now, items = time.perf_counter(), self.items_seen()
            if self._last is not None and now > self._last[0] and "loss" in logs:
                out["items_per_second"] = (items - self._last[1]) / (now - self._last[0])
            self._last = (now, items)
        return out

    def on_train_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        self._last = (time.perf_counter(), self.items_seen()) if self.items_seen is not None else None


class JsonlLogger(_LogWriter):
    """``report_to="jsonl"``: one JSON object per log in ``output_dir/log.jsonl`` (a fresh run starts the
    file anew, a resumed one appends).

    Example:
        >>> import json, tempfile
        >>> from types import SimpleNamespace
        >>> from transformers import TrainerControl, TrainerState
        >>> args, state = SimpleNamespace(output_dir=tempfile.mkdtemp()), TrainerState(global_step=3, epoch=0.5)
        >>> JsonlLogger().on_log(args, state, TrainerControl(), logs={"loss": 0.25})
        >>> json.loads(open(args.output_dir + "/log.jsonl").read())
        {'step': 3, 'epoch': 0.5, 'loss': 0.25}
    """

    def on_train_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        super().on_train_begin(args, state, control, **kwargs)
        if state.is_world_process_zero and state.global_step == 0:
            path = Path(args.output_dir) / JSONL_NAME
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text("", encoding="utf-8")

    def on_log(self, args: Any, state: Any, control: Any, logs: dict[str, Any] | None = None, **kwargs: Any) -> None:
        if not state.is_world_process_zero or not logs:
            return
        path = Path(args.output_dir) / JSONL_NAME
        path.parent.mkdir(parents=True, exist_ok=True)
        with path.open("a", encoding="utf-8") as f:
            f.write(json.dumps(self.record(state, logs), default=float) + "\n")


class TensorBoardLogger(_LogWriter):
    """``report_to="tensorboard"``: scalars through ``torch.utils.tensorboard`` in ``logging_dir`` (default
    ``output_dir/runs``), named as transformers names them (``train/loss``, ``eval/accuracy``)."""

    def __init__(self, logging_dir: str | None = None, items_seen: Callable[[], int] | None = None) -> None:
        super().__init__(items_seen)
        if importlib.util.find_spec("tensorboard") is None:
            raise ConfigError("TrainingArguments(report_to=['tensorboard']): the tensorboard package is not installed. "
                              "Fix: pip install tensorboard (or pip install 'trainkit[tensorboard]'), or drop "
                              "'tensorboard' from report_to.")
        self.logging_dir, self.writer = logging_dir, None

    def on_log(self, args: Any, state: Any, control: Any, logs: dict[str, Any] | None = None, **kwargs: Any) -> None:
        if not state.is_world_process_zero or not logs:
            return
        if self.writer is None:
            from torch.utils.tensorboard import SummaryWriter

            self.writer = SummaryWriter(log_dir=self.logging_dir or os.path.join(args.output_dir, "runs"))
        for key, value in self.record(state, logs).items():
            if key in ("step", "epoch") or isinstance(value, bool) or not isinstance(value, (int, float)):
                continue
            name = key[len("eval_"):] if key.startswith("eval_") else key
            self.writer.add_scalar(f"eval/{name}" if key.startswith("eval_") else f"train/{key}", value, state.global_step)
        self.writer.flush()

    def on_train_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        if self.writer is not None:
            self.writer.close()
            self.writer = None


def integration_callbacks(report_to: list[str], *, logging_dir: str | None = None,
                          items_seen: Callable[[], int] | None = None) -> list[Any]:
    """The callbacks for ``TrainingArguments.report_to``: trainkit's for "jsonl" and "tensorboard",
    transformers' own for the other integrations it knows.

    Example:
        >>> [type(c).__name__ for c in integration_callbacks(["jsonl"])]
        ['JsonlLogger']

    Raises:
        ConfigError: an integration no one knows (the message lists them), or tensorboard not installed.
    """
    out: list[Any] = []
    for name in report_to:
        if name == "jsonl":
            out.append(JsonlLogger(items_seen))
        elif name == "tensorboard":
            out.append(TensorBoardLogger(logging_dir, items_seen))
        else:
            from transformers.integrations.integration_utils import INTEGRATION_TO_CALLBACK

            if name not in INTEGRATION_TO_CALLBACK:
                known = sorted({*TRAINKIT_INTEGRATIONS, *INTEGRATION_TO_CALLBACK})
                raise ConfigError(f"TrainingArguments(report_to={report_to!r}): {name!r} is not an integration; "
                                  f"expected some of {', '.join(known)}, 'all' or 'none'.")
            out.append(INTEGRATION_TO_CALLBACK[name])
    return out
