"""Several metrics at once with the Trainer: accuracy, macro F1, a confusion matrix, sliced by input.

A tiny BERT sorts generated token sequences into 3 classes; each row carries one keyword of
its class and, in a third of the rows, a distractor: a keyword of another class, outvoted by a
second keyword of the true class. The example shows:

- ``compute_metrics`` returning several metrics (accuracy, macro F1 from scikit-learn, the
  per-class recall read off the confusion matrix, the accuracy on rows with a distractor);
- ``preprocess_logits_for_metrics`` reducing each batch's logits to class ids before they are
  gathered (the whole set's logits are never held; it matters for LMs with large vocabularies);
- ``include_for_metrics=["inputs"]``, so ``compute_metrics`` can slice the metrics by a
  property of the input (here: whether the row has a distractor);
- ``metric_for_best_model="f1_macro"`` with ``load_best_model_at_end=True``: the model left
  in memory after training is the best epoch's, not the last one's.

Everything is generated and seeded; nothing downloads. Run: ``python examples/custom_metrics.py``
(writes ``./output_custom_metrics``).
"""

import numpy as np
import torch
from sklearn.metrics import confusion_matrix, f1_score
from transformers import BertConfig, BertForSequenceClassification

from trainkit import Trainer, TrainingArguments

torch.set_num_threads(1)  # a tiny model: one thread is fastest and leaves the other core free

NUM_CLASSES, LENGTH = 3, 16
KEYWORDS = [[1, 2, 3], [4, 5, 6], [7, 8, 9]]  # class c's keywords; other tokens (10..49) are noise


def make_rows(n, seed):
    """``n`` rows of ``LENGTH`` tokens: a keyword of the label's class; in a third of the rows, a
    keyword of another class too, and a second one of the label's class (the majority wins)."""
    g = torch.Generator().manual_seed(seed)
    pick = lambda k: int(torch.randint(k, (1,), generator=g))  # noqa: E731
    rows = []
    for _ in range(n):
        label = pick(NUM_CLASSES)
        ids = torch.randint(10, 50, (LENGTH,), generator=g)
        place = torch.randperm(LENGTH, generator=g)
        ids[place[0]] = KEYWORDS[label][pick(3)]
        if pick(3) == 0:
            other = (label + 1 + pick(NUM_CLASSES - 1)) % NUM_CLASSES
            ids[place[1]], ids[place[2]] = KEYWORDS[other][pick(3)], KEYWORDS[label][pick(3)]
        rows.append({"input_ids": ids, "labels": label})
    return rows


def has_distractor(row):
    """Whether a row holds keywords of more than one class."""
    return sum(any(k in row for k in keywords) for keywords in KEYWORDS) > 1


def argmax_logits(logits, labels):
    # Called on each batch before gathering: keep one int per row instead of NUM_CLASSES floats.
    return logits.argmax(dim=-1)


def compute_metrics(eval_pred):
    predictions, labels = eval_pred.predictions, eval_pred.label_ids  # predictions: already class ids
    matrix = confusion_matrix(labels, predictions, labels=list(range(NUM_CLASSES)))
    recall = matrix.diagonal() / np.maximum(matrix.sum(axis=1), 1)
    # include_for_metrics=["inputs"] makes the input ids available: slice the accuracy by them.
    distractor = np.array([has_distractor(row.tolist()) for row in eval_pred.inputs])
    correct = predictions == labels
    return {
        "accuracy": float(correct.mean()),
        "f1_macro": float(f1_score(labels, predictions, average="macro")),
        **{f"recall_class_{c}": float(r) for c, r in enumerate(recall)},
        "accuracy_with_distractor": float(correct[distractor].mean()),
        "confusions": int(matrix.sum() - matrix.trace()),  # off-diagonal count: the confusion matrix in one number
    }


torch.manual_seed(0)
config = BertConfig(vocab_size=50, hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
                    max_position_embeddings=LENGTH, num_labels=NUM_CLASSES)
model = BertForSequenceClassification(config)

args = TrainingArguments(
    output_dir="./output_custom_metrics",
    num_train_epochs=8,
    per_device_train_batch_size=32,
    per_device_eval_batch_size=128,
    learning_rate=5e-3,
    warmup_steps=0.1,  # below 1: a ratio of the training steps
    eval_strategy="epoch",
    save_strategy="epoch",  # load_best_model_at_end needs a checkpoint at every evaluation
    save_total_limit=1,  # the best checkpoint is always kept besides
    metric_for_best_model="f1_macro",  # greater_is_better follows: True for anything but a loss
    load_best_model_at_end=True,
    include_for_metrics=["inputs"],
    logging_strategy="epoch",
    report_to="none",
    disable_tqdm=True,
    seed=0,
)
trainer = Trainer(
    model=model,
    args=args,
    train_dataset=make_rows(768, seed=1),
    eval_dataset=make_rows(384, seed=2),
    compute_metrics=compute_metrics,
    preprocess_logits_for_metrics=argmax_logits,
)
trainer.train()

# After load_best_model_at_end the model is the best epoch's: evaluating it again gives the best metric.
metrics = trainer.evaluate()
print(f"best checkpoint {trainer.state.best_model_checkpoint}  (f1_macro {trainer.state.best_metric:.4f})")
for key in ("eval_loss", "eval_accuracy", "eval_f1_macro", "eval_accuracy_with_distractor", "eval_confusions",
            *(f"eval_recall_class_{c}" for c in range(NUM_CLASSES))):
    value = metrics[key]
    print(f"{key:32s} {value:.4f}" if isinstance(value, float) else f"{key:32s} {value}")
prediction = trainer.predict(make_rows(384, seed=2))  # predict() also goes through preprocess_logits_for_metrics
print("confusion matrix (rows: true class, columns: predicted):")
print(confusion_matrix(prediction.label_ids, prediction.predictions, labels=list(range(NUM_CLASSES))))
