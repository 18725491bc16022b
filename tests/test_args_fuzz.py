"""TrainingArguments under random values: every invalid combination is a ConfigError, every valid one constructs.

The oracle below is an independent statement of the rules (``docs/errors.md`` lists them):
written from the documentation of each option and transformers' rules, not from trainkit's
validation code, so a rule that one of them forgets makes the test fail.
"""

from __future__ import annotations

import math
import numbers
import tempfile
from typing import Any

import pytest
import torch
from hypothesis import event, given, settings
from hypothesis import strategies as st

from trainkit import OPTIMIZER_NAMES, SCHEDULE_NAMES, TrainingArguments
from trainkit.errors import ConfigError

_OUT = tempfile.mkdtemp(prefix="trainkit-args-fuzz-")
def _mostly(valid: list[Any], invalid: list[Any]) -> st.SearchStrategy[Any]:
    """A valid value 19 times in 20 (so that whole valid combinations are common), else an invalid one;
    shrinking goes to the first valid value."""
    return st.integers(0, 19).flatmap(lambda k: st.sampled_from(valid if k < 19 else invalid))


_BAD = [None, "1", True, float("nan"), float("inf")]
_STEPS = _mostly([1, 2, 4, 6, 0.5, 0.25], [0, -1, 2.5, "5", None])

FIELDS: dict[str, st.SearchStrategy[Any]] = {
    "learning_rate": _mostly([1e-3, 5e-5, 1, 0.5], [0, -1e-3, *_BAD]),
    "per_device_train_batch_size": _mostly([1, 2, 8], [0, -1, 2.5, *_BAD]),
    "gradient_accumulation_steps": _mostly([1, 2, 8], [0, -1, 2.5, *_BAD]),
    "num_train_epochs": _mostly([1, 3, 0.5, 0, -1], _BAD),
    "max_steps": _mostly([-1, 0, 5], [2.5, *_BAD]),
    "warmup_steps": _mostly([0, 0.1, 3], [-1, *_BAD]),
    "weight_decay": _mostly([0.0, 0.01], [-0.1, *_BAD]),
    "adam_beta1": _mostly([0.0, 0.9], [1.0, -0.1, 2, *_BAD]),
    "fp16": _mostly([False], [True, "yes"]),
    "bf16": st.booleans(),
    "optim": _mostly(["adamw_torch", "sgd", "adafactor"], ["adamw_torh", "Adam", ""]),
    "lr_scheduler_type": _mostly(["linear", "cosine", "constant", "reduce_lr_on_plateau"], ["cosine_warmup", "linaer"]),
    "logging_strategy": _mostly(["steps", "epoch", "no"], ["step"]),
    "eval_strategy": _mostly(["no", "steps", "epoch"], ["always"]),
    "save_strategy": _mostly(["no", "steps", "epoch", "best"], ["sometimes"]),
    "logging_steps": _STEPS,
    "eval_steps": _mostly([None, 1, 2, 4, 0.5, 0.25], [0, -1, 2.5, "5"]),
    "save_steps": _STEPS,
    "load_best_model_at_end": st.booleans(),
}


def _real(x: Any) -> bool:
    return isinstance(x, numbers.Real) and not isinstance(x, bool) and math.isfinite(x)


def _int(x: Any) -> bool:
    return isinstance(x, int) and not isinstance(x, bool)


def _steps_ok(x: Any) -> bool:
    """An interval in steps: a number > 0; above 1 a whole number (below 1, a ratio of the run)."""
    return _real(x) and x > 0 and (x < 1 or x == int(x))


def _multiple(save: float, every: float) -> bool:
    return save % every == 0 or (every < 1 and save < 1 and round(save * 1e6) % round(every * 1e6) == 0)


def valid(v: dict[str, Any]) -> bool:
    """The rules, one per line."""
    ok = [
        _real(v["learning_rate"]) and v["learning_rate"] > 0,
        _int(v["per_device_train_batch_size"]) and v["per_device_train_batch_size"] >= 1,
        _int(v["gradient_accumulation_steps"]) and v["gradient_accumulation_steps"] >= 1,
        _real(v["num_train_epochs"]),
        _int(v["max_steps"]),
        not (_real(v["num_train_epochs"]) and _int(v["max_steps"]) and v["num_train_epochs"] <= 0 and v["max_steps"] <= 0),
        _real(v["warmup_steps"]) and v["warmup_steps"] >= 0,
        _real(v["weight_decay"]) and v["weight_decay"] >= 0,
        _real(v["adam_beta1"]) and 0 <= v["adam_beta1"] < 1,
        isinstance(v["fp16"], bool) and not (v["fp16"] and (v["bf16"] or not torch.cuda.is_available())),
        v["optim"] in OPTIMIZER_NAMES,
        v["lr_scheduler_type"] in (*SCHEDULE_NAMES, "reduce_lr_on_plateau", "greedy"),
        v["lr_scheduler_type"] != "reduce_lr_on_plateau" or v["eval_strategy"] != "no",
        v["logging_strategy"] in ("no", "steps", "epoch"),
        v["eval_strategy"] in ("no", "steps", "epoch"),
        v["save_strategy"] in ("no", "steps", "epoch", "best"),
        v["logging_strategy"] != "steps" or _steps_ok(v["logging_steps"]),
        v["save_strategy"] != "steps" or _steps_ok(v["save_steps"]),
        v["save_strategy"] != "best" or v["eval_strategy"] != "no",
    ]
    # eval_steps None (or 0) means logging_steps, as in transformers.
    every = v["logging_steps"] if v["eval_steps"] in (None, 0) and _real(v["logging_steps"]) and v["logging_steps"] > 0 else v["eval_steps"]
    ok.append(v["eval_strategy"] != "steps" or _steps_ok(every))
    if v["load_best_model_at_end"] and v["save_strategy"] != "best":
        ok.append(v["eval_strategy"] == v["save_strategy"])
        if v["eval_strategy"] == v["save_strategy"] == "steps" and _steps_ok(every) and _steps_ok(v["save_steps"]):
            ok.append(_multiple(v["save_steps"], every))
    return all(ok)


@settings(max_examples=300)
@given(st.fixed_dictionaries(FIELDS))
def test_random_arguments_construct_or_raise_config_error(values):
    """Property: TrainingArguments(**values) constructs exactly when the documented rules hold;
    otherwise it raises ConfigError (never another exception, never a deep traceback), and the
    message names every field that broke a rule it checks."""
    try:
        args = TrainingArguments(output_dir=_OUT, **values)
    except ConfigError as error:
        assert not valid(values), f"valid arguments refused: {error}"
        assert "Fix:" in str(error)
    else:
        assert valid(values), f"invalid arguments accepted: {values}"
        assert args.learning_rate == values["learning_rate"]
    event(f"valid={valid(values)}")  # both outcomes are exercised (see --hypothesis-show-statistics)


@pytest.mark.parametrize("name", sorted(FIELDS))
def test_one_bad_field_is_named(name):
    """Each fuzzed field, alone set to a value of the wrong type, is named in the error with its value
    (an interval under its "steps" strategy, the only one that reads it)."""
    strategy = {"eval_steps": {"eval_strategy": "steps"}}.get(name, {})
    with pytest.raises(ConfigError) as raised:
        TrainingArguments(output_dir=_OUT, **strategy, **{name: object()})
    assert f"{name}=" in str(raised.value) and "Fix:" in str(raised.value)
