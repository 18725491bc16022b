"""The issue-7 examples run as written, offline, and show what they claim: custom metrics, callbacks,
a causal LM, an exact resume and property tests of a step."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from tests.conftest import EXAMPLES


def test_custom_metrics(run_example, tmp_path, capsys):
    """Several metrics come back prefixed with eval_ and in range; the task is learnt (accuracy and macro F1
    >= 0.9); preprocess_logits_for_metrics made the gathered predictions class ids; the confusion count agrees
    with the accuracy; and after load_best_model_at_end the model in memory scores the best metric again."""
    scope = run_example("custom_metrics.py")
    metrics, trainer = scope["metrics"], scope["trainer"]
    expected = {"eval_loss", "eval_accuracy", "eval_f1_macro", "eval_accuracy_with_distractor", "eval_confusions",
                "eval_recall_class_0", "eval_recall_class_1", "eval_recall_class_2"}
    assert expected <= set(metrics)
    assert all(0.0 <= metrics[key] <= 1.0 for key in expected - {"eval_loss", "eval_confusions"})
    assert metrics["eval_accuracy"] >= 0.9 and metrics["eval_f1_macro"] >= 0.9
    assert metrics["eval_confusions"] == round((1 - metrics["eval_accuracy"]) * 384)
    prediction = scope["prediction"]
    assert prediction.predictions.shape == (384,) and prediction.predictions.dtype.kind == "i"  # argmax'd per batch
    assert metrics["eval_f1_macro"] == trainer.state.best_metric
    assert Path(trainer.state.best_model_checkpoint, "manifest.json").is_file()
    assert "confusion matrix" in capsys.readouterr().out


def test_callbacks_early_stopping_and_recorder(run_example, capsys):
    """EarlyStoppingCallback ends the run well before max_steps, right after the 3rd evaluation without a gain
    above its threshold; the custom callback saw the stop at that step, recorded every log (the learning rate
    warms up, then decays) and every evaluation; the best checkpoint is the best recorded accuracy."""
    scope = run_example("callbacks.py")
    trainer, recorder, early = scope["trainer"], scope["recorder"], scope["early_stopping"]
    state = trainer.state
    assert recorder.stopped_at == state.global_step < state.max_steps // 2
    assert early.early_stopping_patience_counter == 3
    assert [step for step, _ in recorder.evals] == list(range(16, state.global_step + 1, 16))
    best = max(accuracy for _, accuracy in recorder.evals)
    assert state.best_metric == best
    assert all(accuracy <= best + 0.01 for _, accuracy in recorder.evals[-3:])  # why patience ran out
    assert [step for step, _, _ in recorder.logs] == list(range(8, state.global_step + 1, 8))
    lrs = [lr for _, lr, _ in recorder.logs]
    # Linear warm-up over 16 steps (the rate logged is the one the last update used), then linear decay.
    assert lrs[0] < lrs[1] < lrs[2] and all(a > b > 0 for a, b in zip(lrs[2:], lrs[3:]))
    assert recorder.logs[-1][2] < recorder.logs[0][2]
    assert f"early stopping fired at step {state.global_step}" in capsys.readouterr().out


def test_causal_lm_learns_and_generates(run_example, tmp_path, capsys):
    """The tiny GPT-2 trains 4 epochs of 17 updates (34 padded micro-batches, 2 per update); its per-token
    eval loss falls from about ln(vocab) to well below it, the logged training loss falls, greedy
    generation continues the prompt with words of the grammar, and model and tokenizer are saved."""
    scope = run_example("causal_lm.py")
    trainer, tokenizer = scope["trainer"], scope["tokenizer"]
    assert trainer.state.global_step == 68 and trainer.args.gradient_accumulation_steps == 2
    assert scope["loss_before"] > 3.0 and scope["loss_after"] < 1.6
    logged = [entry["loss"] for entry in trainer.state.log_history if "loss" in entry]
    assert logged[-1] < logged[0] - 1.0
    sample = scope["sample"]
    assert sample.startswith("the happy ") and len(sample.split()) > 2
    assert tokenizer.unk_token_id not in tokenizer.encode(sample, add_special_tokens=False)
    assert "generated: " in capsys.readouterr().out
    saved = tmp_path / "output_causal_lm"
    assert (saved / "config.json").is_file() and (saved / "tokenizer.json").is_file() and (saved / "model.safetensors").is_file()


def test_resume_is_bitwise(run_example, tmp_path, capsys):
    """The run that crashed after update 25 resumes from checkpoint-20 and ends at step 48 with every weight
    torch.equal to the uninterrupted run's, and with the same logged losses."""
    scope = run_example("resume.py")
    resumed, reference = scope["resumed"], scope["reference"]
    assert "first run: simulated crash after update 25" in capsys.readouterr().out
    assert resumed.state.global_step == reference.state.global_step == 48
    assert scope["identical"] and scope["same_logs"]
    for (name, a), (_, b) in zip(resumed.model.state_dict().items(), reference.model.state_dict().items()):
        assert torch.equal(a, b), name
    assert sorted(p.name for p in (tmp_path / "output_resume").glob("checkpoint-*")) == [
        "checkpoint-10", "checkpoint-20", "checkpoint-30", "checkpoint-40", "checkpoint-48"]


def test_unit_testing_a_step_runs_its_properties(tmp_path):
    """`python examples/unit_testing_a_step.py` (from another directory) collects its 3 hypothesis property
    tests through pytest.main and they pass."""
    root = EXAMPLES.parent
    env = {**os.environ, "PYTHONPATH": str(root), "OMP_NUM_THREADS": "1"}
    done = subprocess.run([sys.executable, str(EXAMPLES / "unit_testing_a_step.py")], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, f"{done.stdout[-4000:]}\n{done.stderr[-4000:]}"
    assert "3 passed" in done.stdout
