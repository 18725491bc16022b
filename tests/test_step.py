"""train_step / eval_step: properties (hypothesis) and exact contracts."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from tests.strategies import label_tensors, mlp, mlp_batch, seeds, slice_batch, splits, tiny_bert, tiny_gpt2, token_batches
from trainkit import ConfigError, NonFiniteError, StaleStateError, StepHooks, eval_step, fork, init_state, train_step


def _sgd_state(model, lr=1.0, **kw):
    return init_state(model, torch.optim.SGD(model.parameters(), lr=lr), **kw)


def _params(state):
    return [p.detach().clone() for p in state.model.parameters()]


def _max_diff(a, b):
    return max((x - y).abs().max().item() for x, y in zip(a, b))


def _accumulation_matches(model_fn, batch, chunks, tol=1e-10, **step_kw):
    base = _sgd_state(model_fn(), lr=1.0, seed=7)
    split = fork(base)
    full_state, full_out = train_step(base, batch, **step_kw)
    window = [slice_batch(batch, a, b) for a, b in chunks]
    acc_state, acc_out = train_step(split, window, **step_kw)
    assert full_out.num_items == acc_out.num_items
    assert abs(full_out.loss.item() - acc_out.loss.item()) < tol
    assert _max_diff(_params(full_state), _params(acc_state)) < tol


def _has_items(batch, shift):
    labels = batch["labels"][..., 1:] if shift else batch["labels"]
    return bool((labels != -100).any())


@given(batch=token_batches(token_labels=False), data=st.data())
def test_accumulation_equals_full_batch_sequence_classification(batch, data):
    """Property: for any uneven split of a batch into k micro-batches (with -100 rows), one
    accumulated update equals one update on the whole batch (float64, within 1e-10)."""
    rows = batch["labels"].shape[0]
    batch["labels"][data.draw(st.lists(st.integers(0, rows - 1), max_size=rows - 1))] = -100
    chunks = data.draw(splits(rows))
    if _has_items(batch, shift=False):
        _accumulation_matches(tiny_bert, batch, chunks)


def _causal_mean_loss(model, batch):
    """GPT-2's next-token loss, computed in float64 (transformers' loss casts logits to float32)."""
    logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
    return torch.nn.functional.cross_entropy(logits[:, :-1].flatten(0, 1), batch["labels"][:, 1:].flatten())


@given(batch=token_batches(token_labels=True), data=st.data())
def test_accumulation_equals_full_batch_causal_lm(batch, data):
    """Property: a causal LM (labels shifted by one, padding and random -100 masks) accumulated
    over uneven micro-batches equals one update on their union, in float64 within 1e-10. The
    loss is GPT-2's next-token mean computed in float64, because transformers' own loss casts
    logits to float32 and so cannot show a 1e-10 agreement; items are still counted by
    train_step's causal-LM detection."""
    chunks = data.draw(splits(batch["labels"].shape[0]))
    if _has_items(batch, shift=True):
        _accumulation_matches(tiny_gpt2, batch, chunks, loss_fn=_causal_mean_loss)


@given(batch=token_batches(token_labels=True), data=st.data())
def test_accumulation_equals_full_batch_causal_lm_default_loss(batch, data):
    """Property: with GPT-2's own loss (model(**batch).loss, computed by transformers in float32)
    the accumulated update equals the full-batch update within float32 round-off (1e-5)."""
    chunks = data.draw(splits(batch["labels"].shape[0]))
    if _has_items(batch, shift=True):
        _accumulation_matches(tiny_gpt2, batch, chunks, tol=1e-5)


@given(seed=seeds, rows=st.integers(2, 9), data=st.data())
def test_accumulation_weights_plain_module_means(seed, rows, data):
    """Property: a plain module (whose mean loss does not take num_items_in_batch) is weighted by
    each micro-batch's share of label items, including micro-batches whose labels are all -100."""
    batch = mlp_batch(seed, rows)
    batch["labels"][data.draw(st.lists(st.integers(0, rows - 1), max_size=rows - 1))] = -100
    if _has_items(batch, shift=False):
        _accumulation_matches(mlp, batch, data.draw(splits(rows)))


@given(batch=token_batches(token_labels=True), data=st.data())
def test_accumulation_with_compute_loss_func(batch, data):
    """Property: with a transformers-style compute_loss_func (sum / num_items_in_batch), the
    window's num_items_in_batch makes accumulation equal the full batch."""
    seen = []

    def loss_func(outputs, labels, num_items_in_batch):
        seen.append(int(num_items_in_batch))
        logits = outputs.logits[:, :-1].reshape(-1, outputs.logits.shape[-1])
        target = labels[:, 1:].reshape(-1)
        return torch.nn.functional.cross_entropy(logits, target, reduction="sum") / num_items_in_batch

    chunks = data.draw(splits(batch["labels"].shape[0]))
    if _has_items(batch, shift=True):
        _accumulation_matches(tiny_gpt2, batch, chunks, compute_loss_func=loss_func)
        expected = int((batch["labels"][:, 1:] != -100).sum())
        assert set(seen) == {expected}


@given(seed=seeds, k=st.integers(1, 3))
def test_fork_then_step_twice_is_bitwise_equal_with_dropout(seed, k):
    """Property: train_step is a function of its inputs: the same (forked) state and batch give
    bitwise-equal parameters, loss and optimizer state on CPU, with dropout on."""
    model = tiny_bert(seed=seed % 7, dropout=0.2, dtype=torch.float32)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
    state = init_state(model, opt, seed=seed)
    gen = torch.Generator().manual_seed(seed)
    ids = torch.randint(1, 64, (4, 10), generator=gen)
    window = [{"input_ids": ids, "labels": torch.randint(0, 3, (4,), generator=gen)} for _ in range(k)]
    a, b = state, fork(state)
    a, out_a = train_step(a, window)
    b, out_b = train_step(b, window)
    assert torch.equal(out_a.loss, out_b.loss)
    assert all(torch.equal(x, y) for x, y in zip(a.model.parameters(), b.model.parameters()))
    sa, sb = a.optimizer.state_dict()["state"], b.optimizer.state_dict()["state"]
    assert sa.keys() == sb.keys()
    assert all(torch.equal(sa[i][key], sb[i][key]) for i in sa for key in sa[i])


def test_dropout_depends_on_step_seed():
    """Different seeds give different dropout masks (so the seeding is real, not a no-op)."""
    model = tiny_bert(dropout=0.5, dtype=torch.float32)
    batch = {"input_ids": torch.randint(1, 64, (4, 10)), "labels": torch.tensor([0, 1, 2, 0])}
    s1 = init_state(model, torch.optim.SGD(model.parameters(), lr=0.1), seed=1)
    s2 = fork(s1).replace(seed=2)
    _, o1 = train_step(s1, batch)
    _, o2 = train_step(s2, batch)
    assert not torch.equal(o1.loss, o2.loss)


@given(n=st.integers(1, 6), ks=st.lists(st.integers(1, 3), min_size=6, max_size=6), warm=st.integers(0, 4))
def test_progress_and_learning_rate_follow_the_schedule(n, ks, warm):
    """Property: after n calls with any window sizes k, progress.step == n, position counts the
    micro-batches, and the LR of update t is base_lr x schedule(t) in every parameter group."""

    def schedule(step):
        return min(1.0, (step + 1) / (warm + 1)) * 0.5**step

    model = mlp()
    groups = [{"params": model.net[0].parameters(), "lr": 0.1}, {"params": model.net[4].parameters(), "lr": 0.02}]
    state = init_state(model, torch.optim.SGD(groups, lr=0.1), schedule=schedule)
    consumed = 0
    for t in range(n):
        window = [mlp_batch(t * 10 + i, 3) for i in range(ks[t])]
        state, out = train_step(state, window)
        consumed += ks[t]
        assert out.lrs == (0.1 * schedule(t), 0.02 * schedule(t))
    assert state.progress.step == n
    assert state.progress.position == consumed
    assert state.progress.samples_seen == 3 * consumed


@given(seed=seeds, max_norm=st.floats(1e-3, 10.0))
def test_clipping_bounds_the_update_and_reports_the_preclip_norm(seed, max_norm):
    """Property: with SGD(lr=1), the applied update (= clipped gradient) has norm <= max_norm,
    and StepOutput.grad_norm is the norm of the unclipped gradient."""
    batch = mlp_batch(seed, 6)
    state = _sgd_state(mlp(seed=seed % 5), lr=1.0)
    reference = fork(state)
    loss = reference.model(**batch)["loss"]
    loss.backward()
    true_norm = torch.linalg.vector_norm(torch.stack([p.grad.norm() for p in reference.model.parameters()]))
    before = _params(state)
    state, out = train_step(state, batch, max_grad_norm=max_norm)
    update = torch.linalg.vector_norm(torch.stack([(a - b).norm() for a, b in zip(before, _params(state))]))
    assert math.isclose(out.grad_norm.item(), true_norm.item(), rel_tol=1e-12)
    assert update.item() <= max_norm * (1 + 1e-9)
    if true_norm.item() <= max_norm:
        assert math.isclose(update.item(), true_norm.item(), rel_tol=1e-9)


@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
@given(seed=seeds, mode=st.sampled_from(["raise", "skip"]))
def test_nonfinite_step_leaves_parameters_and_optimizer_unchanged(bad, seed, mode):
    """Property: a NaN/inf loss never reaches the parameters or Adam's moments: "raise" raises
    NonFiniteError naming the step and leaves the state live; "skip" counts a skipped update
    without advancing step or schedule."""
    model = mlp(seed=seed % 3)
    state = init_state(model, torch.optim.AdamW(model.parameters(), lr=0.1), schedule=lambda s: 1.0 / (s + 1))
    state, _ = train_step(state, mlp_batch(seed, 4))
    params, moments = _params(state), {k: v.clone() for k, v in state.optimizer.state[next(state.model.parameters())].items()}

    def poisoned(model, batch):
        return model(**batch)["loss"] * bad

    if mode == "raise":
        with pytest.raises(NonFiniteError, match="step 1"):
            train_step(state, mlp_batch(seed + 1, 4), loss_fn=poisoned)
        assert state.is_live
        new = state
    else:
        new, out = train_step(state, mlp_batch(seed + 1, 4), loss_fn=poisoned, on_nonfinite="skip")
        assert out.skipped and new.progress.skipped == 1 and new.progress.step == 1
    assert all(torch.equal(a, b) for a, b in zip(params, new.model.parameters()))
    after = new.optimizer.state[next(new.model.parameters())]
    assert all(torch.equal(moments[k], after[k]) for k in moments)
    assert all(p.grad is None for p in new.model.parameters())
    new, out = train_step(new, mlp_batch(seed + 2, 4))
    assert out.lr == pytest.approx(0.1 / 2) and new.progress.step == 2


@given(seed=seeds)
def test_eval_step_changes_no_parameter_mode_or_rng(seed):
    """Property: eval_step leaves parameters, every submodule's train/eval flag and the global
    RNG exactly as they were, and does not consume the state."""
    model = tiny_bert(seed=seed % 3, dropout=0.3, dtype=torch.float32)
    model.bert.encoder.eval()  # a mixed-mode model: the flags must come back per submodule
    modes = [m.training for m in model.modules()]
    state = init_state(model, torch.optim.SGD(model.parameters(), lr=0.1))
    torch.manual_seed(seed)
    batch = {"input_ids": torch.randint(1, 64, (3, 7)), "labels": torch.tensor([0, 1, 2])}
    rng = torch.get_rng_state()
    params = _params(state)
    out = eval_step(state, batch)
    assert torch.equal(torch.get_rng_state(), rng)
    assert [m.training for m in model.modules()] == modes
    assert all(torch.equal(a, b) for a, b in zip(params, state.model.parameters()))
    assert state.is_live and out.loss.dim() == 0 and tuple(out.logits.shape) == (3, 3)
    assert torch.equal(out.labels, torch.tensor([0, 1, 2]))


def test_eval_step_matches_model_in_eval_mode():
    """eval_step's loss and logits are the model's own in eval mode, without gradients."""
    model = tiny_bert(dropout=0.3)
    batch = {"input_ids": torch.randint(1, 64, (3, 7)), "labels": torch.tensor([0, 1, 2])}
    state = _sgd_state(model)
    out = eval_step(state, batch)
    model.eval()
    expected = model(**batch)
    assert torch.equal(out.loss, expected.loss.detach()) and torch.equal(out.logits, expected.logits.detach())
    assert not out.loss.requires_grad


def test_train_step_leaves_global_rng_untouched():
    """train_step draws dropout from its own seeded stream, never from the global RNG."""
    model = tiny_bert(dropout=0.3, dtype=torch.float32)
    state = _sgd_state(model, lr=0.01)
    torch.manual_seed(3)
    rng = torch.get_rng_state()
    train_step(state, {"input_ids": torch.randint(1, 64, (2, 5), generator=torch.Generator().manual_seed(0)), "labels": torch.tensor([0, 1])})
    assert torch.equal(torch.get_rng_state(), rng)


def test_consumed_state_raises_on_reuse():
    """The state given to train_step is consumed: reading its model or stepping it again raises."""
    state = _sgd_state(mlp())
    new, _ = train_step(state, mlp_batch(0, 3))
    with pytest.raises(StaleStateError, match="fork"):
        state.model  # noqa: B018
    with pytest.raises(StaleStateError):
        train_step(state, mlp_batch(0, 3))
    assert new.is_live and new.model is not None


def test_missing_loss_names_the_key_and_the_fix():
    """A model output without 'loss' raises ConfigError naming the keys and the fixes."""
    state = _sgd_state(mlp())
    with pytest.raises(ConfigError, match=r"no 'loss'.*logits.*loss_fn"):
        train_step(state, {"x": torch.randn(3, 8, dtype=torch.float64)})
    assert state.is_live  # a failed step does not consume the state


def test_non_scalar_loss_is_rejected():
    state = _sgd_state(mlp())
    with pytest.raises(ConfigError, match="scalar"):
        train_step(state, mlp_batch(0, 3), loss_fn=lambda m, b: m(**b)["logits"])


def test_loss_fn_aux_is_returned_per_micro_batch():
    """loss_fn may return (loss, aux); StepOutput.aux holds one aux per micro-batch."""
    state = _sgd_state(mlp())

    def loss_fn(model, batch):
        out = model(**batch)
        return out["loss"], out["logits"].shape[0]

    _, out = train_step(state, [mlp_batch(0, 3), mlp_batch(1, 5)], loss_fn=loss_fn)
    assert out.aux == (3, 5) and out.num_samples == 8


def test_opaque_scheduler_is_stepped_and_lambdalr_is_read():
    """A LambdaLR is read as a pure schedule; another torch scheduler (StepLR) is stepped once
    per applied update."""
    model = mlp()
    opt = torch.optim.SGD(model.parameters(), lr=1.0)
    state = init_state(model, opt, schedule=torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 0.5**s))
    assert state.lr_scheduler is None and state.base_lrs == (1.0,)
    lrs = []
    for t in range(3):
        state, out = train_step(state, mlp_batch(t, 2))
        lrs.append(out.lr)
    assert lrs == [1.0, 0.5, 0.25]

    model = mlp()
    opt = torch.optim.SGD(model.parameters(), lr=1.0)
    state = init_state(model, opt, schedule=torch.optim.lr_scheduler.StepLR(opt, step_size=1, gamma=0.1))
    lrs = []
    for t in range(3):
        state, out = train_step(state, mlp_batch(t, 2))
        lrs.append(out.lr)
    assert lrs == pytest.approx([1.0, 0.1, 0.01])


def test_bf16_autocast_trains_on_cpu():
    """precision='bf16' runs forward under bfloat16 autocast: the loss differs from float32 but
    stays close, and the parameters stay float32."""
    model = tiny_bert(dtype=torch.float32)
    batch = {"input_ids": torch.randint(1, 64, (4, 9), generator=torch.Generator().manual_seed(0)), "labels": torch.tensor([0, 1, 2, 1])}
    s32 = _sgd_state(model, lr=0.01)
    s16 = fork(s32).replace(precision="bf16")
    _, o32 = train_step(s32, batch)
    s16, o16 = train_step(s16, batch)
    assert not torch.equal(o32.loss, o16.loss)
    assert abs(o32.loss.item() - o16.loss.item()) < 0.05
    assert all(p.dtype == torch.float32 for p in s16.model.parameters())


def test_fp16_grad_scaler_skips_overflow_without_advancing_the_schedule():
    """With precision='fp16' the grad scaler handles overflow: an inf gradient is a skipped
    update (no error), the step and schedule do not advance, and the next update applies."""
    model = mlp(dtype=torch.float32)
    state = init_state(model, torch.optim.SGD(model.parameters(), lr=0.1), precision="fp16", schedule=lambda s: 1.0 / (s + 1))
    assert state.scaler is not None
    params = _params(state)
    state, out = train_step(state, mlp_batch(0, 4, dtype=torch.float32), loss_fn=lambda m, b: m(**b)["loss"] * float("inf"))
    assert out.skipped and state.progress.step == 0 and state.progress.skipped == 1
    assert all(torch.equal(a, b) for a, b in zip(params, state.model.parameters()))
    state, out = train_step(state, mlp_batch(1, 4, dtype=torch.float32))
    assert not out.skipped and state.progress.step == 1 and out.lr == 0.1


def test_num_items_counts_shifted_labels_for_causal_lm():
    """For a causal LM the window's items are labels[..., 1:] != -100 (what its loss divides by)."""
    batch = {"input_ids": torch.tensor([[5, 6, 7, 0]]), "labels": torch.tensor([[5, 6, 7, -100]])}
    _, out = train_step(_sgd_state(tiny_gpt2(), lr=0.01), batch)
    assert out.num_items == 2
    _, out = train_step(_sgd_state(tiny_bert(), lr=0.01), {"input_ids": batch["input_ids"], "labels": torch.tensor([1])})
    assert out.num_items == 1


def test_window_without_label_items_is_nonfinite():
    """A window whose labels are all -100 has no loss to average: it is reported, not applied."""
    state = _sgd_state(mlp())
    batch = mlp_batch(0, 3)
    batch["labels"][:] = -100
    with pytest.raises(NonFiniteError, match="no label items"):
        train_step(state, batch)


@given(k=st.integers(1, 4), max_norm=st.floats(1e-3, 1.0))
def test_hooks_fire_inside_the_step_in_transformers_order(k, max_norm):
    """Property: on_micro_batch_end fires after each non-final micro-batch's backward, then
    before_update sees the clipped gradients with parameters not yet changed, and after_update
    sees the changed parameters."""
    state = _sgd_state(mlp(), lr=0.5)
    before = _params(state)
    events = []

    def on_micro(i):
        events.append(("micro", i, all(p.grad is not None for p in state.model.parameters())))

    def before_update():
        norm = torch.linalg.vector_norm(torch.stack([p.grad.norm() for p in state.model.parameters()]))
        events.append(("before", norm.item() <= max_norm * (1 + 1e-9), _max_diff(before, _params(state)) == 0))

    def after_update():
        events.append(("after", _max_diff(before, _params(state)) > 0))

    hooks = StepHooks(on_micro_batch_end=on_micro, before_update=before_update, after_update=after_update)
    train_step(state, [mlp_batch(i, 3) for i in range(k)], max_grad_norm=max_norm, hooks=hooks)
    assert events == [("micro", i, True) for i in range(k - 1)] + [("before", True, True), ("after", True)]


def test_hooks_do_not_fire_for_a_skipped_update():
    state = _sgd_state(mlp())
    events = []
    hooks = StepHooks(before_update=lambda: events.append("before"), after_update=lambda: events.append("after"))
    bad = lambda m, b: m(**b)["loss"] * float("nan")  # noqa: E731
    train_step(state, mlp_batch(0, 3), loss_fn=bad, on_nonfinite="skip", hooks=hooks)
    assert events == []


def test_eval_step_tuple_outputs_drop_the_loss_and_several_label_names_give_a_tuple():
    """transformers' prediction_step rules: a tuple output leads with the loss, which is not a
    logit; with several label names the labels are a tuple in label_names order."""
    state = _sgd_state(tiny_bert())
    batch = {"input_ids": torch.randint(1, 64, (3, 7), generator=torch.Generator().manual_seed(0)), "labels": torch.tensor([0, 1, 2])}
    out = eval_step(state, {**batch, "return_dict": False})
    expected = eval_step(state, batch)
    assert isinstance(out.logits, torch.Tensor) and torch.equal(out.logits, expected.logits)
    two = eval_step(state, {**batch, "extra": torch.tensor([5, 6, 7])}, label_names=("labels", "extra"))
    assert isinstance(two.labels, tuple) and torch.equal(two.labels[1], torch.tensor([5, 6, 7]))


def test_model_facts_see_through_wrappers():
    """A causal LM wrapped by torch.compile is still counted with shifted labels."""
    from trainkit.step import _model_facts

    assert _model_facts(torch.compile(tiny_gpt2()))[1] is True
    assert _model_facts(torch.compile(tiny_bert()))[1] is False


@given(labels=label_tensors())
def test_label_items_are_counted_exactly(labels):
    """Property: the item count train_step weights micro-batches by is the number of labels != -100,
    whatever the labels' dtype, shape and size (each counting path: list, numpy, torch)."""
    from trainkit.step import _not_ignored

    assert _not_ignored(labels) == int(labels.detach().ne(-100).sum())
