"""Atomic files and resumable checkpoints, with safetensors and JSON only (never pickle).

A checkpoint is any nested structure of dicts, lists, tensors, numbers, strings and None, such as
``{"head": module.state_dict(), "optim": optimizer.state_dict(), "rng": generator.get_state()}``.
:func:`save_checkpoint` stores the tensors in ``state.safetensors`` and the rest, with a pointer
to each tensor and the SHA-256 of the tensor file, in ``state.json``; :func:`load_checkpoint`
checks and rebuilds the structure. The folder is written beside its final place and renamed into
it, so a crash never leaves half a checkpoint; the one it replaces is kept as ``<name>.prev``, so a
checkpoint damaged later (a full disk, a copy cut short) still leaves the previous one to resume
from.

Every file is written through a temporary file and an atomic rename, with the permissions the
user's umask gives a new file (``tempfile`` alone would make them 0600).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from hardprompts.errors import CheckpointError, ConfigError

_TENSOR = "__tensor__"
_TUPLE = "__tuple__"
_INTKEYS = "__intkeys__"
_FORMAT = "hardprompts-checkpoint/2"
PREVIOUS_SUFFIX = ".prev"
_LEGACY_SUFFIX = ".old"  # what a crash between two renames left behind before .prev existed


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _apply_umask(path: str | Path, *, directory: bool = False) -> None:
    os.chmod(path, (0o777 if directory else 0o666) & ~_umask())


@contextlib.contextmanager
def atomic_path(path: str | Path, suffix: str = ".tmp") -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on success it is renamed onto ``path``.

    The file gets the mode a plain ``open(path, "w")`` would give (the umask's). On an exception
    the temporary file is removed and ``path`` is left as it was.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=suffix)
    os.close(fd)
    try:
        yield Path(tmp)
        _apply_umask(tmp)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_text(path: str | Path, text: str) -> None:
    """Write ``text`` to ``path`` through a temporary file and an atomic rename."""
    with atomic_path(path) as tmp, tmp.open("w", encoding="utf-8") as fh:
        fh.write(text)
        fh.flush()
        os.fsync(fh.fileno())


def atomic_write_json(path: str | Path, obj: Any) -> None:
    """JSON-dump ``obj`` (indented) to ``path`` atomically."""
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=False) + "\n")


def check_writable_dir(path: str | Path, what: str) -> Path:
    """Raise :class:`ConfigError` unless ``path`` is, or can become, a folder we can write in.

    Nothing is created: the nearest existing ancestor must be a folder that accepts a new file.
    """
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise ConfigError(f"{what} {path} is a file, not a folder; choose a folder")
    probe = path
    while not probe.exists():
        if probe.parent == probe:
            break
        probe = probe.parent
    if not probe.is_dir():
        raise ConfigError(
            f"{what} {path} lies under {probe}, which is a file, not a folder; choose another path"
        )
    try:
        with tempfile.TemporaryFile(dir=probe):
            pass
    except OSError as exc:
        raise ConfigError(
            f"{what} {path}: cannot write in {probe} ({exc.strerror or exc}); choose a folder you "
            "can write to"
        ) from None
    return path


def _flatten(obj: Any, tensors: dict[str, torch.Tensor], prefix: str) -> Any:
    if isinstance(obj, torch.Tensor):
        key = f"t{len(tensors)}"
        tensors[key] = obj.detach().cpu().contiguous()
        return {_TENSOR: key}
    if isinstance(obj, dict):
        if obj and all(isinstance(k, int) for k in obj):  # optimizer state uses int keys
            return {_INTKEYS: [[k, _flatten(v, tensors, f"{prefix}.{k}")] for k, v in obj.items()]}
        for k in obj:
            if not isinstance(k, str):
                raise TypeError(f"checkpoint keys must be str or int, got {k!r} at {prefix}")
        return {k: _flatten(v, tensors, f"{prefix}.{k}") for k, v in obj.items()}
    if isinstance(obj, tuple):
        return {_TUPLE: [_flatten(v, tensors, prefix) for v in obj]}
    if isinstance(obj, list):
        return [_flatten(v, tensors, prefix) for v in obj]
    if obj is None or isinstance(obj, (bool, int, float, str)):
        return obj
    raise TypeError(
        f"cannot checkpoint a {type(obj).__name__} at {prefix}; use tensors, numbers, str, lists, dicts"
    )


def _unflatten(obj: Any, tensors: dict[str, torch.Tensor]) -> Any:
    if isinstance(obj, dict):
        if set(obj) == {_TENSOR}:
            return tensors[obj[_TENSOR]]
        if set(obj) == {_TUPLE}:
            return tuple(_unflatten(v, tensors) for v in obj[_TUPLE])
        if set(obj) == {_INTKEYS}:
            return {int(k): _unflatten(v, tensors) for k, v in obj[_INTKEYS]}
        return {k: _unflatten(v, tensors) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_unflatten(v, tensors) for v in obj]
    return obj


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _fsync(path: Path) -> None:
    with path.open("rb") as fh:
        os.fsync(fh.fileno())


def previous_checkpoint(path: str | Path) -> Path:
    """Where :func:`save_checkpoint` keeps the checkpoint that ``path`` replaced."""
    path = Path(path)
    return path.with_name(path.name + PREVIOUS_SUFFIX)


def has_checkpoint(path: str | Path) -> bool:
    """Whether ``path`` or the previous checkpoint kept beside it exists (intact or not)."""
    path = Path(path)
    return any(
        p.exists()
        for p in (path, previous_checkpoint(path), path.with_name(path.name + _LEGACY_SUFFIX))
    )


def save_checkpoint(path: str | Path, state: dict[str, Any]) -> None:
    """Write ``state`` into the folder ``path``; the checkpoint it replaces becomes ``<path>.prev``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tensors: dict[str, torch.Tensor] = {}
    meta = _flatten(state, tensors, "state")
    tmp = Path(tempfile.mkdtemp(dir=path.parent, prefix=f".{path.name}."))
    try:
        save_file(tensors, str(tmp / "state.safetensors"))
        _fsync(tmp / "state.safetensors")
        doc = {
            "format": _FORMAT,
            "tensors_sha256": _sha256(tmp / "state.safetensors"),
            "state": meta,
        }
        (tmp / "state.json").write_text(json.dumps(doc), encoding="utf-8")
        _fsync(tmp / "state.json")
        for name in ("state.safetensors", "state.json"):
            _apply_umask(tmp / name)
        _apply_umask(tmp, directory=True)
        prev = previous_checkpoint(path)
        if path.exists():
            shutil.rmtree(prev, ignore_errors=True)
            os.replace(path, prev)
        os.replace(tmp, path)
        shutil.rmtree(path.with_name(path.name + _LEGACY_SUFFIX), ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def read_checkpoint(path: str | Path) -> dict[str, Any]:
    """Read and check exactly the folder ``path``; :class:`CheckpointError` names what is wrong."""
    path = Path(path)
    meta_file, tensor_file = path / "state.json", path / "state.safetensors"
    for file in (meta_file, tensor_file):
        if not file.is_file():
            raise CheckpointError(f"{file} is missing")
    try:
        doc = json.loads(meta_file.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise CheckpointError(f"{meta_file} is not valid JSON ({exc})") from None
    if isinstance(doc, dict) and doc.get("format") == _FORMAT:
        if _sha256(tensor_file) != doc.get("tensors_sha256"):
            raise CheckpointError(
                f"{tensor_file} does not match the checksum in {meta_file.name} (truncated or "
                "changed after it was written)"
            )
        meta = doc.get("state")
    else:
        meta = doc  # written before checksums (format 1): the structure itself
    try:
        tensors = load_file(str(tensor_file))
    except Exception as exc:  # safetensors raises its own error type for a damaged file
        raise CheckpointError(f"{tensor_file} cannot be read ({exc})") from None
    try:
        return _unflatten(meta, tensors)
    except (KeyError, TypeError, ValueError) as exc:
        raise CheckpointError(f"{meta_file} does not match {tensor_file.name} ({exc!r})") from None


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    """Read the checkpoint in the folder ``path``, else the previous one kept beside it.

    A crash between :func:`save_checkpoint`'s two renames leaves only the previous one; that is
    read without comment. A damaged latest checkpoint is an error here; the training loop (which
    can say so to the user) decides whether to fall back, with :func:`read_checkpoint`.
    """
    path = Path(path)
    if not path.exists():
        for other in (previous_checkpoint(path), path.with_name(path.name + _LEGACY_SUFFIX)):
            if other.exists():
                return read_checkpoint(other)
        raise CheckpointError(f"no checkpoint in {path}")
    return read_checkpoint(path)
