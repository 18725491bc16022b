"""The bridge to ``transformers`` callbacks.

trainkit's loop is driven by its own pure predicates (:mod:`trainkit.cadence`), but users'
``transformers.TrainerCallback``s must keep working unchanged: they receive ``transformers``'
own ``TrainerState`` and ``TrainerControl`` and can set control flags. So the trainer uses the
real ``transformers.trainer_callback.CallbackHandler`` (the same dispatch and keyword arguments
as ``transformers.Trainer``), with the callbacks in ``transformers``' order: the flow callback,
the user's callbacks, then the progress bar (or the printer when ``disable_tqdm``).

:class:`FlowCallback` *is a* ``DefaultFlowCallback`` (so code that looks for, removes or
replaces ``DefaultFlowCallback`` keeps working) whose decisions come from the cadence predicates.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from transformers.trainer_callback import (
    CallbackHandler,
    DefaultFlowCallback,
    PrinterCallback,
    TrainerCallback,
    TrainerControl,
    TrainerState,
)

from trainkit.cadence import Actions, epoch_end_actions, step_end_actions

__all__ = ["FlowCallback", "make_callback_handler", "apply_actions"]


def apply_actions(control: TrainerControl, actions: Actions) -> TrainerControl:
    """Set the flags ``actions`` asks for on ``control`` (never clears a flag another callback set).

    Example:
        >>> from transformers.trainer_callback import TrainerControl
        >>> apply_actions(TrainerControl(), Actions(save=True)).should_save
        True
    """
    control.should_log = control.should_log or actions.log
    control.should_evaluate = control.should_evaluate or actions.evaluate
    control.should_save = control.should_save or actions.save
    control.should_training_stop = control.should_training_stop or actions.stop
    return control


class FlowCallback(DefaultFlowCallback):
    """``transformers.DefaultFlowCallback`` with its decisions taken from :mod:`trainkit.cadence`."""

    def on_step_end(self, args: Any, state: TrainerState, control: TrainerControl, **kwargs: Any) -> TrainerControl:
        actions = step_end_actions(
            state.global_step,
            max_steps=state.max_steps,
            logging_strategy=args.logging_strategy,
            logging_steps=state.logging_steps,
            logging_first_step=args.logging_first_step,
            eval_strategy=args.eval_strategy,
            eval_steps=state.eval_steps,
            eval_delay=args.eval_delay,
            save_strategy=args.save_strategy,
            save_steps=state.save_steps,
        )
        return apply_actions(control, actions)

    def on_epoch_end(self, args: Any, state: TrainerState, control: TrainerControl, **kwargs: Any) -> TrainerControl:
        actions = epoch_end_actions(
            state.epoch,
            logging_strategy=args.logging_strategy,
            eval_strategy=args.eval_strategy,
            eval_delay=args.eval_delay,
            save_strategy=args.save_strategy,
        )
        return apply_actions(control, actions)


def make_callback_handler(
    callbacks: list[Any] | None,
    *,
    model: Any,
    processing_class: Any,
    optimizer: Any,
    lr_scheduler: Any,
    disable_tqdm: bool,
    integrations: list[Any] = (),
) -> CallbackHandler:
    """Build ``transformers``' ``CallbackHandler`` with the callbacks in ``transformers.Trainer``'s order.

    Args:
        callbacks: the user's ``TrainerCallback`` instances or classes, or None.
        model: passed to every event as ``model=``.
        processing_class: passed as ``processing_class=``.
        optimizer: passed as ``optimizer=``.
        lr_scheduler: passed as ``lr_scheduler=``.
        disable_tqdm: print the logs (``PrinterCallback``) instead of showing progress bars; bars are
            also replaced by printed logs when stderr is not a terminal.
        integrations: the ``report_to`` callbacks, placed before the user's, as transformers does.

    Returns:
        The handler; its ``callbacks`` list is what ``Trainer.add_callback`` and friends edit.
    """
    from trainkit.logging import ProgressBars, show_progress_bars

    handler = CallbackHandler([FlowCallback, *integrations, *(callbacks or [])], model, processing_class, optimizer,
                              lr_scheduler)
    handler.add_callback(ProgressBars if show_progress_bars(disable_tqdm) else PrinterCallback)
    return handler


def step_hooks(callbacks: list[Any], fire: Callable[[str], Any]) -> Any:
    """The :class:`~trainkit.StepHooks` that fire transformers' in-step events, each only if some callback
    handles it: they are pure dispatch in transformers' handler (no flag to reset), and firing them for
    nobody costs a step time. The Trainer builds them once per epoch, so a callback added in mid-epoch
    gets them from the next epoch.

    Args:
        callbacks: the handler's callbacks.
        fire: ``event name -> None``, which calls the handler.

    Returns:
        StepHooks for :func:`~trainkit.train_step`.

    Example:
        >>> class Counter(TrainerCallback):
        ...     def on_optimizer_step(self, args, state, control, **kwargs): ...
        >>> hooks = step_hooks([Counter()], print)
        >>> hooks.on_micro_batch_end is None, hooks.after_update is not None
        (True, True)
    """
    from trainkit.step import StepHooks

    events = ("on_substep_end", "on_pre_optimizer_step", "on_optimizer_step")
    handled = {e for e in events for c in callbacks if getattr(type(c), e) is not getattr(TrainerCallback, e)}
    hook = lambda event: (lambda *_: fire(event)) if event in handled else None  # noqa: E731
    return StepHooks(on_micro_batch_end=hook("on_substep_end"), before_update=hook("on_pre_optimizer_step"),
                     after_update=hook("on_optimizer_step"))
