"""Tests of trainkit.schedules: parity with transformers.get_scheduler, purity, error contracts."""

from __future__ import annotations

import math
import pickle
import struct
import warnings
from functools import partial

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from trainkit.errors import ConfigError
from trainkit.schedules import SCHEDULE_NAMES, make_schedule, make_scheduler

transformers = pytest.importorskip("transformers")
from transformers import SchedulerType, get_scheduler  # noqa: E402

_LR_INIT = ("polynomial", "cosine_with_min_lr", "cosine_warmup_with_min_lr")
_SHAPES = ("linear", "cosine", "1-sqrt")


def _optimizer(lr: float = 1e-3, *, groups: tuple[float, ...] | None = None) -> torch.optim.Optimizer:
    layer = torch.nn.Linear(2, 1)
    if groups is None:
        return torch.optim.SGD(layer.parameters(), lr=lr)
    params = [{"params": [p], "lr": g} for p, g in zip(layer.parameters(), groups)]
    return torch.optim.SGD(params, lr=lr)


def _bits(x: float) -> bytes:
    """IEEE-754 bytes of ``x``: equal bits means bitwise-equal values (``0 == -0.0`` would not pass)."""
    return struct.pack("<d", float(x))


def _maybe(draw, strategy):
    """Draw ``strategy`` or None (None: leave the option out, so HF's default is used)."""
    return draw(st.one_of(st.none(), strategy))


_rate = st.floats(0.0, 1.0)
_cycles = st.one_of(st.floats(0.0, 4.0), st.integers(0, 4))


@st.composite
def configs(draw, name: str):
    """A random (lr, warmup, total, kwargs) for ``name``; total may be below warmup."""
    lr = draw(st.floats(1e-6, 1.0))
    warmup = draw(st.integers(0, 40))
    total = draw(st.one_of(st.integers(0, 120), st.integers(0, warmup)))  # often below warmup
    kw = {}
    if name in ("cosine", "cosine_with_restarts", "cosine_with_min_lr", "cosine_warmup_with_min_lr",
                "warmup_stable_decay"):
        kw["num_cycles"] = _maybe(draw, _cycles)
    if name == "polynomial":
        kw["lr_end"] = _maybe(draw, st.floats(0.0, lr, exclude_max=True))
        kw["power"] = _maybe(draw, st.one_of(st.floats(0.0, 4.0), st.integers(0, 3)))
        if kw["lr_end"] is None and lr <= 1e-7:  # HF's default lr_end must stay below lr
            lr = 1e-3
    if name == "inverse_sqrt":
        kw["timescale"] = _maybe(draw, st.integers(1, 20_000))
    if name in ("cosine_with_min_lr", "cosine_warmup_with_min_lr"):
        if draw(st.booleans()):
            kw["min_lr"] = draw(st.floats(0.0, 1.0)) * lr
        else:
            kw["min_lr_rate"] = draw(_rate)
    if name == "cosine_warmup_with_min_lr":
        kw["warmup_lr_rate"] = _maybe(draw, _rate)
    if name == "warmup_stable_decay":
        kw["num_decay_steps"] = draw(st.integers(0, 60))
        kw["num_stable_steps"] = _maybe(draw, st.integers(0, 60))
        if kw["num_stable_steps"] is not None and draw(st.booleans()):
            total = None
        kw["warmup_type"] = _maybe(draw, st.sampled_from(_SHAPES))
        kw["decay_type"] = _maybe(draw, st.sampled_from(_SHAPES))
        kw["min_lr_ratio"] = _maybe(draw, _rate)
    kw = {k: v for k, v in kw.items() if v is not None}
    return lr, warmup, total, kw


def _ours(name, lr, warmup, total, kw):
    extra = {"lr_init": lr} if name in _LR_INIT else {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return make_schedule(name, num_warmup_steps=warmup, num_training_steps=total, **kw, **extra)


def _steps_to_check(warmup, total, kw, far):
    """Every step up to a few past the last phase boundary, then the ``far`` ones."""
    end = warmup + (total or 0) + kw.get("num_stable_steps", 0) + kw.get("num_decay_steps", 0) + 5
    return [*range(end + 1), *far]


_far_steps = st.lists(st.integers(0, 10**9), max_size=3)


def _hf_lambda(name, lr, warmup, total, kw):
    """The lambda ``transformers.get_scheduler`` builds (``lr_lambdas[0]``)."""
    if name == "polynomial" and warmup == total == 0:
        # LambdaLR calls lambda(0) on construction, which HF divides by zero here: build HF's
        # lambda as get_polynomial_decay_schedule_with_warmup does, without the LambdaLR.
        from transformers.optimization import _get_polynomial_decay_schedule_with_warmup_lr_lambda as poly

        return partial(poly, num_warmup_steps=0, num_training_steps=0, lr_end=kw.get("lr_end", 1e-7),
                       power=kw.get("power", 1.0), lr_init=lr)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return get_scheduler(name, _optimizer(lr), num_warmup_steps=warmup, num_training_steps=total,
                             scheduler_specific_kwargs=dict(kw)).lr_lambdas[0]


@pytest.mark.parametrize("name", SCHEDULE_NAMES)
@given(data=st.data())
def test_matches_transformers_bitwise(name, data):
    """Property: for any warmup, total (also below warmup), options and step (also past the end),
    ``make_schedule(...)(step)`` has exactly the bits of the lambda ``transformers.get_scheduler``
    builds with the same arguments (``scheduler.lr_lambdas[0](step)``).

    Bitwise holds for every name: the schedules do HF's floating-point operations in HF's order.
    The one exception is a step where HF raises: ``polynomial`` at ``step == num_warmup_steps ==
    num_training_steps`` divides by zero; there trainkit returns the end value ``lr_end / lr_init``.
    """
    lr, warmup, total, kw = data.draw(configs(name))
    far = data.draw(_far_steps)
    hf = _hf_lambda(name, lr, warmup, total, kw)
    ours = _ours(name, lr, warmup, total, kw)
    for step in _steps_to_check(warmup, total, kw, far):
        try:
            expected = hf(step)
        except ZeroDivisionError:
            assert name == "polynomial" and step == warmup == total
            expected = kw.get("lr_end", 1e-7) / lr
        got = ours(step)
        assert type(got) is float, (step, got)
        assert _bits(got) == _bits(expected), (step, got, expected)


@pytest.mark.parametrize("name", SCHEDULE_NAMES)
@given(data=st.data())
def test_pickle_round_trip_and_range(name, data):
    """Property: a schedule survives a pickle round trip with identical values, and every
    multiplier is a finite float >= 0 (at any step, warmup above total included)."""
    lr, warmup, total, kw = data.draw(configs(name))
    schedule = _ours(name, lr, warmup, total, kw)
    clone = pickle.loads(pickle.dumps(schedule))
    for step in _steps_to_check(warmup, total, kw, data.draw(_far_steps)):
        value = schedule(step)
        assert math.isfinite(value) and value >= 0.0, (step, value)
        assert _bits(clone(step)) == _bits(value)


@pytest.mark.parametrize("name", SCHEDULE_NAMES)
@given(data=st.data())
def test_make_scheduler_lambda_lr_follows_schedule(name, data):
    """Property: after n ``optimizer.step(); scheduler.step()`` pairs, every param group's lr is
    exactly ``group_base_lr * schedule(n)``, the schedule being make_schedule's with lr_init read from
    the optimizer's default lr."""
    lr, warmup, total, kw = data.draw(configs(name))
    groups = (data.draw(st.floats(1e-5, 1.0)), data.draw(st.floats(1e-5, 1.0)))
    optimizer = _optimizer(lr, groups=groups)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        scheduler = make_scheduler(optimizer, name, num_warmup_steps=warmup, num_training_steps=total, **kw)
    assert isinstance(scheduler, torch.optim.lr_scheduler.LambdaLR)
    schedule = _ours(name, lr, warmup, total, kw)
    for n in range(data.draw(st.integers(0, 30)) + 1):
        for group, base in zip(optimizer.param_groups, groups):
            assert group["lr"] == base * schedule(n), (n, group["lr"])
        optimizer.step()
        scheduler.step()


def test_schedule_names_are_transformers_step_functions():
    """SCHEDULE_NAMES is every SchedulerType value except the metric-driven ones."""
    stateful = {"reduce_lr_on_plateau", "greedy"}
    assert set(SCHEDULE_NAMES) == {t.value for t in SchedulerType} - stateful


@pytest.mark.parametrize("member", [SchedulerType.COSINE, SchedulerType.WARMUP_STABLE_DECAY])
def test_scheduler_type_enum_accepted(member):
    kw = {"num_decay_steps": 3} if member is SchedulerType.WARMUP_STABLE_DECAY else {}
    by_enum = make_schedule(member, num_warmup_steps=2, num_training_steps=10, **kw)
    by_name = make_schedule(member.value, num_warmup_steps=2, num_training_steps=10, **kw)
    assert [by_enum(i) for i in range(12)] == [by_name(i) for i in range(12)]
    assert isinstance(make_scheduler(_optimizer(), member, num_training_steps=10, **kw),
                      torch.optim.lr_scheduler.LambdaLR)


def test_reduce_lr_on_plateau_make_scheduler():
    scheduler = make_scheduler(_optimizer(), SchedulerType.REDUCE_ON_PLATEAU, num_training_steps=5, patience=2)
    assert isinstance(scheduler, torch.optim.lr_scheduler.ReduceLROnPlateau)
    assert scheduler.patience == 2 and scheduler.factor == 0.1  # torch's defaults otherwise, as HF


def test_greedy_make_scheduler():
    from transformers.optimization import GreedyLR

    assert isinstance(make_scheduler(_optimizer(), "greedy", patience=3), GreedyLR)


def test_stateful_scheduler_options_are_checked():
    _raises("factor", 2.0, make_scheduler, _optimizer(), "reduce_lr_on_plateau", factor=2.0)


def test_constant_ignores_warmup_like_transformers_and_warns():
    with pytest.warns(UserWarning, match="constant_with_warmup"):
        schedule = make_schedule("constant", num_warmup_steps=5)
    assert [schedule(i) for i in range(7)] == [1.0] * 7


def test_lambda_lr_state_dict_round_trip():
    """The LambdaLR checkpoints and restores like HF's (the schedule itself holds no state)."""
    optimizer = _optimizer(0.1)
    scheduler = make_scheduler(optimizer, "cosine", num_warmup_steps=2, num_training_steps=20)
    for _ in range(5):
        optimizer.step()
        scheduler.step()
    restored = make_scheduler(_optimizer(0.1), "cosine", num_warmup_steps=2, num_training_steps=20)
    restored.load_state_dict(scheduler.state_dict())
    assert restored.last_epoch == 5 and restored.get_last_lr() == scheduler.get_last_lr()


def _raises(arg, value, fn, *args, **kwargs):
    with pytest.raises(ConfigError) as info:
        fn(*args, **kwargs)
    assert isinstance(info.value, ValueError)
    message = str(info.value)
    assert arg in message and repr(value) in message, message
    return message


@pytest.mark.parametrize("name", ["reduce_lr_on_plateau", "greedy"])
def test_stateful_names_have_no_pure_schedule(name):
    message = _raises("name", name, make_schedule, name)
    assert "make_scheduler" in message and "metric" in message


def test_unknown_name_suggests_closest_and_lists_all():
    message = _raises("name", "cosin", make_schedule, "cosin", num_training_steps=10)
    assert "did you mean 'cosine'" in message
    assert all(n in message for n in SCHEDULE_NAMES)
    _raises("name", 3, make_scheduler, _optimizer(), 3)


@pytest.mark.parametrize("name", sorted(set(SCHEDULE_NAMES) - {"constant", "constant_with_warmup",
                                                                   "inverse_sqrt", "warmup_stable_decay"}))
def test_missing_num_training_steps(name):
    kw = {"lr_init": 0.1} if name in _LR_INIT else {}
    if "min_lr" in name:
        kw["min_lr_rate"] = 0.1
    _raises("num_training_steps", None, make_schedule, name, **kw)


def test_wsd_needs_training_or_stable_steps_and_decay_steps():
    _raises("num_training_steps", None, make_schedule, "warmup_stable_decay", num_decay_steps=4)
    _raises("num_decay_steps", None, make_schedule, "warmup_stable_decay", num_training_steps=10)
    _raises("decay_type", "exp", make_schedule, "warmup_stable_decay", num_training_steps=10,
            num_decay_steps=2, decay_type="exp")


@pytest.mark.parametrize("arg", ["num_warmup_steps", "num_training_steps"])
@pytest.mark.parametrize("value", [-1, 2.5, True, "10"])
def test_bad_step_counts(arg, value):
    _raises(arg, value, make_schedule, "linear", **{"num_training_steps": 10, arg: value})


def test_warmup_above_total_is_allowed():
    schedule = make_schedule("linear", num_warmup_steps=20, num_training_steps=10)
    assert schedule(10) == 0.5 and schedule(20) == 0.0


def test_unknown_kwargs_are_named_with_accepted_ones():
    message = _raises("num_cycles", 2, make_schedule, "linear", num_training_steps=10, num_cycles=2)
    assert "cosine" in message  # who takes it
    message = _raises("power", 2, make_schedule, "cosine", num_training_steps=10, power=2)
    assert "num_cycles" in message  # what cosine accepts
    _raises("factr", 0.5, make_scheduler, _optimizer(), "reduce_lr_on_plateau", factr=0.5)


def test_lr_init_contracts():
    message = _raises("lr_init", None, make_schedule, "polynomial", num_training_steps=10)
    assert "make_scheduler" in message
    _raises("lr_end", 0.5, make_schedule, "polynomial", num_training_steps=10, lr_init=0.1, lr_end=0.5)
    _raises("lr_init", 0.1, make_scheduler, _optimizer(), "polynomial", num_training_steps=10, lr_init=0.1)
    _raises("min_lr", None, make_schedule, "cosine_with_min_lr", num_training_steps=10, lr_init=0.1)
    _raises("min_lr_rate", 0.5, make_schedule, "cosine_with_min_lr", num_training_steps=10, min_lr=0.01,
            min_lr_rate=0.5, lr_init=0.1)
    _raises("lr_init", None, make_schedule, "cosine_warmup_with_min_lr", num_training_steps=10, min_lr=0.01)


def test_make_scheduler_reads_lr_init_from_optimizer():
    """polynomial's multiplier is relative to optimizer.defaults['lr'], exactly as HF's."""
    scheduler = make_scheduler(_optimizer(0.5), "polynomial", num_training_steps=10, lr_end=0.05, power=2.0)
    assert scheduler.lr_lambdas[0](100) == 0.05 / 0.5
