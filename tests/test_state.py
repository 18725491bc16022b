"""Progress, TrainState, init_state and fork: properties and contracts."""

from __future__ import annotations

import attrs
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from tests.strategies import mlp, mlp_batch, tiny_bert
from trainkit import ConfigError, Progress, StaleStateError, TrainState, fork, init_state, train_step

counters = st.integers(0, 10**9)
progresses = st.builds(Progress, step=counters, epoch=counters, position=counters, samples_seen=counters, items_seen=counters, skipped=counters)
field_names = st.sampled_from([f.name for f in attrs.fields(Progress)])


def _state(**kw):
    model = mlp()
    return init_state(model, torch.optim.SGD(model.parameters(), lr=0.1), **kw)


@given(progress=progresses, name=field_names, value=counters)
def test_progress_refuses_assignment_and_evolve_makes_a_new_record(progress, name, value):
    """Property: a Progress refuses assignment to any field; evolve returns a new record with
    only that field changed and leaves the original untouched."""
    before = attrs.asdict(progress)
    with pytest.raises(attrs.exceptions.FrozenInstanceError):
        setattr(progress, name, value)
    changed = attrs.evolve(progress, **{name: value})
    assert attrs.asdict(progress) == before
    assert getattr(changed, name) == value
    assert {k: v for k, v in attrs.asdict(changed).items() if k != name} == {k: v for k, v in before.items() if k != name}


@given(name=field_names, value=st.one_of(st.integers(max_value=-1), st.floats(), st.text(max_size=3), st.booleans()))
def test_progress_rejects_non_counters(name, value):
    """Property: any field given a negative number or a non-int raises ConfigError naming it."""
    with pytest.raises(ConfigError, match=f"Progress.{name}"):
        Progress(**{name: value})


@given(progress=progresses, seed=st.integers(0, 2**31), steps=st.integers(1, 3))
def test_train_state_records_are_frozen_and_evolve_never_aliases_progress(progress, seed, steps):
    """Property: TrainState refuses assignment; replace/evolve and train_step return new records
    whose progress is a distinct value, and the old record's progress never changes."""
    state = _state(progress=progress, seed=seed)
    with pytest.raises(attrs.exceptions.FrozenInstanceError):
        state.progress = Progress()
    with pytest.raises(AttributeError):
        state.model = mlp()
    other = state.replace(seed=seed + 1)
    assert other.seed == seed + 1 and state.seed == seed and other.progress == state.progress
    current = other
    for _ in range(steps):
        current, _ = train_step(current, mlp_batch(seed, 2))
    assert state.progress == progress
    assert current.progress.step == progress.step + steps
    assert current.progress is not state.progress


@given(steps=st.integers(1, 4))
def test_every_consumed_record_is_stale(steps):
    """Property: after a chain of steps only the newest record is live; every earlier record
    (and every replace() of it) raises StaleStateError on model/optimizer access."""
    history = [_state()]
    siblings = [history[0].replace(seed=1)]
    for i in range(steps):
        new, _ = train_step(history[-1], mlp_batch(i, 2))
        history.append(new)
    for old in history[:-1] + siblings:
        assert not old.is_live
        for name in ("model", "optimizer", "scaler", "lr_scheduler"):
            with pytest.raises(StaleStateError, match=r"fork\(state\)"):
                getattr(old, name)
        with pytest.raises(StaleStateError):
            old.replace(seed=3)
    assert history[-1].is_live and history[-1].model is not None


def test_stale_error_message_explains_donation():
    state = _state()
    train_step(state, mlp_batch(0, 2))
    with pytest.raises(StaleStateError) as info:
        state.optimizer  # noqa: B018
    message = str(info.value)
    assert "consumed" in message and "in place" in message and "trainkit.fork(state)" in message
    assert isinstance(info.value, RuntimeError)


@given(steps=st.integers(0, 3))
def test_fork_is_independent_and_equal(steps):
    """Property: fork copies a lineage: equal values, no shared tensors, the optimizer of the
    copy updates the copy's parameters, and stepping one leaves the other unchanged."""
    model = tiny_bert()
    state = init_state(model, torch.optim.AdamW(model.parameters(), lr=0.1), seed=3)
    batch = {"input_ids": torch.randint(1, 64, (2, 5), generator=torch.Generator().manual_seed(0)), "labels": torch.tensor([0, 1])}
    for _ in range(steps):
        state, _ = train_step(state, batch)
    copy_ = fork(state)
    assert copy_.is_live and state.is_live and copy_.progress == state.progress
    own_params = {id(p) for p in state.model.parameters()}
    assert not own_params & {id(p) for p in copy_.model.parameters()}
    opt_params = {id(p) for g in copy_.optimizer.param_groups for p in g["params"]}
    assert opt_params == {id(p) for p in copy_.model.parameters()}
    snapshot = [p.detach().clone() for p in state.model.parameters()]
    copy_, _ = train_step(copy_, batch)
    assert all(torch.equal(a, b) for a, b in zip(snapshot, state.model.parameters()))
    assert not all(torch.equal(a, b) for a, b in zip(snapshot, copy_.model.parameters()))
    assert state.is_live  # stepping the fork does not consume the original


def test_fork_keeps_tied_weights_tied():
    from tests.strategies import tiny_gpt2

    model = tiny_gpt2()
    assert model.lm_head.weight is model.transformer.wte.weight
    state = fork(init_state(model, torch.optim.SGD(model.parameters(), lr=0.1)))
    assert state.model.lm_head.weight is state.model.transformer.wte.weight


def test_init_state_reads_base_lrs_and_rejects_bad_arguments():
    model = mlp()
    opt = torch.optim.SGD([{"params": model.net[0].parameters(), "lr": 0.5}, {"params": model.net[4].parameters()}], lr=0.1)
    state = init_state(model, opt)
    assert state.base_lrs == (0.5, 0.1) and state.schedule is None and state.seed == 42
    with pytest.raises(ConfigError, match="model="):
        init_state("not a model", opt)
    with pytest.raises(ConfigError, match="optimizer="):
        init_state(model, "adamw")
    with pytest.raises(ConfigError, match="precision=.*'fp8'"):
        init_state(model, opt, precision="fp8")
    with pytest.raises(ConfigError, match="seed="):
        init_state(model, opt, seed="1")
    with pytest.raises(ConfigError, match="schedule=.*str"):
        init_state(model, opt, schedule="linear")
    with pytest.raises(ConfigError, match="one callable per parameter group"):
        init_state(model, opt, schedule=[lambda s: 1.0])
    other = mlp()
    with pytest.raises(ConfigError, match="not the model's"):
        init_state(other, opt)


def test_per_group_schedules_are_applied():
    model = mlp()
    opt = torch.optim.SGD([{"params": model.net[0].parameters()}, {"params": model.net[4].parameters()}], lr=1.0)
    state = init_state(model, opt, schedule=[lambda s: 1.0, lambda s: 0.5])
    _, out = train_step(state, mlp_batch(0, 2))
    assert out.lrs == (1.0, 0.5)


def test_repr_shows_liveness():
    state = _state()
    assert "live" in repr(state) and "DictMLP" in repr(state)
    train_step(state, mlp_batch(0, 2))
    assert "consumed" in repr(state)


def test_train_state_is_a_frozen_attrs_class():
    assert attrs.has(TrainState) and attrs.has(Progress)
    assert Progress().next_epoch() == Progress(epoch=1)
    assert Progress(position=5, epoch=2).next_epoch() == Progress(epoch=3, position=0)


def test_step_successor_carries_every_other_field():
    """The record a step returns differs from its input only in progress and generation (a new
    TrainState field cannot be forgotten by the hand-written successor)."""
    model = mlp()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    state = init_state(model, opt, schedule=torch.optim.lr_scheduler.StepLR(opt, 1), seed=9, precision="bf16")
    new, _ = train_step(state, mlp_batch(0, 2))
    for field in attrs.fields(TrainState):
        if field.name not in ("progress", "_generation"):
            assert getattr(new, field.name) is getattr(state, field.name), field.name
