"""When to log, evaluate, save and stop: pure predicates of the step and the epoch.

``transformers.Trainer`` decides this inside a callback that mutates a control object. The
decision itself is a function of a few integers, so trainkit states it as one
(:func:`step_end_actions`, :func:`epoch_end_actions`); the trainer's flow callback only
copies the answer onto ``transformers``' ``TrainerControl``. The rules are those of
``transformers.DefaultFlowCallback`` (5.x): steps strategies fire on multiples of their
interval, ``logging_first_step`` logs step 1, ``eval_delay`` holds evaluation back, and the
last step stops training, evaluates once more under the steps strategy when that step was not
already an evaluation step, and saves under the steps strategy.
"""

from __future__ import annotations

import attrs

__all__ = ["Actions", "step_end_actions", "epoch_end_actions"]


@attrs.frozen
class Actions:
    """What to do after a step or an epoch. ``Actions() | other`` combines two answers.

    Example:
        >>> Actions(log=True) | Actions(save=True)
        Actions(log=True, evaluate=False, save=True, stop=False)
    """

    log: bool = False
    evaluate: bool = False
    save: bool = False
    stop: bool = False

    def __or__(self, other: Actions) -> Actions:
        return Actions(*(a or b for a, b in zip(attrs.astuple(self), attrs.astuple(other))))


def step_end_actions(
    step: int,
    *,
    max_steps: int,
    logging_strategy: str,
    logging_steps: int,
    logging_first_step: bool,
    eval_strategy: str,
    eval_steps: int,
    eval_delay: float,
    save_strategy: str,
    save_steps: int,
) -> Actions:
    """Decide what follows optimizer step ``step`` (1-based: the number of updates done).

    Args:
        step: updates applied so far (``TrainerState.global_step``).
        max_steps: the planned number of updates.
        logging_strategy: ``"no"``, ``"steps"`` or ``"epoch"``.
        logging_steps: the logging interval in steps (already resolved from a ratio).
        logging_first_step: log after the first update too.
        eval_strategy: ``"no"``, ``"steps"`` or ``"epoch"``.
        eval_steps: the evaluation interval in steps.
        eval_delay: no evaluation before this many steps (or epochs, for the epoch strategy).
        save_strategy: ``"no"``, ``"steps"``, ``"epoch"`` or ``"best"``.
        save_steps: the saving interval in steps.

    Returns:
        The :class:`Actions` to take.

    Example:
        >>> kw = dict(max_steps=10, logging_strategy="steps", logging_steps=4, logging_first_step=True,
        ...           eval_strategy="steps", eval_steps=4, eval_delay=0, save_strategy="steps", save_steps=5)
        >>> [step for step in range(1, 11) if step_end_actions(step, **kw).log]
        [1, 4, 8]
        >>> step_end_actions(10, **kw)
        Actions(log=False, evaluate=True, save=True, stop=True)
    """
    log = (step == 1 and logging_first_step) or (logging_strategy == "steps" and step % logging_steps == 0)
    on_eval_step = eval_strategy == "steps" and step % eval_steps == 0
    evaluate = on_eval_step and eval_delay <= step
    save = save_strategy == "steps" and save_steps > 0 and step % save_steps == 0
    stop = step >= max_steps
    if stop:
        # The final evaluation is added only where this step was not an evaluation step already.
        evaluate = evaluate or (eval_strategy == "steps" and not on_eval_step and eval_delay <= step)
        save = save or save_strategy == "steps"
    return Actions(log=log, evaluate=evaluate, save=save, stop=stop)


def epoch_end_actions(epoch: float, *, logging_strategy: str, eval_strategy: str, eval_delay: float, save_strategy: str) -> Actions:
    """Decide what follows the end of an epoch (``epoch`` is the float epoch reached).

    Example:
        >>> epoch_end_actions(1.0, logging_strategy="epoch", eval_strategy="epoch", eval_delay=2, save_strategy="epoch")
        Actions(log=True, evaluate=False, save=True, stop=False)
    """
    return Actions(
        log=logging_strategy == "epoch",
        evaluate=eval_strategy == "epoch" and eval_delay <= epoch,
        save=save_strategy == "epoch",
    )
