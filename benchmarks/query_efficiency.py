"""Target queries to a fixed dev accuracy: (prompt, input) pairs scored by RLPrompt and PIN.

The demo setting (``hardprompts demo``: the built-in model ``builtin:yelp-small`` as policy LM and
causal target, template ``{x} {prompt}``, the shipped demo reviews, each method's demo settings)
is trained step by step; every ``--eval-every`` steps the greedy prompt is scored on dev, and the
run stops when its dev accuracy first reaches ``--level``. What is counted is the target's
training work: the (prompt, input) pairs the reward sent to the target (distinct prompts of a step
× training inputs; with the reward cache on, prompts scored in an earlier step are not sent again).
The dev evaluations are not counted (they are the benchmark's own, the same for every method).

Methods: ``rlprompt-nocache`` (RLPrompt with ``algorithm.reward_cache: false``: every step scores
all its prompts, as the reference code does), ``rlprompt`` (reward cache on) and ``pin``. Each
runs over ``--seeds``; the table gives the median pairs and steps, and the ratio of each method's
median pairs to the cache-off run's. A run that does not reach the level within ``--max-steps``
is counted at ``--max-steps`` and marked.

Reward values do not depend on the cache, so ``rlprompt`` follows the cache-off run's trajectory
(same prompts, same steps); each run also reports the pairs the cache would have sent on its own
trajectory (its distinct prompts × inputs), which for a cache-off run is the cached run's count.

To see what spends the queries, each run also reports, of the prompts the target scored: the
distinct ones, those equal to an already-scored prompt up to case, spaces and punctuation
(``near-dup``), and those one policy token away from an already-scored prompt (``1-token``).

    python benchmarks/query_efficiency.py                       # level 0.8, all three methods
    python benchmarks/query_efficiency.py --level 0.75          # a level reached in a few steps
    python benchmarks/query_efficiency.py --seeds 0,1,2,3,4 --max-steps 600
    python benchmarks/query_efficiency.py --methods pin --set algorithm.replay_capacity=0

Runs are in this process one after another (one torch thread unless ``--threads``). Note that the
algorithms' defaults may change (re-run it after they do; the settings used are printed).
"""

from __future__ import annotations

import argparse
import json
import re
import statistics
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch

from hardprompts.demo import demo_config
from hardprompts.metrics import prompt_scores
from hardprompts.tasks import ClassificationTask, build_task
from hardprompts.training import RunContext, seed_everything

METHODS: dict[str, tuple[str, list[str]]] = {
    "rlprompt-nocache": ("rlprompt", ["algorithm.reward_cache=false"]),
    "rlprompt": ("rlprompt", []),
    "pin": ("pin", []),
}


class CountingTarget:
    """The run's target, counting the (prompt, input) pairs it is asked to score.

    Pairs are counted as the target computes them (identical prompts of one call once)."""

    def __init__(self, target: Any, tokenize: Callable[[str], tuple[int, ...]]) -> None:
        self.target = target
        self.tokenize = tokenize
        self.pairs = 0
        self.prompts = 0
        self.seen: set[str] = set()
        self.seen_norm: set[str] = set()
        self.seen_one_off: set[tuple[int, tuple[int, ...]]] = set()
        self.repeats = self.near_dups = self.one_token = 0

    def __getattr__(self, name: str) -> Any:  # tokenizer, verbalizers, num_classes, ...
        return getattr(self.target, name)

    def score(
        self,
        prompts: Sequence[str],
        texts: Sequence[str],
        progress: Callable[[int], None] | None = None,
    ) -> torch.Tensor:
        distinct = list(dict.fromkeys(p.strip() for p in prompts))
        self.pairs += len(distinct) * len(texts)
        self.prompts += len(distinct)
        for p in distinct:
            norm = re.sub(r"[\W_]+", " ", p.lower()).strip()
            ids = self.tokenize(p)
            one_off = {(i, ids[:i] + ids[i + 1 :]) for i in range(len(ids))}
            if p in self.seen:
                self.repeats += 1
            elif norm in self.seen_norm:
                self.near_dups += 1
            elif one_off & self.seen_one_off:
                self.one_token += 1
            self.seen.add(p)
            self.seen_norm.add(norm)
            self.seen_one_off |= one_off
        return self.target.score(prompts, texts, progress)


def run_one(method: str, seed: int, args, target, task, work: Path) -> dict[str, Any]:
    name, overrides = METHODS[method]
    overrides = [*overrides, f"train.seed={seed}", *args.set]
    config = demo_config(None, name, args.max_steps, str(work / f"{method}-{seed}"), overrides)
    seed_everything(seed)
    train, dev = task.split("train"), task.split("dev")
    tokenizer = target.tokenizer
    counting = CountingTarget(
        target, lambda p: tuple(tokenizer(p, add_special_tokens=False)["input_ids"])
    )
    counted = ClassificationTask(  # the same task, its target counted
        counting,
        template=task.template,
        verbalizers=task.verbalizers,
        splits={"train": train, "dev": dev},
    )
    ctx = RunContext(config, counted, work / f"{method}-{seed}")
    algo = config.algorithm.make(ctx)
    started = time.perf_counter()
    reached, accuracy, prompt, history = None, 0.0, "", []
    for step in range(args.max_steps):
        algo.step(step)
        if (step + 1) % args.eval_every == 0:
            prompts = algo.eval_prompts()
            scores = prompt_scores(prompts, target.score(prompts, dev.texts), dev.labels, 0.0)
            top = max(scores, key=lambda s: s.accuracy)
            accuracy, prompt = top.accuracy, top.prompt
            history.append((step + 1, counting.pairs, accuracy))
            if accuracy >= args.level:
                reached = step + 1
                break
    steps = reached or args.max_steps
    per_step = config.algorithm.prompts_per_step * len(train.texts)
    return {
        "method": method,
        "seed": seed,
        "reached": reached is not None,
        "steps": steps,
        "pairs": counting.pairs,
        "pairs_if_uncached": steps * per_step,  # every sampled prompt on every input
        # what the reward cache would have sent on the same trajectory: each prompt once
        "pairs_if_cached": len(counting.seen) * len(train.texts),
        "prompts_scored": counting.prompts,
        "distinct_prompts": len(counting.seen),
        "repeats": counting.repeats,
        "near_duplicates": counting.near_dups,
        "one_token_from_seen": counting.one_token,
        "dev_accuracy": accuracy,
        "prompt": prompt,
        "seconds": time.perf_counter() - started,
        "history": history,  # (step, pairs so far, greedy prompt's dev accuracy)
        "algorithm": {
            k: v
            for k, v in config.algorithm.model_dump().items()
            if k
            in (
                "name",
                "entropy",
                "reward_cache",
                "replay_capacity",
                "reward_scale",
                "alpha",
                "loss",
                "top_k",
                "token_filter_k",
                "residual_head",
            )
        },
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--level", type=float, default=0.8, help="dev accuracy to reach")
    parser.add_argument("--methods", default=",".join(METHODS))
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--max-steps", type=int, default=150, help="give up after this many")
    parser.add_argument("--eval-every", type=int, default=2, help="steps between dev checks")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--set", action="append", default=[], help="extra config override")
    parser.add_argument("--json", help="write every run's record to this file")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    methods = args.methods.split(",")
    for m in methods:
        if m not in METHODS:
            parser.error(f"--methods: {m!r} is not one of {', '.join(METHODS)}")
    seeds = [int(s) for s in args.seeds.split(",")]

    config = demo_config(None, "pin", 1, "unused")
    task = build_task(config)
    target = task.target
    dev = task.split("dev")
    print(
        f"demo reviews ({len(task.split('train').texts)} train, {len(dev.texts)} dev), "
        f"{config.target.model} as policy LM and target; level: greedy prompt's dev accuracy "
        f">= {args.level}; dev checked every {args.eval_every} steps; at most {args.max_steps} "
        f"steps; {args.threads} thread(s)"
    )
    started = time.perf_counter()
    runs: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="hp-query-eff-") as work:
        for method in methods:
            for seed in seeds:
                r = run_one(method, seed, args, target, task, Path(work))
                runs.append(r)
                mark = "" if r["reached"] else " (not reached)"
                print(
                    f"{method:17s} seed {seed}: {r['steps']:4d} steps{mark}, {r['pairs']:7d} "
                    f"pairs ({r['pairs_if_cached']} with the cache on this trajectory), "
                    f"{r['distinct_prompts']:5d} distinct prompts of "
                    f"{r['prompts_scored']} scored (repeats {r['repeats']}, near-dup "
                    f"{r['near_duplicates']}, 1-token {r['one_token_from_seen']}), dev "
                    f"{r['dev_accuracy']:.3f} {r['prompt']!r}, {r['seconds']:.0f} s",
                    flush=True,
                )
    print(
        f"settings: {json.dumps({m: runs[[r['method'] for r in runs].index(m)]['algorithm'] for m in methods})}"
    )
    base = None
    if "rlprompt-nocache" in methods:
        base = statistics.median(r["pairs"] for r in runs if r["method"] == "rlprompt-nocache")
    print(
        f"{'method':17s} {'median pairs':>12s} {'median steps':>12s} {'reached':>8s} {'ratio':>6s}"
        f" {'cached-equivalent pairs':>24s}"
    )
    for method in methods:
        rs = [r for r in runs if r["method"] == method]
        pairs = statistics.median(r["pairs"] for r in rs)
        steps = statistics.median(r["steps"] for r in rs)
        reached = sum(r["reached"] for r in rs)
        ratio = f"{pairs / base:.3f}" if base else "-"
        cached = statistics.median(r["pairs_if_cached"] for r in rs)
        print(
            f"{method:17s} {pairs:12.0f} {steps:12.0f} {reached:>5d}/{len(rs)} {ratio:>6s} "
            f"{cached:24.0f}"
        )
    print(f"(benchmark wall time {time.perf_counter() - started:.0f} s)")
    if args.json:
        Path(args.json).write_text(json.dumps(runs, indent=1))


if __name__ == "__main__":
    main()
