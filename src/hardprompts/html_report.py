"""``hardprompts report PATH… --html``: one self-contained HTML page of a run, a sweep or a
comparison of runs.

* one run folder -> the **run page**: the settings that matter, the best prompt (tokens,
  perplexity), its dev/test scores beside the manual prompt's (when the run scored one), the
  training curves, the prompts that won a dev evaluation over time (step, prompt, reward, dev
  score, perplexity) and the best prompt's outputs on the test split, worst first;
* one sweep folder -> the **sweep page**: ``report.md``'s tables, the score-perplexity trade-off
  and one row per cell that opens that cell's run page (embedded in the same file);
* several run folders of one task -> the **comparison page**: scores side by side, the dev
  curves overlaid, and the runs' outputs on the same test inputs side by side, those where the
  runs differ first.

The page needs no network: Plotly's JavaScript (the offline bundle), the styles and the table
script are inlined, and the data of each table is a JSON island the script renders into a
sortable, filterable, paged table. A table keeps at most :data:`MAX_ROWS` rows in the file and
says how many it left out. The page is rendered by Jinja2 from the templates in
``hardprompts/report_templates``.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hardprompts.checkpoint import atomic_write_text
from hardprompts.errors import DataError
from hardprompts.plots import REWARD_KEYS
from hardprompts.runfolder import RunFolder, is_run_folder, is_sweep_folder, read_run_folder

__all__ = ["MAX_ROWS", "render_html", "write_html_report"]

#: Most rows one table keeps in the file (the rest are counted and left out); the browser pages
#: through them 50 at a time.
MAX_ROWS = 5000
#: The algorithm fields shown at the top of a run page when the config has them.
KEY_FIELDS = (
    "algorithm.name",
    "policy.model",
    "target.model",
    "task.kind",
    "task.dataset",
    "task.template",
    "policy.prompt_length",
    "train.steps",
    "train.seed",
    "train.eval_every",
    "algorithm.perplexity_weight",
    "algorithm.lr",
    "algorithm.prompts_per_step",
    "algorithm.replay_batch_size",
    "algorithm.residual_head",
)
COLORS = ("#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b")


# ----------------------------------------------------------------------------------------------
# Plain data for the templates
# ----------------------------------------------------------------------------------------------


@dataclass
class Table:
    """A table as the page's script renders it: columns, rows (JSON), and what was cut."""

    id: str
    columns: list[dict[str, str]]  # {"key", "label", "type": "text" | "num" | "bool" | "link"}
    rows: list[dict[str, Any]]
    total: int
    caption: str = ""

    @property
    def left_out(self) -> int:
        return self.total - len(self.rows)


@dataclass
class RunView:
    """Everything a run section shows."""

    anchor: str
    title: str
    path: str
    score: str
    settings: list[tuple[str, str]]
    config_json: str
    prompt: str
    tokens: list[str]
    perplexity: str
    best_step: Any
    headline: list[tuple[str, str]]
    scores: Table
    metrics: Table
    plots: list[str]
    visited: Table
    outputs: Table | None
    notes: list[str] = field(default_factory=list)


def _finite(value: Any) -> Any:
    """JSON-safe: NaN and infinities become None (JSON.parse rejects them), recursively."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(v) for v in value]
    return value


def _table(
    table_id: str, columns: list[tuple[str, str, str]], rows: list[dict], caption: str = ""
) -> Table:
    return Table(
        id=table_id,
        columns=[{"key": k, "label": label, "type": t} for k, label, t in columns],
        rows=_finite(rows[:MAX_ROWS]),
        total=len(rows),
        caption=caption,
    )


def _dotted(data: dict[str, Any], dotted: str) -> Any:
    for part in dotted.split("."):
        if not isinstance(data, dict) or part not in data:
            return None
        data = data[part]
    return data


def _fmt(value: Any, spec: str = ".4g") -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "–"
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return format(value, spec)
    return str(value)


def _score_spec(score: str) -> str:
    return ".3f" if score in ("accuracy", "score") else ".2f"


# ----------------------------------------------------------------------------------------------
# Plots (Plotly figures as <div>s; plotly.js itself is inlined once per page)
# ----------------------------------------------------------------------------------------------


def _figure_html(fig: Any, div_id: str) -> str:
    fig.update_layout(
        height=320,
        margin={"l": 50, "r": 20, "t": 40, "b": 40},
        template="plotly_white",
        legend={"orientation": "h", "y": -0.25},
    )
    return fig.to_html(
        full_html=False,
        include_plotlyjs=False,
        div_id=div_id,
        config={"displaylogo": False, "responsive": True},
    )


def _series(rows: list[dict], key: str) -> tuple[list[int], list[float]]:
    pts = [(r["step"], r[key]) for r in rows if isinstance(r.get(key), (int, float))]
    return [p[0] for p in pts], [p[1] for p in pts]


def _reward_key(rows: list[dict]) -> str | None:
    return next((k for k in REWARD_KEYS if any(k in r for r in rows)), None)


def _moving_mean(values: list[float], window: int) -> list[float]:
    out, total = [], 0.0
    for i, v in enumerate(values):
        total += v
        if i >= window:
            total -= values[i - window]
        out.append(total / min(i + 1, window))
    return out


def _run_plots(run: RunFolder, anchor: str) -> list[str]:
    """The curves of a run: reward, dev score, and the method's own diagnostics when logged
    (the policy's support for PIN/RLPrompt, the anchor's KL and events for APPO)."""
    import plotly.graph_objects as go

    rows, score = run.metrics, run.score_name
    plots = []
    reward = _reward_key(rows)
    if reward is not None:
        fig = go.Figure()
        x, y = _series(rows, reward)
        fig.add_scatter(x=x, y=y, name=reward, mode="lines", opacity=0.5)
        window = max(1, len(y) // 20)
        if window > 1:
            fig.add_scatter(x=x, y=_moving_mean(y, window), name=f"moving mean ({window})")
        for key in ("rewards/content", "rewards/style"):
            x, y = _series(rows, key)
            if y:
                fig.add_scatter(x=x, y=y, name=key, mode="lines")
        fig.update_layout(title="Training reward", xaxis_title="step", yaxis_title="reward")
        plots.append(_figure_html(fig, f"{anchor}-reward"))
    x, y = _series(rows, f"dev/{score}")
    if y:
        fig = go.Figure()
        fig.add_scatter(x=x, y=y, name=f"dev {score} (evaluated prompt)", mode="lines+markers")
        bx, by = _series(rows, f"dev/best_{score}")
        fig.add_scatter(x=bx, y=by, name="best so far", line={"dash": "dash"})
        fig.update_layout(title=f"Dev {score}", xaxis_title="step", yaxis_title=score)
        plots.append(_figure_html(fig, f"{anchor}-dev"))
    support = [k for k in ("charts/policy_support", "charts/entropy") if any(k in r for r in rows)]
    if support:
        fig = go.Figure()
        for key in support:
            fig.add_scatter(x=_series(rows, key)[0], y=_series(rows, key)[1], name=key)
        fig.update_layout(title="Policy: entropy and support", xaxis_title="step")
        plots.append(_figure_html(fig, f"{anchor}-policy"))
    kls = [k for k in ("charts/kl_anchor", "charts/approx_kl") if any(k in r for r in rows)]
    events = [r for r in rows if r.get("anchor/event") in (1.0, -1.0)]
    if kls or events:
        fig = go.Figure()
        for key in kls:
            fig.add_scatter(x=_series(rows, key)[0], y=_series(rows, key)[1], name=key)
        for value, name, symbol in ((1.0, "anchor update", "triangle-up"),
                                    (-1.0, "anchor rollback", "triangle-down")):  # fmt: skip
            steps = [r["step"] for r in events if r["anchor/event"] == value]
            if steps:
                fig.add_scatter(
                    x=steps, y=[0.0] * len(steps), name=name, mode="markers",
                    marker={"symbol": symbol, "size": 11},
                )  # fmt: skip
        fig.update_layout(title="APPO: KL to the anchor, anchor events", xaxis_title="step")
        plots.append(_figure_html(fig, f"{anchor}-appo"))
    return plots


# ----------------------------------------------------------------------------------------------
# The run page
# ----------------------------------------------------------------------------------------------


def _scores_table(run: RunFolder, anchor: str) -> Table:
    """Tuned prompt vs the manual prompt: dev and test score, perplexity."""
    r, score = run.result, run.score_name
    rows = [
        {
            "which": f"tuned ({run.method})",
            "prompt": r["best_prompt"],
            "dev": r.get(f"dev_{score}"),
            "test": r.get(f"test_{score}"),
            "perplexity": r.get("prompt_perplexity"),
        }
    ]
    if "manual_prompt" in r:
        manual = r.get("manual")
        if not isinstance(manual, dict):
            manual = {}
        value = r.get(f"manual_{score}", manual.get(score))
        split = r.get("compared_on", "test")
        rows.append(
            {
                "which": "manual",
                "prompt": r["manual_prompt"],
                "dev": value if split == "dev" else None,
                "test": value if split == "test" else None,
                "perplexity": None,
            }
        )
    columns = [
        ("which", "", "text"),
        ("prompt", "prompt", "text"),
        ("dev", f"dev {score}", "num"),
        ("test", f"test {score}", "num"),
        ("perplexity", "prompt perplexity", "num"),
    ]
    return _table(f"{anchor}-scores", columns, rows)


def _metrics_table(run: RunFolder, anchor: str) -> Table:
    """Every dev_/test_ number of result.json, one row per metric."""
    r = run.result
    names = sorted(
        {k.split("_", 1)[1] for k in r if k.startswith(("dev_", "test_"))} - {"examples"}
    )
    rows = []
    for name in names:
        dev, test = r.get(f"dev_{name}"), r.get(f"test_{name}")
        if isinstance(dev, (int, float, type(None))) and isinstance(test, (int, float, type(None))):
            if dev is not None or test is not None:
                rows.append({"metric": name, "dev": dev, "test": test})
    columns = [("metric", "metric", "text"), ("dev", "dev", "num"), ("test", "test", "num")]
    return _table(f"{anchor}-metrics", columns, rows)


def _visited_table(run: RunFolder, anchor: str) -> Table:
    score = run.score_name
    reward = _reward_key(run.metrics)
    rows = [
        {
            "step": m["step"],
            "prompt": m["dev/prompt"],
            "reward": m.get(reward) if reward else None,
            "dev": m.get(f"dev/{score}"),
            "perplexity": run.visited_perplexity.get(m["dev/prompt"]),
        }
        for m in run.metrics
        if isinstance(m.get("dev/prompt"), str)
    ]
    columns = [
        ("step", "step", "num"),
        ("prompt", "prompt", "text"),
        ("reward", "training reward", "num"),
        ("dev", f"dev {score}", "num"),
        ("perplexity", "perplexity", "num"),
    ]
    caption = "The prompt that won each dev evaluation (metrics.jsonl's dev/prompt)."
    return _table(f"{anchor}-visited", columns, rows, caption)


#: Per-example judgements an outputs file may carry, in the order shown.
JUDGEMENTS = (
    ("correct", "correct", "bool"),
    ("reward", "reward", "num"),
    ("content", "content", "num"),
    ("style", "style", "num"),
    ("fluency", "fluency", "num"),
    ("style_correct", "style correct", "bool"),
)


def _worst_first(row: dict[str, Any]) -> tuple:
    """Sort key: wrong before right, then low reward before high."""
    correct = row.get("correct")
    reward = row.get("reward")
    return (
        0 if correct is False else 1,
        reward if isinstance(reward, (int, float)) else 0.0,
    )


def _outputs_table(run: RunFolder, anchor: str) -> Table | None:
    if run.outputs is None:
        return None
    rows = [{"n": i, **row} for i, row in enumerate(run.outputs)]
    rows.sort(key=_worst_first)
    present = {k for row in rows for k in row}
    columns = [("n", "#", "num"), ("input", "input", "text"), ("output", "output", "text")]
    if any(row.get("gold") is not None for row in rows):
        columns.append(("gold", "gold", "text"))
    columns += [c for c in JUDGEMENTS if c[0] in present]
    caption = "The best prompt on each test input, worst first (wrong, then lowest reward)."
    return _table(f"{anchor}-outputs", columns, rows, caption)


def _dataset_label(dataset: str) -> str:
    """A dataset as a title names it: a preset as it is, a folder by its name."""
    from hardprompts.demo import DEMO_DATA

    if Path(dataset) == DEMO_DATA:
        return "demo reviews"
    return Path(dataset).name if Path(dataset).is_absolute() else dataset


def _headline(run: RunFolder) -> list[tuple[str, str]]:
    """The numbers under the best prompt: dev and test score, the manual prompt's, perplexity."""
    r, score = run.result, run.score_name
    spec = _score_spec(score)
    out = [(f"dev {score}", _fmt(r.get(f"dev_{score}"), spec))]
    if r.get(f"test_{score}") is not None:
        out.append((f"test {score}", _fmt(r.get(f"test_{score}"), spec)))
    if "manual_prompt" in r:
        manual = r.get("manual")
        if not isinstance(manual, dict):
            manual = {}
        value = r.get(f"manual_{score}", manual.get(score))
        out.append((f"manual prompt, {r.get('compared_on', 'test')} {score}", _fmt(value, spec)))
    out.append(("prompt perplexity", _fmt(r.get("prompt_perplexity"), ".2f")))
    return out


def run_view(run: RunFolder, anchor: str = "run") -> RunView:
    r, score = run.result, run.score_name
    config = run.config
    settings = [(k, _fmt(_dotted(config, k))) for k in KEY_FIELDS if _dotted(config, k) is not None]
    notes = []
    if run.outputs is None:
        notes.append(
            "This run wrote no outputs_test.jsonl (a run from before it was recorded, or a task "
            "without a test split): evaluate the prompt with `hardprompts eval --outputs`."
        )
    if not any("dev/prompt" in m for m in run.metrics):
        notes.append("metrics.jsonl records no dev/prompt (a run from before it was recorded).")
    return RunView(
        anchor=anchor,
        title=f"{run.method} on {_dataset_label(str(_dotted(config, 'task.dataset') or '?'))}",
        path=str(run.path),
        score=score,
        settings=settings,
        config_json=json.dumps(config, indent=2, ensure_ascii=False),
        prompt=r["best_prompt"],
        tokens=[str(t) for t in r.get("tokens") or []],
        perplexity=_fmt(r.get("prompt_perplexity"), ".2f"),
        best_step=r.get("best_step", "–"),
        headline=_headline(run),
        scores=_scores_table(run, anchor),
        metrics=_metrics_table(run, anchor),
        plots=_run_plots(run, anchor),
        visited=_visited_table(run, anchor),
        outputs=_outputs_table(run, anchor),
        notes=notes,
    )


# ----------------------------------------------------------------------------------------------
# The sweep page
# ----------------------------------------------------------------------------------------------


def _sweep_context(root: Path) -> dict[str, Any]:
    import plotly.graph_objects as go

    from hardprompts.report import collect, summarise, tradeoff_series

    runs = collect(root)
    score = runs[0].score_name
    summaries = summarise(runs)
    summary = _table(
        "sweep-summary",
        [
            ("method", "method", "text"),
            ("alpha", "α", "num"),
            ("seeds", "seeds", "num"),
            ("test", f"test {score} (mean)", "num"),
            ("std", "± std", "num"),
            ("dev", f"dev {score} (mean)", "num"),
            ("perplexity", "prompt perplexity", "num"),
            ("prompt", "example prompt", "text"),
        ],
        [
            {
                "method": s.method,
                "alpha": s.alpha,
                "seeds": len(s.seeds),
                "test": s.test_score_mean,
                "std": s.test_score_std,
                "dev": s.dev_score_mean,
                "perplexity": s.prompt_perplexity_mean,
                "prompt": s.prompts[0],
            }
            for s in summaries
        ],
    )
    cells = [read_run_folder(r.path.parent) for r in runs]
    views = [run_view(c, f"cell-{i}") for i, c in enumerate(cells)]
    cell_rows = [
        {
            "open": f"#{v.anchor}",
            "method": r.method,
            "alpha": r.alpha,
            "seed": r.seed,
            "test": r.test_score,
            "dev": r.dev_score,
            "perplexity": r.prompt_perplexity,
            "judge": r.judge,
            "prompt": r.prompt,
        }
        for r, v in zip(runs, views, strict=True)
    ]
    cells_table = _table(
        "sweep-cells",
        [
            ("open", "run page", "link"),
            ("method", "method", "text"),
            ("alpha", "α", "num"),
            ("seed", "seed", "text"),
            ("test", f"test {score}", "num"),
            ("dev", f"dev {score}", "num"),
            ("perplexity", "prompt perplexity", "num"),
            ("judge", "judge", "text"),
            ("prompt", "prompt", "text"),
        ],
        cell_rows,
    )
    content = tradeoff_series(summaries, score)
    fig = go.Figure()
    for i, s in enumerate(content["series"]):
        fig.add_scatter(
            x=s["perplexity"],
            y=s["score"],
            error_y={"type": "data", "array": s["score_std"]},
            mode="lines+markers+text",
            text=[f"α={a:g}" for a in s["alpha"]],
            textposition="top right",
            name=s["method"],
            line={"color": COLORS[i % len(COLORS)]},
        )
    fig.update_layout(
        title=f"Test {score} vs prompt perplexity",
        xaxis_title="prompt perplexity (lower reads better)",
        yaxis_title=f"test {score} (mean over seeds)",
    )
    fig.update_xaxes(type=content["xscale"])
    judges = sorted({r.judge for r in runs})
    return {
        "kind": "sweep",
        "title": f"Sweep {root.name}",
        "path": str(root),
        "score": score,
        "summary": summary,
        "cells": cells_table,
        "tradeoff": _figure_html(fig, "sweep-tradeoff"),
        "judges": judges,
        "runs": views,
    }


# ----------------------------------------------------------------------------------------------
# The comparison page
# ----------------------------------------------------------------------------------------------


def _label(run: RunFolder, i: int) -> str:
    return f"{i + 1}: {run.method} ({run.path.name})"


def _compare_context(runs: list[RunFolder]) -> dict[str, Any]:
    import plotly.graph_objects as go

    keys = {r.task_key for r in runs}
    if len(keys) > 1:
        raise DataError(
            "a comparison needs runs of one task (same task.kind and task.dataset); got "
            + "; ".join(f"{r.path}: {r.task_key[0]}/{r.task_key[1]}" for r in runs)
        )
    scores = {r.score_name for r in runs}
    if len(scores) > 1:
        raise DataError(f"the runs report different scores ({', '.join(sorted(scores))})")
    score = runs[0].score_name
    labels = [_label(r, i) for i, r in enumerate(runs)]
    side = _table(
        "compare-scores",
        [
            ("run", "run", "text"),
            ("method", "method", "text"),
            ("prompt", "best prompt", "text"),
            ("dev", f"dev {score}", "num"),
            ("test", f"test {score}", "num"),
            ("perplexity", "prompt perplexity", "num"),
            ("steps", "steps", "num"),
            ("seconds", "wall seconds", "num"),
        ],
        [
            {
                "run": label,
                "method": r.method,
                "prompt": r.result["best_prompt"],
                "dev": r.result.get(f"dev_{score}"),
                "test": r.result.get(f"test_{score}"),
                "perplexity": r.result.get("prompt_perplexity"),
                "steps": r.result.get("steps"),
                "seconds": r.result.get("wall_seconds"),
            }
            for r, label in zip(runs, labels, strict=True)
        ],
    )
    fig = go.Figure()
    for i, (r, label) in enumerate(zip(runs, labels, strict=True)):
        x, y = _series(r.metrics, f"dev/best_{score}")
        fig.add_scatter(x=x, y=y, name=label, line={"color": COLORS[i % len(COLORS)]})
    fig.update_layout(title=f"Best dev {score} so far", xaxis_title="step", yaxis_title=score)
    return {
        "kind": "compare",
        "title": "Comparison: " + " vs ".join(r.method for r in runs),
        "score": score,
        "labels": labels,
        "side": side,
        "curves": _figure_html(fig, "compare-dev"),
        "outputs": _compare_outputs(runs),
        "runs": [run_view(r, f"run-{i}") for i, r in enumerate(runs)],
    }


def _compare_outputs(runs: list[RunFolder]) -> Table | None:
    """One row per test input the runs share: each run's output and judgement, the inputs where
    the outputs differ first (then the worst)."""
    have = [r for r in runs if r.outputs is not None]
    if len(have) < 2:
        return None
    first = have[0].outputs or []
    index: list[dict[str, dict]] = []
    for r in have:
        by_input: dict[str, dict] = {}
        for item in r.outputs or []:
            by_input.setdefault(str(item.get("input")), item)
        index.append(by_input)
    rows = []
    for n, base in enumerate(first):
        key = str(base.get("input"))
        if not all(key in ix for ix in index):
            continue
        row: dict[str, Any] = {"n": n, "input": base.get("input"), "gold": base.get("gold")}
        outs = []
        for i, ix in enumerate(index):
            other = ix[key]
            row[f"output_{i}"] = other.get("output")
            row[f"judge_{i}"] = other.get("correct", other.get("reward"))
            outs.append(other.get("output"))
        row["differ"] = len({json.dumps(o) for o in outs}) > 1
        rows.append(row)

    def order(row: dict[str, Any]) -> tuple:
        judge = row.get("judge_0")  # run 1's judgement: correct (bool) or reward
        return (not row["differ"], _worst_first(
            {"correct": judge} if isinstance(judge, bool) else {"reward": judge}
        ))  # fmt: skip

    rows.sort(key=order)
    judge_type = "bool" if isinstance(rows[0].get("judge_0") if rows else None, bool) else "num"
    judge_name = "correct" if judge_type == "bool" else "reward"
    columns = [("n", "#", "num"), ("differ", "differ", "bool"), ("input", "input", "text")]
    if any(r.get("gold") is not None for r in rows):
        columns.append(("gold", "gold", "text"))
    for i, r in enumerate(have):
        label = _label(r, runs.index(r))
        columns += [
            (f"output_{i}", f"output {label}", "text"),
            (f"judge_{i}", judge_name, judge_type),
        ]
    caption = "Outputs of each run's best prompt on the same test inputs; differing rows first."
    return _table("compare-outputs", columns, rows, caption)


# ----------------------------------------------------------------------------------------------
# Rendering
# ----------------------------------------------------------------------------------------------


def _environment():
    import jinja2

    env = jinja2.Environment(
        loader=jinja2.PackageLoader("hardprompts", "report_templates"),
        autoescape=jinja2.select_autoescape(["html", "j2"]),
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    return env


def _asset(name: str) -> str:
    from importlib.resources import files

    return (files("hardprompts") / "report_templates" / name).read_text(encoding="utf-8")


def render_html(paths: Sequence[str | Path]) -> str:
    """The page for ``paths``: one run folder, one sweep folder, or several run folders."""
    import plotly
    from plotly.offline import get_plotlyjs

    from hardprompts._version import __version__

    folders = [Path(p) for p in paths]
    if not folders:
        raise DataError("give a run folder, a sweep folder, or several run folders")
    for p in folders:
        if not p.is_dir():
            raise DataError(f"{p} is not a folder; give run folders or a sweep folder")
    if len(folders) == 1 and not is_run_folder(folders[0]) and is_sweep_folder(folders[0]):
        context = _sweep_context(folders[0])
        template = "sweep.html.j2"
    elif len(folders) == 1:
        context = {"kind": "run", "run": run_view(read_run_folder(folders[0]))}
        context["title"] = context["run"].title
        template = "run.html.j2"
    else:
        sweeps = [p for p in folders if not is_run_folder(p) and is_sweep_folder(p)]
        if sweeps:
            raise DataError(
                f"{sweeps[0]} is a sweep folder; report a sweep on its own, or compare run "
                "folders (e.g. its cells <method>/alpha=<a>/seed=<s>)"
            )
        context = _compare_context([read_run_folder(p) for p in folders])
        template = "compare.html.j2"
    context.update(
        style=_asset("report.css"),
        script=_asset("report.js"),
        plotly_js=get_plotlyjs(),
        versions=f"hardprompts {__version__}, plotly {plotly.__version__}",
        max_rows=MAX_ROWS,
    )
    return _environment().get_template(template).render(**context)


def write_html_report(paths: Sequence[str | Path], out: str | Path | None = None) -> Path:
    """Write the page of ``paths`` to ``out`` (default: ``<first path>/report.html``)."""
    html = render_html(paths)
    target = Path(out) if out is not None else Path(paths[0]) / "report.html"
    target.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(target, html)
    return target
