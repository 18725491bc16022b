"""What a run reports: report_to integrations (jsonl, tensorboard), progress bars, and plots."""

from __future__ import annotations

import io
import json
import sys

import pytest
import torch
from transformers import TrainerControl, TrainerState

from tests.strategies import mlp
from trainkit import (
    SCHEDULE_NAMES,
    ConfigError,
    MissingDependencyError,
    Trainer,
    TrainingArguments,
    make_schedule,
    plot_log_history,
    plot_schedule,
)
from trainkit.logging import ProgressBars
from trainkit.plots import read_log_history

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _rows(n: int = 64, seed: int = 0) -> list[dict]:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 8, generator=g, dtype=torch.float64)
    y = (x[:, 0] > 0).long() + (x[:, 1] > 0).long()
    return [{"x": x[i], "labels": y[i]} for i in range(n)]


def _accuracy(pred) -> dict[str, float]:
    return {"accuracy": float((pred.predictions.argmax(-1) == pred.label_ids).mean())}


def _train(tmp_path, **options) -> Trainer:
    args = TrainingArguments(output_dir=str(tmp_path), per_device_train_batch_size=8, num_train_epochs=2, logging_steps=2,
                             eval_strategy="epoch", save_strategy="epoch", learning_rate=1e-2, disable_tqdm=True,
                             **{"report_to": "none", **options})
    trainer = Trainer(model=mlp(), args=args, train_dataset=_rows(), eval_dataset=_rows(24, 1), compute_metrics=_accuracy)
    trainer.train()
    return trainer


def test_jsonl_log_has_every_log_with_step_epoch_and_items_per_second(tmp_path):
    """report_to="jsonl": one JSON object per log in output_dir/log.jsonl, in order, each with the step and epoch
    and the values transformers logs (loss, learning rate, grad norm, eval metrics); training records carry the
    items per second since the previous record."""
    trainer = _train(tmp_path, report_to="jsonl")
    records = [json.loads(line) for line in (tmp_path / "log.jsonl").read_text().splitlines()]
    history = trainer.state.log_history
    assert len(records) == len(history)
    for record, entry in zip(records, history):
        assert record["step"] == entry["step"] and record["epoch"] == pytest.approx(entry["epoch"])
        assert {k: v for k, v in record.items() if k != "items_per_second"} == pytest.approx(entry)
    training = [r for r in records if "loss" in r]
    assert len(training) == 8 and all({"loss", "learning_rate", "grad_norm"} <= set(r) for r in training)
    assert all(r["items_per_second"] > 0 for r in training)
    assert [r["eval_accuracy"] for r in records if "eval_accuracy" in r] == \
        [e["eval_accuracy"] for e in history if "eval_accuracy" in e]


def test_tensorboard_scalars_equal_the_logs(tmp_path):
    """report_to="tensorboard": event files under output_dir/runs whose train/loss and eval/accuracy scalars are the
    logged values at the logged steps (read back with tensorboard's EventAccumulator)."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    trainer = _train(tmp_path, report_to=["tensorboard"])
    events = EventAccumulator(str(tmp_path / "runs"))
    events.Reload()
    losses = [(e.step, e.value) for e in events.Scalars("train/loss")]
    want = [(e["step"], e["loss"]) for e in trainer.state.log_history if "loss" in e]
    assert [s for s, _ in losses] == [s for s, _ in want]
    assert [v for _, v in losses] == pytest.approx([v for _, v in want], rel=1e-6)
    accuracy = [e.value for e in events.Scalars("eval/accuracy")]
    assert accuracy == pytest.approx([e["eval_accuracy"] for e in trainer.state.log_history if "eval_accuracy" in e])
    assert "train/items_per_second" in events.Tags()["scalars"]


def test_report_to_all_and_unknown_names(tmp_path, monkeypatch):
    """"all" is the installed integrations plus trainkit's jsonl; an unknown name and a missing tensorboard
    package are ConfigErrors at construction, naming the problem and the fix."""
    assert {"jsonl", "tensorboard"} <= set(TrainingArguments(report_to="all").report_to)
    args = TrainingArguments(output_dir=str(tmp_path), report_to=["jsonl", "tensorbored"])
    with pytest.raises(ConfigError, match="'tensorbored' is not an integration.*tensorboard"):
        Trainer(model=mlp(), args=args)
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "tensorboard" else real(name, *a))
    with pytest.raises(ConfigError, match="pip install tensorboard"):
        Trainer(model=mlp(), args=TrainingArguments(output_dir=str(tmp_path), report_to="tensorboard"))


def test_progress_bar_shows_running_loss_and_learning_rate():
    """The training bar's postfix shows the last logged loss and learning rate (transformers' bar shows neither)."""
    stream = io.StringIO()
    bars = ProgressBars()
    state = TrainerState(max_steps=10, is_world_process_zero=True)
    args, control = TrainingArguments(), TrainerControl()
    import trainkit.logging as logging_module

    original = logging_module.ProgressCallback.on_train_begin

    def begin(self, args, state, control, **kwargs):
        original(self, args, state, control, **kwargs)
        self.training_bar.fp = stream  # render into the test's stream
    bars.on_train_begin = begin.__get__(bars)
    bars.on_train_begin(args, state, control)
    bars.on_log(args, state, control, logs={"loss": 0.123456, "learning_rate": 0.001, "epoch": 0.5})
    assert bars.training_bar.postfix == "loss=0.1235, lr=0.001"


def test_evaluation_shows_a_progress_bar_on_a_terminal(tmp_path, monkeypatch, capsys):
    """On a terminal, Trainer.evaluate draws a bar over the evaluation batches (the loaders have a length)."""
    monkeypatch.setattr(sys.stderr, "isatty", lambda: True, raising=False)
    args = TrainingArguments(output_dir=str(tmp_path), per_device_eval_batch_size=4, report_to="none", disable_tqdm=False)
    trainer = Trainer(model=mlp(), args=args, eval_dataset=_rows(24, 1))
    assert len(trainer.get_eval_dataloader()) == 6
    trainer.evaluate()
    assert "6/6" in capsys.readouterr().err


def test_plot_log_history_from_a_run_a_checkpoint_and_a_jsonl_log(tmp_path):
    """plot_log_history draws PNGs from trainer.state.log_history, a checkpoint's trainer_state.json and
    log.jsonl, which all hold the same records; a history with nothing to draw is a ConfigError."""
    trainer = _train(tmp_path / "run", report_to="jsonl")
    history = trainer.state.log_history
    checkpoint = tmp_path / "run" / "checkpoint-16"  # the last one: every log but the end-of-training summary
    assert read_log_history(checkpoint) == history[:-1]
    from_jsonl = read_log_history(tmp_path / "run")
    assert len(from_jsonl) == len(history)
    for record, entry in zip(from_jsonl, history):
        assert {k: v for k, v in record.items() if k != "items_per_second"} == pytest.approx(entry)
    for i, source in enumerate((history, checkpoint, tmp_path / "run" / "log.jsonl")):
        out = plot_log_history(source, tmp_path / f"plot{i}.png", title="run")
        assert out.read_bytes()[:8] == PNG_MAGIC and out.stat().st_size > 5000
    with pytest.raises(ConfigError, match="no record has a loss"):
        plot_log_history([{"train_runtime": 1.0, "step": 3}], tmp_path / "empty.png")
    with pytest.raises(ConfigError, match="neither log.jsonl"):
        plot_log_history(tmp_path, tmp_path / "none.png")


REQUIRED = {"polynomial": {"lr_init": 1e-3}, "cosine_with_min_lr": {"min_lr_rate": 0.1},
            "cosine_warmup_with_min_lr": {"min_lr_rate": 0.1}, "warmup_stable_decay": {"num_decay_steps": 10}}


@pytest.mark.parametrize("name", SCHEDULE_NAMES)
def test_plot_schedule_draws_every_schedule(tmp_path, name):
    """Every schedule name draws (with the options it requires), as does a plain function; a function with
    options is refused."""
    options = REQUIRED.get(name, {})
    out = plot_schedule(name, tmp_path / f"{name}.png", num_training_steps=50, num_warmup_steps=5, **options)
    assert out.read_bytes()[:8] == PNG_MAGIC
    schedule = make_schedule(name, num_warmup_steps=5, num_training_steps=50, **options)
    with pytest.raises(ConfigError, match="options only go with a name"):
        plot_schedule(schedule, tmp_path / "fn.png", num_training_steps=50, power=2.0)
    assert plot_schedule(schedule, tmp_path / "fn.png", num_training_steps=50).is_file()


def test_plotting_without_matplotlib_names_the_package(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    with pytest.raises(MissingDependencyError, match="pip install matplotlib") as info:
        plot_schedule("linear", tmp_path / "x.png", num_training_steps=10)
    assert isinstance(info.value, ImportError)


def test_disable_tqdm_silences_transformers_own_bars(tmp_path, capfd):
    """With disable_tqdm=True no bar reaches stderr, not even save_pretrained's "Writing model shards";
    transformers' progress-bar setting is restored afterwards."""
    from transformers.utils import logging as hf_logging

    from tests.strategies import tiny_bert
    from trainkit import Trainer, TrainingArguments

    rows = [{"input_ids": [1, 2, 3], "attention_mask": [1, 1, 1], "labels": i % 3} for i in range(8)]
    args = TrainingArguments(output_dir=str(tmp_path), max_steps=2, per_device_train_batch_size=4, save_steps=1,
                             disable_tqdm=True, report_to="none", logging_strategy="no")
    before = hf_logging.is_progress_bar_enabled()
    trainer = Trainer(model=tiny_bert(), args=args, train_dataset=rows)
    trainer.train()
    trainer.save_model(str(tmp_path / "final"))
    err = capfd.readouterr().err
    assert "Writing model shards" not in err and "it/s" not in err
    assert hf_logging.is_progress_bar_enabled() == before
    assert (tmp_path / "checkpoint-2" / "model.safetensors").is_file()
