"""FSDP: parameters, gradients and optimizer state sharded over the processes (``fully_shard``).

Where DDP keeps a whole replica per process, PyTorch's FSDP2 (``torch.distributed.fsdp.fully_shard``)
splits every parameter across the processes and gathers a layer's parameters only while that
layer runs. :func:`shard_model` applies it to each transformer block (the model's
``_no_split_modules``, or the classes named) and then to the root, in place.

The rest of trainkit treats a sharded model as it treats a DDP one: :func:`~trainkit.train_step`
weights by the global item count and turns gradient synchronisation off for non-final
micro-batches (``set_requires_gradient_sync``); :func:`~trainkit.evaluate` has every process run
the same number of forward passes (a sharded forward is a collective). Checkpoints stay in
the one-process format: :func:`full_state` gathers the whole model and optimizer state on
rank 0, named and numbered as ``model.state_dict()`` / ``optimizer.state_dict()`` of an unsharded
run, so a checkpoint written under FSDP loads without it and the other way round
(:func:`load_full_state` scatters it back). Those two are collectives: every process calls them.

Build the optimizer *after* :func:`shard_model`: sharding replaces the parameters.
"""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Iterator, Sequence
from typing import Any

import torch
from torch import nn

from trainkit.errors import ConfigError, closest_names

__all__ = ["shard_model", "is_sharded", "full_state", "load_full_state"]


def is_sharded(model: Any) -> bool:
    """Whether ``model`` was sharded with ``fully_shard`` (FSDP2).

    Example:
        >>> is_sharded(torch.nn.Linear(2, 2))
        False
    """
    fsdp = sys.modules.get("torch.distributed.fsdp")  # a sharded model implies the module is imported
    return fsdp is not None and isinstance(model, fsdp.FSDPModule)


def shard_model(model: nn.Module, *, layers: Sequence[str] | None = None, reshard_after_forward: bool = True) -> nn.Module:
    """Shard ``model`` over the processes with FSDP2, in place; with one process, return it unchanged.

    Each submodule whose class name is in ``layers`` becomes its own FSDP unit (its parameters are
    gathered just for its forward and backward), then the root takes the remaining parameters.

    Args:
        model: the module, on its device (``cuda:LOCAL_RANK`` or the CPU).
        layers: class names of the blocks to shard one by one; None: the model's
            ``_no_split_modules`` (transformers models list their blocks there), else the root only.
        reshard_after_forward: free gathered parameters after each forward (``"full_shard"``);
            False keeps them until the backward (``"shard_grad_op"``: more memory, fewer gathers).

    Returns:
        ``model`` itself, now an ``FSDPModule``. Build the optimizer over its parameters afterwards.

    Raises:
        ConfigError: a name in ``layers`` matches no submodule (the message lists the model's classes).

    Example:
        >>> net = torch.nn.Sequential(torch.nn.Linear(2, 2))
        >>> shard_model(net) is net  # one process: nothing to shard
        True
    """
    from trainkit.distributed import _active

    if not _active():
        return model
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import fully_shard

    names = list(layers) if layers is not None else list(getattr(model, "_no_split_modules", None) or ())
    present = {type(m).__name__ for m in model.modules()}
    missing = [n for n in names if n not in present]
    if layers is not None and missing:
        near = closest_names(missing[0], sorted(present))
        raise ConfigError(f"shard_model(layers={list(layers)!r}): no submodule of {type(model).__name__} is a "
                          f"{missing[0]!r}{f' (did you mean {near[0]!r}?)' if near else ''}. Fix: name block classes of "
                          f"the model, e.g. one of {sorted(present)[:8]}.")
    device = next((p.device for p in model.parameters()), torch.device("cpu"))
    mesh = init_device_mesh(device.type, (torch.distributed.get_world_size(),))
    blocks = [m for m in model.modules() if m is not model and type(m).__name__ in names]
    for block in blocks:
        fully_shard(block, mesh=mesh, reshard_after_forward=reshard_after_forward)
    fully_shard(model, mesh=mesh, reshard_after_forward=reshard_after_forward)
    return model


@contextlib.contextmanager
def _gradient_sync_off(model: Any) -> Iterator[None]:
    """FSDP's ``no_sync``: accumulate this backward's gradients locally, reduce them at the last one."""
    model.set_requires_gradient_sync(False)
    try:
        yield
    finally:
        model.set_requires_gradient_sync(True)


def _names_by_parameter(model: nn.Module) -> dict[int, str]:
    return {id(p): name for name, p in model.named_parameters()}


def full_state(model: nn.Module, optimizer: torch.optim.Optimizer | None) -> tuple[dict[str, Any], dict[str, Any] | None]:
    """The whole model and optimizer state of a sharded model, on rank 0, in the one-process format.

    A collective: call it on every process. Rank 0 receives CPU tensors keyed as the unsharded
    ``model.state_dict()``, and the optimizer state numbered as the unsharded
    ``optimizer.state_dict()`` (parameters in the order of the optimizer's groups); the other
    processes receive empty dicts.

    Without a process group it also accepts an unsharded model, and then returns what
    ``model.state_dict()`` and ``optimizer.state_dict()`` would (the weights detached, sharing the
    parameters' storage when they are on the CPU). An optimizer that has not stepped yet gives
    an empty state and is left untouched (torch's getter would initialise it with a step).

    Args:
        model: the model, sharded with :func:`shard_model` (or, in one process, unsharded).
        optimizer: its optimizer, or None.

    Returns:
        ``(weights, optimizer_state)``: ``optimizer_state`` is None without an optimizer.

    Example:
        >>> model = torch.nn.Linear(2, 1)
        >>> opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
        >>> model(torch.ones(3, 2)).sum().backward()
        >>> opt.step()
        >>> weights, opt_state = full_state(model, opt)  # one process, unsharded model
        >>> sorted(weights), torch.equal(weights["weight"], model.weight)
        (['bias', 'weight'], True)
        >>> opt_state["param_groups"][0]["params"], opt_state["state"][1]["momentum_buffer"]
        ([0, 1], tensor([3.]))
        >>> full_state(model, None)[1] is None
        True
    """
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict, get_optimizer_state_dict

    options = StateDictOptions(full_state_dict=True, cpu_offload=True)
    weights = get_model_state_dict(model, options=options)
    if optimizer is None:
        return weights, None
    if not optimizer.state:  # not stepped yet: torch's getter would take a zero-lr step to create the state
        return weights, {"state": {}, "param_groups": _numbered(optimizer.param_groups, optimizer)}
    named = get_optimizer_state_dict(model, optimizer, options=options)
    if not named:
        return weights, {}
    names = _names_by_parameter(model)
    order = [names[id(p)] for group in optimizer.param_groups for p in group["params"]]
    index = {name: i for i, name in enumerate(order)}
    return weights, {"state": {index[name]: value for name, value in named["state"].items()},
                     "param_groups": _numbered(named["param_groups"], optimizer)}


def _numbered(groups: list[dict[str, Any]], optimizer: torch.optim.Optimizer) -> list[dict[str, Any]]:
    """``groups``' options with their parameters numbered as ``optimizer.state_dict()`` numbers them."""
    out, start = [], 0
    for saved, group in zip(groups, optimizer.param_groups):
        size = len(group["params"])
        out.append({**{k: v for k, v in saved.items() if k != "params"}, "params": list(range(start, start + size))})
        start += size
    return out


def load_full_state(model: nn.Module, optimizer: torch.optim.Optimizer | None, weights: dict[str, Any],
                    optimizer_state: dict[str, Any] | None) -> None:
    """Scatter a one-process state (as :func:`full_state` returns, or a checkpoint's files) into a sharded
    model and its optimizer. A collective: every process calls it with the same full dicts.

    Without a process group it also loads into an unsharded model and its optimizer, as
    ``load_state_dict`` would.

    Args:
        model: the model, sharded with :func:`shard_model` (or, in one process, unsharded).
        optimizer: its optimizer, or None to load the weights only.
        weights: the full ``model.state_dict()`` of an unsharded model (not modified).
        optimizer_state: the full ``optimizer.state_dict()`` (parameters numbered in the order of
            the optimizer's groups), or None to load the weights only.

    Example:
        >>> model = torch.nn.Linear(2, 1)
        >>> opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
        >>> model(torch.ones(3, 2)).sum().backward()
        >>> opt.step()
        >>> weights, opt_state = full_state(model, opt)
        >>> other = torch.nn.Linear(2, 1)
        >>> other_opt = torch.optim.SGD(other.parameters(), lr=0.1, momentum=0.9)
        >>> load_full_state(other, other_opt, weights, opt_state)  # one process, unsharded model
        >>> torch.equal(other.weight, model.weight), other_opt.state_dict()["state"][1]["momentum_buffer"]
        (True, tensor([3.]))
    """
    from torch.distributed.checkpoint.state_dict import StateDictOptions, set_model_state_dict, set_optimizer_state_dict

    options = StateDictOptions(full_state_dict=True)
    set_model_state_dict(model, dict(weights), options=options)  # it replaces the values: pass a copy
    if optimizer is None or optimizer_state is None:
        return
    names = _names_by_parameter(model)
    order = [names[id(p)] for group in optimizer.param_groups for p in group["params"]]
    named = {"state": {order[i]: dict(value) for i, value in optimizer_state["state"].items()},
             "param_groups": [{**g, "params": [order[i] for i in g["params"]]} for g in optimizer_state["param_groups"]]}
    set_optimizer_state_dict(model, optimizer, named, options=options)
