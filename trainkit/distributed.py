"""Scale-out on ``torch.distributed``: set-up from ``torchrun``'s environment and rank helpers.

trainkit never launches processes. ``torchrun`` starts one process per device (on one node or
several) and tells each, through environment variables, who it is: ``RANK`` (global),
``LOCAL_RANK`` (on its node), ``WORLD_SIZE``, ``LOCAL_WORLD_SIZE`` and the rendezvous address
``MASTER_ADDR``/``MASTER_PORT``. :func:`setup_distributed` reads them, checks that they agree
(one error listing every problem, before any collective can hang) and initialises the default
process group: ``nccl`` on CUDA, ``gloo`` on CPU, unless a backend is named.

What the rest of trainkit does with the group (each piece reads it, nothing is global state
of trainkit's own):

* :func:`~trainkit.train_step` on a :class:`~torch.nn.parallel.DistributedDataParallel` model
  all-reduces the window's label-item count before the forward, weights each rank's loss by
  ``items / global items`` (times the world size, since DDP averages gradients), runs the
  non-final micro-batches under ``no_sync()``, and all-reduces the reported loss, so every
  rank sees the loss of the global batch and takes the same skip/raise decision.
* :mod:`trainkit.data` gives each rank its share of the same seeded epoch order (as
  accelerate's ``BatchSamplerShard``); :func:`~trainkit.evaluate` gathers every rank's results
  back into dataset order.
* The ``Trainer`` wraps its model (:func:`wrap_model`), writes checkpoints on rank 0 between
  barriers, and runs callbacks everywhere with HF's ``is_world_process_zero`` flags.

Every helper works without a process group too (one process: rank 0 of 1), so the same loop
runs under ``python`` and under ``torchrun``.
"""

from __future__ import annotations

import datetime
import os
from collections.abc import Mapping
from typing import Any

import attrs
import torch
from torch import nn

from trainkit._models import is_pretrained
from trainkit.errors import ConfigError, UnsupportedOptionError
from trainkit.sharding import is_sharded

__all__ = [
    "BACKENDS", "ProcessInfo", "launch_env", "setup_distributed", "teardown_distributed", "rank", "world_size",
    "local_rank", "is_main_process", "barrier", "all_reduce_metrics", "broadcast_object", "wrap_model",
]

BACKENDS = ("nccl", "gloo", "mpi", "ccl", "hccl", "cncl", "mccl")  # transformers' ``ddp_backend`` choices
"""The backends :func:`setup_distributed` accepts: transformers' ``ddp_backend`` choices.

Whether one is usable depends on the torch build (``torch.distributed.is_backend_available``):
``nccl`` needs CUDA, ``gloo`` works on the CPU.
"""
_REQUIRED = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")
_FIX = "Fix: launch with `torchrun --nproc_per_node=N script.py` (it sets them all), or unset them to run one process."


@attrs.frozen
class ProcessInfo:
    """Who this process is in the job.

    Attributes:
        rank: the global rank, in ``[0, world_size)``.
        world_size: the number of processes.
        local_rank: the rank on this node (the device index on a GPU node).
        local_world_size: the processes on this node.

    Example:
        >>> info = ProcessInfo(rank=1, world_size=4, local_rank=1, local_world_size=2)
        >>> info.is_main, ProcessInfo().is_main  # the default is the one process of a plain run
        (False, True)
    """

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    local_world_size: int = 1

    @property
    def is_main(self) -> bool:
        """Whether this is global rank 0 (the process that writes checkpoints)."""
        return self.rank == 0


def launch_env(environ: Mapping[str, str] | None = None) -> ProcessInfo | None:
    """Read and check ``torchrun``'s variables; ``None`` when the process was not launched by it.

    Args:
        environ: the environment to read (default ``os.environ``).

    Returns:
        A :class:`ProcessInfo`, or ``None`` when none of ``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK`` is set.

    Raises:
        ConfigError: some variables are set but others missing, not integers, or inconsistent
            (``RANK >= WORLD_SIZE``, ``LOCAL_RANK >= LOCAL_WORLD_SIZE``...); every problem is listed.

    Example:
        >>> env = {"RANK": "1", "WORLD_SIZE": "2", "LOCAL_RANK": "1", "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": "29500"}
        >>> launch_env(env)
        ProcessInfo(rank=1, world_size=2, local_rank=1, local_world_size=2)
        >>> launch_env({**env, "RANK": "2"})
        Traceback (most recent call last):
        trainkit.errors.ConfigError: torchrun's environment is inconsistent:
          - RANK=2 with WORLD_SIZE=2: expected 0 <= RANK < WORLD_SIZE.
        Fix: launch with `torchrun --nproc_per_node=N script.py` (it sets them all), or unset them to run one process.
    """
    env = os.environ if environ is None else environ
    if not any(name in env for name in ("RANK", "WORLD_SIZE", "LOCAL_RANK")):
        return None
    problems = [f"{name} is not set (found {', '.join(f'{n}={env[n]}' for n in _REQUIRED if n in env)})."
                for name in _REQUIRED if name not in env]
    values: dict[str, int] = {}
    for name in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE", "MASTER_PORT"):
        if name in env:
            try:
                values[name] = int(env[name])
            except ValueError:
                problems.append(f"{name}={env[name]!r}: expected an integer.")
    world, rank_, local = values.get("WORLD_SIZE"), values.get("RANK"), values.get("LOCAL_RANK")
    local_world = values.get("LOCAL_WORLD_SIZE", world)
    if world is not None and world < 1:
        problems.append(f"WORLD_SIZE={world}: expected at least 1.")
    if world is not None and rank_ is not None and not 0 <= rank_ < world:
        problems.append(f"RANK={rank_} with WORLD_SIZE={world}: expected 0 <= RANK < WORLD_SIZE.")
    if local is not None and local_world is not None and not 0 <= local < local_world:
        problems.append(f"LOCAL_RANK={local} with LOCAL_WORLD_SIZE={local_world}: expected 0 <= LOCAL_RANK < LOCAL_WORLD_SIZE.")
    if world is not None and local_world is not None and local_world > world:
        problems.append(f"LOCAL_WORLD_SIZE={local_world} with WORLD_SIZE={world}: a node cannot hold more processes than the job.")
    if "MASTER_PORT" in values and not 0 < values["MASTER_PORT"] < 65536:
        problems.append(f"MASTER_PORT={values['MASTER_PORT']}: expected a port in 1..65535.")
    if problems:
        raise ConfigError("\n  - ".join(["torchrun's environment is inconsistent:", *problems]) + f"\n{_FIX}")
    return ProcessInfo(rank=rank_, world_size=world, local_rank=local, local_world_size=local_world)


def _check_backend(backend: str, info: ProcessInfo) -> None:
    where = f"setup_distributed(backend={backend!r})"
    if backend not in BACKENDS:
        raise ConfigError(f"{where}: expected one of {', '.join(BACKENDS)}. Fix: pass 'nccl' on CUDA or 'gloo' on CPU "
                          "(or leave ddp_backend=None to choose).")
    if not torch.distributed.is_available():
        raise UnsupportedOptionError(f"{where}: this torch build has no torch.distributed. Fix: install a torch wheel "
                                     "built with distributed support (the official ones are).")
    if not torch.distributed.is_backend_available(backend):
        raise UnsupportedOptionError(f"{where}: the backend is not available in this torch build"
                                     f"{' (nccl needs CUDA)' if backend == 'nccl' else ''}. Fix: use backend 'gloo' "
                                     "on CPU (ddp_backend='gloo'), or a torch build with that backend.")
    if backend == "nccl" and info.local_rank >= torch.cuda.device_count():
        raise ConfigError(f"{where}: LOCAL_RANK={info.local_rank} but this node has {torch.cuda.device_count()} CUDA "
                          "device(s). Fix: launch at most one process per GPU (--nproc_per_node).")


def setup_distributed(*, backend: str | None = None, timeout: float = 1800, environ: Mapping[str, str] | None = None,
                      use_cpu: bool = False) -> ProcessInfo:
    """Initialise the default process group from ``torchrun``'s environment; return who this process is.

    Without ``torchrun``'s variables (a plain ``python script.py``) nothing is initialised and the
    process is rank 0 of 1. With ``WORLD_SIZE=1`` no group is created either: one process needs no
    collective. When a group already exists it is used as it is.

    Args:
        backend: ``"nccl"``, ``"gloo"``... (HF's ``ddp_backend``); None: nccl when CUDA is available
            (and not ``use_cpu``), else gloo.
        timeout: seconds a collective may wait before failing (HF's ``ddp_timeout``).
        environ: the environment to read (default ``os.environ``).
        use_cpu: train on the CPU even where CUDA is available (gloo by default).

    Returns:
        This process's :class:`ProcessInfo`.

    Raises:
        ConfigError: an inconsistent environment (see :func:`launch_env`), an unknown backend, a
            non-positive timeout, more processes on a node than GPUs.
        UnsupportedOptionError: the backend is not available in this torch build.

    Example:
        >>> setup_distributed(environ={})  # not under torchrun: one process
        ProcessInfo(rank=0, world_size=1, local_rank=0, local_world_size=1)
    """
    if isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or not timeout > 0:
        raise ConfigError(f"setup_distributed(timeout={timeout!r}): expected seconds > 0. Fix: e.g. timeout=1800.")
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return _current()
    info = launch_env(environ)
    if info is None or info.world_size == 1:
        return info or ProcessInfo()
    cuda = torch.cuda.is_available() and not use_cpu
    backend = backend or ("nccl" if cuda else "gloo")
    _check_backend(backend, info)
    if cuda:
        torch.cuda.set_device(info.local_rank)  # before the group: nccl binds each rank to its device
    # env:// reads MASTER_ADDR/PORT itself and joins torchrun's agent store when there is one.
    init = "env://" if environ is None else f"tcp://{environ['MASTER_ADDR']}:{environ['MASTER_PORT']}"
    torch.distributed.init_process_group(
        backend, init_method=init, rank=info.rank,
        world_size=info.world_size, timeout=datetime.timedelta(seconds=timeout))
    global _launched
    _launched = info  # local_rank() and friends answer from the environment setup_distributed read
    return info


def teardown_distributed() -> None:
    """Destroy the default process group, if there is one (call it at the end of a script).

    Every process passes a barrier first: a process that tears its connections down while
    another still finishes a collective makes the other abort.

    Example:
        >>> teardown_distributed()  # no process group: nothing to do
    """
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        if torch.distributed.get_world_size() > 1:
            torch.distributed.barrier()
        torch.distributed.destroy_process_group()
    global _launched
    _launched = None


def _active() -> bool:
    return torch.distributed.is_available() and torch.distributed.is_initialized() and torch.distributed.get_world_size() > 1


_launched: ProcessInfo | None = None  # what setup_distributed read (its `environ`, or os.environ)


def _current() -> ProcessInfo:
    if not (torch.distributed.is_available() and torch.distributed.is_initialized()):
        return ProcessInfo()
    world = torch.distributed.get_world_size()
    if _launched is not None and (_launched.rank, _launched.world_size) == (torch.distributed.get_rank(), world):
        return _launched
    local = int(os.environ.get("LOCAL_RANK", "0"))
    return ProcessInfo(rank=torch.distributed.get_rank(), world_size=world, local_rank=local,
                       local_world_size=int(os.environ.get("LOCAL_WORLD_SIZE", str(world))))


def rank() -> int:
    """This process's global rank (0 without a process group).

    Example:
        >>> rank()  # one process
        0
    """
    return _current().rank


def world_size() -> int:
    """The number of processes (1 without a process group).

    Example:
        >>> world_size()  # one process
        1
    """
    return _current().world_size


def local_rank() -> int:
    """This process's rank on its node (0 without a process group).

    Under a process group it is read from ``torchrun``'s ``LOCAL_RANK`` variable (0 if unset).

    Example:
        >>> local_rank()  # one process
        0
    """
    return _current().local_rank


def is_main_process(*, local: bool = False) -> bool:
    """Whether this process is global rank 0 (``local=True``: rank 0 of its node).

    Example:
        >>> is_main_process()  # one process
        True
    """
    info = _current()
    return (info.local_rank if local else info.rank) == 0


def barrier() -> None:
    """Wait until every process reaches this point (nothing to wait for with one process).

    A collective: every process of the group must call it, or the others wait until the group's
    timeout.

    Example:
        >>> barrier()  # one process: returns at once
    """
    if _active():
        torch.distributed.barrier()


def all_reduce_metrics(metrics: Mapping[str, float], *, op: str = "mean") -> dict[str, float]:
    """Combine per-process numbers into one value per key, the same on every process.

    Args:
        metrics: ``{name: number}``; every process must pass the same keys.
        op: ``"mean"``, ``"sum"``, ``"max"`` or ``"min"``.

    Returns:
        ``{name: combined value}`` (floats); with one process, the values as floats.

    Raises:
        ConfigError: an unknown ``op`` or a value that is not a number.

    Example:
        >>> all_reduce_metrics({"loss": 2, "accuracy": 0.5})
        {'accuracy': 0.5, 'loss': 2.0}
    """
    ops = {"mean": torch.distributed.ReduceOp.SUM, "sum": torch.distributed.ReduceOp.SUM,
           "max": torch.distributed.ReduceOp.MAX, "min": torch.distributed.ReduceOp.MIN}
    if op not in ops:
        raise ConfigError(f"all_reduce_metrics(op={op!r}): expected one of {', '.join(ops)}.")
    names = sorted(metrics)
    try:
        values = torch.tensor([float(metrics[n]) for n in names], dtype=torch.float64)
    except (TypeError, ValueError) as e:
        raise ConfigError(f"all_reduce_metrics: every value must be a number; got {dict(metrics)!r} ({e}).") from e
    if _active():
        backend_device = "cuda" if torch.distributed.get_backend() == "nccl" else "cpu"
        values = values.to(backend_device)
        torch.distributed.all_reduce(values, op=ops[op])
        if op == "mean":
            values /= torch.distributed.get_world_size()
    return dict(zip(names, values.tolist()))


def broadcast_object(obj: Any, *, src: int = 0) -> Any:
    """``obj`` as process ``src`` has it, on every process (e.g. the checkpoint rank 0 chose).

    It travels pickled between the job's own processes (never read from a file).

    A collective: every process calls it; only ``src``'s ``obj`` matters.

    Args:
        obj: a picklable object (on the other processes, any placeholder such as None).
        src: the global rank whose ``obj`` is sent.

    Returns:
        ``src``'s ``obj``; with one process, ``obj`` itself.

    Example:
        >>> broadcast_object({"checkpoint": "out/checkpoint-10"})  # one process: returned as is
        {'checkpoint': 'out/checkpoint-10'}
    """
    if not _active():
        return obj
    box = [obj]
    torch.distributed.broadcast_object_list(box, src=src)
    return box[0]


def _gather_objects(obj: Any) -> list[Any]:
    """Every process's ``obj``, in rank order, on every process."""
    if not _active():
        return [obj]
    out: list[Any] = [None] * torch.distributed.get_world_size()
    torch.distributed.all_gather_object(out, obj)
    return out


def wrap_model(model: nn.Module, *, find_unused_parameters: bool | None = None, bucket_cap_mb: float | None = None,
               broadcast_buffers: bool | None = None, static_graph: bool = False) -> nn.Module:
    """Wrap ``model`` in ``DistributedDataParallel`` when there are several processes; else return it.

    The wrapper broadcasts rank 0's parameters and buffers once, then averages gradients in the
    backward pass. Build the optimizer over ``model``'s parameters (the wrapper shares them) and
    pass the wrapper to :func:`~trainkit.init_state`. The model must be on its device already.

    Args:
        model: the module to train, on ``cuda:LOCAL_RANK`` or the CPU.
        find_unused_parameters: let DDP handle parameters that get no gradient in a step (slower).
            None: transformers' default, True except for a transformers model with activation
            checkpointing (which breaks it); pass False when every parameter gets a gradient.
        bucket_cap_mb: gradient bucket size (DDP's default when None).
        broadcast_buffers: sync buffers from rank 0 at each forward (DDP's default when None).
        static_graph: promise that the set of used parameters never changes (faster).

    Returns:
        The DDP wrapper, or ``model`` itself with one process.

    Example:
        >>> import torch
        >>> net = torch.nn.Linear(2, 2)
        >>> wrap_model(net) is net  # one process: nothing to wrap
        True
    """
    if not _active():
        return model
    if find_unused_parameters is None:
        find_unused_parameters = not (is_pretrained(model) and getattr(model, "is_activation_checkpointing", False))
    options: dict[str, Any] = {"find_unused_parameters": find_unused_parameters, "static_graph": static_graph}
    if bucket_cap_mb is not None:
        options["bucket_cap_mb"] = bucket_cap_mb
    if broadcast_buffers is not None:
        options["broadcast_buffers"] = broadcast_buffers
    device = next((p.device for p in model.parameters()), torch.device("cpu"))
    ids = [device.index if device.index is not None else torch.cuda.current_device()] if device.type == "cuda" else None
    return nn.parallel.DistributedDataParallel(model, device_ids=ids, **options)


def _local_module(model: Any) -> Any:
    """The module inside a DDP wrapper (this process's replica; compiled or not), else ``model``."""
    inner = getattr(model, "_orig_mod", model)  # torch.compile(DDP(model))
    return inner.module if isinstance(inner, nn.parallel.DistributedDataParallel) else model


def _ddp_group(model: Any) -> Any:
    """The process group a DDP-wrapped or FSDP-sharded ``model`` averages gradients over; None otherwise."""
    # torch.compile(DDP(model)) registers the wrapped module as the child "_orig_mod" (read from the
    # children dict: getattr on a plain module that lacks it raises inside nn.Module, a slow path every step).
    model = model._modules.get("_orig_mod", model) if isinstance(model, nn.Module) else model
    if isinstance(model, nn.parallel.DistributedDataParallel):
        return model.process_group
    if is_sharded(model) and _active():
        return torch.distributed.group.WORLD  # shard_model shards over every process
    return None
