"""Where ``trainkit.Trainer``'s per-step time goes, against the raw loop of ``compare.py``.

This is a diagnostic, not a test: run it by hand from the repository root (see ``benchmarks/README.md``)::

    python benchmarks/trainer_breakdown.py [--workload tiny-bert] [--steps 250] [--warmup 20]

One process (threads fixed as in ``compare.py``): ``trainkit.Trainer`` trains ``compare.py``'s
workload with the same ``transformers.TrainingArguments``. At the end of each of its steps (in
``on_step_end``) a raw-loop step and a functional ``train_step`` run on twin models over the same
batches, timed on their own and excluded from the Trainer's step, so every Trainer step has its
reference steps within ~30 ms. ``time.perf_counter`` wrappers around the calls of the Trainer's
loop body, and of the data path under it, give each call's time per step; the report is the
median over steps (after ``--warmup``) of each figure and of each per-step difference.

The wrappers replace module attributes by name (``trainkit.trainer.train_step``,
``trainkit._fetch._tensor``, ...); one that no longer exists is listed as not found, and its time
falls into "unattributed". Each wrapper costs ~1 us per call, so the figures are indicative to
a few percent; ``cycle - raw step`` is the overhead to compare with ``compare.py``'s.
"""

from __future__ import annotations

import argparse
import collections
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import compare  # noqa: E402  (this directory: the workloads, runners and constants)

_pc = time.perf_counter
_acc: dict[str, float] = collections.defaultdict(float)  # this step's time per wrapped call
_flags = {"reference": False, "in_step": 0}  # a reference step is running / inside Trainer's train_step
_missing: list[str] = []


def _wrap(owner: Any, attr: str, label: str, *, in_step_counter: bool = False) -> None:
    """Replace ``owner.attr`` by a timing wrapper adding to ``_acc[label]`` (not during reference steps)."""
    fn = getattr(owner, attr, None)
    if fn is None:
        _missing.append(f"{getattr(owner, '__name__', owner)}.{attr}")
        return

    def wrapper(*args: Any, **kwargs: Any) -> Any:
        if _flags["reference"]:
            return fn(*args, **kwargs)
        if in_step_counter:
            _flags["in_step"] += 1
        t0 = _pc()
        try:
            return fn(*args, **kwargs)
        finally:
            dt = _pc() - t0
            _acc[label] += dt
            if in_step_counter:
                _flags["in_step"] -= 1

    setattr(owner, attr, wrapper)


def _install() -> None:
    import datasets
    import torch
    import trainkit.callbacks as tk_callbacks
    import trainkit._fetch as tk_fetch
    import trainkit.data as tk_data
    import trainkit.trainer as tk_trainer

    _wrap(tk_trainer, "train_step", "train_step (incl. hooks)", in_step_counter=True)
    trainer_cls = tk_trainer.Trainer
    fire = getattr(trainer_cls, "_fire", None)
    if fire is None:
        _missing.append("Trainer._fire")
    else:
        def fire_wrapper(self: Any, event: str, **kwargs: Any) -> Any:
            t0 = _pc()
            try:
                return fire(self, event, **kwargs)
            finally:
                dt = _pc() - t0
                if not _flags["reference"] and event != "on_step_end":  # on_step_end holds the reference steps
                    _acc[f"fire {event}"] += dt
                    if _flags["in_step"]:
                        _acc["  hooks fired inside train_step"] += dt

        trainer_cls._fire = fire_wrapper
    _wrap(trainer_cls, "floating_point_ops", "Trainer.floating_point_ops")
    import trainkit.logging as tk_logging

    _wrap(getattr(tk_logging, "LossTracker", None), "add", "LossTracker.add")
    _wrap(trainer_cls, "_maybe_log_evaluate_save", "Trainer._maybe_log_evaluate_save")
    _wrap(tk_callbacks.FlowCallback, "on_step_end", "FlowCallback.on_step_end (cadence)")
    _wrap(torch.optim.lr_scheduler.LambdaLR, "step", "  LambdaLR.step (the Trainer's scheduler)")

    windows = getattr(tk_data, "windows", None)
    if windows is None:
        _missing.append("trainkit.data.windows")
    else:
        def timed_windows(batches: Any, k: int) -> Any:
            iterator = windows(batches, k)
            while True:
                t0 = _pc()
                try:
                    window = next(iterator)
                except StopIteration:
                    return
                _acc["next batch (DataLoader + collation)"] += _pc() - t0
                yield window

        tk_data.windows = timed_windows
    _wrap(getattr(tk_fetch, "_Batches", None), "__getitems__", "  _Batches.__getitems__")
    _wrap(datasets.Dataset, "__getitem__", "    datasets.Dataset.__getitem__ (Arrow rows)")
    _wrap(tk_fetch, "_default_arrow", "    _default_arrow (Arrow table -> tensors)")
    _wrap(tk_fetch, "_tensor", "      _tensor (one per column)")


def run(workload_name: str, steps: int, warmup: int) -> dict[str, list[float]]:
    from transformers import TrainerCallback

    import trainkit

    workload = compare.WORKLOADS[workload_name]
    total = warmup + steps
    rows: dict[str, list[float]] = collections.defaultdict(list)
    raw_model, dataset = compare._build(workload, total, dropout=True)
    batches = compare._loop_batches(workload, dataset)
    raw = compare._raw_stepper(raw_model, compare._linear_schedule(total), workload)
    fn_model, _ = compare._build(workload, total, dropout=True)
    functional = compare._functional_stepper(fn_model, compare._linear_schedule(total), workload)

    class References(TrainerCallback):
        def __init__(self) -> None:
            self.last: float | None = None
            self.i = 0

        def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
            end = _pc()
            if self.last is not None:
                rows["cycle (the Trainer's step, end to end)"].append(end - self.last)
                for key, value in _acc.items():
                    rows[key].append(value)
            _acc.clear()
            _flags["reference"] = True
            for name, step in (("raw", raw), ("functional", functional))[:: 1 if self.i % 2 == 0 else -1]:
                t0 = _pc()
                step(batches[self.i])
                rows[f"{name} step (reference)"].append(_pc() - t0)
            _flags["reference"] = False
            self.i += 1
            self.last = _pc()

    _install()
    model, train_dataset = compare._build(workload, total, dropout=True)
    with tempfile.TemporaryDirectory(prefix="trainkit-breakdown-") as tmp:
        args = compare.training_arguments(workload, tmp, total)  # compare.py's arguments (CPU: adamw_torch, use_cpu)
        trainkit.Trainer(model=model, args=args, train_dataset=train_dataset, data_collator=workload.collator,
                         callbacks=[References()]).train()
    # Rows are for Trainer steps 2..total (the cycle needs a previous step end); references for 1..total.
    for name in ("raw", "functional"):
        rows[f"{name} step (reference)"] = rows[f"{name} step (reference)"][1:]
    return rows


def report(rows: dict[str, list[float]], warmup: int) -> None:
    n = len(rows["cycle (the Trainer's step, end to end)"])
    get = lambda key: rows.get(key, [0.0] * n)[warmup:]  # noqa: E731
    diff = lambda a, b: [x - y for x, y in zip(a, b)]  # noqa: E731
    cycle, raw, functional = get("cycle (the Trainer's step, end to end)"), get("raw step (reference)"), get("functional step (reference)")
    step_incl = get("train_step (incl. hooks)")
    step_excl = diff(step_incl, get("  hooks fired inside train_step"))
    outside = ["next batch (DataLoader + collation)", "fire on_step_begin", "Trainer.floating_point_ops",
               "LossTracker.add", "Trainer._maybe_log_evaluate_save", "FlowCallback.on_step_end (cadence)"]
    residual = cycle
    for key in ["train_step (incl. hooks)", *outside]:
        residual = diff(residual, get(key))
    med = lambda values: statistics.median(values) * 1e6  # noqa: E731

    print(f"trainkit.Trainer per-step breakdown: {len(cycle)} steps after {warmup} warm-up steps; medians, us/step")
    print(f"  {'cycle (the Trainer step, end to end)':<58}{med(cycle):>9,.0f}")
    print(f"  {'raw step (reference, same batch)':<58}{med(raw):>9,.0f}")
    print(f"  {'functional train_step (reference, same batch)':<58}{med(functional):>9,.0f}")
    print(f"  {'overhead: cycle - raw step (paired per step)':<58}{med(diff(cycle, raw)):>9,.0f}"
          f"   ratio {statistics.median(c / r for c, r in zip(cycle, raw)):.4f} (median per-pair)")
    print()
    print("  where the cycle goes (each call's median; sub-rows are inside the row above them)")
    print(f"  {'train_step (incl. hooks)':<58}{med(step_incl):>9,.0f}")
    print(f"  {'  train_step (excl. hooks) - functional train_step':<58}{med(diff(step_excl, functional)):>9,.0f}   (paired)")
    for key in ("  hooks fired inside train_step", "  LambdaLR.step (the Trainer's scheduler)"):
        print(f"  {key:<58}{med(get(key)):>9,.0f}")
    for key in outside:
        print(f"  {key:<58}{med(get(key)):>9,.0f}")
        if key.startswith("next batch"):
            for sub in ("  _Batches.__getitems__", "    datasets.Dataset.__getitem__ (Arrow rows)",
                        "    _default_arrow (Arrow table -> tensors)", "      _tensor (one per column)"):
                print(f"  {sub:<58}{med(get(sub)):>9,.0f}")
    print(f"  {'unattributed (loop glue, fire on_step_end, wrappers)':<58}{med(residual):>9,.0f}")
    if _missing:
        print(f"  not found (renamed? their time is in 'unattributed'): {', '.join(_missing)}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--workload", choices=sorted(n for n, w in compare.WORKLOADS.items() if w.kind == "train"), default="tiny-bert")
    parser.add_argument("--steps", type=int, default=250, help="measured steps (default 250)")
    parser.add_argument("--warmup", type=int, default=20, help="steps left out of the medians (default 20)")
    parser.add_argument("--threads", type=int, default=1, help="OMP/MKL/torch threads (default 1)")
    args = parser.parse_args(argv)
    for key in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ[key] = str(args.threads)  # before torch's first import in this process
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    compare._THREADS = args.threads
    compare._fix_threads()
    report(run(args.workload, args.steps, args.warmup), args.warmup)
    return 0


if __name__ == "__main__":
    sys.exit(main())
