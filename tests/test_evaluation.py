"""evaluate / predict: properties against a real transformers.Trainer, and exact contracts."""

from __future__ import annotations

import functools
import math
import tempfile

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from tests.strategies import VOCAB, mlp, mlp_batch, seeds, splits, tiny_bert, tiny_gpt2
from trainkit import ConfigError, init_state
from trainkit.evaluation import EvalResult, evaluate, predict

_OUT = tempfile.TemporaryDirectory(prefix="trainkit-eval-")  # Trainer's output_dir; nothing is written
TIMING = ("_runtime", "_samples_per_second", "_steps_per_second", "_model_preparation_time")


def _state(model):
    return init_state(model, torch.optim.SGD(model.parameters(), lr=0.1))


@functools.cache
def _model(kind: str) -> nn.Module:
    if kind == "gpt2":
        model = tiny_gpt2()
        # transformers 5.24 counts a GPT2LMHeadModel's items unshifted (it has no loss_type), so
        # its eval_loss is off by the shifted/unshifted ratio; naming the loss type lets us
        # compare with a Trainer that is right (see the module docstring of trainkit.evaluation).
        model.loss_type = "ForCausalLM"
        return model
    return tiny_bert()


def _rows(seed: int, n: int, *, tokens: bool) -> list[dict]:
    """n examples of random lengths; token labels (with random -100) or one class per row."""
    gen = torch.Generator().manual_seed(seed)
    rows = []
    for _ in range(n):
        length = int(torch.randint(2, 11, (), generator=gen))
        ids = torch.randint(1, VOCAB, (length,), generator=gen)
        if tokens:
            labels = torch.where(torch.rand(length, generator=gen) < 0.3, -100, ids)
            rows.append({"input_ids": ids.tolist(), "labels": labels.tolist()})
        else:
            rows.append({"input_ids": ids.tolist(), "labels": int(torch.randint(0, 3, (), generator=gen))})
    return rows


def _collate(rows: list[dict]) -> dict:
    """Dynamic padding: each batch is padded to its own longest row (so lengths vary by batch)."""
    width = max(len(r["input_ids"]) for r in rows)
    pad = lambda seq, value: list(seq) + [value] * (width - len(seq))  # noqa: E731
    batch = {
        "input_ids": torch.tensor([pad(r["input_ids"], 0) for r in rows]),
        "attention_mask": torch.tensor([pad([1] * len(r["input_ids"]), 0) for r in rows]),
    }
    labels = [r["labels"] for r in rows]
    batch["labels"] = torch.tensor([pad(x, -100) for x in labels] if isinstance(labels[0], list) else labels)
    return batch


def _batches(rows: list[dict], size: int) -> list[dict]:
    return [_collate(rows[i : i + size]) for i in range(0, len(rows), size)]


def _accuracy(p) -> dict:
    return {"accuracy": np.float64((p.predictions.argmax(-1) == p.label_ids).mean())}


def _trainer(model, rows, size, **kw):
    import datasets
    from transformers import Trainer, TrainingArguments

    args = TrainingArguments(
        output_dir=_OUT.name, per_device_eval_batch_size=size, report_to="none", dataloader_pin_memory=False, disable_tqdm=True,
        include_for_metrics=list(kw.pop("include_for_metrics", [])),
    )
    return Trainer(model, args=args, eval_dataset=datasets.Dataset.from_list(rows), data_collator=_collate, **kw)


def _assert_same_nested(ours, theirs):
    if isinstance(theirs, (tuple, list)):
        assert type(ours) is type(theirs) and len(ours) == len(theirs)
        for a, b in zip(ours, theirs):
            _assert_same_nested(a, b)
    else:
        assert ours.dtype == theirs.dtype and ours.shape == theirs.shape
        np.testing.assert_array_equal(ours, theirs)


def _close(a: float, b: float) -> bool:
    return (math.isnan(a) and math.isnan(b)) or math.isclose(a, b, rel_tol=1e-6)


def _keys(metrics: dict) -> set[str]:
    return {k for k in metrics if not k.endswith(TIMING) and k != "epoch"}


# ---------------------------------------------------------------------------------------------
# Properties


@settings(max_examples=12)
@given(kind=st.sampled_from(["bert", "gpt2"]), seed=seeds, n=st.integers(1, 11), size=st.integers(1, 4))
def test_matches_transformers_trainer(kind, seed, n, size):
    """Property: for any dataset of variable-length rows and any eval batch size, predict() and
    evaluate() give transformers.Trainer's predictions and label_ids exactly (after -100 padding),
    its loss within 1e-6 relative, and the same metric keys apart from timing ones."""
    model = _model(kind)
    rows = _rows(seed, n, tokens=kind == "gpt2")
    trainer = _trainer(model, rows, size, compute_metrics=_accuracy)
    theirs = trainer.predict(trainer.eval_dataset)
    their_eval = trainer.evaluate()

    ours = predict(_state(model), _batches(rows, size), compute_metrics=_accuracy)
    _assert_same_nested(ours.predictions, theirs.predictions)
    _assert_same_nested(ours.label_ids, theirs.label_ids)
    assert _close(ours.metrics["test_loss"], theirs.metrics["test_loss"])
    assert ours.metrics["test_accuracy"] == theirs.metrics["test_accuracy"]
    assert _keys(ours.metrics) == _keys(theirs.metrics)
    assert ours.num_samples == n

    our_eval = evaluate(_state(model), _batches(rows, size), compute_metrics=_accuracy).metrics
    assert _keys(our_eval) == _keys(their_eval)
    assert {k for k in our_eval if k.endswith(TIMING)} == {f"eval{t}" for t in TIMING[:3]}
    assert _close(our_eval["eval_loss"], their_eval["eval_loss"])


@given(seed=seeds, n=st.integers(1, 24), data=st.data())
def test_order_loss_weighting_and_purity(seed, n, data):
    """Property: for batches of any sizes, predictions and labels come in dataset order, the loss
    is the mean over samples of each batch's mean loss, num_samples is the dataset length, and
    evaluation changes neither the parameters nor the global RNG."""
    model = mlp(seed=seed % 7)
    state = _state(model)
    full = mlp_batch(seed, n)
    batches = [{k: v[a:b] for k, v in full.items()} for a, b in data.draw(splits(n))]
    params = [p.detach().clone() for p in model.parameters()]
    rng = torch.get_rng_state()

    result = evaluate(state, batches)

    assert result.num_samples == n
    np.testing.assert_array_equal(result.label_ids, full["labels"].numpy())
    with torch.no_grad():
        expected = [model(**b) for b in batches]
    np.testing.assert_array_equal(result.predictions, torch.cat([e["logits"] for e in expected]).numpy())
    weighted = sum(e["loss"].item() * len(b["labels"]) for e, b in zip(expected, batches)) / n
    assert math.isclose(result.metrics["eval_loss"], weighted, rel_tol=1e-12)
    assert all(torch.equal(p, q) for p, q in zip(params, model.parameters()))
    assert torch.equal(rng, torch.get_rng_state())
    assert model.training



@settings(max_examples=15)
@given(seed=seeds, n=st.integers(1, 14), size=st.integers(1, 4), merge_bytes=st.integers(1, 3000))
def test_merging_batches_into_chunks_changes_nothing(seed, n, size, merge_bytes):
    """Property: evaluation merges batches into chunks as they come (to bound memory); for any
    chunk size, including one chunk per batch, the predictions (a nested tuple with dim 1 ragged
    across batches), label_ids, inputs, per-sample losses and metrics equal those of gathering
    every batch to the end, bit for bit."""
    import trainkit.evaluation as ev

    model = tiny_bert()
    model.config.output_hidden_states = True  # logits and a tuple of (batch, length, 32) states
    batches = _batches(_rows(seed, n, tokens=False), size)
    seen = []

    def capture(p):
        seen.append(p)
        return {"accuracy": float((p.predictions[0].argmax(-1) == p.label_ids).mean())}

    results = []
    for chunk in (1 << 40, merge_bytes):  # never merge, then merge every `merge_bytes`
        ev._MERGE_BYTES, saved = chunk, ev._MERGE_BYTES
        try:
            results.append(evaluate(_state(model), batches, compute_metrics=capture, include_for_metrics=("inputs", "loss")))
        finally:
            ev._MERGE_BYTES = saved
    (whole, merged), (p_whole, p_merged) = results, seen
    _assert_same_nested(merged.predictions, whole.predictions)
    _assert_same_nested(merged.label_ids, whole.label_ids)
    _assert_same_nested(p_merged.inputs, p_whole.inputs)
    _assert_same_nested(p_merged.losses, p_whole.losses)
    assert _keys(merged.metrics) == _keys(whole.metrics)
    assert all(merged.metrics[k] == whole.metrics[k] for k in _keys(whole.metrics))

class Tagger(nn.Module):
    """A tiny token tagger: (batch, length, 4) logits, mean token loss."""

    def __init__(self) -> None:
        super().__init__()
        self.emb = nn.Embedding(VOCAB, 4)

    def forward(self, input_ids, labels=None):
        logits = self.emb(input_ids)
        out = {"logits": logits}
        if labels is not None:
            out["loss"] = nn.functional.cross_entropy(logits.flatten(0, 1), labels.flatten(), ignore_index=-100)
        return out


def test_gathering_is_linear(monkeypatch):
    """2,000 batches of varying lengths: the concatenations/pads done do not grow with the number
    of batches (transformers re-concatenates at every batch), and the result is right."""
    calls = {"concatenate": 0, "full": 0}

    def counted(name):
        original = getattr(np, name)

        def wrapper(*args, **kwargs):
            calls[name] += 1
            return original(*args, **kwargs)

        return wrapper

    for name in calls:
        monkeypatch.setattr(np, name, counted(name))
    state = _state(Tagger())
    gen = torch.Generator().manual_seed(0)
    lengths = torch.randint(1, 9, (2000,), generator=gen).tolist()
    batches = [{"input_ids": torch.full((1, k), i % VOCAB), "labels": torch.full((1, k), 1)} for i, k in enumerate(lengths)]

    counts = []
    for subset in (batches[:10], batches):
        calls.update(concatenate=0, full=0)
        result = evaluate(state, subset)
        counts.append(dict(calls))
    assert counts[0] == counts[1] and sum(counts[1].values()) <= 4
    assert result.predictions.shape == (2000, max(lengths), 4) and result.num_samples == 2000
    assert (result.label_ids[np.arange(8)[None, :] >= np.array(lengths)[:, None]] == -100).all()
    assert (result.predictions[1999, lengths[1999]:] == -100).all()


# ---------------------------------------------------------------------------------------------
# Examples


def test_eval_prediction_gets_inputs_and_losses_like_transformers():
    model, rows, seen = _model("bert"), _rows(3, 7, tokens=False), {}

    def capture(name):
        def compute(p):
            seen[name] = p
            return {}

        return compute

    include = ("inputs", "loss")
    _trainer(model, rows, 3, compute_metrics=capture("hf"), include_for_metrics=include).evaluate()
    evaluate(_state(model), _batches(rows, 3), compute_metrics=capture("ours"), include_for_metrics=include)
    ours, theirs = seen["ours"], seen["hf"]
    _assert_same_nested(ours.inputs, theirs.inputs)  # input_ids, padded with -100 across batches
    assert ours.inputs.shape == (7, max(len(r["input_ids"]) for r in rows))
    assert ours.losses.shape == (7,) and np.allclose(ours.losses, theirs.losses, rtol=1e-6, atol=0)
    assert len(ours.elements) == 4
    seen.clear()
    evaluate(_state(model), _batches(rows, 3), compute_metrics=capture("ours"))
    assert seen["ours"].inputs is None and seen["ours"].losses is None


def test_nested_outputs_are_padded_like_transformers():
    model = tiny_bert()
    model.config.output_hidden_states = True  # logits and a tuple of 3 (batch, length, 32) states
    rows = _rows(5, 5, tokens=False)
    trainer = _trainer(model, rows, 2)
    theirs = trainer.predict(trainer.eval_dataset)
    ours = predict(_state(model), _batches(rows, 2))
    assert isinstance(ours.predictions, tuple) and isinstance(ours.predictions[1], tuple)
    _assert_same_nested(ours.predictions, theirs.predictions)


def test_preprocess_logits_for_metrics_applied_per_batch():
    model, rows, calls = _model("gpt2"), _rows(1, 5, tokens=True), []

    def argmax(logits, labels):
        calls.append((tuple(logits.shape), tuple(labels.shape)))
        return logits.argmax(-1)

    result = evaluate(_state(model), _batches(rows, 2), preprocess_logits_for_metrics=argmax, compute_metrics=lambda p: {"n": p.predictions.size})
    trainer = _trainer(model, rows, 2, preprocess_logits_for_metrics=argmax)
    theirs = trainer.predict(trainer.eval_dataset)
    assert [c[0][:2] for c in calls[:3]] == [c[1] for c in calls[:3]]
    _assert_same_nested(result.predictions, theirs.predictions)
    assert result.predictions.dtype == np.int64 and result.metrics["eval_n"] == result.predictions.size


def test_prediction_loss_only():
    called = []
    result = evaluate(_state(mlp()), [mlp_batch(0, 4), mlp_batch(1, 3)], prediction_loss_only=True, compute_metrics=called.append)
    assert result.predictions is None and result.label_ids is None and not called
    assert "eval_loss" in result.metrics and result.num_samples == 7


def test_metric_prefixes_and_denumpified_values():
    batches = [mlp_batch(0, 4), mlp_batch(1, 2)]
    metrics = lambda p: {"accuracy": np.float32(0.5), "eval_val_f1": torch.tensor(0.25), "eval_n": np.int64(3)}  # noqa: E731
    result = evaluate(_state(mlp()), batches, compute_metrics=metrics)
    assert result.metrics["eval_accuracy"] == 0.5 and type(result.metrics["eval_accuracy"]) is float
    assert result.metrics["eval_val_f1"] == 0.25 and result.metrics["eval_n"] == 3  # already prefixed: kept
    keys = list(result.metrics)
    assert keys[-3:] == ["eval_runtime", "eval_samples_per_second", "eval_steps_per_second"]
    by_dataset = evaluate(_state(mlp()), batches, compute_metrics=metrics, metric_key_prefix="eval_val")
    assert {"eval_val_accuracy", "eval_val_f1", "eval_val_eval_n", "eval_val_loss"} <= set(by_dataset.metrics)
    assert "test_accuracy" in predict(_state(mlp()), batches, compute_metrics=metrics).metrics


def test_no_labels_means_no_loss_and_no_metrics():
    called = []
    batches = [{"x": mlp_batch(0, 3)["x"]}]
    result = evaluate(_state(mlp()), batches, compute_metrics=called.append)
    assert result.label_ids is None and result.predictions.shape == (3, 3) and not called
    assert not any(k.endswith("_loss") for k in result.metrics)


def test_on_batch_and_unconcatenated_batches():
    seen = []
    batches = [mlp_batch(0, 4), mlp_batch(1, 3)]
    result = evaluate(_state(mlp()), batches, on_batch=lambda i, out: seen.append((i, tuple(out.logits.shape))), concat_batches=False)
    assert seen == [(0, (4, 3)), (1, (3, 3))]
    assert isinstance(result.predictions, list) and [p.shape for p in result.predictions] == [(4, 3), (3, 3)]


def test_causal_lm_loss_is_the_models_own_mean():
    """transformers 5.24 divides GPT2LMHeadModel's summed loss by its unshifted label count; we
    keep the model's own (shifted) mean, weighted by batch size."""
    model, rows = tiny_gpt2(), _rows(2, 5, tokens=True)
    batches = _batches(rows, 2)
    result = evaluate(_state(model), batches)
    model.eval()
    with torch.no_grad():
        losses = [model(**b).loss.item() for b in batches]
    expected = np.repeat(np.array(losses, dtype=np.float32), [2, 2, 1]).mean().item()
    assert result.metrics["eval_loss"] == expected


def test_errors_name_the_problem():
    state = _state(mlp())
    with pytest.raises(ConfigError, match="yielded no batch"):
        evaluate(state, [])
    with pytest.raises(ConfigError, match=r"evaluate\(state, \[batch\]\)"):
        evaluate(state, mlp_batch(0, 2))
    with pytest.raises(ConfigError, match="not a dataset's rows"):
        evaluate(state, [{"x": [0.0] * 8, "labels": 1}])
    with pytest.raises(ConfigError, match="Did you mean 'loss'"):
        evaluate(state, [mlp_batch(0, 2)], include_for_metrics=("losss",))
    with pytest.raises(ConfigError, match="'input_ids'"):
        evaluate(state, [mlp_batch(0, 2)], compute_metrics=lambda p: {}, include_for_metrics=("inputs",))

    def broken(p):
        raise IndexError("too many indices")

    with pytest.raises(ConfigError, match=r"predictions of shape \(5, 3\) and label_ids of shape \(5,\)") as info:
        evaluate(state, [mlp_batch(0, 2), mlp_batch(1, 3)], compute_metrics=broken)
    assert isinstance(info.value.__cause__, IndexError)
    with pytest.raises(ConfigError, match="ignore_keys"):
        evaluate(_state(tiny_gpt2()), _batches(_rows(0, 2, tokens=True), 1), ignore_keys=())


def test_result_is_frozen():
    result = evaluate(_state(mlp()), [mlp_batch(0, 2)])
    assert isinstance(result, EvalResult)
    with pytest.raises(AttributeError):
        result.num_samples = 3


def test_nested_dict_outputs_and_shape_errors():
    state = _state(nn.Linear(2, 2))

    def loss_fn(model, batch):
        x = batch["x"]
        return x.sum() * 0, {"seq": x, "row": x[:, 0]}

    batches = [{"x": torch.ones(2, 3)}, {"x": torch.full((1, 5), 2.0)}]
    result = evaluate(state, batches, loss_fn=loss_fn)
    assert result.predictions["seq"].shape == (3, 5) and result.predictions["row"].tolist() == [1, 1, 2]
    assert result.predictions["seq"][:2, 3:].tolist() == [[-100, -100]] * 2
    with pytest.raises(ConfigError, match=r"only dim 1 \(the sequence\) may differ"):
        evaluate(state, [{"x": torch.ones(2, 3, 1)}, {"x": torch.ones(2, 4, 2)}], loss_fn=loss_fn)
    flaky = iter([{"a": torch.ones(1)}, (torch.ones(1),)])
    with pytest.raises(ConfigError, match="different structures"):
        evaluate(state, batches, loss_fn=lambda m, b: (b["x"].sum(), next(flaky)))


def test_bf16_outputs_are_gathered_as_float32():
    model = mlp(dtype=torch.float32)
    state = init_state(model, torch.optim.SGD(model.parameters(), lr=0.1), precision="bf16")
    result = evaluate(state, [mlp_batch(0, 3, dtype=torch.float32), mlp_batch(1, 2, dtype=torch.float32)])
    assert result.predictions.dtype == np.float32 and result.predictions.shape == (5, 3)
    assert math.isfinite(result.metrics["eval_loss"])
