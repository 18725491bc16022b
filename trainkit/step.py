"""One optimizer update (:func:`train_step`) and one evaluation batch (:func:`eval_step`).

The data flow of :func:`train_step` (see ``DESIGN.md``)::

    window of k micro-batches ─► count label items over the window (shifted for causal LMs)
      for each micro-batch: seed(seed, step, i) ─► autocast ─► forward ─► loss share ─► backward
      ─► total grad norm ─► non-finite? raise or skip, parameters untouched
      ─► clip ─► lr = base_lr × schedule(step) ─► optimizer.step() ─► zero_grad ─► new record

Why the loss is weighted by label items: a model's loss is a *mean* over its label items
(tokens that are not -100). Averaging k micro-batch means treats a micro-batch with 3 real
tokens like one with 300, so accumulation would not equal training on the union. Counting
the items of the whole window first and giving each micro-batch ``items_i / items_window`` of
the weight (or passing ``num_items_in_batch`` to a model or ``compute_loss_func`` that
normalises by it) makes k micro-batches exactly one batch of their union.
"""

from __future__ import annotations

import contextlib
import inspect
import math
import weakref
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Literal

import attrs
import numpy as np
import torch
from torch import nn

from trainkit._models import is_pretrained, model_class, unwrap_model
from trainkit.distributed import _ddp_group, _local_module
from trainkit.errors import ConfigError, NonFiniteError, _MissingLossError
from trainkit.sharding import _gradient_sync_off, is_sharded
from trainkit.seeding import _PrivateStreams, derive_seed
from trainkit.state import Progress, TrainState

__all__ = ["StepHooks", "StepOutput", "EvalOutput", "train_step", "eval_step"]

IGNORE_INDEX = -100
LossFn = Callable[[nn.Module, Any], Any]


@attrs.frozen
class StepOutput:
    """What one :func:`train_step` reports.

    Attributes:
        loss: the window's loss (mean over its label items), a detached 0-d tensor. Under DDP,
            the loss of the global window (every rank's micro-batches), the same on every rank.
        grad_norm: the total L2 norm of the gradients *before* clipping, a detached 0-d tensor.
        lr: the learning rate of the first parameter group used by this update.
        lrs: the learning rate of every parameter group.
        num_items: label items in the window (tokens or examples; samples when there are no labels);
            under DDP, summed over the ranks.
        num_samples: examples in the window (under DDP, summed over the ranks).
        skipped: True if the update was not applied (non-finite values, or the fp16 grad
            scaler found an overflow); parameters and optimizer state are then unchanged.
        aux: what a ``loss_fn`` returned beside the loss, one entry per micro-batch, else None.

    Example:
        >>> import torch
        >>> from trainkit import init_state, train_step
        >>> model = torch.nn.Linear(3, 1)
        >>> state = init_state(model, torch.optim.SGD(model.parameters(), lr=0.1), seed=0)
        >>> batch = (torch.ones(4, 3), torch.zeros(4, 1))
        >>> _, out = train_step(state, batch, loss_fn=lambda m, b: torch.nn.functional.mse_loss(m(b[0]), b[1]))
        >>> out.num_samples, out.skipped, out.lrs
        (4, False, (0.1,))
    """

    loss: torch.Tensor
    grad_norm: torch.Tensor
    lr: float
    lrs: tuple[float, ...]
    num_items: int
    num_samples: int
    skipped: bool
    aux: tuple[Any, ...] | None = None


@attrs.frozen
class StepHooks:
    """Callbacks that run *inside* one :func:`train_step`, where a loop cannot reach.

    They exist so that a trainer can fire ``transformers`` callback events at the same points as
    ``transformers.Trainer`` does, without a second copy of the step. Each is optional.

    Attributes:
        on_micro_batch_end: called with the index of each micro-batch but the last, after its
            backward (``on_substep_end``).
        before_update: called after clipping, just before ``optimizer.step()``
            (``on_pre_optimizer_step``); not called for a skipped update.
        after_update: called right after ``optimizer.step()`` (``on_optimizer_step``).

    Example:
        >>> calls = []
        >>> hooks = StepHooks(before_update=lambda: calls.append("before"))
        >>> hooks.after_update is None
        True
    """

    on_micro_batch_end: Callable[[int], None] | None = None
    before_update: Callable[[], None] | None = None
    after_update: Callable[[], None] | None = None


_NO_HOOKS = StepHooks()


@attrs.frozen
class EvalOutput:
    """What one :func:`eval_step` returns (all detached).

    Attributes:
        loss: the batch's mean loss (a 0-d tensor), or None when the batch has no labels.
        logits: the model's outputs other than the loss: one tensor, or a tuple of them.
        labels: the batch's labels (a tensor, a tuple for several label names), or None.

    Example:
        >>> import torch
        >>> from trainkit import init_state, eval_step
        >>> model = torch.nn.Linear(3, 2)
        >>> state = init_state(model, torch.optim.SGD(model.parameters(), lr=0.1))
        >>> out = eval_step(state, (torch.ones(4, 3),), loss_fn=lambda m, b: (m(b[0]).mean(), m(b[0])))
        >>> out.loss.shape, tuple(out.logits.shape), out.labels
        (torch.Size([]), (4, 2), None)
    """

    loss: torch.Tensor | None
    logits: Any
    labels: Any


# ---------------------------------------------------------------------------------------------
# Batches


def _is_window(batch: Any) -> bool:
    """A window is a list/tuple whose items are batches (mappings, or sequences of tensors)."""
    if not isinstance(batch, (list, tuple)) or not batch:
        return False
    return all(isinstance(b, Mapping) or (isinstance(b, (list, tuple)) and not _is_leaf(b)) for b in batch)


def _is_leaf(seq: Sequence[Any]) -> bool:
    return any(isinstance(x, torch.Tensor) for x in seq)


def _to_device(batch: Any, device: torch.device) -> Any:
    if isinstance(batch, torch.Tensor):
        return batch if batch.device == device else batch.to(device, non_blocking=True)
    if isinstance(batch, Mapping):
        return {k: _to_device(v, device) for k, v in batch.items()}
    if isinstance(batch, (list, tuple)):
        return type(batch)(_to_device(v, device) for v in batch)
    return batch


def _labels_of(batch: Any, label_names: Sequence[str]) -> torch.Tensor | None:
    if isinstance(batch, Mapping):
        for name in label_names:
            value = batch.get(name)
            if isinstance(value, torch.Tensor):
                return value
    return None


def _num_samples(batch: Any) -> int:
    values = batch.values() if isinstance(batch, Mapping) else batch
    for value in values:
        if isinstance(value, torch.Tensor) and value.dim() > 0:
            return int(value.shape[0])
    return 1


def _count_items(batch: Any, labels: torch.Tensor | None, shift: bool, samples: int) -> int:
    """Label items the model's mean loss divides by: ``labels`` (the batch's, from :func:`_labels_of`)
    != -100, shifted for causal LMs; the ``samples`` when there are no labels."""
    shifted = batch.get("shift_labels") if isinstance(batch, Mapping) else None
    if isinstance(shifted, torch.Tensor):
        return _not_ignored(shifted)
    if labels is None:
        return samples
    return _not_ignored(labels[..., 1:] if shift else labels)


_NUMPY_LABELS = (torch.int64, torch.int32, torch.int16, torch.int8, torch.uint8, torch.bool, torch.float32, torch.float64)


def _not_ignored(labels: torch.Tensor) -> int:
    """``int(labels.ne(-100).sum())``, the cheapest way for where the labels are.

    This runs for every micro-batch, between a step's heavy kernels, where each torch or numpy
    call costs 20-40 us (cold caches; benchmarks/step_ablation.py measured counting at 3% of a
    4 ms step). A few hundred host-side labels are counted fastest as a Python list; more, through
    a zero-copy numpy view; labels on a device, by torch (one sync).
    """
    if labels.device.type == "cpu" and not labels.requires_grad:
        if labels.numel() <= _LIST_COUNT_MAX:
            values = labels.tolist() if labels.dim() == 1 else labels.reshape(-1).tolist()
            return len(values) - values.count(IGNORE_INDEX)
        if labels.dtype in _NUMPY_LABELS:
            return int(np.count_nonzero(labels.numpy() != IGNORE_INDEX))
    return int(labels.ne(IGNORE_INDEX).sum())


_LIST_COUNT_MAX = 512


# ---------------------------------------------------------------------------------------------
# What the model is: computed once per model instance, then looked up.

_MODEL_FACTS: weakref.WeakKeyDictionary[nn.Module, tuple[bool, bool]] = weakref.WeakKeyDictionary()


def _model_facts(model: nn.Module) -> tuple[bool, bool]:
    """(accepts num_items_in_batch, loss shifts labels) for ``model``, cached per instance."""
    facts = _MODEL_FACTS.get(model)
    if facts is None:
        inner = unwrap_model(model)
        # Only an explicit opt-in counts. transformers' own heuristic (forward takes **kwargs)
        # is wrong for models that compute their own mean loss: BertForSequenceClassification
        # (transformers 5.24) takes **kwargs yet ignores num_items_in_batch, so accumulation
        # trusting it would sum k means. Weighting each mean by its item share is exact for
        # every model whose loss is a mean over its label items, so it is the default.
        params = inspect.signature(inner.forward).parameters
        accepts = getattr(inner, "accepts_loss_kwargs", None) is True or "num_items_in_batch" in params
        facts = (accepts, _shifts_labels(inner))
        _MODEL_FACTS[model] = facts
    return facts


def _shifts_labels(model: nn.Module) -> bool:
    """Whether the model's loss predicts label[i + 1] at position i (a decoder-only causal LM)."""
    if not is_pretrained(model):
        return False
    config = getattr(model, "config", None)
    if getattr(config, "is_encoder_decoder", False):
        return False
    from transformers.loss.loss_utils import LOSS_MAPPING, ForCausalLMLoss
    from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING_NAMES

    if model_class(model).__name__ in MODEL_FOR_CAUSAL_LM_MAPPING_NAMES.values():
        return True
    return LOSS_MAPPING.get(getattr(model, "loss_type", None)) is ForCausalLMLoss


# ---------------------------------------------------------------------------------------------
# Losses


def _loss_from_outputs(outputs: Any, batch: Any) -> torch.Tensor:
    if isinstance(outputs, torch.Tensor):
        loss = outputs
    elif isinstance(outputs, Mapping):
        if outputs.get("loss") is None:
            given = sorted(batch) if isinstance(batch, Mapping) else f"{type(batch).__name__}"
            raise _MissingLossError(
                f"train_step: the model's output has no 'loss' (keys: {sorted(outputs)}; batch "
                f"keys: {given}). Give the batch its labels (e.g. a 'labels' column, or set "
                f"label_names), or pass loss_fn=(model, batch) -> loss or compute_loss_func="
                f"(outputs, labels, num_items_in_batch) -> loss.",
                output_keys=sorted(outputs),
            )
        loss = outputs["loss"]
    elif isinstance(outputs, (list, tuple)) and outputs and isinstance(outputs[0], torch.Tensor):
        loss = outputs[0]
    else:
        raise ConfigError(
            f"train_step: cannot find a loss in the model's output of type {type(outputs).__name__}. "
            f"Return a dict/ModelOutput with 'loss', or pass loss_fn=(model, batch) -> loss."
        )
    return _check_scalar(loss, "the model's loss")


def _check_scalar(loss: Any, what: str) -> torch.Tensor:
    if not isinstance(loss, torch.Tensor) or loss.numel() != 1 or not loss.is_floating_point():
        shape = tuple(loss.shape) if isinstance(loss, torch.Tensor) else type(loss).__name__
        raise ConfigError(
            f"train_step: {what} must be a floating-point scalar tensor; got {shape}. "
            f"Reduce it to a mean over the batch (e.g. `loss.mean()`)."
        )
    return loss if loss.dim() == 0 else loss.reshape(())


def _forward_loss(
    model: nn.Module,
    batch: Any,
    *,
    loss_fn: LossFn | None,
    compute_loss_func: Callable[..., torch.Tensor] | None,
    label_names: Sequence[str],
    num_items: torch.Tensor | None,
) -> tuple[torch.Tensor, Any]:
    """Run one micro-batch forward; return (loss, aux). ``num_items`` set: loss is normalised by it."""
    if loss_fn is not None:
        result = loss_fn(model, batch)
        if isinstance(result, tuple):
            return _check_scalar(result[0], "loss_fn's loss"), result[1] if len(result) == 2 else result[1:]
        return _check_scalar(result, "loss_fn's loss"), None
    if not isinstance(batch, Mapping):
        return _loss_from_outputs(model(*batch), batch), None
    inputs = dict(batch)
    labels = None
    if compute_loss_func is not None:
        labels = next((inputs.pop(n) for n in label_names if n in inputs), None)
    if num_items is not None and _model_facts(model)[0]:  # compute_loss_func gets it even when the model does not
        inputs["num_items_in_batch"] = num_items
    outputs = model(**inputs)
    if compute_loss_func is not None:
        loss = compute_loss_func(outputs, labels, num_items_in_batch=num_items)
        return _check_scalar(loss, "compute_loss_func's loss"), None
    return _loss_from_outputs(outputs, batch), None


_NO_CONTEXT = contextlib.nullcontext()  # reusable: nullcontext holds no state


def _autocast(state: TrainState, device: torch.device) -> contextlib.AbstractContextManager[Any]:
    if state.precision == "no":
        return _NO_CONTEXT
    dtype = torch.bfloat16 if state.precision == "bf16" else torch.float16
    return torch.autocast(device.type, dtype=dtype)


def _lrs_for(state: TrainState, step: int) -> tuple[float, ...] | None:
    schedule = state.schedule
    if schedule is None:
        return None
    if callable(schedule):
        multiplier = schedule(step)
        return tuple(base * multiplier for base in state.base_lrs)
    return tuple(base * f(step) for base, f in zip(state.base_lrs, schedule))


@attrs.frozen
class _Plan:
    """What every micro-batch of one window shares."""

    device: torch.device
    total_items: int  # over the window, and over every rank under DDP
    prenormalised: bool  # the loss is already divided by the window's items (num_items_in_batch)
    world_size: int  # DDP averages gradients over the ranks; each rank's loss is scaled up to undo it
    rank: int
    num_items: torch.Tensor | None
    loss_fn: LossFn | None
    compute_loss_func: Callable[..., torch.Tensor] | None
    label_names: Sequence[str]


def _accumulate(
    state: TrainState,
    model: nn.Module,
    window: list[Any],
    counts: list[int],
    seed_streams: Callable[[int], None],
    plan: _Plan,
    hooks: StepHooks,
) -> tuple[torch.Tensor, list[Any]]:
    """Forward and backward every micro-batch of the window; return (window loss, aux values)."""
    losses: list[torch.Tensor] = []
    aux: list[Any] = []
    for i, (micro, count) in enumerate(zip(window, counts)):
        last = i == len(window) - 1
        # A micro-batch with no label item carries no weight and is skipped, except the last one
        # under DDP: its backward is where the ranks all-reduce gradients, so every rank runs it.
        if plan.prenormalised or count > 0 or (last and plan.world_size > 1 and plan.total_items > 0):
            # Rank 0 (and a single process) keeps the (seed, step, i) stream; other ranks draw their own dropout.
            seed_streams(derive_seed(state.seed, state.progress.step, i, *((plan.rank,) if plan.rank else ())))
            loss, extra = _micro_step(state, model, micro, count, last, plan)
            losses.append(loss)
            aux.append(extra)
        if not last and hooks.on_micro_batch_end is not None:
            hooks.on_micro_batch_end(i)
    if not losses:
        return torch.tensor(float("nan"), device=plan.device), aux
    return (losses[0] if len(losses) == 1 else torch.stack(losses).sum()), aux


def _micro_step(state: TrainState, model: nn.Module, micro: Any, count: int, last: bool, plan: _Plan) -> tuple[torch.Tensor, Any]:
    """Forward and backward one micro-batch; return its (weighted, detached) loss and aux."""
    scaler = state.scaler
    # DDP and FSDP: only the last micro-batch of the window reduces gradients across processes.
    sync: contextlib.AbstractContextManager[Any] = _NO_CONTEXT
    if not last:
        inner = getattr(model, "_orig_mod", model)  # torch.compile(DDP or FSDP model)
        if hasattr(inner, "no_sync"):
            sync = inner.no_sync()
        elif is_sharded(inner):
            sync = _gradient_sync_off(inner)
    with sync:
        with _autocast(state, plan.device):
            loss, extra = _forward_loss(
                model,
                _to_device(micro, plan.device),
                loss_fn=plan.loss_fn,
                compute_loss_func=plan.compute_loss_func,
                label_names=plan.label_names,
                num_items=plan.num_items,
            )
        if count == 0 and not plan.prenormalised:
            # The mean over no item is NaN; its zero-weighted backward still yields zero gradients.
            loss = torch.nan_to_num(loss) * 0.0
        elif not plan.prenormalised and count != plan.total_items:  # a lone micro-batch keeps weight 1
            loss = loss * (count / plan.total_items)
        # DDP divides the summed gradients by the world size; the weights above are already global.
        scaled = loss * plan.world_size if plan.world_size > 1 else loss
        (scaler.scale(scaled) if scaler is not None else scaled).backward(create_graph=state.create_graph)
    return loss.detach(), extra


def _all_reduce_ints(values: tuple[int, ...], device: torch.device, group: Any) -> tuple[int, ...]:
    summed = torch.tensor(values, dtype=torch.int64, device=device)
    torch.distributed.all_reduce(summed, group=group)
    return tuple(summed.tolist())


def _update(
    state: TrainState,
    params: list[torch.Tensor],
    grad_norm: torch.Tensor,
    lrs: tuple[float, ...] | None,
    max_grad_norm: float | None,
    hooks: StepHooks,
) -> bool:
    """Clip, set the learning rates, step the optimizer; return True if the update was skipped."""
    optimizer, scaler, opaque = state.optimizer, state.scaler, state.lr_scheduler
    if max_grad_norm:
        torch.nn.utils.clip_grads_with_norm_(params, max_grad_norm, grad_norm)
    if lrs is not None:
        for group, lr in zip(optimizer.param_groups, lrs):
            group["lr"] = lr
    skipped = False
    if hooks.before_update is not None:
        hooks.before_update()
    if scaler is not None:
        scale = scaler.get_scale()
        scaler.step(optimizer)
        scaler.update()
        skipped = scaler.get_scale() < scale  # the scaler found an overflow and skipped
    else:
        optimizer.step()
    if hooks.after_update is not None:
        hooks.after_update()
    if opaque is not None and not skipped and not isinstance(opaque, torch.optim.lr_scheduler.ReduceLROnPlateau):
        opaque.step()
    return skipped


# ---------------------------------------------------------------------------------------------
# The step


def train_step(
    state: TrainState,
    batch: Any,
    *,
    max_grad_norm: float | None = None,
    loss_fn: LossFn | None = None,
    compute_loss_func: Callable[..., torch.Tensor] | None = None,
    label_names: Sequence[str] = ("labels",),
    shift_labels: bool | None = None,
    on_nonfinite: Literal["raise", "skip"] = "raise",
    hooks: StepHooks | None = None,
) -> tuple[TrainState, StepOutput]:
    """Apply one optimizer update and return the next state; ``state`` is consumed.

    Args:
        state: a live :class:`~trainkit.TrainState`. Its parameters and optimizer moments are
            updated in place and handed to the returned state (donation).
        batch: one batch (a mapping of tensors passed as ``model(**batch)``, or a tuple passed
            as ``model(*batch)``), or a window of k batches (a list/tuple of them) whose
            gradients are accumulated into this one update.
        max_grad_norm: clip the total gradient L2 norm to this value; ``None`` or ``0`` disables.
        loss_fn: ``(model, batch) -> loss`` or ``(loss, aux)``, replacing ``model(**batch).loss``;
            its loss must be the micro-batch's mean over its label items (or samples).
        compute_loss_func: transformers' hook ``(outputs, labels, num_items_in_batch) -> loss``:
            the labels are taken out of the batch, and the loss must be normalised by
            ``num_items_in_batch`` (the window's label items).
        label_names: the batch keys holding labels, first found wins.
        shift_labels: whether the loss predicts ``labels[..., 1:]`` (causal LM); ``None``
            detects it as transformers does.
        on_nonfinite: ``"raise"`` a :class:`~trainkit.NonFiniteError` on a NaN/inf loss or
            gradient norm, or ``"skip"`` the update (the ``skipped`` counter grows; ``step`` and
            the schedule do not advance). Either way parameters and optimizer state are untouched.
        hooks: :class:`StepHooks` to call inside the step (trainers use them for callbacks).

    Under DDP (``state.model`` is a ``DistributedDataParallel``, see
    :func:`~trainkit.distributed.wrap_model`) the step is exact across ranks: the label items
    are summed over every rank's window before the forward, each rank weights its micro-batches
    by their share of that global count, non-final micro-batches run under ``no_sync()``, and the
    reported loss is all-reduced. The result equals one process training on the union of the
    ranks' batches. Dropout is seeded per rank (rank 0 keeps the single-process stream).

    Returns:
        ``(new_state, output)``: the successor state and a :class:`StepOutput`.

    Raises:
        StaleStateError: if ``state`` was already consumed.
        NonFiniteError: on a non-finite loss or gradient with ``on_nonfinite="raise"`` (the
            state is then *not* consumed and the gradients are cleared).
        ConfigError: if the batch or the loss cannot be used (the message says which and why).

    Example:
        >>> import torch
        >>> from trainkit import init_state, train_step
        >>> model = torch.nn.Linear(3, 1)
        >>> opt = torch.optim.SGD(model.parameters(), lr=0.1)
        >>> state = init_state(model, opt, seed=0)
        >>> loss_fn = lambda m, b: torch.nn.functional.mse_loss(m(b[0]), b[1])
        >>> batch = (torch.ones(4, 3), torch.zeros(4, 1))
        >>> state, out = train_step(state, batch, loss_fn=loss_fn)
        >>> state.progress.step, out.num_samples, out.skipped
        (1, 4, False)
    """
    if on_nonfinite not in ("raise", "skip"):
        raise ConfigError(
            f"train_step(on_nonfinite=...): expected 'raise' or 'skip', got {on_nonfinite!r}."
        )
    model, optimizer, scaler = state.model, state.optimizer, state.scaler
    window = list(batch) if _is_window(batch) else [batch]
    step = state.progress.step
    accepts_num_items, auto_shift = _model_facts(model)
    shift = auto_shift if shift_labels is None else shift_labels

    # Items are counted on the host-side batch before it moves, so counting never waits on a device.
    # (One pass over the window: on a small model every call here costs a measurable share of a step.)
    counts, num_samples, has_labels = [], 0, False
    for b in window:
        labels = _labels_of(b, label_names)
        has_labels = has_labels or labels is not None
        samples = _num_samples(b)
        counts.append(_count_items(b, labels, shift, samples))
        num_samples += samples
    total_items = sum(counts)
    group = _ddp_group(model)
    world, rank = (torch.distributed.get_world_size(group), torch.distributed.get_rank(group)) if group is not None else (1, 0)
    # Either the loss is already normalised by the window's items (model or compute_loss_func
    # divides by num_items_in_batch), or we weight each micro-batch's mean by its share.
    prenormalised = compute_loss_func is not None or (loss_fn is None and has_labels and accepts_num_items)

    params = [p for g in optimizer.param_groups for p in g["params"]]
    device = params[0].device if params else torch.device("cpu")
    if world > 1:
        # Exact accumulation across ranks: weight by the items of the *global* window, as one
        # process seeing every rank's batches would.
        total_items, num_samples = _all_reduce_ints((total_items, num_samples), device, group)
    num_items = torch.tensor(total_items, device=device) if prenormalised else None
    if not model.training:
        model.train()
    try:
        with _PrivateStreams(device) as seed_streams:
            plan = _Plan(
                device=device, total_items=total_items, prenormalised=prenormalised, num_items=num_items,
                world_size=world, rank=rank,
                loss_fn=loss_fn, compute_loss_func=compute_loss_func, label_names=tuple(label_names),
            )
            window_loss, aux = _accumulate(state, model, window, counts, seed_streams, plan, hooks or _NO_HOOKS)
            if world > 1:  # each rank holds its share of the global loss; every rank gets the sum,
                # so all see the same loss and take the same raise/skip decision below.
                torch.distributed.all_reduce(window_loss, group=group)
            if scaler is not None:
                scaler.unscale_(optimizer)
            grads = [p.grad for p in params if p.grad is not None]
            grad_norm = torch.nn.utils.get_total_norm(grads) if grads else torch.zeros(())
            # Sharded (FSDP) gradients give a DTensor norm: clip with it, report its full value.
            norm = grad_norm.full_tensor() if hasattr(grad_norm, "full_tensor") else grad_norm
            # One host sync per step: the decision to update must be made before the update.
            # Under fp16 the grad scaler owns overflow handling (it skips the step itself).
            finite = scaler is not None or (math.isfinite(norm.item()) and math.isfinite(window_loss.item()))
            if not finite and on_nonfinite == "raise":
                raise NonFiniteError(
                    f"train_step: step {step} produced a non-finite loss ({float(window_loss)}) or "
                    f"gradient norm ({float(norm)})"
                    f"{'; the window had no label items' if total_items == 0 else ''}. Parameters and "
                    f"optimizer state are unchanged and the state was not consumed. Check the data and "
                    f"learning rate, or skip such updates: train_step(..., on_nonfinite='skip'), or "
                    f"TrainingArguments(on_nonfinite='skip') for the Trainer."
                )
            lrs = _lrs_for(state, step)
            # Read before the update: an opaque scheduler changes the groups' rates after it.
            used = lrs if lrs is not None else tuple(float(g["lr"]) for g in optimizer.param_groups)
            skipped = True
            if finite:
                # Some optimizers draw random numbers too (Adahessian's Hutchinson probes).
                seed_streams(derive_seed(state.seed, step, -1))
                skipped = _update(state, params, grad_norm, lrs, max_grad_norm, hooks or _NO_HOOKS)
    finally:
        optimizer.zero_grad(set_to_none=True)

    p = state.progress
    progress = Progress(
        step=p.step + (0 if skipped else 1),
        epoch=p.epoch,
        position=p.position + len(window),
        samples_seen=p.samples_seen + (0 if skipped else num_samples),
        items_seen=p.items_seen + (0 if skipped else total_items),
        skipped=p.skipped + (1 if skipped else 0),
    )
    output = StepOutput(
        loss=window_loss,
        grad_norm=norm.detach(),
        lr=used[0] if used else 0.0,
        lrs=used,
        num_items=total_items,
        num_samples=num_samples,
        skipped=skipped,
        aux=tuple(aux) if loss_fn is not None and any(a is not None for a in aux) else None,
    )
    return state._successor(progress), output


def eval_step(
    state: TrainState,
    batch: Any,
    *,
    loss_fn: LossFn | None = None,
    compute_loss_func: Callable[..., torch.Tensor] | None = None,
    label_names: Sequence[str] = ("labels",),
    ignore_keys: Sequence[str] = (),
) -> EvalOutput:
    """Evaluate one batch without gradients; the state is *not* consumed.

    The model runs in eval mode (dropout off); every submodule's train/eval flag is restored
    afterwards, and the global RNG is left exactly as it was.

    Args:
        state: a live :class:`~trainkit.TrainState`.
        batch: a mapping of tensors (``model(**batch)``) or a tuple (``model(*batch)``).
        loss_fn: ``(model, batch) -> loss`` or ``(loss, aux)``; with it, ``logits`` is the aux.
        compute_loss_func: transformers' ``(outputs, labels, num_items_in_batch) -> loss``.
        label_names: the batch keys holding labels.
        ignore_keys: output keys left out of ``logits`` (e.g. ``"past_key_values"``).

    Returns:
        An :class:`EvalOutput` of detached tensors.

    Raises:
        StaleStateError: if ``state`` was consumed by a step.

    Example:
        >>> import torch
        >>> from trainkit import init_state, eval_step
        >>> model = torch.nn.Linear(3, 2)
        >>> state = init_state(model, torch.optim.SGD(model.parameters(), lr=0.1))
        >>> out = eval_step(state, (torch.ones(4, 3),), loss_fn=lambda m, b: (m(b[0]).pow(2).mean(), m(b[0])))
        >>> tuple(out.logits.shape), model.training
        ((4, 2), True)
    """
    # Under DDP, evaluate the wrapped module: the wrapper's forward may broadcast buffers (a
    # collective), and processes evaluate different numbers of batches.
    model = _local_module(state.model)
    params = list(model.parameters())
    device = params[0].device if params else torch.device("cpu")
    modes = [(m, m.training) for m in model.modules()]
    labels = _all_labels(batch, label_names)
    model.eval()
    try:
        with torch.no_grad(), _PrivateStreams(device), _autocast(state, device):
            moved = _to_device(batch, device)
            if loss_fn is not None:
                result = loss_fn(model, moved)
                loss, logits = result if isinstance(result, tuple) else (result, None)
            else:
                inputs = dict(moved) if isinstance(moved, Mapping) else None
                if compute_loss_func is not None and inputs is not None:
                    for name in label_names:
                        inputs.pop(name, None)
                outputs = model(**inputs) if inputs is not None else model(*moved)
                loss = _eval_loss(outputs, labels, compute_loss_func, label_names, moved, model)
                logits = _logits_of(outputs, ignore_keys, has_loss=loss is not None)
    finally:
        for module, mode in modes:
            module.training = mode
    detach = lambda t: t.detach() if isinstance(t, torch.Tensor) else t  # noqa: E731
    return EvalOutput(
        loss=detach(loss),
        logits=tuple(detach(t) for t in logits) if isinstance(logits, tuple) else detach(logits),
        labels=tuple(detach(t) for t in labels) if isinstance(labels, tuple) else detach(labels),
    )


def _eval_loss(outputs: Any, labels: Any, compute_loss_func: Any, label_names: Sequence[str], batch: Any, model: nn.Module) -> Any:
    if compute_loss_func is not None:
        first = _labels_of(batch, label_names)
        count = None if first is None else torch.tensor(_count_items(batch, first, _model_facts(model)[1], _num_samples(batch)))
        return compute_loss_func(outputs, first, num_items_in_batch=count)
    if isinstance(outputs, Mapping):
        return outputs.get("loss")
    if isinstance(outputs, (list, tuple)) and labels is not None:
        return outputs[0]
    return None


def _all_labels(batch: Any, label_names: Sequence[str]) -> Any:
    """transformers' rule: labels only when every label name is present; a tuple for several."""
    if not isinstance(batch, Mapping) or not all(isinstance(batch.get(n), torch.Tensor) for n in label_names):
        return None
    found = tuple(batch[n] for n in label_names)
    return found[0] if len(found) == 1 else found


def _logits_of(outputs: Any, ignore_keys: Sequence[str], *, has_loss: bool) -> Any:
    if isinstance(outputs, Mapping):
        values = tuple(v for k, v in outputs.items() if k != "loss" and k not in ignore_keys)
    elif isinstance(outputs, (list, tuple)):
        values = tuple(outputs[1:] if has_loss else outputs)  # a tuple output leads with its loss
    else:
        values = (outputs,)
    return values[0] if len(values) == 1 else values
