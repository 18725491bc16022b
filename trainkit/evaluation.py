"""Evaluation over a whole set: :func:`evaluate` and :func:`predict` fold :func:`~trainkit.eval_step`.

Design::

    each batch:  eval_step ─► preprocess_logits_for_metrics ─► CPU numpy ─► append to lists ─► on_batch
    at the end:  pad to the longest sequence (-100, dim 1) and concatenate, once
                 ─► compute_metrics(EvalPrediction) ─► {prefix}_loss, prefixes, speed metrics

The state is only read, never consumed. Results follow ``transformers.Trainer`` 5.24
(``evaluation_loop``, ``prediction_step``, ``evaluate``, ``predict``): the same predictions,
label_ids, ``{prefix}_loss`` and metric keys; the tests compare them with a real Trainer.

Why gathering is linear: transformers' ``EvalLoopContainer`` concatenates each batch onto all
gathered so far (``nested_concat``), copying the set again at every batch: O(n²) in batches.
Here each batch's outputs become CPU numpy at once (a CPU tensor's ``.numpy()`` shares its
memory, so nothing is held twice) and are appended to lists; each output is padded and
concatenated once, into one preallocated array,
and each batch's array is released as soon as it is copied: the peak is the gathered set plus
one batch (transformers holds the set twice while it concatenates).

Where trainkit knowingly differs: the loss is the model's own mean per batch. transformers 5.24
divides a causal LM's summed loss by ``num_items_in_batch`` counted *unshifted* when the model
has no ``loss_type`` (``GPT2LMHeadModel``), so its ``eval_loss`` is too small. Each batch's loss
weighs its real size, as in transformers for sized datasets (it truncates the last batch's
repeated loss to the remainder); for unsized ones it weighs a short last batch as a full one.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

import attrs
import numpy as np
import torch

from trainkit._models import unwrap_model
from trainkit.distributed import _gather_objects, all_reduce_metrics, world_size
from trainkit.sharding import is_sharded
from trainkit.errors import ConfigError, closest_names
from trainkit.state import TrainState
from trainkit.step import EvalOutput, LossFn, _to_device, eval_step

__all__ = ["EvalResult", "evaluate", "predict"]

PADDING_INDEX = -100
_INCLUDE_OPTIONS = ("inputs", "loss")


@attrs.frozen
class EvalResult:
    """What :func:`evaluate` and :func:`predict` return (``transformers``' ``EvalLoopOutput``).

    Attributes:
        predictions: the gathered model outputs (numpy, or a tuple/dict of them for several
            outputs), padded with -100 on dim 1; None with ``prediction_loss_only`` or no outputs.
        label_ids: the gathered labels, padded likewise; None when batches have no labels.
        metrics: ``{prefix}_loss``, the prefixed ``compute_metrics`` values (numpy scalars made
            Python numbers), ``{prefix}_runtime``, ``{prefix}_samples_per_second`` and
            ``{prefix}_steps_per_second``.
        num_samples: the number of examples evaluated (the sum of the batch sizes).

    Example:
        >>> import torch
        >>> from trainkit import init_state
        >>> model = torch.nn.Linear(3, 2)
        >>> state = init_state(model, torch.optim.SGD(model.parameters(), lr=0.1))
        >>> batches = [(torch.ones(4, 3), torch.zeros(4, dtype=torch.long))] * 2
        >>> result = evaluate(state, batches, loss_fn=lambda m, b: (torch.nn.functional.cross_entropy(m(b[0]), b[1]), m(b[0])))
        >>> result.predictions.shape, result.num_samples, "eval_loss" in result.metrics
        ((8, 2), 8, True)
    """

    predictions: Any
    label_ids: Any
    metrics: dict[str, float]
    num_samples: int


def evaluate(
    state: TrainState,
    batches: Iterable[Any],
    *,
    compute_metrics: Callable[[Any], Mapping[str, Any]] | None = None,
    preprocess_logits_for_metrics: Callable[[Any, Any], Any] | None = None,
    prediction_loss_only: bool = False,
    include_for_metrics: Sequence[str] = (),
    ignore_keys: Sequence[str] | None = None,
    label_names: Sequence[str] = ("labels",),
    metric_key_prefix: str = "eval",
    loss_fn: LossFn | None = None,
    compute_loss_func: Callable[..., torch.Tensor] | None = None,
    on_batch: Callable[[int, EvalOutput], None] | None = None,
    concat_batches: bool = True,
    logging_nan_inf_filter: bool = True,
    gather: bool | None = None,
) -> EvalResult:
    """Evaluate ``state``'s model on every batch and compute metrics on the whole set.

    ``transformers.Trainer.evaluate`` gathers predictions only with a ``compute_metrics``: its
    port passes ``prediction_loss_only=compute_metrics is None or args.prediction_loss_only``.

    Args:
        state: a live :class:`~trainkit.TrainState`; it is read, not consumed.
        batches: an iterable of batches (mappings of tensors, or tuples), e.g. a DataLoader.
        compute_metrics: ``(transformers.EvalPrediction) -> dict``, called once on the whole
            set when there are predictions and labels.
        preprocess_logits_for_metrics: ``(logits, labels) -> logits`` on each batch before it
            is gathered (e.g. an argmax, to keep memory small).
        prediction_loss_only: only compute the loss; gather no predictions or labels.
        include_for_metrics: ``"inputs"`` and/or ``"loss"``: also give ``compute_metrics`` the
            model's main input (``inputs=``) and the per-sample losses (``losses=``).
        ignore_keys: output keys left out of the predictions. None: transformers' default, the
            config's ``keys_to_ignore_at_inference``, else ``["cache"]`` (nothing without config).
        label_names: the batch keys holding labels; a batch has labels when it has all of them.
        metric_key_prefix: prefix of every metric key (``"eval"`` gives ``eval_loss``).
        loss_fn: ``(model, batch) -> loss`` or ``(loss, aux)``; the aux are the predictions.
        compute_loss_func: transformers' ``(outputs, labels, num_items_in_batch) -> loss``.
        on_batch: called after each batch with its index and :class:`~trainkit.EvalOutput`.
        concat_batches: False keeps per-batch lists (``eval_do_concat_batches=False``).
        logging_nan_inf_filter: leave NaN/inf batch losses out of ``{prefix}_loss``.
        gather: combine the results of every process (``torch.distributed``) before computing
            metrics; None: when there are several processes. Each process must pass its share of
            the batches as :func:`~trainkit.data.eval_batches` deals them (process r: batches r,
            r + W, ...); the results are put back in dataset order, every process gets the same
            predictions, labels and metrics, and ``compute_metrics`` sees the whole set.

    Returns:
        An :class:`EvalResult`.

    Raises:
        ConfigError: an invalid option, no batch, outputs that cannot be gathered, or a failing
            ``compute_metrics`` (the shapes it got are named).
        StaleStateError: if ``state`` was consumed by a step.

    Example:
        >>> import torch
        >>> from trainkit import init_state
        >>> model = torch.nn.Linear(3, 2)
        >>> state = init_state(model, torch.optim.SGD(model.parameters(), lr=0.1))
        >>> loss_fn = lambda m, b: (m(b[0]).pow(2).mean(), m(b[0]))
        >>> result = evaluate(state, [(torch.ones(4, 3),), (torch.ones(2, 3),)], loss_fn=loss_fn)
        >>> result.predictions.shape, result.num_samples, sorted(result.metrics)[:1]
        ((6, 2), 6, ['eval_loss'])
    """
    include = _check_options(batches, include_for_metrics, metric_key_prefix, compute_metrics, preprocess_logits_for_metrics, on_batch)
    start = time.perf_counter()
    model = unwrap_model(state.model)
    if ignore_keys is None:
        ignore_keys = default_ignore_keys(model)
    main_input = getattr(model, "main_input_name", "input_ids")
    device = next((p.device for p in model.parameters()), torch.device("cpu"))
    # Per batch: (batch size, loss, predictions, labels, inputs), each part CPU numpy or None;
    # the parts are concatenated once at the end.
    records: list[tuple[int, Any, Any, Any, Any]] = []
    num_samples = num_batches = 0
    if gather is None:
        gather = world_size() > 1
    # Without gathering, batches are merged into ~64 MiB chunks as they come (see _merge_records): the
    # small per-batch arrays then reuse the same heap space, and the result never coexists with them.
    merge, first_unmerged, unmerged_bytes = concat_batches and not gather, 0, 0
    lockstep = gather and is_sharded(model)  # a sharded forward is a collective: every process runs as many
    for index, (batch, real) in enumerate(_in_lockstep(batches) if lockstep else ((b, True) for b in batches)):
        if not real:  # this process is out of batches: repeat its last one with the others, output discarded
            eval_step(state, batch, loss_fn=loss_fn, compute_loss_func=compute_loss_func, label_names=label_names)
            continue
        size = _batch_size(batch)
        if size is None:
            raise ConfigError(
                f"evaluate: batch {index} holds no tensor with a batch dimension (got a {type(batch).__name__}). "
                f"Pass collated batches (e.g. a DataLoader with a data collator), not a dataset's rows."
            )
        out = eval_step(state, batch, loss_fn=loss_fn, compute_loss_func=compute_loss_func, label_names=label_names, ignore_keys=tuple(ignore_keys))
        num_samples, num_batches = num_samples + size, num_batches + 1
        labels = out.labels  # eval_step applies transformers' rule: every label name present, a tuple for several
        # transformers keeps a loss only for batches with labels (or with no label names at all).
        loss = pred = label = inputs = None
        if out.loss is not None and (loss_fn is not None or labels is not None or not label_names):
            loss = np.repeat(np.atleast_1d(_numpify(out.loss, "the loss")), size)  # transformers' loss.repeat(batch_size)
        if not prediction_loss_only:
            if out.logits is not None:
                logits = out.logits
                if preprocess_logits_for_metrics is not None:
                    logits = preprocess_logits_for_metrics(logits, _to_device(labels, device))
                pred = _numpify(logits, "predictions")
                del logits
            if labels is not None:
                label = _numpify(labels, "label_ids")
            if "inputs" in include:
                inputs = _numpify(_main_input(batch, main_input), "inputs")
        records.append((size, loss, pred, label, inputs))
        if merge:
            unmerged_bytes += sum(_nbytes(part) for part in (pred, label, inputs))
            if unmerged_bytes >= _MERGE_BYTES:
                _merge_records(records, first_unmerged)
                first_unmerged, unmerged_bytes = len(records), 0
        if on_batch is not None:
            on_batch(index, out)
        del out, labels  # free this batch's device tensors before the next forward
    if gather:
        records, num_samples, num_batches = _gather_records(records)
    if num_batches == 0:
        raise ConfigError(
            "evaluate: `batches` yielded no batch; expected at least one. Check that the dataset is "
            "not empty and that the DataLoader does not drop its only (incomplete) batch."
        )
    per_sample, preds, labels_parts, inputs_parts = ([r[i] for r in records if r[i] is not None] for i in (1, 2, 3, 4))
    del records
    join = _concat if concat_batches else (lambda parts, where: list(parts))
    predictions = join(preds, "predictions") if preds else None
    label_ids = join(labels_parts, "label_ids") if labels_parts else None
    del preds, labels_parts  # the per-batch arrays; only the concatenated ones are kept
    all_losses = np.concatenate(per_sample) if per_sample else None

    metrics: dict[str, Any] = {}
    if compute_metrics is not None and predictions is not None and label_ids is not None:
        extra = {
            "inputs": join(inputs_parts, "inputs") if "inputs" in include and inputs_parts else None,
            "losses": (all_losses if concat_batches else per_sample) if "loss" in include and per_sample else None,
        }
        metrics = _call_metrics(compute_metrics, predictions, label_ids, extra)
    metrics = _denumpify(metrics)
    if all_losses is not None:
        finite = np.isfinite(all_losses)
        kept = all_losses[finite] if logging_nan_inf_filter and finite.any() else all_losses
        metrics[f"{metric_key_prefix}_loss"] = kept.mean().item()
    for key in list(metrics):  # transformers' order: renamed keys move to the end
        if not key.startswith(f"{metric_key_prefix}_"):
            metrics[f"{metric_key_prefix}_{key}"] = metrics.pop(key)
    metrics.update(speed_metrics(metric_key_prefix, time.perf_counter() - start, num_samples, num_batches))
    return EvalResult(predictions=predictions, label_ids=label_ids, metrics=metrics, num_samples=num_samples)


_END = object()


def _in_lockstep(batches: Iterable[Any]) -> Any:
    """Under FSDP: ``(batch, True)`` for each of this process's batches, then ``(last batch, False)`` until
    every process is out of batches. One small all-reduce per batch decides, before each forward, whether
    any process still has one (so the forwards' collectives always pair up)."""
    iterator, last, first = iter(batches), None, True
    while True:
        batch = next(iterator, _END)
        has = float(batch is not _END)
        flags = all_reduce_metrics({"any": has, "not_all": -has}, op="max")
        if first and flags["not_all"] == 0.0:  # some process has no batch at all: every process raises
            raise ConfigError("evaluate: under FSDP every process needs at least one batch, but one got none. "
                              "Fix: lower the evaluation batch size, or evaluate more rows than processes.")
        first = False
        if flags["any"] == 0.0:
            return
        if batch is not _END:
            last = batch
            yield batch, True
        else:
            yield last, False


def _gather_records(records: list[Any]) -> tuple[list[Any], int, int]:
    """Every process's per-batch records, back in dataset order: process r held batches r, r + W, ..."""
    shares = _gather_objects(records)
    ordered = [share[j] for j in range(max(map(len, shares))) for share in shares if j < len(share)]
    return ordered, sum(r[0] for r in ordered), len(ordered)


def predict(state: TrainState, batches: Iterable[Any], *, metric_key_prefix: str = "test", **options: Any) -> EvalResult:
    """:func:`evaluate` with transformers' ``predict`` prefix, ``"test"``; ``options`` are evaluate's.

    Example:
        >>> import torch
        >>> from trainkit import init_state
        >>> model = torch.nn.Linear(3, 2)
        >>> state = init_state(model, torch.optim.SGD(model.parameters(), lr=0.1))
        >>> loss_fn = lambda m, b: (m(b[0]).sum(), m(b[0]))
        >>> "test_loss" in predict(state, [(torch.ones(4, 3),)], loss_fn=loss_fn).metrics
        True
    """
    return evaluate(state, batches, metric_key_prefix=metric_key_prefix, **options)


def _check_options(batches: Any, include: Sequence[str], prefix: Any, *hooks: Any) -> frozenset[str]:
    if isinstance(batches, (Mapping, torch.Tensor)) or not isinstance(batches, Iterable):
        raise ConfigError(
            f"evaluate: `batches` must be an iterable of batches (a list, a DataLoader); got a "
            f"{type(batches).__name__}. Wrap a single batch in a list: `evaluate(state, [batch])`."
        )
    if not isinstance(prefix, str):
        raise ConfigError(f"evaluate: `metric_key_prefix` must be a str such as 'eval'; got {prefix!r}.")
    if isinstance(include, str):
        include = (include,)
    for value in include:
        if value not in _INCLUDE_OPTIONS:
            hint = closest_names(str(value), _INCLUDE_OPTIONS)
            raise ConfigError(
                f"evaluate: `include_for_metrics` may hold {list(_INCLUDE_OPTIONS)}; got {value!r}."
                f"{f' Did you mean {hint[0]!r}?' if hint else ''}"
            )
    for name, hook in zip(("compute_metrics", "preprocess_logits_for_metrics", "on_batch"), hooks):
        if hook is not None and not callable(hook):
            raise ConfigError(f"evaluate: `{name}` must be callable or None; got {type(hook).__name__}.")
    return frozenset(include)


def _batch_size(batch: Any) -> int | None:
    """transformers' ``find_batch_size``: dim 0 of the first tensor with a dimension."""
    if isinstance(batch, (list, tuple)):
        return next((n for n in map(_batch_size, batch) if n is not None), None)
    if isinstance(batch, Mapping):
        return next((n for n in map(_batch_size, batch.values()) if n is not None), None)
    if isinstance(batch, (torch.Tensor, np.ndarray)) and batch.ndim >= 1:
        return int(batch.shape[0])
    return None


def _main_input(batch: Any, name: str) -> Any:
    if isinstance(batch, Mapping) and name in batch:
        return batch[name]
    given = sorted(batch) if isinstance(batch, Mapping) else type(batch).__name__
    raise ConfigError(
        f"evaluate: include_for_metrics=['inputs'] gathers the model's main input {name!r} "
        f"(its `main_input_name`), but the batch has {given}. Add that column, or drop 'inputs'."
    )


def _numpify(value: Any, where: str) -> Any:
    """Detached CPU numpy of a (nested) tensor output; bfloat16 becomes float32, as in transformers."""
    if isinstance(value, torch.Tensor):
        t = value.detach()
        t = (t.float() if t.dtype == torch.bfloat16 else t).cpu()
        if t.untyped_storage().nbytes() > t.numel() * t.element_size():
            t = t.clone()  # a view would keep its whole buffer alive: keep only what is gathered
        return t.numpy()
    if isinstance(value, np.ndarray):
        return value
    if isinstance(value, (list, tuple)):
        return type(value)(_numpify(v, f"{where}[{i}]") for i, v in enumerate(value))
    if isinstance(value, Mapping):
        return type(value)({k: _numpify(v, f"{where}[{k!r}]") for k, v in value.items()})
    raise ConfigError(
        f"evaluate: cannot gather {where}: expected tensors (or tuples/dicts of them); got a "
        f"{type(value).__name__}. Leave that model output out with `ignore_keys` (e.g. ['cache'] "
        f"for a key/value cache), or return tensors from preprocess_logits_for_metrics."
    )


_MERGE_BYTES = 64 << 20
_GATHERED = ("predictions", "label_ids", "inputs")


def _nbytes(value: Any) -> int:
    if isinstance(value, np.ndarray):
        return value.nbytes
    if isinstance(value, Mapping):
        return sum(map(_nbytes, value.values()))
    return sum(map(_nbytes, value)) if isinstance(value, (list, tuple)) else 0


def _merge_records(records: list[Any], start: int) -> None:
    """Replace ``records[start:]`` by one record holding their concatenated parts, in place.

    Why: glibc serves the ~MB per-batch arrays from its heap and keeps freed heap memory, while a
    merged chunk (over its 32 MB mmap threshold) is its own mapping, returned to the system when
    freed. Merging every ~64 MiB lets the next batches reuse the same heap space, and the final
    concatenation frees each chunk as soon as it is copied, so the peak is the result plus one
    chunk rather than the result plus every batch (measured: 2000 batches of 2 MB, see
    benchmarks/README.md). Padding a chunk's dim 1 with -100 and padding again at the end equals
    padding once.
    """
    tail = records[start:]
    del records[start:]
    size = sum(r[0] for r in tail)
    columns = [[r[i] for r in tail if r[i] is not None] for i in range(1, 5)]
    del tail  # the columns now hold the only references, which _concat lets go as it copies
    losses = np.concatenate(columns[0]) if columns[0] else None
    parts = [_concat(column, where) if column else None for column, where in zip(columns[1:], _GATHERED)]
    records.append((size, losses, *parts))


def _concat(parts: list[Any], where: str) -> Any:
    """Concatenate per-batch (nested) arrays on dim 0, padding dim 1 with -100 to the longest."""
    first = parts[0]
    if isinstance(first, (list, tuple, Mapping)):
        layout = lambda p: (type(p), list(p) if isinstance(p, Mapping) else len(p))  # noqa: E731
        bad = next((p for p in parts if layout(p) != layout(first)), None)
        if bad is not None:
            raise ConfigError(
                f"evaluate: cannot gather {where}: batches return different structures ({_describe(first)} "
                f"then {_describe(bad)}); every batch must return the same outputs."
            )
        keys = list(first) if isinstance(first, Mapping) else range(len(first))
        joined = [_concat([p[k] for p in parts], f"{where}[{k!r}]") for k in keys]
        return type(first)(zip(keys, joined)) if isinstance(first, Mapping) else type(first)(joined)
    arrays = parts  # consumed: each batch is released once copied (the caller holds no other reference)
    for i, part in enumerate(arrays):
        arrays[i] = np.atleast_1d(part)
    shape = arrays[0].shape
    ragged = any(a.shape[1:] != shape[1:] for a in arrays)
    if ragged and any(a.ndim < 2 or a.ndim != len(shape) or a.shape[2:] != shape[2:] for a in arrays):
        shapes = list(dict.fromkeys(a.shape for a in arrays))
        raise ConfigError(
            f"evaluate: cannot gather {where}: batches have shapes {shapes[:4]}{' ...' if len(shapes) > 4 else ''}; "
            f"only dim 1 (the sequence) may differ, and is padded with -100. Pad the other dims in the "
            f"collator, or reduce the output in preprocess_logits_for_metrics."
        )
    rows, dtype = sum(len(a) for a in arrays), functools.reduce(np.promote_types, (a.dtype for a in arrays))
    width = max(a.shape[1] for a in arrays) if ragged else None
    # np.empty maps pages lazily: the result grows in memory only as each part is copied in (and
    # padded), while the parts are let go one by one, so the two never coexist in full.
    out = np.empty((rows, width, *shape[2:]) if ragged else (rows, *shape[1:]), dtype=dtype)
    row = 0
    for i, a in enumerate(arrays):
        if ragged:
            out[row : row + len(a), : a.shape[1]] = a
            out[row : row + len(a), a.shape[1] :] = PADDING_INDEX
        else:
            out[row : row + len(a)] = a
        row += len(a)
        arrays[i] = None
    return out


def _describe(value: Any) -> str:
    """A short picture of a nested output: its shapes, in its structure."""
    if isinstance(value, Mapping):
        return "{" + ", ".join(f"{k!r}: {_describe(v)}" for k, v in value.items()) + "}"
    if isinstance(value, (list, tuple)):
        return "(" + ", ".join(_describe(v) for v in value) + ("," if len(value) == 1 else "") + ")"
    return str(tuple(np.shape(value)))


def _call_metrics(compute_metrics: Callable[[Any], Any], predictions: Any, label_ids: Any, extra: dict[str, Any]) -> dict[str, Any]:
    from transformers import EvalPrediction  # only here: `import trainkit` stays light

    try:
        metrics = compute_metrics(EvalPrediction(predictions=predictions, label_ids=label_ids, **extra))
    except Exception as error:
        raise ConfigError(
            f"evaluate: compute_metrics raised {type(error).__name__}: {error}. It received predictions "
            f"of shape {_describe(predictions)} and label_ids of shape {_describe(label_ids)} (sequences "
            f"padded with -100 on dim 1). Check that it handles these shapes; a tuple means the model "
            f"returned several outputs (use ignore_keys, or preprocess_logits_for_metrics to keep one)."
        ) from error
    if not isinstance(metrics, Mapping):
        raise ConfigError(f"evaluate: compute_metrics must return a dict of metrics; got {type(metrics).__name__}.")
    return dict(metrics)


def _denumpify(value: Any) -> Any:
    """transformers' ``denumpify_detensorize``: numpy scalars and 1-element tensors become Python."""
    if isinstance(value, (list, tuple)):
        return type(value)(_denumpify(v) for v in value)
    if isinstance(value, dict):
        return type(value)({k: _denumpify(v) for k, v in value.items()})
    if isinstance(value, np.generic) or (isinstance(value, torch.Tensor) and value.numel() == 1):
        return value.item()
    return value


def default_ignore_keys(model: Any) -> list[str]:
    """transformers' default ``ignore_keys`` (from ``prediction_step``): the config's
    ``keys_to_ignore_at_inference``, else ``["cache"]``; nothing for a model without a config.

    Example:
        >>> import torch
        >>> default_ignore_keys(torch.nn.Linear(2, 2))
        []
    """
    config = getattr(unwrap_model(model), "config", None)
    return [] if config is None else list(getattr(config, "keys_to_ignore_at_inference", ["cache"]))


def speed_metrics(prefix: str, runtime: float, num_samples: int, num_steps: int) -> dict[str, float]:
    """transformers' ``speed_metrics``, with the same rounding."""
    result = {f"{prefix}_runtime": round(runtime, 4)}
    if runtime > 0:
        result[f"{prefix}_samples_per_second"] = round(num_samples / runtime, 3)
        result[f"{prefix}_steps_per_second"] = round(num_steps / runtime, 3)
    return result
