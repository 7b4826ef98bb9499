"""What several CLI and served-run tests build alike: a six-review dataset and the `--set`
arguments of a small PIN run on the demo data."""

from __future__ import annotations

from pathlib import Path

from hardprompts.demo import DEMO_DATA

REVIEWS = [
    ("the movie was great and fun", 1),
    ("a terrible film , bad and boring", 0),
    ("great acting , great cast", 1),
    ("it was bad , not good", 0),
    ("the plot was terrible", 0),
    ("a good film , it was great", 1),
]


def write_reviews(root: Path) -> Path:
    """train / dev / test TSVs of REVIEWS in three orders under ``root``; returns ``root``."""
    for split, rows in (
        ("train", REVIEWS),
        ("dev", REVIEWS[::-1]),
        ("test", REVIEWS[1:] + REVIEWS[:1]),
    ):
        lines = ["sentence\tlabel"] + [f"{x}\t{y}" for x, y in rows]
        (root / f"{split}.tsv").write_text("\n".join(lines) + "\n")
    return root


def demo_pin_sets(model: str) -> list[str]:
    """PIN on the shipped demo reviews with ``model`` as policy LM and target, a small MLP and
    4 prompts per step (add steps, evaluation and checkpoint settings)."""
    return [
        "algorithm.name=pin",
        f"task.dataset={DEMO_DATA}",
        "task.split_seed=null",
        "task.verbalizers=[' terrible', ' great']",
        f"target.model={model}",
        f"policy.model={model}",
        "policy.mlp_hidden=16",
        "algorithm.prompts_per_step=4",
    ]


def set_args(sets: list[str]) -> list[str]:
    """``--set`` before each of ``sets``."""
    return [a for s in sets for a in ("--set", s)]
