"""The examples run as written: the functional loop and transformers' three documented Trainer usages."""

from __future__ import annotations

import runpy
import sys
from pathlib import Path

import pytest

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


@pytest.fixture
def run_example(tmp_path, monkeypatch):
    """Run an example script in a fresh working directory, as `python examples/<name>.py` would."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(EXAMPLES))
    monkeypatch.setattr(sys, "argv", ["example"])

    def run(name: str) -> dict:
        return runpy.run_path(str(EXAMPLES / name), run_name="__main__")

    return run


def test_functional_loop_learns(run_example, capsys):
    """The compose-your-own-loop example trains a tiny BERT to high accuracy."""
    scope = run_example("functional_loop.py")
    assert scope["state"].step == 48
    assert scope["accuracy"] >= 0.9
    assert "accuracy" in capsys.readouterr().out


def test_trainer_basic_usage(run_example, tmp_path):
    """Basic usage: 3 epochs of 800 rows at batch 16 = 150 steps, evaluated and saved every epoch."""
    scope = run_example("trainer_basic.py")
    trainer = scope["trainer"]
    assert trainer.state.global_step == 150
    assert sorted(p.name for p in (tmp_path / "results").iterdir()) == ["checkpoint-100", "checkpoint-150", "checkpoint-50"]
    assert [round(e["epoch"]) for e in trainer.state.log_history if "eval_loss" in e] == [1, 2, 3]


def test_trainer_custom_metrics(run_example):
    """Custom metrics: compute_metrics' accuracy/precision/recall/f1 appear prefixed with eval_."""
    metrics = run_example("trainer_metrics.py")["trainer"].evaluate()
    assert {"eval_loss", "eval_accuracy", "eval_precision", "eval_recall", "eval_f1"} <= set(metrics)
    assert 0.0 <= metrics["eval_accuracy"] <= 1.0


def test_trainer_with_callbacks(run_example, capsys):
    """Callbacks: the custom on_log callback prints every log, and the best checkpoint is tracked."""
    trainer = run_example("trainer_callbacks.py")["trainer"]
    printed = [line for line in capsys.readouterr().out.splitlines() if line.startswith("Step ")]
    assert len(printed) == len(trainer.state.log_history)
    assert trainer.state.best_model_checkpoint is not None and trainer.state.best_metric is not None
