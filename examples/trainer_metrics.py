"""transformers' documented Trainer usage, "Advanced Usage with Custom Metrics", with one import changed.

The set-up the documentation leaves implicit (``model``, ``training_args``, ``train_dataset``,
``eval_dataset``, ``data_collator``) is built offline as in ``trainer_basic.py``; the metrics
function and the Trainer call are the documentation's. Run: ``python examples/trainer_metrics.py``.
"""

import numpy as np
from sklearn.metrics import accuracy_score, precision_recall_fscore_support
from transformers import DataCollatorWithPadding

from offline import load_model, load_reviews, load_tokenizer
from trainkit import Trainer, TrainingArguments  # the one changed line: was `from transformers import ...`

tokenizer = load_tokenizer()
splits = load_reviews(1000).map(lambda b: tokenizer(b["text"], truncation=True), batched=True).train_test_split(test_size=0.2)
model, train_dataset, eval_dataset = load_model(num_labels=2), splits["train"], splits["test"]
data_collator = DataCollatorWithPadding(tokenizer=tokenizer)
training_args = TrainingArguments(output_dir="./results", num_train_epochs=3, per_device_train_batch_size=16, eval_strategy="epoch", save_strategy="no")


# Define custom metrics function
def compute_metrics(eval_pred):
    predictions, labels = eval_pred
    predictions = np.argmax(predictions, axis=1)

    accuracy = accuracy_score(labels, predictions)
    precision, recall, f1, _ = precision_recall_fscore_support(labels, predictions, average="binary")

    return {"accuracy": accuracy, "precision": precision, "recall": recall, "f1": f1}


# Initialize Trainer with custom metrics
trainer = Trainer(
    model=model,
    args=training_args,
    train_dataset=train_dataset,
    eval_dataset=eval_dataset,
    data_collator=data_collator,
    compute_metrics=compute_metrics,
)
trainer.train()
print(trainer.evaluate())
