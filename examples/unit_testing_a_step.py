"""Property tests of a training step, with hypothesis: what a researcher checks before a long run.

``train_step`` is a function of ``(state, batch)``, so the claims one relies on in a training
setup can be tested directly, on a tiny model, in seconds. This file tests three of them for a
tiny GPT-2 causal LM trained with AdamW, weight decay, gradient clipping and a warm-up
schedule, on batches of uneven lengths (padding labelled -100):

1. accumulating gradients over k micro-batches is the same update as one step on their union
   (float64, to 1e-10), however the rows are split and padded;
2. a step with learning rate 0 (the first step of a linear warm-up) leaves every parameter
   exactly unchanged (weight decay included: AdamW's decay is scaled by the learning rate);
3. a step is deterministic: from two copies of a state (``trainkit.fork``), the same batch
   gives bit-identical parameters and loss with dropout on, and the global RNG is not touched.

``trainkit.fork`` branches a state: ``train_step`` consumes its input (parameters are updated
in place), so each branch needs its own copy. Run the tests either way::

    python examples/unit_testing_a_step.py          # runs them through pytest.main
    python -m pytest examples/unit_testing_a_step.py
"""

import functools
import sys

import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from transformers import GPT2Config, GPT2LMHeadModel

from trainkit import fork, init_state, make_optimizer, make_schedule, train_step

torch.set_num_threads(1)  # a tiny model: one thread is fastest (and several contend on a busy machine)
VOCAB, MAX_LENGTH = 32, 10
PROPERTY = settings(max_examples=10, deadline=None)  # a few seconds per property; raise it for a deeper search


@functools.cache
def base_state(dropout: float, warmup: int = 0):
    """A fresh state of a tiny float64 GPT-2 (built once per setting; tests fork it, never step it)."""
    torch.manual_seed(0)
    config = GPT2Config(vocab_size=VOCAB, n_positions=MAX_LENGTH, n_embd=16, n_layer=2, n_head=2,
                        resid_pdrop=dropout, embd_pdrop=dropout, attn_pdrop=dropout)
    model = GPT2LMHeadModel(config).double()  # float64: exactness claims are checked far below float32 noise
    optimizer = make_optimizer(model, "adamw_torch", lr=1e-2, weight_decay=0.1)
    schedule = make_schedule("linear", num_warmup_steps=warmup, num_training_steps=10)
    return init_state(model, optimizer, schedule=schedule, seed=0)


def causal_lm_loss(model, batch):
    """The mean next-token cross-entropy over the label tokens, computed in the model's dtype.

    Why not ``model(**batch).loss``: transformers' causal-LM loss upcasts the logits with
    ``.float()``, i.e. computes in float32 even for a float64 model, which would bury the
    1e-10 check under float32 round-off. ``train_step`` weights a ``loss_fn``'s micro-batch
    mean by its label tokens (shifted, for a causal LM), exactly as it weights the model's loss.
    """
    logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
    return torch.nn.functional.cross_entropy(logits[:, :-1].flatten(0, 1), batch["labels"][:, 1:].flatten(), ignore_index=-100)


def batch_of(rows):
    """Right-pad token lists to a batch; padded positions get label -100 (no loss there)."""
    width = max(len(row) for row in rows)
    ids = torch.zeros(len(rows), width, dtype=torch.long)
    mask = torch.zeros(len(rows), width, dtype=torch.long)
    for i, row in enumerate(rows):
        ids[i, : len(row)], mask[i, : len(row)] = torch.tensor(row), 1
    return {"input_ids": ids, "attention_mask": mask, "labels": ids.masked_fill(mask == 0, -100)}


def params(state):
    return [p.detach().clone() for p in state.model.parameters()]


# A row: 2..MAX_LENGTH tokens (at least one predicted token after the causal shift).
rows = st.lists(st.integers(0, VOCAB - 1), min_size=2, max_size=MAX_LENGTH)
# A window: 1..4 micro-batches of 1..3 rows each.
windows = st.lists(st.lists(rows, min_size=1, max_size=3), min_size=1, max_size=4)


@PROPERTY
@given(window=windows, clip=st.sampled_from([None, 1.0, 1e-3]))
def test_accumulation_equals_one_step_on_the_union(window, clip):
    """k micro-batches (each padded to its own length) update the model as one batch of all their rows."""
    micro_batches, union_batch = [batch_of(micro) for micro in window], batch_of([row for micro in window for row in micro])
    accumulated, _ = train_step(fork(base_state(0.0)), micro_batches, max_grad_norm=clip, loss_fn=causal_lm_loss)
    union, _ = train_step(fork(base_state(0.0)), union_batch, max_grad_norm=clip, loss_fn=causal_lm_loss)
    for a, b in zip(params(accumulated), params(union)):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-10)


@PROPERTY
@given(window=windows, clip=st.sampled_from([None, 1.0]))
def test_zero_learning_rate_changes_nothing(window, clip):
    """The first update of a linear warm-up has learning rate 0 (as in transformers' schedule): no
    parameter moves, not even by weight decay, though gradients and moments are computed."""
    state = fork(base_state(0.1, warmup=2))
    before = params(state)
    state, out = train_step(state, [batch_of(micro) for micro in window], max_grad_norm=clip)
    assert out.lr == 0.0 and not out.skipped and out.grad_norm > 0
    assert all(torch.equal(a, b) for a, b in zip(before, params(state)))


@PROPERTY
@given(window=windows, steps=st.integers(1, 3))
def test_steps_are_deterministic_with_dropout(window, steps):
    """Two forks of a state, stepped with the same batches, stay bit-identical (dropout 0.1 on),
    and the global RNG is left as it was."""
    batches = [batch_of(micro) for micro in window]
    first, second = fork(base_state(0.1)), fork(base_state(0.1))
    rng = torch.get_rng_state()
    losses = []
    for _ in range(steps):
        first, out_first = train_step(first, batches, max_grad_norm=1.0)
        second, out_second = train_step(second, batches, max_grad_norm=1.0)
        assert torch.equal(out_first.loss, out_second.loss)
        losses.append(out_first.loss)
    assert torch.equal(torch.get_rng_state(), rng)
    assert all(torch.equal(a, b) for a, b in zip(params(first), params(second)))
    # Not vacuous: dropout is really on, so a state with another seed draws other masks, another loss.
    _, out_other = train_step(fork(base_state(0.1)).replace(seed=1), batches, max_grad_norm=1.0)
    assert not torch.equal(out_other.loss, losses[0])


if __name__ == "__main__":
    import pytest

    # torch and transformers are imported above, before pytest: it warns it cannot assert-rewrite them.
    sys.exit(pytest.main([__file__, "-q", "-W", "ignore::pytest.PytestAssertRewriteWarning"]))
