"""The training state: frozen records, a smart constructor, and the donation contract.

PyTorch modules and optimizers are mutable, and copying every parameter at every step would
cost two to three times the memory. trainkit therefore *donates* state, as JAX's
``donate_argnums`` does:

* :class:`TrainState` and :class:`Progress` are frozen ``attrs`` records. Nothing mutates a
  record; a change is a new record (:meth:`TrainState.replace`, ``attrs.evolve``).
* :func:`trainkit.train_step` *consumes* its input state: it updates the parameters and the
  optimizer moments in place, and those tensors then belong to the record it returns.
  Reading ``.model`` or ``.optimizer`` (or the other owned objects) from the consumed record
  raises :class:`~trainkit.StaleStateError`.
* :func:`fork` is the one explicit, costly way to branch: it deep-copies everything the state
  owns into a new lineage.

How staleness is detected cheaply: the records of one lineage share a small mutable
``_Lineage`` cell holding the current *generation*. Each record remembers the generation it was
made at. A step bumps the cell's generation and stamps the new one on the record it returns, so
every older record of the lineage is stale at once, at the cost of one integer comparison per
attribute read.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Literal

import attrs
import torch
from torch import nn

from trainkit.errors import ConfigError, StaleStateError

__all__ = ["Progress", "TrainState", "init_state", "fork", "Precision"]

Schedule = Callable[[int], float]
Precision = Literal["no", "bf16", "fp16"]
"""The mixed-precision modes: ``"no"`` (float32), ``"bf16"`` (bfloat16 autocast) or ``"fp16"`` (float16 autocast and a grad scaler)."""
_PRECISIONS = ("no", "bf16", "fp16")


def _non_negative(instance: Any, attribute: attrs.Attribute, value: int) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise ConfigError(
            f"{type(instance).__name__}.{attribute.name} must be a non-negative int; got {value!r}. "
            f"Counters only grow from 0: build a Progress from the values a step or checkpoint reports."
        )


@attrs.frozen
class Progress:
    """How far training has gone. Immutable; every field is a non-negative counter.

    Attributes:
        step: optimizer updates applied (skipped updates are not counted). The update made by
            the next :func:`~trainkit.train_step` uses ``schedule(step)``.
        epoch: the current epoch, starting at 0.
        position: batches (micro-batches) already consumed in the current epoch, so a resumed
            run knows where to continue without replaying data.
        samples_seen: examples consumed by applied updates.
        items_seen: label items (tokens for token-level losses, examples for sequence-level
            ones) consumed by applied updates.
        skipped: updates skipped because of a non-finite loss or gradient.

    Example:
        >>> p = Progress()
        >>> p.step, p.epoch
        (0, 0)
        >>> p.next_epoch()
        Progress(step=0, epoch=1, position=0, samples_seen=0, items_seen=0, skipped=0)
    """

    step: int = attrs.field(default=0, validator=_non_negative)
    epoch: int = attrs.field(default=0, validator=_non_negative)
    position: int = attrs.field(default=0, validator=_non_negative)
    samples_seen: int = attrs.field(default=0, validator=_non_negative)
    items_seen: int = attrs.field(default=0, validator=_non_negative)
    skipped: int = attrs.field(default=0, validator=_non_negative)

    def next_epoch(self) -> Progress:
        """Return the progress at the start of the next epoch (position back to 0)."""
        return attrs.evolve(self, epoch=self.epoch + 1, position=0)


class _Lineage:
    """The one mutable cell shared by the records of a lineage: its current generation."""

    __slots__ = ("generation",)

    def __init__(self) -> None:
        self.generation = 0


def _stale(state: TrainState, name: str) -> StaleStateError:
    return StaleStateError(
        f"TrainState.{name} was read from a state that train_step already consumed "
        f"(state generation {state._generation}, lineage now at generation "
        f"{state._lineage.generation}). train_step updates parameters and optimizer moments in "
        f"place and hands them to the state it returns, so the old record no longer owns them. "
        f"Use the returned state (`state, out = train_step(state, batch)`), or call "
        f"`trainkit.fork(state)` before the step to keep an independent copy."
    )


def _owned(name: str) -> property:
    """A read-only property over a donated field that refuses to read through a stale record."""
    private = "_" + name

    def get(self: TrainState) -> Any:
        if self._generation != self._lineage.generation:
            raise _stale(self, name)
        return getattr(self, private)

    get.__doc__ = f"The {name} owned by this state; raises StaleStateError once the state is consumed."
    return property(get)


@attrs.frozen(eq=False, repr=False)
class TrainState:
    """Everything a training step needs, as one immutable record.

    Build it with :func:`init_state`; change it with :meth:`replace`; :func:`~trainkit.train_step`
    consumes it and returns its successor. Assigning a field raises
    ``attrs.exceptions.FrozenInstanceError``.

    Attributes:
        progress: the :class:`Progress` counters.
        model: the module being trained (donated; see the module docstring).
        optimizer: its optimizer (donated).
        schedule: ``step -> multiplier`` (one callable, or one per parameter group), or ``None``
            to leave the optimizer's learning rate to an opaque ``lr_scheduler``.
        base_lrs: the learning rate of each parameter group at multiplier 1.
        seed: the root of every random number a step draws (dropout).
        precision: ``"no"``, ``"bf16"`` (autocast) or ``"fp16"`` (autocast and a grad scaler).
        scaler: the ``torch.amp.GradScaler`` for fp16, else ``None`` (donated).
        lr_scheduler: an opaque torch LR scheduler (e.g. ``ReduceLROnPlateau``) or ``None`` (donated).
        create_graph: whether backward must build a graph of the gradients (Adahessian).

    Example:
        >>> import attrs, torch
        >>> from trainkit import train_step
        >>> model = torch.nn.Linear(3, 1)
        >>> state = init_state(model, torch.optim.SGD(model.parameters(), lr=0.1), seed=0)
        >>> state.step, state.base_lrs, state.precision, state.is_live
        (0, (0.1,), 'no', True)
        >>> state.replace(seed=1).seed, state.model is model
        (1, True)
        >>> try:
        ...     state.seed = 1
        ... except attrs.exceptions.FrozenInstanceError:
        ...     print("frozen")
        frozen
        >>> loss_fn = lambda m, b: torch.nn.functional.mse_loss(m(b[0]), b[1])
        >>> new, _ = train_step(state, (torch.ones(4, 3), torch.zeros(4, 1)), loss_fn=loss_fn)
        >>> new.step, new.is_live, state.is_live
        (1, True, False)
        >>> state.model  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        trainkit.errors.StaleStateError: TrainState.model was read from a state that train_step already consumed ...
    """

    progress: Progress
    _model: nn.Module = attrs.field(alias="model")
    _optimizer: torch.optim.Optimizer = attrs.field(alias="optimizer")
    schedule: Schedule | tuple[Schedule, ...] | None
    base_lrs: tuple[float, ...]
    seed: int
    precision: Precision = "no"
    _scaler: Any = attrs.field(default=None, alias="scaler")
    _lr_scheduler: Any = attrs.field(default=None, alias="lr_scheduler")
    create_graph: bool = False
    _lineage: _Lineage = attrs.field(factory=_Lineage, alias="lineage")
    _generation: int = attrs.field(default=0, alias="generation")

    model = _owned("model")
    optimizer = _owned("optimizer")
    scaler = _owned("scaler")
    lr_scheduler = _owned("lr_scheduler")

    @property
    def is_live(self) -> bool:
        """Whether this record still owns its model and optimizer (no step consumed it)."""
        return self._generation == self._lineage.generation

    @property
    def step(self) -> int:
        """Shorthand for ``progress.step``."""
        return self.progress.step

    def replace(self, **changes: Any) -> TrainState:
        """Return a copy of this record with ``changes`` applied (``attrs.evolve``).

        The copy shares the model and optimizer (it does not consume this record); use
        :func:`fork` for an independent copy.

        Raises:
            StaleStateError: if this record was already consumed by a step.
        """
        if not self.is_live:
            raise _stale(self, "replace()")
        return attrs.evolve(self, **changes)

    def _successor(self, progress: Progress) -> TrainState:
        """Consume this record and return the next one of the lineage (used by ``train_step``)."""
        if not self.is_live:
            raise _stale(self, "model")
        self._lineage.generation += 1
        # Spelled out rather than attrs.evolve: this runs every step, and evolve walks every field.
        return TrainState(
            progress=progress, model=self._model, optimizer=self._optimizer, schedule=self.schedule,
            base_lrs=self.base_lrs, seed=self.seed, precision=self.precision, scaler=self._scaler,
            lr_scheduler=self._lr_scheduler, create_graph=self.create_graph, lineage=self._lineage,
            generation=self._lineage.generation,
        )

    def __repr__(self) -> str:
        live = "live" if self.is_live else "consumed"
        return (
            f"TrainState({live}, progress={self.progress!r}, model={type(self._model).__name__}, "
            f"optimizer={type(self._optimizer).__name__}, base_lrs={self.base_lrs!r}, "
            f"seed={self.seed}, precision={self.precision!r})"
        )


def _read_scheduler(
    scheduler: Any, optimizer: torch.optim.Optimizer
) -> tuple[Schedule | tuple[Schedule, ...] | None, tuple[float, ...] | None, Any]:
    """Split a torch scheduler into (schedule, base_lrs, opaque scheduler).

    A ``LambdaLR`` is a pure function of the step in disguise: read its lambdas and base rates
    and drop the object, so nothing can step it too often or too rarely. Any other scheduler
    is kept as an opaque object for the step (or the evaluation loop) to drive.
    """
    if isinstance(scheduler, torch.optim.lr_scheduler.LambdaLR):
        if scheduler.optimizer is not optimizer:
            raise ConfigError(
                "init_state(schedule=LambdaLR(...)): the scheduler wraps a different optimizer "
                "than the one passed as `optimizer`. Build the scheduler over the same optimizer."
            )
        lambdas = tuple(scheduler.lr_lambdas)
        schedule = lambdas[0] if all(f is lambdas[0] for f in lambdas) else lambdas
        return schedule, tuple(float(lr) for lr in scheduler.base_lrs), None
    return None, None, scheduler


def _compiled(model: nn.Module, options: bool | Mapping[str, Any]) -> nn.Module:
    import inspect

    if options is True:
        options = {}
    known = set(inspect.signature(torch.compile).parameters) - {"model"}
    if not isinstance(options, Mapping) or set(options) - known:
        unknown = sorted(set(options) - known) if isinstance(options, Mapping) else options
        raise ConfigError(f"init_state(compile={options!r}): expected True/False or keyword arguments of torch.compile "
                          f"({', '.join(sorted(known))}); got {unknown!r}. Fix: e.g. compile={{'backend': 'inductor'}}.")
    if hasattr(model, "_orig_mod"):  # already compiled
        return model
    return torch.compile(model, **options)


def init_state(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    *,
    schedule: Schedule | Sequence[Schedule] | torch.optim.lr_scheduler.LRScheduler | Any | None = None,
    seed: int = 42,
    precision: Precision = "no",
    progress: Progress | None = None,
    compile: bool | Mapping[str, Any] = False,
) -> TrainState:
    """Build the first :class:`TrainState` of a training run (the smart constructor).

    Args:
        model: the module to train. Its parameters must be those of ``optimizer``.
        optimizer: a torch optimizer, e.g. from :func:`trainkit.make_optimizer`.
        schedule: the learning-rate multiplier as a function of the step (e.g. from
            :func:`trainkit.make_schedule`), one such function per parameter group, a torch
            ``LambdaLR`` (its lambdas and base rates are read), any other torch LR scheduler
            (kept opaque: stepped after each update, or by the evaluation loop for
            ``ReduceLROnPlateau``), or ``None`` for a constant learning rate.
        seed: the root of every random number the steps draw.
        precision: ``"no"``, ``"bf16"`` (autocast to bfloat16) or ``"fp16"`` (autocast to
            float16 with a dynamic grad scaler).
        progress: counters to start from (a resumed run); defaults to all zeros.
        compile: run the model through ``torch.compile``: True for its defaults (inductor), or a
            mapping of its keyword arguments (``backend``, ``mode``, ``dynamic``, ``fullgraph``...).
            The compiled region is the model's forward, which holds a transformers model's loss;
            the optimizer step and the learning rate stay outside it, so a schedule changing the
            rate every step never recompiles. ``state.model`` is then the compiled module (it
            shares the parameters; checkpoints store the bare model's names).

    Returns:
        A live state. Base learning rates are read from the optimizer's groups (or the
        ``LambdaLR``'s ``base_lrs``).

    Raises:
        ConfigError: if an argument has the wrong type or value, or the optimizer does not
            optimise the model's parameters.

    Example:
        >>> import torch
        >>> model = torch.nn.Linear(2, 1)
        >>> opt = torch.optim.SGD(model.parameters(), lr=0.1)
        >>> state = init_state(model, opt, schedule=lambda step: 1.0 / (1 + step), seed=0)
        >>> state.progress.step, state.base_lrs
        (0, (0.1,))
    """
    from trainkit.optim import needs_create_graph

    if not isinstance(model, nn.Module):
        raise ConfigError(
            f"init_state(model=...): expected a torch.nn.Module, got {type(model).__name__}. "
            f"Pass the module to train (a transformers PreTrainedModel is an nn.Module)."
        )
    if not isinstance(optimizer, torch.optim.Optimizer):
        raise ConfigError(
            f"init_state(optimizer=...): expected a torch.optim.Optimizer, got "
            f"{type(optimizer).__name__}. Build one with trainkit.make_optimizer(model, ...)."
        )
    if not isinstance(seed, int) or isinstance(seed, bool):
        raise ConfigError(f"init_state(seed=...): expected an int, got {seed!r}. Pass e.g. seed=42.")
    if precision not in _PRECISIONS:
        raise ConfigError(
            f"init_state(precision=...): expected one of {_PRECISIONS}, got {precision!r}. "
            f"Use 'bf16' for bfloat16 autocast, 'fp16' for float16 with a grad scaler."
        )
    owned = {id(p) for p in model.parameters()}
    foreign = [
        i for i, g in enumerate(optimizer.param_groups) for p in g["params"] if id(p) not in owned
    ]
    if foreign:
        raise ConfigError(
            f"init_state(optimizer=...): parameter group {foreign[0]} holds parameters that are "
            f"not the model's. Build the optimizer from this model's parameters "
            f"(e.g. trainkit.make_optimizer(model, ...)) after any copy or move of the model."
        )

    opaque = None
    base_lrs = tuple(float(g["lr"]) for g in optimizer.param_groups)
    if isinstance(schedule, (torch.optim.lr_scheduler.LRScheduler, torch.optim.lr_scheduler.ReduceLROnPlateau)):
        schedule, lambda_base, opaque = _read_scheduler(schedule, optimizer)
        base_lrs = lambda_base or base_lrs
    elif isinstance(schedule, Sequence) and not isinstance(schedule, str):
        schedule = tuple(schedule)
        if len(schedule) != len(optimizer.param_groups) or not all(callable(f) for f in schedule):
            raise ConfigError(
                f"init_state(schedule=...): a sequence of schedules needs one callable per "
                f"parameter group ({len(optimizer.param_groups)}); got {len(schedule)} items. "
                f"Pass one callable to use the same schedule for every group."
            )
    elif schedule is not None and not callable(schedule):
        raise ConfigError(
            f"init_state(schedule=...): expected a callable step -> multiplier, a torch LR "
            f"scheduler or None; got {type(schedule).__name__}. Build one with "
            f"trainkit.make_schedule(name, num_warmup_steps=..., num_training_steps=...)."
        )
    if not all(math.isfinite(lr) and lr >= 0 for lr in base_lrs):
        raise ConfigError(
            f"init_state(optimizer=...): learning rates must be finite and >= 0; got {base_lrs}."
        )

    if compile is not False:
        model = _compiled(model, compile)
    scaler = None
    if precision == "fp16":
        device = next(model.parameters()).device.type
        scaler = torch.amp.GradScaler(device)
    return TrainState(
        progress=progress if progress is not None else Progress(),
        model=model,
        optimizer=optimizer,
        schedule=schedule,
        base_lrs=base_lrs,
        seed=seed,
        precision=precision,
        scaler=scaler,
        lr_scheduler=opaque,
        create_graph=needs_create_graph(optimizer),
    )


def _copy_optimizer(optimizer: torch.optim.Optimizer, memo: dict[int, Any]) -> torch.optim.Optimizer:
    """Deep-copy an optimizer so that it refers to the parameters already copied into ``memo``.

    ``Optimizer.__getstate__`` keeps only ``defaults``, ``state`` and ``param_groups``; a subclass
    that keeps more (``torch_optimizer.Lookahead`` holds its base optimizer in ``.optimizer``)
    would lose it, so the attributes it dropped are copied too, except the ``step`` wrapper an
    LR scheduler installs, which points at the original optimizer.
    """
    copied = copy.deepcopy(optimizer, memo)
    for name, value in vars(optimizer).items():
        if name not in vars(copied) and not getattr(value, "_wrapped_by_lr_sched", False):
            vars(copied)[name] = copy.deepcopy(value, memo)
    return copied


def fork(state: TrainState) -> TrainState:
    """Deep-copy everything ``state`` owns into a new, independent lineage.

    The model, optimizer (whose moments then refer to the *copied* parameters), grad scaler
    and opaque LR scheduler are copied with one ``copy.deepcopy`` memo, so shared references
    (tied weights, the optimizer's parameters) stay shared inside the copy. ``state`` itself
    stays live. This costs a full copy of parameters and optimizer state: fork only when a
    branch is really needed (tests, look-ahead evaluation, what-if runs).

    Args:
        state: a live state.

    Returns:
        A live state equal in value to ``state`` that shares no tensor with it.

    Raises:
        StaleStateError: if ``state`` was consumed by a step.

    Example:
        >>> import torch
        >>> model = torch.nn.Linear(2, 1)
        >>> state = init_state(model, torch.optim.SGD(model.parameters(), lr=0.1))
        >>> copy_ = fork(state)
        >>> copy_.model is state.model, torch.equal(copy_.model.weight, state.model.weight)
        (False, True)
    """
    memo: dict[int, Any] = {}
    model = copy.deepcopy(state.model, memo)
    optimizer = _copy_optimizer(state.optimizer, memo)
    scaler, lr_scheduler = copy.deepcopy((state.scaler, state.lr_scheduler), memo)
    return attrs.evolve(
        state,
        model=model,
        optimizer=optimizer,
        scaler=scaler,
        lr_scheduler=lr_scheduler,
        lineage=_Lineage(),
        generation=0,
    )
