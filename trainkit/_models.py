"""What a model is underneath its wrappers (private helpers shared by the step, data and checkpoints)."""

from __future__ import annotations

from typing import Any


def unwrap_model(model: Any) -> Any:
    """The module that defines ``forward``: inside DistributedDataParallel (``.module``),
    ``torch.compile`` (``._orig_mod``) and a PEFT wrapper (``get_base_model()``)."""
    model = getattr(model, "_orig_mod", model)  # compile outside DDP, or DDP outside compile: both orders
    if hasattr(model, "no_sync") and hasattr(model, "module"):
        model = model.module
    model = getattr(model, "_orig_mod", model)
    if type(model).__module__.startswith("peft") and hasattr(model, "get_base_model"):
        model = model.get_base_model()
    return model


def model_class(model: Any) -> type:
    """The class that defines ``model``: FSDP2's ``fully_shard`` swaps an instance's class for a
    generated ``FSDP<Name>`` subclass, which names are looked up by (causal-LM mapping, labels)."""
    cls = type(model)
    if any(c.__name__ == "FSDPModule" for c in cls.__mro__[1:2]):
        return cls.__mro__[2]
    return cls


def is_pretrained(model: Any) -> bool:
    """Whether ``model`` is a ``transformers.PreTrainedModel`` (checked by class name: no import)."""
    return any(c.__name__ == "PreTrainedModel" for c in type(model).__mro__)
