"""The files of a checkpoint: durable writes, manifests, and reads that never run code.

**Durable.** Every file is ``fsync``-ed, then ``manifest.json`` (each file's relative path, size
and SHA-256, and a checksum of the list) is written and ``fsync``-ed, then the folders; only then
does :mod:`trainkit.checkpoint` rename the staging folder into place.

Threat model for loading: whoever can write the checkpoint folder may put anything in it,
manifest included (the manifest detects accidents, not attackers). Loading must therefore
never run code from it. Weights are read with safetensors (no code), JSON with ``json``, and
every ``.pt`` file in two independent layers: (1) its pickle stream is scanned without being
executed, refusing any global (``GLOBAL``/``INST``) outside torch's own weights-only allowlist
and the opcodes torch.save never writes (``STACK_GLOBAL``, ``EXT*``), so nothing outside that
list can be called; (2) ``torch.load`` is called with ``weights_only=True`` passed explicitly.
``TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD=1`` cannot override an explicit ``weights_only=True`` in torch
2.13: ``torch.load`` reads the variable at each call and applies it only when ``weights_only``
was not passed (``torch/serialization.py``; a test pins this). Layer (1) keeps the guarantee on
a torch whose semantics change, and ignores globals that ``add_safe_globals`` allowed. Malformed
files raise :class:`~trainkit.CheckpointError` naming the file. The process's own code is trusted.
"""

from __future__ import annotations

import hashlib
import json
import os
import pickletools
import zipfile
from pathlib import Path
from typing import Any

import torch

from trainkit.errors import CheckpointError

MANIFEST = "manifest.json"
FORMAT_VERSION = 1
_CHUNK = 1 << 20


def _is_plain_name(name: str) -> bool:
    parts = Path(name).parts
    return bool(parts) and not Path(name).is_absolute() and ".." not in parts and "\\" not in name


def _hash(path: Path, *, sync: bool = False) -> tuple[int, str]:
    """Size and SHA-256 of a file; with ``sync``, also fsync it (its data reaches the disk)."""
    digest, size = hashlib.sha256(), 0
    with open(path, "rb") as f:
        while chunk := f.read(_CHUNK):
            digest.update(chunk)
            size += len(chunk)
        if sync:
            os.fsync(f.fileno())
    return size, digest.hexdigest()


def _fsync_dir(path: Path) -> None:
    if os.name == "nt":  # Windows cannot open a directory; NTFS journals renames.
        return
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    except OSError:  # some file systems (network, FUSE) refuse fsync on a directory
        pass
    finally:
        os.close(fd)


def _write_synced(path: Path, text: str) -> None:
    with open(path, "w", encoding="utf-8") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())


def _files_digest(files: list[dict[str, Any]]) -> str:
    return hashlib.sha256(json.dumps(files, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def _write_manifest(folder: Path) -> Path:
    """Hash and fsync every file under ``folder``, then write and fsync ``manifest.json``."""
    files = []
    for path in sorted(p for p in folder.rglob("*") if p.is_file() and p != folder / MANIFEST):
        size, sha = _hash(path, sync=True)
        files.append({"path": path.relative_to(folder).as_posix(), "size": size, "sha256": sha})
    manifest = {"format": "trainkit-manifest", "version": FORMAT_VERSION, "files": files, "sha256": _files_digest(files)}
    _write_synced(folder / MANIFEST, json.dumps(manifest, indent=1))
    for sub in sorted((p for p in folder.rglob("*") if p.is_dir()), key=lambda p: -len(p.parts)):
        _fsync_dir(sub)
    _fsync_dir(folder)
    return folder / MANIFEST


def _read_manifest(folder: Path) -> list[dict[str, Any]]:
    path = folder / MANIFEST
    if not path.is_file():
        raise CheckpointError(f"{path} is missing: {folder} is not a complete checkpoint.")
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
        files = manifest["files"]
        ok = manifest["format"] == "trainkit-manifest" and isinstance(manifest["version"], int)
        ok = ok and isinstance(files, list) and manifest["sha256"] == _files_digest(files)
        ok = ok and all(
            isinstance(e["path"], str) and _is_plain_name(e["path"])
            and isinstance(e["size"], int) and isinstance(e["sha256"], str)
            for e in files
        )
    except (ValueError, KeyError, TypeError) as e:
        raise CheckpointError(f"{path} is corrupt ({type(e).__name__}: {e}); {folder} cannot be trusted.") from e
    if not ok:
        raise CheckpointError(f"{path} is corrupt (its structure or its own checksum is wrong); {folder} cannot be trusted.")
    if manifest["version"] > FORMAT_VERSION:
        raise CheckpointError(
            f"{path}: manifest version {manifest['version']} is newer than this trainkit ({FORMAT_VERSION}); upgrade trainkit."
        )
    return files


def _read_json_file(path: Path) -> Any:
    if not path.is_file():
        raise CheckpointError(f"{path} is missing.")
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except ValueError as e:
        raise CheckpointError(f"{path} is not valid JSON ({e}).") from e


def _allowed_globals() -> frozenset[str]:
    """torch's own weights-only allowlist (without anything add_safe_globals added)."""
    try:
        from torch._weights_only_unpickler import _get_allowed_globals

        return frozenset(_get_allowed_globals())
    except (ImportError, AttributeError):  # pragma: no cover - a future torch
        kinds = ("Float", "Double", "Half", "BFloat16", "Long", "Int", "Short", "Char", "Byte", "Bool")
        basics = {"collections.OrderedDict", "torch._utils._rebuild_tensor_v2", "torch.Size"}
        return frozenset(basics | {f"torch.{kind}Storage" for kind in kinds})


_REFUSED_OPCODES = {"STACK_GLOBAL", "EXT1", "EXT2", "EXT4"}


def _scan_pickles(path: Path) -> None:
    """Layer 1: read every pickle stream of a torch zip file without executing it."""
    allowed = _allowed_globals()
    try:
        with zipfile.ZipFile(path) as archive:
            pickles = [n for n in archive.namelist() if n.endswith(".pkl")]
            if not any(n.rsplit("/", 1)[-1] == "data.pkl" for n in pickles):
                raise CheckpointError(f"{path}: not a torch.save archive (no data.pkl); refusing to load it.")
            for name in pickles:
                for opcode, arg, _ in pickletools.genops(archive.read(name)):
                    if opcode.name in _REFUSED_OPCODES:
                        raise CheckpointError(f"{path}: pickle opcode {opcode.name}, which torch.save never writes; refusing to load it.")
                    if opcode.name in ("GLOBAL", "INST") and str(arg).replace(" ", ".") not in allowed:
                        raise CheckpointError(
                            f"{path}: refers to {str(arg).replace(' ', '.')}, which is not a tensor or plain value; "
                            f"refusing to unpickle it (the checkpoint may be malicious)."
                        )
    except CheckpointError:
        raise
    except (zipfile.BadZipFile, ValueError, EOFError, KeyError, OSError) as e:
        raise CheckpointError(f"{path}: not a valid torch.save archive ({e}).") from e


def _load_pt(path: Path, map_location: Any = "cpu") -> Any:
    """Load a ``.pt`` file safely (both layers of the module docstring)."""
    if not path.is_file():
        raise CheckpointError(f"{path} is missing.")
    _scan_pickles(path)
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except Exception as e:  # UnpicklingError, RuntimeError, ...: never fall back to an unsafe load
        raise CheckpointError(f"{path}: refused by torch.load(weights_only=True) ({type(e).__name__}: {e}).") from e
