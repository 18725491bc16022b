"""Errors raised by trainkit.

Every error is a :class:`TrainkitError` *and* the builtin exception it refines, so
``except ValueError`` in existing code keeps working while ``except TrainkitError``
catches everything trainkit raises on purpose.

Messages are built before raising and always say four things: which argument (or step,
or file), the value received, what was expected, and how to fix it.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable

__all__ = [
    "TrainkitError",
    "ConfigError",
    "ConfigTypeError",
    "UnsupportedOptionError",
    "MetricNotFoundError",
    "StaleStateError",
    "NonFiniteError",
    "CheckpointError",
    "MissingDependencyError",
    "TrainkitWarning",
    "CheckpointWarning",
]


class TrainkitError(Exception):
    """Base class of every error trainkit raises deliberately.

    Example:
        >>> try:
        ...     raise CheckpointError("checkpoint-3/manifest.json is missing")
        ... except TrainkitError as error:
        ...     type(error).__name__
        'CheckpointError'
    """


class ConfigError(TrainkitError, ValueError):
    """An argument or option has a value trainkit cannot use.

    Example:
        >>> issubclass(ConfigError, TrainkitError), issubclass(ConfigError, ValueError)
        (True, True)
    """


class ConfigTypeError(ConfigError, TypeError):
    """An argument has the wrong type (a string where a model is expected, a dict for the arguments...).

    It is a :class:`ConfigError` (so ``except ConfigError`` catches every bad input) and a
    ``TypeError``, the builtin Python raises for a value of the wrong type.

    Example:
        >>> issubclass(ConfigTypeError, ConfigError), issubclass(ConfigTypeError, TypeError)
        (True, True)
    """


class MetricNotFoundError(ConfigError, KeyError):
    """``metric_for_best_model`` names a metric the evaluation did not compute.

    A ``KeyError`` as in transformers (code catching that keeps working), with a plain message:
    ``str()`` of a ``KeyError`` would otherwise quote it.

    Example:
        >>> str(MetricNotFoundError("no metric 'eval_f1'"))
        "no metric 'eval_f1'"
    """

    def __str__(self) -> str:
        return Exception.__str__(self)


class _MissingLossError(ConfigError):
    """The model's outputs hold no loss; ``output_keys`` are what they hold (for checks.explain_batch_failure)."""

    def __init__(self, message: str, output_keys: list[str]) -> None:
        super().__init__(message)
        self.output_keys = output_keys


class UnsupportedOptionError(ConfigError):
    """An option exists (e.g. in ``transformers.TrainingArguments``) but trainkit does not support it.

    Example:
        >>> issubclass(UnsupportedOptionError, ConfigError), issubclass(UnsupportedOptionError, ValueError)
        (True, True)
    """


class StaleStateError(TrainkitError, RuntimeError):
    """A :class:`~trainkit.TrainState` was used after a step consumed it (see the donation contract).

    Example:
        >>> issubclass(StaleStateError, TrainkitError), issubclass(StaleStateError, RuntimeError)
        (True, True)
    """


class NonFiniteError(TrainkitError, FloatingPointError):
    """A loss or gradient norm was NaN or infinite; the parameters were left unchanged.

    Example:
        >>> issubclass(NonFiniteError, TrainkitError), issubclass(NonFiniteError, FloatingPointError)
        (True, True)
    """


class CheckpointError(TrainkitError, OSError):
    """A checkpoint is missing, incomplete, corrupted or does not match the model.

    Example:
        >>> issubclass(CheckpointError, TrainkitError), issubclass(CheckpointError, OSError)
        (True, True)
    """


class MissingDependencyError(TrainkitError, ImportError):
    """An optional package a feature needs is not installed; the message names the pip command.

    Example:
        >>> issubclass(MissingDependencyError, TrainkitError), issubclass(MissingDependencyError, ImportError)
        (True, True)
    """


class TrainkitWarning(UserWarning):
    """Base class of the warnings trainkit issues (never a substitute for an error).

    Example:
        >>> issubclass(TrainkitWarning, UserWarning), issubclass(TrainkitWarning, TrainkitError)
        (True, False)
    """


class CheckpointWarning(TrainkitWarning):
    """A checkpoint was skipped because it failed verification; the message names the file.

    Example:
        >>> issubclass(CheckpointWarning, TrainkitWarning), issubclass(CheckpointWarning, UserWarning)
        (True, True)
    """


def closest_names(value: str, known: Iterable[str], *, n: int = 3) -> list[str]:
    """Return up to ``n`` names from ``known`` that look like ``value``, best first.

    Used to turn "unknown name" errors into "did you mean ...?" errors.

    Args:
        value: the name that was not found.
        known: the valid names.
        n: how many suggestions at most.

    Returns:
        The closest names (case-insensitive match), possibly empty.

    Example:
        >>> closest_names("adamw_troch", ["adamw_torch", "sgd", "adafactor"])
        ['adamw_torch']
    """
    known = list(known)
    by_lower = {k.lower(): k for k in known}
    matches = difflib.get_close_matches(str(value).lower(), list(by_lower), n=n, cutoff=0.5)
    return [by_lower[m] for m in matches]
