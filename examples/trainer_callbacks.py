"""transformers' documented Trainer usage, "Usage with Callbacks", with one import changed.

One more difference: the documentation's arguments set ``eval_strategy="epoch"`` with
``load_best_model_at_end=True`` but leave ``save_strategy`` at its default ``"steps"``, which
``transformers.TrainingArguments`` itself rejects ("--load_best_model_at_end requires the save
and eval strategy to match"); ``save_strategy="epoch"`` is added, as transformers requires.
Run: ``python examples/trainer_callbacks.py``.
"""

import numpy as np
from transformers import DataCollatorWithPadding, EarlyStoppingCallback, TrainerCallback

from offline import load_model, load_reviews, load_tokenizer
from trainkit import Trainer, TrainingArguments  # the one changed line: was `from transformers import ...`

tokenizer = load_tokenizer()
splits = load_reviews(1000).map(lambda b: tokenizer(b["text"], truncation=True), batched=True).train_test_split(test_size=0.2)
model, train_dataset, eval_dataset = load_model(num_labels=2), splits["train"], splits["test"]


def compute_metrics(eval_pred):
    predictions, labels = eval_pred
    return {"accuracy": float((np.argmax(predictions, axis=1) == labels).mean())}


# Custom callback
class LoggingCallback(TrainerCallback):
    def on_log(self, args, state, control, logs=None, **kwargs):
        if logs:
            print(f"Step {state.global_step}: {logs}")


# Initialize with callbacks
training_args = TrainingArguments(
    output_dir="./results",
    eval_strategy="epoch",
    save_strategy="epoch",  # added: transformers rejects load_best_model_at_end without it
    load_best_model_at_end=True,
    metric_for_best_model="accuracy",
)

trainer = Trainer(
    model=model,
    args=training_args,
    train_dataset=train_dataset,
    eval_dataset=eval_dataset,
    data_collator=DataCollatorWithPadding(tokenizer=tokenizer),
    compute_metrics=compute_metrics,
    callbacks=[
        EarlyStoppingCallback(early_stopping_patience=3),
        LoggingCallback(),
    ],
)
trainer.train()
