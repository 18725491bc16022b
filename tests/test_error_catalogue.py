"""The error catalogue: every bad input fails early, with an error naming the problem and the fix.

Each case builds a real Trainer (or calls ``train()``/``check()``/``evaluate()``) with one thing
wrong and asserts three things: the exception is a ``TrainkitError`` that also subclasses the
builtin it refines, its message holds the key words (the argument or column, the value, the
fix), and nothing was written to ``output_dir``. ``docs/errors.md`` lists the same cases.
"""

from __future__ import annotations

import math
import os
import sys
import warnings
from pathlib import Path
from typing import Any, Callable

import datasets
import pytest
import torch
from torch import nn

from tests.strategies import VOCAB, mlp, tiny_bert
from trainkit import Trainer, TrainingArguments
from trainkit.errors import (
    CheckpointError, ConfigError, ConfigTypeError, NonFiniteError, TrainkitError, TrainkitWarning, UnsupportedOptionError,
)

SEQ = 6


def _rows(n: int = 8, *, label: str = "labels", length: int = SEQ, ragged: bool = False) -> list[dict]:
    gen = torch.Generator().manual_seed(n)
    rows = []
    for i in range(n):
        k = (2 + i % 4) if ragged else length
        ids = torch.randint(1, VOCAB, (k,), generator=gen).tolist()
        rows.append({"input_ids": ids, "attention_mask": [1] * k, label: i % 3})
    return rows


def _ds(rows: list[dict] | None = None, **kw: Any) -> datasets.Dataset:
    return datasets.Dataset.from_list(rows if rows is not None else _rows(**kw))


def _args(out: Path, **kw: Any) -> TrainingArguments:
    kw.setdefault("per_device_train_batch_size", 4)
    kw.setdefault("max_steps", 2)
    kw.setdefault("save_strategy", "no")
    return TrainingArguments(output_dir=str(out), report_to="none", disable_tqdm=True, **kw)


def _trainer(out: Path, *, model: Any = None, args: Any = None, **kw: Any) -> Trainer:
    kw.setdefault("train_dataset", _ds())
    return Trainer(model=tiny_bert() if model is None else model, args=_args(out) if args is None else args, **kw)


class HeadlessLoss(nn.Module):
    """Returns logits only, whatever it is given: a model that never computes a loss."""

    def __init__(self) -> None:
        super().__init__()
        self.emb = nn.Embedding(VOCAB, 3)

    def forward(self, input_ids, attention_mask=None, labels=None):
        return {"logits": self.emb(input_ids).mean(1)}


class NaNAt(nn.Module):
    """A classifier whose loss turns NaN from update ``bad_step`` on (counted by forward calls)."""

    def __init__(self, bad_step: int) -> None:
        super().__init__()
        self.emb, self.calls, self.bad_step = nn.Embedding(VOCAB, 3), 0, bad_step

    def forward(self, input_ids, attention_mask=None, labels=None):
        logits = self.emb(input_ids).mean(1)
        loss = nn.functional.cross_entropy(logits, labels)
        self.calls += 1
        return {"loss": loss * float("nan") if self.calls > self.bad_step else loss, "logits": logits}


def _base_bert() -> nn.Module:
    from transformers import BertConfig, BertModel

    return BertModel(BertConfig(vocab_size=VOCAB, hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                                intermediate_size=37, max_position_embeddings=64))


def _frozen_bert() -> nn.Module:
    model = tiny_bert()
    model.requires_grad_(False)
    return model


def _stack_collator(rows: list[dict]) -> dict:
    """A hand-written collator that stacks every column as it is (no renaming, no padding)."""
    return {k: torch.tensor([r[k] for r in rows]) for k in rows[0]}


def _checkpoint(out: Path, model: nn.Module | None = None) -> Path:
    trainer = Trainer(model=model or tiny_bert(), args=_args(out / "run", save_strategy="steps", save_steps=2), train_dataset=_ds())
    trainer.train()
    return out / "run" / "checkpoint-2"


# --- the catalogue ----------------------------------------------------------------------------------
# (id, action taking tmp_path, expected type, builtin it refines, key words in the message)

Case = tuple[str, Callable[[Path], Any], type, type, tuple[str, ...]]

ARGUMENTS: list[Case] = [
    ("model-wrong-type", lambda p: _trainer(p, model="bert-base-uncased"), ConfigError, TypeError,
     ("model", "'bert-base-uncased'", "nn.Module", "from_pretrained")),
    ("args-wrong-type", lambda p: _trainer(p, args={"learning_rate": 1e-3}), ConfigError, TypeError,
     ("args", "dict", "TrainingArguments(")),
    ("train-dataset-wrong-type", lambda p: _trainer(p, train_dataset=5), ConfigError, TypeError,
     ("train_dataset", "int", "Dataset")),
    ("eval-dataset-wrong-type", lambda p: _trainer(p, eval_dataset="test.csv"), ConfigError, TypeError,
     ("eval_dataset", "'test.csv'", "load_dataset")),
    ("collator-not-callable", lambda p: _trainer(p, data_collator="pad"), ConfigError, TypeError,
     ("data_collator", "'pad'", "callable")),
    ("compute-metrics-not-callable", lambda p: _trainer(p, compute_metrics="accuracy"), ConfigError, TypeError,
     ("compute_metrics", "'accuracy'", "callable", "evaluate.load")),
    ("callbacks-not-a-list", lambda p: _trainer(p, callbacks=42), ConfigError, TypeError,
     ("callbacks", "42", "list")),
    ("callback-wrong-type", lambda p: _trainer(p, callbacks=["early_stopping"]), ConfigError, TypeError,
     ("callbacks", "'early_stopping'", "TrainerCallback")),
    ("optimizers-not-a-pair", lambda p: _trainer(p, optimizers=torch.optim.SGD(nn.Linear(1, 1).parameters(), lr=0.1)),
     ConfigError, TypeError, ("optimizers", "SGD", "(optimizer, scheduler)")),
    ("optimizer-cls-and-kwargs-wrong", lambda p: _trainer(p, optimizer_cls_and_kwargs=torch.optim.SGD), ConfigError, TypeError,
     ("optimizer_cls_and_kwargs", "SGD", "(cls, kwargs)")),
    ("compute-loss-func-not-callable", lambda p: _trainer(p, compute_loss_func="ce"), ConfigError, TypeError,
     ("compute_loss_func", "'ce'", "callable")),
    ("preprocess-logits-not-callable", lambda p: _trainer(p, preprocess_logits_for_metrics=1), ConfigError, TypeError,
     ("preprocess_logits_for_metrics", "1", "callable")),
    ("processing-class-a-name", lambda p: _trainer(p, processing_class="bert-base-uncased"), ConfigTypeError, TypeError,
     ("processing_class", "'bert-base-uncased'", "AutoTokenizer.from_pretrained")),
    ("model-init-not-callable", lambda p: Trainer(model_init=tiny_bert(), args=_args(p), train_dataset=_ds()), ConfigError, TypeError,
     ("model_init", "BertForSequenceClassification", "callable", "model=")),
    ("model-and-model-init", lambda p: Trainer(model=tiny_bert(), model_init=tiny_bert, args=_args(p)), ConfigError, ValueError,
     ("model", "model_init", "both")),
    ("neither-model-nor-init", lambda p: Trainer(args=_args(p)), ConfigError, ValueError, ("model", "model_init", "neither")),
    ("model-init-returns-none", lambda p: Trainer(model_init=lambda: None, args=_args(p)), ConfigError, TypeError,
     ("model_init", "None", "return")),
    ("model-init-two-arguments", lambda p: Trainer(model_init=lambda a, b: tiny_bert(), args=_args(p)), ConfigError, TypeError,
     ("model_init", "2", "trial")),
    ("optimizers-with-cls-and-kwargs", lambda p: _trainer(
        p, optimizers=(torch.optim.SGD(nn.Linear(1, 1).parameters(), lr=0.1), None), optimizer_cls_and_kwargs=(torch.optim.SGD, {})),
     ConfigError, ValueError, ("optimizers", "optimizer_cls_and_kwargs", "not both")),
    ("optimizers-with-model-init", lambda p: Trainer(
        model_init=tiny_bert, args=_args(p), optimizers=(torch.optim.SGD(nn.Linear(1, 1).parameters(), lr=0.1), None)),
     ConfigError, ValueError, ("optimizers", "model_init", "optimizer_cls_and_kwargs")),
    ("learning-rate-zero", lambda p: _args(p, learning_rate=0.0), ConfigError, ValueError, ("learning_rate=0.0", "> 0")),
    ("learning-rate-negative", lambda p: _args(p, learning_rate=-1e-3), ConfigError, ValueError, ("learning_rate=-0.001", "> 0")),
    ("batch-size-zero", lambda p: _args(p, per_device_train_batch_size=0), ConfigError, ValueError,
     ("per_device_train_batch_size=0", ">= 1")),
    ("grad-accumulation-negative", lambda p: _args(p, gradient_accumulation_steps=-2), ConfigError, ValueError,
     ("gradient_accumulation_steps=-2", ">= 1")),
    ("epochs-negative-without-max-steps", lambda p: _args(p, num_train_epochs=-1, max_steps=-1), ConfigError, ValueError,
     ("num_train_epochs=-1", "max_steps")),
    ("epochs-and-max-steps-zero", lambda p: _args(p, num_train_epochs=0, max_steps=0), ConfigError, ValueError,
     ("num_train_epochs=0", "max_steps=0", "no step")),
    ("fp16-on-cpu", lambda p: _args(p, fp16=True, use_cpu=True), ConfigError, ValueError, ("fp16=True", "CUDA", "bf16=True")),
    ("fp16-and-bf16", lambda p: _args(p, fp16=True, bf16=True), ConfigError, ValueError, ("fp16=True", "bf16=True", "one")),
    ("unknown-optim", lambda p: _args(p, optim="adamw_torh"), ConfigError, ValueError, ("optim='adamw_torh'", "'adamw_torch'")),
    ("unknown-scheduler", lambda p: _args(p, lr_scheduler_type="cosine_warmup"), ConfigError, ValueError,
     ("lr_scheduler_type='cosine_warmup'", "did you mean")),
    ("scheduler-kwarg-not-taken", lambda p: _args(p, lr_scheduler_type="linear", lr_scheduler_kwargs={"power": 2.0}),
     ConfigError, ValueError, ("lr_scheduler_kwargs", "'power'", "'linear'", "polynomial")),
    ("eval-strategy-without-eval-dataset", lambda p: _trainer(p, args=_args(p, eval_strategy="steps", eval_steps=1)), ConfigError, ValueError,
     ("eval_strategy='steps'", "eval_dataset")),
    ("best-model-strategies-mismatch", lambda p: _args(p, load_best_model_at_end=True, eval_strategy="epoch", save_strategy="steps"),
     ConfigError, ValueError, ("load_best_model_at_end", "eval_strategy='epoch'", "save_strategy='steps'")),
    ("best-model-save-steps-not-multiple", lambda p: _args(p, load_best_model_at_end=True, eval_strategy="steps", save_strategy="steps",
                                                           eval_steps=3, save_steps=4), ConfigError, ValueError,
     ("save_steps=4", "eval_steps=3", "multiple")),
    ("logging-steps-zero", lambda p: _args(p, logging_strategy="steps", logging_steps=0), ConfigError, ValueError,
     ("logging_steps=0", "> 0")),
    ("output-dir-is-a-file", lambda p: _trainer(p, args=_args(_file(p))), ConfigError, ValueError,
     ("output_dir", "is a file", "directory")),
    ("unsupported-hf-option", lambda p: TrainingArguments(output_dir=str(p), deepspeed="ds.json"), UnsupportedOptionError, ValueError,
     ("deepspeed", "'ds.json'", "remove")),
    ("unsupported-hf-option-converted", lambda p: _trainer(p, args=_hf_args(p, push_to_hub=True)), UnsupportedOptionError, ValueError,
     ("push_to_hub=True", "default False")),
    ("misspelt-option", lambda p: TrainingArguments(output_dir=str(p), learnig_rate=1e-3), ConfigTypeError, TypeError,
     ("learnig_rate", "'learning_rate'")),
    ("positional-output-dir", lambda p: TrainingArguments(str(p)), ConfigTypeError, TypeError, ("keyword", "output_dir=")),
    ("bf16-unsupported-gpu", lambda p: _bf16_on_old_gpu(p), ConfigError, ValueError, ("bf16=True", "bfloat16", "fp16=True")),
]


def _hf_args(p: Path, **kw: Any) -> Any:
    import transformers

    return transformers.TrainingArguments(output_dir=str(p), report_to="none", **kw)


def _bf16_on_old_gpu(p: Path) -> Any:
    """bf16=True on a CUDA device without bfloat16 (a V100, say): the device checks are patched."""
    from unittest import mock

    import trainkit.args as targs

    with mock.patch.object(torch.cuda, "is_available", lambda: True), mock.patch.object(targs, "_cuda_bf16", lambda: False), \
            mock.patch.object(torch.cuda, "get_device_name", lambda *a: "Tesla V100"):
        return _args(p, bf16=True)


def _file(p: Path) -> Path:
    f = p / "a_file"
    f.write_text("not a directory")
    return f


DATA: list[Case] = [
    ("empty-dataset", lambda p: _trainer(p, train_dataset=_ds([])).train(), ConfigError, ValueError,
     ("train_dataset", "empty", "0 rows")),
    ("iterable-without-max-steps", lambda p: _trainer(p, args=_args(p, max_steps=-1), train_dataset=_ds().to_iterable_dataset()).train(),
     ConfigError, ValueError, ("max_steps", "IterableDataset")),
    ("label-column-not-renamed", lambda p: _trainer(p, train_dataset=_ds(label="label"), data_collator=_stack_collator).train(),
     ConfigError, ValueError, ("'label'", "'labels'", "rename_column")),
    ("string-labels", lambda p: _trainer(p, train_dataset=_ds([{**r, "labels": ["neg", "pos"][i % 2]} for i, r in enumerate(_rows())])).train(),
     ConfigError, ValueError, ("labels", "str", "'neg'", "ClassLabel")),
    ("remove-unused-drops-every-column", lambda p: _trainer(p, train_dataset=_ds([{"text": "a b", "y": 1}] * 8)).train(),
     ConfigError, ValueError, ("remove_unused_columns", "'text'", "'y'", "forward")),
    ("remove-unused-drops-collator-column", lambda p: _trainer(
        p, train_dataset=_ds([{**r, "text": "a b"} for r in _rows()]),
        data_collator=lambda rows: {**_stack_collator([{k: r[k] for k in ("input_ids", "labels")} for r in rows]),
                                    "n_words": torch.tensor([len(r["text"].split()) for r in rows])}).train(),
     ConfigError, ValueError, ("'text'", "remove_unused_columns=False")),
    ("ragged-without-padding-collator", lambda p: _trainer(p, train_dataset=_ds(ragged=True)).train(), ConfigError, ValueError,
     ("'input_ids'", "different lengths", "processing_class")),
    ("batch-larger-than-dataset-drop-last", lambda p: _trainer(
        p, args=_args(p, per_device_train_batch_size=16, dataloader_drop_last=True, max_steps=-1)).train(), ConfigError, ValueError,
     ("per_device_train_batch_size=16", "8", "dataloader_drop_last")),
    ("items-not-mappings", lambda p: _trainer(p, train_dataset=[3, 1, 4, 1, 5, 9, 2, 6], data_collator=lambda rows: rows).train(),
     ConfigError, ValueError, ("list of int", "mapping")),
]

MODEL: list[Case] = [
    ("forward-returns-no-loss", lambda p: _trainer(p, model=HeadlessLoss()).train(), ConfigError, ValueError,
     ("'loss'", "'logits'", "compute_loss_func")),
    ("headless-base-model", lambda p: _trainer(p, model=_base_bert()).train(), ConfigError, ValueError,
     ("BertModel", "head", "ForSequenceClassification")),
    ("no-trainable-parameters", lambda p: _trainer(p, model=_frozen_bert()).train(), ConfigError, ValueError,
     ("trainable", "requires_grad")),
    ("metrics-shape-mismatch", lambda p: _trainer(p, eval_dataset=_ds(), compute_metrics=lambda e: {"acc": float((e.predictions == e.label_ids).mean())}).evaluate(),
     ConfigError, ValueError, ("compute_metrics", "(8, 3)", "(8,)")),
    ("metric-for-best-model-missing", lambda p: _trainer(p, args=_args(
        p, eval_strategy="steps", eval_steps=1, save_strategy="steps", save_steps=1, metric_for_best_model="f1", load_best_model_at_end=True),
        eval_dataset=_ds(), compute_metrics=lambda e: {"accuracy": 1.0}).train(),
     ConfigError, KeyError, ("metric_for_best_model", "'f1'", "eval_accuracy", "eval_loss")),
]

NUMERICS: list[Case] = [
    ("nan-loss-at-step", lambda p: _trainer(p, model=NaNAt(bad_step=1), args=_args(p, max_steps=3)).train(), NonFiniteError,
     FloatingPointError, ("step 1", "non-finite", "on_nonfinite")),
]

CHECKPOINTS: list[Case] = [
    ("resume-path-missing", lambda p: _trainer(p).train(resume_from_checkpoint=str(p / "nope")), CheckpointError, OSError,
     ("nope", "does not exist", "checkpoint-N")),
    ("resume-path-not-a-checkpoint", lambda p: _trainer(p).train(resume_from_checkpoint=str(_empty_dir(p))), CheckpointError, OSError,
     ("empty", "not a checkpoint")),
    ("checkpoint-from-other-model", lambda p: _trainer(p / "new", model=tiny_bert(num_labels=5)).train(resume_from_checkpoint=str(_checkpoint(p))),
     CheckpointError, OSError, ("classifier.weight", "(3, 32)", "(5, 32)")),
    ("corrupted-checkpoint-file", lambda p: _trainer(p / "new").train(resume_from_checkpoint=str(_corrupt(_checkpoint(p)))),
     CheckpointError, OSError, ("model.safetensors",)),
]


def _empty_dir(p: Path) -> Path:
    d = p / "empty"
    d.mkdir()
    return d


def _corrupt(checkpoint: Path) -> Path:
    path = checkpoint / "model.safetensors"
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))
    return checkpoint


ALL = ARGUMENTS + DATA + MODEL + NUMERICS + CHECKPOINTS


@pytest.mark.parametrize("case", ALL, ids=[c[0] for c in ALL])
def test_error_names_the_problem_and_the_fix(case: Case, tmp_path: Path) -> None:
    """Each bad input raises a TrainkitError that is also the builtin it refines, whose message
    holds the argument/column, the value received and the fix; nothing is left in output_dir."""
    _, action, kind, builtin, words = case
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with pytest.raises(kind) as raised:
            action(tmp_path)
    error = raised.value
    assert isinstance(error, TrainkitError) and isinstance(error, builtin), type(error).__mro__
    message = str(error.args[0]) if isinstance(error, KeyError) else str(error)
    missing = [w for w in words if w.lower() not in message.lower()]
    assert not missing, f"{missing} not in: {message}"
    assert "Traceback" not in message
    if case in ARGUMENTS + DATA + MODEL:  # configuration errors: no run folder, no checkpoint, no log
        written = [f for f in tmp_path.rglob("*") if f.name != "a_file"]
        assert written == [], written


# --- beyond the table ------------------------------------------------------------------------------


def test_output_dir_under_a_file_is_refused(tmp_path):
    """An output_dir whose parent is a file can never be created: refused at construction, naming the file."""
    with pytest.raises(ConfigError, match="a_file.*is a file"):
        _trainer(tmp_path, args=_args(_file(tmp_path) / "run"))


def test_a_configuration_error_leaves_existing_checkpoints_untouched(tmp_path):
    """A failing train(resume_from_checkpoint=...) (here: a dataset the model cannot take) changes no byte
    of the checkpoints already in output_dir and adds no file."""
    checkpoint = _checkpoint(tmp_path)
    before = {p: p.read_bytes() for p in (tmp_path / "run").rglob("*") if p.is_file()}
    trainer = Trainer(model=tiny_bert(), args=_args(tmp_path / "run", save_strategy="steps", save_steps=1, max_steps=4),
                      train_dataset=_ds(label="label"), data_collator=_stack_collator)
    with pytest.raises(ConfigError, match="no 'loss'"):
        trainer.train(resume_from_checkpoint=str(checkpoint))
    after = {p: p.read_bytes() for p in (tmp_path / "run").rglob("*") if p.is_file()}
    assert after == before


def test_warmup_longer_than_training_warns(tmp_path):
    """warmup_steps beyond the run's steps is allowed (transformers allows it) but warned about, with both numbers."""
    trainer = _trainer(tmp_path, args=_args(tmp_path, max_steps=2, warmup_steps=10))
    with pytest.warns(TrainkitWarning, match=r"warmup_steps=10.*2 steps"):
        trainer.train()


def test_check_is_a_dry_run(tmp_path):
    """Trainer.check() returns the first batches' losses and changes nothing: parameters, dropout RNG,
    module modes and the output folder are as before, and the following train() equals one without check()."""
    def run(check: bool) -> tuple[dict, list[torch.Tensor]]:
        model = tiny_bert(dropout=0.1)
        trainer = _trainer(tmp_path / str(check), model=model, args=_args(tmp_path / str(check), eval_strategy="steps", eval_steps=1),
                           eval_dataset=_ds())
        found = {}
        if check:
            params, rng = [p.detach().clone() for p in model.parameters()], torch.get_rng_state()
            found = trainer.check()
            assert all(torch.equal(a, b) for a, b in zip(params, model.parameters()))
            assert torch.equal(rng, torch.get_rng_state()) and model.training
            assert not (tmp_path / str(check)).exists()
        trainer.train()
        return found, [p.detach().clone() for p in model.parameters()]

    found, checked = run(True)
    _, plain = run(False)
    assert set(found) == {"train_loss", "eval_loss"} and all(math.isfinite(v) and v > 0 for v in found.values())
    assert all(torch.equal(a, b) for a, b in zip(checked, plain))


def test_check_raises_what_train_would(tmp_path):
    """check() finds the same problem train() would, without training: here the renamed label column."""
    trainer = _trainer(tmp_path, train_dataset=_ds(label="label"), data_collator=_stack_collator)
    with pytest.raises(ConfigError, match="rename_column"):
        trainer.check()
    assert trainer.state.global_step == 0


def test_a_callback_error_in_the_first_step_is_not_disguised(tmp_path):
    """An error raised by a callback inside the first step is the callback's own, not a 'batch failure'."""
    from transformers import TrainerCallback

    class Broken(TrainerCallback):
        def on_pre_optimizer_step(self, args, state, control, **kwargs):
            raise RuntimeError("my callback is broken")

    with pytest.raises(RuntimeError, match="^my callback is broken$"):
        _trainer(tmp_path, callbacks=[Broken()]).train()


def test_a_torch_failure_in_the_first_batch_names_the_batch(tmp_path):
    """A token id beyond the vocabulary fails deep in torch; the error names the batch's shapes, the model and
    the configuration to check, and keeps torch's error as its cause."""
    rows = [{**r, "input_ids": [VOCAB + 5] * SEQ} for r in _rows()]
    with pytest.raises(ConfigError) as raised:
        _trainer(tmp_path, train_dataset=_ds(rows)).train()
    message = str(raised.value)
    assert "the first training batch" in message and "'input_ids': (4, 6) int64" in message
    assert "BertForSequenceClassification" in message and "vocabulary size" in message
    assert isinstance(raised.value.__cause__, (IndexError, RuntimeError))


def test_check_explains_a_headless_model(tmp_path):
    """check() on a base model names its real output keys and the head to load."""
    with pytest.raises(ConfigError) as raised:
        _trainer(tmp_path, model=_base_bert()).check()
    message = str(raised.value)
    assert "last_hidden_state" in message and "BertForSequenceClassification" in message and "(4, 6) int64" in message


class NaNOnce(NaNAt):
    """NaN only at forward call ``bad_step + 1`` (one bad batch), finite otherwise."""

    def forward(self, input_ids, attention_mask=None, labels=None):
        out = super().forward(input_ids, attention_mask, labels)
        if self.calls > self.bad_step + 1:
            out["loss"] = nn.functional.cross_entropy(out["logits"], labels)
        return out


def test_nan_at_step_n_leaves_the_parameters_of_step_n(tmp_path):
    """NonFiniteError at step 1 (the second update): the parameters are those after step 0, bit for bit."""
    torch.manual_seed(0)
    bad = NaNAt(bad_step=1)
    torch.manual_seed(0)
    good = NaNAt(bad_step=99)
    with pytest.raises(NonFiniteError, match="step 1"):
        _trainer(tmp_path / "bad", model=bad, args=_args(tmp_path / "bad", max_steps=3)).train()
    _trainer(tmp_path / "good", model=good, args=_args(tmp_path / "good", max_steps=1)).train()
    assert all(torch.equal(a, b) for a, b in zip(bad.parameters(), good.parameters()))


def test_on_nonfinite_skip_skips_the_update_and_trains_on(tmp_path):
    """TrainingArguments(on_nonfinite="skip"): the NaN batch's update is skipped (not counted), training reaches
    max_steps on the following batches, and every parameter stays finite."""
    torch.manual_seed(0)
    model = NaNOnce(bad_step=1)
    trainer = _trainer(tmp_path, model=model, args=_args(tmp_path, max_steps=3, on_nonfinite="skip"),
                       train_dataset=_ds(_rows(16)))
    out = trainer.train()
    assert out.global_step == 3 and trainer._train_state.progress.skipped == 1 and model.calls == 4
    assert all(torch.isfinite(p).all() for p in model.parameters())
    with pytest.raises(ConfigError, match="on_nonfinite='ignore'"):
        _args(tmp_path, on_nonfinite="ignore")


# --- properties of the pieces ------------------------------------------------------------------------

from hypothesis import given  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from tests.strategies import mlp_batch, seeds  # noqa: E402


@given(rows=st.integers(0, 40), batch=st.integers(1, 16), world=st.integers(1, 4), drop_last=st.booleans())
def test_check_train_dataset_refuses_exactly_the_sets_without_a_batch(rows, batch, world, drop_last):
    """Property: check_train_dataset raises (naming the rows and the fix) exactly when no batch can be made:
    an empty set, or fewer rows than one global batch with drop_last; otherwise it returns None."""
    from trainkit.checks import check_train_dataset
    from trainkit.data import num_batches

    no_batch = rows == 0 or num_batches(rows, batch, drop_last=drop_last, world_size=world) == 0
    if no_batch:
        with pytest.raises(ConfigError, match="Fix:"):
            check_train_dataset(list(range(rows)), batch_size=batch, world_size=world, drop_last=drop_last)
    else:
        assert check_train_dataset(list(range(rows)), batch_size=batch, world_size=world, drop_last=drop_last) is None


@given(seed=seeds, rows=st.integers(1, 9), dropout=st.sampled_from([0.0, 0.5]))
def test_dry_run_is_the_eval_loss_and_changes_nothing(seed, rows, dropout):
    """Property: dry_run returns the batch's loss in eval mode (dropout off), and leaves the parameters,
    the global RNG and every module's mode exactly as they were."""
    from tests.strategies import mlp
    from trainkit import dry_run, init_state

    model = mlp(seed=seed % 5, dropout=dropout)
    batch = mlp_batch(seed, rows)
    state = init_state(model, torch.optim.SGD(model.parameters(), lr=0.1))
    params, rng = [p.detach().clone() for p in model.parameters()], torch.get_rng_state()
    loss = dry_run(state, batch, label_names=["labels"], where="the batch")
    model.eval()
    with torch.no_grad():
        expected = model(**batch)["loss"].item()
    model.train()
    assert loss == expected
    assert all(torch.equal(a, b) for a, b in zip(params, model.parameters())) and torch.equal(rng, torch.get_rng_state())
    assert all(m.training for m in model.modules())


@given(shapes=st.lists(st.lists(st.integers(1, 5), min_size=1, max_size=3), min_size=1, max_size=4))
def test_describe_batch_names_every_column_with_its_shape(shapes):
    """Property: describe_batch names every column of a batch with its shape and dtype."""
    from trainkit.checks import describe_batch

    batch = {f"c{i}": torch.zeros(shape, dtype=torch.int64 if i % 2 else torch.float32) for i, shape in enumerate(shapes)}
    text = describe_batch(batch)
    assert all(f"'{k}': {tuple(v.shape)} {str(v.dtype).removeprefix('torch.')}" in text for k, v in batch.items())
