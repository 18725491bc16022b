"""Which dataset columns reach the model, and the collator that batches them: transformers' rules.

``transformers.Trainer`` drops the columns its model's ``forward`` does not take
(``remove_unused_columns``), finds the label columns from the ``forward``'s parameters, and picks
``DataCollatorWithPadding`` for a tokenizer, ``default_data_collator`` otherwise. This module is
those rules as plain functions (:func:`prepare_columns` applies them in one call), plus
:func:`check_batch`, which names a ``label`` column that a custom collator left unrenamed.

``transformers`` and ``datasets`` are imported only by the functions that need them.
"""

from __future__ import annotations

import inspect
import logging
import sys
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from trainkit._models import model_class, unwrap_model
from trainkit.errors import ConfigError

__all__ = [
    "find_label_names", "signature_columns", "drop_unused_columns", "wrap_collator_removing_columns", "prepare_columns",
    "default_collator", "check_batch",
]

logger = logging.getLogger(__name__)
Collator = Callable[[Any], Any]


def find_label_names(model: Any) -> list[str]:
    """HF's ``find_labels``: forward parameters containing "label", and ``start_positions``/``end_positions``
    for a class named ``*QuestionAnswering*``.

    Example:
        >>> import torch
        >>> class Net(torch.nn.Module):
        ...     def forward(self, x, labels=None, label_mask=None): ...
        >>> find_label_names(Net())
        ['labels', 'label_mask']
    """
    cls = model_class(unwrap_model(model))
    qa = "QuestionAnswering" in cls.__name__
    return [p for p in inspect.signature(cls.forward).parameters
            if "label" in p or (qa and p in ("start_positions", "end_positions"))]


def signature_columns(model: Any, label_names: Sequence[str]) -> list[str]:
    """The columns HF keeps: the forward's parameters, "label", "label_ids" (HF's collators rename them
    to "labels") and ``label_names``. A ``**kwargs`` parameter keeps only a column named "kwargs", as in HF.

    Example:
        >>> import torch
        >>> class Net(torch.nn.Module):
        ...     def forward(self, x, labels=None): ...
        >>> signature_columns(Net(), ["labels"])
        ['x', 'labels', 'label', 'label_ids']
    """
    names = list(inspect.signature(unwrap_model(model).forward).parameters)
    return list(dict.fromkeys([*names, "label", "label_ids", *label_names]))


def _is_hf_dataset(dataset: Any) -> bool:
    module = sys.modules.get("datasets")  # a datasets.Dataset implies datasets is imported
    return module is not None and isinstance(dataset, module.Dataset)


def _kept(model: Any, label_names: Sequence[str] | None) -> list[str]:
    return signature_columns(model, find_label_names(model) if label_names is None else label_names)


def drop_unused_columns(dataset: Any, model: Any, *, label_names: Sequence[str] | None = None,
                        remove_unused_columns: bool = True, description: str = "training") -> Any:
    """Remove a ``datasets.Dataset``'s columns that are not in :func:`signature_columns` (HF's rule).

    ``label_names`` None means :func:`find_label_names`. Other datasets are returned unchanged: wrap
    their collator with :func:`wrap_collator_removing_columns`, as HF does.

    Args:
        dataset: a ``datasets.Dataset``; any other dataset is returned as it is.
        model: the model (possibly wrapped) whose ``forward`` parameters are kept.
        label_names: the label columns to keep; None: :func:`find_label_names`.
        remove_unused_columns: False returns ``dataset`` unchanged (HF's ``remove_unused_columns``).
        description: the dataset's role ("training", "evaluation"...), named in the log and errors.

    Returns:
        The dataset without the unused columns (they are logged at INFO level), or ``dataset``.

    Raises:
        ConfigError: no column would remain; the message lists the columns and the kept names.

    Example:
        >>> import datasets
        >>> import torch
        >>> class Net(torch.nn.Module):
        ...     def forward(self, x, labels=None): ...
        >>> ds = datasets.Dataset.from_dict({"x": [[1.0], [2.0]], "label": [0, 1], "text": ["a", "b"]})
        >>> drop_unused_columns(ds, Net()).column_names
        ['x', 'label']
        >>> rows = [{"x": [1.0], "text": "a"}]
        >>> drop_unused_columns(rows, Net()) is rows  # not a datasets.Dataset
        True
    """
    if not remove_unused_columns or not _is_hf_dataset(dataset):
        return dataset
    keep, name = _kept(model, label_names), model_class(unwrap_model(model)).__name__
    ignored = [c for c in dataset.column_names if c not in keep]
    if len(ignored) == len(dataset.column_names):
        raise ConfigError(
            f"drop_unused_columns: no column of the {description} dataset {dataset.column_names} is a parameter of "
            f"`{name}.forward` or a label name {keep}, so every column would be removed. Fix: rename the columns "
            "(dataset.rename_column), or set remove_unused_columns=False and pass a data_collator that builds the "
            "model's inputs.")
    if ignored:
        logger.info("Columns of the %s set that `%s.forward` does not take were removed: %s.", description, name,
                    ", ".join(ignored))
    return dataset.remove_columns(ignored)


class _RemoveColumns:
    """HF's ``RemoveColumnsCollator``: keep the kept keys of ``dict`` rows; other rows pass through."""

    def __init__(self, collator: Collator, keep: list[str], where: str) -> None:
        self.collator, self.keep, self.where = collator, frozenset(keep), where

    def __call__(self, rows: list[Any]) -> Any:
        kept = [{k: v for k, v in r.items() if k in self.keep} if isinstance(r, dict) else r for r in rows]
        if rows and isinstance(rows[0], dict) and rows[0] and not kept[0]:
            raise ConfigError(f"{self.where}: no key of the rows {sorted(rows[0])} is in {sorted(self.keep)}. "
                              "Fix: rename the keys, or set remove_unused_columns=False.")
        return self.collator(kept)


def wrap_collator_removing_columns(collator: Collator, model: Any, *, label_names: Sequence[str] | None = None,
                                   remove_unused_columns: bool = True, description: str = "training") -> Collator:
    """HF's ``RemoveColumnsCollator`` for datasets that are not ``datasets.Dataset`` (torch datasets,
    ``datasets.IterableDataset``): drop the keys of dict rows that ``model.forward`` does not take.
    The wrapper pickles (``num_workers``) and raises ConfigError when no key of a row would remain.

    Args:
        collator: rows -> batch, called with the reduced rows.
        model: the model (possibly wrapped) whose ``forward`` parameters are kept.
        label_names: the label keys to keep; None: :func:`find_label_names`.
        remove_unused_columns: False returns ``collator`` itself.
        description: the dataset's role ("training", "evaluation"...), named in errors.

    Returns:
        A collator that keeps the :func:`signature_columns` keys of ``dict`` rows (other rows pass
        through) and calls ``collator``; ``collator`` itself when ``remove_unused_columns`` is False.

    Raises:
        ConfigError: (when called) the rows are non-empty dicts none of whose keys is kept.

    Example:
        >>> import torch
        >>> class Net(torch.nn.Module):
        ...     def forward(self, x, labels=None): ...
        >>> collate = wrap_collator_removing_columns(lambda rows: rows, Net())
        >>> collate([{"x": 1.0, "label": 0, "idx": 7}])
        [{'x': 1.0, 'label': 0}]
        >>> collate([{"idx": 7}])
        Traceback (most recent call last):
        trainkit.errors.ConfigError: training collator: no key of the rows ['idx'] is in ['label', 'label_ids', 'labels', 'x']. Fix: rename the keys, or set remove_unused_columns=False.
    """
    if not remove_unused_columns:
        return collator
    return _RemoveColumns(collator, _kept(model, label_names), f"{description} collator")


def prepare_columns(dataset: Any, collator: Collator, model: Any, *, label_names: Sequence[str] | None = None,
                    remove_unused_columns: bool = True, description: str = "training") -> tuple[Any, Collator]:
    """HF's ``_get_dataloader`` rule in one call: a ``datasets.Dataset`` loses its unused columns
    (:func:`drop_unused_columns`); any other dataset keeps them and its collator drops them
    (:func:`wrap_collator_removing_columns`). Returns ``(dataset, collator)``.

    Args:
        dataset: a ``datasets.Dataset``, or any other dataset (torch, ``datasets.IterableDataset``).
        collator: rows -> batch.
        model: the model (possibly wrapped) whose ``forward`` parameters are kept.
        label_names: the label columns to keep; None: :func:`find_label_names`.
        remove_unused_columns: False returns ``(dataset, collator)`` unchanged.
        description: the dataset's role ("training", "evaluation"...), named in the log and errors.

    Returns:
        ``(dataset, collator)``: one of them reduced as above, the other as given.

    Raises:
        ConfigError: as :func:`drop_unused_columns` (no column of a ``datasets.Dataset`` would remain).

    Example:
        >>> import datasets
        >>> import torch
        >>> class Net(torch.nn.Module):
        ...     def forward(self, x, labels=None): ...
        >>> ds = datasets.Dataset.from_dict({"x": [[1.0], [2.0]], "label": [0, 1], "idx": [7, 8]})
        >>> collate = lambda rows: rows
        >>> kept, same = prepare_columns(ds, collate, Net())
        >>> kept.column_names, same is collate
        (['x', 'label'], True)
        >>> rows = [{"x": 1.0, "label": 0, "idx": 7}]
        >>> same, wrapped = prepare_columns(rows, collate, Net())
        >>> same is rows, wrapped(rows)
        (True, [{'x': 1.0, 'label': 0}])
    """
    kw = {"label_names": label_names, "remove_unused_columns": remove_unused_columns, "description": description}
    if _is_hf_dataset(dataset):
        return drop_unused_columns(dataset, model, **kw), collator
    return dataset, wrap_collator_removing_columns(collator, model, **kw)


def default_collator(processing_class: Any) -> Collator:
    """HF 5.24's default: ``DataCollatorWithPadding(processing_class)`` for a tokenizer
    (``PreTrainedTokenizerBase``) or a ``SequenceFeatureExtractor``; ``default_data_collator`` otherwise,
    including image processors and processors that hold a tokenizer.

    Args:
        processing_class: the ``Trainer``'s ``processing_class`` (a tokenizer, feature extractor,
            image processor or processor), or None.

    Returns:
        A ``transformers.DataCollatorWithPadding`` over ``processing_class``, or
        ``transformers.default_data_collator``.

    Example:
        >>> from tokenizers import Tokenizer, models
        >>> from transformers import PreTrainedTokenizerFast, default_data_collator
        >>> tok = PreTrainedTokenizerFast(tokenizer_object=Tokenizer(models.WordLevel({"[PAD]": 0, "hi": 1},
        ...                               unk_token="[PAD]")), pad_token="[PAD]")
        >>> type(default_collator(tok)).__name__
        'DataCollatorWithPadding'
        >>> default_collator(None) is default_data_collator
        True
    """
    from transformers import DataCollatorWithPadding, PreTrainedTokenizerBase, default_data_collator
    from transformers.feature_extraction_sequence_utils import SequenceFeatureExtractor

    if isinstance(processing_class, (PreTrainedTokenizerBase, SequenceFeatureExtractor)):
        return DataCollatorWithPadding(processing_class)
    return default_data_collator


def check_batch(batch: Any, model: Any, *, label_names: Sequence[str] | None = None) -> None:
    """Check a collated batch before the first step.

    Raises:
        ConfigError: the batch is not a mapping or tuple/list; or it has "label"/"label_ids", which
            ``model.forward`` does not take, and none of ``label_names``: HF's collators rename them to
            "labels", a custom collator that does not leaves the model without labels (HF then fails with
            "The model did not return a loss").

    Args:
        batch: the collator's output for the first batch.
        model: the model (possibly wrapped) the batch is for.
        label_names: the model's label names; None: :func:`find_label_names`.

    Example:
        >>> import torch
        >>> class Net(torch.nn.Module):
        ...     def forward(self, x, labels=None): ...
        >>> check_batch({"x": torch.ones(2, 1), "labels": torch.zeros(2)}, Net())  # fine: returns None
        >>> check_batch({"x": torch.ones(2, 1), "label": torch.zeros(2)}, Net())  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        trainkit.errors.ConfigError: check_batch: the batch has 'label' but `Net.forward` takes its labels as ['labels'], ...
    """
    if not isinstance(batch, (Mapping, tuple, list)):
        raise ConfigError(f"check_batch: the collator returned a {type(batch).__name__}; a batch must be a mapping "
                          "{name: tensor} (model(**batch)) or a tuple (model(*batch)). Fix: return one from it.")
    names = list(find_label_names(model) if label_names is None else label_names)
    params, cls = inspect.signature(unwrap_model(model).forward).parameters, model_class(unwrap_model(model)).__name__
    for key in ("label", "label_ids"):
        if isinstance(batch, Mapping) and key in batch and key not in params and names and \
                not any(n in batch for n in names):
            raise ConfigError(
                f"check_batch: the batch has {key!r} but `{cls}.forward` takes its labels as {names}, and the collator "
                f"did not rename it (transformers' default collators do). Fix: dataset.rename_column({key!r}, "
                f"{names[0]!r}), or return {names[0]!r} from the collator.")
