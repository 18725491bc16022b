"""Pictures of a run: the log history (loss, learning rate, evaluation metrics) and schedules.

matplotlib is an optional extra (``pip install 'trainkit[plot]'``); it is imported when a plot is
drawn, with the non-interactive Agg backend, so plotting works on a server and never opens a window.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from trainkit.errors import ConfigError, MissingDependencyError

__all__ = ["plot_log_history", "plot_schedule", "read_log_history"]

_NOT_METRICS = ("eval_loss", "eval_runtime", "eval_samples_per_second", "eval_steps_per_second", "epoch", "step")


def _pyplot() -> Any:
    try:
        import matplotlib
    except ImportError as error:
        raise MissingDependencyError("plotting needs matplotlib, which is not installed. Fix: pip install matplotlib "
                                     "(or pip install 'trainkit[plot]').") from error
    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    return plt


def read_log_history(source: Sequence[Mapping[str, Any]] | str | os.PathLike[str]) -> list[dict[str, Any]]:
    """The log records of a run: ``trainer.state.log_history`` as given, or read from a file or folder.

    Args:
        source: a list of log dicts; a ``trainer_state.json`` (its ``log_history``); a ``log.jsonl``
            (``report_to="jsonl"``); or a folder holding either (an ``output_dir`` or a ``checkpoint-N``).

    Returns:
        The records, each a dict with at least ``step``.

    Raises:
        ConfigError: a path that holds no log history (the message says what was looked for).

    Example:
        >>> read_log_history([{"loss": 1.0, "step": 1}, {"eval_loss": 0.9, "step": 1}])
        [{'loss': 1.0, 'step': 1}, {'eval_loss': 0.9, 'step': 1}]
    """
    if not isinstance(source, (str, os.PathLike)):
        return [dict(r) for r in source]
    path = Path(source)
    if path.is_dir():
        candidates = [path / "log.jsonl", path / "trainer_state.json"]
        found = next((c for c in candidates if c.is_file()), None)
        if found is None:
            raise ConfigError(f"read_log_history({str(source)!r}): the folder has neither log.jsonl "
                              "(report_to='jsonl') nor trainer_state.json (a checkpoint). Pass one of those files.")
        path = found
    if not path.is_file():
        raise ConfigError(f"read_log_history({str(source)!r}): no such file. Pass trainer.state.log_history, a "
                          "trainer_state.json, a log.jsonl or a folder holding one.")
    text = path.read_text(encoding="utf-8")
    if path.suffix == ".jsonl":
        return [json.loads(line) for line in text.splitlines() if line.strip()]
    data = json.loads(text)
    if not isinstance(data, dict) or not isinstance(data.get("log_history"), list):
        raise ConfigError(f"read_log_history({str(source)!r}): not a trainer_state.json with a log_history list.")
    return data["log_history"]


def plot_log_history(source: Sequence[Mapping[str, Any]] | str | os.PathLike[str], path: str | os.PathLike[str], *,
                     title: str | None = None) -> Path:
    """Draw a run's loss, learning rate and evaluation metrics against the step, into a PNG.

    Panels: the training loss (and ``eval_loss`` when evaluated); the learning rate; the other
    evaluation metrics (``eval_accuracy``...), when there are any.

    Args:
        source: as :func:`read_log_history`: ``trainer.state.log_history``, a file or a folder.
        path: the PNG to write (folders are created).
        title: the figure's title.

    Returns:
        ``path``.

    Raises:
        ConfigError: no record has a loss, a learning rate or a metric to draw.
        MissingDependencyError: matplotlib is not installed.

    Example:
        >>> import tempfile, os
        >>> logs = [{"loss": 2.0, "learning_rate": 1e-3, "step": 1}, {"loss": 1.5, "learning_rate": 5e-4, "step": 2},
        ...         {"eval_loss": 1.4, "eval_accuracy": 0.7, "step": 2}]
        >>> out = plot_log_history(logs, os.path.join(tempfile.mkdtemp(), "run.png"))
        >>> out.suffix, out.stat().st_size > 0
        ('.png', True)
    """
    records = read_log_history(source)
    series = {
        "loss": [(r["step"], r["loss"]) for r in records if _number(r.get("loss"))],
        "eval_loss": [(r["step"], r["eval_loss"]) for r in records if _number(r.get("eval_loss"))],
        "learning_rate": [(r["step"], r["learning_rate"]) for r in records if _number(r.get("learning_rate"))],
    }
    metrics = sorted({k for r in records for k, v in r.items()
                      if k.startswith("eval_") and k not in _NOT_METRICS and _number(v)})
    panels = [p for p in ("loss", "learning_rate") if series[p] or (p == "loss" and series["eval_loss"])]
    panels += ["metrics"] if metrics else []
    if not panels:
        raise ConfigError("plot_log_history: no record has a loss, a learning_rate or an eval metric; log at least "
                          "one step (logging_steps) or evaluate once.")
    plt = _pyplot()
    fig, axes = plt.subplots(len(panels), 1, figsize=(7, 2.6 * len(panels)), sharex=True, squeeze=False)
    for ax, panel in zip(axes[:, 0], panels):
        if panel == "loss":
            for name, style in (("loss", "-"), ("eval_loss", "o-")):
                if series[name]:
                    ax.plot(*zip(*series[name]), style, label=name.replace("_", " "), markersize=4)
            ax.set_ylabel("loss")
            ax.legend()
        elif panel == "learning_rate":
            ax.plot(*zip(*series["learning_rate"]), color="tab:green")
            ax.set_ylabel("learning rate")
        else:
            for name in metrics:
                points = [(r["step"], r[name]) for r in records if _number(r.get(name))]
                ax.plot(*zip(*points), "o-", label=name[len("eval_"):], markersize=4)
            ax.set_ylabel("evaluation")
            ax.legend()
        ax.grid(alpha=0.3)
    axes[-1, 0].set_xlabel("step")
    if title:
        fig.suptitle(title)
    return _save(fig, plt, path)


def plot_schedule(schedule: str | Callable[[int], float], path: str | os.PathLike[str], *, num_training_steps: int,
                  num_warmup_steps: int = 0, title: str | None = None, **schedule_kwargs: Any) -> Path:
    """Draw a learning-rate schedule's multiplier for every step of a run, into a PNG.

    Args:
        schedule: a name of :data:`~trainkit.SCHEDULE_NAMES` (built with :func:`~trainkit.make_schedule`)
            or any ``step -> multiplier`` function.
        path: the PNG to write.
        num_training_steps: the run's steps; steps 0..num_training_steps are drawn.
        num_warmup_steps: warm-up steps (for a name).
        title: the figure's title; default the name.
        **schedule_kwargs: the schedule's own options (``num_cycles``, ``power``...), for a name.

    Returns:
        ``path``.

    Raises:
        ConfigError: as :func:`~trainkit.make_schedule`; options given with a function.
        MissingDependencyError: matplotlib is not installed.

    Example:
        >>> import tempfile, os
        >>> out = plot_schedule("cosine", os.path.join(tempfile.mkdtemp(), "cosine.png"), num_training_steps=100,
        ...                     num_warmup_steps=10)
        >>> out.name
        'cosine.png'
    """
    from trainkit.schedules import make_schedule

    if isinstance(schedule, str):
        name = schedule
        schedule = make_schedule(schedule, num_warmup_steps=num_warmup_steps, num_training_steps=num_training_steps,
                                 **schedule_kwargs)
    elif callable(schedule) and not schedule_kwargs:
        name = getattr(schedule, "__name__", "schedule")
    else:
        raise ConfigError(f"plot_schedule(schedule={schedule!r}): expected a schedule name or a step -> multiplier "
                          "function (options only go with a name).")
    steps = list(range(num_training_steps + 1))
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6, 2.8))
    ax.plot(steps, [schedule(s) for s in steps])
    ax.set_xlabel("step")
    ax.set_ylabel("lr multiplier")
    ax.set_ylim(bottom=0)
    ax.grid(alpha=0.3)
    ax.set_title(title or name)
    return _save(fig, plt, path)


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _save(fig: Any, plt: Any, path: str | os.PathLike[str]) -> Path:
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(out, dpi=80)
    plt.close(fig)
    return out
