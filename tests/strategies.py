"""Shared hypothesis strategies and tiny real models for trainkit's tests.

Models are real ``transformers`` models built from tiny configs (nothing downloads), in
float64 where tests compare numbers. Each builder is seeded, so a test can build the same
model twice.
"""

from __future__ import annotations

import logging

import torch
from hypothesis import strategies as st
from torch import nn

VOCAB = 64
logging.getLogger("transformers").setLevel(logging.ERROR)


def tiny_bert(*, seed: int = 0, dropout: float = 0.0, num_labels: int = 3, dtype=torch.float64) -> nn.Module:
    """A 2-layer BERT sequence classifier with hidden size 32."""
    from transformers import BertConfig, BertForSequenceClassification

    config = BertConfig(
        vocab_size=VOCAB,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=37,
        max_position_embeddings=64,
        hidden_dropout_prob=dropout,
        attention_probs_dropout_prob=dropout,
        num_labels=num_labels,
    )
    torch.manual_seed(seed)
    return BertForSequenceClassification(config).to(dtype)


def tiny_gpt2(*, seed: int = 0, dropout: float = 0.0, dtype=torch.float64) -> nn.Module:
    """A 2-layer GPT-2 causal LM with n_embd 32 (its loss shifts labels by one)."""
    from transformers import GPT2Config, GPT2LMHeadModel

    config = GPT2Config(
        vocab_size=VOCAB,
        n_embd=32,
        n_layer=2,
        n_head=2,
        n_positions=64,
        resid_pdrop=dropout,
        embd_pdrop=dropout,
        attn_pdrop=dropout,
        bos_token_id=0,
        eos_token_id=0,
        pad_token_id=0,
    )
    torch.manual_seed(seed)
    return GPT2LMHeadModel(config).to(dtype)


class DictMLP(nn.Module):
    """A plain ``nn.Module`` returning ``{"loss", "logits"}`` like a transformers model."""

    def __init__(self, d_in: int = 8, d_hidden: int = 16, n_out: int = 3, dropout: float = 0.0) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Linear(d_in, d_hidden), nn.LayerNorm(d_hidden), nn.GELU(), nn.Dropout(dropout), nn.Linear(d_hidden, n_out))

    def forward(self, x: torch.Tensor, labels: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        logits = self.net(x)
        out = {"logits": logits}
        if labels is not None:
            out["loss"] = nn.functional.cross_entropy(logits, labels)
        return out


def mlp(*, seed: int = 0, dropout: float = 0.0, dtype=torch.float64) -> nn.Module:
    torch.manual_seed(seed)
    return DictMLP(dropout=dropout).to(dtype)


@st.composite
def token_batches(draw, *, min_rows: int = 2, max_rows: int = 8, max_len: int = 12, token_labels: bool = True):
    """A padded batch of token ids: right padding, random extra -100 masks on the labels.

    Returns a dict with ``input_ids``, ``attention_mask`` and ``labels`` (token-level labels
    when ``token_labels``, else one class per row).
    """
    rows = draw(st.integers(min_rows, max_rows))
    seed = draw(st.integers(0, 2**31 - 1))
    gen = torch.Generator().manual_seed(seed)
    width = draw(st.integers(3, max_len))
    lengths = torch.randint(2, width + 1, (rows,), generator=gen)
    ids = torch.randint(1, VOCAB, (rows, width), generator=gen)
    mask = (torch.arange(width)[None, :] < lengths[:, None]).long()
    ids = ids * mask
    if token_labels:
        labels = ids.clone()
        labels[mask == 0] = -100
        drop = torch.rand(rows, width, generator=gen) < draw(st.floats(0.0, 0.5))
        labels[drop] = -100
    else:
        labels = torch.randint(0, 3, (rows,), generator=gen)
    return {"input_ids": ids, "attention_mask": mask, "labels": labels}


@st.composite
def splits(draw, n: int):
    """Contiguous, non-empty, uneven chunks of ``range(n)`` as a list of (start, stop)."""
    k = draw(st.integers(1, n))
    cuts = sorted(draw(st.sets(st.integers(1, n - 1), min_size=k - 1, max_size=k - 1))) if k > 1 else []
    bounds = [0, *cuts, n]
    return [(a, b) for a, b in zip(bounds, bounds[1:])]


def slice_batch(batch: dict, start: int, stop: int) -> dict:
    return {k: v[start:stop] for k, v in batch.items()}


def mlp_batch(seed: int, rows: int, *, dtype=torch.float64) -> dict:
    gen = torch.Generator().manual_seed(seed)
    return {"x": torch.randn(rows, 8, generator=gen, dtype=dtype), "labels": torch.randint(0, 3, (rows,), generator=gen)}


seeds = st.integers(0, 2**31 - 1)


@st.composite
def label_tensors(draw):
    """Label tensors as collators make them: int64 class/token ids (some -100), float targets, or bools;
    0 to 3 dims, small (counted as a list) to large (counted through numpy), sometimes needing grad."""
    dims = draw(st.integers(0, 3))
    shape = tuple(draw(st.lists(st.integers(0, 40 if dims < 3 else 12), min_size=dims, max_size=dims)))
    gen = torch.Generator().manual_seed(draw(st.integers(0, 2**16)))
    kind = draw(st.sampled_from(["long", "int32", "float", "bool"]))
    if kind == "bool":
        return torch.rand(shape, generator=gen) < 0.5
    ids = torch.randint(0, 5, shape, generator=gen)
    ids = torch.where(torch.rand(shape, generator=gen) < draw(st.floats(0, 1)), torch.full_like(ids, -100), ids)
    if kind == "float":
        return ids.double().requires_grad_(draw(st.booleans()))
    return ids.int() if kind == "int32" else ids
