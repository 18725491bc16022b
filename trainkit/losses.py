"""Loss functions with ``transformers``' ``compute_loss_func`` contract.

A ``compute_loss_func(outputs, labels, num_items_in_batch)`` returns the *sum* of its per-item
losses divided by ``num_items_in_batch`` (the label items of the whole accumulation window), so
micro-batches add up to the mean over the window. :func:`label_smoothed_loss` is
``transformers``' ``LabelSmoother`` (``TrainingArguments.label_smoothing_factor``) in that form:
``(1 - ε) · NLL + ε · mean over classes of -log p``, positions labelled -100 ignored, labels
shifted by one for causal LMs.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from functools import partial
from typing import Any

import torch

from trainkit.errors import ConfigError

__all__ = ["label_smoothed_loss"]

IGNORE_INDEX = -100


def _smoothed(outputs: Any, labels: torch.Tensor, num_items_in_batch: Any = None, *, epsilon: float, shift: bool) -> torch.Tensor:
    logits = outputs["logits"] if isinstance(outputs, Mapping) else outputs[0]
    if shift:
        logits, labels = logits[..., :-1, :], labels[..., 1:]
    log_probs = -torch.nn.functional.log_softmax(logits, dim=-1)
    labels = labels.to(log_probs.device)
    if labels.dim() == log_probs.dim() - 1:
        labels = labels.unsqueeze(-1)
    ignored = labels.eq(IGNORE_INDEX)
    nll = log_probs.gather(dim=-1, index=labels.clamp(min=0)).masked_fill(ignored, 0.0)
    uniform = log_probs.sum(dim=-1, keepdim=True, dtype=torch.float32).masked_fill(ignored, 0.0)
    active = num_items_in_batch if num_items_in_batch is not None else ignored.numel() - ignored.long().sum()
    return (1 - epsilon) * (nll.sum() / active) + epsilon * (uniform.sum() / (active * log_probs.shape[-1]))


def label_smoothed_loss(epsilon: float, *, shift: bool = False) -> Callable[..., torch.Tensor]:
    """A ``compute_loss_func`` applying label smoothing ``epsilon`` (transformers' ``LabelSmoother``).

    Args:
        epsilon: the smoothing factor in ``[0, 1)``.
        shift: predict ``labels[..., 1:]`` from ``logits[..., :-1, :]`` (causal LMs).

    Returns:
        ``(outputs, labels, num_items_in_batch=None) -> loss``.

    Raises:
        ConfigError: if ``epsilon`` is outside ``[0, 1)``.

    Example:
        >>> import torch
        >>> loss = label_smoothed_loss(0.0)({"logits": torch.zeros(2, 4)}, torch.tensor([1, 2]))
        >>> round(loss.item(), 4) == round(torch.log(torch.tensor(4.0)).item(), 4)
        True
    """
    if not 0 <= epsilon < 1:
        raise ConfigError(f"label_smoothed_loss(epsilon={epsilon!r}): expected a value in [0, 1); use 0.1 for the usual smoothing.")
    return partial(_smoothed, epsilon=epsilon, shift=shift)
