"""trainkit.Trainer as a drop-in transformers.Trainer: the same run, side by side with the real one.

Every comparison trains a real ``transformers.Trainer`` (5.24) and a ``trainkit.Trainer`` on the
same tiny model, data and arguments, and checks what a user of the Trainer can observe: the
constructor's signature, the callback events (name and ``global_step``) and their keyword
arguments, ``log_history``, ``TrainOutput``/``evaluate``/``predict`` keys, checkpoint folders,
early stopping, the best model, and the options and errors of the constructor.

What is *not* compared, on purpose: loss values during training (trainkit weights gradient
accumulation by label items, transformers 5.24 sums the per-micro-batch means of a BERT
classifier: see docs/functional-core.md), timing values, and ``*_model_preparation_time``
(transformers adds it to an evaluation run before the model was ever prepared for training).
"""

from __future__ import annotations

import copy
import functools
import importlib.util
import inspect
import os
import sys
import tempfile
from pathlib import Path

import datasets
import numpy as np
import pytest
import torch
import transformers
from hypothesis import given, settings
from hypothesis import strategies as st
from safetensors.torch import load_file
from torch import nn
from transformers import EarlyStoppingCallback, TrainerCallback
from transformers.trainer_callback import DefaultFlowCallback, PrinterCallback, ProgressCallback
from transformers.trainer_utils import PredictionOutput, TrainOutput

import trainkit
from tests.strategies import VOCAB, mlp
from trainkit import ConfigError, TrainingArguments, UnsupportedOptionError
from trainkit.checkpoint import load_model_weights

HF, TK = transformers.Trainer, trainkit.Trainer
EVENTS = tuple(name for name in dir(TrainerCallback) if name.startswith("on_"))
HF_ONLY_KEYS = ("_model_preparation_time",)


# ---- shared objects: a real tokenizer, real datasets, tiny real models ---------------------------


@functools.cache
def _offline():
    """examples/offline.py: a local BertTokenizerFast, generated reviews and a tiny BERT."""
    path = Path(__file__).resolve().parents[1] / "examples" / "offline.py"
    spec = importlib.util.spec_from_file_location("trainkit_examples_offline", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _tokenizer():
    return _offline().load_tokenizer()


@functools.cache
def _reviews(n: int, seed: int = 0) -> datasets.Dataset:
    """n tokenized reviews of different lengths (``input_ids``, ``attention_mask``, ``labels``)."""
    tok = _tokenizer()
    raw = _offline().load_reviews(n, seed=seed)
    data = raw.map(lambda b: tok(b["text"], truncation=True, max_length=32), batched=True)
    return data.remove_columns(["text"]).rename_column("label", "labels")


def _classifier(seed: int = 0) -> nn.Module:
    """AutoModelForSequenceClassification from a tiny BertConfig (hidden 32, 2 layers)."""
    return _offline().load_model(2, seed=seed)


@functools.cache
def _vectors(n: int, seed: int = 0) -> datasets.Dataset:
    """n rows of ``x`` (8 floats) and a class label, for the plain-module MLP of tests/strategies.py."""
    gen = torch.Generator().manual_seed(seed)
    return datasets.Dataset.from_dict(
        {"x": torch.randn(n, 8, generator=gen).tolist(), "labels": torch.randint(0, 3, (n,), generator=gen).tolist()}
    )


def _hf_args(output_dir, **overrides) -> transformers.TrainingArguments:
    options = dict(
        output_dir=str(output_dir), per_device_train_batch_size=4, per_device_eval_batch_size=4, num_train_epochs=2,
        report_to="none", disable_tqdm=True, use_cpu=True, save_strategy="no", seed=0,
    )
    options.update(overrides)
    return transformers.TrainingArguments(**options)


def _accuracy(p) -> dict:
    predictions = p.predictions if p.predictions.ndim == 1 else p.predictions.argmax(-1)
    return {"accuracy": float((predictions == p.label_ids).mean())}


def _checkpoints(output_dir) -> list[str]:
    return sorted((p.name for p in Path(output_dir).iterdir() if p.name.startswith("checkpoint-")), key=lambda n: int(n.split("-")[1]))


def _keys(metrics: dict) -> set[str]:
    return {k for k in metrics if not k.endswith(HF_ONLY_KEYS)}


def _log_kinds(log_history: list[dict]) -> list[tuple[str, int]]:
    """log_history as (kind, step): a training log, an evaluation, or the end-of-training summary."""
    kind = lambda entry: "train" if "loss" in entry else "summary" if "train_runtime" in entry else "eval"  # noqa: E731
    return [(kind(entry), entry["step"]) for entry in log_history]


def _callback_kinds(trainer) -> list[str]:
    """The callbacks' classes as transformers names them (trainkit's FlowCallback is a DefaultFlowCallback)."""
    return [next(c.__name__ for c in type(cb).__mro__ if c.__module__.startswith("transformers")) for cb in trainer.callback_handler.callbacks]


class Recorder(TrainerCallback):
    """Records every event: (name, global_step), the epoch, and the keyword arguments given (not None)."""

    def __init__(self) -> None:
        self.events: list[tuple[str, int]] = []
        self.epochs: list[tuple[str, float | None]] = []
        self.kwargs: dict[str, set[str]] = {}

    def record(self, name: str, state, kwargs: dict) -> None:
        self.events.append((name, state.global_step))
        self.epochs.append((name, None if state.epoch is None else round(state.epoch, 6)))
        self.kwargs.setdefault(name, set()).update(k for k, v in kwargs.items() if v is not None)


def _recording_method(name: str):
    def method(self, args, state, control, **kwargs):
        self.record(name, state, kwargs)

    method.__name__ = name
    return method


for _name in EVENTS:
    setattr(Recorder, _name, _recording_method(_name))


def _metric_sequence(values):
    """A compute_metrics returning ``values`` in turn as the accuracy (deterministic, whatever the model)."""
    calls = iter(values)
    return lambda p: {"accuracy": next(calls)}


# ---- 1. the signature ----------------------------------------------------------------------------


def test_init_signature_equals_transformers():
    """Parameter names, order, kinds and defaults of __init__ are transformers.Trainer's."""
    ours = inspect.signature(TK.__init__).parameters
    theirs = inspect.signature(HF.__init__).parameters
    assert list(ours) == list(theirs)
    for name, param in theirs.items():
        assert ours[name].kind == param.kind, name
        assert ours[name].default == param.default, name


# ---- 2. one shared run of each: events, kwargs, logs, state, checkpoints ---------------------------

PAIRED = dict(
    gradient_accumulation_steps=2, num_train_epochs=2, eval_strategy="steps", eval_steps=2, logging_steps=1,
    save_strategy="steps", save_steps=3,
)


@pytest.fixture(scope="module")
def paired(tmp_path_factory):
    """A tiny BERT run by each Trainer: 20 reviews, batch 4, GA 2 (the last window holds one micro-batch)."""
    runs = {}
    for cls in (HF, TK):
        recorder = Recorder()
        out = tmp_path_factory.mktemp(cls.__module__.split(".")[0])
        trainer = cls(
            model=_classifier(), args=_hf_args(out, **PAIRED), train_dataset=_reviews(20), eval_dataset=_reviews(8, seed=1),
            processing_class=_tokenizer(), compute_metrics=_accuracy, callbacks=[recorder],
        )
        result = trainer.train()
        # Evaluate now: building another transformers.TrainingArguments resets accelerate's shared state,
        # after which an earlier transformers.Trainer can no longer build dataloaders.
        evaluations = (trainer.evaluate(), trainer.evaluate({"short": _reviews(6, seed=2), "long": _reviews(10, seed=3)}))
        runs[cls] = (trainer, recorder, result, out, evaluations)
    return runs


def test_callback_events_equal_transformers(paired):
    """Every event, in order, with the global_step it sees, is transformers.Trainer's."""
    hf, tk = paired[HF][1], paired[TK][1]
    names = {name for name, _ in tk.events}
    assert {"on_substep_end", "on_pre_optimizer_step", "on_optimizer_step", "on_prediction_step", "on_save", "on_evaluate"} <= names
    assert tk.events == hf.events


def test_callback_epochs_equal_transformers(paired):
    """state.epoch at each event is transformers.Trainer's."""
    assert paired[TK][1].epochs == paired[HF][1].epochs


def test_callback_kwargs_equal_transformers(paired):
    """Each event receives the keyword arguments transformers passes (model, processing_class, optimizer,
    lr_scheduler, train_dataloader, eval_dataloader, metrics, logs)."""
    hf, tk = paired[HF][1].kwargs, paired[TK][1].kwargs
    assert {"model", "processing_class", "optimizer", "lr_scheduler"} <= tk["on_step_end"]
    assert "metrics" in tk["on_evaluate"] and "logs" in tk["on_log"]
    assert set(tk) == set(hf)
    for event in set(hf) - {"on_train_begin"}:  # on_train_begin: see the dedicated test below
        assert tk[event] == hf[event], event


def test_on_train_begin_receives_the_train_dataloader(paired):
    """transformers sets the handler's train_dataloader before on_train_begin; callbacks read it there."""
    assert paired[TK][1].kwargs["on_train_begin"] == paired[HF][1].kwargs["on_train_begin"]


def test_log_history_equals_transformers(paired):
    """The same training logs, evaluations and summary, at the same steps, with the same keys."""
    hf, tk = paired[HF][0], paired[TK][0]
    assert _log_kinds(tk.state.log_history) == _log_kinds(hf.state.log_history)
    for ours, theirs in zip(tk.state.log_history, hf.state.log_history):
        assert _keys(ours) == _keys(theirs)
        assert ours["epoch"] == pytest.approx(theirs["epoch"])
        if "learning_rate" in theirs:
            assert ours["learning_rate"] == pytest.approx(theirs["learning_rate"])


def test_train_output_keys_equal_transformers(paired):
    """train() returns a TrainOutput(global_step, training_loss, metrics) with transformers' metric keys."""
    hf, tk = paired[HF][2], paired[TK][2]
    assert isinstance(tk, TrainOutput)
    assert tk.global_step == hf.global_step == 6
    assert set(tk.metrics) == set(hf.metrics) >= {"train_runtime", "train_samples_per_second", "train_steps_per_second", "train_loss", "epoch"}
    assert tk.training_loss == tk.metrics["train_loss"] and np.isfinite(tk.training_loss)
    assert tk.metrics["epoch"] == hf.metrics["epoch"] == 2.0


def test_state_fields_equal_transformers(paired):
    """trainer.state is a transformers TrainerState with transformers' values for the run's counters."""
    hf, tk = paired[HF][0], paired[TK][0]
    assert isinstance(tk.state, transformers.TrainerState)
    for field in ("global_step", "epoch", "max_steps", "num_train_epochs", "train_batch_size", "logging_steps", "eval_steps",
                  "save_steps", "best_metric", "best_model_checkpoint", "is_world_process_zero"):
        assert getattr(tk.state, field) == getattr(hf.state, field), field
    assert len(tk.state.log_history) == len(hf.state.log_history)


def test_checkpoint_folders_equal_transformers(paired):
    """save_strategy="steps": checkpoint-N folders at transformers' steps, each openable by from_pretrained."""
    hf_dir, tk_dir = paired[HF][3], paired[TK][3]
    assert _checkpoints(tk_dir) == _checkpoints(hf_dir) == ["checkpoint-3", "checkpoint-6"]
    model = transformers.AutoModelForSequenceClassification.from_pretrained(tk_dir / "checkpoint-6")
    trained = paired[TK][0].model
    batch = transformers.DataCollatorWithPadding(_tokenizer())([{k: v for k, v in r.items() if k != "labels"} for r in _reviews(8, seed=1)])
    model.eval(), trained.eval()
    with torch.no_grad():
        torch.testing.assert_close(model(**batch).logits, trained(**batch).logits)
    state = transformers.TrainerState.load_from_json(str(tk_dir / "checkpoint-6" / "trainer_state.json"))
    assert state.global_step == 6


def test_evaluate_keys_equal_transformers(paired):
    """evaluate(): eval_loss, eval_<metric>, speed metrics and epoch, as transformers; a dict gives eval_{name}_*."""
    (ours, ours_dict), (theirs, theirs_dict) = paired[TK][4], paired[HF][4]
    assert _keys(ours) == _keys(theirs) == {"eval_loss", "eval_accuracy", "eval_runtime", "eval_samples_per_second", "eval_steps_per_second", "epoch"}
    assert 0 <= ours["eval_accuracy"] <= 1 and ours["epoch"] == theirs["epoch"] == 2.0
    assert _keys(ours_dict) == _keys(theirs_dict)
    assert {"eval_short_loss", "eval_long_accuracy", "eval_long_runtime"} <= set(ours_dict)


# ---- control flags and early stopping -----------------------------------------------------------


class StopAtStep(TrainerCallback):
    def __init__(self, step: int) -> None:
        self.step = step

    def on_step_end(self, args, state, control, **kwargs):
        if state.global_step == self.step:
            control.should_training_stop = True


def test_should_training_stop_from_a_callback(tmp_path):
    """A callback setting control.should_training_stop at step 3 ends training at 3, as in transformers."""
    events = {}
    for cls in (HF, TK):
        recorder = Recorder()
        trainer = cls(model=_classifier(), args=_hf_args(tmp_path / cls.__module__, num_train_epochs=3), train_dataset=_reviews(16),
                      processing_class=_tokenizer(), callbacks=[StopAtStep(3), recorder])
        assert trainer.train().global_step == 3
        events[cls] = recorder.events
    assert events[TK] == events[HF]
    after = events[TK][events[TK].index(("on_step_end", 3)) + 1 :]
    assert [name for name, _ in after] == ["on_epoch_end", "on_log", "on_train_end"]  # on_log: the train summary


def test_early_stopping_stops_where_transformers_does(tmp_path):
    """EarlyStoppingCallback(patience=1): accuracy 0.5, 0.7, then flat 0.6 stops after epoch 3, as in transformers;
    the best checkpoint and metric are transformers'."""
    results = {}
    for cls in (HF, TK):
        args = _hf_args(tmp_path / cls.__module__, num_train_epochs=6, eval_strategy="epoch", save_strategy="epoch", logging_strategy="epoch",
                        load_best_model_at_end=True, metric_for_best_model="accuracy")
        trainer = cls(model=_classifier(), args=args, train_dataset=_reviews(8), eval_dataset=_reviews(4, seed=1), processing_class=_tokenizer(),
                      compute_metrics=_metric_sequence([0.5, 0.7, 0.6, 0.6, 0.6, 0.6]), callbacks=[EarlyStoppingCallback(early_stopping_patience=1)])
        output = trainer.train()
        best = trainer.state.best_model_checkpoint
        results[cls] = (output.global_step, trainer.state.best_metric, Path(best).name, _checkpoints(args.output_dir))
    assert results[TK] == results[HF] == (6, 0.7, "checkpoint-4", ["checkpoint-2", "checkpoint-4", "checkpoint-6"])


# ---- checkpoints by strategy -------------------------------------------------------------------


def _mlp_run(cls, output_dir, *, metrics=None, **overrides):
    """The MLP of tests/strategies.py on 8 rows: 2 updates an epoch at batch 4."""
    trainer = cls(model=mlp(dtype=torch.float32), args=_hf_args(output_dir, **overrides), train_dataset=_vectors(8),
                  eval_dataset=_vectors(4, seed=1), compute_metrics=metrics)
    trainer.train()
    return trainer


@pytest.mark.parametrize(
    "options",
    [
        dict(save_strategy="epoch", num_train_epochs=3),
        dict(save_strategy="steps", save_steps=1, save_total_limit=2, num_train_epochs=2),
    ],
    ids=["epoch", "steps-limit-2"],
)
def test_checkpoint_strategy_folders_equal_transformers(tmp_path, options):
    """save_strategy="epoch" and save_total_limit=2 leave transformers' checkpoint folders."""
    folders = {cls: _checkpoints(_mlp_run(cls, tmp_path / cls.__module__, **options).args.output_dir) for cls in (HF, TK)}
    assert folders[TK] == folders[HF]
    assert folders[TK] == (["checkpoint-2", "checkpoint-4", "checkpoint-6"] if options["save_strategy"] == "epoch" else ["checkpoint-3", "checkpoint-4"])


def test_save_total_limit_keeps_the_best(tmp_path):
    """save_total_limit=2 with load_best_model_at_end keeps the best checkpoint and the newest, as transformers."""
    folders = {}
    for cls in (HF, TK):
        trainer = _mlp_run(cls, tmp_path / cls.__module__, metrics=_metric_sequence([0.5, 0.9, 0.6, 0.7, 0.6, 0.6]), num_train_epochs=6,
                           eval_strategy="epoch", save_strategy="epoch", logging_strategy="epoch", save_total_limit=2,
                           load_best_model_at_end=True, metric_for_best_model="accuracy")
        folders[cls] = (_checkpoints(trainer.args.output_dir), Path(trainer.state.best_model_checkpoint).name)
    assert folders[TK] == folders[HF] == (["checkpoint-4", "checkpoint-12"], "checkpoint-4")


def test_save_total_limit_1_keeps_only_the_best_after_training(tmp_path):
    """save_total_limit=1 with load_best_model_at_end: the newest checkpoint is kept beside the best during training
    (to resume), and transformers deletes it when training ends, leaving only the best."""
    folders = {}
    for cls in (HF, TK):
        trainer = _mlp_run(cls, tmp_path / cls.__module__, metrics=_metric_sequence([0.5, 0.9, 0.6]), num_train_epochs=3,
                           eval_strategy="epoch", save_strategy="epoch", logging_strategy="epoch", save_total_limit=1,
                           load_best_model_at_end=True, metric_for_best_model="accuracy")
        folders[cls] = _checkpoints(trainer.args.output_dir)
    assert folders[TK] == folders[HF] == ["checkpoint-4"]


def test_save_strategy_best_saves_only_improvements(tmp_path):
    """save_strategy="best" writes a checkpoint only when the metric improves (transformers' folders)."""
    folders = {}
    for cls in (HF, TK):
        trainer = _mlp_run(cls, tmp_path / cls.__module__, metrics=_metric_sequence([0.5, 0.7, 0.6, 0.8, 0.6]), num_train_epochs=5,
                           eval_strategy="epoch", save_strategy="best", logging_strategy="epoch", metric_for_best_model="accuracy")
        folders[cls] = (_checkpoints(trainer.args.output_dir), trainer.state.best_metric)
    assert folders[TK] == folders[HF] == (["checkpoint-2", "checkpoint-4", "checkpoint-8"], 0.8)


def test_load_best_model_at_end_restores_the_best_weights(tmp_path):
    """After training, the model holds the best checkpoint's weights (not the last step's)."""
    trainer = _mlp_run(TK, tmp_path, metrics=_metric_sequence([0.5, 0.9, 0.6]), num_train_epochs=3, learning_rate=0.05,
                       eval_strategy="epoch", save_strategy="epoch", logging_strategy="epoch",
                       load_best_model_at_end=True, metric_for_best_model="accuracy")
    assert Path(trainer.state.best_model_checkpoint).name == "checkpoint-4"
    best, last = (load_file(str(tmp_path / name / "model.safetensors")) for name in ("checkpoint-4", "checkpoint-6"))
    state = trainer.model.state_dict()
    assert any(not torch.equal(best[k], last[k]) for k in best)
    for name, tensor in best.items():
        torch.testing.assert_close(state[name], tensor, rtol=0, atol=0)


# ---- save_model ----------------------------------------------------------------------------------


def test_save_model_pretrained_reloads_with_auto_class(tmp_path):
    """save_model(dir) of a PreTrainedModel: AutoModelForSequenceClassification.from_pretrained(dir) gives the same
    logits, and the tokenizer (processing_class) is saved beside it."""
    tok = _tokenizer()
    trainer = TK(model=_classifier(), args=_hf_args(tmp_path / "out", num_train_epochs=1), train_dataset=_reviews(8), processing_class=tok)
    trainer.train()
    trainer.save_model(str(tmp_path / "saved"))
    reloaded = transformers.AutoModelForSequenceClassification.from_pretrained(tmp_path / "saved")
    tok2 = transformers.AutoTokenizer.from_pretrained(tmp_path / "saved")
    text = "a wonderful film and a dull plot"
    assert tok2(text)["input_ids"] == tok(text)["input_ids"]
    batch = tok([text, "the acting was awful"], padding=True, return_tensors="pt")
    reloaded.eval(), trainer.model.eval()
    with torch.no_grad():
        torch.testing.assert_close(reloaded(**batch).logits, trainer.model(**batch).logits, rtol=0, atol=0)


class TiedLM(nn.Module):
    """A plain nn.Module whose output layer shares the embedding's weight."""

    def __init__(self, seed: int) -> None:
        super().__init__()
        torch.manual_seed(seed)
        self.embed = nn.Embedding(VOCAB, 16)
        self.mix = nn.Linear(16, 16)
        self.head = nn.Linear(16, VOCAB, bias=False)
        self.head.weight = self.embed.weight

    def forward(self, input_ids, labels=None):
        logits = self.head(torch.tanh(self.mix(self.embed(input_ids))))
        out = {"logits": logits}
        if labels is not None:
            out["loss"] = nn.functional.cross_entropy(logits.flatten(0, 1), labels.flatten())
        return out


def test_save_model_plain_module_keeps_tied_weights(tmp_path):
    """A plain nn.Module is saved as model.safetensors; load_model_weights restores it with the tie intact."""
    gen = torch.Generator().manual_seed(0)
    ids = torch.randint(1, VOCAB, (12, 6), generator=gen)
    rows = datasets.Dataset.from_dict({"input_ids": ids.tolist(), "labels": ids.roll(1, dims=1).tolist()})
    trainer = TK(model=TiedLM(0), args=_hf_args(tmp_path / "out", num_train_epochs=1, learning_rate=0.05), train_dataset=rows)
    trainer.train()
    trainer.save_model(str(tmp_path / "saved"))
    assert sorted(os.listdir(tmp_path / "saved")) == ["model.safetensors"]
    fresh = TiedLM(1)
    load_model_weights(fresh, tmp_path / "saved")
    assert fresh.head.weight is fresh.embed.weight
    for name, tensor in trainer.model.state_dict().items():
        torch.testing.assert_close(fresh.state_dict()[name], tensor, rtol=0, atol=0)
    with torch.no_grad():
        torch.testing.assert_close(fresh(ids)["logits"], trainer.model(ids)["logits"], rtol=0, atol=0)


# ---- predictions --------------------------------------------------------------------------------


def test_predict_pads_token_predictions_like_transformers(tmp_path):
    """predict() on token classification with batches of different lengths: predictions and label_ids padded
    with -100 across batches, equal to transformers'; test_* metrics."""
    tok = _tokenizer()
    tokens = _reviews(12, seed=4).map(lambda r: {"labels": [i % 3 for i in range(len(r["input_ids"]))]})
    config = transformers.BertConfig(vocab_size=tok.vocab_size, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                                     intermediate_size=37, num_labels=3)
    torch.manual_seed(0)
    model = transformers.BertForTokenClassification(config)
    collator = transformers.DataCollatorForTokenClassification(tok)
    outputs = {}
    for cls in (HF, TK):
        trainer = cls(model=copy.deepcopy(model), args=_hf_args(tmp_path / cls.__module__), data_collator=collator, processing_class=tok,
                      compute_metrics=lambda p: {"tokens": int((p.label_ids != -100).sum())})
        outputs[cls] = trainer.predict(tokens)
    ours, theirs = outputs[TK], outputs[HF]
    assert isinstance(ours, PredictionOutput)
    widths = {len(r) for r in tokens["input_ids"]}
    assert len(widths) > 1 and ours.predictions.shape == (12, max(widths), 3)
    assert (ours.predictions == -100).any()
    np.testing.assert_array_equal(ours.label_ids, theirs.label_ids)
    np.testing.assert_allclose(ours.predictions, theirs.predictions, rtol=1e-5, atol=1e-6)
    assert _keys(ours.metrics) == _keys(theirs.metrics) >= {"test_loss", "test_tokens", "test_runtime"}
    assert ours.metrics["test_tokens"] == theirs.metrics["test_tokens"]


def test_preprocess_logits_for_metrics_is_applied(tmp_path):
    """preprocess_logits_for_metrics runs on each batch: compute_metrics gets argmax ids, as in transformers."""
    seen, metrics = {}, {}
    model = _classifier()
    for cls in (HF, TK):
        def compute(p, cls=cls):
            seen[cls] = p.predictions.shape
            return _accuracy(p)

        trainer = cls(model=copy.deepcopy(model), args=_hf_args(tmp_path / cls.__module__), eval_dataset=_reviews(10, seed=5),
                      processing_class=_tokenizer(), compute_metrics=compute,
                      preprocess_logits_for_metrics=lambda logits, labels: logits.argmax(-1))
        metrics[cls] = trainer.evaluate()
    assert seen[TK] == seen[HF] == (10,)
    assert metrics[TK]["eval_accuracy"] == metrics[HF]["eval_accuracy"]
    assert metrics[TK]["eval_loss"] == pytest.approx(metrics[HF]["eval_loss"], rel=1e-5)


# ---- models, optimizers, losses -----------------------------------------------------------------


def test_model_init_is_called_for_each_train(tmp_path):
    """model_init (no argument, or the trial) builds the model at construction and again for each train(),
    as transformers does; the trial it gets is None."""
    calls = {}

    def initializers(record: list):
        def no_arg():
            record.append("()")
            return mlp(dtype=torch.float32)

        def one_arg(trial):
            record.append(trial)
            return mlp(dtype=torch.float32)

        return no_arg, one_arg

    for cls in (HF, TK):
        calls[cls] = []
        for init in initializers(calls[cls]):
            trainer = cls(model_init=init, args=_hf_args(tmp_path / cls.__module__, num_train_epochs=1), train_dataset=_vectors(8))
            first = trainer.model
            trainer.train()
            second = trainer.model
            trainer.train()
            assert first is not second is not trainer.model
    assert calls[TK] == calls[HF] == ["()"] * 3 + [None] * 3


def test_optimizers_are_used_as_given(tmp_path):
    """optimizers=(opt, sched): that optimizer is stepped, and the logged learning rates follow that scheduler
    exactly as in transformers."""
    lrs = {}
    for cls in (HF, TK):
        model = mlp(dtype=torch.float32)
        before = [p.detach().clone() for p in model.parameters()]
        opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
        sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda step: 1.0 / (1 + step))
        trainer = cls(model=model, args=_hf_args(tmp_path / cls.__module__, logging_steps=1), train_dataset=_vectors(16), optimizers=(opt, sched))
        trainer.train()
        assert trainer.lr_scheduler is sched
        assert len(opt.state) == len(before)  # every parameter has AdamW moments: opt itself was stepped
        assert all(not torch.equal(a, b) for a, b in zip(before, model.parameters()))
        lrs[cls] = [entry["learning_rate"] for entry in trainer.state.log_history if "learning_rate" in entry]
        if cls is TK:
            assert trainer.optimizer is opt
    assert lrs[TK] == pytest.approx(lrs[HF]) and lrs[TK][:3] == pytest.approx([1e-2, 5e-3, 1e-2 / 3])


def test_given_scheduler_is_stepped_like_transformers(tmp_path):
    """The scheduler object advances with the updates (last_epoch, get_last_lr()), as transformers steps it:
    callbacks receive it as lr_scheduler= and read its learning rate."""
    seen = {}
    for cls in (HF, TK):
        model = mlp(dtype=torch.float32)
        opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
        sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda step: 1.0 / (1 + step))
        trainer = cls(model=model, args=_hf_args(tmp_path / cls.__module__), train_dataset=_vectors(16), optimizers=(opt, sched))
        trainer.train()
        seen[cls] = (sched.last_epoch, sched.get_last_lr())
    assert seen[TK] == seen[HF] == (8, [pytest.approx(1e-2 / 9)])  # 16 rows, batch 4, 2 epochs: 8 updates


def test_optimizer_cls_and_kwargs(tmp_path):
    """optimizer_cls_and_kwargs=(SGD, {lr, momentum}) builds that optimizer; learning rates match transformers'."""
    lrs = {}
    for cls in (HF, TK):
        trainer = cls(model=mlp(dtype=torch.float32), args=_hf_args(tmp_path / cls.__module__, logging_steps=1), train_dataset=_vectors(16),
                      optimizer_cls_and_kwargs=(torch.optim.SGD, {"lr": 0.1, "momentum": 0.9}))
        trainer.train()
        optimizer = getattr(trainer.optimizer, "optimizer", trainer.optimizer)  # transformers wraps it for accelerate
        assert isinstance(optimizer, torch.optim.SGD)
        assert all(group["momentum"] == 0.9 for group in optimizer.param_groups)
        assert all("momentum_buffer" in s for s in optimizer.state.values()) and optimizer.state
        lrs[cls] = [entry["learning_rate"] for entry in trainer.state.log_history if "learning_rate" in entry]
    assert lrs[TK] == pytest.approx(lrs[HF]) and lrs[TK][0] == pytest.approx(0.1)


def _item_counts(tmp_path, model_fn, train_dataset, eval_dataset, **extra) -> dict:
    """The num_items_in_batch each Trainer gives compute_loss_func over one epoch (GA 2) and one evaluation,
    and the losses logged (each the window's summed cross-entropy over its items)."""
    counts = {}
    for cls in (HF, TK):
        counts[cls] = []

        def loss(outputs, labels, num_items_in_batch, record=counts[cls]):
            record.append(int(num_items_in_batch))
            return nn.functional.cross_entropy(outputs["logits"], labels, reduction="sum") / num_items_in_batch

        trainer = cls(model=model_fn(), args=_hf_args(tmp_path / cls.__module__, num_train_epochs=1, gradient_accumulation_steps=2),
                      train_dataset=train_dataset, eval_dataset=eval_dataset, compute_loss_func=loss, **extra)
        trainer.train()
        trainer.evaluate()
    return counts


def test_compute_loss_func_gets_the_window_item_count(tmp_path):
    """compute_loss_func(outputs, labels, num_items_in_batch) is used in training and evaluation, and receives
    the label items of the whole accumulation window (20 rows, batch 4, GA 2: 8, 8, 4), as in transformers."""
    counts = _item_counts(tmp_path, _classifier, _reviews(20), _reviews(6, seed=1), processing_class=_tokenizer())
    assert counts[TK] == counts[HF]
    assert counts[TK][:5] == [8, 8, 8, 8, 4]


def test_compute_loss_func_with_a_plain_module(tmp_path):
    """compute_loss_func with a plain nn.Module whose forward takes no num_items_in_batch: transformers passes the
    count only to compute_loss_func, never to such a forward."""
    counts = _item_counts(tmp_path, lambda: mlp(dtype=torch.float32), _vectors(20), _vectors(6, seed=1))
    assert counts[TK] == counts[HF]
    assert counts[TK][:5] == [8, 8, 8, 8, 4]


class DoubleLossMixin:
    """A user's compute_loss override (transformers' signature): twice the model's loss."""

    calls: list[bool]

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        self.calls.append(return_outputs)
        outputs = model(**inputs)
        loss = 2 * outputs["loss"]
        return (loss, outputs) if return_outputs else loss


class DoubleLossTK(DoubleLossMixin, TK):
    pass


class DoubleLossHF(DoubleLossMixin, HF):
    pass


def test_subclass_compute_loss_is_used_in_training(tmp_path):
    """A subclass overriding compute_loss trains on its loss: the logged loss is twice the model's."""
    model = mlp(dtype=torch.float32)
    batch = {"x": torch.tensor(_vectors(8)["x"]), "labels": torch.tensor(_vectors(8)["labels"])}
    with torch.no_grad():
        plain = model(**batch)["loss"].item()
    trainer = DoubleLossTK(model=model, args=_hf_args(tmp_path, num_train_epochs=1, per_device_train_batch_size=8, learning_rate=1e-9, logging_steps=1),
                           train_dataset=_vectors(8))
    trainer.calls = []
    trainer.train()
    assert trainer.calls and not any(trainer.calls)
    assert trainer.state.log_history[0]["loss"] == pytest.approx(2 * plain, rel=1e-4)


def test_subclass_compute_loss_gives_predictions_in_evaluation(tmp_path):
    """evaluate() with an overridden compute_loss: transformers calls it with return_outputs=True and gathers the
    outputs' logits; eval_loss is the override's and compute_metrics runs."""
    metrics = {}
    model = mlp(dtype=torch.float32)
    for cls in (DoubleLossHF, DoubleLossTK):
        trainer = cls(model=copy.deepcopy(model), args=_hf_args(tmp_path / cls.__name__), eval_dataset=_vectors(12, seed=2), compute_metrics=_accuracy)
        trainer.calls = []
        metrics[cls] = trainer.evaluate()
        assert trainer.calls and all(trainer.calls)
    ours, theirs = metrics[DoubleLossTK], metrics[DoubleLossHF]
    assert _keys(ours) == _keys(theirs) >= {"eval_accuracy", "eval_loss"}
    assert ours["eval_accuracy"] == theirs["eval_accuracy"]
    assert ours["eval_loss"] == pytest.approx(theirs["eval_loss"], rel=1e-5)


# ---- callbacks list ----------------------------------------------------------------------------


def test_add_pop_remove_callbacks_like_transformers(tmp_path):
    """add_callback / pop_callback / remove_callback, by class and by instance, edit the list as transformers does."""
    lists = {}
    for cls in (HF, TK):
        trainer = cls(model=mlp(dtype=torch.float32), args=_hf_args(tmp_path / cls.__module__), callbacks=[Recorder])
        stopper = EarlyStoppingCallback()
        trace = [_callback_kinds(trainer)]
        trainer.add_callback(stopper)
        trainer.add_callback(PrinterCallback)
        trace.append(_callback_kinds(trainer))
        popped = trainer.pop_callback(EarlyStoppingCallback)
        assert popped is stopper
        trainer.add_callback(stopper)
        assert trainer.pop_callback(stopper) is stopper
        assert trainer.pop_callback(stopper) is None
        trace.append(_callback_kinds(trainer))
        recorder = next(cb for cb in trainer.callback_handler.callbacks if isinstance(cb, Recorder))
        trainer.remove_callback(recorder)
        trainer.remove_callback(DefaultFlowCallback)
        trace.append(_callback_kinds(trainer))
        lists[cls] = trace
    assert lists[TK] == lists[HF]
    assert lists[TK][0] == ["DefaultFlowCallback", "TrainerCallback", "PrinterCallback"]


@pytest.mark.parametrize("disable_tqdm", [False, True])
def test_progress_bar_or_printer_on_a_terminal(tmp_path, disable_tqdm, monkeypatch):
    """On a terminal, disable_tqdm=False gives progress bars (a ProgressCallback: trainkit's adds the running loss
    and learning rate), True a PrinterCallback, as in transformers; off a terminal the logs are printed instead."""
    monkeypatch.setattr(sys.stderr, "isatty", lambda: True, raising=False)
    trainers = {cls: cls(model=mlp(dtype=torch.float32), args=_hf_args(tmp_path / cls.__module__, disable_tqdm=disable_tqdm))
                for cls in (HF, TK)}
    expected = PrinterCallback if disable_tqdm else ProgressCallback
    for trainer in trainers.values():
        assert sum(isinstance(cb, expected) for cb in trainer.callback_handler.callbacks) == 1
    monkeypatch.setattr(sys.stderr, "isatty", lambda: False, raising=False)
    quiet = TK(model=mlp(dtype=torch.float32), args=_hf_args(tmp_path / "quiet", disable_tqdm=False))
    assert [type(cb) for cb in quiet.callback_handler.callbacks][-1] is PrinterCallback


# ---- arguments ---------------------------------------------------------------------------------


def test_args_none_gives_default_arguments(tmp_path, monkeypatch):
    """args=None gives default arguments (learning rate, epochs, batch size, seed) as transformers does."""
    monkeypatch.chdir(tmp_path)
    theirs = HF(model=mlp(dtype=torch.float32)).args
    ours = TK(model=mlp(dtype=torch.float32)).args
    for name in ("learning_rate", "num_train_epochs", "per_device_train_batch_size", "seed", "save_strategy", "logging_steps"):
        assert getattr(ours, name) == getattr(theirs, name), name


def test_args_none_output_dir_equals_transformers(tmp_path, monkeypatch):
    """args=None: the output_dir transformers.Trainer picks ("tmp_trainer" in 5.24, trainer.py `if args is None`)."""
    monkeypatch.chdir(tmp_path)
    theirs = HF(model=mlp(dtype=torch.float32)).args
    ours = TK(model=mlp(dtype=torch.float32)).args
    assert ours.output_dir == theirs.output_dir == "tmp_trainer"


def test_transformers_training_arguments_are_converted(tmp_path):
    """A transformers.TrainingArguments becomes trainkit's TrainingArguments with the same values."""
    hf_args = _hf_args(tmp_path, learning_rate=3e-3, gradient_accumulation_steps=3, eval_strategy="epoch", weight_decay=0.1)
    trainer = TK(model=mlp(dtype=torch.float32), args=hf_args, eval_dataset=[{"x": [0.0] * 8, "labels": 0}])
    assert isinstance(trainer.args, trainkit.TrainingArguments)
    for name in ("output_dir", "learning_rate", "gradient_accumulation_steps", "weight_decay", "per_device_train_batch_size", "seed"):
        assert getattr(trainer.args, name) == getattr(hf_args, name), name
    assert trainer.args.eval_strategy == "epoch"


@pytest.mark.parametrize(
    ("option", "value"),
    [("push_to_hub", True), ("train_sampling_strategy", "group_by_length"), ("neftune_noise_alpha", 5.0)],
)
def test_unsupported_transformers_option_raises(tmp_path, option, value):
    """An HF option trainkit does not implement, set, raises UnsupportedOptionError naming it (never ignored).
    (transformers 5 replaced group_by_length with train_sampling_strategy="group_by_length".)"""
    assert not hasattr(transformers.TrainingArguments, "group_by_length")
    hf_args = _hf_args(tmp_path, **{option: value})
    with pytest.raises(UnsupportedOptionError, match=option):
        TK(model=mlp(dtype=torch.float32), args=hf_args)


# ---- errors ------------------------------------------------------------------------------------


def test_model_and_model_init_exactly_one():
    with pytest.raises(ConfigError, match="model_init"):
        TK(model=mlp(), model_init=mlp, args=trainkit.TrainingArguments(output_dir="unused"))
    with pytest.raises(ConfigError, match="neither"):
        TK(args=trainkit.TrainingArguments(output_dir="unused"))


def test_optimizers_with_optimizer_cls_and_kwargs_is_an_error():
    model = mlp()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    with pytest.raises(ConfigError, match="optimizer_cls_and_kwargs"):
        TK(model=model, args=trainkit.TrainingArguments(output_dir="unused"), optimizers=(opt, None),
           optimizer_cls_and_kwargs=(torch.optim.SGD, {"lr": 0.1}))


def test_model_init_with_two_arguments_is_an_error():
    with pytest.raises(ConfigError, match="0 or 1 argument"):
        TK(model_init=lambda trial, extra: mlp(), args=trainkit.TrainingArguments(output_dir="unused"))


# ---- properties --------------------------------------------------------------------------------


@settings(max_examples=5)
@given(
    rows=st.integers(6, 14),
    batch=st.sampled_from([2, 3, 4]),
    accumulation=st.integers(1, 3),
    epochs=st.integers(1, 3),
    logging_steps=st.integers(1, 4),
    logging_first_step=st.booleans(),
    eval_strategy=st.sampled_from(["steps", "epoch"]),
    eval_steps=st.integers(1, 4),
    save_strategy=st.sampled_from(["steps", "epoch", "no"]),
    save_steps=st.integers(1, 5),
)
def test_cadence_equals_transformers(rows, batch, accumulation, epochs, logging_steps, logging_first_step, eval_strategy, eval_steps,
                                     save_strategy, save_steps):
    """Property: for any batch size, accumulation, epochs, logging/eval/save strategies and intervals, the callback
    events (name, global_step), the logged and evaluated steps, and the checkpoint folders are transformers.Trainer's.
    (trainkit gets its own TrainingArguments built from the same options.)"""
    options = dict(per_device_train_batch_size=batch, per_device_eval_batch_size=4, gradient_accumulation_steps=accumulation,
                   num_train_epochs=epochs, logging_steps=logging_steps, logging_first_step=logging_first_step, eval_strategy=eval_strategy,
                   eval_steps=eval_steps, save_strategy=save_strategy, save_steps=save_steps, report_to="none", disable_tqdm=True, seed=0)
    seen = {}
    with tempfile.TemporaryDirectory() as root:
        for cls, make_args in ((HF, lambda **kw: transformers.TrainingArguments(use_cpu=True, **kw)), (TK, trainkit.TrainingArguments)):
            out = os.path.join(root, cls.__module__)
            recorder = Recorder()
            trainer = cls(model=mlp(dtype=torch.float32), args=make_args(output_dir=out, **options), train_dataset=_vectors(rows),
                          eval_dataset=_vectors(4, seed=1), callbacks=[recorder])
            trainer.train()
            seen[cls] = (recorder.events, _log_kinds(trainer.state.log_history), _checkpoints(out) if os.path.isdir(out) else [])
    assert seen[TK][0] == seen[HF][0]
    assert seen[TK][1] == seen[HF][1]
    assert seen[TK][2] == seen[HF][2]


@settings(max_examples=8)
@given(
    rows=st.integers(3, 21),
    batch=st.integers(1, 5),
    accumulation=st.integers(1, 4),
    epochs=st.sampled_from([1, 2, 3, 1.5, 2.25]),
    max_steps=st.sampled_from([-1, -1, 1, 4, 9]),
    drop_last=st.booleans(),
)
def test_step_counts_equal_transformers(rows, batch, accumulation, epochs, max_steps, drop_last):
    """Property: for any dataset size, batch size, accumulation, (fractional) epochs, max_steps and drop_last,
    train() ends at transformers' global_step and epoch, with its max_steps and num_train_epochs, after the same
    number of micro-batches (on_substep_end) and updates (on_step_begin)."""
    options = dict(per_device_train_batch_size=batch, gradient_accumulation_steps=accumulation, num_train_epochs=epochs,
                   max_steps=max_steps, dataloader_drop_last=drop_last, save_strategy="no", logging_strategy="no",
                   report_to="none", disable_tqdm=True, seed=0)
    if drop_last and rows < batch:
        rows = batch  # no batch at all is an error in both
    seen = {}
    with tempfile.TemporaryDirectory() as root:
        for cls in (HF, TK):
            recorder = Recorder()
            trainer = cls(model=mlp(dtype=torch.float32), args=transformers.TrainingArguments(output_dir=root, use_cpu=True, **options),
                          train_dataset=_vectors(rows), callbacks=[recorder])
            output = trainer.train()
            state = trainer.state
            counts = {name: sum(1 for event, _ in recorder.events if event == name) for name in ("on_step_begin", "on_substep_end", "on_epoch_begin")}
            seen[cls] = (output.global_step, state.max_steps, state.num_train_epochs, round(state.epoch, 6), counts)
    assert seen[TK] == seen[HF]


@pytest.mark.parametrize("use_cache", [False, True])
def test_use_cache_is_set_on_the_model_config(tmp_path, use_cache):
    """As transformers: Trainer(...) sets model.config.use_cache from args.use_cache (off by default for training)."""
    from tests.strategies import tiny_gpt2

    model = tiny_gpt2()
    model.config.use_cache = not use_cache
    TK(model=model, args=TrainingArguments(output_dir=str(tmp_path), use_cache=use_cache, report_to="none"))
    assert model.config.use_cache is use_cache
