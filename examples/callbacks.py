"""Callbacks on the Trainer: transformers' ``EarlyStoppingCallback`` and a callback of your own.

A tiny BERT learns whether a sequence of random tokens contains the token 7. Training is
allowed 20 epochs, but the task is learnt in a few: ``EarlyStoppingCallback`` stops the run
once the evaluation accuracy has not improved by more than 1 point for 3 evaluations in a row.
``Recorder``, a plain ``transformers.TrainerCallback``, records the learning rate and loss at
every log and each evaluation's accuracy, and notes when a callback asked training to stop.
Both run unchanged on ``trainkit.Trainer``, which dispatches through transformers' own
``CallbackHandler``.

Everything is generated and seeded; nothing downloads. Run: ``python examples/callbacks.py``
(writes ``./output_callbacks``).
"""

import torch
from transformers import BertConfig, BertForSequenceClassification, EarlyStoppingCallback, TrainerCallback

from trainkit import Trainer, TrainingArguments

torch.set_num_threads(1)  # a tiny model: one thread is fastest and leaves the other core free


def make_rows(n, seed):
    """``n`` rows of 16 tokens in 8..49; half of them (at random) get one 7. The label: has a 7."""
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(8, 50, (n, 16), generator=g)
    has_seven = torch.rand(n, generator=g) < 0.5
    ids[has_seven, torch.randint(0, 16, (n,), generator=g)[has_seven]] = 7
    return [{"input_ids": ids[i], "labels": int(has_seven[i])} for i in range(n)]


def accuracy(eval_pred):
    return {"accuracy": float((eval_pred.predictions.argmax(-1) == eval_pred.label_ids).mean())}


class Recorder(TrainerCallback):
    """Records what training did: (step, learning rate, loss) at each log, (step, accuracy) at each
    evaluation, and the step at which some callback set ``control.should_training_stop``."""

    def __init__(self):
        self.logs, self.evals, self.stopped_at = [], [], None

    def on_log(self, args, state, control, logs=None, **kwargs):
        if "loss" in logs:  # training logs; evaluation and end-of-training logs have no "loss"
            self.logs.append((state.global_step, logs["learning_rate"], logs["loss"]))

    def on_evaluate(self, args, state, control, metrics=None, **kwargs):
        self.evals.append((state.global_step, metrics["eval_accuracy"]))
        # Callbacks run in the order given: EarlyStoppingCallback (listed first) has already
        # decided, so the flag it sets is visible here.
        if control.should_training_stop and self.stopped_at is None:
            self.stopped_at = state.global_step


torch.manual_seed(0)
config = BertConfig(vocab_size=50, hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
                    max_position_embeddings=16, num_labels=2)
model = BertForSequenceClassification(config)

args = TrainingArguments(
    output_dir="./output_callbacks",
    num_train_epochs=20,  # an upper bound: early stopping is expected to end the run well before
    per_device_train_batch_size=32,
    per_device_eval_batch_size=128,
    learning_rate=3e-3,
    warmup_steps=16,  # linear warm-up, then linear decay over the 20 epochs (the Recorder shows it)
    eval_strategy="steps",
    eval_steps=16,
    save_strategy="steps",  # load_best_model_at_end needs a checkpoint at every evaluation
    save_steps=16,
    save_total_limit=1,  # the best checkpoint is always kept besides
    logging_steps=8,
    metric_for_best_model="accuracy",
    load_best_model_at_end=True,
    report_to="none",
    disable_tqdm=True,
    seed=0,
)
recorder = Recorder()
early_stopping = EarlyStoppingCallback(early_stopping_patience=3, early_stopping_threshold=0.01)
trainer = Trainer(
    model=model,
    args=args,
    train_dataset=make_rows(512, seed=1),
    eval_dataset=make_rows(256, seed=2),
    compute_metrics=accuracy,
    callbacks=[early_stopping, recorder],
)
trainer.train()

state = trainer.state
print(f"\nearly stopping fired at step {recorder.stopped_at} of at most {state.max_steps} "
      f"(no gain above 1 point for {early_stopping.early_stopping_patience_counter} evaluations)")
print(f"best: accuracy {state.best_metric:.4f} at step {state.best_global_step}, loaded from {state.best_model_checkpoint}")
print("recorded at each log:    step  learning rate  loss")
for step, lr, loss in recorder.logs:
    print(f"                        {step:4d}  {lr:.2e}       {loss:.4f}")
print("recorded at each evaluation:", ", ".join(f"step {step} acc {acc:.3f}" for step, acc in recorder.evals))
