"""Wall time of an 8-cell sweep: the local backend against a local Ray with 1 and 2 workers.

The grid: PEZ on 16-shot SST-2 (``fsc/`` of ``$HARDPROMPTS_DATA_DIR``, else of the cache that
``hardprompts data fetch sst-2`` fills; ``--data-dir`` points elsewhere) with the built-in model
``builtin:yelp-small`` as the target, α ∈ {0, 1} × split seeds 16-100, 16-13, 16-21, 16-42,
``--steps`` steps per cell (a dev evaluation every 5 steps, the first ``--test-examples`` test
sentences scored at the end: the splits are copied so into a temporary folder, to keep cells
short). Each cell uses one torch thread in
every backend (``--cpus-per-cell 1`` on Ray). The three sweeps run one after another in this
process, each into a fresh folder, and must end in the same result.json values (checked). For
Ray the start of the local cluster is timed apart from the sweep.

What is printed: per backend the sweep's wall time, the mean training time of a cell (its
``wall_seconds``) and the speed-up over the local backend; and the per-cell overhead of the Ray
backend, ``(sweep time with 1 worker − local sweep time) / 8``: submitting the task, starting a
worker process (once per worker: importing torch and transformers) and the worker's loading of
the models, which the local backend also pays but in an already warm process.

    nice -n 10 python benchmarks/sweep_scaling.py               # the numbers in docs/results/benchmarks.md
    python benchmarks/sweep_scaling.py --steps 5 --backends local,ray2   # quick check
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

from hardprompts import datastore
from hardprompts.sweep import run_sweep

REPO = Path(__file__).resolve().parents[1]
SEEDS = ["16-100", "16-13", "16-21", "16-42"]
ALPHAS = [0.0, 1.0]


def default_data_dir() -> Path:
    """``fsc/`` of the data tree, as the library finds it: ``$HARDPROMPTS_DATA_DIR``, else the
    cache that ``hardprompts data fetch`` fills. Nothing is downloaded; absent, the error names the
    fixes."""
    return datastore.require_local("sst-2", "--data-dir")


def make_data(root: Path, fsc: Path, test_examples: int) -> Path:
    """SST-2's few-shot splits of SEEDS and its first ``test_examples`` test sentences."""
    source = fsc / "sst-2"
    for seed in SEEDS:
        (root / seed).mkdir(parents=True)
        for name in ("train.tsv", "dev.tsv"):
            (root / seed / name).write_bytes((source / seed / name).read_bytes())
    lines = (source / "test.tsv").read_text(encoding="utf-8").splitlines()
    (root / "test.tsv").write_text("\n".join(lines[: test_examples + 1]) + "\n", encoding="utf-8")
    return root


def base_config(steps: int, data: Path) -> dict:
    return {
        "task": {"dataset": str(data), "verbalizers": [" terrible", " great"]},
        "target": {"model": "builtin:yelp-small", "kind": "causal", "device": "cpu"},
        "algorithm": {"name": "pez", "prompt_length": 5, "batch_size": 16},
        "train": {"steps": steps, "seed": 0, "eval_every": 5, "checkpoint_every": steps},
    }


def sweep(backend: str, workers: int, steps: int, data: Path, root: Path) -> dict:
    """One sweep; returns its timings and the cells' results."""
    kwargs: dict = {}
    init = 0.0
    if backend == "ray":
        import ray

        t0 = time.perf_counter()
        ray.init(
            address="local",
            num_cpus=workers,
            include_dashboard=False,
            log_to_driver=False,
            object_store_memory=100 * 2**20,
        )
        init = time.perf_counter() - t0
        kwargs = {"backend": "ray", "cpus_per_cell": 1}
    try:
        t0 = time.perf_counter()
        outcomes = run_sweep(
            base_config(steps, data), ["pez"], ALPHAS, SEEDS, root, show_progress=False, **kwargs
        )
        wall = time.perf_counter() - t0
    finally:
        if backend == "ray":
            ray.shutdown()
    bad = [o for o in outcomes if o.status == "failed"]
    if bad:
        raise SystemExit(f"{len(bad)} cells failed, e.g. {bad[0].cell.out_dir}: {bad[0].error}")
    results = {
        str(o.cell.out_dir.relative_to(root)): {
            k: v for k, v in o.result.items() if k not in ("wall_seconds", "config")
        }
        for o in outcomes
    }
    cell_train = statistics.fmean(o.result["wall_seconds"] for o in outcomes)
    return {"init_s": init, "sweep_s": wall, "cell_train_s": cell_train, "results": results}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=10, help="training steps per cell")
    parser.add_argument("--test-examples", type=int, default=200, help="test sentences per cell")
    parser.add_argument(
        "--backends", default="local,ray1,ray2", help="comma-separated: local, ray1, ray2"
    )
    parser.add_argument("--json", type=Path, help="also write the numbers here")
    parser.add_argument(
        "--data-dir",
        type=Path,
        default=None,
        help="the few-shot splits, fsc/ (default: fsc/ of $HARDPROMPTS_DATA_DIR, else of the "
        "`hardprompts data fetch` cache)",
    )
    args = parser.parse_args()
    fsc = args.data_dir or default_data_dir()
    if not (fsc / "sst-2").is_dir():
        raise SystemExit(f"SST-2 splits not found under {fsc}: pass the fsc/ folder to --data-dir")
    torch.set_num_threads(1)  # the local backend's cells: one thread, as each Ray cell
    os.environ["OMP_NUM_THREADS"] = "1"
    os.environ["HF_HUB_DISABLE_PROGRESS_BARS"] = "1"
    runs: dict[str, dict] = {}
    with tempfile.TemporaryDirectory(prefix="sweep-scaling-") as tmp:
        data = make_data(Path(tmp) / "data", fsc, args.test_examples)
        for name in args.backends.split(","):
            backend, workers = ("local", 1) if name == "local" else ("ray", int(name[3:]))
            print(f"{name}: 8 cells of {args.steps} steps ...", file=sys.stderr, flush=True)
            runs[name] = sweep(backend, workers, args.steps, data, Path(tmp) / name)
    reference = next(iter(runs.values()))["results"]
    for name, run in runs.items():
        if run["results"] != reference:
            raise SystemExit(f"{name}: the cells' results differ from the first backend's")
    local = runs.get("local", {}).get("sweep_s")
    print(
        f"8-cell sweep, {args.steps} steps per cell, {args.test_examples} test sentences, "
        "1 torch thread per cell"
    )
    print(f"{'backend':<8} {'ray start s':>11} {'sweep s':>8} {'cell train s':>12} {'speed-up':>9}")
    for name, run in runs.items():
        speedup = f"{local / run['sweep_s']:.2f}x" if local else "-"
        start = f"{run['init_s']:.1f}" if name != "local" else "-"
        print(
            f"{name:<8} {start:>11} {run['sweep_s']:>8.1f} {run['cell_train_s']:>12.2f} "
            f"{speedup:>9}"
        )
    overhead = None
    if local and "ray1" in runs:
        overhead = (runs["ray1"]["sweep_s"] - local) / 8
        print(f"Ray per-cell overhead (ray1 - local) / 8: {overhead:.2f} s")
    print("every backend's cells gave the same results (wall time aside)")
    if args.json:
        summary = {n: {k: v for k, v in r.items() if k != "results"} for n, r in runs.items()}
        args.json.write_text(
            json.dumps(
                {"steps": args.steps, "runs": summary, "ray_overhead_per_cell_s": overhead},
                indent=2,
            )
        )


if __name__ == "__main__":
    main()
