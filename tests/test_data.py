"""trainkit.data: properties (hypothesis) checked against transformers.Trainer, and error contracts.

Everything is real: ``datasets.Dataset.from_dict`` datasets, a WordPiece tokenizer built from a
local vocabulary, ``transformers.Trainer`` objects on tiny models. Nothing downloads.
"""

from __future__ import annotations

import atexit
import copy
import logging
import shutil
import subprocess
import sys
import tempfile

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.strategies import tiny_bert
from trainkit.errors import ConfigError
from trainkit._fetch import _default_arrow, _pad_arrow
from trainkit.columns import (
    check_batch,
    default_collator,
    drop_unused_columns,
    find_label_names,
    prepare_columns,
    signature_columns,
    wrap_collator_removing_columns,
)
from trainkit.data import (
    check_max_steps,
    data_order,
    eval_batches,
    iterable_batches,
    num_batches,
    plan_steps,
    train_batches,
    updates_per_epoch,
    windows,
)

datasets = pytest.importorskip("datasets")
transformers = pytest.importorskip("transformers")
from transformers import (  # noqa: E402
    BertTokenizerFast,
    DataCollatorWithPadding,
    Trainer,
    TrainerCallback,
    TrainingArguments,
    default_data_collator,
)
from transformers.trainer_utils import RemoveColumnsCollator  # noqa: E402

logging.getLogger("transformers").setLevel(logging.ERROR)
datasets.disable_progress_bars()
OUT = tempfile.mkdtemp(prefix="trainkit-test-data-")
atexit.register(shutil.rmtree, OUT, ignore_errors=True)
WORDS = [f"w{i}" for i in range(40)]


@pytest.fixture(scope="module")
def tokenizer():
    vocab = {t: i for i, t in enumerate(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *WORDS])}
    return BertTokenizerFast(vocab=vocab)


class IdxModel(torch.nn.Module):
    """Takes a batch of row indices, records it, returns a loss that never changes anything."""

    def __init__(self) -> None:
        super().__init__()
        self.w = torch.nn.Parameter(torch.zeros(()))
        self.seen: list[list[int]] = []

    def forward(self, idx, labels=None):
        self.seen.append(idx.tolist())
        return {"loss": self.w**2}


def _args(**kw) -> TrainingArguments:
    base = dict(output_dir=OUT, report_to=[], use_cpu=True, save_strategy="no", logging_strategy="no",
                disable_tqdm=True)
    return TrainingArguments(**{**base, **kw})


def _same(a, b) -> None:
    """Equal batches: same type, same keys in the same order, equal tensors of the same dtype."""
    assert type(a) is type(b) and list(a) == list(b)
    for key in a:
        assert a[key].dtype == b[key].dtype and torch.equal(a[key], b[key]), key


def _identity(rows):
    return rows


def _hf_batches(dataset, collator, order, batch_size):
    """HF's path, row by row: rows of each batch of ``order``, collated by the HF collator."""
    return [collator([dataset[i] for i in order[j:j + batch_size]]) for j in range(0, len(order), batch_size)]


# --- order ----------------------------------------------------------------------------------------


@given(st.integers(0, 2**62), st.integers(0, 50), st.integers(0, 200))
def test_data_order_is_a_deterministic_permutation(seed, epoch, n):
    """data_order(seed, epoch, n) is a permutation of range(n) and a function of its arguments only."""
    order = data_order(seed, epoch, n)
    assert sorted(order.tolist()) == list(range(n))
    torch.rand(3)  # the global RNG does not matter
    assert torch.equal(order, data_order(seed, epoch, n))


@settings(max_examples=5)
@given(seed=st.integers(0, 2**31), data_seed=st.one_of(st.none(), st.integers(0, 2**31)),
       n=st.integers(1, 23), batch_size=st.integers(1, 5), drop_last=st.booleans())
def test_data_order_equals_the_hf_trainer_train_dataloader(seed, data_seed, n, batch_size, drop_last):
    """For 3 epochs, HF's train dataloader yields data_order(data_seed or seed, epoch, n) in batches,
    and train_batches yields the same batches."""
    batch_size = min(batch_size, n) if drop_last else batch_size
    dataset = datasets.Dataset.from_dict({"idx": list(range(n))})
    args = _args(seed=seed, data_seed=data_seed, per_device_train_batch_size=batch_size, dataloader_drop_last=drop_last)
    trainer = Trainer(model=IdxModel(), args=args, train_dataset=dataset)
    loader = trainer.get_train_dataloader()
    for epoch in range(3):
        loader.set_epoch(epoch)  # what Trainer._run_epoch does
        hf = [b["idx"].tolist() for b in loader]
        order = data_order(seed if data_seed is None else data_seed, epoch, n).tolist()
        assert [i for b in hf for i in b] == order[: num_batches(n, batch_size, drop_last=drop_last) * batch_size]
        ours = train_batches(dataset, batch_size=batch_size, collator=default_data_collator,
                             seed=seed if data_seed is None else data_seed, epoch=epoch, drop_last=drop_last)
        assert [b["idx"].tolist() for b in ours] == hf


class _StepMarks(TrainerCallback):
    def __init__(self, model):
        self.model, self.marks = model, []

    def on_step_end(self, args, state, control, **kwargs):
        self.marks.append(len(self.model.seen))


@pytest.mark.parametrize(("epochs", "max_steps", "k", "n", "b"),
                         [(2, -1, 2, 10, 3), (1.5, -1, 3, 13, 2), (3, 5, 4, 9, 2), (2.3, -1, 1, 7, 3)])
def test_trainer_train_sees_our_windows(epochs, max_steps, k, n, b):
    """A real Trainer.train() runs exactly plan_steps' updates over windows(train_batches(epoch), k) per epoch."""
    dataset, model = datasets.Dataset.from_dict({"idx": list(range(n))}), IdxModel()
    args = _args(seed=3, per_device_train_batch_size=b, gradient_accumulation_steps=k, num_train_epochs=epochs,
                 max_steps=max_steps)
    marks = _StepMarks(model)
    result = Trainer(model=model, args=args, train_dataset=dataset, callbacks=[marks]).train()
    plan = plan_steps(num_batches=num_batches(n, b), gradient_accumulation_steps=k, num_train_epochs=epochs,
                      max_steps=max_steps)
    assert result.global_step == plan.max_steps
    ours = [[batch["idx"].tolist() for batch in window] for epoch in range(plan.num_train_epochs)
            for window in windows(train_batches(dataset, batch_size=b, collator=default_data_collator, seed=3,
                                                epoch=epoch), k)][: plan.max_steps]
    assert [len(w) for w in ours] == [m1 - m0 for m0, m1 in zip([0, *marks.marks], marks.marks)]
    assert [batch for w in ours for batch in w] == model.seen


class _Loader:
    """What set_initial_training_values reads from a dataloader: its length and dataset."""

    def __init__(self, n):
        self.n, self.dataset = n, list(range(n * 2))

    def __len__(self):
        return self.n


@pytest.fixture(scope="module")
def idx_trainer():
    return Trainer(model=IdxModel(), args=_args(), train_dataset=datasets.Dataset.from_dict({"idx": [0]}))


@given(n=st.one_of(st.none(), st.integers(1, 60)), k=st.integers(1, 9), epochs=st.floats(0.1, 6.0),
       max_steps=st.one_of(st.just(-1), st.integers(1, 80)))
def test_plan_steps_equals_hf_set_initial_training_values(idx_trainer, n, k, epochs, max_steps):
    """(max_steps, epochs, updates per epoch, batches per epoch) equal HF's, fractional epochs included."""
    if n is None and max_steps < 0:
        with pytest.raises(ConfigError, match="max_steps"):
            plan_steps(num_batches=None, gradient_accumulation_steps=k, max_steps=max_steps)
        return
    args = copy.copy(idx_trainer.args)
    args.gradient_accumulation_steps, args.num_train_epochs, args.max_steps = k, epochs, max_steps
    loader = _Loader(n) if n is not None else iter(())
    hf_epochs, hf_upe, _, _, _, hf_steps_in_epoch, hf_max = idx_trainer.set_initial_training_values(args, loader)
    plan = plan_steps(num_batches=n, gradient_accumulation_steps=k, num_train_epochs=epochs, max_steps=max_steps)
    assert plan == (hf_max, hf_epochs, hf_upe, hf_steps_in_epoch)


@given(st.integers(1, 200), st.integers(1, 20))
def test_windows_partition_the_batches_into_updates_per_epoch_windows(n, k):
    """windows(range(n), k) concatenates back to range(n), every window but the last has k batches, the
    last 1..k, and there are updates_per_epoch(n, k) of them."""
    ws = list(windows(range(n), k))
    assert [i for w in ws for i in w] == list(range(n))
    assert all(len(w) == k for w in ws[:-1]) and 1 <= len(ws[-1]) <= k
    assert len(ws) == updates_per_epoch(n, k)


# --- skipping and randomness ----------------------------------------------------------------------


class _Recording(torch.utils.data.Dataset):
    def __init__(self, n):
        self.n, self.read = n, []

    def __len__(self):
        return self.n

    def __getitem__(self, i):
        self.read.append(i)
        return {"idx": i, "label": i % 3}


def _noisy(rows):
    """A collator that draws random numbers, as masked-LM collators do."""
    batch = default_data_collator(rows)
    batch["noise"] = torch.randint(0, 2**30, (len(rows),))
    return batch


@given(n=st.integers(1, 40), b=st.integers(1, 7), seed=st.integers(0, 2**31), epoch=st.integers(0, 3),
       drop_last=st.booleans(), data=st.data())
def test_skip_batches_yields_exactly_the_rest_of_the_epoch_without_reading_skipped_rows(n, b, seed, epoch, drop_last,
                                                                                         data):
    """skip_batches=j gives batches j.. of the full epoch (random collation included), reads only their
    rows, and leaves the global RNG alone."""
    if drop_last and b > n:
        b = n
    total = num_batches(n, b, drop_last=drop_last)
    j = data.draw(st.integers(0, total))
    kw = dict(batch_size=b, collator=_noisy, seed=seed, epoch=epoch, drop_last=drop_last)
    full = list(train_batches(_Recording(n), **kw))
    assert len(full) == total
    dataset = _Recording(n)
    state = torch.get_rng_state()
    rest = list(train_batches(dataset, skip_batches=j, **kw))
    assert torch.equal(state, torch.get_rng_state())
    assert len(rest) == total - j
    for x, y in zip(full[j:], rest):
        _same(x, y)
    assert sorted(dataset.read) == sorted(data_order(seed, epoch, n).tolist()[j * b: total * b])


def test_workers_give_the_same_batches(tokenizer):
    """num_workers=2 gives the batches of num_workers=0, random collation included."""
    ragged = datasets.Dataset.from_dict({"input_ids": [[5 + i % 7] * (1 + i % 5) for i in range(30)],
                                         "label": [i % 2 for i in range(30)]})
    for dataset, collator in ((ragged, DataCollatorWithPadding(tokenizer)), (_Recording(30), _noisy)):
        kw = dict(batch_size=4, collator=collator, seed=1, epoch=2)
        one, two = list(train_batches(dataset, **kw)), list(train_batches(dataset, num_workers=2, **kw))
        for x, y in zip(one, two, strict=True):
            _same(x, y)


# --- batched collation equals HF's row-by-row collation ---------------------------------------------


@st.composite
def token_rows(draw):
    n = draw(st.integers(1, 14))
    lengths = draw(st.lists(st.integers(1, 9), min_size=n, max_size=n))
    ids = [draw(st.lists(st.integers(5, 44), min_size=m, max_size=m)) for m in lengths]
    rows = {"input_ids": ids, "label": draw(st.lists(st.integers(0, 3), min_size=n, max_size=n))}
    if draw(st.booleans()):
        rows["attention_mask"] = [[1] * m for m in lengths]
    if draw(st.booleans()):
        rows["token_type_ids"] = [[draw(st.integers(0, 1))] * m for m in lengths]
    if draw(st.booleans()):
        rows["special_tokens_mask"] = [[0] * m for m in lengths]
    if draw(st.booleans()):
        rows["score"] = draw(st.lists(st.floats(-1e3, 1e3), min_size=n, max_size=n))
    return rows


@given(rows=token_rows(), b=st.integers(1, 6), seed=st.integers(0, 2**31), side=st.sampled_from(["right", "left"]),
       multiple=st.sampled_from([None, 4]))
def test_padding_collation_equals_hf_row_by_row(tokenizer, rows, b, seed, side, multiple):
    """train_batches with DataCollatorWithPadding equals HF's collator on the rows of each batch."""
    dataset = datasets.Dataset.from_dict(rows)
    tok = copy.deepcopy(tokenizer)
    tok.padding_side = side
    collator = DataCollatorWithPadding(tok, pad_to_multiple_of=multiple)
    ours = list(train_batches(dataset, batch_size=b, collator=collator, seed=seed, epoch=0))
    order = data_order(seed, 0, len(dataset)).tolist()
    for x, y in zip(ours, _hf_batches(dataset, collator, order, b), strict=True):
        _same(x, y)
    assert _pad_arrow(dataset.with_format("arrow")[order[:b]], collator) is not None  # the fast path ran


@st.composite
def feature_rows(draw):
    n, width = draw(st.integers(1, 12)), draw(st.integers(1, 4))
    floats = st.floats(-1e6, 1e6, allow_subnormal=False)
    rows = {"idx": list(range(n)), "text": [f"t{i}" for i in range(n)],
            "feat": [draw(st.lists(floats, min_size=width, max_size=width)) for _ in range(n)],
            "flag": draw(st.lists(st.booleans(), min_size=n, max_size=n))}
    label = draw(st.sampled_from(["label_int", "label_float", "label_bool", "label_ids", "label_ids_float",
                                  "label_multi", "none"]))
    if label.startswith("label_ids"):
        values = floats if label.endswith("float") else st.integers(0, 5)
        rows["label_ids"] = [draw(st.lists(values, min_size=width, max_size=width)) for _ in range(n)]
    elif label == "label_multi":  # multi-label rows: HF makes float labels even from ints
        rows["label"] = [draw(st.lists(st.integers(0, 1), min_size=width, max_size=width)) for _ in range(n)]
    elif label != "none":
        kind = {"label_int": st.integers(0, 9), "label_float": floats, "label_bool": st.booleans()}[label]
        rows["label"] = draw(st.lists(kind, min_size=n, max_size=n))
    if draw(st.booleans()):  # nested lists: the fast path declines, HF's collator runs
        rows["grid"] = [[[i, i + 1], [i + 2, i + 3]] for i in range(n)]
    return rows


@given(rows=feature_rows(), b=st.integers(1, 5), seed=st.integers(0, 2**31))
def test_default_collation_equals_hf_row_by_row(rows, b, seed):
    """train_batches and eval_batches with default_data_collator equal HF's collator on the rows, including
    label/label_ids -> labels, dtype rules (long for int/bool labels, float32 otherwise), skipped strings."""
    dataset = datasets.Dataset.from_dict(rows)
    ours = list(train_batches(dataset, batch_size=b, collator=default_data_collator, seed=seed, epoch=1))
    order = data_order(seed, 1, len(dataset)).tolist()
    for x, y in zip(ours, _hf_batches(dataset, default_data_collator, order, b), strict=True):
        _same(x, y)
    evals = list(eval_batches(dataset, batch_size=b, collator=default_data_collator))
    for x, y in zip(evals, _hf_batches(dataset, default_data_collator, list(range(len(dataset))), b), strict=True):
        _same(x, y)
    assert (_default_arrow(dataset.with_format("arrow")[order[:b]]) is None) == ("grid" in rows)


# --- columns ----------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def bert_trainer():
    return Trainer(model=tiny_bert(), args=_args(), train_dataset=datasets.Dataset.from_dict({"input_ids": [[1]]}))


POOL = ["input_ids", "attention_mask", "token_type_ids", "label", "labels", "label_ids", "text", "idx",
        "position_ids", "kwargs", "other"]


@given(st.lists(st.sampled_from(POOL), min_size=1, max_size=6, unique=True))
def test_drop_unused_columns_keeps_exactly_hfs_columns(bert_trainer, columns):
    """drop_unused_columns keeps the columns HF's _remove_unused_columns keeps, or both refuse."""
    dataset = datasets.Dataset.from_dict({c: [[1, 2], [3, 4]] for c in columns})
    model = bert_trainer.model
    try:
        expected = bert_trainer._remove_unused_columns(dataset, description="training").column_names
    except ValueError:
        with pytest.raises(ConfigError, match="no column of the training dataset"):
            drop_unused_columns(dataset, model)
        return
    assert drop_unused_columns(dataset, model).column_names == expected
    rows = [dataset[0], dataset[1]]
    hf = RemoveColumnsCollator(lambda r: r, bert_trainer._signature_columns)(rows)
    assert wrap_collator_removing_columns(lambda r: r, model)(rows) == hf
    kept, collator = prepare_columns(dataset, _identity, model)  # HF's branching: drop columns of a datasets.Dataset
    assert kept.column_names == expected and collator is _identity
    kept, collator = prepare_columns(rows, _identity, model)  # ... wrap the collator of any other dataset
    assert kept is rows and collator(rows) == hf


def test_label_names_and_signature_columns_match_hf(bert_trainer):
    from transformers import BertConfig, BertForQuestionAnswering, BertForTokenClassification
    from transformers.utils.generic import find_labels

    config = BertConfig(vocab_size=16, hidden_size=8, num_hidden_layers=1, num_attention_heads=2, intermediate_size=8)
    for model in (bert_trainer.model, BertForQuestionAnswering(config), BertForTokenClassification(config)):
        assert find_label_names(model) == find_labels(type(model))
    assert find_label_names(BertForQuestionAnswering(config)) == ["start_positions", "end_positions"]
    assert set(signature_columns(bert_trainer.model, bert_trainer.label_names)) == set(bert_trainer._signature_columns)
    assert drop_unused_columns(datasets.Dataset.from_dict({"x": [1]}), bert_trainer.model,
                               remove_unused_columns=False).column_names == ["x"]


def test_default_collator_is_hfs_choice(tokenizer):
    from transformers import Wav2Vec2FeatureExtractor, Wav2Vec2Processor

    extractor = Wav2Vec2FeatureExtractor()
    processor = Wav2Vec2Processor(feature_extractor=extractor, tokenizer=tokenizer)
    for processing_class in (None, tokenizer, extractor, processor):
        hf = Trainer(model=IdxModel(), args=_args(), processing_class=processing_class).data_collator
        ours = default_collator(processing_class)
        assert type(ours) is type(hf) and getattr(ours, "tokenizer", None) is getattr(hf, "tokenizer", None)
        assert ours is default_data_collator if hf is default_data_collator else True


def test_import_does_not_import_transformers_or_datasets():
    code = "import sys, trainkit.data; print([m for m in ('transformers', 'datasets') if m in sys.modules])"
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip() == "[]"


# --- iterable datasets ------------------------------------------------------------------------------


class _Stream(torch.utils.data.IterableDataset):
    def __init__(self, n):
        self.n, self.epochs = n, []

    def set_epoch(self, epoch):
        self.epochs.append(epoch)

    def __iter__(self):
        return iter({"idx": i} for i in range(self.n))


def test_iterable_batches_follow_the_stream():
    stream = _Stream(10)
    batches = [b["idx"].tolist() for b in iterable_batches(stream, batch_size=3, collator=default_data_collator,
                                                           epoch=4, skip_batches=1)]
    assert batches == [[3, 4, 5], [6, 7, 8], [9]] and stream.epochs == [4]
    hf_stream = datasets.Dataset.from_dict({"idx": list(range(7))}).to_iterable_dataset()
    assert [b["idx"].tolist() for b in eval_batches(hf_stream, batch_size=4, collator=default_data_collator)] == \
        [[0, 1, 2, 3], [4, 5, 6]]
    with pytest.raises(ConfigError, match="IterableDataset has no length: set max_steps"):
        check_max_steps(stream, -1)
    check_max_steps(stream, 10)
    check_max_steps([1], -1)
    with pytest.raises(ConfigError, match="got True"):  # a bool is not a step count
        check_max_steps(stream, True)
    with pytest.raises(ConfigError, match="use iterable_batches"):
        train_batches(stream, batch_size=2, collator=default_data_collator, seed=0, epoch=0)


# --- errors -----------------------------------------------------------------------------------------


def _raises(match, fn, *args, **kwargs):
    with pytest.raises(ConfigError, match=match) as info:
        result = fn(*args, **kwargs)
        next(iter(result)) if hasattr(result, "__next__") else None
    assert isinstance(info.value, ValueError)
    return str(info.value)


def test_errors_name_the_argument_or_column(bert_trainer, tokenizer):
    empty = datasets.Dataset.from_dict({"idx": []})
    kw = dict(collator=default_data_collator, seed=0, epoch=0)
    _raises("`dataset` has 0 rows", train_batches, empty, batch_size=2, **kw)
    _raises("`dataset` has 0 rows", eval_batches, [], batch_size=2, collator=default_data_collator)
    message = _raises("`batch_size` got 8 with drop_last=True", train_batches, [{"idx": 1}] * 5, batch_size=8,
                      drop_last=True, **kw)
    assert "5 rows" in message
    _raises("`batch_size` got 0", train_batches, [{"idx": 1}], batch_size=0, **kw)
    _raises("`skip_batches` got 4", train_batches, [{"idx": 1}] * 5, batch_size=2, skip_batches=4, **kw)
    tensors = torch.utils.data.TensorDataset(torch.zeros(4, 2))
    _raises("rows of `dataset` are tuple", train_batches, tensors, batch_size=2, **kw)
    _raises("rows of `dataset` are int", eval_batches, [1, 2], batch_size=2, collator=DataCollatorWithPadding(tokenizer))
    strings = datasets.Dataset.from_dict({"input_ids": [[5], [6]], "label": ["pos", "neg"]})
    message = _raises("column 'label' holds strings", train_batches, strings, batch_size=2, **kw)
    assert "class_encode_column('label')" in message and "'pos'" in message
    _raises("column 'label' holds strings", eval_batches, [{"x": 1, "label": "pos"}], batch_size=1,
            collator=DataCollatorWithPadding(tokenizer))
    ragged = datasets.Dataset.from_dict({"input_ids": [[5], [6, 7]]})
    _raises("column 'input_ids' has rows of different lengths", eval_batches, ragged, batch_size=2,
            collator=default_data_collator)
    _raises("the collator returned a str", eval_batches, [{"x": 1}], batch_size=1, collator=lambda rows: "batch")
    model = bert_trainer.model
    message = _raises("no column of the training dataset", drop_unused_columns,
                      datasets.Dataset.from_dict({"text": ["a"], "idx": [0]}), model)
    assert "['text', 'idx']" in message and "input_ids" in message
    _raises("no key of the rows", wrap_collator_removing_columns(default_data_collator, model), [{"text": "a"}])
    message = _raises("the batch has 'label'", check_batch, {"input_ids": torch.ones(1, 2), "label": torch.ones(1)},
                      model)
    assert "rename_column('label', 'labels')" in message
    check_batch({"input_ids": torch.ones(1, 2), "labels": torch.ones(1)}, model)
    _raises("the collator returned a str", check_batch, "batch", model)
    _raises("`max_steps` got 0", plan_steps, num_batches=3, max_steps=0)
    _raises("`num_batches` got 0", plan_steps, num_batches=0)
    _raises("`num_train_epochs` got -1", plan_steps, num_batches=3, num_train_epochs=-1)
    _raises("`k` got 0", windows, [1], 0)
    _raises("`seed` got -9223372036854775809", data_order, -1 - 2**63, 0, 3)
    _raises("`epoch` got -1", data_order, 0, -1, 3)


def test_worker_options_reach_the_dataloader(monkeypatch):
    """dataloader_persistent_workers and dataloader_prefetch_factor are passed to torch's DataLoader (with workers),
    never dropped; without workers torch forbids them: batches are then loaded in-process, with no DataLoader."""
    from transformers import default_data_collator

    from trainkit import data as tkdata

    seen = []
    real = torch.utils.data.DataLoader

    class Spy(real):
        def __init__(self, *args, **kwargs):
            seen.append(kwargs)
            super().__init__(*args, **kwargs)

    monkeypatch.setattr(torch.utils.data, "DataLoader", Spy)
    rows = [{"x": [float(i)], "labels": i} for i in range(8)]
    batches = tkdata.train_batches(rows, batch_size=4, collator=default_data_collator, seed=0, epoch=0, num_workers=1,
                                   persistent_workers=True, prefetch_factor=3)
    order = tkdata.data_order(0, 0, 8).tolist()
    assert [b["labels"].tolist() for b in batches] == [order[:4], order[4:]]
    assert seen[-1]["persistent_workers"] is True and seen[-1]["prefetch_factor"] == 3 and seen[-1]["num_workers"] == 1
    built = len(seen)
    in_process = tkdata.eval_batches(rows, batch_size=4, collator=default_data_collator, persistent_workers=True)
    assert [b["labels"].tolist() for b in in_process] == [[0, 1, 2, 3], [4, 5, 6, 7]]
    assert len(seen) == built  # no DataLoader (and so no worker option) without workers
