"""What a resumed run must agree on with the run that wrote the checkpoint.

A checkpoint records where training stood as *(epoch, position in the epoch's permutation)*.
That position only means the same thing if the batches are the same: same batch size,
accumulation, world size, dataset length and data seed. :func:`data_fingerprint` captures
these; :func:`check_fingerprint` compares a checkpoint's with the current run's and raises one
error listing every difference, unless the user opts in with ``ignore_data_skip=True`` (then
the resumed run starts its current epoch from the beginning instead of skipping into it).
"""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from trainkit.errors import CheckpointError, ConfigError

__all__ = ["data_fingerprint", "check_fingerprint", "resolve_checkpoint", "SigtermFlag", "stop_on_sigterm"]


def data_fingerprint(*, batch_size: int, gradient_accumulation_steps: int, world_size: int, dataset_length: int | None, seed: int) -> dict[str, Any]:
    """The settings a checkpoint's data position depends on, as a JSON-able dict.

    Example:
        >>> data_fingerprint(batch_size=8, gradient_accumulation_steps=2, world_size=1, dataset_length=100, seed=42)["batch_size"]
        8
    """
    return {
        "batch_size": batch_size,
        "gradient_accumulation_steps": gradient_accumulation_steps,
        "world_size": world_size,
        "dataset_length": dataset_length,
        "data_seed": seed,
    }


def check_fingerprint(saved: dict[str, Any] | None, current: dict[str, Any], *, ignore_data_skip: bool) -> bool:
    """Compare a checkpoint's data fingerprint with the current run's.

    Args:
        saved: the fingerprint stored in the checkpoint (None for a checkpoint without one).
        current: this run's :func:`data_fingerprint`.
        ignore_data_skip: accept differences; the caller then restarts the current epoch.

    Returns:
        True if the saved position can be used (no difference), False if it must be ignored.

    Raises:
        ConfigError: listing every difference, when ``ignore_data_skip`` is False.

    Example:
        >>> fp = data_fingerprint(batch_size=8, gradient_accumulation_steps=1, world_size=1, dataset_length=10, seed=1)
        >>> check_fingerprint(fp, fp, ignore_data_skip=False)
        True
    """
    saved = saved or {}
    differences = [
        f"  {key}: checkpoint {saved.get(key)!r}, now {value!r}" for key, value in current.items() if saved.get(key) != value
    ]
    if not differences:
        return True
    if ignore_data_skip:
        return False
    raise ConfigError(
        "resume_from_checkpoint: the checkpoint's position in the data was recorded with other data settings, so "
        "resuming would not continue the same run:\n" + "\n".join(differences) + "\nRestore those settings, or pass "
        "TrainingArguments(ignore_data_skip=True) to resume the weights and optimizer and restart the current epoch."
    )


def resolve_checkpoint(resume_from_checkpoint: str | bool | Any, output_dir: str | Path, latest: Any) -> Path:
    """The checkpoint folder ``train(resume_from_checkpoint=...)`` means.

    ``True`` is the newest valid checkpoint of ``output_dir`` (``latest(output_dir)``); a path is
    taken as given (and verified when loaded).

    Under torchrun, rank 0 decides and every process gets its answer (or raises its error), so
    all load the same checkpoint even while files change.

    Args:
        resume_from_checkpoint: ``True``, or the path of a checkpoint folder.
        output_dir: the run's folder, searched when ``resume_from_checkpoint`` is ``True``.
        latest: ``output_dir -> folder or None``, e.g. :func:`~trainkit.checkpoint.latest_checkpoint`.

    Returns:
        The checkpoint folder, the same on every process.

    Raises:
        CheckpointError: ``True`` with no valid checkpoint, or a path that is not a folder.

    Example:
        >>> import tempfile, torch
        >>> from trainkit.checkpoint import latest_checkpoint, write_checkpoint
        >>> out = tempfile.mkdtemp()
        >>> resolve_checkpoint(True, out, latest_checkpoint)  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        trainkit.errors.CheckpointError: resume_from_checkpoint=True: no valid checkpoint-N folder in '...'. ...
        >>> path = write_checkpoint(out, 3, model=torch.nn.Linear(2, 1))
        >>> resolve_checkpoint(True, out, latest_checkpoint) == path
        True
        >>> resolve_checkpoint(str(path), out, latest_checkpoint) == path
        True
    """
    from trainkit.distributed import broadcast_object, rank

    try:
        found: Any = _resolve(resume_from_checkpoint, output_dir, latest) if rank() == 0 else None
    except Exception as error:  # noqa: BLE001 - any error on rank 0 must reach every process, or they wait forever
        found = error
    found = broadcast_object(found)
    if isinstance(found, Exception):
        raise found
    return found


def _resolve(resume_from_checkpoint: str | bool | Any, output_dir: str | Path, latest: Any) -> Path:
    if resume_from_checkpoint is True:
        found = latest(output_dir)
        if found is None:
            raise CheckpointError(
                f"resume_from_checkpoint=True: no valid checkpoint-N folder in {str(output_dir)!r}. Train without "
                f"resume_from_checkpoint, or pass the path of a checkpoint folder."
            )
        return Path(found)
    path = Path(resume_from_checkpoint)
    if not path.is_dir():
        raise CheckpointError(
            f"resume_from_checkpoint={str(resume_from_checkpoint)!r}: no such checkpoint folder (the path does not exist"
            f"{'; it is a file' if path.exists() else ''}). Fix: pass a checkpoint-N folder written by trainkit, or "
            f"True for the newest one in output_dir."
        )
    if not (path / "manifest.json").is_file() and not (path / "trainkit_state.json").is_file():
        found = sorted(p.name for p in path.iterdir())[:5]
        raise CheckpointError(
            f"resume_from_checkpoint={str(resume_from_checkpoint)!r}: the folder is not a checkpoint (no manifest.json or "
            f"trainkit_state.json; it holds {found or 'nothing'}). Fix: pass a checkpoint-N folder inside output_dir, or "
            f"True for the newest one."
        )
    return path


class SigtermFlag:
    """Set when SIGTERM arrived; a training loop checks ``requested`` after each step.

    :func:`stop_on_sigterm` makes one and sets it from its signal handler.

    Attributes:
        requested: whether SIGTERM arrived (False until then).

    Example:
        >>> flag = SigtermFlag()
        >>> flag.requested
        False
        >>> flag.requested = True  # what stop_on_sigterm's handler does on SIGTERM
        >>> "stop after this step" if flag.requested else "continue"
        'stop after this step'
    """

    def __init__(self) -> None:
        self.requested = False


@contextlib.contextmanager
def stop_on_sigterm() -> Iterator[SigtermFlag]:
    """While the block runs, SIGTERM sets a flag instead of killing the process.

    A preempted job (a cluster sends SIGTERM first) can then finish its step, commit a checkpoint
    and return normally. The previous handler is restored afterwards. Outside the main thread,
    where Python cannot install handlers, the flag simply never rises.

    Example:
        >>> with stop_on_sigterm() as flag:
        ...     flag.requested
        False
    """
    flag = SigtermFlag()
    if threading.current_thread() is not threading.main_thread():
        yield flag
        return

    def request_stop(signum: int, frame: Any) -> None:
        flag.requested = True

    previous = signal.signal(signal.SIGTERM, request_stop)
    try:
        yield flag
    finally:
        signal.signal(signal.SIGTERM, previous)
