"""Atomic files and resumable checkpoints, with safetensors and JSON only (never pickle).

A checkpoint is any nested structure of dicts, lists, tensors, numbers, strings and None, such as
``{"head": module.state_dict(), "optim": optimizer.state_dict(), "rng": generator.get_state()}``.
:func:`save_checkpoint` stores the tensors in ``state.safetensors`` and the rest, with a pointer
to each tensor, in ``state.json``; :func:`load_checkpoint` rebuilds the structure. The folder is
written beside its final place and renamed into it, so a crash never leaves half a checkpoint.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

_TENSOR = "__tensor__"
_TUPLE = "__tuple__"
_INTKEYS = "__intkeys__"


def atomic_write_text(path: str | Path, text: str) -> None:
    """Write ``text`` to ``path`` through a temporary file and an atomic rename."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_json(path: str | Path, obj: Any) -> None:
    """JSON-dump ``obj`` (indented) to ``path`` atomically."""
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=False) + "\n")


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


def save_checkpoint(path: str | Path, state: dict[str, Any]) -> None:
    """Write ``state`` into the folder ``path`` (replacing an older checkpoint atomically)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tensors: dict[str, torch.Tensor] = {}
    meta = _flatten(state, tensors, "state")
    tmp = Path(tempfile.mkdtemp(dir=path.parent, prefix=f".{path.name}."))
    try:
        save_file(tensors, str(tmp / "state.safetensors"))
        (tmp / "state.json").write_text(json.dumps(meta), encoding="utf-8")
        old = path.with_name(path.name + ".old")
        if path.exists():
            shutil.rmtree(old, ignore_errors=True)
            os.replace(path, old)
        os.replace(tmp, path)
        shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    """Read a folder written by :func:`save_checkpoint`."""
    path = Path(path)
    if not (path / "state.json").is_file():
        old = path.with_name(path.name + ".old")  # a crash between the two renames leaves only .old
        if (old / "state.json").is_file():
            path = old
        else:
            raise FileNotFoundError(f"no checkpoint in {path}")
    tensors = load_file(str(path / "state.safetensors"))
    return _unflatten(json.loads((path / "state.json").read_text(encoding="utf-8")), tensors)
