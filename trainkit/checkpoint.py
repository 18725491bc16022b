"""Saving and loading models and checkpoint folders.

Files are what the ecosystem reads: a ``transformers`` ``PreTrainedModel`` is written with
``save_pretrained`` (so ``AutoModel*.from_pretrained(folder)`` opens it), a plain ``nn.Module``
as ``model.safetensors`` (``safetensors.torch.save_model`` keeps one copy of tied weights and
records the aliases), the processing class with its own ``save_pretrained``. Nothing is pickled:
trainer state and arguments are JSON, and the optimizer is read back with
``torch.load(weights_only=True)``.

A checkpoint folder is written under a staging name and renamed into place only when complete,
so a folder named ``checkpoint-N`` is never half-written.
"""

from __future__ import annotations

import json
import os
import re
import shutil
from pathlib import Path
from typing import Any

import torch
from torch import nn

from trainkit.errors import CheckpointError

__all__ = ["save_model", "load_model_weights", "write_checkpoint", "list_checkpoints", "rotate_checkpoints"]

PREFIX = "checkpoint"
SAFE_WEIGHTS = "model.safetensors"
_STAGING = ".staging-"


def _is_pretrained(model: nn.Module) -> bool:
    return hasattr(model, "save_pretrained") and hasattr(model, "config")


def save_model(model: nn.Module, directory: str | os.PathLike[str], *, processing_class: Any = None) -> Path:
    """Write ``model`` (and its processing class) into ``directory`` in the ecosystem's formats.

    Args:
        model: a ``PreTrainedModel`` (``save_pretrained``) or any ``nn.Module`` (``model.safetensors``).
        directory: created if missing.
        processing_class: a tokenizer/processor with ``save_pretrained``, or None.

    Returns:
        The directory.

    Example:
        >>> import tempfile, torch
        >>> folder = save_model(torch.nn.Linear(2, 2), tempfile.mkdtemp())
        >>> sorted(p.name for p in folder.iterdir())
        ['model.safetensors']
    """
    from safetensors.torch import save_model as save_safetensors

    folder = Path(directory)
    folder.mkdir(parents=True, exist_ok=True)
    model = getattr(model, "module", model) if hasattr(model, "no_sync") else model  # unwrap DDP
    model = getattr(model, "_orig_mod", model)  # unwrap torch.compile
    if _is_pretrained(model):
        model.save_pretrained(folder)
    else:
        save_safetensors(model, str(folder / SAFE_WEIGHTS), metadata={"format": "pt"})
    if processing_class is not None and hasattr(processing_class, "save_pretrained"):
        processing_class.save_pretrained(folder)
    return folder


def load_model_weights(model: nn.Module, directory: str | os.PathLike[str]) -> None:
    """Load the weights :func:`save_model` wrote in ``directory`` into ``model``, in place.

    Raises:
        CheckpointError: if the folder has no weights, or a tensor is missing or has another shape
            (the message names the first mismatched parameter and both shapes).
    """
    from safetensors.torch import load_file

    path = Path(directory) / SAFE_WEIGHTS
    if not path.is_file():
        raise CheckpointError(f"load_model_weights: {path} does not exist; expected a folder written by save_model.")
    loaded = load_file(str(path))
    own = model.state_dict()
    for name, tensor in loaded.items():
        if name in own and own[name].shape != tensor.shape:
            raise CheckpointError(
                f"load_model_weights: parameter {name!r} has shape {tuple(tensor.shape)} in {path} but "
                f"{tuple(own[name].shape)} in the model: the checkpoint is from a different model."
            )
    result = model.load_state_dict(loaded, strict=False)
    # Tied weights are stored once; a missing key is fine when it aliases a loaded tensor.
    pointers = {t.data_ptr() for n, t in model.state_dict().items() if n in loaded}
    missing = [k for k in result.missing_keys if own[k].data_ptr() not in pointers]
    if missing or result.unexpected_keys:
        raise CheckpointError(
            f"load_model_weights: {path} does not match the model: missing {missing[:5]}, "
            f"unexpected {result.unexpected_keys[:5]}."
        )


def write_checkpoint(
    output_dir: str | os.PathLike[str],
    step: int,
    *,
    model: nn.Module,
    processing_class: Any = None,
    optimizer: torch.optim.Optimizer | None = None,
    trainer_state: Any = None,
    args_json: str | None = None,
) -> Path:
    """Write ``output_dir/checkpoint-{step}`` atomically: staged, then renamed into place.

    Returns:
        The committed checkpoint folder.
    """
    root = Path(output_dir)
    root.mkdir(parents=True, exist_ok=True)
    final = root / f"{PREFIX}-{step}"
    staging = root / f"{_STAGING}{PREFIX}-{step}"
    shutil.rmtree(staging, ignore_errors=True)
    save_model(model, staging, processing_class=processing_class)
    if optimizer is not None:
        torch.save(optimizer.state_dict(), staging / "optimizer.pt")
    if trainer_state is not None:
        trainer_state.save_to_json(str(staging / "trainer_state.json"))
    if args_json is not None:
        (staging / "training_args.json").write_text(args_json)
    if final.exists():
        shutil.rmtree(final)
    os.replace(staging, final)
    return final


def list_checkpoints(output_dir: str | os.PathLike[str]) -> list[Path]:
    """The committed ``checkpoint-N`` folders of ``output_dir``, oldest (smallest N) first."""
    root = Path(output_dir)
    if not root.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in root.iterdir() if p.is_dir() and (m := re.fullmatch(rf"{PREFIX}-(\d+)", p.name))]
    return [p for _, p in sorted(found)]


def rotate_checkpoints(output_dir: str | os.PathLike[str], *, limit: int | None, keep: str | os.PathLike[str] | None = None) -> list[Path]:
    """Delete the oldest checkpoints beyond ``limit``, never the one at ``keep`` (the best).

    Follows ``transformers``: with a best checkpoint and ``limit == 1``, two are kept (the best
    and the newest) so training can still resume.

    Returns:
        The deleted folders.
    """
    if not limit or limit <= 0:
        return []
    checkpoints = list_checkpoints(output_dir)
    best = Path(keep).resolve() if keep else None
    if best is not None and limit == 1 and checkpoints and checkpoints[-1].resolve() != best:
        limit = 2
    excess = len(checkpoints) - limit
    doomed = [p for p in checkpoints if p.resolve() != best][: max(excess, 0)]
    for path in doomed:
        shutil.rmtree(path)
    return doomed


def read_json(path: str | os.PathLike[str]) -> Any:
    """Read a JSON file of a checkpoint."""
    return json.loads(Path(path).read_text())
