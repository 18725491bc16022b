"""Learning-rate schedules as pure functions of the step.

A ``Schedule = Callable[[int], float]`` maps the optimizer step (0-based: updates already applied)
to the multiplier of every param group's base learning rate, as in optax. It holds no state, so
``schedule(n)`` is the same whenever and however often it is called, and it pickles (module-level
functions bound with :func:`functools.partial`, never closures).

Why recompute the rate from the step at each update instead of stepping a scheduler object:
trainkit sets ``lr = base_lr * schedule(state.progress.step)`` before each update, so the rate
depends on the checkpointed step alone. Resuming, a skipped non-finite update or an extra
``scheduler.step()`` cannot make it drift, and there is no scheduler state to save.
:func:`make_scheduler` wraps the very same function in a ``LambdaLR`` for code that wants one.

Every ``transformers`` ``lr_scheduler_type`` that is a function of the step is here
(:data:`SCHEDULE_NAMES`) with HF's keyword arguments, defaults and floating-point operations in
HF's order, so values are bitwise equal to ``transformers.get_scheduler``'s (the tests check it).
Differences, all where HF would fail: arguments are checked up front (:class:`ConfigError`), and
``polynomial`` with ``num_warmup_steps == num_training_steps`` returns ``lr_end / lr_init`` at that
step instead of dividing by zero. The metric-driven ``reduce_lr_on_plateau`` and ``greedy`` have
state; only :func:`make_scheduler` builds them. Importing this module imports neither torch nor
transformers; :func:`make_scheduler` imports torch, and transformers for ``greedy`` only.

Example:
    >>> for name in SCHEDULE_NAMES:
    ...     print(name)
    linear
    cosine
    cosine_with_restarts
    polynomial
    constant
    constant_with_warmup
    inverse_sqrt
    cosine_with_min_lr
    cosine_warmup_with_min_lr
    warmup_stable_decay
    >>> "reduce_lr_on_plateau" in SCHEDULE_NAMES  # stateful: only make_scheduler builds it
    False
    >>> schedule = make_schedule("constant_with_warmup", num_warmup_steps=4)  # a Schedule
    >>> [schedule(step) for step in range(6)]
    [0.0, 0.25, 0.5, 0.75, 1.0, 1.0]
"""

from __future__ import annotations

import inspect
import math
import numbers
import warnings
from collections.abc import Callable
from enum import Enum
from functools import partial
from typing import TYPE_CHECKING, Any, NoReturn

from trainkit.errors import ConfigError, closest_names

if TYPE_CHECKING:
    from torch.optim import Optimizer
    from torch.optim.lr_scheduler import LRScheduler
    from transformers.optimization import GreedyLR

__all__ = ["Schedule", "SCHEDULE_NAMES", "make_schedule", "make_scheduler"]

Schedule = Callable[[int], float]
"""A learning-rate schedule: a pure, picklable function ``step -> multiplier`` of the base learning rate.

The step is the number of optimizer updates already applied (0-based); :func:`make_schedule`
returns one, and :func:`~trainkit.init_state` takes one as ``schedule``.
"""

# name -> scheduler-specific keyword arguments it takes (HF's names; ``lr_init`` is the optimizer's lr).
_TAKES: dict[str, tuple[str, ...]] = {
    "linear": (),
    "cosine": ("num_cycles",),
    "cosine_with_restarts": ("num_cycles",),
    "polynomial": ("lr_end", "power", "lr_init"),
    "constant": (),
    "constant_with_warmup": (),
    "inverse_sqrt": ("timescale",),
    "cosine_with_min_lr": ("num_cycles", "min_lr", "min_lr_rate", "lr_init"),
    "cosine_warmup_with_min_lr": ("num_cycles", "min_lr", "min_lr_rate", "warmup_lr_rate", "lr_init"),
    "warmup_stable_decay": ("num_decay_steps", "num_stable_steps", "warmup_type", "decay_type", "min_lr_ratio",
                            "num_cycles"),
}
SCHEDULE_NAMES: tuple[str, ...] = tuple(_TAKES)
"""The names :func:`make_schedule` accepts: every ``transformers`` ``lr_scheduler_type`` that is a
function of the step (the module docstring lists them). The stateful ``reduce_lr_on_plateau`` and
``greedy`` are not among them; :func:`make_scheduler` takes those too."""
_NEEDS_TOTAL = frozenset(SCHEDULE_NAMES) - {"constant", "constant_with_warmup", "inverse_sqrt", "warmup_stable_decay"}
_STATEFUL = ("reduce_lr_on_plateau", "greedy")
_SHAPES = ("linear", "cosine", "1-sqrt")


# --- the schedules: module-level, so partial(...) of them pickles --------------------------------


def _ramp(step: int, warmup: int) -> float:
    return float(step) / float(max(1, warmup))


def _progress(step: int, warmup: int, total: int) -> float:
    return float(step - warmup) / float(max(1, total - warmup))


def _constant(step: int) -> float:
    return 1.0


def _constant_with_warmup(step: int, *, num_warmup_steps: int) -> float:
    return _ramp(step, num_warmup_steps) if step < num_warmup_steps else 1.0


def _linear(step: int, *, num_warmup_steps: int, num_training_steps: int) -> float:
    if step < num_warmup_steps:
        return _ramp(step, num_warmup_steps)
    left = float(num_training_steps - step) / float(max(1, num_training_steps - num_warmup_steps))
    return max(0.0, left)


def _cosine(step: int, *, num_warmup_steps: int, num_training_steps: int, num_cycles: float,
            min_lr_rate: float | None = None) -> float:
    if step < num_warmup_steps:
        return _ramp(step, num_warmup_steps)
    progress = _progress(step, num_warmup_steps, num_training_steps)
    factor = 0.5 * (1.0 + math.cos(math.pi * num_cycles * 2.0 * progress))
    if min_lr_rate is not None:
        factor = factor * (1 - min_lr_rate) + min_lr_rate
    return max(0.0, factor)


def _cosine_restarts(step: int, *, num_warmup_steps: int, num_training_steps: int, num_cycles: float) -> float:
    if step < num_warmup_steps:
        return _ramp(step, num_warmup_steps)
    progress = _progress(step, num_warmup_steps, num_training_steps)
    if progress >= 1.0:
        return 0.0
    return max(0.0, 0.5 * (1.0 + math.cos(math.pi * ((num_cycles * progress) % 1.0))))


def _polynomial(step: int, *, num_warmup_steps: int, num_training_steps: int, lr_end: float, power: float,
                lr_init: float) -> float:
    if step < num_warmup_steps:
        return _ramp(step, num_warmup_steps)
    decay_steps = num_training_steps - num_warmup_steps
    if step > num_training_steps or decay_steps == 0:  # the multiplier is relative to lr_init
        return lr_end / lr_init
    remaining = 1 - (step - num_warmup_steps) / decay_steps
    return ((lr_init - lr_end) * remaining**power + lr_end) / lr_init


def _inverse_sqrt(step: int, *, num_warmup_steps: int, timescale: float) -> float:
    if step < num_warmup_steps:
        return _ramp(step, num_warmup_steps)
    return 1.0 / math.sqrt((step + (timescale - num_warmup_steps)) / timescale)


def _cosine_warmup_min_lr(step: int, *, num_warmup_steps: int, num_training_steps: int, num_cycles: float,
                          min_lr_rate: float, warmup_lr_rate: float | None) -> float:
    # This HF variant counts in floats and is shifted by one step (step 0 already has lr > 0).
    now, warmup, total = float(step), float(num_warmup_steps), float(num_training_steps)
    if now < warmup:
        if warmup_lr_rate is None:
            return (now + 1.0) / max(1.0, warmup)
        return warmup_lr_rate + (1.0 - warmup_lr_rate) * now / max(1.0, warmup - 1)
    progress = (now - warmup + 1.0) / max(1.0, total - warmup)
    factor = 0.5 * (1.0 + math.cos(math.pi * num_cycles * 2.0 * progress))
    return max(0.0, factor * (1 - min_lr_rate) + min_lr_rate)


def _warmup_stable_decay(step: int, *, num_warmup_steps: int, num_stable_steps: int, num_decay_steps: int,
                         warmup_type: str, decay_type: str, min_lr_ratio: float, num_cycles: float) -> float:
    if step < num_warmup_steps:
        x = _ramp(step, num_warmup_steps)
        if warmup_type == "linear":
            shape = x
        elif warmup_type == "cosine":
            shape = 0.5 * (1.0 - math.cos(math.pi * x))
        else:
            shape = 1.0 - math.sqrt(1.0 - x)
        return max(0.0, shape * (1.0 - min_lr_ratio) + min_lr_ratio)
    decay_start = num_warmup_steps + num_stable_steps
    if step < decay_start:
        return 1.0
    if step >= decay_start + num_decay_steps:
        return min_lr_ratio
    x = float(step - decay_start) / float(max(1, num_decay_steps))
    if decay_type == "linear":
        shape = 1.0 - x
    elif decay_type == "cosine":
        shape = 0.5 * (1.0 + math.cos(math.pi * num_cycles * 2.0 * x))
    else:
        shape = 1.0 - math.sqrt(x)
    return max(0.0, shape * (1.0 - min_lr_ratio) + min_lr_ratio)


# --- validation -----------------------------------------------------------------------------------


def _fail(where: str, arg: str, value: Any, expected: str, fix: str) -> NoReturn:
    raise ConfigError(f"{where}: `{arg}` got {value!r}; expected {expected}. Fix: {fix}")


def _steps(where: str, arg: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        ratio = " (for a warmup ratio r, pass int(r * num_training_steps))" if arg == "num_warmup_steps" else ""
        _fail(where, arg, value, "a non-negative int (a number of optimizer steps)", f"pass an int >= 0{ratio}.")
    return value


def _real(where: str, arg: str, value: Any, expected: str, ok: Callable[[float], bool]) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(value) or not ok(value):
        _fail(where, arg, value, f"a finite number {expected}", f"pass `{arg}` {expected}.")
    return value


def _resolve(where: str, name: Any, known: tuple[str, ...]) -> str:
    value = getattr(name, "value", name)  # transformers.SchedulerType members carry the name in .value
    if isinstance(value, str) and value in known:
        return value
    near = closest_names(str(value), known)
    _fail(where, "name", name, f"one of {', '.join(known)}",
          f"did you mean {' or '.join(map(repr, near))}?" if near else "use one of the names listed.")


def _min_lr_rate(where: str, kw: dict[str, Any]) -> float:
    min_lr, rate = kw.get("min_lr"), kw.get("min_lr_rate")
    if (min_lr is None) == (rate is None):
        _fail(where, "min_lr/min_lr_rate", (min_lr, rate), "exactly one of them set (HF requires one)",
              "pass exactly one: min_lr (an absolute lr) or min_lr_rate (a fraction of the initial lr).")
    if rate is not None:
        return float(_real(where, "min_lr_rate", rate, "in [0, 1]", lambda v: 0 <= v <= 1))
    lr_init = _lr_init(where, kw)
    _real(where, "min_lr", min_lr, f"in [0, lr_init={lr_init!r}]", lambda v: 0 <= v <= lr_init)
    return float(min_lr / lr_init)


def _lr_init(where: str, kw: dict[str, Any]) -> float:
    if kw.get("lr_init") is None:
        _fail(where, "lr_init", None, "the optimizer's initial learning rate (a number > 0)",
              "pass lr_init=<optimizer lr>, or use make_scheduler, which reads optimizer.defaults['lr'].")
    return _real(where, "lr_init", kw["lr_init"], "> 0", lambda v: v > 0)


def _build(where: str, name: str, warmup: int, total: int | None, kw: dict[str, Any]) -> Schedule:
    """Check ``kw`` for ``name`` and bind the schedule; HF's defaults live here."""
    steps = {"num_warmup_steps": warmup, "num_training_steps": total}
    cycles = float(_real(where, "num_cycles", kw.get("num_cycles", 1 if name == "cosine_with_restarts" else 0.5),
                         "(the number of cosine waves)", lambda v: True))
    if name == "constant":
        if warmup:
            warnings.warn(f"{where}: 'constant' ignores num_warmup_steps={warmup}, as transformers does; "
                          "use 'constant_with_warmup' to warm up.", stacklevel=3)
        return _constant
    if name == "constant_with_warmup":
        return partial(_constant_with_warmup, num_warmup_steps=warmup)
    if name == "linear":
        return partial(_linear, **steps)
    if name == "cosine":
        return partial(_cosine, **steps, num_cycles=cycles)
    if name == "cosine_with_restarts":
        return partial(_cosine_restarts, **steps, num_cycles=cycles)
    if name == "polynomial":
        lr_init = _lr_init(where, kw)
        lr_end = _real(where, "lr_end", kw.get("lr_end", 1e-7), f"in [0, lr_init={lr_init!r})",
                       lambda v: 0 <= v < lr_init)
        power = _real(where, "power", kw.get("power", 1.0), ">= 0", lambda v: v >= 0)
        return partial(_polynomial, **steps, lr_end=lr_end, power=power, lr_init=lr_init)
    if name == "inverse_sqrt":
        timescale = kw.get("timescale")
        timescale = _real(where, "timescale", (warmup or 10_000) if timescale is None else timescale, "> 0",
                          lambda v: v > 0)
        return partial(_inverse_sqrt, num_warmup_steps=warmup, timescale=timescale)
    if name == "cosine_with_min_lr":
        return partial(_cosine, **steps, num_cycles=cycles, min_lr_rate=_min_lr_rate(where, kw))
    if name == "cosine_warmup_with_min_lr":
        rate = kw.get("warmup_lr_rate")
        if rate is not None:
            rate = float(_real(where, "warmup_lr_rate", rate, "in [0, 1]", lambda v: 0 <= v <= 1))
        return partial(_cosine_warmup_min_lr, **steps, num_cycles=cycles,
                       min_lr_rate=_min_lr_rate(where, kw), warmup_lr_rate=rate)
    # warmup_stable_decay
    if "num_decay_steps" not in kw:
        _fail(where, "num_decay_steps", None, "an int >= 0 (HF has no default)", "pass num_decay_steps=<steps>.")
    decay = _steps(where, "num_decay_steps", kw["num_decay_steps"])
    stable = kw.get("num_stable_steps")
    if stable is None and total is None:
        _fail(where, "num_training_steps", None, "an int >= 0 when num_stable_steps is not given",
              "pass num_training_steps, or num_stable_steps.")
    if stable is None:
        stable = total - warmup - decay  # may be negative, as in transformers
    else:
        stable = _steps(where, "num_stable_steps", stable)
        if total is not None:
            warnings.warn("Both num_training_steps and num_stable_steps are specified. "
                          "num_stable_steps will be used.", stacklevel=3)
    shapes = {}
    for arg, default in (("warmup_type", "linear"), ("decay_type", "cosine")):
        shapes[arg] = kw.get(arg, default)
        if shapes[arg] not in _SHAPES:
            _fail(where, arg, shapes[arg], f"one of {_SHAPES}", f"pass {arg}='linear', 'cosine' or '1-sqrt'.")
    ratio = float(_real(where, "min_lr_ratio", kw.get("min_lr_ratio", 0.0), "in [0, 1]", lambda v: 0 <= v <= 1))
    return partial(_warmup_stable_decay, num_warmup_steps=warmup, num_stable_steps=stable, num_decay_steps=decay,
                   **shapes, min_lr_ratio=ratio, num_cycles=cycles)


# --- public API -----------------------------------------------------------------------------------


def _foreign_keywords(name: str, kwargs: dict[str, Any]) -> tuple[list[str], str, str] | None:
    """The keywords in ``kwargs`` that schedule ``name`` does not take, what it takes, and the fix
    (naming the schedules that take them); None when it takes them all. Shared by make_schedule and
    TrainingArguments' validation, which refuses them before a run starts."""
    unknown = [k for k in kwargs if k not in _TAKES[name]]
    if not unknown:
        return None
    takes = ", ".join(_TAKES[name]) or "no scheduler-specific keyword"
    others = {k: [n for n in SCHEDULE_NAMES if k in _TAKES[n]] for k in unknown}
    return unknown, takes, "remove them" + "".join(f"; {k} is taken by {', '.join(v)}" for k, v in others.items() if v) + "."


def make_schedule(name: str | Enum, *, num_warmup_steps: int = 0, num_training_steps: int | None = None,
                  **kwargs: Any) -> Schedule:
    """Return the pure schedule ``step -> lr multiplier`` that ``transformers`` calls ``name``.

    Args:
        name: one of :data:`SCHEDULE_NAMES`, or a ``transformers.SchedulerType`` member
            (anything whose ``.value`` is such a name).
        num_warmup_steps: steps of linear warmup from 0 (ignored by ``constant``, as in HF).
            May exceed ``num_training_steps``.
        num_training_steps: total optimizer steps; required by every name but ``constant``,
            ``constant_with_warmup``, ``inverse_sqrt`` and ``warmup_stable_decay`` (which needs it
            or ``num_stable_steps``).
        **kwargs: the scheduler-specific options HF takes for ``name``, with HF's defaults:
            ``num_cycles`` (cosine 0.5; cosine_with_restarts 1), ``lr_end`` (1e-7) and ``power``
            (1.0) for polynomial, ``timescale`` (``num_warmup_steps or 10000``), ``min_lr`` or
            ``min_lr_rate`` (exactly one) and ``warmup_lr_rate`` (None) for the min-lr cosines,
            ``num_decay_steps`` (required), ``num_stable_steps``, ``warmup_type`` ("linear"),
            ``decay_type`` ("cosine"), ``min_lr_ratio`` (0) for warmup_stable_decay. ``lr_init``,
            the optimizer's initial lr, is required by ``polynomial`` and by ``min_lr``: HF reads
            it from ``optimizer.defaults["lr"]`` and :func:`make_scheduler` fills it the same way.

    Returns:
        A picklable function of any int step >= 0 (also past the end of training) giving the
        multiplier of the base learning rate, bitwise equal to the HF lambda.

    Raises:
        ConfigError: unknown or stateful ``name``; steps not ints >= 0; a required argument missing;
            a keyword ``name`` does not take; an option out of range (rates and ratios in [0, 1],
            0 <= lr_end < lr_init, power >= 0, timescale > 0: stricter than HF, whose out-of-range
            values give negative or meaningless rates).

    Example:
        >>> s = make_schedule("linear", num_warmup_steps=10, num_training_steps=110)
        >>> s(0), s(5), s(10), s(60), s(110), s(500)
        (0.0, 0.5, 1.0, 0.5, 0.0, 0.0)
        >>> c = make_schedule("cosine_with_min_lr", num_training_steps=100, min_lr_rate=0.1)
        >>> round(c(50), 4), round(c(100), 4)
        (0.55, 0.1)
    """
    where = f"make_schedule({getattr(name, 'value', name)!r})"
    key = _resolve(where, name, SCHEDULE_NAMES + _STATEFUL)
    if key in _STATEFUL:
        _fail(where, "name", name, "a schedule that is a function of the step",
              f"{key!r} has state and is stepped on evaluation metrics, so it has no pure schedule; "
              f"build it with make_scheduler(optimizer, {key!r}, ...) and call scheduler.step(metric) "
              "after each evaluation.")
    warmup = _steps(where, "num_warmup_steps", num_warmup_steps)
    total = None if num_training_steps is None else _steps(where, "num_training_steps", num_training_steps)
    foreign = _foreign_keywords(key, kwargs)
    if foreign is not None:
        unknown, takes, fix = foreign
        _fail(where, ", ".join(unknown), {k: kwargs[k] for k in unknown}, f"only the keywords {key!r} takes: {takes}", fix)
    if total is None and key in _NEEDS_TOTAL:
        _fail(where, "num_training_steps", None, f"an int >= 0: {key!r} decays over the training steps",
              "pass num_training_steps=<total optimizer steps>.")
    return _build(where, key, warmup, total, kwargs)


def _stateful(where: str, cls: type, optimizer: Optimizer, kwargs: dict[str, Any]) -> Any:
    accepted = [p for p in inspect.signature(cls).parameters if p != "optimizer"]
    unknown = {k: v for k, v in kwargs.items() if k not in accepted}
    if unknown:
        _fail(where, ", ".join(unknown), unknown, f"keywords of {cls.__name__}: {', '.join(accepted)}",
              "remove or rename them.")
    try:
        return cls(optimizer, **kwargs)
    except ValueError as error:
        message = str(error).rstrip(".")
        raise ConfigError(f"{where}: {cls.__name__} rejected {kwargs!r}: {message}. Fix: correct that option.") from error


def make_scheduler(optimizer: Optimizer, name: str | Enum, *, num_warmup_steps: int = 0,
                   num_training_steps: int | None = None, **kwargs: Any) -> LRScheduler | GreedyLR:
    """Return a torch scheduler for ``optimizer``: ``LambdaLR`` over :func:`make_schedule`'s function.

    ``lr_init`` (polynomial, ``min_lr``) is read from ``optimizer.defaults["lr"]``, as HF does. The
    metric-driven names ignore the step counts and are stepped with ``scheduler.step(metric)``:
    ``reduce_lr_on_plateau`` is ``torch.optim.lr_scheduler.ReduceLROnPlateau(optimizer, **kwargs)``
    (torch's defaults, as in HF), ``greedy`` is ``transformers.optimization.GreedyLR``.

    Args:
        optimizer: the torch optimizer whose param groups' lrs are scheduled.
        name: as in :func:`make_schedule`, or ``"reduce_lr_on_plateau"`` or ``"greedy"``.
        num_warmup_steps: as in :func:`make_schedule`.
        num_training_steps: as in :func:`make_schedule`.
        **kwargs: the options of :func:`make_schedule` but ``lr_init``, or the stateful
            scheduler's constructor keywords.

    Returns:
        A ``LambdaLR``, ``ReduceLROnPlateau`` or ``GreedyLR`` attached to ``optimizer``.

    Raises:
        ConfigError: as :func:`make_schedule`; also ``lr_init`` passed, or options the stateful
            scheduler does not take or rejects.

    Example:
        >>> import torch
        >>> opt = torch.optim.SGD(torch.nn.Linear(2, 1).parameters(), lr=0.1)
        >>> sched = make_scheduler(opt, "linear", num_warmup_steps=2, num_training_steps=10)
        >>> opt.param_groups[0]["lr"]
        0.0
        >>> opt.step(); sched.step()
        >>> round(opt.param_groups[0]["lr"], 4)
        0.05
    """
    where = f"make_scheduler({getattr(name, 'value', name)!r})"
    key = _resolve(where, name, SCHEDULE_NAMES + _STATEFUL)
    from torch.optim.lr_scheduler import LambdaLR, ReduceLROnPlateau

    if key in _STATEFUL:
        _steps(where, "num_warmup_steps", num_warmup_steps)
        if num_training_steps is not None:
            _steps(where, "num_training_steps", num_training_steps)
        if key == "reduce_lr_on_plateau":
            return _stateful(where, ReduceLROnPlateau, optimizer, kwargs)
        from transformers.optimization import GreedyLR  # only this stateful HF class needs transformers

        return _stateful(where, GreedyLR, optimizer, kwargs)
    if "lr_init" in kwargs:
        _fail(where, "lr_init", kwargs["lr_init"], "no lr_init: it is the optimizer's defaults['lr']",
              "set the lr when building the optimizer and drop lr_init.")
    if "lr_init" in _TAKES[key]:
        lr = getattr(optimizer, "defaults", {}).get("lr")
        kwargs["lr_init"] = lr.item() if hasattr(lr, "item") else lr
    schedule = make_schedule(key, num_warmup_steps=num_warmup_steps, num_training_steps=num_training_steps,
                             **kwargs)
    return LambdaLR(optimizer, schedule)
