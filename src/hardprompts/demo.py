"""``hardprompts demo``: the whole job, offline, in a few minutes on a laptop-class CPU.

It tunes a prompt with PIN, using the project's own small language model (``builtin:yelp-small``)
as both the policy's frozen LM and the target, on a small review dataset shipped in the package
(``hardprompts/demo_data``, written by ``scripts/make_demo_data.py``). It then prints the manual
prompt's test accuracy beside the tuned prompt's, the prompt, its tokens and its perplexity, and
writes ``result.json`` and ``curves.png`` (reward and dev accuracy) to the output folder.

With ``--dataset`` (a preset such as ``sst-2`` read from ``task.data_dir``, or a folder of your
own files), ``--method`` and ``--steps`` the same command does real work.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from hardprompts.checkpoint import atomic_write_json
from hardprompts.config import Config, apply_overrides, config_from_dict
from hardprompts.errors import ConfigError
from hardprompts.tasks import PRESETS

DEMO_DATA = Path(__file__).parent / "demo_data"
BUILTIN = "builtin:yelp-small"
MANUAL_PROMPT = "It was"

#: Per-method settings of the demo (the rest are each method's paper defaults).
METHOD_SETTINGS: dict[str, dict[str, Any]] = {
    "pin": {"name": "pin", "residual_head": True},
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


def dataset_label(config: Config) -> str:
    """A short name for the dataset: 'demo reviews' for the shipped set, else its name or folder."""
    dataset = Path(config.task.dataset)
    return "demo reviews" if dataset == DEMO_DATA else dataset.name or config.task.dataset


def run_demo(config: Config, *, resume: bool = False) -> dict[str, Any]:
    """Tune, then score the manual prompt on test and draw the curves; returns the extended result."""
    from hardprompts.plots import plot_training_curves
    from hardprompts.training import run_with_context

    result, ctx = run_with_context(config, resume=resume)
    out_dir = Path(config.out_dir)
    if result["test_accuracy"] is not None:  # the loop already scored the tuned prompt on test
        split, tuned_accuracy = "test", result["test_accuracy"]
    else:  # a dataset without a test split (yelp-2): compare on dev, and say so
        split, tuned_accuracy = "dev", result["dev_accuracy"]
    manual = ctx.task.evaluate([MANUAL_PROMPT], split)[0]
    result.update(
        manual_prompt=MANUAL_PROMPT,
        manual_accuracy=manual.metrics["accuracy"],
        compared_on=split,
        tuned_accuracy=tuned_accuracy,
        curves_png=str(out_dir / "curves.png"),
    )
    plot_training_curves(
        out_dir / "metrics.jsonl",
        out_dir / "curves.png",
        title=f"{result['method']} on {dataset_label(config)}",
    )
    atomic_write_json(out_dir / "result.json", result)
    return result
