"""Checkpoints that survive crashes and never unpickle untrusted code.

Layout of ``output_dir/checkpoint-N/`` (N = ``progress.step``)::

    config.json, model.safetensors    the model: ``save_pretrained`` for a PreTrainedModel (so
                                       ``AutoModel*.from_pretrained(folder)`` opens it), else
                                       ``model.safetensors`` (tied weights stored once, aliases kept)
    tokenizer files                    the processing class's own ``save_pretrained``, if any
    optimizer.pt                       ``optimizer.state_dict()`` (tensors, numbers, strings only)
    scaler.pt, scheduler.pt            the fp16 grad scaler / opaque LR scheduler state, if any
    trainkit_state.json                Progress, seed, base LRs, precision, format version, extra
    trainer_state.json                 HF ``TrainerState.save_to_json``, if given
    training_args.json                 the arguments as JSON (never a pickle), if given
    manifest.json                      written last: every file's relative path, size, SHA-256,
                                       and a checksum of the list itself

Atomic protocol (``save_checkpoint``, ``write_checkpoint``): everything is written into a fresh
``output_dir/.staging-checkpoint-N-{pid}-{random}`` folder. Then

1. every file is read back, hashed for the manifest and ``fsync``-ed: a rename can reach the
   disk before the data of the files it names (ext4 delayed allocation, XFS), so without this a
   power cut could leave a committed folder of empty or garbage files;
2. ``manifest.json`` is written and ``fsync``-ed, then the staging folder and its subfolders are
   ``fsync``-ed, so their entries (the names of the files) are durable before the rename;
3. an existing ``checkpoint-N`` is moved aside (POSIX cannot rename onto a non-empty folder),
   the staging folder is renamed to ``checkpoint-N`` with ``os.replace`` (atomic), the old one
   is deleted, and ``output_dir`` is ``fsync``-ed so the rename itself is durable before we
   report success (and before rotation deletes older checkpoints).

So a folder named ``checkpoint-N`` is always complete. A kill leaves at most a ``.staging-*``
folder, which :func:`remove_staging` deletes at the start of the next run. (A kill in the
instant between moving an old ``checkpoint-N`` aside and the rename loses that N; the previous
checkpoint is then the latest.) :func:`latest_checkpoint` verifies the manifest of each
candidate, newest first, so a checkpoint damaged afterwards (disk, copy, partial sync) is
detected by size and hash, reported with a :class:`CheckpointWarning`, and skipped. Files not in
the manifest are allowed (a README, a file system's metadata): they are not verified, and
loading reads only the files named above.

Loading never runs code from the folder: see :mod:`trainkit._files` for the threat model and the two
layers that enforce it. Malformed files raise :class:`~trainkit.CheckpointError` naming the file.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import secrets
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import attrs
import torch
from torch import nn

from trainkit._files import (
    FORMAT_VERSION, _fsync_dir, _hash, _is_plain_name, _load_pt, _read_json_file, _read_manifest, _write_manifest,
)
from trainkit._models import unwrap_model
from trainkit.distributed import barrier, is_main_process
from trainkit.sharding import full_state, is_sharded, load_full_state
from trainkit.errors import CheckpointError, CheckpointWarning, ConfigError, TrainkitError, TrainkitWarning
from trainkit.state import Progress, TrainState, init_state

__all__ = [
    "CheckpointWarning", "TrainkitWarning", "save_checkpoint", "load_checkpoint", "verify_checkpoint",
    "latest_checkpoint", "remove_staging", "read_trainer_state", "read_checkpoint_metadata", "save_model",
    "load_model_weights", "write_checkpoint", "list_checkpoints", "rotate_checkpoints", "delete_checkpoint",
]

PREFIX = "checkpoint"
SAFE_WEIGHTS = "model.safetensors"
SAFE_INDEX = "model.safetensors.index.json"
STATE_FILE = "trainkit_state.json"
_STAGING = ".staging-"



# ---- models -------------------------------------------------------------------------------------


def _is_pretrained(model: nn.Module) -> bool:
    return hasattr(model, "save_pretrained") and hasattr(model, "config")


def save_model(model: nn.Module, directory: str | os.PathLike[str], *, processing_class: Any = None) -> Path:
    """Write ``model`` (and its processing class) into ``directory`` in the ecosystem's formats.

    A model sharded with FSDP is gathered first, so the files are those of the unsharded model;
    that is a collective: call it on every process (rank 0 writes).

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
    weights, _, writes = _collect(model, None)
    if writes:
        _save_model(model, Path(directory), processing_class, weights)
    _sync_if_sharded(model)
    return Path(directory)


def _collect(model: nn.Module, optimizer: torch.optim.Optimizer | None) -> tuple[Any, Any, bool]:
    """(weights, optimizer state, whether this process writes). Under FSDP gathering the whole state
    is a collective of every process and rank 0 writes it; otherwise the calling process writes
    (weights None: the model's own)."""
    bare = unwrap_model(model)
    if is_sharded(bare):
        weights, opt_state = full_state(bare, optimizer)
        return weights, opt_state, is_main_process()
    return None, optimizer.state_dict() if optimizer is not None else None, True


def _sync_if_sharded(model: nn.Module) -> None:
    if is_sharded(unwrap_model(model)):  # no process moves on (or reads) before rank 0 has committed
        barrier()


def _save_model(model: nn.Module, folder: Path, processing_class: Any, weights: dict[str, torch.Tensor] | None) -> None:
    from safetensors.torch import save_file
    from safetensors.torch import save_model as save_safetensors

    folder.mkdir(parents=True, exist_ok=True)
    model = unwrap_model(model)
    if _is_pretrained(model):
        model.save_pretrained(folder, **({"state_dict": weights} if weights is not None else {}))
    elif weights is not None:  # gathered copies: no tensor shares memory with another
        save_file({k: v.contiguous() for k, v in weights.items()}, str(folder / SAFE_WEIGHTS), metadata={"format": "pt"})
    else:
        save_safetensors(model, str(folder / SAFE_WEIGHTS), metadata={"format": "pt"})
    if processing_class is not None and hasattr(processing_class, "save_pretrained"):
        processing_class.save_pretrained(folder)
    return folder


def _weight_files(folder: Path) -> list[Path]:
    if (folder / SAFE_WEIGHTS).is_file():
        return [folder / SAFE_WEIGHTS]
    if (folder / SAFE_INDEX).is_file():
        index = _read_json_file(folder / SAFE_INDEX)
        names = sorted(set(index.get("weight_map", {}).values())) if isinstance(index, dict) else []
        if not names or not all(isinstance(n, str) and _is_plain_name(n) for n in names):
            raise CheckpointError(f"{folder / SAFE_INDEX}: malformed weight_map; expected shard file names in the folder.")
        return [folder / n for n in names]
    raise CheckpointError(f"load_model_weights: {folder / SAFE_WEIGHTS} does not exist; expected a folder written by save_model.")


def _read_weights(folder: Path) -> dict[str, torch.Tensor]:
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    loaded: dict[str, torch.Tensor] = {}
    for path in _weight_files(folder):
        try:
            loaded.update(load_file(str(path)))
        except (SafetensorError, OSError, ValueError, RuntimeError) as e:
            raise CheckpointError(f"{path}: not a valid safetensors file ({e}); the checkpoint is damaged.") from e
    return loaded


def _check_weights(model: nn.Module, loaded: dict[str, torch.Tensor], where: Path) -> None:
    """Refuse weights of another model before anything is copied (the model stays untouched)."""
    own = model.state_dict()
    for name, tensor in own.items():  # the model's order: "first" is the first the model declares
        if name in loaded and loaded[name].shape != tensor.shape:
            raise CheckpointError(
                f"load_model_weights: parameter {name!r} has shape {tuple(loaded[name].shape)} in {where} but "
                f"{tuple(tensor.shape)} in the model: the checkpoint is from a different model."
            )
    # Tied weights are stored once; a missing key is fine when it aliases a loaded tensor.
    pointers = {own[n].data_ptr() for n in loaded if n in own}
    missing = [k for k in own if k not in loaded and own[k].data_ptr() not in pointers]
    unexpected = [k for k in loaded if k not in own]
    if missing or unexpected:
        raise CheckpointError(
            f"load_model_weights: {where} does not match the model: missing {missing[:5]}, unexpected {unexpected[:5]}."
        )


def load_model_weights(model: nn.Module, directory: str | os.PathLike[str]) -> None:
    """Load the weights :func:`save_model` wrote in ``directory`` into ``model``, in place.

    Tied parameters stay tied (tensors are copied into the existing ones). The model is not
    changed when an error is raised. Under FSDP every process reads the files and keeps its shard
    (a collective).

    Args:
        model: a module of the saved architecture (possibly wrapped); its weights are replaced in place.
        directory: a folder written by :func:`save_model` (or a checkpoint folder): ``model.safetensors``,
            or sharded safetensors files with their ``model.safetensors.index.json``.

    Raises:
        CheckpointError: if the folder has no weights, a weights file is malformed (the message
            names it), or a tensor is missing or has another shape (the message names the first
            mismatched parameter and both shapes).

    Example:
        >>> import tempfile, torch
        >>> model = torch.nn.Linear(2, 2)
        >>> folder = save_model(model, tempfile.mkdtemp())
        >>> fresh = torch.nn.Linear(2, 2)
        >>> load_model_weights(fresh, folder)
        >>> torch.equal(fresh.weight, model.weight)
        True
        >>> load_model_weights(torch.nn.Linear(3, 2), folder)  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        trainkit.errors.CheckpointError: load_model_weights: parameter 'weight' has shape (2, 2) in .../model.safetensors but (2, 3) in the model: the checkpoint is from a different model.
    """
    model = unwrap_model(model)
    folder = Path(directory)
    loaded = _read_weights(folder)
    _check_weights(model, loaded, folder / SAFE_WEIGHTS)
    if is_sharded(model):  # every process reads the files and keeps its shard
        load_full_state(model, None, loaded, None)
    else:
        model.load_state_dict(loaded, strict=False)


# ---- files: hashing, fsync, manifest --------------------------------------------------------------


def verify_checkpoint(path: str | os.PathLike[str]) -> None:
    """Check every file listed in ``path/manifest.json`` against its size and SHA-256.

    Files that the manifest does not list are allowed and ignored (nothing reads them).

    Args:
        path: a ``checkpoint-N`` folder.

    Raises:
        CheckpointError: naming the missing or corrupt manifest, or the first listed file that
            is missing, has another size (truncated) or another hash (altered); also if ``path``
            is not a folder.

    Example:
        >>> import tempfile, torch
        >>> model = torch.nn.Linear(2, 1)
        >>> state = init_state(model, torch.optim.SGD(model.parameters(), lr=0.1))
        >>> path = save_checkpoint(state, tempfile.mkdtemp())
        >>> verify_checkpoint(path)  # every listed file matches: returns None
        >>> with open(path / "optimizer.pt", "ab") as f:
        ...     _ = f.write(b"!")
        >>> verify_checkpoint(path)  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        trainkit.errors.CheckpointError: .../checkpoint-0/optimizer.pt is truncated or extended: ...
    """
    folder = Path(path)
    if not folder.is_dir():
        raise CheckpointError(f"verify_checkpoint: {folder} is not a directory.")
    for entry in _read_manifest(folder):
        file = folder / entry["path"]
        if not file.is_file():
            raise CheckpointError(f"{file} is missing from checkpoint {folder} (listed in its manifest).")
        size = file.stat().st_size
        if size != entry["size"]:
            raise CheckpointError(
                f"{file} is truncated or extended: {size} bytes, the manifest of {folder} says {entry['size']}."
            )
        if _hash(file)[1] != entry["sha256"]:
            raise CheckpointError(f"{file} was altered: its SHA-256 differs from the manifest of {folder}.")


# ---- committing ---------------------------------------------------------------------------------


def _unique_dir(root: Path, stem: str) -> Path:
    """A new empty folder ``root/stem-<random>`` (``os.mkdir`` honours the umask; mkdtemp would make it 0700)."""
    while True:
        path = root / f"{stem}-{secrets.token_hex(4)}"
        try:
            path.mkdir()
            return path
        except FileExistsError:  # pragma: no cover - 1 in 4 billion
            continue


def _commit(output_dir: str | os.PathLike[str], step: int, write: Callable[[Path], None]) -> Path:
    """Run ``write(staging)``, then commit the staging folder as ``checkpoint-{step}`` (module docstring)."""
    if not isinstance(step, int) or isinstance(step, bool) or step < 0:
        raise ConfigError(f"checkpoint step must be a non-negative int; got {step!r}.")
    root = Path(output_dir)
    root.mkdir(parents=True, exist_ok=True)
    final = root / f"{PREFIX}-{step}"
    staging = _unique_dir(root, f"{_STAGING}{PREFIX}-{step}-{os.getpid()}")
    aside = None
    try:
        write(staging)
        _write_manifest(staging)
        if final.exists():
            aside = _unique_dir(root, f"{_STAGING}old-{PREFIX}-{step}-{os.getpid()}")
            os.replace(final, aside / final.name)
        os.replace(staging, final)
    except BaseException:
        # An error or Ctrl-C (not a kill) cleans up after itself and puts a moved-aside checkpoint back;
        # a kill leaves the staging folder for remove_staging.
        if aside is not None and (aside / final.name).exists() and not final.exists():
            os.replace(aside / final.name, final)
        for leftover in (staging, aside):
            if leftover is not None:
                shutil.rmtree(leftover, ignore_errors=True)
        raise
    _fsync_dir(root)
    if aside is not None:
        shutil.rmtree(aside, ignore_errors=True)
    return final


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
    """Write ``output_dir/checkpoint-{step}`` atomically, with a manifest (the Trainer's entry point).

    Like :func:`save_checkpoint` without a :class:`~trainkit.TrainState` (no ``trainkit_state.json``),
    and like it a collective under FSDP.

    Args:
        output_dir: the run's folder; created if missing.
        step: the ``N`` of ``checkpoint-N`` (an existing ``checkpoint-N`` is replaced atomically).
        model: the module to save (see :func:`save_model`).
        processing_class: a tokenizer/processor to save beside the model, or None.
        optimizer: its state is written to ``optimizer.pt``; None writes none.
        trainer_state: a ``transformers.TrainerState`` (written with ``save_to_json``), or None.
        args_json: the training arguments as a JSON string (``training_args.json``), or None.

    Returns:
        The committed checkpoint folder.

    Raises:
        ConfigError: ``step`` is not a non-negative int (nothing is written).

    Example:
        >>> import tempfile, torch
        >>> model = torch.nn.Linear(2, 1)
        >>> path = write_checkpoint(tempfile.mkdtemp(), 5, model=model,
        ...                         optimizer=torch.optim.SGD(model.parameters(), lr=0.1), args_json='{"seed": 0}')
        >>> path.name, sorted(p.name for p in path.iterdir())
        ('checkpoint-5', ['manifest.json', 'model.safetensors', 'optimizer.pt', 'training_args.json'])
    """
    weights, opt_state, writes = _collect(model, optimizer)

    def write(folder: Path) -> None:
        _save_model(model, folder, processing_class, weights)
        if opt_state is not None:
            torch.save(opt_state, folder / "optimizer.pt")
        _write_trainer_files(folder, trainer_state, args_json)

    final = _commit(output_dir, step, write) if writes else Path(output_dir) / f"{PREFIX}-{step}"
    _sync_if_sharded(model)
    return final


def _write_trainer_files(folder: Path, trainer_state: Any, args_json: str | None) -> None:
    if trainer_state is not None:
        trainer_state.save_to_json(str(folder / "trainer_state.json"))
    if args_json is not None:
        (folder / "training_args.json").write_text(args_json, encoding="utf-8")


def save_checkpoint(
    state: TrainState,
    output_dir: str | os.PathLike[str],
    *,
    processing_class: Any = None,
    trainer_state: Any = None,
    args_json: str | None = None,
    extra: dict[str, Any] | None = None,
) -> Path:
    """Write ``output_dir/checkpoint-{state.progress.step}`` atomically (layout and protocol above).

    Call it on one process only under DDP (rank 0), and on every process under FSDP: the sharded
    model and optimizer state are gathered (a collective) and rank 0 writes them in the format of
    an unsharded run, then every process waits for the commit. ``state`` is not consumed.

    Args:
        state: a live state.
        output_dir: the run's folder; created if missing.
        processing_class: a tokenizer/processor to save beside the model, or None.
        trainer_state: a ``transformers.TrainerState`` (written with ``save_to_json``), or None.
        args_json: the training arguments as a JSON string, or None.
        extra: JSON-serialisable values of your loop, stored in ``trainkit_state.json`` under
            ``"extra"`` (read them back with :func:`read_checkpoint_metadata`).

    Returns:
        The committed folder.

    Raises:
        ConfigError: if ``extra`` is not JSON-serialisable (checked before anything is written).
        StaleStateError: if ``state`` was consumed by a step.

    Example:
        >>> import tempfile, torch
        >>> model = torch.nn.Linear(2, 1)
        >>> state = init_state(model, torch.optim.SGD(model.parameters(), lr=0.1), seed=0)
        >>> path = save_checkpoint(state, tempfile.mkdtemp(), extra={"best_metric": 0.5})
        >>> path.name, read_checkpoint_metadata(path)["extra"]
        ('checkpoint-0', {'best_metric': 0.5})
        >>> save_checkpoint(state, path.parent, extra={"loss": float("nan")})
        Traceback (most recent call last):
        trainkit.errors.ConfigError: save_checkpoint(extra=...): must be JSON-serialisable (no pickles in checkpoints); Out of range float values are not JSON compliant: nan.
    """
    model, optimizer, scaler, scheduler = state.model, state.optimizer, state.scaler, state.lr_scheduler
    meta = {
        "format": "trainkit-checkpoint", "version": FORMAT_VERSION, "progress": attrs.asdict(state.progress),
        "seed": state.seed, "base_lrs": list(state.base_lrs), "precision": state.precision,
        "scaler": scaler is not None, "scheduler": scheduler is not None, "extra": extra or {},
    }
    try:
        meta_json = json.dumps(meta, indent=1, allow_nan=False)
    except (TypeError, ValueError) as e:
        raise ConfigError(f"save_checkpoint(extra=...): must be JSON-serialisable (no pickles in checkpoints); {e}.") from e

    weights, opt_state, writes = _collect(model, optimizer)

    def write(folder: Path) -> None:
        _save_model(model, folder, processing_class, weights)
        torch.save(opt_state, folder / "optimizer.pt")
        if scaler is not None:
            torch.save(scaler.state_dict(), folder / "scaler.pt")
        if scheduler is not None:
            torch.save(scheduler.state_dict(), folder / "scheduler.pt")
        (folder / STATE_FILE).write_text(meta_json, encoding="utf-8")
        _write_trainer_files(folder, trainer_state, args_json)

    final = _commit(output_dir, state.progress.step, write) if writes else Path(output_dir) / f"{PREFIX}-{state.progress.step}"
    _sync_if_sharded(model)
    return final


# ---- discovery ----------------------------------------------------------------------------------


def list_checkpoints(output_dir: str | os.PathLike[str]) -> list[Path]:
    """The committed ``checkpoint-N`` folders of ``output_dir``, oldest (smallest N) first.

    Folders are recognised by name alone (nothing is verified; :func:`latest_checkpoint` verifies).

    Args:
        output_dir: the run's folder.

    Returns:
        The folders, sorted by N as a number; empty if ``output_dir`` does not exist.

    Example:
        >>> import os, tempfile, torch
        >>> out = tempfile.mkdtemp()
        >>> for step in (10, 2):
        ...     _ = write_checkpoint(out, step, model=torch.nn.Linear(2, 1))
        >>> [p.name for p in list_checkpoints(out)]  # by step, not by name
        ['checkpoint-2', 'checkpoint-10']
        >>> list_checkpoints(os.path.join(out, "missing"))
        []
    """
    root = Path(output_dir)
    if not root.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in root.iterdir() if p.is_dir() and (m := re.fullmatch(rf"{PREFIX}-(\d+)", p.name))]
    return [p for _, p in sorted(found)]


def latest_checkpoint(output_dir: str | os.PathLike[str]) -> Path | None:
    """The newest (largest N) committed checkpoint of ``output_dir`` whose manifest verifies.

    Each newer checkpoint that fails verification is skipped with a :class:`CheckpointWarning`
    naming it and the bad file. Staging folders are never returned. ``None`` if none verifies.

    Args:
        output_dir: the run's folder.

    Returns:
        The folder, or ``None`` (also when ``output_dir`` does not exist).

    Example:
        >>> import tempfile, warnings, torch
        >>> out = tempfile.mkdtemp()
        >>> latest_checkpoint(out) is None
        True
        >>> paths = [write_checkpoint(out, step, model=torch.nn.Linear(2, 1)) for step in (1, 2)]
        >>> latest_checkpoint(out).name
        'checkpoint-2'
        >>> _ = (paths[1] / "model.safetensors").write_bytes(b"damaged")
        >>> with warnings.catch_warnings(record=True) as caught:
        ...     warnings.simplefilter("always")
        ...     latest_checkpoint(out).name
        'checkpoint-1'
        >>> [w.category.__name__ for w in caught]
        ['CheckpointWarning']
    """
    for path in reversed(list_checkpoints(output_dir)):
        try:
            verify_checkpoint(path)
        except CheckpointError as e:
            warnings.warn(f"skipping checkpoint {path}: {e}", CheckpointWarning, stacklevel=2)
            continue
        return path
    return None


def remove_staging(output_dir: str | os.PathLike[str]) -> list[Path]:
    """Delete the ``.staging-*`` folders a killed save left in ``output_dir``; returns them.

    Call it when no save is in progress (at the start of training, on the saving process).

    Args:
        output_dir: the run's folder (nothing happens if it does not exist).

    Returns:
        The deleted paths, sorted.

    Example:
        >>> import os, tempfile
        >>> out = tempfile.mkdtemp()
        >>> os.mkdir(os.path.join(out, ".staging-checkpoint-4-1234-abcd"))  # what a killed save leaves
        >>> [p.name for p in remove_staging(out)], os.listdir(out)
        (['.staging-checkpoint-4-1234-abcd'], [])
    """
    root = Path(output_dir)
    doomed = sorted(p for p in root.iterdir() if p.name.startswith(_STAGING)) if root.is_dir() else []
    for path in doomed:
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)
        else:
            path.unlink()
    return doomed


def rotate_checkpoints(output_dir: str | os.PathLike[str], *, limit: int | None, keep: str | os.PathLike[str] | None = None) -> list[Path]:
    """Delete the oldest checkpoints beyond ``limit``, never the one at ``keep`` (the best).

    Follows ``transformers``: with a best checkpoint and ``limit == 1``, two are kept (the best
    and the newest) so training can still resume.

    Args:
        output_dir: the run's folder.
        limit: how many checkpoints to keep (HF's ``save_total_limit``); None or <= 0 keeps all.
        keep: the best checkpoint's folder, never deleted; None if there is none.

    Returns:
        The deleted folders (with :func:`delete_checkpoint`), oldest first.

    Example:
        >>> import tempfile, torch
        >>> out = tempfile.mkdtemp()
        >>> paths = [write_checkpoint(out, step, model=torch.nn.Linear(2, 1)) for step in (1, 2, 3, 4)]
        >>> [p.name for p in rotate_checkpoints(out, limit=2, keep=paths[0])]
        ['checkpoint-2', 'checkpoint-3']
        >>> [p.name for p in list_checkpoints(out)]
        ['checkpoint-1', 'checkpoint-4']
        >>> rotate_checkpoints(out, limit=1, keep=paths[0])  # the best and the newest both stay
        []
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
        delete_checkpoint(path)
    return doomed


def delete_checkpoint(path: str | os.PathLike[str]) -> None:
    """Delete a committed checkpoint folder so that a kill midway never leaves a partial ``checkpoint-N``.

    The folder is first renamed to a staging name (atomic), then deleted; what a kill leaves is a
    ``.staging-*`` folder, which :func:`remove_staging` deletes at the next start.

    Args:
        path: a ``checkpoint-N`` folder.

    Raises:
        OSError: if ``path`` does not exist or cannot be moved (e.g. ``FileNotFoundError``).

    Example:
        >>> import os, tempfile, torch
        >>> path = write_checkpoint(tempfile.mkdtemp(), 1, model=torch.nn.Linear(2, 1))
        >>> delete_checkpoint(path)
        >>> path.exists(), os.listdir(path.parent)
        (False, [])
    """
    path = Path(path)
    if not path.is_dir():  # before the staging folder exists: a failed call leaves nothing behind
        raise FileNotFoundError(f"delete_checkpoint: {str(path)!r} is not a checkpoint folder (it does not exist"
                                f"{' as a folder' if path.exists() else ''}). Fix: pass a checkpoint-N folder.")
    doomed = _unique_dir(path.parent, f"{_STAGING}deleted-{path.name}-{os.getpid()}")
    os.replace(path, doomed / path.name)
    _fsync_dir(path.parent)
    shutil.rmtree(doomed)


# ---- safe reading ---------------------------------------------------------------------------------


def read_json(path: str | os.PathLike[str]) -> Any:
    """Read a JSON file of a checkpoint (CheckpointError naming it if missing or malformed)."""
    return _read_json_file(Path(path))


def read_trainer_state(path: str | os.PathLike[str]) -> dict[str, Any]:
    """The ``trainer_state.json`` of checkpoint folder ``path``, as a dict (HF ``TrainerState`` fields).

    Args:
        path: a checkpoint folder written with a ``trainer_state`` (the ``Trainer``'s).

    Returns:
        The JSON object, e.g. ``global_step``, ``log_history``, ``best_model_checkpoint``.

    Raises:
        CheckpointError: the file is missing, is not valid JSON, or is not a JSON object.

    Example:
        >>> import json, os, tempfile
        >>> folder = tempfile.mkdtemp()
        >>> with open(os.path.join(folder, "trainer_state.json"), "w") as f:
        ...     json.dump({"global_step": 3, "log_history": []}, f)
        >>> read_trainer_state(folder)["global_step"]
        3
    """
    data = _read_json_file(Path(path) / "trainer_state.json")
    if not isinstance(data, dict):
        raise CheckpointError(f"{Path(path) / 'trainer_state.json'}: expected a JSON object.")
    return data


def read_checkpoint_metadata(path: str | os.PathLike[str]) -> dict[str, Any]:
    """The ``trainkit_state.json`` of checkpoint folder ``path``: progress, seed, base_lrs, precision, extra.

    Args:
        path: a checkpoint folder written by :func:`save_checkpoint`.

    Returns:
        The JSON object: ``format``, ``version``, ``progress`` (a dict of :class:`~trainkit.Progress`'s
        fields), ``seed``, ``base_lrs``, ``precision``, ``scaler`` and ``scheduler`` (whether those
        files exist) and ``extra``.

    Raises:
        CheckpointError: the file is missing or malformed, is not a trainkit state file, or has a
            format version newer than this trainkit.

    Example:
        >>> import tempfile, torch
        >>> model = torch.nn.Linear(2, 1)
        >>> state = init_state(model, torch.optim.SGD(model.parameters(), lr=0.1), seed=7)
        >>> meta = read_checkpoint_metadata(save_checkpoint(state, tempfile.mkdtemp(), extra={"epoch_loss": 0.25}))
        >>> meta["progress"]["step"], meta["seed"], meta["base_lrs"], meta["precision"], meta["extra"]
        (0, 7, [0.1], 'no', {'epoch_loss': 0.25})
    """
    file = Path(path) / STATE_FILE
    meta = _read_json_file(file)
    if not isinstance(meta, dict) or meta.get("format") != "trainkit-checkpoint" or not isinstance(meta.get("version"), int):
        raise CheckpointError(f"{file}: not a trainkit state file; was {path} written by save_checkpoint?")
    if meta["version"] > FORMAT_VERSION:
        raise CheckpointError(f"{file}: format version {meta['version']} is newer than this trainkit ({FORMAT_VERSION}); upgrade trainkit.")
    return meta


# ---- loading ------------------------------------------------------------------------------------


def load_checkpoint(
    path: str | os.PathLike[str],
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    *,
    schedule: Any = None,
    verify: bool = True,
) -> TrainState:
    """Restore a :func:`save_checkpoint` folder into ``model`` and ``optimizer``; return a live state.

    The next :func:`~trainkit.train_step` on the returned state continues exactly where the saved
    run was: bit for bit on CPU, given the same data and the same ``schedule`` (schedules are
    functions and are not saved: pass the run's schedule again, or a fresh opaque torch
    scheduler over ``optimizer`` whose state is then restored from ``scheduler.pt``).

    The arguments, the metadata, the weights (names and shapes) and the optimizer's groups are
    read and checked before ``model`` and ``optimizer`` are changed; a state dict that passes
    those checks yet is refused by ``load_state_dict`` still raises CheckpointError naming it.

    Args:
        path: a ``checkpoint-N`` folder.
        model: a module of the saved architecture (weights are loaded in place).
        optimizer: a fresh optimizer over ``model``'s parameters, built as in the saved run.
        schedule: as for :func:`~trainkit.init_state`.
        verify: check the manifest first (:func:`verify_checkpoint`).

    Raises:
        CheckpointError: naming the file that is missing, corrupt, malformed or unsafe, or the
            first parameter whose shape differs from ``model``'s.
        ConfigError: if ``model``, ``optimizer`` or ``schedule`` are unusable (as :func:`~trainkit.init_state`).

    Example:
        >>> import tempfile, torch
        >>> model = torch.nn.Linear(2, 1)
        >>> state = init_state(model, torch.optim.SGD(model.parameters(), lr=0.1), seed=0)
        >>> path = save_checkpoint(state, tempfile.mkdtemp())
        >>> path.name, sorted(p.name for p in path.iterdir())
        ('checkpoint-0', ['manifest.json', 'model.safetensors', 'optimizer.pt', 'trainkit_state.json'])
        >>> fresh = torch.nn.Linear(2, 1)
        >>> resumed = load_checkpoint(path, fresh, torch.optim.SGD(fresh.parameters(), lr=0.1))
        >>> resumed.progress.step, resumed.seed, torch.equal(fresh.weight, model.weight)
        (0, 0, True)
    """
    folder = Path(path)
    if verify:
        verify_checkpoint(folder)
    meta = read_checkpoint_metadata(folder)
    state_file = folder / STATE_FILE
    try:
        progress = Progress(**meta["progress"])
        base_lrs = tuple(float(lr) for lr in meta["base_lrs"])
        seed, precision, has_scaler, has_scheduler = meta["seed"], meta["precision"], meta["scaler"], meta["scheduler"]
        if not isinstance(seed, int) or precision not in ("no", "bf16", "fp16") or has_scaler != (precision == "fp16"):
            raise ValueError(f"seed={seed!r}, precision={precision!r}, scaler={has_scaler!r}")
    except (KeyError, TypeError, ValueError, TrainkitError) as e:
        raise CheckpointError(f"{state_file}: malformed ({type(e).__name__}: {e}).") from e
    bare = unwrap_model(model)
    weights = _read_weights(folder)
    _check_weights(bare, weights, folder / SAFE_WEIGHTS)
    if len(base_lrs) != len(optimizer.param_groups):
        raise CheckpointError(f"{state_file}: {len(base_lrs)} base learning rates for {len(optimizer.param_groups)} parameter groups.")
    # Validates the caller's arguments (ConfigError) before anything is changed.
    state = init_state(model, optimizer, schedule=schedule, seed=seed, precision=precision, progress=progress)
    if bool(has_scheduler) != (state.lr_scheduler is not None):
        raise CheckpointError(
            f"load_checkpoint: {folder} was saved {'with' if has_scheduler else 'without'} an opaque LR scheduler "
            f"(scheduler.pt) but schedule={type(schedule).__name__} was passed; pass the same kind of schedule as the saved run."
        )
    device = next(bare.parameters(), torch.empty(0)).device
    opt_state = _load_pt(folder / "optimizer.pt", map_location=device)
    _check_optimizer(optimizer, opt_state, folder / "optimizer.pt")
    scaler_state = _load_pt(folder / "scaler.pt") if has_scaler else None
    scheduler_state = _load_pt(folder / "scheduler.pt") if has_scheduler else None

    if is_sharded(bare):  # every process read the whole state; each keeps its shard (a collective)
        try:
            load_full_state(bare, optimizer, weights, opt_state)
        except (KeyError, TypeError, ValueError, RuntimeError) as e:
            raise CheckpointError(f"{folder}: does not fit the sharded model and optimizer ({type(e).__name__}: {e}).") from e
        opt_state = None
    else:
        bare.load_state_dict(weights, strict=False)
    for name, target, saved in (("optimizer.pt", optimizer, opt_state), ("scaler.pt", state.scaler, scaler_state),
                                ("scheduler.pt", state.lr_scheduler, scheduler_state)):
        if saved is not None:
            try:
                target.load_state_dict(saved)
            except (KeyError, TypeError, ValueError, RuntimeError, AttributeError) as e:
                raise CheckpointError(f"{folder / name}: does not fit the {type(target).__name__} ({type(e).__name__}: {e}).") from e
    return state.replace(base_lrs=base_lrs)


def _check_optimizer(optimizer: torch.optim.Optimizer, saved: Any, where: Path) -> None:
    """The checks ``Optimizer.load_state_dict`` makes, done before anything is loaded."""
    groups = saved.get("param_groups") if isinstance(saved, dict) else None
    if not isinstance(groups, list) or not isinstance(saved.get("state"), dict):
        raise CheckpointError(f"{where}: not an optimizer state_dict.")
    own = [len(g["params"]) for g in optimizer.param_groups]
    theirs = [len(g.get("params", ())) if isinstance(g, dict) else -1 for g in groups]
    if own != theirs:
        raise CheckpointError(
            f"{where}: parameter groups of sizes {theirs}, but the optimizer has {own}: build the optimizer as in the saved run."
        )
