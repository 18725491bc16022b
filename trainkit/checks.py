"""Checks made before the first step: what a Trainer is given, and why a first batch fails.

A run should not crash an hour in, deep inside torch, with a message about tensor shapes. So
the :class:`~trainkit.Trainer` checks its inputs when it is built (types, the output folder) and
when training starts (the datasets), and a failure of the first batch (a dry run with
:meth:`Trainer.check`, or the first step of ``train()``, which updates nothing when it fails)
is explained in terms of the batch's columns and the model's ``forward``: a ``label`` column the
model does not take, a base model without a head, a loss the outputs lack.

Every function here raises a :class:`~trainkit.ConfigError` (:class:`~trainkit.ConfigTypeError`
for a wrong type) whose message names the argument, the value received, what was expected and
the fix; ``docs/errors.md`` lists them.
"""

from __future__ import annotations

import inspect
import os
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from trainkit._models import is_pretrained, model_class, unwrap_model
from trainkit.errors import ConfigError, ConfigTypeError, TrainkitError, _MissingLossError

__all__ = ["check_trainer_inputs", "check_output_dir", "check_train_dataset", "describe_batch", "explain_batch_failure",
           "dry_run"]


def _shown(value: Any) -> str:
    """A value for a message: strings and None as written, numbers with their type, anything else by type."""
    if isinstance(value, (str, type(None))):
        text = repr(value)
    elif isinstance(value, (int, float)):
        text = f"{value!r} ({type(value).__name__})"
    else:
        text = type(value).__name__
    return text if len(text) <= 80 else text[:77] + "..."


def _callable(name: str, value: Any, fix: str) -> None:
    if value is not None and not callable(value):
        raise ConfigTypeError(f"Trainer({name}=...): expected a callable or None, got {_shown(value)}. Fix: {fix}")


def _dataset(name: str, value: Any) -> None:
    if value is None:
        return
    if isinstance(value, Mapping):  # a DatasetDict, or a dict of evaluation sets
        if name == "eval_dataset" and value:  # transformers evaluates each (metrics eval_<name>_*)
            for key, each in value.items():
                _dataset(f"eval_dataset[{key!r}]", each)
            return
        raise ConfigTypeError(
            f"Trainer({name}=...): expected one dataset, got a {type(value).__name__} of splits {list(value)}. Fix: pass "
            f"one split, e.g. {name}=dataset[{next(iter(value), 'train')!r}]."
        )
    if isinstance(value, (str, bytes, os.PathLike)):
        raise ConfigTypeError(
            f"Trainer({name}=...): expected a dataset (a datasets.Dataset, a torch Dataset or a list of rows), got "
            f"the path or name {_shown(value)}. Fix: load it first, e.g. datasets.load_dataset('csv', data_files=...)"
            f"['train'] or datasets.load_from_disk(...)."
        )
    sized = hasattr(value, "__getitem__") and hasattr(value, "__len__")
    if not sized and not isinstance(value, Iterable):
        raise ConfigTypeError(
            f"Trainer({name}=...): expected a dataset (a datasets.Dataset, a torch Dataset, an IterableDataset or a "
            f"list of rows), got {_shown(value)}. Fix: pass the rows, e.g. datasets.Dataset.from_list(rows)."
        )


def check_trainer_inputs(
    *,
    model: Any,
    model_init: Any,
    data_collator: Any,
    train_dataset: Any,
    eval_dataset: Any,
    processing_class: Any = None,
    compute_loss_func: Any,
    compute_metrics: Any,
    callbacks: Any,
    optimizers: Any,
    optimizer_cls_and_kwargs: Any,
    preprocess_logits_for_metrics: Any,
) -> None:
    """Check the types of what ``Trainer.__init__`` was given (``args`` is checked on conversion).

    Each keyword is the ``Trainer`` parameter of the same name, as given.

    Raises:
        ConfigTypeError: the first argument of the wrong type, with its value and the fix.
        ConfigError: both or neither of ``model`` and ``model_init``; ``optimizers`` with
            ``optimizer_cls_and_kwargs`` or with ``model_init``.

    Example:
        >>> check_trainer_inputs(model="bert-base-uncased", model_init=None, data_collator=None, train_dataset=None,
        ...                      eval_dataset=None, compute_loss_func=None, compute_metrics=None, callbacks=None,
        ...                      optimizers=(None, None), optimizer_cls_and_kwargs=None, preprocess_logits_for_metrics=None)
        Traceback (most recent call last):
        ...
        trainkit.errors.ConfigTypeError: Trainer(model=...): expected a torch nn.Module (e.g. a transformers model), got 'bert-base-uncased'. Fix: load it first: model = AutoModelForSequenceClassification.from_pretrained('bert-base-uncased') (or the AutoModelFor... class of your task).
    """
    if model is not None and not isinstance(model, nn.Module):
        fix = (f"load it first: model = AutoModelForSequenceClassification.from_pretrained({model!r}) (or the "
               "AutoModelFor... class of your task)." if isinstance(model, str) else "pass an nn.Module.")
        raise ConfigTypeError(f"Trainer(model=...): expected a torch nn.Module (e.g. a transformers model), got {_shown(model)}. Fix: {fix}")
    if (model_init is not None and not callable(model_init)) or isinstance(model_init, nn.Module):
        raise ConfigTypeError(
            f"Trainer(model_init=...): expected a callable that builds a model (taking no argument, or the trial), got "
            f"{_shown(model_init)}. Fix: pass the model itself as model=, or model_init=lambda: build_model()."
        )
    if (model is None) == (model_init is None):
        which = "both were given" if model is not None else "neither was given"
        raise ConfigError(f"Trainer: pass exactly one of `model` or `model_init`; {which}. Fix: model=<an nn.Module> "
                          "for one run, or model_init=<a function building one> for hyperparameter search.")
    if isinstance(processing_class, (str, os.PathLike)):
        raise ConfigTypeError(
            f"Trainer(processing_class=...): expected a tokenizer, processor or feature extractor, got the name "
            f"{_shown(processing_class)}. Fix: load it first: AutoTokenizer.from_pretrained({str(processing_class)!r})."
        )
    _dataset("train_dataset", train_dataset)
    _dataset("eval_dataset", eval_dataset)
    _callable("data_collator", data_collator, "pass a function rows -> batch, e.g. DataCollatorWithPadding(tokenizer), "
              "or leave it None for the default.")
    _callable("compute_loss_func", compute_loss_func, "pass a function (outputs, labels, num_items_in_batch) -> loss.")
    _callable("compute_metrics", compute_metrics, "pass a function EvalPrediction -> dict, e.g. "
              "lambda p: metric.compute(predictions=p.predictions.argmax(-1), references=p.label_ids) "
              "with metric = evaluate.load('accuracy').")
    _callable("preprocess_logits_for_metrics", preprocess_logits_for_metrics,
              "pass a function (logits, labels) -> logits, e.g. lambda logits, labels: logits.argmax(-1).")
    _check_callbacks(callbacks)
    _check_optimizers(optimizers, optimizer_cls_and_kwargs, model_init)


def _check_callbacks(callbacks: Any) -> None:
    from transformers import TrainerCallback

    if callbacks is None:
        return
    if not isinstance(callbacks, (list, tuple)):
        raise ConfigTypeError(f"Trainer(callbacks=...): expected a list of TrainerCallback instances or classes, got "
                              f"{_shown(callbacks)}. Fix: wrap it in a list: callbacks=[...].")
    for callback in callbacks:
        if not (isinstance(callback, TrainerCallback) or isinstance(callback, type) and issubclass(callback, TrainerCallback)):
            raise ConfigTypeError(
                f"Trainer(callbacks=...): expected TrainerCallback instances or classes, got {_shown(callback)}. Fix: pass "
                f"e.g. callbacks=[EarlyStoppingCallback(early_stopping_patience=3)] (from transformers)."
            )


def _check_optimizers(optimizers: Any, cls_and_kwargs: Any, model_init: Any) -> None:
    if not (isinstance(optimizers, (tuple, list)) and len(optimizers) == 2):
        raise ConfigTypeError(
            f"Trainer(optimizers=...): expected a pair (optimizer, scheduler), either of them None, got "
            f"{_shown(optimizers)}. Fix: pass optimizers=(optimizer, None) to keep the default schedule."
        )
    optimizer, scheduler = optimizers
    if optimizer is not None and not isinstance(optimizer, torch.optim.Optimizer):
        raise ConfigTypeError(f"Trainer(optimizers=...): the first item must be a torch.optim.Optimizer or None, got "
                              f"{_shown(optimizer)}. Fix: pass (optimizer, scheduler).")
    if scheduler is not None and not hasattr(scheduler, "step"):
        raise ConfigTypeError(f"Trainer(optimizers=...): the second item must be a learning-rate scheduler (with "
                              f"step()) or None, got {_shown(scheduler)}. Fix: pass (optimizer, scheduler).")
    if cls_and_kwargs is not None:
        if not (isinstance(cls_and_kwargs, (tuple, list)) and len(cls_and_kwargs) == 2 and callable(cls_and_kwargs[0])
                and isinstance(cls_and_kwargs[1], Mapping)):
            raise ConfigTypeError(
                f"Trainer(optimizer_cls_and_kwargs=...): expected a pair (cls, kwargs) such as (torch.optim.SGD, "
                f"{{'momentum': 0.9}}), got {_shown(cls_and_kwargs)}. Fix: pass the class and a dict of its options."
            )
        if optimizers != (None, None) and tuple(optimizers) != (None, None):
            raise ConfigError("Trainer: pass either `optimizers=(optimizer, scheduler)` or `optimizer_cls_and_kwargs`, "
                              "not both. Fix: keep the one that builds the optimizer you want.")
    if model_init is not None and optimizer is not None:
        raise ConfigError(
            "Trainer: `optimizers` holds an optimizer over one model's parameters, but `model_init` builds a new "
            "model for each train(). Fix: use `optimizer_cls_and_kwargs=(cls, kwargs)` with `model_init`."
        )


def check_output_dir(output_dir: Any) -> None:
    """Check that ``output_dir`` can hold checkpoints, without creating anything.

    Raises:
        ConfigError: the path is a file, or the nearest existing folder on it is not writable.

    Example:
        >>> check_output_dir("/proc/version")
        Traceback (most recent call last):
        ...
        trainkit.errors.ConfigError: TrainingArguments(output_dir='/proc/version'): the path is a file; expected a directory to write checkpoints into. Fix: pass another output_dir, or move the file.
    """
    if output_dir is None:
        return
    path = Path(output_dir)
    if path.exists() and not path.is_dir():
        raise ConfigError(f"TrainingArguments(output_dir={str(output_dir)!r}): the path is a file; expected a directory to "
                          "write checkpoints into. Fix: pass another output_dir, or move the file.")
    existing = next((p for p in (path, *path.parents) if p.exists()), None)
    if existing is not None and not existing.is_dir():
        raise ConfigError(f"TrainingArguments(output_dir={str(output_dir)!r}): {str(existing)!r} is a file, so the folder "
                          "cannot be created. Fix: pass an output_dir under a directory.")
    if existing is not None and not os.access(existing, os.W_OK | os.X_OK):
        raise ConfigError(f"TrainingArguments(output_dir={str(output_dir)!r}): {str(existing)!r} is not writable by this "
                          "user, so no checkpoint could be saved. Fix: pass an output_dir you can write to, or change its permissions.")


def check_train_dataset(dataset: Any, *, batch_size: int, world_size: int, drop_last: bool) -> None:
    """Check that a sized training dataset gives at least one batch.

    Raises:
        ConfigError: the dataset is empty, or smaller than one batch with ``dataloader_drop_last``.

    Example:
        >>> check_train_dataset([], batch_size=8, world_size=1, drop_last=False)
        Traceback (most recent call last):
        ...
        trainkit.errors.ConfigError: Trainer(train_dataset=...): the dataset is empty (0 rows); training needs at least one. Fix: check the split and any filter() applied to it.
    """
    rows = len(dataset)
    if rows == 0:
        raise ConfigError("Trainer(train_dataset=...): the dataset is empty (0 rows); training needs at least one. "
                          "Fix: check the split and any filter() applied to it.")
    needed = batch_size * world_size
    if drop_last and rows < needed:
        per = f" x {world_size} processes" if world_size > 1 else ""
        raise ConfigError(
            f"TrainingArguments(per_device_train_batch_size={batch_size}){per} with dataloader_drop_last=True: the "
            f"train_dataset has {rows} rows, fewer than one batch of {needed}, so every batch would be dropped. Fix: "
            f"lower per_device_train_batch_size to at most {max(rows // world_size, 1)}, or set dataloader_drop_last=False."
        )


def describe_batch(batch: Any) -> str:
    """A one-line picture of a batch: each column's shape and dtype.

    Example:
        >>> describe_batch({"input_ids": torch.zeros(4, 6, dtype=torch.long), "labels": torch.zeros(4)})
        "{'input_ids': (4, 6) int64, 'labels': (4,) float32}"
    """
    def one(value: Any) -> str:
        if isinstance(value, torch.Tensor):
            return f"{tuple(value.shape)} {str(value.dtype).removeprefix('torch.')}"
        if isinstance(value, (list, tuple)):
            return f"{type(value).__name__} of {len(value)}"
        return type(value).__name__

    if isinstance(batch, Mapping):
        return "{" + ", ".join(f"{k!r}: {one(v)}" for k, v in batch.items()) + "}"
    if isinstance(batch, (list, tuple)):
        return "(" + ", ".join(one(v) for v in batch) + ")"
    return one(batch)


def _forward_names(model: nn.Module) -> list[str]:
    try:
        return list(inspect.signature(unwrap_model(model).forward).parameters)
    except (TypeError, ValueError):
        return []


def _missing_loss_hint(model: nn.Module, batch: Any, label_names: Iterable[str]) -> str | None:
    """Why the outputs hold no loss, when it can be told from the batch and the model."""
    from trainkit.columns import check_batch

    inner, names = unwrap_model(model), _forward_names(model)
    keys = list(batch) if isinstance(batch, Mapping) else []
    wanted = [n for n in label_names if n not in keys]
    try:  # a "label" column the collator did not rename: the columns module's own check names it
        check_batch(batch, model, label_names=list(label_names))
    except ConfigError as error:
        return f"{str(error).removeprefix('check_batch: ')} Without labels, the model computed no loss."
    if not any("label" in n for n in names) and "start_positions" not in names:
        cls = model_class(inner).__name__
        suggestion = ""
        if is_pretrained(inner):
            base = cls.removesuffix("Model")
            suggestion = f" such as {base}ForSequenceClassification, {base}ForTokenClassification or {base}ForCausalLM"
        return (f"{cls} is a base model without a task head: its forward takes no labels and returns no loss. Fix: "
                f"load the model with a head{suggestion} (AutoModelFor...), or pass compute_loss_func=(outputs, labels, "
                f"num_items_in_batch) -> loss.")
    if wanted:
        return (f"the batch has no {wanted[0]!r} column (columns: {keys}), so the model computed no loss. Fix: add the "
                f"labels to the dataset, or set TrainingArguments(label_names=[...]) to the column holding them.")
    return None


def explain_batch_failure(error: BaseException, *, model: nn.Module, batch: Any, label_names: Iterable[str],
                          where: str) -> TrainkitError:
    """Turn the failure of a first batch into an error that names the batch, the model and the fix.

    Args:
        error: what the forward (and loss) of the batch raised.
        model: the model it ran.
        batch: the batch, as the collator made it.
        label_names: the batch keys holding labels.
        where: what was running, e.g. ``"the first training batch"``.

    Returns:
        The error to raise (``from error``): a ``TrainkitError`` other than a missing loss is
        returned unchanged; anything else becomes a :class:`~trainkit.ConfigError`.

    Example:
        >>> model = torch.nn.Linear(3, 2)
        >>> try:
        ...     model(torch.zeros(4, 5))
        ... except RuntimeError as failure:
        ...     error = explain_batch_failure(failure, model=model, batch=(torch.zeros(4, 5),), label_names=["labels"],
        ...                                   where="the first training batch")
        >>> type(error).__name__, "(4, 5) float32" in str(error)
        ('ConfigError', True)
    """
    missing_loss = isinstance(error, _MissingLossError)
    if isinstance(error, TrainkitError) and not missing_loss:
        return error
    picture, cls = describe_batch(batch), model_class(unwrap_model(model)).__name__
    hint = _missing_loss_hint(model, batch, label_names) if missing_loss else None
    if missing_loss:
        return ConfigError(f"{where} {picture}: {cls}'s output has no 'loss' (it returned keys {error.output_keys}); "
                           f"{hint or 'the loss is computed only when the batch holds labels.'} "
                           f"Or pass compute_loss_func=(outputs, labels, num_items_in_batch) -> loss.")
    if isinstance(batch, (list, tuple)) and not any(isinstance(v, torch.Tensor) for v in batch):
        item = f" of {type(batch[0]).__name__}" if batch else ""
        return ConfigError(f"{where} is a {type(batch).__name__}{item}, which {cls} cannot take ({type(error).__name__}: "
                           f"{error}): a batch must be a mapping {{name: tensor}} (model(**batch)) or a tuple of tensors "
                           f"(model(*batch)). Fix: make the dataset's items mappings of columns (e.g. "
                           f"datasets.Dataset.from_dict), or return tensors from the data collator.")
    names = _forward_names(model)
    unexpected = [k for k in batch if k not in names] if isinstance(batch, Mapping) and names and "kwargs" not in names else []
    detail = (f" The batch has columns {unexpected} that {cls}.forward does not take ({names}); remove them, or keep "
              f"remove_unused_columns=True." if unexpected else
              " Check that the collator builds the inputs the model expects (column names, shapes and dtypes) and that "
              "the model's configuration (vocabulary size, number of labels, maximum length) matches the data.")
    return ConfigError(f"{where} {picture} failed in {cls}.forward or its loss: {type(error).__name__}: "
                       f"{str(error).strip().splitlines()[0] if str(error).strip() else ''}.{detail}")


def first_batch_checked(run: Callable[[], Any], *, model: nn.Module, batch: Any, label_names: Iterable[str], where: str,
                        unless: Callable[[], bool] = lambda: False) -> Any:
    """Run ``run()`` (the forward and loss of ``batch``); explain a failure with :func:`explain_batch_failure`,
    unless ``unless()`` is then true (the failure came from elsewhere, e.g. a callback)."""
    try:
        return run()
    except (ConfigError, RuntimeError, TypeError, ValueError, IndexError, KeyError, AttributeError) as error:
        explained = error if unless() else explain_batch_failure(error, model=model, batch=batch, label_names=label_names, where=where)
        if explained is error:
            raise
        raise explained from error


def dry_run(state: Any, batch: Any, *, label_names: Iterable[str], where: str, loss_fn: Any = None,
            compute_loss_func: Any = None, require_loss: bool = True) -> float | None:
    """The forward and loss of one batch, with no update: the model in eval mode, no gradient, and
    every mode flag and random stream restored (so a dry run changes nothing a run depends on).

    Args:
        state: a live :class:`~trainkit.TrainState` (read, not consumed).
        batch: a collated batch.
        label_names: the batch keys holding labels.
        where: the batch's description in errors, e.g. ``"the first training batch"``.
        loss_fn: as :func:`~trainkit.eval_step`'s.
        compute_loss_func: as :func:`~trainkit.eval_step`'s.
        require_loss: raise when the outputs hold no loss (an evaluation set without labels has none).

    Returns:
        The batch's loss (None when there is none and it is not required).

    Raises:
        ConfigError: the batch fails in the model or gives no loss; the message names the batch's
            columns and shapes, the model and the fix.

    Example:
        >>> from trainkit import init_state
        >>> model = torch.nn.Linear(3, 1)
        >>> state = init_state(model, torch.optim.SGD(model.parameters(), lr=0.1))
        >>> dry_run(state, (torch.ones(2, 3),), label_names=["labels"], where="the first batch",
        ...         loss_fn=lambda m, b: m(b[0]).pow(2).mean()) >= 0
        True
    """
    from trainkit.step import eval_step

    model = state.model
    names = list(label_names)
    out = first_batch_checked(
        lambda: eval_step(state, batch, loss_fn=loss_fn, compute_loss_func=compute_loss_func, label_names=names),
        model=model, batch=batch, label_names=names, where=where,
    )
    if out.loss is None and not require_loss:
        return None
    if out.loss is None:
        missing = _MissingLossError("the model's output has no 'loss'", output_keys=_output_keys(model, batch))
        raise explain_batch_failure(missing, model=model, batch=batch, label_names=names, where=where)
    return float(out.loss.mean())  # in the loss's own precision (float64 stays exact)


def _output_keys(model: nn.Module, batch: Any) -> list[str]:
    """The keys of the model's outputs on ``batch`` (an error path: one more forward, changing nothing)."""
    from trainkit.seeding import _PrivateStreams
    from trainkit.distributed import _local_module

    module = _local_module(model)
    modes = [(m, m.training) for m in module.modules()]
    module.eval()
    try:
        with torch.no_grad(), _PrivateStreams():
            outputs = module(**batch) if isinstance(batch, Mapping) else module(*batch)
    finally:
        for m, mode in modes:
            m.training = mode
    return sorted(outputs) if isinstance(outputs, Mapping) else [type(outputs).__name__]
