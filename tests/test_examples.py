"""The examples run as written: the functional loop and transformers' three documented Trainer usages."""

from __future__ import annotations

import sys

from tests.conftest import EXAMPLES


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


def test_ddp_example_in_one_process(run_example, tmp_path, capsys):
    """The torchrun example also runs as plain `python examples/ddp.py`: one process, no process group,
    3 epochs of 32 updates (2 micro-batches of 16), accuracy >= 0.9, the final checkpoint written."""
    result = run_example("ddp.py")["result"]
    assert result["state"].step == 96
    assert result["accuracy"] >= 0.9
    assert (tmp_path / "ddp_output" / "checkpoint-96" / "manifest.json").is_file()
    assert sum(line.startswith("epoch ") for line in capsys.readouterr().out.splitlines()) == 3


def test_ddp_example_under_torchrun(tmp_path):
    """`torchrun --nproc_per_node=2 examples/ddp.py` (gloo, CPU) exits 0; only the main process prints, so each
    epoch's accuracy line appears exactly once; the last accuracy is >= 0.9; rank 0 wrote checkpoint-48
    (3 epochs of 16 updates, each of 2 processes x 2 micro-batches x 16 rows)."""
    import os
    import socket
    import subprocess

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    root = EXAMPLES.parent
    env = {k: v for k, v in os.environ.items()
           if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT")}
    env.update(OMP_NUM_THREADS="1", PYTHONPATH=str(root))
    command = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", f"--master_port={port}",
               str(EXAMPLES / "ddp.py")]
    done = subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=180)
    assert done.returncode == 0, f"{done.stdout[-3000:]}\n{done.stderr[-6000:]}"
    lines = [line for line in done.stdout.splitlines() if line.startswith("epoch ")]
    assert [line.split()[1] for line in lines] == ["0", "1", "2"], done.stdout
    assert all("2 processes" in line for line in lines)
    assert float(lines[-1].split("accuracy ")[1].split()[0]) >= 0.9
    assert done.stdout.count("saved ") == 1
    assert (tmp_path / "ddp_output" / "checkpoint-48" / "manifest.json").is_file()


def test_text_classification_main_job(run_example, tmp_path, monkeypatch):
    """The README's main job, smaller (320 generated reviews, 2 epochs of batch 16): the packaged pretrained MiniLM
    fine-tunes well above the majority baseline, the saved folder loads with AutoModelForSequenceClassification
    and classifies new reviews, and training.png is written next to it."""
    from transformers import AutoModelForSequenceClassification

    monkeypatch.setattr(sys, "argv", ["text_classification.py", "--train-size", "320", "--epochs", "2", "--batch-size",
                                      "16", "--learning-rate", "2e-4"])
    result = run_example("text_classification.py")["result"]
    assert result["metrics"]["eval_accuracy"] >= result["baseline"] + 0.3
    output = tmp_path / "text_classification_output"
    assert AutoModelForSequenceClassification.from_pretrained(output).config.id2label == {0: "NEGATIVE", 1: "POSITIVE"}
    assert set(result["predicted"]) <= {"POSITIVE", "NEGATIVE"}
    assert (output / "training.png").read_bytes()[:4] == b"\x89PNG"
    assert (output / "log.jsonl").is_file()
