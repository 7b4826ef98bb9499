"""Do the methods behave as their papers say? Each claim checked with error bars over split seeds.

Runs, offline, with the project's own model ``builtin:yelp-small`` as the RL policy's LM, the
target and the agent of ``appo``/``search``, on the few-shot splits of SST-2, MR and CR
(``fsc/`` of the data tree: ``$HARDPROMPTS_DATA_DIR``, else the cache that ``hardprompts data
fetch`` fills) and on the demo reviews that ship with the package:

* the manual prompts ``It was``, ``it was`` and the preset's default (the bare causal template
  ``{x} {prompt}`` with an empty prompt), the baseline every table starts with;
* ``rlprompt`` and ``pez`` at perplexity weight α ∈ {0, 0.5, 1, 2} (Patel et al.), ``pin`` at
  α = 0, ``softprompt`` (with its faithfulness figures), ``search`` and ``appo``;
* text style transfer on Yelp (``task.kind: style_transfer``, ``yelp-sentiment``), both
  directions, for ``rlprompt`` and ``pin``, with the built-in reward models (MiniLM content
  similarity, the built-in Yelp style classifier), against manual prompts; the seeds of these
  cells are training seeds (``train.seed``: the Yelp split is fixed).

Every training run is a cell of ``hardprompts sweep`` (:func:`hardprompts.sweep.run_sweep`, one
sweep folder per dataset) and is summarised by ``hardprompts report``
(:func:`hardprompts.report.write_report`, which also draws each dataset's own trade-off plot in
its sweep folder). Resumable: a finished cell is skipped, an interrupted one resumes from its
checkpoint, the manual baseline is stored once per dataset; rerun the same command to continue.

It writes ``benchmarks/results/fidelity.md``, ``fidelity.json`` and ``fidelity_tradeoff.png``
(``--quick``: ``fidelity_quick.*``): per dataset and (method, α) the mean ± sample std over split
seeds of test accuracy (style transfer: test reward, content, style), prompt perplexity, steps and
wall time, the prompts; then one line per
paper claim with the verdict that :func:`verdict` computes from those numbers (the rule is in
:data:`RULE`, printed in the markdown).

    python benchmarks/fidelity.py --quick                 # small grid, a couple of minutes (CI)
    nice -n 10 python benchmarks/fidelity.py              # the full grid (hours on 2 CPU cores)
    python benchmarks/fidelity.py --datasets demo --methods pin,rlprompt   # a subset of the same grid
    python benchmarks/fidelity.py --report-only           # rewrite the results from finished cells

``--datasets``/``--methods``/``--seeds`` run a subset of the *same* cells (same folders, same
configs), so a later full command skips them. The results always cover every finished cell and
list the missing ones.
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import os
import platform
import random
import statistics
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
BUILTIN = "builtin:yelp-small"
DEMO = "demo"
FSC = ("sst-2", "mr", "cr")
MANUAL_PROMPTS = ("It was", "it was", "")  # "" = the preset's default: the bare template
SEEDS = ("16-100", "16-13", "16-21")

#: α of the perplexity sweep (Patel et al.) and the methods swept over it; the others run at α=0.
ALPHAS = (0.0, 0.5, 1.0, 2.0)
ALPHA_METHODS = ("rlprompt", "pez")
SINGLE_METHODS = ("pin", "softprompt", "search", "appo")
METHODS = ALPHA_METHODS + SINGLE_METHODS
#: Style transfer (RLPrompt §4, PIN §5): both Yelp directions (sweep folder -> target style).
STYLE_METHODS = ("rlprompt", "pin")
STYLE_DATASETS = {"yelp-neg2pos": "positive", "yelp-pos2neg": "negative"}
STYLE_SEEDS = ("0", "1", "2")  # training seeds (train.seed): yelp-sentiment has one fixed split
#: Manual style prompts (the first written for the direction), and the null prompt ("").
STYLE_MANUAL = ("Here is the review rewritten to be {style}:", "")
#: The style demo's sampling, sized for a CPU: outputs x bootstraps per input, best of N at eval.
STYLE_SAMPLING = {"num_samples": 8, "num_bootstraps": 2, "eval_num_samples": 8}
#: The built-in reward models (hardprompts demo --task style's): nothing is downloaded.
STYLE_REWARD = {
    "content_model": "builtin:minilm",
    "style_model": "builtin:yelp-style",
    "fluency_model": "lm:builtin:yelp-small",
    "perplexity_model": "lm:builtin:yelp-small",
}

#: Verdict rule constants (see RULE).
Z = 2.0  # a difference is clear when it exceeds Z standard errors
DELTA = 0.02  # accuracies within this of each other (absolute) count as similar
REWARD_DELTA = 2.0  # style-transfer rewards (0-100) within this of each other count as similar


@dataclass(frozen=True)
class Grid:
    """One benchmark grid: which cells exist and how long each method trains."""

    name: str
    datasets: tuple[str, ...]
    seeds: tuple[str, ...]
    alphas: tuple[float, ...]
    alpha_methods: tuple[str, ...]
    single_methods: tuple[str, ...]
    steps: dict[str, int]
    evals: int  # dev evaluations per run (eval_every = steps // evals)
    style_datasets: tuple[str, ...] = ()  # keys of STYLE_DATASETS
    style_seeds: tuple[str, ...] = ()
    style_steps: int = 0
    style_eval_inputs: int = 100  # test inputs of a style cell (sentiment.test.* has 500)


FULL = Grid(
    name="full",
    datasets=(DEMO, *FSC),
    seeds=SEEDS,
    alphas=ALPHAS,
    alpha_methods=ALPHA_METHODS,
    single_methods=SINGLE_METHODS,
    # RL: the demo's 300 steps (PIN's paper: 6,000, RLPrompt's 12,000); PEZ and soft prompt the
    # same number of updates; search draws 50 x 4 = 200 prompts (configs/sst2_search.yaml);
    # APPO 50 PPO steps of 4 prompts.
    steps={"rlprompt": 300, "pin": 300, "pez": 300, "softprompt": 300, "search": 50, "appo": 50},
    evals=10,
    # the style demo's sampling (8 outputs x 2 bootstraps per input, 8 at evaluation) and steps
    style_datasets=tuple(STYLE_DATASETS),
    style_seeds=STYLE_SEEDS,
    style_steps=100,
    style_eval_inputs=100,
)
QUICK = Grid(
    name="quick",
    datasets=(DEMO,),
    seeds=SEEDS[:2],
    alphas=(0.0, 2.0),
    alpha_methods=ALPHA_METHODS,
    single_methods=SINGLE_METHODS,
    steps={"rlprompt": 12, "pin": 12, "pez": 12, "softprompt": 12, "search": 3, "appo": 3},
    evals=2,
    style_datasets=("yelp-neg2pos",),
    style_seeds=STYLE_SEEDS[:2],
    style_steps=3,
    style_eval_inputs=4,
)

#: Settings every cell of a method gets (the rest are the method's paper defaults, see
#: ``hardprompts config --fields``). Chosen before any result was seen; not tuned on the results.
METHOD_SETTINGS: dict[str, dict[str, Any]] = {
    # The demo's choice: start the RL head from the frozen LM's own distribution (short runs).
    "rlprompt": {"algorithm.residual_head": True},
    "pin": {"algorithm.residual_head": True},
    # 5 prompt tokens like the RL methods (PEZ's LM setting: 10), so perplexities compare.
    "pez": {"algorithm.prompt_length": 5},
    "softprompt": {"algorithm.prompt_length": 5},
    # The built-in model as agent: short demonstrations, one line of at most 12 tokens.
    "search": {
        "algorithm.num_demos": 3,
        "algorithm.demo_max_tokens": 40,
        "algorithm.max_prompt_tokens": 12,
        "algorithm.reward_batch_size": None,
        "algorithm.select_top": 10,
    },
    "appo": {
        "algorithm.num_demos": 3,
        "algorithm.demo_max_tokens": 40,
        "algorithm.max_prompt_tokens": 12,
    },
}

RULE = (
    f"Each comparison uses the per-seed values of two cells (test accuracy; log prompt "
    f"perplexity, i.e. the geometric mean; wall seconds for cost). d = mean(A) − mean(B), "
    f"SE = sqrt(s_A²/n_A + s_B²/n_B) with sample std s over split seeds (a manual prompt has "
    f"no training, one value, s = 0). A is *clearly lower* than B when d < −{Z:g}·SE and "
    f"*clearly higher* when d > {Z:g}·SE; otherwise the difference is within noise. Two "
    f"accuracies are *similar* when |d| ≤ {DELTA} (style-transfer rewards, 0–100: "
    f"{REWARD_DELTA:g}) and not clearly different, and *clearly different* when they are "
    f"clearly apart by more than that. A claim is a conjunction of "
    f"such parts: **reproduced** when every part holds, **not reproduced** when any part is "
    f"contradicted by a clear difference the other way, **inconclusive** otherwise (within "
    f"noise, or a cell with fewer than 2 seeds). With 3 seeds this is a coarse test (about a "
    f"two-sided 90% level for Welch's t at 4 degrees of freedom): 'inconclusive' means the "
    f"benchmark cannot tell, not that the claim is false."
)


# ------------------------------------------------------------------------------- the verdicts


@dataclass(frozen=True)
class Part:
    """One comparison of a claim: 'holds', 'contradicted' or 'undecided', with its numbers."""

    text: str
    outcome: str
    detail: str


def _stats(values: Sequence[float]) -> tuple[float, float, int]:
    mean = statistics.fmean(values)
    var = statistics.variance(values) if len(values) > 1 else 0.0
    return mean, var, len(values)


def _diff(a: Sequence[float], b: Sequence[float]) -> tuple[float, float]:
    ma, va, na = _stats(a)
    mb, vb, nb = _stats(b)
    return ma - mb, math.sqrt(va / na + vb / nb)


def _enough(*samples: tuple[Sequence[float], bool]) -> str | None:
    """None when every trained sample has >= 2 seeds, else why not."""
    for values, constant in samples:
        if not values:
            return "a cell has no finished run"
        if not constant and len(values) < 2:
            return "a cell has fewer than 2 seeds"
    return None


def _compare(a, b, b_constant: bool, fmt: str) -> tuple[str | None, float, float, str]:
    """(why no verdict or None, d, SE, "d = … (SE …)") of samples a and b."""
    short = _enough((a, False), (b, b_constant))
    if short:
        return short, math.nan, math.nan, ""
    d, se = _diff(a, b)
    return None, d, se, f"d = {d:+{fmt}} (SE {se:{fmt}})"


def lower(
    name: str, a: Sequence[float], b: Sequence[float], *, b_constant: bool = False, fmt=".3f"
) -> Part:
    """The claim part 'A is lower than B' (directional)."""
    short, d, se, detail = _compare(a, b, b_constant, fmt)
    if short:
        return Part(name, "undecided", short)
    if d < -Z * se:
        return Part(name, "holds", detail)
    if d > Z * se:
        return Part(name, "contradicted", detail)
    return Part(name, "undecided", detail + ", within noise")


def not_higher(name: str, a: Sequence[float], b: Sequence[float], fmt=".3f") -> Part:
    """'A is not higher than B' (falls or holds): holds unless A is clearly higher."""
    short, d, se, detail = _compare(a, b, False, fmt)
    if short:
        return Part(name, "undecided", short)
    return Part(name, "contradicted" if d > Z * se else "holds", detail)


def similar(
    name: str, a: Sequence[float], b: Sequence[float], fmt=".3f", delta: float = DELTA
) -> Part:
    """'A and B are similar' (two-sided): |d| <= delta (accuracies: DELTA) and within noise."""
    short, d, se, detail = _compare(a, b, False, fmt)
    if short:
        return Part(name, "undecided", short)
    if abs(d) <= delta and abs(d) <= Z * se:
        return Part(name, "holds", detail)
    if abs(d) > delta and abs(d) > Z * se:
        return Part(name, "contradicted", detail)
    return Part(name, "undecided", detail)


def negate(part: Part, text: str) -> Part:
    """The opposite claim part (e.g. 'not similar' from 'similar')."""
    flip = {"holds": "contradicted", "contradicted": "holds", "undecided": "undecided"}
    return Part(text, flip[part.outcome], part.detail)


def verdict(parts: Sequence[Part]) -> str:
    """reproduced / not reproduced / inconclusive of a claim made of ``parts`` (see RULE)."""
    outcomes = [p.outcome for p in parts]
    if not outcomes:
        return "inconclusive"
    if "contradicted" in outcomes:
        return "not reproduced"
    if all(o == "holds" for o in outcomes):
        return "reproduced"
    return "inconclusive"


def _log(values: Sequence[float]) -> list[float]:
    return [math.log(v) for v in values]


def claims(dataset: str, runs: dict[tuple[str, float], list[dict]], manual: dict | None) -> list:
    """Every paper claim checkable on one dataset, from its per-seed results.

    ``runs[(method, α)]`` is the list of result.json dicts of the finished seeds; ``manual`` the
    stored manual-prompt accuracies (``{"results": [{"prompt", "test_accuracy"}]}``).
    """

    def vals(method: str, alpha: float, key: str) -> list[float]:
        out = []
        for r in runs.get((method, alpha), []):
            v = r.get(key)
            if isinstance(v, int | float) and math.isfinite(v):
                out.append(float(v))
        return out

    def soft(key: str) -> list[float]:
        out = []
        for r in runs.get(("softprompt", 0.0), []):
            test = (r.get("soft_prompt") or {}).get("test") or {}
            if isinstance(test.get(key), int | float):
                out.append(float(test[key]))
        return out

    lines = []

    def add(claim: str, source: str, parts: list[Part], short: str) -> None:
        lines.append(
            {
                "dataset": dataset,
                "claim": claim,
                "short": short,
                "source": source,
                "verdict": verdict(parts),
                "parts": [p.__dict__ for p in parts],
            }
        )

    acc, ppl = "test_accuracy", "prompt_perplexity"
    add(
        "PIN's prompts are more readable (lower perplexity) than RLPrompt's at similar accuracy",
        "Choi et al. 2024",
        [
            lower(
                "PIN log-perplexity below RLPrompt's (α=0)",
                _log(vals("pin", 0.0, ppl)),
                _log(vals("rlprompt", 0.0, ppl)),
            ),
            similar(
                "PIN and RLPrompt test accuracy similar",
                vals("pin", 0.0, acc),
                vals("rlprompt", 0.0, acc),
            ),
        ],
        "PIN more readable than RLPrompt, similar accuracy",
    )
    for method in ALPHA_METHODS:
        alphas = sorted(a for (m, a) in runs if m == method and a > 0)
        top = alphas[-1] if alphas else max(ALPHAS)
        add(
            f"Perplexity regularisation trades accuracy for readability ({method}, α=0 vs "
            f"α={top:g}): perplexity falls, accuracy falls or holds",
            "Patel et al. 2025",
            [
                lower(
                    f"log-perplexity at α={top:g} below α=0",
                    _log(vals(method, top, ppl)),
                    _log(vals(method, 0.0, ppl)),
                ),
                not_higher(
                    f"test accuracy at α={top:g} not above α=0",
                    vals(method, top, acc),
                    vals(method, 0.0, acc),
                ),
            ],
            f"α trades accuracy for readability ({method})",
        )
    add(
        "Sample-and-select matches APPO on classification at lower cost",
        "StablePrompt audit (METHODS.md 7)",
        [
            similar(
                "search and APPO test accuracy similar",
                vals("search", 0.0, acc),
                vals("appo", 0.0, acc),
            ),
            lower(
                "search wall time below APPO's",
                vals("search", 0.0, "wall_seconds"),
                vals("appo", 0.0, "wall_seconds"),
                fmt=".1f",
            ),
        ],
        "search ≈ APPO, at lower cost",
    )
    manual_accs = [
        r["test_accuracy"]
        for r in (manual or {}).get("results", [])
        if isinstance(r.get("test_accuracy"), int | float)
    ]
    for method in ("rlprompt", "pin", "pez", "softprompt", "search", "appo"):
        name = "tuned accuracy above the best manual one"
        if manual_accs:
            # the manual prompt is not trained: one value, the same for every split seed
            below = lower(name, vals(method, 0.0, acc), [max(manual_accs)], b_constant=True)
            part = negate(below, name)
        else:
            part = Part(name, "undecided", "the manual baseline was not run")
        add(
            f"Tuned prompts ({method}, α=0) beat the best manual prompt",
            "RLPrompt, PIN, PEZ, StablePrompt",
            [part],
            f"{method} beats the best manual prompt",
        )
    add(
        "A soft prompt's nearest-token projection is not faithful to it (the projection's "
        "accuracy differs from the soft prompt's)",
        "Patel et al. 2025",
        [
            negate(
                similar(
                    "soft vs projected test accuracy",
                    soft("soft_accuracy"),
                    soft("projected_accuracy"),
                ),
                "soft and projected test accuracy not similar",
            )
        ],
        "soft prompt's projection not faithful",
    )
    return lines


def style_claims(
    dataset: str, runs: dict[tuple[str, float], list[dict]], manual: dict | None
) -> list[dict]:
    """The style-transfer claims checkable on one direction, from its per-seed results.

    ``runs[(method, 0.0)]``: result.json dicts of the finished seeds; ``manual``: the stored
    manual prompts' test metrics (``{"results": [{"prompt", "reward", ...}]}``).
    """

    def vals(method: str, key: str) -> list[float]:
        return _finite(r.get(key) for r in runs.get((method, 0.0), []))

    def claim(text: str, source: str, parts: list[Part], short: str) -> dict:
        return {
            "dataset": dataset,
            "claim": text,
            "short": short,
            "source": source,
            "verdict": verdict(parts),
            "parts": [p.__dict__ for p in parts],
        }

    ppl, reward = "prompt_perplexity", "test_reward"
    lines = [
        claim(
            "PIN's style-transfer prompts are more readable (lower perplexity) than RLPrompt's "
            "at a similar reward",
            "Choi et al. 2024",
            [
                lower(
                    "PIN log-perplexity below RLPrompt's",
                    _log(vals("pin", ppl)),
                    _log(vals("rlprompt", ppl)),
                ),
                similar(
                    "PIN and RLPrompt test reward similar",
                    vals("pin", reward),
                    vals("rlprompt", reward),
                    fmt=".2f",
                    delta=REWARD_DELTA,
                ),
            ],
            "PIN more readable than RLPrompt, similar reward",
        )
    ]
    manual_rewards = _finite(r.get("reward") for r in (manual or {}).get("results", []))
    for method in STYLE_METHODS:
        name = "tuned test reward above the best manual prompt's"
        if manual_rewards:
            below = lower(
                name, vals(method, reward), [max(manual_rewards)], b_constant=True, fmt=".2f"
            )
            part = negate(below, name)
        else:
            part = Part(name, "undecided", "the manual baseline was not run")
        lines.append(
            claim(
                f"Tuned style-transfer prompts ({method}) beat the best manual prompt",
                "RLPrompt §4, PIN",
                [part],
                f"{method} beats the best manual prompt",
            )
        )
    return lines


# ------------------------------------------------------------------------------- the grid


def data_tree_folder(name: str) -> Path:
    """The data tree's family folder (``fsc/``, ``tst/``) holding preset ``name``, as the library
    finds it (:func:`hardprompts.datastore.find`: ``$HARDPROMPTS_DATA_DIR``, else the cache that
    ``hardprompts data fetch`` fills); where it is absent, the first folder looked in (main()
    then stops with the fixes). Nothing is downloaded."""
    from hardprompts import datastore

    ds = datastore.dataset(name)
    return datastore.find(ds) or datastore.places(ds)[0]


def default_data_dir() -> Path:
    """The few-shot splits: ``fsc/`` of the data tree (:func:`data_tree_folder`)."""
    return data_tree_folder(FSC[0])


def demo_splits(folder: Path, seeds: Sequence[str]) -> Path:
    """The demo reviews re-split per split seed: ``folder/<seed>/{train,dev}.tsv``, ``test.tsv``.

    The shipped demo set has one train/dev split (16 + 16 per class) and 200 test reviews. For
    error bars over split seeds, as for the few-shot presets, the 64 train + dev reviews are
    pooled and re-drawn per seed (per class, half to train, half to dev, shuffled with
    ``random.Random("demo/<seed>")``); test stays the shipped one. Written once, atomically.
    """
    from hardprompts.checkpoint import atomic_write_text
    from hardprompts.demo import DEMO_DATA

    def rows(name: str) -> list[list[str]]:
        with open(DEMO_DATA / name, encoding="utf-8", newline="") as f:
            return list(csv.reader(f, delimiter="\t", quoting=csv.QUOTE_NONE))

    def tsv(header: list[str], body: list[list[str]]) -> str:
        return "".join("\t".join(r) + "\n" for r in [header, *body])

    train, dev, test = rows("train.tsv"), rows("dev.tsv"), rows("test.tsv")
    header, pool = train[0], train[1:] + dev[1:]
    if not (folder / "test.tsv").exists():
        atomic_write_text(folder / "test.tsv", tsv(test[0], test[1:]))
    for seed in seeds:
        if (folder / seed / "dev.tsv").exists():
            continue
        rng = random.Random(f"demo/{seed}")
        new_train, new_dev = [], []
        for label in sorted({r[1] for r in pool}):
            group = [r for r in pool if r[1] == label]
            rng.shuffle(group)
            half = len(group) // 2
            new_train += group[:half]
            new_dev += group[half:]
        rng.shuffle(new_train)
        rng.shuffle(new_dev)
        atomic_write_text(folder / seed / "train.tsv", tsv(header, new_train))
        atomic_write_text(folder / seed / "dev.tsv", tsv(header, new_dev))
    return folder


def base_config(dataset: str, work: Path, data_dir: Path, seeds: Sequence[str]) -> dict[str, Any]:
    """The config every cell of ``dataset`` starts from (the sweep sets method, α, split seed)."""
    if dataset == DEMO:
        task = {
            "dataset": str(demo_splits(work / "data" / "demo-reviews", seeds)),
            "template": "{x} {prompt}",
            "verbalizers": [" terrible", " great"],
        }
    else:  # the preset's causal template "{x} {prompt}" and " terrible" / " great"
        task = {"dataset": dataset, "data_dir": str(data_dir)}
    return {
        "task": task,
        "target": {"model": BUILTIN, "kind": "causal"},
        # policy.model: the RL policy's frozen LM (and, from issue 12 on, the agent of appo/search)
        "policy": {"model": BUILTIN, "prompt_length": 5},
        "train": {"seed": 0},
    }


def default_tst_dir() -> Path:
    """The style-transfer corpora: ``tst/`` of the data tree (:func:`data_tree_folder`)."""
    return data_tree_folder("yelp-sentiment")


def style_base_config(grid: Grid, dataset: str, tst_dir: Path) -> dict[str, Any]:
    """The config every style-transfer cell of ``dataset`` (a key of STYLE_DATASETS) starts from.

    RLPrompt's template, top-k 10, reward and shaping (the task's defaults); the style demo's
    sampling, sized for a CPU: 8 outputs x 2 bootstraps per input in training, the best of 8 at
    evaluation, on the first ``grid.style_eval_inputs`` test sentences."""
    return {
        "task": {
            "kind": "style_transfer",
            "dataset": "yelp-sentiment",
            "data_dir": str(tst_dir),
            "target_style": STYLE_DATASETS[dataset],
            **STYLE_SAMPLING,
            "eval_max_inputs": grid.style_eval_inputs,
            "lower_outputs": True,
        },
        "target": {"model": BUILTIN, "kind": "causal"},
        "policy": {"model": BUILTIN, "prompt_length": 5},
        "reward": dict(STYLE_REWARD),
        "train": {"seed": 0},
    }


def style_overrides(grid: Grid, methods: Sequence[str]) -> dict[str, list[str]]:
    """Per-method overrides of the style cells: steps, the RL methods' settings, 8 prompts a step
    (2 inputs x 4 prompts each, RLPrompt's batch), PIN's replay batch of the classification cells."""
    out = {}
    steps = grid.style_steps
    for method in methods:
        settings = {
            "train.steps": steps,
            "train.eval_every": max(1, steps // grid.evals),
            "train.checkpoint_every": max(1, steps // 4),
            **METHOD_SETTINGS.get(method, {}),
            "algorithm.prompts_per_step": 8,
        }
        if method == "pin":
            settings["algorithm.replay_batch_size"] = 64
        out[method] = [f"{k}={json.dumps(v)}" for k, v in settings.items()]
    return out


def _agent_field() -> str | None:
    """The algorithm field naming the agent LM, where it is not policy.model (before issue 12)."""
    from hardprompts.agent import AgentConfig

    field = AgentConfig.model_fields.get("agent_model")
    if field is None or field.deprecated or "deprecat" in (field.description or "").lower():
        return None
    return "algorithm.agent_model"


def _algorithm_fields(method: str) -> dict[str, Any]:
    from hardprompts.config import _ALGORITHMS, algorithm_names

    algorithm_names()  # imports every built-in algorithm
    return _ALGORITHMS[method].model_fields


def method_overrides(grid: Grid, methods: Sequence[str]) -> dict[str, list[str]]:
    """Per-method ``KEY=VALUE`` overrides of the sweep: steps, dev evaluations, METHOD_SETTINGS."""
    out = {}
    for method in methods:
        steps = grid.steps[method]
        settings = {
            "train.steps": steps,
            "train.eval_every": max(1, steps // grid.evals),
            "train.checkpoint_every": max(1, steps // 4),
            **METHOD_SETTINGS.get(method, {}),
        }
        fields = _algorithm_fields(method)
        if method == "pin" and "replay_batch_size" in fields:
            settings["algorithm.replay_batch_size"] = 64  # the demo's (PIN: 256 prompts)
        if "lr_warmup_steps" in fields:  # PEZ: 500 of 5,000 steps; the same tenth here
            settings["algorithm.lr_warmup_steps"] = max(1, steps // 10)
        if method in ("search", "appo") and _agent_field():
            settings[_agent_field()] = BUILTIN
        out[method] = [f"{k}={json.dumps(v)}" for k, v in settings.items()]
    return out


def style_cells(grid: Grid) -> list[tuple]:
    """(method, α = 0, training seed) of every style-transfer cell of one direction."""
    return [(m, 0.0, s) for m in STYLE_METHODS for s in grid.style_seeds]


def cells_of(grid: Grid, methods: Sequence[str], seeds: Sequence[str]) -> list[tuple]:
    """(method, α, seed) of every training cell, in the order they run."""
    out = []
    for method in methods:
        alphas = grid.alphas if method in grid.alpha_methods else (0.0,)
        out += [(method, a, s) for a in alphas for s in seeds]
    return out


# ------------------------------------------------------------------------------- running


def manual_baseline(
    root: Path,
    base: dict[str, Any],
    prompts: Sequence[str],
    empty_label: str,
    metrics: dict[str, str],
    source: str,
) -> dict[str, Any]:
    """Test metrics of manual prompts, stored in root/manual.json (computed once).

    ``metrics`` maps each stored key to the task's metric name; ``empty_label`` names "" ."""
    from hardprompts.checkpoint import atomic_write_json
    from hardprompts.config import config_from_dict
    from hardprompts.tasks import build_task

    path = root / "manual.json"
    if path.exists():
        return json.loads(path.read_text(encoding="utf-8"))
    data = json.loads(json.dumps(base))
    data["out_dir"] = str(root / "manual")
    task = build_task(config_from_dict(data, source))
    started = time.perf_counter()
    results = task.evaluate(list(prompts), "test")
    manual = {
        "results": [
            {
                "prompt": r.prompt,
                "label": repr(r.prompt) if r.prompt else empty_label,
                **{key: r.metrics.get(name) for key, name in metrics.items()},
                "n": r.metrics.get("n"),
            }
            for r in results
        ],
        "seconds": time.perf_counter() - started,
    }
    atomic_write_json(path, manual)
    return manual


def run_manual(root: Path, base: dict[str, Any], seed: str) -> dict[str, Any]:
    """Test accuracy of the manual prompts (the test split is the same for every split seed)."""
    base = {**base, "task": {**base["task"], "split_seed": seed}}
    return manual_baseline(
        root, base, MANUAL_PROMPTS, "(preset default: bare template)",
        {"test_accuracy": "accuracy"}, "fidelity manual baseline",
    )  # fmt: skip


def run_dataset(
    grid: Grid,
    dataset: str,
    work: Path,
    data_dir: Path,
    methods: Sequence[str],
    alphas: Sequence[float],
    seeds: Sequence[str],
    show_progress: bool,
) -> None:
    """Every cell of one dataset (finished ones skipped), then `hardprompts report` on it."""
    from hardprompts.report import write_report
    from hardprompts.sweep import run_sweep

    root = work / dataset
    base = base_config(dataset, work, data_dir, grid.seeds)
    run_manual(root, base, grid.seeds[0])

    def announce(cell, status: str) -> None:
        print(f"[fidelity] {status:>8} {cell.out_dir}", flush=True)

    alpha_methods = [m for m in methods if m in grid.alpha_methods]
    single = [m for m in methods if m in grid.single_methods]
    for group, group_alphas in ((alpha_methods, alphas), (single, (0.0,))):
        if group:
            run_sweep(
                base,
                group,
                list(group_alphas),
                list(seeds),
                root,
                method_overrides(grid, group),
                show_progress=show_progress,
                on_cell=announce,
            )
    write_report(root)


def manual_style_prompts(dataset: str) -> list[str]:
    return [p.format(style=STYLE_DATASETS[dataset]) for p in STYLE_MANUAL]


def run_manual_style(root: Path, base: dict[str, Any], dataset: str) -> dict[str, Any]:
    """Test metrics of the manual style prompts."""
    return manual_baseline(
        root, base, manual_style_prompts(dataset), "(null prompt)",
        {m: m for m in STYLE_METRICS}, "fidelity manual style baseline",
    )  # fmt: skip


def run_style_dataset(
    grid: Grid,
    dataset: str,
    work: Path,
    tst_dir: Path,
    methods: Sequence[str],
    show_progress: bool,
) -> None:
    """Every style-transfer cell of one direction (seeds = train.seed), then `hardprompts report`."""
    from hardprompts.report import write_report
    from hardprompts.sweep import run_sweep

    root = work / dataset
    base = style_base_config(grid, dataset, tst_dir)
    run_manual_style(root, base, dataset)
    run_sweep(
        base,
        list(methods),
        [0.0],
        list(grid.style_seeds),
        root,
        style_overrides(grid, methods),
        show_progress=show_progress,
        on_cell=lambda cell, status: print(f"[fidelity] {status:>8} {cell.out_dir}", flush=True),
        seed_field="train.seed",
    )
    write_report(root)


# ------------------------------------------------------------------------------- results

#: The test metrics of a style cell (result.json ``test_<metric>``) shown in its table.
STYLE_METRICS = ("reward", "content", "style", "output_perplexity")


def _mean_std(values: Sequence[float]) -> tuple[float | None, float | None]:
    if not values:
        return None, None
    return statistics.fmean(values), statistics.stdev(values) if len(values) > 1 else None


def _finite(values) -> list[float]:
    return [float(v) for v in values if isinstance(v, int | float) and math.isfinite(v)]


def summarise_dataset(grid: Grid, dataset: str, work: Path) -> dict[str, Any]:
    """The finished cells of one dataset: per (method, α) mean ± std over seeds; missing cells."""
    root = work / dataset
    manual_path = root / "manual.json"
    manual = json.loads(manual_path.read_text(encoding="utf-8")) if manual_path.exists() else None
    runs: dict[tuple[str, float], list[dict]] = {}
    missing = []
    for method, alpha, seed in cells_of(grid, grid.alpha_methods + grid.single_methods, grid.seeds):
        from hardprompts.sweep import cell_dir

        path = cell_dir(root, method, alpha, seed) / "result.json"
        if path.exists():
            result = json.loads(path.read_text(encoding="utf-8"))
            result["_seed"] = seed
            runs.setdefault((method, alpha), []).append(result)
        else:
            missing.append(f"{dataset} {method} α={alpha:g} seed={seed}")
    rows = []
    for (method, alpha), results in sorted(
        runs.items(), key=lambda kv: (METHODS.index(kv[0][0]), kv[0][1])
    ):
        row: dict[str, Any] = {
            "method": method,
            "alpha": alpha,
            "n_seeds": len(results),
            "seeds": [r["_seed"] for r in results],
        }
        for key in ("test_accuracy", "prompt_perplexity", "steps", "wall_seconds"):
            mean, std = _mean_std(_finite(r.get(key) for r in results))
            row[f"{key}_mean"], row[f"{key}_std"] = mean, std
        row["prompts"] = [r["best_prompt"] for r in results]
        row["tokens"] = [r.get("tokens") for r in results]
        row["perplexity_judge"] = sorted(
            {str(r.get("perplexity_reference") or r["config"]["policy"]["model"]) for r in results}
        )
        if method in ("search", "appo"):
            for key in ("prompts_sampled", "train_pairs_scored"):
                row[f"{key}_mean"] = _mean_std(_finite(r.get(key) for r in results))[0]
        if method == "softprompt":
            for key in (
                "soft_accuracy",
                "projected_accuracy",
                "label_agreement",
                "tv_faithfulness",
            ):
                values = _finite(
                    ((r.get("soft_prompt") or {}).get("test") or {}).get(key) for r in results
                )
                row[f"faithfulness_{key}_mean"], row[f"faithfulness_{key}_std"] = _mean_std(values)
        rows.append(row)
    return {
        "dataset": dataset,
        "manual": manual,
        "rows": rows,
        "missing": missing,
        "claims": claims(dataset, runs, manual),
    }


def summarise_style(grid: Grid, dataset: str, work: Path) -> dict[str, Any]:
    """The finished style cells of one direction: per method mean ± std over training seeds."""
    from hardprompts.sweep import cell_dir

    root = work / dataset
    manual_path = root / "manual.json"
    manual = json.loads(manual_path.read_text(encoding="utf-8")) if manual_path.exists() else None
    runs: dict[tuple[str, float], list[dict]] = {}
    missing = []
    for method, alpha, seed in style_cells(grid):
        path = cell_dir(root, method, alpha, seed) / "result.json"
        if path.exists():
            result = json.loads(path.read_text(encoding="utf-8"))
            result["_seed"] = seed
            runs.setdefault((method, alpha), []).append(result)
        else:
            missing.append(f"{dataset} {method} seed={seed}")
    rows = []
    for (method, _alpha), results in sorted(runs.items(), key=lambda kv: METHODS.index(kv[0][0])):
        row: dict[str, Any] = {
            "method": method,
            "n_seeds": len(results),
            "seeds": [r["_seed"] for r in results],
        }
        keys = [f"test_{m}" for m in STYLE_METRICS] + ["prompt_perplexity", "steps", "wall_seconds"]
        for key in keys:
            row[f"{key}_mean"], row[f"{key}_std"] = _mean_std(_finite(r.get(key) for r in results))
        row["prompts"] = [r["best_prompt"] for r in results]
        row["examples"] = [(r.get("test_examples") or [None])[0] for r in results]
        rows.append(row)
    return {
        "dataset": dataset,
        "target_style": STYLE_DATASETS[dataset],
        "manual": manual,
        "rows": rows,
        "missing": missing,
        "claims": style_claims(dataset, runs, manual),
    }


def _pm(mean: float | None, std: float | None, spec: str) -> str:
    if mean is None:
        return "–"
    return format(mean, spec) + ("" if std is None else f" ± {format(std, spec)}")


def _md_prompt(text: str) -> str:
    return ("`" + repr(text).replace("`", "'") + "`").replace("|", "\\|")


#: The columns of the markdown table: (header, JSON field(s) of the row); the test checks that
#: every one of them is in the JSON.
TABLE_COLUMNS = (
    ("method", ("method",)),
    ("α", ("alpha",)),
    ("seeds", ("n_seeds",)),
    ("test accuracy", ("test_accuracy_mean", "test_accuracy_std")),
    ("prompt perplexity", ("prompt_perplexity_mean", "prompt_perplexity_std")),
    ("steps", ("steps_mean", "steps_std")),
    ("wall s", ("wall_seconds_mean", "wall_seconds_std")),
    ("prompts (one per seed)", ("prompts",)),
)
#: The columns of a style-transfer table (rewards, content and style are 0-100).
STYLE_COLUMNS = (
    ("method", ("method",)),
    ("seeds", ("n_seeds",)),
    ("test reward", ("test_reward_mean", "test_reward_std")),
    ("content", ("test_content_mean", "test_content_std")),
    ("style %", ("test_style_mean", "test_style_std")),
    ("output perplexity", ("test_output_perplexity_mean", "test_output_perplexity_std")),
    ("prompt perplexity", ("prompt_perplexity_mean", "prompt_perplexity_std")),
    ("steps", ("steps_mean", "steps_std")),
    ("wall s", ("wall_seconds_mean", "wall_seconds_std")),
    ("prompts (one per seed)", ("prompts",)),
)


def markdown(doc: dict[str, Any]) -> str:
    """fidelity.md from the JSON document (nothing in it is written by hand)."""
    run = doc["run"]
    lines = [
        f"# Fidelity: the papers' claims on `{BUILTIN}` ({doc['grid']['name']} grid)",
        "",
        f"Command: `{run['command']}`  ",
        *([f"Cells run by: {run['provenance']}  "] if run.get("provenance") else []),
        f"Code: {run['code']}; date: {run['date']}; machine: {run['machine']}; torch threads: {run['threads']}; "
        f"load average at the end: {run['load_average']}.  ",
        f"Finished cells: {doc['finished_cells']} of {doc['total_cells']}"
        + (
            " (**partial run**: the missing cells are listed below; rerun the same command to "
            "continue)"
            if doc["missing"]
            else ""
        )
        + ".",
        "",
        doc["label"],
        "",
        "Every method uses the built-in model as the RL policy's LM, the target and the agent, the "
        "causal template `{x} {prompt}` and the label words ` terrible` / ` great`; prompts are "
        "chosen on dev, test accuracy is of that prompt. Perplexity is of the prompt under the "
        "built-in model. Wall times are on a shared machine: compare them within this file only.",
        "",
        "Settings per method (the rest are the paper defaults): "
        + "; ".join(
            f"`{m}`: {doc['grid']['steps'][m]} steps"
            + "".join(
                f", `{s}`"
                for s in doc["grid"]["overrides"].get(m, [])
                if "steps" not in s and "eval_every" not in s and "checkpoint_every" not in s
            )
            for m in doc["grid"]["methods"]
        )
        + ".",
        "",
        *overview_markdown(doc),
        "## Verdicts",
        "",
        f"Rule: {RULE}",
        "",
    ]
    for ds in doc["datasets"] + doc["style"]:
        for c in ds["claims"]:
            parts = "; ".join(f"{p['text']}: {p['outcome']} ({p['detail']})" for p in c["parts"])
            lines.append(
                f"- **{c['verdict']}** — {ds['dataset']}: {c['claim']} [{c['source']}]. {parts}."
            )
    lines.append("")
    for ds in doc["datasets"]:
        lines += [f"## {ds['dataset']}", ""]
        if ds["manual"]:
            lines += ["| manual prompt | test accuracy | n |", "|---|---|---|"]
            for r in ds["manual"]["results"]:
                lines.append(f"| {r['label']} | {r['test_accuracy']:.4f} | {r['n']} |")
            lines.append("")
        lines += [
            "| " + " | ".join(h for h, _ in TABLE_COLUMNS) + " |",
            "|" + "---|" * len(TABLE_COLUMNS),
        ]
        for r in ds["rows"]:
            lines.append(
                f"| {r['method']} | {r['alpha']:g} | {r['n_seeds']} | "
                f"{_pm(r['test_accuracy_mean'], r['test_accuracy_std'], '.4f')} | "
                f"{_pm(r['prompt_perplexity_mean'], r['prompt_perplexity_std'], '.1f')} | "
                f"{_pm(r['steps_mean'], r['steps_std'], '.0f')} | "
                f"{_pm(r['wall_seconds_mean'], r['wall_seconds_std'], '.1f')} | "
                + "<br>".join(_md_prompt(p) for p in r["prompts"])
                + " |"
            )
        soft = [r for r in ds["rows"] if r["method"] == "softprompt"]
        if soft:
            r = soft[0]
            lines += [
                "",
                "Soft prompt faithfulness on test (Patel et al.): soft accuracy "
                f"{_pm(r['faithfulness_soft_accuracy_mean'], r['faithfulness_soft_accuracy_std'], '.4f')}"
                ", its nearest-token projection "
                f"{_pm(r['faithfulness_projected_accuracy_mean'], r['faithfulness_projected_accuracy_std'], '.4f')}"
                ", label agreement "
                f"{_pm(r['faithfulness_label_agreement_mean'], r['faithfulness_label_agreement_std'], '.3f')}"
                ", 1 − TV "
                f"{_pm(r['faithfulness_tv_faithfulness_mean'], r['faithfulness_tv_faithfulness_std'], '.3f')}.",
            ]
        agents = [r for r in ds["rows"] if r["method"] in ("search", "appo")]
        if agents:
            lines += [
                "",
                "Cost of the agent methods (mean per run): "
                + "; ".join(
                    f"{r['method']}: {r['prompts_sampled_mean']:.0f} prompts sampled, "
                    f"{r['train_pairs_scored_mean']:.0f} train pairs scored, "
                    f"{r['wall_seconds_mean']:.1f} s"
                    for r in agents
                    if r["prompts_sampled_mean"] is not None
                )
                + ".",
            ]
        lines.append("")
    lines += style_markdown(doc)
    lines += [
        "## What this can and cannot show",
        "",
        AGENT_NOTE,
        "",
        SCOPE_NOTE,
        "",
        *([STYLE_NOTE, ""] if doc["style"] else []),
        f"Trade-off plot: [`{doc['plot']}`]({doc['plot']}) (test accuracy against prompt "
        "perplexity, one line per method through its α points, error bars = std over seeds, "
        "dashed line = best manual prompt). Each dataset's `hardprompts report` output "
        "(report.md, report.csv, tradeoff.png) is in its sweep folder under the work directory.",
        "",
    ]
    if doc["missing"]:
        lines += ["## Cells not finished", ""] + [f"- {m}" for m in doc["missing"]] + [""]
    return "\n".join(lines)


def _ppl(value: float | None) -> str:
    if value is None:
        return "–"
    return f"{value:,.0f}" if value >= 100 else f"{value:.1f}"


def _grid_table(header: list[str], rows: list[list[str]]) -> list[str]:
    return [
        "| " + " | ".join(header) + " |",
        "|" + "---|" * len(header),
        *("| " + " | ".join(r) + " |" for r in rows),
        "",
    ]


def overview_markdown(doc: dict[str, Any]) -> list[str]:
    """Every dataset side by side: test score and prompt perplexity per method, the verdicts."""
    lines = ["## Overview", ""]
    style_labels = [repr(p) if p else "(null prompt)" for p in STYLE_MANUAL]
    groups = [
        (doc["datasets"], "test_accuracy", "test_accuracy", ".3f", "Test accuracy", None),
        (doc["style"], "test_reward", "reward", ".1f", "Style transfer: test reward (0–100)",
         style_labels),
    ]  # fmt: skip
    for datasets, key, manual_key, spec, title, labels in groups:
        if not datasets:
            continue
        names = [ds["dataset"] for ds in datasets]
        manuals = [(ds["manual"] or {}).get("results", []) for ds in datasets]
        score_rows, ppl_rows = [], []
        for i in range(max(len(m) for m in manuals)):  # the same manual prompts, in order
            label = labels[i] if labels else next(m[i]["label"] for m in manuals if len(m) > i)
            cells = [_pm(m[i][manual_key], None, spec) if len(m) > i else "–" for m in manuals]
            score_rows.append([f"manual {label}", "", *cells])
        keys = list(dict.fromkeys((r["method"], r.get("alpha", 0.0)) for ds in datasets for r in ds["rows"]))
        keys.sort(key=lambda k: (METHODS.index(k[0]), k[1]))
        for method, alpha in keys:
            found = [
                next((r for r in ds["rows"] if (r["method"], r.get("alpha", 0.0)) == (method, alpha)), None)
                for ds in datasets
            ]
            score_rows.append(
                [method, f"{alpha:g}"]
                + [_pm(r[f"{key}_mean"], r[f"{key}_std"], spec) if r else "–" for r in found]
            )
            ppl_rows.append(
                [method, f"{alpha:g}"] + [_ppl(r["prompt_perplexity_mean"]) if r else "–" for r in found]
            )
        lines += [f"{title}, mean ± std over seeds:", ""]
        lines += _grid_table(["prompt / method", "α", *names], score_rows)
        lines += ["Prompt perplexity under the built-in model (mean over seeds; lower reads better):", ""]
        lines += _grid_table(["method", "α", *names], ppl_rows)
        claims = list(dict.fromkeys(c["short"] for ds in datasets for c in ds["claims"]))
        verdicts = [
            [short]
            + [next((c["verdict"] for c in ds["claims"] if c["short"] == short), "–") for ds in datasets]
            for short in claims
        ]
        lines += ["Verdicts (details and numbers below):", ""]
        lines += _grid_table(["claim", *names], verdicts)
    return lines


def style_markdown(doc: dict[str, Any]) -> list[str]:
    """The style-transfer sections of fidelity.md."""
    if not doc["style"]:
        return []
    g = doc["grid"]
    lines = [
        "## Style transfer (Yelp sentiment)",
        "",
        "`task.kind: style_transfer`, `yelp-sentiment`; the built-in model writes the rewrite "
        "(target) and is the RL policy's LM; rewards from the built-in MiniLM content "
        "similarity and the built-in Yelp style classifier (`builtin:yelp-style`, 95.3% on "
        "sentiment.test), the same models in training and evaluation. Reward = (content + "
        "style) / 2 of the best of "
        f"{g['style_sampling']['eval_num_samples']} sampled outputs per input, on the first "
        f"{g['style_eval_inputs']} test sentences; content and style are 0–100 (style = % of "
        "outputs the classifier puts in the target style). Output perplexity is under the "
        f"built-in model. Seeds are training seeds ({', '.join(g['style_seeds'])}: the Yelp "
        f"split is fixed). {g['style_steps']} steps per cell; overrides: "
        + "; ".join(
            f"`{m}`: "
            + ", ".join(
                f"`{o}`"
                for o in ov
                if "steps" not in o and "eval_every" not in o and "checkpoint_every" not in o
            )
            for m, ov in g["style_overrides"].items()
        )
        + ".",
        "",
    ]
    for ds in doc["style"]:
        lines += [f"### {ds['dataset']} (to {ds['target_style']})", ""]
        if ds["manual"]:
            lines += [
                "| manual prompt | test reward | content | style % | output perplexity | n |",
                "|---|---|---|---|---|---|",
            ]
            for r in ds["manual"]["results"]:
                lines.append(
                    f"| {r['label']} | {_pm(r['reward'], None, '.2f')} | "
                    f"{_pm(r['content'], None, '.2f')} | {_pm(r['style'], None, '.1f')} | "
                    f"{_pm(r['output_perplexity'], None, '.1f')} | {r['n']} |"
                )
            lines.append("")
        lines += [
            "| " + " | ".join(h for h, _ in STYLE_COLUMNS) + " |",
            "|" + "---|" * len(STYLE_COLUMNS),
        ]
        for r in ds["rows"]:
            lines.append(
                f"| {r['method']} | {r['n_seeds']} | "
                f"{_pm(r['test_reward_mean'], r['test_reward_std'], '.2f')} | "
                f"{_pm(r['test_content_mean'], r['test_content_std'], '.2f')} | "
                f"{_pm(r['test_style_mean'], r['test_style_std'], '.1f')} | "
                f"{_pm(r['test_output_perplexity_mean'], r['test_output_perplexity_std'], '.1f')} | "
                f"{_pm(r['prompt_perplexity_mean'], r['prompt_perplexity_std'], '.1f')} | "
                f"{_pm(r['steps_mean'], r['steps_std'], '.0f')} | "
                f"{_pm(r['wall_seconds_mean'], r['wall_seconds_std'], '.1f')} | "
                + "<br>".join(_md_prompt(p) for p in r["prompts"])
                + " |"
            )
        examples = [
            (r["method"], e) for r in ds["rows"] for e in r["examples"][:1] if e is not None
        ]
        if examples:
            lines += ["", "First test input and the selected output (first seed):"]
            lines += [
                f"- {m}: {_md_prompt(e['input'])} → {_md_prompt(e['output'])}"
                for m, e in examples
            ]
        lines.append("")
    return lines


STYLE_NOTE = (
    "Style transfer here: the built-in model was trained on single Yelp sentences, not on "
    "rewriting, and does not copy its input: after RLPrompt's template its outputs are short "
    "fragments, most often a lone '!' (which the classifier reads as positive) or '.' "
    "(negative), and they depend little on the prompt five tokens to the left. So content "
    "similarity stays low for every prompt, the reward moves with how often '!' or '.' is "
    "sampled, and the prompts have little room to matter. The classifier that gives the training reward also "
    "judges the test outputs (RLPrompt's separate evaluation classifier is not published), so "
    "a prompt can learn what that classifier likes. What the rows can show: that rlprompt and "
    "pin run the style-transfer pipeline (sampling, bootstrap reward, per-input z-score, "
    "shaping) to a prompt that moves the outputs toward the target style, and how readable "
    "their prompts are; not RLPrompt's or PIN's numbers, which need GPT-2-xl / OPT-scale "
    "generators and the RoBERTa-large scorers (configs/yelp_*_style.yaml)."
)

AGENT_NOTE = (
    "`appo` and `search` use the built-in model as the agent. It is a 5M-parameter language model "
    "of Yelp review sentences, not an instruction model: given the meta-prompt with "
    "demonstrations it does not write an instruction, it continues the text with more "
    "review-like words. So these rows test the code path (sampling, train reward, PPO with the "
    "anchor, dev selection, cost accounting), and the comparison of the two methods is one of "
    "two ways to search the space of short review fragments; they say nothing about how either "
    "method does with the instruction-tuned agents of the paper (configs/sst2_appo.yaml)."
)
SCOPE_NOTE = (
    "A 5M-parameter model trained on Yelp sentences is a weak, narrow target: on SST-2, MR and CR "
    "a good manual prompt already gets most of what it can do, so there is little room above "
    "the manual baseline and small differences between methods sit within seed noise; the demo "
    "reviews (restaurant reviews like its training text) leave more room. Its perplexity judge "
    "is the same small model, so 'readable' means 'likely as Yelp text'. The runs are far "
    "shorter than the papers' (hundreds of steps, not thousands). What it can show: that each "
    "method's code runs the paper's algorithm to a prompt better than chance, the direction of "
    "effects that are large at this scale (perplexity regularisation, sparse vs Shannon "
    "exploration), and the cost of each method. What it cannot show: the papers' accuracy "
    "numbers, which need RoBERTa-large / OPT / Llama-scale models (the shipped configs)."
)


def tradeoff_content(datasets: list[dict], style: Sequence[dict] = ()) -> list[dict]:
    """The plot's panels: per dataset, per method (perplexity, test score, std) ordered by α;
    the score is test accuracy (classification) or the test reward (style transfer)."""
    out = []
    panels = [(ds, "accuracy", "test_accuracy", "test_accuracy") for ds in datasets]
    panels += [(ds, "reward", "test_reward", "reward") for ds in style]
    for ds, score, key, manual_key in panels:
        series = []
        for method in dict.fromkeys(r["method"] for r in ds["rows"]):
            pts = [
                r
                for r in ds["rows"]
                if r["method"] == method
                and r[f"{key}_mean"] is not None
                and r["prompt_perplexity_mean"] is not None
            ]
            if pts:
                series.append(
                    {
                        "method": method,
                        "alpha": [r.get("alpha", 0.0) for r in pts],
                        "perplexity": [r["prompt_perplexity_mean"] for r in pts],
                        "score": [r[f"{key}_mean"] for r in pts],
                        "score_std": [r[f"{key}_std"] or 0.0 for r in pts],
                    }
                )
        manual = _finite(r.get(manual_key) for r in (ds["manual"] or {}).get("results", []))
        out.append(
            {
                "dataset": ds["dataset"],
                "score": score,
                "series": series,
                "best_manual": max(manual) if manual else None,
            }
        )
    return out


def plot(content: list[dict], path: Path) -> None:
    """One panel per dataset: test accuracy against prompt perplexity (log x)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from hardprompts.report import draw_series

    n = max(1, len(content))
    fig, axes = plt.subplots(1, n, figsize=(4.6 * n, 4.2), dpi=110, squeeze=False)
    try:
        for ax, panel in zip(axes[0], content, strict=False):
            draw_series(ax, panel["series"], fontsize=7)
            if panel["best_manual"] is not None:
                ax.axhline(panel["best_manual"], ls="--", c="gray", lw=1, label="best manual")
            ax.set_xscale("log")
            ax.set_title(panel["dataset"])
            ax.set_xlabel("prompt perplexity (log; lower reads better)")
            ax.set_ylabel(f"test {panel['score']} (mean ± std over seeds)")
            ax.grid(alpha=0.3)
            ax.legend(fontsize=7)
        fig.tight_layout()
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.tmp")
        fig.savefig(tmp, format="png")
        os.replace(tmp, path)  # never a half-written figure
    finally:
        plt.close(fig)


def label_of(grid: Grid, finished: int, total: int) -> str:
    if grid is QUICK:
        return (
            "**Quick run** (`--quick`: demo reviews and Yelp negative→positive only, 2 seeds, "
            "α ∈ {0, 2}, a dozen steps per method, 3 per style cell). It checks that the benchmark runs end to end; its numbers are far too short "
            "to say anything about the papers' claims."
        )
    if finished < total:
        return (
            f"**Partial run of the full grid**: {finished} of {total} cells finished in the time "
            "this session had. Verdicts of claims whose cells are missing are 'inconclusive'."
        )
    return "**Full run** of the grid, every cell finished, with the committed code."


def build_document(grid: Grid, work: Path, plot_name: str, command: str, threads: int) -> dict:
    """The JSON document (everything the markdown shows)."""
    datasets = [summarise_dataset(grid, d, work) for d in grid.datasets]
    style = [summarise_style(grid, d, work) for d in grid.style_datasets]
    total = len(grid.datasets) * len(
        cells_of(grid, grid.alpha_methods + grid.single_methods, grid.seeds)
    ) + len(grid.style_datasets) * len(style_cells(grid))
    missing = [m for ds in datasets + style for m in ds["missing"]]
    methods = list(grid.alpha_methods + grid.single_methods)
    load = os.getloadavg() if hasattr(os, "getloadavg") else None
    return {
        "label": label_of(grid, total - len(missing), total),
        "run": {
            "command": command,
            "date": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
            "machine": f"{platform.machine()}, {os.cpu_count()} CPU cores (shared), "
            f"Python {platform.python_version()}, torch {_torch_version()}",
            "threads": threads,
            "code": _git_commit(),
            "load_average": None if load is None else [round(x, 1) for x in load],
        },
        "grid": {
            "name": grid.name,
            "datasets": list(grid.datasets),
            "seeds": list(grid.seeds),
            "alphas": list(grid.alphas),
            "alpha_methods": list(grid.alpha_methods),
            "methods": methods,
            "steps": grid.steps,
            "overrides": method_overrides(grid, methods),
            "manual_prompts": list(MANUAL_PROMPTS),
            "style_datasets": {d: STYLE_DATASETS[d] for d in grid.style_datasets},
            "style_methods": list(STYLE_METHODS),
            "style_seeds": list(grid.style_seeds),
            "style_steps": grid.style_steps,
            "style_eval_inputs": grid.style_eval_inputs,
            "style_sampling": dict(STYLE_SAMPLING) if grid.style_datasets else {},
            "style_reward": dict(STYLE_REWARD),
            "style_manual_prompts": list(STYLE_MANUAL),
            "style_overrides": style_overrides(grid, STYLE_METHODS),
        },
        "rule": RULE,
        "finished_cells": total - len(missing),
        "total_cells": total,
        "missing": missing,
        "datasets": datasets,
        "claims": [c for ds in datasets + style for c in ds["claims"]],
        "style": style,
        "tradeoff": tradeoff_content(datasets, style),
        "plot": plot_name,
        "notes": {"agent": AGENT_NOTE, "scope": SCOPE_NOTE, "style": STYLE_NOTE},
    }


def _git_commit() -> str:
    """The repository's commit (with '+changes' when the work tree differs from it)."""
    import subprocess

    try:
        head = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True, text=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=REPO,
            capture_output=True,
            text=True,
        ).stdout.strip()
    except OSError:
        return "unknown"
    return (head or "unknown") + ("+changes" if dirty else "")


def _torch_version() -> str:
    import torch

    return torch.__version__


def write_results(doc: dict, out: Path, stem: str) -> dict[str, Path]:
    from hardprompts.checkpoint import atomic_write_json, atomic_write_text

    paths = {"json": out / f"{stem}.json", "md": out / f"{stem}.md", "png": out / doc["plot"]}
    atomic_write_json(paths["json"], doc)
    atomic_write_text(paths["md"], markdown(doc))
    plot(doc["tradeoff"], paths["png"])
    return paths


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="The small grid (CI, a couple of minutes).")
    p.add_argument(
        "--work",
        type=Path,
        default=None,
        help="Sweep folders (default runs/fidelity-full or runs/fidelity-quick).",
    )
    p.add_argument(
        "--out",
        type=Path,
        default=REPO / "benchmarks" / "results",
        help="Where fidelity.md/.json/_tradeoff.png go.",
    )
    p.add_argument(
        "--data-dir",
        type=Path,
        default=None,
        help="The few-shot splits (default: fsc/ of $HARDPROMPTS_DATA_DIR, else of the "
        "`hardprompts data fetch` cache).",
    )
    p.add_argument(
        "--tst-dir",
        type=Path,
        default=None,
        help="The style-transfer corpora (default: tst/ of $HARDPROMPTS_DATA_DIR, else of the "
        "`hardprompts data fetch` cache).",
    )
    p.add_argument(
        "--datasets",
        default=None,
        help="Run only these datasets (comma-separated; the style directions are yelp-neg2pos "
        "and yelp-pos2neg).",
    )
    p.add_argument("--methods", default=None, help="Run only these methods (comma-separated).")
    p.add_argument(
        "--alphas", default=None, help="Run only these α of the swept methods (comma-separated)."
    )
    p.add_argument(
        "--seeds",
        default=None,
        help="Run only these split seeds (comma-separated; the style cells always run all their "
        "training seeds).",
    )
    p.add_argument("--threads", type=int, default=1, help="torch threads (stated in the results).")
    p.add_argument(
        "--report-only",
        action="store_true",
        help="Run nothing; rewrite the results from the finished cells.",
    )
    p.add_argument(
        "--provenance",
        default=None,
        help="Free text shown under the command (e.g. which subset commands ran the cells).",
    )
    p.add_argument("--no-progress", action="store_true", help="No per-cell progress bars.")
    return p.parse_args(argv)


def _subset(text: str | None, full: Sequence[str], what: str) -> list[str]:
    if text is None:
        return list(full)
    items = [t.strip() for t in text.split(",") if t.strip()]
    unknown = [t for t in items if t not in full]
    if unknown or not items:
        raise SystemExit(
            f"--{what}: {', '.join(unknown) or text!r} not in the grid ({', '.join(full)})"
        )
    return [t for t in full if t in items]


def main(argv: Sequence[str] | None = None) -> dict[str, Path]:
    args = parse_args(argv)
    import torch

    torch.set_num_threads(args.threads)
    grid = QUICK if args.quick else FULL
    work = args.work or REPO / "runs" / f"fidelity-{grid.name}"
    data_dir = args.data_dir or default_data_dir()
    tst_dir = args.tst_dir or default_tst_dir()
    datasets = _subset(args.datasets, grid.datasets + grid.style_datasets, "datasets")
    style_datasets = [d for d in datasets if d in grid.style_datasets]
    datasets = [d for d in datasets if d in grid.datasets]
    methods = _subset(args.methods, grid.alpha_methods + grid.single_methods, "methods")
    seeds = _subset(args.seeds, grid.seeds, "seeds")
    alphas = [float(a) for a in _subset(args.alphas, [f"{a:g}" for a in grid.alphas], "alphas")]
    if any(d in FSC for d in datasets) and not (data_dir / "sst-2").is_dir():
        raise SystemExit(
            f"few-shot splits not found in {data_dir}. Fix: run `hardprompts data fetch "
            f"{' '.join(FSC)}`, or set HARDPROMPTS_DATA_DIR to a folder holding fsc/, or pass "
            "--data-dir"
        )
    style_methods = [m for m in STYLE_METHODS if m in methods]
    if (
        not args.report_only
        and style_datasets
        and style_methods
        and not (tst_dir / "yelp" / "clean").is_dir()
    ):
        raise SystemExit(
            f"Yelp style-transfer corpora not found in {tst_dir} (yelp/clean/). Fix: run "
            "`hardprompts data fetch yelp-sentiment`, or set HARDPROMPTS_DATA_DIR to a folder "
            "holding tst/, or pass --tst-dir, or leave the style datasets out with --datasets"
        )
    argv_shown = list(sys.argv[1:] if argv is None else argv)
    if "--provenance" in argv_shown:  # shown on its own line
        i = argv_shown.index("--provenance")
        del argv_shown[i : i + 2]
    command = " ".join(["python benchmarks/fidelity.py", *argv_shown])
    if not args.report_only:
        for dataset in datasets:
            run_dataset(grid, dataset, work, data_dir, methods, alphas, seeds, not args.no_progress)
        if style_methods:
            for dataset in style_datasets:
                run_style_dataset(
                    grid, dataset, work, tst_dir, style_methods, not args.no_progress
                )
    stem = "fidelity" if grid is FULL else "fidelity_quick"
    doc = build_document(grid, work, f"{stem}_tradeoff.png", command, args.threads)
    doc["run"]["provenance"] = args.provenance
    paths = write_results(doc, args.out, stem)
    for c in doc["claims"]:
        print(f"[fidelity] {c['verdict']:>14}  {c['dataset']}: {c['claim']}")
    print(
        f"[fidelity] {doc['finished_cells']}/{doc['total_cells']} cells; wrote "
        + ", ".join(str(p) for p in paths.values())
    )
    return paths


if __name__ == "__main__":
    main()
