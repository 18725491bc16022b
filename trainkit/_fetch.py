"""Reading one batch's rows and collating them, with the Arrow fast path (the loaders' dataset).

The loaders of :mod:`trainkit.data` ask for a whole batch of indices at once; :class:`_Batches`
answers with one Arrow read of a ``datasets.Dataset`` and, for transformers' default collators on
an unformatted dataset, builds the tensors with numpy (padding included) instead of a Python list
per row; the output is identical to the HF collator's (tested). Everything else gets the rows
the collator expects. A batch is fetched and collated under the CPU generator seeded for it, so
a random collator draws the same numbers whether or not earlier batches were produced (resume).
"""

from __future__ import annotations

import sys
from collections.abc import Mapping
from typing import Any

import numpy as np
import torch

from trainkit.columns import Collator, _RemoveColumns
from trainkit.errors import ConfigError
from trainkit.seeding import _PrivateStreams, derive_seed


def _hf_kind(collator: Any, unwrap: bool = True) -> str | None:
    """"default" or "padding" for transformers' default collators (``unwrap``: also wrapped), else None."""
    while unwrap and (isinstance(collator, _RemoveColumns) or type(collator).__name__ == "RemoveColumnsCollator"):
        collator = getattr(collator, "collator", None) or collator.data_collator
    transformers = sys.modules.get("transformers")
    if transformers is None:
        return None
    if collator is transformers.default_data_collator:
        return "default"
    padding = transformers.DataCollatorWithPadding
    return "padding" if isinstance(collator, padding) and type(collator).__call__ is padding.__call__ else None


def _numbers(column: Any) -> Any:
    """A null-free Arrow array of ints (not uint64), floats or bools, else None."""
    import pyarrow as pa

    t = column.type
    ok = pa.types.is_boolean(t) or pa.types.is_floating(t) or (pa.types.is_integer(t) and t != pa.uint64())
    return column if ok and column.null_count == 0 else None


def _tensor(column: Any) -> torch.Tensor | None:
    """``torch.tensor(column.to_pylist())`` for numbers or equal-length non-empty lists of numbers, else None."""
    import numpy as np
    import pyarrow as pa

    array = column.combine_chunks() if isinstance(column, pa.ChunkedArray) else column
    shape: tuple[int, ...] = (len(array),)
    if pa.types.is_list(array.type) or pa.types.is_large_list(array.type):
        lengths = array.value_lengths().to_numpy(zero_copy_only=False)
        if array.null_count or len(lengths) == 0 or lengths.min() != lengths.max() or lengths[0] == 0:
            return None
        array, shape = array.flatten(), (len(array), int(lengths[0]))
    if _numbers(array) is None:
        return None
    t = array.type
    dtype = torch.bool if pa.types.is_boolean(t) else torch.int64 if pa.types.is_integer(t) else torch.get_default_dtype()
    return torch.from_numpy(np.array(array.to_numpy(zero_copy_only=False)).reshape(shape)).to(dtype)


def _default_arrow(table: Any) -> dict[str, torch.Tensor] | None:
    """``default_data_collator`` on an Arrow table: "label" (else "label_ids") becomes "labels" (long for
    int or bool labels and label ids, float32 otherwise), string columns are skipped, others stacked."""
    import pyarrow as pa

    batch: dict[str, torch.Tensor] = {}
    label = next((n for n in ("label", "label_ids") if n in table.column_names), None)
    if label is not None:
        lists = pa.types.is_list(table[label].type) or pa.types.is_large_list(table[label].type)
        labels = _tensor(table[label]) if label == "label" or lists else None
        if labels is None:
            return None
        integral = not labels.is_floating_point() and not (label == "label" and lists)  # HF: a list "label" is float
        batch["labels"] = labels.to(torch.long if integral else torch.float32)
    for name in table.column_names:
        if name not in ("label", "label_ids") and not pa.types.is_string(table[name].type):
            batch[name] = _tensor(table[name])  # a "labels" column replaces "label", as in HF
            if batch[name] is None:
                return None
    return batch


def _pad_arrow(table: Any, collator: Any) -> Any:
    """``DataCollatorWithPadding`` (a tokenizer's own ``pad``, padding to the longest row) on an Arrow table."""
    import numpy as np
    import pyarrow as pa
    from transformers import BatchEncoding
    from transformers import PreTrainedTokenizerBase as Base

    tok, names = collator.tokenizer, list(table.column_names)
    main = getattr(tok, "model_input_names", [None])[0]
    if not (isinstance(tok, Base) and type(tok).pad is Base.pad and type(tok)._pad is Base._pad and main in names
            and collator.padding in (True, "longest") and collator.max_length is None and collator.return_tensors == "pt"
            and tok.pad_token_id is not None and tok.padding_side in ("left", "right")):
        return None
    columns = {n: table[n].combine_chunks() for n in names}
    if not pa.types.is_list(columns[main].type) or columns[main].null_count:
        return None
    lengths = columns[main].value_lengths().to_numpy(zero_copy_only=False)
    width, multiple = int(lengths.max()), collator.pad_to_multiple_of
    if width == 0:
        return None
    if multiple and width % multiple:
        width = (width // multiple + 1) * multiple
    positions = np.arange(width)
    where = positions < lengths[:, None] if tok.padding_side == "right" else positions >= width - lengths[:, None]
    mask = "attention_mask" in tok.model_input_names  # pad() creates, and pads, the mask only then
    pad = {main: tok.pad_token_id, "token_type_ids": tok.pad_token_type_id, "special_tokens_mask": 1,
           **({"attention_mask": 0} if mask else {})}
    out: dict[str, torch.Tensor | None] = {}
    for name in names + (["attention_mask"] if mask and "attention_mask" not in names else []):
        column = columns.get(name)
        if name not in pad:
            out[name] = _tensor(column)
        elif column is None:
            out[name] = torch.from_numpy(np.where(where, 1, 0).astype(np.int64))
        elif pa.types.is_list(column.type) and _numbers(column.flatten()) is not None and not column.null_count and \
                pa.types.is_integer(column.type.value_type) and np.array_equal(column.value_lengths().to_numpy(), lengths):
            padded = np.full((len(lengths), width), pad[name], dtype=np.int64)
            padded[where] = column.flatten().to_numpy()
            out[name] = torch.from_numpy(padded)
        else:
            return None
        if out[name] is None:
            return None
    for name in ("label", "label_ids"):
        if name in out:
            out["labels"] = out.pop(name)
    return BatchEncoding(out)


_TENSOR_CACHE_BYTES = 64 << 20


class _Batches(torch.utils.data.Dataset):
    """A batch per DataLoader call: ``__getitems__((batch_number, indices))`` reads the rows (one Arrow read
    for the fast path) and collates them, both under the CPU generator seeded for that batch."""

    def __init__(self, dataset: Any, collator: Collator, kind: str | None, arrow: bool, seed: int | None) -> None:
        self.dataset = dataset.with_format("arrow") if arrow else dataset
        self.collator, self.kind, self.arrow, self.seed = collator, kind, arrow, seed
        # default_data_collator only stacks columns: for a dataset that fits comfortably in memory,
        # convert each column to one tensor per loader and index it per batch (one conversion per
        # epoch instead of one per batch, which dominated a small model's step).
        self.columns = None
        if arrow and kind == "default" and self.dataset.data.nbytes <= _TENSOR_CACHE_BYTES:
            self.columns = _default_arrow(self.dataset[:])

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int) -> Any:
        return self.dataset[index]

    def __getitems__(self, item: tuple[int, list[int]]) -> Any:
        number, indices = item
        if self.seed is None or self.columns is not None:  # indexing cached columns draws no random number
            return self._fetch(indices)
        # Fetch and collate under this batch's own seed: a dataset transform or a random collator
        # then draws the same numbers whether or not earlier batches were produced (resume).
        with _PrivateStreams() as seed:
            seed(derive_seed(self.seed, number))
            return self._fetch(indices)

    def _fetch(self, indices: list[int]) -> Any:
        if self.columns is not None:
            # numpy converts the index list ~4x faster than torch.as_tensor; index_select skips the
            # general indexing machinery (together ~50 us a batch, a small model's step is ~3 ms).
            rows = torch.from_numpy(np.asarray(indices, dtype=np.int64))
            return {name: column.index_select(0, rows) for name, column in self.columns.items()}
        if self.arrow:
            table = self.dataset[indices]  # a pyarrow.Table
            batch = _default_arrow(table) if self.kind == "default" else _pad_arrow(table, self.collator)
            if batch is not None:
                return batch
            columns = table.to_pydict()
            rows = [dict(zip(columns, row)) for row in zip(*columns.values())]
        else:
            getitems = getattr(self.dataset, "__getitems__", None)
            rows = getitems(indices) if getitems else [self.dataset[i] for i in indices]
        return self._collate(rows)

    def _collate(self, rows: Any) -> Any:
        try:
            return self.collator(rows)
        except KeyError as error:
            key = error.args[0] if error.args else None
            if not (isinstance(key, str) and rows and isinstance(rows[0], Mapping) and key not in rows[0]):
                raise
            raise ConfigError(f"data collator: it reads column {key!r}, but the rows hold only {list(rows[0])}. "
                              "remove_unused_columns=True (the default) drops the columns the model's forward does not "
                              f"take. Fix: TrainingArguments(remove_unused_columns=False) (the collator must then drop "
                              f"the extra columns itself), or check that the dataset has {key!r}.") from error
        except ValueError as error:
            ragged = [k for k, v in rows[0].items() if isinstance(v, list) and len({len(r[k]) for r in rows}) > 1] \
                if self.kind == "default" and rows and isinstance(rows[0], Mapping) else []
            if not ragged:
                raise
            raise ConfigError(f"default_data_collator: column {ragged[0]!r} has rows of different lengths, so they "
                              "cannot be stacked. Fix: pass the tokenizer as processing_class (DataCollatorWithPadding "
                              "pads them), or pad when tokenizing.") from error


def _identity(batch: Any) -> Any:
    return batch
