"""cadence: the log/evaluate/save/stop predicates equal transformers' DefaultFlowCallback."""

from __future__ import annotations

from types import SimpleNamespace

from hypothesis import given
from hypothesis import strategies as st

from trainkit.cadence import Actions, epoch_end_actions, step_end_actions

intervals = st.sampled_from(["no", "steps", "epoch"])


def _hf_control(event, args, **state_fields):
    from transformers.trainer_callback import DefaultFlowCallback, TrainerControl, TrainerState

    state = TrainerState(**state_fields)
    control = getattr(DefaultFlowCallback(), event)(args, state, TrainerControl())
    return Actions(log=control.should_log, evaluate=control.should_evaluate, save=control.should_save, stop=control.should_training_stop)


@given(
    step=st.integers(1, 60),
    max_steps=st.integers(1, 60),
    logging=intervals,
    logging_steps=st.integers(1, 9),
    first=st.booleans(),
    evaluation=intervals,
    eval_steps=st.integers(1, 9),
    eval_delay=st.integers(0, 20),
    saving=st.sampled_from(["no", "steps", "epoch", "best"]),
    save_steps=st.integers(1, 9),
)
def test_step_end_equals_default_flow_callback(step, max_steps, logging, logging_steps, first, evaluation, eval_steps, eval_delay, saving, save_steps):
    """Property: for any strategies, intervals, delay and step, step_end_actions answers exactly what
    transformers.DefaultFlowCallback.on_step_end sets on a fresh TrainerControl."""
    args = SimpleNamespace(logging_strategy=logging, logging_first_step=first, eval_strategy=evaluation, eval_delay=eval_delay, save_strategy=saving)
    expected = _hf_control("on_step_end", args, global_step=step, max_steps=max_steps, logging_steps=logging_steps, eval_steps=eval_steps, save_steps=save_steps)
    ours = step_end_actions(
        step, max_steps=max_steps, logging_strategy=logging, logging_steps=logging_steps, logging_first_step=first,
        eval_strategy=evaluation, eval_steps=eval_steps, eval_delay=eval_delay, save_strategy=saving, save_steps=save_steps,
    )
    assert ours == expected


@given(epoch=st.floats(0, 10), logging=intervals, evaluation=intervals, eval_delay=st.integers(0, 10), saving=st.sampled_from(["no", "steps", "epoch", "best"]))
def test_epoch_end_equals_default_flow_callback(epoch, logging, evaluation, eval_delay, saving):
    """Property: epoch_end_actions answers what DefaultFlowCallback.on_epoch_end sets."""
    args = SimpleNamespace(logging_strategy=logging, eval_strategy=evaluation, eval_delay=eval_delay, save_strategy=saving)
    expected = _hf_control("on_epoch_end", args, epoch=epoch)
    assert epoch_end_actions(epoch, logging_strategy=logging, eval_strategy=evaluation, eval_delay=eval_delay, save_strategy=saving) == expected
