"""Optimizers by name, over Hugging Face's decay / no-decay parameter groups.

``make_optimizer(model, name, lr=..., weight_decay=...)`` is the one entry point. ``name`` is a
registry key (all listed, sorted, in :data:`OPTIMIZER_NAMES`) or an optimizer class, which gets
the parameter groups, ``lr`` and the keyword arguments, as with ``Trainer(optimizer_cls_and_kwargs=)``.
The registry holds, earlier sources winning a name:

1. the ``transformers`` ``optim`` names that need only torch and transformers, with the arguments
   ``Trainer.get_optimizer_cls_and_kwargs`` gives them: ``adamw_torch`` (``betas=(0.9, 0.999),
   eps=1e-8``), ``adamw_torch_fused`` (the same and ``fused=True``), ``adafactor``
   (``transformers.optimization.Adafactor``, ``scale_parameter=False, relative_step=False``),
   ``sgd``, ``adagrad``, ``rmsprop`` (torch's defaults);
2. every optimizer class of ``torch.optim``, as ``torch.optim.<Class>`` and, unless (1) took it,
   as its lowercase class name (``adam``, ``nadam``, ``muon``...; ``adafactor`` stays HF's);
3. every optimizer of ``torch_optimizer``, as ``torch_optimizer.<Class>`` and, where free, as its
   lowercase name (``lamb``, ``yogi``...; ``radam`` stays torch's, ``adafactor`` HF's).

Keyword arguments override the registry's and are checked against the constructor's signature
before anything is built, as are ``lr`` and ``weight_decay``; every problem is a
:class:`~trainkit.errors.ConfigError`. ``transformers`` and ``torch_optimizer`` are imported only
when an optimizer of theirs is built. Decisions on what a plain ``loss.backward(); opt.step()``
step cannot drive:

* ``LBFGS`` is refused: its ``step`` needs a closure re-evaluating the model, and it takes one
  parameter group. ``SparseAdam`` is refused: it raises on dense gradients (every layer but
  ``nn.Embedding(sparse=True)``) and has no weight decay.
* ``Muon`` is built when every trainable parameter is 2-D, refused otherwise: torch documents
  only pairing it with a second optimizer for the other parameters, which one object cannot be.
* ``Adahessian`` (also under ``lookahead``) needs ``loss.backward(create_graph=True)``: the step
  asks :func:`needs_create_graph`. Its ``seed`` argument reseeds torch's global RNG.
* ``A2GradExp``/``A2GradInc``/``A2GradUni`` pick their own step sizes: they store ``lr`` but do
  not use it, so learning-rate schedules do not affect them.
* ``lookahead`` (= ``torch_optimizer.Lookahead``) wraps a base optimizer: ``base`` (a name or
  class, default ``"adamw_torch"``), ``k`` and ``alpha`` go to Lookahead, the other keywords to the
  base. torch_optimizer's Lookahead skips ``Optimizer.__init__``, so its ``state_dict()`` fails on
  current torch; the missing hook tables are added after building.
* An optimizer without a ``weight_decay`` argument gets one group of all trainable parameters;
  ``weight_decay > 0`` with it is an error, not silently ignored.
"""

from __future__ import annotations

import importlib
import inspect
import math
import numbers
import re
import sys
from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from trainkit.errors import ConfigError, closest_names

__all__ = ["OPTIMIZER_NAMES", "decay_parameter_names", "make_optimizer", "needs_create_graph", "param_groups"]

# transformers: Trainer.get_decay_parameter_names (ALL_LAYERNORM_LAYERS is [nn.LayerNorm]),
# matched against the lowercased dotted name.
_NO_DECAY_LAYERS: tuple[type[nn.Module], ...] = (nn.LayerNorm,)
_NO_DECAY_PATTERNS = tuple(
    re.compile(p) for p in (r"bias", r"layernorm", r"rmsnorm", r"(?:^|\.)norm(?:$|\.)", r"_norm(?:$|\.)")
)

# torch_optimizer.__all__ without `get` (spelled out so that import stays lazy; a test checks it).
_TORCH_OPTIMIZER_CLASSES = (
    "A2GradExp", "A2GradInc", "A2GradUni", "AccSGD", "AdaBelief", "AdaBound", "AdaMod", "Adafactor",
    "Adahessian", "AdamP", "AggMo", "Apollo", "DiffGrad", "LARS", "Lamb", "Lookahead", "MADGRAD",
    "NovoGrad", "PID", "QHAdam", "QHM", "RAdam", "Ranger", "RangerQH", "RangerVA", "SGDP", "SGDW",
    "SWATS", "Shampoo", "Yogi",
)  # fmt: skip

_REFUSED: dict[type[torch.optim.Optimizer], str] = {
    torch.optim.LBFGS: (
        "its step() needs a closure that re-evaluates the model several times, which a "
        "`loss.backward(); opt.step()` step does not pass, and it takes a single parameter group. "
        "Fix: use a first-order optimizer such as 'adamw_torch', or drive LBFGS in your own loop: "
        "opt = torch.optim.LBFGS(model.parameters(), lr=1.0); opt.step(closure)"
    ),
    torch.optim.SparseAdam: (
        "it only accepts sparse gradients (from nn.Embedding(sparse=True)) and raises on the dense "
        "gradients of every other layer; it also has no weight decay. Fix: use 'adagrad' or 'sgd' "
        "(both accept sparse and dense gradients), or dense embeddings with 'adamw_torch'"
    ),
}

_ADAM_KWARGS = {"betas": (0.9, 0.999), "eps": 1e-8}  # TrainingArguments' adam_beta1/2, adam_epsilon
_HF_ADAFACTOR_KWARGS = {"scale_parameter": False, "relative_step": False}


_Entry = tuple[Callable[[], type[torch.optim.Optimizer]], dict[str, Any]]  # (lazy loader, defaults)


def _lazy(module: str, class_name: str) -> Callable[[], type[torch.optim.Optimizer]]:
    """A loader that imports ``module`` (transformers, torch_optimizer) only when called."""
    return lambda: getattr(importlib.import_module(module), class_name)


def _build_registry() -> dict[str, _Entry]:
    registry: dict[str, _Entry] = {
        "adamw_torch": (_lazy("torch.optim", "AdamW"), dict(_ADAM_KWARGS)),
        "adamw_torch_fused": (_lazy("torch.optim", "AdamW"), {**_ADAM_KWARGS, "fused": True}),
        "adafactor": (_lazy("transformers.optimization", "Adafactor"), _HF_ADAFACTOR_KWARGS),
        "sgd": (_lazy("torch.optim", "SGD"), {}),
        "adagrad": (_lazy("torch.optim", "Adagrad"), {}),
        "rmsprop": (_lazy("torch.optim", "RMSprop"), {}),
    }
    torch_classes = [
        n for n in torch.optim.__all__
        if isinstance(c := getattr(torch.optim, n), type) and issubclass(c, torch.optim.Optimizer)
        and c is not torch.optim.Optimizer
    ]  # fmt: skip
    sources = [("torch.optim", n) for n in torch_classes]
    sources += [("torch_optimizer", n) for n in _TORCH_OPTIMIZER_CLASSES]
    for module, class_name in sources:
        registry.setdefault(class_name.lower(), (_lazy(module, class_name), {}))
        registry[f"{module}.{class_name}"] = (_lazy(module, class_name), {})
    return registry


_REGISTRY: dict[str, _Entry] = _build_registry()
OPTIMIZER_NAMES: tuple[str, ...] = tuple(sorted(_REGISTRY))
"""Every name :func:`make_optimizer` accepts, sorted (refused ones included: they explain why)."""


def _check_model(model: object) -> nn.Module:
    if not isinstance(model, nn.Module):
        raise ConfigError(
            f"model={model!r:.60} ({type(model).__name__}): expected a torch.nn.Module. "
            "Fix: pass the model itself (e.g. the transformers PreTrainedModel)."
        )
    return model


def _check_number(argument: str, value: object, *, positive: bool) -> float:
    ok = isinstance(value, numbers.Real) and not isinstance(value, bool) and math.isfinite(value)
    if not ok or (value <= 0 if positive else value < 0):  # type: ignore[operator]
        expected, example = ("a positive finite number", 1e-3) if positive else ("a finite number >= 0", 0.01)
        raise ConfigError(f"{argument}={value!r}: expected {expected}. Fix: pass e.g. {argument}={example}.")
    return float(value)  # type: ignore[arg-type]


def decay_parameter_names(model: nn.Module) -> list[str]:
    """Names of the parameters that get weight decay, by transformers' rule.

    A parameter decays unless a module on its path below ``model`` is an ``nn.LayerNorm`` or its
    dotted name, lowercased, contains ``bias``, ``layernorm``, ``rmsnorm``, a ``norm`` component
    or a component ending in ``_norm``: the list ``transformers.Trainer.get_decay_parameter_names``
    returns, in its order, except that names registered as ``None`` are left out. A shared module
    or parameter is listed under each of its names; ``requires_grad`` is not considered.

    Args:
        model: the model.

    Returns:
        The dotted parameter names, children's parameters before a module's own.

    Raises:
        ConfigError: ``model`` is not an ``nn.Module``.

    Example:
        >>> from torch import nn
        >>> model = nn.Sequential(nn.Linear(2, 2), nn.LayerNorm(2), nn.RMSNorm(2))
        >>> decay_parameter_names(model)
        ['0.weight', '2.weight']
    """

    def walk(module: nn.Module) -> list[str]:
        names = []
        for child_name, child in module.named_children():
            if not isinstance(child, _NO_DECAY_LAYERS):
                names += [f"{child_name}.{n}" for n in walk(child)]
        return names + [n for n, _ in module.named_parameters(recurse=False, remove_duplicate=False)]

    return [n for n in walk(_check_model(model)) if not any(p.search(n.lower()) for p in _NO_DECAY_PATTERNS)]


def param_groups(model: nn.Module, *, weight_decay: float) -> list[dict[str, Any]]:
    """Split the trainable parameters into a decay and a no-decay group, as ``transformers.Trainer``.

    Every parameter with ``requires_grad=True`` is in exactly one group (a tied parameter once,
    under its first name in ``model.named_parameters()``), in ``named_parameters()`` order; frozen
    parameters are left out, and an empty group is dropped.

    Args:
        model: the model.
        weight_decay: the decay of the parameters :func:`decay_parameter_names` lists.

    Returns:
        ``[{"params": [...], "weight_decay": weight_decay}, {"params": [...], "weight_decay": 0.0}]``
        without the empty ones.

    Raises:
        ConfigError: ``model`` is not a module or has no trainable parameter, or ``weight_decay``
            is negative or not a finite number.

    Example:
        >>> from torch import nn
        >>> model = nn.Sequential(nn.Linear(2, 2), nn.LayerNorm(2))
        >>> [(len(g["params"]), g["weight_decay"]) for g in param_groups(model, weight_decay=0.1)]
        [(1, 0.1), (3, 0.0)]
    """
    weight_decay = _check_number("weight_decay", weight_decay, positive=False)
    decay = set(decay_parameter_names(model))
    named = list(model.named_parameters())
    groups = [
        {"params": [p for n, p in named if p.requires_grad and n in decay], "weight_decay": weight_decay},
        {"params": [p for n, p in named if p.requires_grad and n not in decay], "weight_decay": 0.0},
    ]
    if not any(g["params"] for g in groups):
        raise ConfigError(
            f"model={type(model).__name__}: it has no trainable parameters ({len(named)} parameters, "
            "all with requires_grad=False), expected at least one. Fix: unfreeze the parameters to "
            "train with p.requires_grad_(True)."
        )
    return [g for g in groups if g["params"]]


def _resolve(name: object, argument: str) -> tuple[type[torch.optim.Optimizer], dict[str, Any], str]:
    if isinstance(name, str):
        if name not in _REGISTRY:
            close = closest_names(name, OPTIMIZER_NAMES)
            hint = f"Did you mean {' or '.join(map(repr, close))}? " if close else ""
            raise ConfigError(
                f"{argument}={name!r} is not a registered optimizer name. {hint}Expected one of the "
                f"{len(OPTIMIZER_NAMES)} names in trainkit.OPTIMIZER_NAMES or a torch.optim.Optimizer "
                "subclass. Fix: use a listed name or pass the class."
            )
        load, defaults = _REGISTRY[name]
        cls = load()
        return cls, dict(defaults), f"{argument}={name!r} ({cls.__module__}.{cls.__qualname__})"
    if isinstance(name, type) and issubclass(name, torch.optim.Optimizer):
        return name, {}, f"{argument}={name.__module__}.{name.__qualname__}"
    raise ConfigError(
        f"{argument}={name!r} ({type(name).__name__}): expected an optimizer name (str) or a "
        "torch.optim.Optimizer subclass. Fix: pass e.g. 'adamw_torch' or torch.optim.AdamW."
    )


def _accepted(cls: type) -> set[str] | None:
    """Keyword arguments ``cls(params, ...)`` takes; ``None`` when it takes ``**kwargs``."""
    parameters = list(inspect.signature(cls).parameters.values())[1:]
    if any(p.kind is p.VAR_KEYWORD for p in parameters):
        return None
    return {p.name for p in parameters if p.kind is not p.VAR_POSITIONAL}


def _check_kwargs(kwargs: dict[str, Any], accepted: set[str] | None, label: str, also: str = "") -> None:
    unknown = sorted(set(kwargs) - accepted) if accepted is not None else []
    if unknown:
        hints = sorted({c for u in unknown for c in closest_names(u, accepted, n=1)})
        hint = f" (did you mean {', '.join(map(repr, hints))}?)" if hints else ""
        raise ConfigError(
            f"optimizer_kwargs {unknown} are not accepted by {label}; expected some of: "
            f"{', '.join(sorted(accepted))}{also}. Fix: remove or rename them{hint}."
        )


def _is_lookahead(cls: type) -> bool:
    torch_optimizer = sys.modules.get("torch_optimizer")
    return torch_optimizer is not None and issubclass(cls, torch_optimizer.Lookahead)


def _build(model: nn.Module, cls: type, label: str, lr: float, weight_decay: float,
           kwargs: dict[str, Any], also: str = "") -> torch.optim.Optimizer:  # fmt: skip
    if _is_lookahead(cls):
        return _build_lookahead(model, cls, label, lr, weight_decay, kwargs)
    if cls in _REFUSED:
        raise ConfigError(f"{label}: trainkit does not build it because {_REFUSED[cls]}.")
    accepted = _accepted(cls)
    _check_kwargs({"lr": lr, **kwargs}, accepted, label, also)
    groups = param_groups(model, weight_decay=weight_decay)
    if accepted is None or "weight_decay" in accepted:
        kwargs = {**kwargs, "weight_decay": weight_decay}
    elif weight_decay:
        raise ConfigError(
            f"weight_decay={weight_decay!r}: {label} has no weight decay, expected weight_decay=0.0 "
            "with it. Fix: pass weight_decay=0.0 or choose an optimizer with weight decay."
        )
    else:
        groups = [{"params": [p for p in model.parameters() if p.requires_grad]}]
    if issubclass(cls, torch.optim.Muon):
        not_2d = [n for n, p in model.named_parameters() if p.requires_grad and p.ndim != 2]
        if not_2d:
            raise ConfigError(
                f"{label}: Muon only takes 2-D weight matrices, but the trainable parameters {not_2d[:5]}"
                f"{' ...' if len(not_2d) > 5 else ''} are not 2-D; torch documents a second optimizer for "
                "those, which one optimizer object cannot be. Fix: use 'adamw_torch', freeze them, or "
                "pair torch.optim.Muon with torch.optim.AdamW in your own loop."
            )
    try:
        return cls(groups, lr=lr, **kwargs)
    except (ValueError, TypeError, RuntimeError) as error:
        raise ConfigError(
            f"optimizer_kwargs {kwargs} with lr={lr!r}: {label} rejected them ({error}). "
            "Fix: pass values its documentation allows."
        ) from error


def _build_lookahead(model: nn.Module, cls: type, label: str, lr: float, weight_decay: float,
                     kwargs: dict[str, Any]) -> torch.optim.Optimizer:  # fmt: skip
    """Lookahead: ``base``, ``k``, ``alpha`` are its own, the other kwargs the base optimizer's."""
    kwargs = dict(kwargs)
    base, k, alpha = kwargs.pop("base", "adamw_torch"), kwargs.pop("k", 5), kwargs.pop("alpha", 0.5)
    if not isinstance(k, int) or isinstance(k, bool) or k < 1:
        raise ConfigError(f"k={k!r}: expected an int >= 1 (fast steps per slow update). Fix: k=5.")
    if not isinstance(alpha, numbers.Real) or isinstance(alpha, bool) or not 0.0 <= alpha <= 1.0:
        raise ConfigError(f"alpha={alpha!r}: expected a number in [0, 1] (slow weights' step). Fix: alpha=0.5")
    base_cls, base_defaults, base_label = _resolve(base, "base")
    if _is_lookahead(base_cls):
        raise ConfigError(f"base={base!r}: expected a non-Lookahead optimizer. Fix: base='adamw_torch'.")
    also = f" (and {label} itself takes base, k, alpha)"
    inner = _build(model, base_cls, base_label, lr, weight_decay, {**base_defaults, **kwargs}, also)
    optimizer = cls(inner, k=k, alpha=alpha)
    # torch_optimizer.Lookahead does not call Optimizer.__init__: add the hook tables that
    # state_dict() and step hooks need, exactly as Optimizer.__setstate__ does for old pickles.
    torch.optim.Optimizer.__setstate__(optimizer, {})
    return optimizer


def make_optimizer(
    model: nn.Module,
    name: str | type[torch.optim.Optimizer] = "adamw_torch",
    *,
    lr: float,
    weight_decay: float = 0.0,
    **optimizer_kwargs: Any,
) -> torch.optim.Optimizer:
    """Build an optimizer over ``model``'s trainable parameters, with HF's decay groups.

    Args:
        model: the model; its trainable parameters are split by :func:`param_groups`.
        name: a name of :data:`OPTIMIZER_NAMES` (see the module docs) or an optimizer class,
            which is called as ``name(param_groups, lr=lr, weight_decay=..., **optimizer_kwargs)``.
        lr: the learning rate, a positive finite number.
        weight_decay: the decay of the decay group (biases and norms get 0.0), >= 0.
        **optimizer_kwargs: more arguments of the optimizer's constructor (they override the
            registry's, e.g. ``betas`` of ``adamw_torch``). For ``lookahead``: ``base`` (a name
            or class, default ``"adamw_torch"``), ``k``, ``alpha``, then the base's arguments.

    Returns:
        The optimizer (for ``lookahead``, a ``torch_optimizer.Lookahead`` around the base).

    Raises:
        ConfigError: an unknown or refused name, a ``name`` that is neither a string nor an
            optimizer class, a bad ``lr`` or ``weight_decay``, a model without trainable
            parameters, an argument the constructor does not take, or a value it rejects.

    Example:
        >>> import torch
        >>> model = torch.nn.Sequential(torch.nn.Linear(4, 4), torch.nn.LayerNorm(4))
        >>> opt = make_optimizer(model, "adamw_torch", lr=1e-3, weight_decay=0.01)
        >>> type(opt).__name__, [g["weight_decay"] for g in opt.param_groups]
        ('AdamW', [0.01, 0.0])
        >>> make_optimizer(model, torch.optim.SGD, lr=0.1, momentum=0.9).defaults["momentum"]
        0.9
        >>> make_optimizer(model, "adamw_troch", lr=1e-3)  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        trainkit.errors.ConfigError: name='adamw_troch' is not a registered ... Did you mean 'adamw_torch' ...
    """
    _check_model(model)
    lr = _check_number("lr", lr, positive=True)
    weight_decay = _check_number("weight_decay", weight_decay, positive=False)
    cls, defaults, label = _resolve(name, "name")
    return _build(model, cls, label, lr, weight_decay, {**defaults, **optimizer_kwargs})


def needs_create_graph(optimizer: torch.optim.Optimizer) -> bool:
    """Whether the backward pass before ``optimizer.step()`` must keep the graph of the gradients.

    True for ``torch_optimizer.Adahessian`` (Hessian-vector products of the gradients), also
    inside a ``torch_optimizer.Lookahead``. Use ``loss.backward(create_graph=needs_create_graph(opt))``.

    Args:
        optimizer: the optimizer.

    Returns:
        True when ``loss.backward(create_graph=True)`` is required.

    Example:
        >>> import torch
        >>> needs_create_graph(torch.optim.SGD(torch.nn.Linear(2, 2).parameters(), lr=0.1))
        False
    """
    torch_optimizer = sys.modules.get("torch_optimizer")
    if torch_optimizer is None:  # not imported: no optimizer can be one of its classes
        return False
    while isinstance(optimizer, torch_optimizer.Lookahead):
        optimizer = optimizer.optimizer
    return isinstance(optimizer, torch_optimizer.Adahessian)
