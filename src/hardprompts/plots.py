"""Pictures of a run: the reward and dev-accuracy curves from ``metrics.jsonl``."""

from __future__ import annotations

import json
from pathlib import Path

from hardprompts.checkpoint import atomic_path

REWARD_KEYS = ("rewards/mean", "rewards/task", "charts/mean_reward", "charts/reward")
#: Colours of the extra training curves (style transfer: content, style): none is the reward's
#: blue, and they stay apart for common colour-vision deficiencies (Okabe-Ito).
EXTRA_COLOURS = ("#E69F00", "#009E73", "#CC79A7", "#D55E00", "#56B4E9")


def read_metrics(path: str | Path) -> list[dict]:
    """The lines of a ``metrics.jsonl`` file."""
    return [
        json.loads(line)
        for line in Path(path).read_text(encoding="utf-8").splitlines()
        if line.strip()
    ]


def plot_training_curves(
    metrics_path: str | Path,
    png_path: str | Path,
    title: str = "",
    dev_score: str = "accuracy",
    extra_keys: tuple[str, ...] = (),
) -> Path:
    """Write a PNG with the training reward (left) and the dev score (right) against the step.

    ``dev_score``: the task's score name (``dev/<name>`` in the metrics; classification:
    accuracy, style transfer: reward); ``extra_keys``: more training curves on the left (style
    transfer: ``rewards/content``, ``rewards/style``)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = read_metrics(metrics_path)
    reward_key = next((k for k in REWARD_KEYS if any(k in r for r in rows)), None)
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 3.6))
    if reward_key is not None:
        pts = [(r["step"], r[reward_key]) for r in rows if reward_key in r]
        left.plot(*zip(*pts, strict=True), color="tab:blue", lw=1, alpha=0.5, label=reward_key)
        window = max(1, len(pts) // 20)
        if window > 1:
            smooth = [
                sum(v for _, v in pts[max(0, i - window + 1) : i + 1])
                / len(pts[max(0, i - window + 1) : i + 1])
                for i in range(len(pts))
            ]
            left.plot(
                [s for s, _ in pts], smooth, color="#0B3C8C", lw=2, label=f"moving mean ({window})"
            )
        for key, colour in zip(extra_keys, EXTRA_COLOURS, strict=False):
            more = [(r["step"], r[key]) for r in rows if key in r]
            if more:
                left.plot(*zip(*more, strict=True), color=colour, lw=1.2, label=key)
        _legend_below(left)
    left.set(xlabel="step", ylabel="training reward", title="reward")
    dev = [
        (r["step"], r[f"dev/{dev_score}"], r.get(f"dev/best_{dev_score}"))
        for r in rows
        if f"dev/{dev_score}" in r
    ]
    if dev:
        right.plot(
            [d[0] for d in dev],
            [d[1] for d in dev],
            color="tab:blue",
            marker="o",
            ms=3,
            label=f"dev {dev_score} (greedy prompt)",
        )
        right.plot(
            [d[0] for d in dev], [d[2] for d in dev], color="#E69F00", ls="--", label="best so far"
        )
        _legend_below(right)
    ylim = (0, 1.02) if dev_score == "accuracy" else None
    right.set(xlabel="step", ylabel=dev_score, title=f"dev {dev_score}", ylim=ylim)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    png_path = Path(png_path)
    png_path.parent.mkdir(parents=True, exist_ok=True)
    try:
        with atomic_path(png_path, suffix=".png") as tmp:
            fig.savefig(tmp, dpi=120, format="png", bbox_inches="tight")  # legends included
    finally:
        plt.close(fig)
    return png_path


def _legend_below(axes) -> None:
    """The legend under the plot, outside the lines it names."""
    axes.legend(loc="upper center", bbox_to_anchor=(0.5, -0.2), ncol=2, fontsize=8, frameon=False)
