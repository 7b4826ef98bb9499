"""``hardprompts demo``: the whole job, offline, in a few minutes on a laptop-class CPU.

It tunes a prompt with PIN, using the project's own small language model (``builtin:yelp-small``)
as both the policy's frozen LM and the target, on a small review dataset shipped in the package
(``hardprompts/demo_data``, written by ``scripts/make_demo_data.py``). It then prints the manual
prompt's test accuracy beside the tuned prompt's, the prompt, its tokens and its perplexity, and
writes ``result.json`` and ``curves.png`` (reward and dev accuracy) to the output folder.

With ``--dataset`` (a preset such as ``sst-2`` read from ``task.data_dir``, or a folder of your
own files), ``--method`` and ``--steps`` the same command does real work.

Without ``--out`` every run gets a new folder ``runs/demo/<date>-<time>`` (:func:`fresh_run_dir`),
so the command can be repeated as it is; the command line shows the previous run's result beside
the new one, and ``--resume`` continues the latest unfinished run there (:func:`latest_run`).

``--task style`` runs text style transfer instead (:func:`style_demo_config`): PIN tunes a prompt
that makes the built-in LM rewrite the demo set's negative reviews as positive ones, rewarded by
the built-in models (MiniLM content similarity, the built-in Yelp style classifier), and compares
it with a manual prompt on test.
"""

from __future__ import annotations

import json
from datetime import datetime
from pathlib import Path
from typing import Any

from hardprompts.checkpoint import atomic_write_json, has_checkpoint
from hardprompts.config import Config, apply_overrides, config_from_dict
from hardprompts.errors import ConfigError
from hardprompts.tasks import PRESETS

DEMO_DATA = Path(__file__).parent / "demo_data"
BUILTIN = "builtin:yelp-small"
MANUAL_PROMPT = "It was"
#: Where runs go without --out: one sub-folder per run.
DEMO_ROOT = Path("runs/demo")

#: Per-method settings of the demo (the rest are each method's paper defaults). PIN trains on 64
#: replayed prompts per update instead of its 256, so that the demo takes minutes on a CPU.
METHOD_SETTINGS: dict[str, dict[str, Any]] = {
    "pin": {"name": "pin", "residual_head": True, "replay_batch_size": 64},
    "rlprompt": {"name": "rlprompt", "residual_head": True},
    "pez": {"name": "pez"},
}


def demo_config(
    dataset: str | None, method: str, steps: int, out_dir: str, overrides: list[str] | None = None
) -> Config:
    """The demo's config: built-in model as policy and target, causal template ``{x} {prompt}``."""
    task: dict[str, Any] = {"template": "{x} {prompt}"}
    if dataset is None:
        task.update(dataset=str(DEMO_DATA), split_seed=None, verbalizers=[" terrible", " great"])
    else:
        task["dataset"] = dataset
        if dataset not in PRESETS:
            task["split_seed"] = None
    if method not in METHOD_SETTINGS:
        raise ConfigError(f"--method {method!r}: the demo runs one of {', '.join(METHOD_SETTINGS)}")
    data: dict[str, Any] = {
        "task": task,
        "target": {"model": BUILTIN, "kind": "causal"},
        "policy": {"model": BUILTIN, "prompt_length": 5},
        "algorithm": dict(METHOD_SETTINGS[method]),
        "train": {
            "steps": steps,
            "eval_every": max(1, steps // 20),
            "checkpoint_every": max(1, steps // 4),
        },
        "out_dir": out_dir,
    }
    apply_overrides(data, overrides or [])
    return config_from_dict(data, "demo settings")


def fresh_run_dir(root: Path = DEMO_ROOT, now: datetime | None = None) -> Path:
    """A folder name under ``root`` that no run uses yet: ``<YYYYmmdd-HHMMSS>[-N]``."""
    stamp = (now or datetime.now()).strftime("%Y%m%d-%H%M%S")
    path, n = root / stamp, 1
    while path.exists():
        n += 1
        path = root / f"{stamp}-{n}"
    return path


def latest_run(root: Path = DEMO_ROOT, *, finished: bool, required: bool = True) -> Path | None:
    """The newest run folder under ``root`` that is finished (has result.json) or unfinished
    (has a checkpoint, no result.json yet). None, or with ``required`` a ConfigError, if none."""
    runs = sorted((p for p in root.iterdir() if p.is_dir()), reverse=True) if root.is_dir() else []
    for run in runs:
        done = (run / "result.json").is_file()
        if done if finished else (not done and has_checkpoint(run / "checkpoint")):
            return run
    if required:
        raise ConfigError(
            f"--resume: no {'finished' if finished else 'unfinished'} demo run under {root}; "
            "run `hardprompts demo` to start one, or give its folder with --out"
        )
    return None


#: Where style demos go without --out.
STYLE_DEMO_ROOT = Path("runs/demo-style")
#: Training steps of a demo without --steps.
DEFAULT_STEPS = {"classification": 300, "style": 100}


def demo_run(
    task: str,
    dataset: str | None,
    method: str | None,
    steps: int | None,
    out_dir: Path | None,
    resume: bool,
    overrides: list[str] | None = None,
) -> tuple[Config, Path, Path | None]:
    """The config of ``hardprompts demo`` (``task``: classification or style), its run folder,
    and the previous finished run to show beside it (classification, without --out).

    A new run gets a fresh folder under :data:`DEMO_ROOT` (style: :data:`STYLE_DEMO_ROOT`);
    ``resume`` continues the one in ``out_dir``, else the latest unfinished one, with the settings
    it was started with (:func:`resumed_config`)."""
    if task not in DEFAULT_STEPS:
        raise ConfigError(f"--task {task!r}: choose classification or style")
    root = DEMO_ROOT if task == "classification" else STYLE_DEMO_ROOT
    if resume:
        if out_dir is None:
            out_dir = latest_run(root, finished=False)
            assert out_dir is not None  # required (the default): none found is a ConfigError
        return resumed_config(out_dir, task, dataset, method, steps, overrides), out_dir, None
    previous = None
    if out_dir is None:
        if task == "classification":
            previous = latest_run(root, finished=True, required=False)
        out_dir = fresh_run_dir(root)
    build = demo_config if task == "classification" else style_demo_config
    cfg = build(dataset, method or "pin", steps or DEFAULT_STEPS[task], str(out_dir), overrides)
    return cfg, out_dir, previous


def resumed_config(
    out_dir: Path,
    task: str,
    dataset: str | None = None,
    method: str | None = None,
    steps: int | None = None,
    overrides: list[str] | None = None,
) -> Config:
    """The config an interrupted demo in ``out_dir`` was started with (its ``config.json``), for
    ``demo --resume``: the settings derived from its ``--steps`` (eval and checkpoint cadence)
    stay as they were. An explicit ``--steps`` changes only ``train.steps`` (the run goes on to
    it); a ``--task``, ``--dataset`` or ``--method`` other than the run's is refused in one line;
    ``--set`` applies on top (a change of the run's identity is refused by the training loop)."""
    path = Path(out_dir) / "config.json"
    try:
        saved = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        raise ConfigError(
            f"--resume: {path} is missing or unreadable, so the settings of this demo are "
            "unknown; start a new demo without --resume"
        ) from None

    def refuse(option: str, started: str, given: str) -> ConfigError:
        return ConfigError(
            f"--resume: {out_dir} is a demo started with {option} {started}, not {given}; drop "
            f"{option} to resume it, or start a new demo without --resume"
        )

    kind = "style" if saved["task"].get("kind") == "style_transfer" else "classification"
    if kind != task:
        return_option = "--task style" if kind == "style" else "no --task"
        raise ConfigError(f"--resume: {out_dir} is a {kind} demo; resume it with {return_option}")
    if method is not None and method != saved["algorithm"]["name"]:
        raise refuse("--method", saved["algorithm"]["name"], method)
    if dataset is not None:
        build = style_demo_config if task == "style" else demo_config
        wanted = build(dataset, saved["algorithm"]["name"], 1, str(out_dir)).task.dataset
        if wanted != saved["task"]["dataset"]:
            raise refuse("--dataset", saved["task"]["dataset"], dataset)
    saved["out_dir"] = str(out_dir)
    if steps is not None:
        saved["train"]["steps"] = steps
    apply_overrides(saved, overrides or [])
    return config_from_dict(saved, f"{path} with the command's options")


MANUAL_STYLE_PROMPT = "Here is the review rewritten to be positive:"
STYLE_MODELS = {
    "content_model": "builtin:minilm",
    "style_model": "builtin:yelp-style",
    "fluency_model": "lm:builtin:yelp-small",
    "perplexity_model": "lm:builtin:yelp-small",
}


def style_demo_config(
    dataset: str | None, method: str, steps: int, out_dir: str, overrides: list[str] | None = None
) -> Config:
    """The style demo's config: negative -> positive on the demo reviews (or ``dataset``), the
    built-in LM as policy and generator, the built-in reward models. RLPrompt's template, top-k
    and reward; fewer samples per input (8 × 2 bootstraps, 8 at evaluation on 32 test inputs)
    and 8 prompts a step, to fit a CPU."""
    if method not in ("pin", "rlprompt"):
        raise ConfigError(f"--method {method!r}: the style demo runs pin or rlprompt")
    task: dict[str, Any] = {
        "kind": "style_transfer",
        "dataset": str(DEMO_DATA) if dataset is None else dataset,
        "target_style": 1,
        "num_samples": 8,
        "num_bootstraps": 2,
        "eval_num_samples": 8,
        "eval_max_inputs": 32,
        "lower_outputs": True,
    }
    data: dict[str, Any] = {
        "task": task,
        "target": {"model": BUILTIN, "kind": "causal"},
        "policy": {"model": BUILTIN, "prompt_length": 5},
        "reward": dict(STYLE_MODELS),
        "algorithm": {**METHOD_SETTINGS[method], "prompts_per_step": 8},
        "train": {
            "steps": steps,
            "eval_every": max(1, steps // 10),
            "checkpoint_every": max(1, steps // 4),
        },
        "out_dir": out_dir,
    }
    apply_overrides(data, overrides or [])
    return config_from_dict(data, "style demo settings")


def run_style_demo(config: Config, *, resume: bool = False) -> dict[str, Any]:
    """Tune a style-transfer prompt, score the manual prompt on test, draw the curves."""
    from hardprompts.api import evaluate, tune
    from hardprompts.plots import plot_training_curves
    from hardprompts.training import tidy_floats

    tuned = tune(config, resume=resume, progress=True, threads=None)
    result = tuned.to_dict()
    out_dir = Path(config.out_dir)
    split = "test" if result.get("test_reward") is not None else "dev"
    manual = evaluate(tuned, MANUAL_STYLE_PROMPT, split=split, progress=False, threads=None)
    result.update(
        manual_prompt=MANUAL_STYLE_PROMPT,
        manual={k: v for k, v in manual.rows[0].items() if k != "prompt"},
        compared_on=split,
        tuned={k.removeprefix(f"{split}_"): v for k, v in result.items()
               if k.startswith(f"{split}_")},
        curves_png=str(out_dir / "curves.png"),
    )  # fmt: skip
    plot_training_curves(
        out_dir / "metrics.jsonl",
        out_dir / "curves.png",
        title=f"{result['method']} style transfer on {dataset_label(config)}",
        dev_score="reward",
        extra_keys=("rewards/content", "rewards/style"),
    )
    _warn_if_below_manual(result, tuned, MANUAL_STYLE_PROMPT)
    result = tidy_floats(result)
    atomic_write_json(out_dir / "result.json", result)
    return result


def _warn_if_below_manual(result: dict[str, Any], tuned_run: Any, manual: str) -> None:
    """Add result["warnings"]: a tuned prompt below the manual one on dev (its score there is
    computed here), or a run that made no update, with the likely cause and the steps to try."""
    from hardprompts.api import evaluate
    from hardprompts.training import below_reference_warning, no_update_warning

    if result["steps"] < result.get("first_update_step", 1):
        result["warnings"] = [no_update_warning(result, "--steps ")]
        return
    tuned = result.get(f"dev_{result['score_name']}")
    scored = evaluate(tuned_run, manual, split="dev", progress=False, threads=None)
    reference = float(scored.rows[0]["score"])
    result["manual_dev_score"] = reference
    warning = None
    if tuned is not None:
        warning = below_reference_warning(
            result, f"the manual prompt {manual!r}", tuned, reference, "--steps "
        )
    if warning is not None:
        result["warnings"] = [warning]


def dataset_label(config: Config) -> str:
    """A short name for the dataset: 'demo reviews' for the shipped set, else its name or folder."""
    dataset = Path(config.task.dataset)
    return "demo reviews" if dataset == DEMO_DATA else dataset.name or config.task.dataset


def run_demo(config: Config, *, resume: bool = False) -> dict[str, Any]:
    """Tune, then score the manual prompt on test and draw the curves; returns the extended result."""
    from hardprompts.api import evaluate, tune
    from hardprompts.plots import plot_training_curves
    from hardprompts.training import tidy_floats

    tuned = tune(config, resume=resume, progress=True, threads=None)
    result = tuned.to_dict()
    out_dir = Path(config.out_dir)
    if result["test_accuracy"] is not None:  # the loop already scored the tuned prompt on test
        split, tuned_accuracy = "test", result["test_accuracy"]
    else:  # a dataset without a test split (yelp-2): compare on dev, and say so
        split, tuned_accuracy = "dev", result["dev_accuracy"]
    manual = evaluate(tuned, MANUAL_PROMPT, split=split, progress=False, threads=None).rows[0]
    result.update(
        manual_prompt=MANUAL_PROMPT,
        manual_accuracy=manual["accuracy"],
        compared_on=split,
        tuned_accuracy=tuned_accuracy,
        curves_png=str(out_dir / "curves.png"),
    )
    plot_training_curves(
        out_dir / "metrics.jsonl",
        out_dir / "curves.png",
        title=f"{result['method']} on {dataset_label(config)}",
    )
    _warn_if_below_manual(result, tuned, MANUAL_PROMPT)
    result = tidy_floats(result)
    atomic_write_json(out_dir / "result.json", result)
    return result
