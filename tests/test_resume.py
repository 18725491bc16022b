"""Trainer resume: bit-for-bit equal to the uninterrupted run, from any checkpoint."""

from __future__ import annotations

import pathlib
import shutil
import subprocess
import sys
import textwrap

import pytest
import torch
from transformers import TrainerCallback

from tests.strategies import tiny_bert
from trainkit import CheckpointError, ConfigError, Trainer, TrainingArguments
from trainkit.checkpoint import list_checkpoints

ROWS, BATCH, EPOCHS = 22, 4, 2  # 6 batches per epoch, the last one of 2 rows


def _dataset(transform_draws_global_rng: bool = False):
    from datasets import Dataset

    g = torch.Generator().manual_seed(0)
    data = Dataset.from_dict({"input_ids": torch.randint(1, 64, (ROWS, 9), generator=g).tolist(), "labels": torch.randint(0, 3, (ROWS,), generator=g).tolist()})
    if not transform_draws_global_rng:
        return data

    def noisy(batch):
        # A transform drawing from the global torch RNG: masks a random token of each row.
        ids = torch.tensor(batch["input_ids"])
        ids[torch.arange(len(ids)), torch.randint(0, ids.shape[1], (len(ids),))] = 0
        return {"input_ids": ids.tolist(), "labels": batch["labels"]}

    return data.with_transform(noisy)


def _trainer(output_dir, *, ga=1, workers=0, transform=False, **overrides):
    options = dict(
        output_dir=str(output_dir), per_device_train_batch_size=BATCH, gradient_accumulation_steps=ga, num_train_epochs=EPOCHS,
        learning_rate=1e-2, optim="adamw_torch", warmup_steps=2, logging_steps=1, save_strategy="steps", save_steps=1,
        dataloader_num_workers=workers, report_to="none", disable_tqdm=True, seed=11, remove_unused_columns=not transform,
    )
    args = TrainingArguments(**{**options, **overrides})
    return Trainer(model=tiny_bert(dropout=0.2, dtype=torch.float32), args=args, train_dataset=_dataset(transform))


def _losses(trainer):
    return {e["step"]: (e["loss"], e["learning_rate"]) for e in trainer.state.log_history if "loss" in e}


def _assert_same_run(ours, reference):
    for a, b in zip(ours.model.parameters(), reference.model.parameters()):
        assert torch.equal(a, b)
    sa, sb = ours.optimizer.state_dict()["state"], reference.optimizer.state_dict()["state"]
    assert all(torch.equal(sa[i][k], sb[i][k]) for i in sb for k in sb[i])
    theirs = _losses(reference)
    assert _losses(ours) == {step: theirs[step] for step in _losses(ours)}


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    """One uninterrupted run per (ga, workers), keeping its checkpoint folders."""
    runs = {}

    def get(ga, workers, transform=False):
        key = (ga, workers, transform)
        if key not in runs:
            out = tmp_path_factory.mktemp(f"run-{ga}-{workers}-{transform}")
            trainer = _trainer(out, ga=ga, workers=workers, transform=transform)
            trainer.train()
            runs[key] = (trainer, out)
        return runs[key]

    return get


class _StopAt(TrainerCallback):
    """Stops training after a given step: a simulated interruption that leaves the schedule alone."""

    def __init__(self, step):
        self.step = step

    def on_step_end(self, args, state, control, **kwargs):
        if state.global_step == self.step:
            control.should_training_stop = True
        return control


def _resume_from(tmp_path, source, step, **kw):
    out = tmp_path / "resumed"
    shutil.copytree(source / f"checkpoint-{step}", out / f"checkpoint-{step}")
    trainer = _trainer(out, **kw)
    trainer.train(resume_from_checkpoint=True)
    return trainer


@pytest.mark.parametrize("workers", [0, 2])
@pytest.mark.parametrize("ga", [1, 2, 3])
@pytest.mark.parametrize("where", ["mid-epoch", "epoch-boundary", "last-step"])
def test_resume_is_bitwise_equal_to_the_uninterrupted_run(tmp_path, uninterrupted, ga, workers, where):
    """From a mid-epoch step, the epoch's last step, or the final step, with dropout on and
    gradient accumulation 1-3 and 0 or 2 loader workers: parameters, Adam moments and every
    logged loss and learning rate are torch.equal to the uninterrupted run."""
    reference, out = uninterrupted(ga, workers)
    per_epoch = -(-6 // ga)
    step = {"mid-epoch": 1 + per_epoch // 2, "epoch-boundary": per_epoch, "last-step": reference.state.global_step}[where]
    resumed = _resume_from(tmp_path, out, step, ga=ga, workers=workers)
    assert resumed.state.global_step == reference.state.global_step
    _assert_same_run(resumed, reference)


def test_a_chain_of_five_resumes(tmp_path, uninterrupted):
    """Stopping and resuming five times along the way still ends bit-for-bit on the uninterrupted run."""
    reference, _ = uninterrupted(2, 0)
    out = tmp_path / "chain"
    for stop in (1, 2, 4, 5, 6):
        trainer = _trainer(out, ga=2)
        trainer.add_callback(_StopAt(stop))
        trainer.train(resume_from_checkpoint=True if list_checkpoints(out) else None)
        assert trainer.state.global_step == stop
    trainer = _trainer(out, ga=2)
    trainer.train(resume_from_checkpoint=True)
    _assert_same_run(trainer, reference)


def test_a_transform_drawing_from_the_global_rng_resumes_exactly(tmp_path, uninterrupted):
    """Each batch is fetched under its own seed, so a dataset transform that draws from the global
    RNG gives the same batches after a resume (where transformers.Trainer diverges)."""
    reference, out = uninterrupted(1, 0, True)
    resumed = _resume_from(tmp_path, out, 4, transform=True)
    _assert_same_run(resumed, reference)


def test_changed_data_settings_are_listed_unless_ignore_data_skip(tmp_path, uninterrupted):
    """Resuming with another batch size or accumulation is an error listing each difference;
    ignore_data_skip=True resumes the weights and restarts the epoch."""
    _, out = uninterrupted(1, 0)
    target = tmp_path / "changed"
    shutil.copytree(out / "checkpoint-3", target / "checkpoint-3")
    with pytest.raises(ConfigError, match=r"(?s)batch_size: checkpoint 4, now 2.*gradient_accumulation_steps: checkpoint 1, now 2"):
        trainer = Trainer(model=tiny_bert(dropout=0.2, dtype=torch.float32), train_dataset=_dataset(), args=TrainingArguments(
            output_dir=str(target), per_device_train_batch_size=2, gradient_accumulation_steps=2, report_to="none", disable_tqdm=True, seed=11))
        trainer.train(resume_from_checkpoint=True)
    trainer = Trainer(model=tiny_bert(dropout=0.2, dtype=torch.float32), train_dataset=_dataset(), args=TrainingArguments(
        output_dir=str(target), per_device_train_batch_size=2, report_to="none", disable_tqdm=True, seed=11, ignore_data_skip=True,
        num_train_epochs=1, save_strategy="no"))
    trainer.train(resume_from_checkpoint=True)
    assert trainer.state.global_step > 3


def test_resume_errors_name_the_problem(tmp_path):
    with pytest.raises(CheckpointError, match="no valid checkpoint"):
        _trainer(tmp_path).train(resume_from_checkpoint=True)
    with pytest.raises(CheckpointError, match="no such checkpoint folder"):
        _trainer(tmp_path).train(resume_from_checkpoint=str(tmp_path / "checkpoint-99"))


def test_sigterm_finishes_the_step_commits_a_checkpoint_and_stops(tmp_path):
    """SIGTERM during train(): the current step completes, a checkpoint of it is committed, and
    train() returns normally; resuming from it finishes the run."""
    root = str(pathlib.Path(__file__).resolve().parent.parent)
    script = textwrap.dedent(f"""
        import os, signal, sys
        sys.path.insert(0, {root!r})
        from transformers import TrainerCallback
        from tests.test_resume import _trainer

        class Term(TrainerCallback):
            def on_step_end(self, args, state, control, **kw):
                if state.global_step == 3:
                    os.kill(os.getpid(), signal.SIGTERM)

        trainer = _trainer({str(tmp_path / "run")!r}, save_strategy="no")
        trainer.add_callback(Term())
        out = trainer.train()
        print("stopped at", out.global_step, "handler restored", signal.getsignal(signal.SIGTERM) is signal.SIG_DFL)
    """)
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "stopped at 3 handler restored True" in result.stdout
    assert [p.name for p in list_checkpoints(tmp_path / "run")] == ["checkpoint-3"]


def test_train_loss_and_speed_cover_the_resumed_call_only(uninterrupted, tmp_path):
    """As transformers: after resuming at step 4 of 12, train_loss is the mean loss of steps 5-12 (the steps this
    call ran), and the speed figures count those 8 steps and their share of the samples."""
    reference, out = uninterrupted(1, 0)
    folder = tmp_path / "run"
    shutil.copytree(out / "checkpoint-4", folder / "checkpoint-4")
    trainer = _trainer(folder)
    result = trainer.train(resume_from_checkpoint=True)
    logged = [loss for step, (loss, _) in sorted(_losses(reference).items()) if step > 4]
    assert len(logged) == 8
    assert result.training_loss == pytest.approx(sum(logged) / 8, rel=1e-12)
    runtime = result.metrics["train_runtime"]
    assert result.metrics["train_steps_per_second"] == pytest.approx(8 / runtime, rel=0.05)
    assert result.metrics["train_samples_per_second"] == pytest.approx(ROWS * EPOCHS * 8 / 12 / runtime, rel=0.05)
