"""``hardprompts report DIR``: tables and the score-perplexity trade-off of a sweep.

Reads every ``DIR/<method>/alpha=<α>/seed=<seed>/result.json`` written by ``hardprompts sweep``
and writes, atomically:

* ``report.csv``: one row per (method, α): number of seeds, the test score's mean and sample
  standard deviation (ddof = 1, empty for one seed) over seeds, the dev score's mean, prompt
  perplexity mean (arithmetic, over the seeds that have one), and every seed's prompt. Numbers are
  written at full precision. The score is the task's (``score_name`` in result.json): accuracy
  for classification (columns ``test_accuracy_mean`` …), the reward for style transfer
  (``test_reward_mean`` …); a folder whose runs have different scores is refused.
* ``report.md``: the same summary for reading, then one row per run with the LM that judged its
  perplexity, and a warning when the runs were judged by different LMs (not comparable).
* ``tradeoff.png``: the test score against prompt perplexity, one line per method through its α
  points (ordered by α, labelled ``α=…``), error bars = std over seeds; log-scale x when the
  perplexities span more than a factor of 10 (the trade-off figure of Patel et al. 2025;
  docs: Methods › Perplexity regularisation).
* ``tradeoff.json``: the score's name, the plotted series (method, α, perplexity, score, std) and
  the x scale, so tools and tests can read the figure's content without parsing pixels.
"""

from __future__ import annotations

import csv
import io
import json
import math
import statistics
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hardprompts.checkpoint import atomic_path, atomic_write_json, atomic_write_text
from hardprompts.errors import DataError

__all__ = ["Run", "Summary", "collect", "score_name_of", "summarise", "write_report"]


@dataclass(frozen=True)
class Run:
    """One finished cell of a sweep."""

    method: str
    alpha: float
    seed: str
    score_name: str  # the task's score: "accuracy" (classification), "reward" (style transfer)
    test_score: float | None
    dev_score: float | None
    prompt_perplexity: float | None
    prompt: str
    judge: str
    path: Path


@dataclass(frozen=True)
class Summary:
    """Runs of one (method, α) aggregated over seeds."""

    method: str
    alpha: float
    seeds: list[str]
    test_score_mean: float | None
    test_score_std: float | None
    dev_score_mean: float | None
    prompt_perplexity_mean: float | None
    prompts: list[str]


def score_name_of(result: dict[str, Any], path: Path) -> str:
    """The task's score of a result.json: its ``score_name`` (results before it was recorded:
    ``accuracy`` when they have ``dev_accuracy``)."""
    name = result.get("score_name")
    if name is None and "dev_accuracy" in result:
        name = "accuracy"
    if not isinstance(name, str) or f"dev_{name}" not in result:
        raise DataError(
            f"{path}: no score recorded (expected score_name and dev_<score>); is it a "
            "result.json of `hardprompts tune`/`sweep`?"
        )
    return name


def collect(root: str | Path) -> list[Run]:
    """Every ``<method>/alpha=<α>/seed=<seed>/result.json`` under ``root``, sorted.

    Raises DataError when the runs have different scores (e.g. classification and style transfer
    cells in one folder): their numbers cannot share a table."""
    root = Path(root)
    if not root.is_dir():
        raise DataError(
            f"sweep folder {root} does not exist; pass the --out of `hardprompts sweep`"
        )
    runs = []
    for path in sorted(root.glob("*/alpha=*/seed=*/result.json")):
        seed_dir, alpha_dir, method_dir = path.parent, path.parent.parent, path.parent.parent.parent
        try:
            alpha = float(alpha_dir.name.removeprefix("alpha="))
            result = json.loads(path.read_text(encoding="utf-8"))
        except (ValueError, json.JSONDecodeError) as exc:
            raise DataError(f"{path}: not a sweep result ({exc})") from None
        name = score_name_of(result, path)
        runs.append(
            Run(
                method=method_dir.name,
                alpha=alpha,
                seed=seed_dir.name.removeprefix("seed="),
                score_name=name,
                test_score=result.get(f"test_{name}"),
                dev_score=result.get(f"dev_{name}"),
                prompt_perplexity=result.get("prompt_perplexity"),
                prompt=result["best_prompt"],
                judge=str(result.get("perplexity_reference") or "(not recorded)"),
                path=path,
            )
        )
    if not runs:
        raise DataError(
            f"no results under {root} (expected <method>/alpha=<a>/seed=<s>/result.json); run "
            "`hardprompts sweep --out` into it first"
        )
    names = sorted({r.score_name for r in runs})
    if len(names) > 1:
        raise DataError(
            f"{root}: the runs have different scores ({', '.join(names)}), e.g. classification "
            "and style-transfer cells; report each task's sweep folder on its own"
        )
    runs.sort(key=lambda r: (r.method, r.alpha, r.seed))
    return runs


def _finite(values: list[float | None]) -> list[float]:
    return [v for v in values if v is not None and math.isfinite(v)]


def summarise(runs: list[Run]) -> list[Summary]:
    """One :class:`Summary` per (method, α), in method then α order."""
    groups: dict[tuple[str, float], list[Run]] = {}
    for run in runs:
        groups.setdefault((run.method, run.alpha), []).append(run)
    out = []
    for (method, alpha), group in sorted(groups.items()):
        tests = _finite([r.test_score for r in group])
        devs = _finite([r.dev_score for r in group])
        ppls = _finite([r.prompt_perplexity for r in group])
        out.append(
            Summary(
                method=method,
                alpha=alpha,
                seeds=[r.seed for r in group],
                test_score_mean=statistics.fmean(tests) if tests else None,
                test_score_std=statistics.stdev(tests) if len(tests) > 1 else None,
                dev_score_mean=statistics.fmean(devs) if devs else None,
                prompt_perplexity_mean=statistics.fmean(ppls) if ppls else None,
                prompts=[r.prompt for r in group],
            )
        )
    return out


def _csv_fields(score: str) -> list[str]:
    return [
        "method",
        "alpha",
        "n_seeds",
        "seeds",
        f"test_{score}_mean",
        f"test_{score}_std",
        f"dev_{score}_mean",
        "prompt_perplexity_mean",
        "prompts",
    ]


def _num(value: float | None) -> str:
    return "" if value is None else repr(float(value))


def _csv(summaries: list[Summary], score: str) -> str:
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(_csv_fields(score))
    for s in summaries:
        writer.writerow(
            [
                s.method,
                _num(s.alpha),
                len(s.seeds),
                " ".join(s.seeds),
                _num(s.test_score_mean),
                _num(s.test_score_std),
                _num(s.dev_score_mean),
                _num(s.prompt_perplexity_mean),
                json.dumps(s.prompts, ensure_ascii=False),
            ]
        )
    return buf.getvalue()


def _md_cell(text: str) -> str:
    """A prompt shown in a Markdown table: repr-quoted (control characters visible), | escaped."""
    return repr(text).replace("|", "\\|")


def _fmt(value: float | None, spec: str) -> str:
    return "–" if value is None else format(value, spec)


def _markdown(root: Path, summaries: list[Summary], runs: list[Run], score: str) -> str:
    spec = ".4f" if score == "accuracy" else ".2f"
    lines = [
        f"# Sweep report: {root}",
        "",
        f"Test {score} is the mean ± sample std over seeds of the prompt chosen on dev; "
        "prompt perplexity is each run's result.json value (under the run's reference LM, column "
        "'judge' below), averaged. Trade-off figure: `tradeoff.png`.",
        "",
    ]
    judges = sorted({r.judge for r in runs})
    if len(judges) > 1:
        lines += [
            f"**Warning:** perplexities were judged by {len(judges)} different reference LMs "
            f"({', '.join(judges)}), so they are not comparable across those runs. Give every "
            "method the same judge (e.g. algorithm.reference_model for pez/softprompt).",
            "",
        ]
    lines += [
        f"| method | α | seeds | test {score} | dev {score} | prompt perplexity | example prompt |",
        "|---|---|---|---|---|---|---|",
    ]
    for s in summaries:
        test = _fmt(s.test_score_mean, spec)
        if s.test_score_std is not None:
            test += f" ± {s.test_score_std:{spec}}"
        lines.append(
            f"| {s.method} | {s.alpha:g} | {len(s.seeds)} | {test} | "
            f"{_fmt(s.dev_score_mean, spec)} | "
            f"{_fmt(s.prompt_perplexity_mean, '.2f')} | {_md_cell(s.prompts[0])} |"
        )
    lines += [
        "",
        "## Runs",
        "",
        f"| method | α | seed | test {score} | dev {score} | prompt perplexity | judge | prompt |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in runs:
        lines.append(
            f"| {r.method} | {r.alpha:g} | {r.seed} | {_fmt(r.test_score, spec)} | "
            f"{_fmt(r.dev_score, spec)} | {_fmt(r.prompt_perplexity, '.2f')} | {r.judge} | "
            f"{_md_cell(r.prompt)} |"
        )
    return "\n".join(lines) + "\n"


def tradeoff_series(summaries: list[Summary], score: str = "accuracy") -> dict[str, Any]:
    """The figure's content: per method, points (perplexity, test score) ordered by α."""
    series = []
    for method in dict.fromkeys(s.method for s in summaries):
        points = [
            s
            for s in summaries
            if s.method == method
            and s.test_score_mean is not None
            and s.prompt_perplexity_mean is not None
        ]
        points.sort(key=lambda s: s.alpha)
        if points:
            series.append(
                {
                    "method": method,
                    "alpha": [s.alpha for s in points],
                    "perplexity": [s.prompt_perplexity_mean for s in points],
                    "score": [s.test_score_mean for s in points],
                    "score_std": [s.test_score_std or 0.0 for s in points],
                }
            )
    xs = [x for s in series for x in s["perplexity"]]
    log_x = bool(xs) and min(xs) > 0 and max(xs) / min(xs) > 10
    return {"score": score, "series": series, "xscale": "log" if log_x else "linear"}


def draw_series(ax, series: list[dict[str, Any]], fontsize: int = 8) -> None:
    """Draw :func:`tradeoff_series` lines on a matplotlib axis: error bars, each point's α."""
    for s in series:
        ax.errorbar(
            s["perplexity"],
            s["score"],
            yerr=s["score_std"],
            marker="o",
            capsize=3,
            label=s["method"],
        )
        for x, y, a in zip(s["perplexity"], s["score"], s["alpha"], strict=True):
            ax.annotate(
                f"α={a:g}", (x, y), textcoords="offset points", xytext=(4, 4), fontsize=fontsize
            )


def _plot(content: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 4.4), dpi=120)
    try:
        draw_series(ax, content["series"])
        ax.set_xscale(content["xscale"])
        ax.set_xlabel("prompt perplexity (lower reads better)")
        ax.set_ylabel(f"test {content['score']} (mean over seeds)")
        ax.set_title(f"{content['score'].capitalize()} vs prompt perplexity")
        if content["series"]:
            ax.legend()
        ax.grid(alpha=0.3)
        fig.tight_layout()
        with atomic_path(path, suffix=".png") as tmp:
            fig.savefig(tmp, format="png")
    finally:
        plt.close(fig)


def write_report(root: str | Path) -> dict[str, Path]:
    """Write report.csv, report.md, tradeoff.png and tradeoff.json into ``root``; returns paths."""
    root = Path(root)
    runs = collect(root)
    score = runs[0].score_name
    summaries = summarise(runs)
    paths = {
        "csv": root / "report.csv",
        "md": root / "report.md",
        "png": root / "tradeoff.png",
        "json": root / "tradeoff.json",
    }
    atomic_write_text(paths["csv"], _csv(summaries, score))
    atomic_write_text(paths["md"], _markdown(root, summaries, runs, score))
    content = tradeoff_series(summaries, score)
    atomic_write_json(paths["json"], content)
    _plot(content, paths["png"])
    return paths
