"""Demo training steps per second at several torch thread counts (what ``--threads auto`` rests on).

Runs the demo's own configuration (``hardprompts demo``: PIN, ``builtin:yelp-small`` as policy and
target, the shipped reviews) for ``--steps`` steps per trial, in this one process, switching
``torch.set_num_threads`` between trials and interleaving the thread counts (1, 2, 1, 2, ...) so
that a change in the machine's load hits every count alike. The rate is steps over the summed
``charts/step_seconds`` of ``metrics.jsonl`` (training steps with their dev evaluations; model
loading and the final test scoring are left out). It prints each count's median rate and its ratio
to one thread. On a shared machine absolute rates are noisy; read the ratios, and say how busy the
machine was (the load average is printed).

    python benchmarks/threads.py                      # 1 vs 2 threads, 3 trials of 20 steps each
    python benchmarks/threads.py --threads 1,2,4,8 --trials 5 --steps 30
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
from pathlib import Path

import torch

from hardprompts.demo import demo_config
from hardprompts.runtime import quiet_libraries
from hardprompts.training import run


def trial(steps: int, method: str, threads: int) -> float:
    """Steps per second of one demo run of ``steps`` steps on ``threads`` threads."""
    torch.set_num_threads(threads)
    with tempfile.TemporaryDirectory() as tmp:
        cfg = demo_config(None, method, steps, str(Path(tmp) / "run"))
        run(cfg, show_progress=False)
        lines = (Path(tmp) / "run" / "metrics.jsonl").read_text().splitlines()
        seconds = sum(json.loads(line)["charts/step_seconds"] for line in lines)
    return steps / seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", default="1,2", help="comma-separated thread counts")
    parser.add_argument("--trials", type=int, default=3, help="trials per thread count")
    parser.add_argument("--steps", type=int, default=20, help="training steps per trial")
    parser.add_argument("--method", default="pin", choices=["pin", "rlprompt", "pez"])
    args = parser.parse_args()
    counts = [int(t) for t in args.threads.split(",")]
    print(
        f"demo ({args.method}, builtin:yelp-small), {args.steps} steps per trial, {args.trials} "
        f"trials per count; {os.cpu_count()} CPUs, load average "
        f"{' '.join(f'{x:.1f}' for x in os.getloadavg())} at the start",
        flush=True,
    )
    with quiet_libraries():
        trial(2, args.method, counts[0])  # warm-up: first imports, allocator
        rates: dict[int, list[float]] = {t: [] for t in counts}
        for i in range(args.trials):
            for t in counts:
                rates[t].append(trial(args.steps, args.method, t))
                print(f"  trial {i + 1}, {t} thread(s): {rates[t][-1]:.2f} steps/s", flush=True)
    base = statistics.median(rates[counts[0]])
    for t in counts:
        median = statistics.median(rates[t])
        trials = " ".join(f"{r:.2f}" for r in rates[t])
        print(
            f"{t:>3} thread(s): {median:6.2f} steps/s (trials {trials})  "
            f"ratio to {counts[0]}: {median / base:.2f}"
        )
    print(f"load average at the end: {' '.join(f'{x:.1f}' for x in os.getloadavg())}")


if __name__ == "__main__":
    main()
