"""``hardprompts sweep``: a grid of method x perplexity weight α x few-shot split seed.

Each cell is an ordinary :func:`hardprompts.training.run` of the base configuration with three
fields set: ``algorithm.name`` (the method), ``algorithm.perplexity_weight`` (α) and
``task.split_seed`` (or, with ``--seed-field train.seed``, the training seed: repeats of a task
that has no split seeds, such as Yelp style transfer); it writes into
``DIR/<method>/alpha=<α>/seed=<seed>/``. Precedence per
cell: base config (YAML < ``--set``) < the grid's three fields < that method's own overrides
(``--method-set pez:algorithm.lr=0.1``). The base config's ``algorithm`` fields are kept for the
cells of the method it names and dropped for the others.

Resumable: a cell whose ``result.json`` exists is skipped; any other cell runs with
``resume="auto"``, so one interrupted after a checkpoint continues from it, and one that never
reached a checkpoint starts afresh. A cell whose saved config differs from the grid's (the
sweep was changed in between) stops with the loop's error naming the fields.

A method without a perplexity term (its config has no ``perplexity_weight`` field, e.g.
``softprompt``) has a single point on the trade-off curve: it runs once per seed, under
``alpha=0``, whatever ``--alphas`` holds.

Backends (``backend=``): ``local`` runs the cells one after another in this process and stops
at the first error; ``ray`` (:mod:`hardprompts.sweep_ray`) runs every cell as a Ray task with
declared resources, in parallel as the cluster allows, reports a failed cell with its folder and
lets the others finish. Either way the sweep folder is the single source of truth: each cell
runs under an exclusive lock on ``<cell>/.lock`` (:func:`run_cell`), so two processes never
write one cell at once (a second sweep, or a worker orphaned by a killed driver, waits for the
lock and then finds the cell finished or resumes it from its checkpoint).
"""

from __future__ import annotations

import copy
import json
import os
import socket
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from hardprompts.checkpoint import atomic_write_json
from hardprompts.config import Config, apply_overrides, config_from_dict
from hardprompts.errors import ConfigError

__all__ = [
    "Cell",
    "cell_dir",
    "format_alpha",
    "parse_alphas",
    "parse_list",
    "parse_method_overrides",
    "plan",
    "run_cell",
    "run_sweep",
]

Status = Literal["ran", "resumed", "skipped", "failed"]
Backend = Literal["local", "ray"]
#: The config fields a sweep's seeds can go into (``seed_field``).
SEED_FIELDS = ("task.split_seed", "train.seed")
#: seconds a cell waits for another process's lock on it before it fails saying who holds it
LOCK_WAIT_S = 60.0


@dataclass(frozen=True)
class Cell:
    """One run of the grid."""

    method: str
    alpha: float
    seed: str
    out_dir: Path
    config: Config


@dataclass(frozen=True)
class CellOutcome:
    """What :func:`run_sweep` did with a cell: its result.json, or (status failed) the error."""

    cell: Cell
    status: Status
    result: dict[str, Any] | None
    error: str | None = None


def parse_list(text: str, what: str) -> list[str]:
    """Comma-separated items, stripped, empty ones dropped; an empty list is a ConfigError."""
    items = [item.strip() for item in text.split(",") if item.strip()]
    if not items:
        raise ConfigError(f"--{what}: give at least one value, comma-separated")
    if len(set(items)) != len(items):
        raise ConfigError(f"--{what}: {text!r} repeats a value")
    return items


def parse_alphas(text: str) -> list[float]:
    """``"0,0.5,1"`` -> [0.0, 0.5, 1.0]; each α must be a number >= 0."""
    alphas = []
    for item in parse_list(text, "alphas"):
        try:
            alpha = float(item)
        except ValueError:
            raise ConfigError(
                f"--alphas: {item!r} is not a number (e.g. --alphas 0,0.5,1)"
            ) from None
        if not alpha >= 0:
            raise ConfigError(f"--alphas: {item!r} is negative; perplexity weights are >= 0")
        alphas.append(alpha)
    if len({format_alpha(a) for a in alphas}) != len(alphas):
        raise ConfigError(f"--alphas: {text!r} repeats a value")
    return alphas


def format_alpha(alpha: float) -> str:
    """Folder form of α: 0, 0.5, 1, 0.001 (``%g``, shortest round-trip)."""
    return f"{alpha:g}" if float(f"{alpha:g}") == alpha else repr(alpha)


def parse_method_overrides(items: Iterable[str], methods: Sequence[str]) -> dict[str, list[str]]:
    """``["pez:algorithm.lr=0.1", ...]`` -> {"pez": ["algorithm.lr=0.1"], ...}."""
    out: dict[str, list[str]] = {m: [] for m in methods}
    for item in items:
        method, sep, override = item.partition(":")
        if not sep or "=" not in override:
            raise ConfigError(
                f"--method-set {item!r}: expected METHOD:KEY=VALUE, e.g. pez:algorithm.lr=0.1"
            )
        if method not in out:
            raise ConfigError(
                f"--method-set {item!r}: {method!r} is not among --methods ({', '.join(methods)})"
            )
        out[method].append(override)
    return out


def _has_perplexity_weight(method: str) -> bool:
    from hardprompts.config import _ALGORITHMS, algorithm_names

    if method not in algorithm_names():
        raise ConfigError(
            f"--methods: unknown method {method!r}; valid methods: {', '.join(algorithm_names())}"
        )
    return "perplexity_weight" in _ALGORITHMS[method].model_fields


def cell_dir(root: Path, method: str, alpha: float, seed: str) -> Path:
    """``root/<method>/alpha=<α>/seed=<seed>``."""
    return Path(root) / method / f"alpha={format_alpha(alpha)}" / f"seed={seed}"


def plan(
    base: dict[str, Any],
    methods: Sequence[str],
    alphas: Sequence[float],
    seeds: Sequence[str],
    root: Path,
    method_overrides: dict[str, list[str]] | None = None,
    seed_field: str = "task.split_seed",
) -> list[Cell]:
    """Every cell of the grid with its validated config (errors surface before anything runs).

    ``seed_field`` is the config field each seed value goes into: ``task.split_seed`` (few-shot
    splits, the default) or ``train.seed`` (repeats of a task without split seeds, e.g. Yelp
    style transfer).
    """
    method_overrides = method_overrides or {}
    if seed_field not in SEED_FIELDS:
        raise ConfigError(
            f"--seed-field {seed_field!r}: choose {' or '.join(SEED_FIELDS)}"
        )
    section, field = seed_field.split(".")
    cells = []
    for method in methods:
        method_alphas = alphas if _has_perplexity_weight(method) else [0.0]
        for alpha in method_alphas:
            for seed in seeds:
                data = copy.deepcopy(base)
                algo = data.get("algorithm") or {}
                algo = dict(algo) if algo.get("name") == method else {}
                algo["name"] = method
                if _has_perplexity_weight(method):
                    algo["perplexity_weight"] = alpha
                data["algorithm"] = algo
                data.setdefault(section, {})[field] = seed
                out = cell_dir(root, method, alpha, seed)
                data["out_dir"] = str(out)
                apply_overrides(data, method_overrides.get(method, []))
                source = f"sweep cell {method} alpha={format_alpha(alpha)} seed={seed}"
                cells.append(Cell(method, alpha, seed, out, config_from_dict(data, source)))
    return cells


def has_checkpoint(out_dir: Path) -> bool:
    """Whether a cell folder holds a checkpoint to resume from (the latest or the previous one)."""
    from hardprompts.checkpoint import has_checkpoint as checkpoint_exists

    return checkpoint_exists(out_dir / "checkpoint")


class _CellLock:
    """An exclusive ``flock`` on ``<cell>/.lock``, released when its process ends however it ends.

    The holder writes ``{"token", "host", "pid", "since"}`` into the file, which tells a waiting
    process who holds it and lets the Ray driver count the cells of its own sweep that run now.
    """

    def __init__(self, out_dir: Path, token: str, wait_s: float) -> None:
        self.path = out_dir / ".lock"
        self.token, self.wait_s = token, wait_s
        self.fd: int | None = None

    def __enter__(self) -> _CellLock:
        import fcntl

        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        deadline = time.monotonic() + self.wait_s
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    os.close(fd)
                    holder = self.path.read_text(encoding="utf-8", errors="replace").strip()
                    raise ConfigError(
                        f"{self.path.parent} is being run by another process ({holder or 'unknown'}"
                        f"); two sweeps must not run the same cells at once. Wait for it to end "
                        "(or stop it) and run the sweep again"
                    ) from None
                time.sleep(0.5)
        holder = {"token": self.token, "host": socket.gethostname(), "pid": os.getpid()}
        holder["since"] = time.time()
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps(holder).encode(), 0)
        self.fd = fd
        return self

    def __exit__(self, *exc: Any) -> None:
        if self.fd is not None:
            os.close(self.fd)  # closing the descriptor releases the lock
            self.fd = None


def lock_holder(out_dir: Path) -> dict[str, Any] | None:
    """What the last holder of a cell's lock wrote (None when unreadable or never locked)."""
    try:
        return json.loads((out_dir / ".lock").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def run_cell(
    config: Config,
    *,
    show_progress: bool = False,
    token: str = "",
    lock_wait_s: float = LOCK_WAIT_S,
) -> tuple[Status, dict[str, Any]]:
    """Run one cell under its lock: skipped when its result.json exists, else resumed or run.

    The check for result.json is made once the lock is held, so a cell another process finished
    meanwhile is not run again. Returns (status, result.json content).
    """
    from hardprompts.training import run

    out_dir = Path(config.out_dir)
    with _CellLock(out_dir, token, lock_wait_s):
        result_path = out_dir / "result.json"
        if result_path.exists():
            return "skipped", json.loads(result_path.read_text(encoding="utf-8"))
        status: Status = "resumed" if has_checkpoint(out_dir) else "ran"
        result = run(config, resume="auto", show_progress=show_progress)
    return status, result


def write_plan(root: Path, cells: Sequence[Cell], grid: dict[str, Any]) -> None:
    """``root/sweep.json``: the grid and the folder of every cell."""
    cell_list = [str(c.out_dir.relative_to(root)) for c in cells]
    atomic_write_json(root / "sweep.json", {**grid, "cells": cell_list})


def run_sweep(
    base: dict[str, Any],
    methods: Sequence[str],
    alphas: Sequence[float],
    seeds: Sequence[str],
    root: str | Path,
    method_overrides: dict[str, list[str]] | None = None,
    *,
    show_progress: bool = True,
    on_cell=None,
    backend: Backend = "local",
    seed_field: str = "task.split_seed",
    **ray_options: Any,
) -> list[CellOutcome]:
    """Run (or skip, or resume) every cell; see the module docstring.

    Args:
        base: the base configuration as a nested dict (YAML with ``--set`` applied).
        methods, alphas, seeds: the grid.
        root: the sweep folder.
        method_overrides: per-method ``KEY=VALUE`` overrides.
        show_progress: show each cell's training bar (local) or the grid's bar (ray).
        on_cell: optional callback ``on_cell(cell, status)``: local, before each cell runs or is
            skipped; ray, when a cell ends (status ran, resumed, skipped or failed).
        backend: ``local`` or ``ray``.
        seed_field: where each seed goes, ``task.split_seed`` or ``train.seed`` (:func:`plan`).
        ray_options: for ``ray``, the keyword arguments of
            :func:`hardprompts.sweep_ray.run_cells_on_ray` (address, cpus_per_cell,
            gpus_per_cell).
    """
    root = Path(root)
    cells = plan(base, methods, alphas, seeds, root, method_overrides, seed_field)
    grid = {
        "methods": list(methods),
        "alphas": list(alphas),
        "seeds": list(seeds),
        "seed_field": seed_field,
        "method_overrides": method_overrides or {},
    }
    if backend == "ray":
        from hardprompts.sweep_ray import run_cells_on_ray

        return run_cells_on_ray(
            cells, root, grid, show_progress=show_progress, on_cell=on_cell, **ray_options
        )
    if backend != "local":
        raise ConfigError(f"--backend {backend!r}: choose local or ray")
    if ray_options:
        raise ConfigError(
            f"{', '.join('--' + k.replace('_', '-') for k in ray_options)} need --backend ray"
        )
    write_plan(root, cells, grid)
    outcomes = []
    for cell in cells:
        result_path = cell.out_dir / "result.json"
        if result_path.exists():
            status: Status = "skipped"
            if on_cell:
                on_cell(cell, status)
            outcomes.append(CellOutcome(cell, status, json.loads(result_path.read_text())))
            continue
        if on_cell:
            on_cell(cell, "resumed" if has_checkpoint(cell.out_dir) else "ran")
        status, result = run_cell(cell.config, show_progress=show_progress)
        outcomes.append(CellOutcome(cell, status, result))
    return outcomes
