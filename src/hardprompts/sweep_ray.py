"""The Ray backend of ``hardprompts sweep``: every cell of the grid is one Ray task.

Ray is an optional extra (``pip install "hardprompts[ray]"``). The driver (the process running
``hardprompts sweep --backend ray``) plans the grid, checks that every Ray node that can run a
cell sees the sweep folder, and submits one task per unfinished cell with the declared
resources (``num_cpus``, ``num_gpus``); Ray runs them in parallel as the cluster allows.

The sweep folder is the single source of truth, exactly as for the local backend: a cell runs
through :func:`hardprompts.sweep.run_cell` under its lock file, so a finished cell is skipped, an
interrupted one resumes from its checkpoint, and two processes never write one cell at once.
Killing the driver and running the same command again continues the sweep. (When the driver
dies, Ray ends the tasks it owned; should one outlive it, the lock makes the new sweep wait for
it instead of writing beside it.)

A task runs in the driver's working directory (it must exist at the same path on every node:
run the driver from shared storage, or give absolute paths), with one torch thread per CPU it
declared. A cell that fails is reported with its folder and its traceback is written to
``<cell>/error.log``; the other cells go on. A worker that dies (out of memory, a node lost) is
retried once by Ray, resuming from the cell's checkpoint.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import traceback
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from hardprompts.checkpoint import atomic_write_text
from hardprompts.errors import ConfigError, HardpromptsError
from hardprompts.progress import GridProgress
from hardprompts.sweep import Cell, CellOutcome, lock_holder, run_cell, write_plan

__all__ = ["INSTALL_HINT", "import_ray", "run_cells_on_ray"]

INSTALL_HINT = 'pip install "hardprompts[ray]"  (or: pip install "ray>=2.9")'
#: environment variables forwarded to the workers of a cluster given by --address
FORWARDED_ENV_PREFIXES = ("HARDPROMPTS_", "HF_", "TRANSFORMERS_")
#: object store of a Ray started by the sweep on this machine (cells return small dicts)
LOCAL_OBJECT_STORE_BYTES = 256 * 2**20
PROBE_TIMEOUT_S = 120.0


def import_ray():
    """``import ray``, or a ConfigError that says how to install it."""
    try:
        import ray
    except ImportError:
        raise ConfigError(
            f"--backend ray needs Ray, which is not installed; install it with: {INSTALL_HINT}"
        ) from None
    return ray


# ---------------------------------------------------------------------- what a worker runs


def _probe(path: str, token: str) -> dict[str, Any]:
    """On one node: can it read the driver's probe file and write beside it?"""
    from hardprompts._version import __version__

    info: dict[str, Any] = {"host": socket.gethostname(), "version": __version__, "error": None}
    probe = Path(path)
    try:
        if probe.read_text(encoding="utf-8") != token:
            info["error"] = f"{probe} holds another sweep's token (a different folder there)"
            return info
        atomic_write_text(probe.with_name(probe.name + "." + uuid.uuid4().hex), token)
    except OSError as exc:
        info["error"] = f"{type(exc).__name__}: {exc}"
    return info


def _cell_task(config: dict[str, Any], cwd: str, token: str, threads: int) -> dict[str, Any]:
    """On a worker: one cell, in the driver's working directory, with ``threads`` torch threads."""
    import torch

    from hardprompts.config import config_from_dict

    out_dir = Path(cwd, config["out_dir"])
    previous = os.getcwd()
    try:
        os.chdir(cwd)
    except OSError as exc:
        return {
            "status": "failed",
            "error": f"the driver's working directory {cwd} does not exist on {socket.gethostname()}"
            f" ({exc}); run the sweep from a folder every node sees at the same path",
            "log": None,
        }
    log = out_dir / "error.log"
    try:
        torch.set_num_threads(threads)
        cfg = config_from_dict(config, f"sweep cell {config['out_dir']}")
        status, result = run_cell(cfg, token=token)
        log.unlink(missing_ok=True)
        return {"status": status, "result": result}
    except Exception as exc:
        message = str(exc) if isinstance(exc, HardpromptsError) else f"{type(exc).__name__}: {exc}"
        try:
            atomic_write_text(log, traceback.format_exc())
        except OSError:
            log = None
        return {"status": "failed", "error": message, "log": None if log is None else str(log)}
    finally:
        os.chdir(previous)


# ---------------------------------------------------------------------- the driver


def _connect(ray, address: str | None) -> bool:
    """Start or join Ray unless this process already did; True when this call started it."""
    if ray.is_initialized():
        return False
    # Workers' output stays in Ray's logs (session_latest/logs): the grid's bar is the display,
    # and a failed cell's traceback is in its folder.
    kwargs: dict[str, Any] = {"include_dashboard": False, "log_to_driver": False}
    if address is None:  # a new Ray on this machine, with all its CPUs and GPUs
        kwargs.update(address="local", object_store_memory=LOCAL_OBJECT_STORE_BYTES)
    else:
        env = {k: v for k, v in os.environ.items() if k.startswith(FORWARDED_ENV_PREFIXES)}
        kwargs.update(address=address, runtime_env={"env_vars": env} if env else None)
    try:
        ray.init(**kwargs)
    except (ConnectionError, RuntimeError, ValueError) as exc:
        raise ConfigError(
            f"--address {address}: could not connect to a Ray cluster ({exc}); start one with "
            "`ray start --head` (see docs/guides/ray.md) or leave --address out for a local Ray"
        ) from None
    return True


def _check_storage(ray, root: Path, cpus: float, gpus: float) -> None:
    """Every alive node with room for a cell reads a token the driver wrote and writes beside it."""
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    from hardprompts._version import __version__

    nodes = [
        n
        for n in ray.nodes()
        if n.get("Alive")
        and n["Resources"].get("CPU", 0) >= cpus
        and n["Resources"].get("GPU", 0) >= gpus
    ]
    if not nodes:
        have = [
            f"{n.get('NodeManagerAddress')}: {n['Resources'].get('CPU', 0):g} CPU, "
            f"{n['Resources'].get('GPU', 0):g} GPU"
            for n in ray.nodes()
            if n.get("Alive")
        ]
        raise ConfigError(
            f"no Ray node has the {cpus:g} CPU and {gpus:g} GPU one cell asks for "
            f"(--cpus-per-cell, --gpus-per-cell); nodes: {'; '.join(have) or 'none'}"
        )
    token = uuid.uuid4().hex
    probe = root / f".storage-probe-{token}"
    atomic_write_text(probe, token)
    probe_task = ray.remote(num_cpus=0, max_retries=0)(_probe)
    try:
        refs = {
            probe_task.options(
                scheduling_strategy=NodeAffinitySchedulingStrategy(n["NodeID"], soft=False)
            ).remote(str(probe.resolve()), token): n
            for n in nodes
        }
        problems = []
        for ref, node in refs.items():
            where = node.get("NodeManagerHostname") or node.get("NodeManagerAddress")
            try:
                info = ray.get(ref, timeout=PROBE_TIMEOUT_S)
            except Exception as exc:  # the node could not even import hardprompts, or timed out
                first = str(exc).strip().splitlines()[-1] if str(exc).strip() else ""
                problems.append(
                    f"{where}: the check task failed ({type(exc).__name__}: {first}); is "
                    f"hardprompts {__version__} installed there ({INSTALL_HINT})?"
                )
                continue
            if info["error"]:
                problems.append(f"{where}: {info['error']}")
            elif info["version"] != __version__:
                problems.append(
                    f"{where}: hardprompts {info['version']} is installed, the driver has "
                    f"{__version__}; install the same version on every node"
                )
    finally:
        for path in root.glob(probe.name + "*"):
            path.unlink(missing_ok=True)
    if problems:
        raise ConfigError(
            f"the sweep folder {root.resolve()} must be on storage every Ray node sees at the same "
            "path and can write (a shared file system such as NFS); not so on:\n  "
            + "\n  ".join(problems)
        )


def _running(cells: Sequence[Cell], token: str) -> int:
    """Cells of this sweep whose lock a worker holds now (it wrote this sweep's token there)."""
    return sum((lock_holder(c.out_dir) or {}).get("token") == token for c in cells)


def run_cells_on_ray(
    cells: Sequence[Cell],
    root: Path,
    grid: dict[str, Any],
    *,
    address: str | None = None,
    cpus_per_cell: float = 1.0,
    gpus_per_cell: float = 0.0,
    show_progress: bool = True,
    on_cell=None,
) -> list[CellOutcome]:
    """Run the unfinished cells as Ray tasks; returns every cell's outcome in grid order.

    Args:
        cells: the planned grid (:func:`hardprompts.sweep.plan`).
        root: the sweep folder (on storage every node sees).
        grid: what ``sweep.json`` records besides the cells.
        address: ``None`` starts a Ray on this machine; ``auto`` joins the cluster this machine
            belongs to (``ray start``); ``ray://host:10001`` connects through Ray Client.
            Ignored when this process is already connected (``ray.init`` called before).
        cpus_per_cell, gpus_per_cell: resources of each cell's task (fractions allowed; one torch
            thread per whole CPU).
        show_progress: the grid's bar (done / running / failed / queued).
        on_cell: ``on_cell(cell, status)`` as each cell ends (ran, resumed, skipped, failed).
    """
    if not cpus_per_cell > 0:
        raise ConfigError(f"--cpus-per-cell {cpus_per_cell:g}: give a number of CPUs > 0")
    if not gpus_per_cell >= 0:
        raise ConfigError(f"--gpus-per-cell {gpus_per_cell:g}: give a number of GPUs >= 0")
    ray = import_ray()
    root.mkdir(parents=True, exist_ok=True)
    write_plan(root, cells, grid)
    started_here = _connect(ray, address)
    # A SIGTERM (a job scheduler's stop) ends the sweep like Ctrl-C: pending tasks are cancelled.
    previous_term = signal.getsignal(signal.SIGTERM)
    try:
        signal.signal(signal.SIGTERM, signal.default_int_handler)
    except ValueError:  # not the main thread
        previous_term = None
    try:
        _check_storage(ray, root, cpus_per_cell, gpus_per_cell)
        return _drive(ray, cells, cpus_per_cell, gpus_per_cell, show_progress, on_cell)
    finally:
        if previous_term is not None:
            signal.signal(signal.SIGTERM, previous_term)
        if started_here:
            ray.shutdown()


def _drive(ray, cells, cpus: float, gpus: float, show_progress: bool, on_cell) -> list[CellOutcome]:
    token = uuid.uuid4().hex
    cwd = os.getcwd()
    threads = max(1, int(cpus))
    task = ray.remote(max_retries=1)(_cell_task)
    outcomes: dict[int, CellOutcome] = {}
    pending: dict[Any, int] = {}
    for i, cell in enumerate(cells):
        result_path = cell.out_dir / "result.json"
        if result_path.exists():
            result = json.loads(result_path.read_text(encoding="utf-8"))
            outcomes[i] = CellOutcome(cell, "skipped", result)
            if on_cell:
                on_cell(cell, "skipped")
            continue
        name = f"hardprompts {cell.method} alpha={cell.alpha:g} seed={cell.seed}"
        ref = task.options(num_cpus=cpus, num_gpus=gpus, name=name).remote(
            cell.config.to_dict(), cwd, token, threads
        )
        pending[ref] = i
    done = len(outcomes)
    failed = 0
    with GridProgress(len(cells), enabled=show_progress) as bar:
        try:
            while pending:
                running = _running([cells[i] for i in pending.values()], token)
                bar.update(done, running, failed, len(pending) - running)
                ready, _ = ray.wait(list(pending), num_returns=len(pending), timeout=0.5)
                for ref in ready:
                    i = pending.pop(ref)
                    cell = cells[i]
                    try:
                        reply = ray.get(ref)
                    except Exception as exc:  # the worker died or Ray could not run the task
                        lines = str(exc).strip().splitlines()
                        reply = {
                            "status": "failed",
                            "error": f"{type(exc).__name__}: {lines[0] if lines else ''}",
                            "log": None,
                        }
                    if reply["status"] == "failed":
                        failed += 1
                        outcomes[i] = CellOutcome(cell, "failed", None, reply["error"])
                        log = f" (traceback: {reply['log']})" if reply.get("log") else ""
                        bar.note(f"failed {cell.out_dir}: {reply['error']}{log}")
                    else:
                        done += 1
                        outcomes[i] = CellOutcome(cell, reply["status"], reply["result"])
                    if on_cell:
                        on_cell(cell, outcomes[i].status)
            bar.update(done, 0, failed, 0)
        except BaseException:  # Ctrl-C or SIGTERM: stop the cells still queued or running
            for ref in pending:
                ray.cancel(ref, force=True)
            raise
    return [outcomes[i] for i in range(len(cells))]
