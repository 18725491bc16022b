"""Interrupt a Trainer run, resume it, and get the uninterrupted run's weights bit for bit.

A tiny BERT (dropout on) learns whether a sequence of random tokens contains the token 7, for 3
epochs of 16 updates, saving a checkpoint every 10 updates. The first run "crashes" at update 25
(a callback raises, as a preemption or a fault would end the process): the 5 updates after
``checkpoint-20`` are lost. A new Trainer, built from scratch as a restarted job would build it,
continues with ``train(resume_from_checkpoint=True)``, which picks the newest checkpoint that
verifies. trainkit's resume is exact on CPU: the data position is skipped to by index, dropout
is seeded per (seed, step, micro-batch), the optimizer moments and the loss bookkeeping are
restored. So the resumed run ends with weights ``torch.equal`` to those of a run that was never
interrupted, and logs the same losses.

Everything is generated and seeded; nothing downloads. Run: ``python examples/resume.py``
(writes ``./output_resume``).
"""

import shutil

import torch
from transformers import BertConfig, BertForSequenceClassification, TrainerCallback

from trainkit import Trainer, TrainingArguments

torch.set_num_threads(1)  # a tiny model: one thread is fastest and leaves the other core free
OUTPUT = "./output_resume"


def make_rows(n, seed):
    """``n`` rows of 16 tokens in 8..49; half of them (at random) get one 7. The label: has a 7."""
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(8, 50, (n, 16), generator=g)
    has_seven = torch.rand(n, generator=g) < 0.5
    ids[has_seven, torch.randint(0, 16, (n,), generator=g)[has_seven]] = 7
    return [{"input_ids": ids[i], "labels": int(has_seven[i])} for i in range(n)]


class Crash(Exception):
    pass


class CrashAt(TrainerCallback):
    """Raises after update ``step``: the process dies, everything since the last checkpoint is lost."""

    def __init__(self, step):
        self.step = step

    def on_step_end(self, args, state, control, **kwargs):
        if state.global_step == self.step:
            raise Crash(f"simulated crash after update {state.global_step}")


def make_trainer(output_dir, callbacks=None):
    """What a training job builds at start-up: model, arguments, data, Trainer."""
    torch.manual_seed(0)  # the same initial weights in every run
    config = BertConfig(vocab_size=50, hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
                        max_position_embeddings=16, num_labels=2)  # dropout 0.1 (BERT's default): resume must replay it exactly
    args = TrainingArguments(
        output_dir=output_dir,
        num_train_epochs=3,
        per_device_train_batch_size=16,
        gradient_accumulation_steps=2,  # 512 rows / 32 per update = 16 updates per epoch
        learning_rate=3e-3,
        warmup_steps=8,
        logging_steps=5,
        save_strategy="steps",
        save_steps=10,
        report_to="none",
        disable_tqdm=True,
        seed=0,
    )
    return Trainer(model=BertForSequenceClassification(config), args=args, train_dataset=make_rows(512, seed=1),
                   callbacks=callbacks)


def train_losses(trainer):
    return {entry["step"]: entry["loss"] for entry in trainer.state.log_history if "loss" in entry}


shutil.rmtree(OUTPUT, ignore_errors=True)  # a stale folder from an earlier run would be resumed from

# 1. The interrupted job: crashes after update 25 (mid-epoch 1); checkpoint-20 is the newest on disk.
try:
    make_trainer(OUTPUT, callbacks=[CrashAt(25)]).train()
except Crash as crash:
    print(f"first run: {crash}")

# 2. The restarted job: a fresh process would build everything again, then resume.
resumed = make_trainer(OUTPUT)
resumed.train(resume_from_checkpoint=True)  # True: the newest checkpoint in output_dir whose manifest verifies
print(f"resumed run: finished at step {resumed.state.global_step}")

# 3. The reference: the same job, never interrupted.
reference = make_trainer(f"{OUTPUT}/uninterrupted")
reference.train()

pairs = list(zip(resumed.model.state_dict().items(), reference.model.state_dict().items()))
identical = all(torch.equal(a, b) for (_, a), (_, b) in pairs)
largest = max((a.double() - b.double()).abs().max().item() for (_, a), (_, b) in pairs)
same_logs = train_losses(resumed) == train_losses(reference)
print(f"final weights: {len(pairs)} tensors, torch.equal for all of them: {identical} (largest difference {largest:g})")
print(f"logged training losses equal: {same_logs}  {train_losses(resumed)}")
