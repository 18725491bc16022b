"""Offline stand-ins for the Hub: a tokenizer, a labelled text dataset and a tiny BERT, all local.

The Trainer examples follow transformers' documentation, which downloads ``bert-base-uncased``
and ``imdb``. This machine has no Hub access, so these helpers build the same kinds of objects
locally: a real ``BertTokenizerFast`` over a small vocabulary, a ``datasets.Dataset`` of short
generated movie reviews with a ``label`` column (1 = positive), and a
``AutoModelForSequenceClassification`` from a tiny ``BertConfig``. Only these lines differ from
the documentation; everything about the Trainer is unchanged.
"""

from __future__ import annotations

import random

POSITIVE = ["great", "wonderful", "brilliant", "moving", "superb", "delightful", "fun", "beautiful"]
NEGATIVE = ["boring", "awful", "dull", "terrible", "weak", "clumsy", "tedious", "bad"]
NEUTRAL = ["the", "movie", "film", "plot", "acting", "was", "and", "a", "story", "cast", "really", "quite", "script", "ending"]
SPECIAL = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]


def load_tokenizer():
    """A real WordPiece ``BertTokenizerFast`` over the reviews' vocabulary (lower-cased)."""
    from transformers import BertTokenizerFast

    vocab = {token: i for i, token in enumerate(SPECIAL + POSITIVE + NEGATIVE + NEUTRAL)}
    return BertTokenizerFast(vocab=vocab, do_lower_case=True)


def load_reviews(n: int = 1000, *, seed: int = 0):
    """A ``datasets.Dataset`` of ``n`` generated reviews: ``text`` and ``label`` (1 positive, 0 negative).

    Each review mixes neutral words with two or three sentiment words, mostly of its label's
    polarity, so the task is learnable but not trivial.
    """
    from datasets import Dataset

    rng = random.Random(seed)
    texts, labels = [], []
    for _ in range(n):
        label = rng.randint(0, 1)
        words = rng.choices(NEUTRAL, k=rng.randint(4, 12))
        for _ in range(rng.randint(2, 3)):
            polar = POSITIVE if (rng.random() < 0.85) == bool(label) else NEGATIVE
            words.insert(rng.randrange(len(words) + 1), rng.choice(polar))
        texts.append(" ".join(words))
        labels.append(label)
    return Dataset.from_dict({"text": texts, "label": labels})


def load_model(num_labels: int = 2, *, seed: int = 0):
    """``AutoModelForSequenceClassification`` built from a tiny ``BertConfig`` (hidden 32, 2 layers)."""
    import torch
    from transformers import AutoModelForSequenceClassification, BertConfig

    config = BertConfig(
        vocab_size=len(SPECIAL + POSITIVE + NEGATIVE + NEUTRAL), hidden_size=32, num_hidden_layers=2,
        num_attention_heads=2, intermediate_size=64, max_position_embeddings=64, num_labels=num_labels,
    )
    torch.manual_seed(seed)
    return AutoModelForSequenceClassification.from_config(config)
