"""The ``hardprompts`` command line: eval, tune, demo, config, sweep, report, data.

Configuration precedence everywhere: defaults < ``--config`` YAML < ``--set key.sub=value``.
User errors print one message (no traceback) and exit with status 2; inputs (config, devices,
output paths, data) are checked before anything is written. ``--threads`` and the quieting of
third-party libraries are described in :mod:`hardprompts.runtime`.
"""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.padding import Padding
from rich.table import Table
from rich.text import Text

from hardprompts.cli_common import err, user_errors

app = typer.Typer(
    help="Find short, discrete, human-readable prompts for frozen language models.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
out = Console()

ConfigOpt = Annotated[Path | None, typer.Option("--config", "-c", help="YAML config file.")]
SetOpt = Annotated[
    list[str] | None,
    typer.Option("--set", help="Override a config field, e.g. --set train.steps=100 (repeatable)."),
]
ThreadsOpt = Annotated[
    str,
    typer.Option(
        help="CPU threads for torch: a number, or auto (1 for models under 50M parameters, else "
        "one per core up to 8; $OMP_NUM_THREADS wins over auto)."
    ),
]


def _load(config: Path | None, overrides: list[str] | None, extra: list[str] = ()):
    from hardprompts.config import load_config

    return load_config(config, [*(overrides or []), *extra])


def _checked(cfg):
    """Check what the config asks of this machine (devices) before any model is loaded."""
    from hardprompts.modeling import check_devices

    check_devices(cfg)
    return cfg


def format_perplexity(value: float | None) -> str:
    """1305994368.0 -> '1.31e+09'; 7.08 -> '7.1'; None or nan -> 'n/a'."""
    if value is None or math.isnan(value):
        return "n/a"
    return f"{value:.1f}" if value < 1e4 else f"{value:.3g}"


def _read_prompt_file(path: Path) -> list[str]:
    from hardprompts.errors import ConfigError, not_utf8

    if not path.is_file():
        raise ConfigError(f"--prompt-file {path} does not exist")
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError("--prompt-file " + not_utf8(path, exc)) from None
    prompts = [line.strip() for line in text.splitlines() if line.strip()]
    if not prompts:
        raise ConfigError(
            f"--prompt-file {path} holds no prompt (it is empty or every line is blank); write one "
            "prompt per line (no --prompt at all scores the bare template)"
        )
    return prompts


def _check_output_file(path: Path, option: str = "--output") -> None:
    from hardprompts.checkpoint import check_writable_dir
    from hardprompts.errors import ConfigError

    if path.is_dir():
        raise ConfigError(
            f"{option} {path} is a folder; give a file path, e.g. {path / 'scores.json'}"
        )
    check_writable_dir(path.parent, f"{option} {path}: the folder")


@app.command("eval")
@user_errors
def eval_cmd(
    config: ConfigOpt = None,
    prompt: Annotated[
        list[str] | None, typer.Option("--prompt", "-p", help="Prompt to score (repeatable).")
    ] = None,
    prompt_file: Annotated[
        Path | None, typer.Option(help="File with one prompt per line (blank lines skipped).")
    ] = None,
    split: Annotated[str, typer.Option(help="Split to score: train, dev or test.")] = "test",
    as_json: Annotated[
        bool, typer.Option("--json", help="Print JSON to stdout instead of a table.")
    ] = False,
    output: Annotated[
        Path | None, typer.Option("--output", "-o", help="Also write the JSON here.")
    ] = None,
    outputs: Annotated[
        Path | None,
        typer.Option(
            "--outputs",
            help="Write one JSON line per (prompt, example): prompt, input (as in the data), "
            "output (the generated answer or chosen option) and correct.",
        ),
    ] = None,
    threads: ThreadsOpt = "auto",
    set_: SetOpt = None,
) -> None:
    """Score prompts (or the bare template) on a split with the task's metrics: score (the task
    metric), n, seconds; classification and multiple choice also accuracy."""
    from hardprompts.api import evaluate
    from hardprompts.checkpoint import atomic_write_json, atomic_write_text

    cfg = _load(config, set_)
    if output is not None:
        _check_output_file(output)
    if outputs is not None:
        _check_output_file(outputs, "--outputs")
    prompts = list(prompt or [])
    if prompt_file is not None:
        prompts += _read_prompt_file(prompt_file)
    if not prompts:
        prompts = [""]  # the bare template
    scored = evaluate(
        cfg,
        prompts,
        split=split,
        outputs=outputs is not None,
        progress=not as_json,
        threads=threads,
    )
    if scored.outputs is not None and outputs is not None:
        lines = [
            json.dumps({"prompt": p, **record}, ensure_ascii=False)
            for p, per_prompt in zip(prompts, scored.outputs, strict=True)
            for record in per_prompt
        ]
        atomic_write_text(outputs, "\n".join(lines) + "\n")
    metrics = [{k: v for k, v in row.items() if k != "prompt"} for row in scored.rows]
    described = dict(scored.info)
    described.pop("source", None)
    _warn_absent_classes(metrics[0], scored.info, split)
    report = scored.to_dict()
    n = scored.num_inputs
    if output is not None:
        atomic_write_json(output, report)
    if as_json:
        sys.stdout.write(json.dumps(report, indent=2) + "\n")
        return
    table = Table(title=f"{cfg.task.dataset} {split} ({n} examples) on {cfg.target.model}")
    columns = list(metrics[0])
    same = [k for k in columns if k != "score" and all(m[k] == m.get("score") for m in metrics)]
    if same:  # the score is another column (classification, multiple choice: accuracy)
        columns.remove("score")
        described = {**described, "score": same[0]}
    headers = [col.replace("_", " ").replace("per class", "per-class") for col in columns]
    names = [repr(p) if p else "(bare template)" for p in prompts]
    cells = [[_cell(m[col]) for col in columns] for m in metrics]
    out.print(_fitting_table(table, headers, names, cells))
    out.print(", ".join(f"{k} {v!r}" for k, v in described.items()))
    if scored.target_usage.get("pairs"):
        out.print(f"target work: {scored.usage_summary()}")
    if scored.approximation is not None:
        out.print(f"[yellow]note:[/] {scored.approximation}")
    for path in (output, outputs):
        if path is not None:
            out.print(f"wrote {path}")


def _fitting_table(table: Table, headers: list[str], names: list[str], cells: list[list[str]]):
    """``table`` with a prompt column and one column per metric, or, when that is wider than
    the terminal, one row per metric and one column per prompt (folded: nothing is cut)."""
    # each metric column as wide as its longest value or header word; the prompt at least 16
    need = (
        4
        + 16
        + sum(
            3 + max([len(w) for w in header.split()] + [len(row[i]) for row in cells])
            for i, header in enumerate(headers)
        )
    )
    table.add_column("prompt", justify="left", overflow="fold")
    for header in headers:
        table.add_column(header, justify="right", overflow="fold")
    for name, row in zip(names, cells, strict=True):
        table.add_row(name, *row)
    if need <= out.width:
        return table
    turned = Table(title=table.title)
    turned.add_column("metric", justify="left", overflow="fold")
    for name in names:
        turned.add_column(name, justify="right", overflow="fold")
    for i, header in enumerate(headers):
        turned.add_row(header, *(row[i] for row in cells))
    return turned


def _cell(value) -> str:
    """A metric in the eval table: floats to 4 places, lists of floats to 3, nan and None
    (a metric not defined for this judge) as n/a."""
    if value is None:
        return "n/a"
    if isinstance(value, list):
        return " ".join("n/a" if v is None or math.isnan(v) else f"{v:.3f}" for v in value)
    if isinstance(value, float):
        return "n/a" if math.isnan(value) else f"{value:.4f}"
    return str(value)


def _warn_absent_classes(metrics: dict, described: dict, split: str) -> None:
    """Say so when a class has no example in the scored split (its per-class accuracy is nan)."""
    per_class = metrics.get("per_class_accuracy")
    if not isinstance(per_class, list):
        return
    words = described.get("verbalizers") or []
    absent = [c for c, v in enumerate(per_class) if isinstance(v, float) and math.isnan(v)]
    if absent:
        err.print(
            f"[yellow]warning:[/] {described.get('source', split)} has no example of class "
            + ", ".join(f"{c} ({words[c]!r})" if c < len(words) else str(c) for c in absent)
            + "; its per-class accuracy is n/a. Check that task.verbalizers has one word per class.",
            highlight=False,
        )


@app.command("tune")
@user_errors
def tune_cmd(
    config: ConfigOpt = None,
    out_dir: Annotated[
        Path | None, typer.Option("--out", help="Output folder (overrides out_dir).")
    ] = None,
    resume: Annotated[
        bool,
        typer.Option(
            help="Continue the run in the output folder from its checkpoint (an error when it has "
            "none; the previous checkpoint is used, saying so, when the latest is damaged)."
        ),
    ] = False,
    threads: ThreadsOpt = "auto",
    set_: SetOpt = None,
) -> None:
    """Optimise a prompt with algorithm.name; writes metrics.jsonl, TensorBoard events, result.json."""
    from hardprompts.api import tune

    extra = [f"out_dir={out_dir}"] if out_dir is not None else []
    cfg = _load(config, set_, extra)
    result = tune(cfg, resume=resume, progress=True, threads=threads).to_dict()
    out.print(f"[bold]method[/] {result['method']}  [bold]best prompt[/] {result['best_prompt']!r}")
    out.print(f"tokens {result['tokens']}")
    scores = [  # the task's dev_* and test_* scores (classification: accuracy, gap reward)
        f"{key.replace('_', ' ')} {'n/a' if value is None else format(value, '.4f')}"
        for key, value in result.items()
        if key.startswith(("dev_", "test_")) and (value is None or isinstance(value, float))
    ]
    out.print("  ".join([*scores, f"perplexity {format_perplexity(result['prompt_perplexity'])}"]))
    out.print(f"wrote {Path(cfg.out_dir) / 'result.json'}")
    _print_warnings(result)


def _print_warnings(result: dict) -> None:
    """The run's end-of-run warnings (a run too short to learn), one line each, on stderr."""
    for warning in result.get("warnings") or []:
        err.print(Text.assemble(("warning:", "bold yellow"), f" {warning}"), soft_wrap=True)


@app.command("demo")
@user_errors
def demo_cmd(
    dataset: Annotated[
        str | None,
        typer.Option(
            help="A preset (e.g. sst-2, read from task.data_dir) or a folder of your files. "
            "Default: the small review set shipped with hardprompts."
        ),
    ] = None,
    task: Annotated[
        str,
        typer.Option(
            help="classification (label words) or style (rewrite negative reviews as positive)."
        ),
    ] = "classification",
    method: Annotated[
        str | None, typer.Option(help="pin (default), rlprompt or pez (style: pin, rlprompt).")
    ] = None,
    steps: Annotated[
        int | None, typer.Option(min=1, help="Training steps (default 300; --task style: 100).")
    ] = None,
    out_dir: Annotated[
        Path | None,
        typer.Option(
            "--out",
            help="Output folder. Default: a new runs/demo/<date-time> (--task style: "
            "runs/demo-style/<date-time>) per run, so the command can be repeated; the previous "
            "run's result is shown beside the new one.",
        ),
    ] = None,
    resume: Annotated[
        bool,
        typer.Option(
            help="Continue an interrupted demo: the one in --out, else the latest unfinished one "
            "under runs/demo."
        ),
    ] = False,
    threads: ThreadsOpt = "auto",
    set_: SetOpt = None,
) -> None:
    """Tune a prompt offline with the built-in model; compare with a manual prompt; plot the curves."""
    from hardprompts.demo import dataset_label, demo_run, run_demo
    from hardprompts.runtime import threads as use_threads

    cfg, out_dir, previous = demo_run(task, dataset, method, steps, out_dir, resume, set_)
    cfg, method, steps = _checked(cfg), cfg.algorithm.name, cfg.train.steps
    if task == "style":
        return _style_demo(cfg, method, steps, out_dir, resume, threads)
    with use_threads(threads, cfg) as n_threads:
        out.print(
            f"[bold]hardprompts demo[/]: {method} on {dataset_label(cfg)}, policy and target "
            f"{cfg.target.model}, {steps} steps -> {out_dir}\n{n_threads.text}",
            highlight=False,
            soft_wrap=True,
        )
        r = run_demo(cfg, resume=resume)
    table = Table(title=f"{r['compared_on']} accuracy, {dataset_label(cfg)}")
    for col in ("prompt", "accuracy"):
        table.add_column(col)
    table.add_row(f"manual: {r['manual_prompt']!r}", f"{r['manual_accuracy']:.3f}")
    table.add_row(f"tuned ({r['method']}): {r['best_prompt']!r}", f"{r['tuned_accuracy']:.3f}")
    out.print(table)
    out.print(f"tokens {r['tokens']}  perplexity {format_perplexity(r['prompt_perplexity'])}")
    out.print(f"curves: {r['curves_png']}\nresult: {out_dir / 'result.json'}", highlight=False)
    if previous is not None:
        before = json.loads((previous / "result.json").read_text(encoding="utf-8"))
        same = (
            before.get("best_prompt") == r["best_prompt"]
            and before.get("tuned_accuracy") == r["tuned_accuracy"]
        )
        out.print(
            f"previous run {previous}: tuned {before.get('best_prompt')!r}, accuracy "
            f"{before.get('tuned_accuracy', float('nan')):.3f}"
            + (" (the same result)" if same else ""),
            highlight=False,
        )
    _print_warnings(r)


def _style_demo(cfg, method: str, steps: int, out_dir: Path, resume: bool, threads):
    from hardprompts.demo import dataset_label, run_style_demo
    from hardprompts.runtime import threads as use_threads

    with use_threads(threads, cfg) as n_threads:
        out.print(
            f"[bold]hardprompts demo --task style[/]: {method} on {dataset_label(cfg)}, negative "
            f"-> positive, policy and generator {cfg.target.model}, {steps} steps -> {out_dir}\n"
            f"{n_threads.text}",
            highlight=False,
            soft_wrap=True,
        )
        r = run_style_demo(cfg, resume=resume)
    cols = ("reward", "content", "style", "output_perplexity")
    table = Table(title=f"{r['compared_on']} ({r['manual']['n']} inputs), {dataset_label(cfg)}")
    for col in ("prompt", *cols):
        table.add_column(col.replace("_", " "))
    for name, prompt, m in (
        ("manual", r["manual_prompt"], r["manual"]),
        (f"tuned ({r['method']})", r["best_prompt"], r["tuned"]),
    ):
        table.add_row(f"{name}: {prompt!r}", *(_cell(m.get(c)) for c in cols))
    out.print(table)
    for ex in r.get("test_examples") or []:
        out.print(f"  {ex['input']!r} -> {ex['output']!r}", highlight=False)
    out.print(f"curves: {r['curves_png']}\nresult: {out_dir / 'result.json'}", highlight=False)
    _print_warnings(r)


def _field_sections() -> dict[str, tuple[str, list[tuple[str, str, str]]]]:
    """Section name -> (description, rows of (field, default, doc)) for `config --fields`."""
    from hardprompts.config import (
        Config,
        algorithm_config_class,
        algorithm_names,
        describe_fields,
        task_config_class,
        task_kinds,
    )

    sections: dict[str, tuple[str, list[tuple[str, str, str]]]] = {}
    for name, field in Config.model_fields.items():
        rows = [r for r in describe_fields() if r[0] == name or r[0].startswith(name + ".")]
        if name == "algorithm":
            continue
        sections[name] = (field.description or "", rows)
    shown = set(sections["task"][1])  # (field, default, doc) of classification
    for kind in task_kinds():  # the other task families' own fields (or own default or doc)
        rows = [r for r in describe_fields(task_config_class(kind), "task.") if r not in shown]
        if kind != "classification" and rows:
            sections[f"task.{kind}"] = (f"task.kind: {kind}: its own fields", rows)
    for name in algorithm_names():
        cls = algorithm_config_class(name)
        rows = [r for r in describe_fields(cls, "algorithm.") if r[0] != "algorithm.name"]
        doc = (cls.__doc__ or "").strip().splitlines()[0] if cls.__doc__ else ""
        sections[f"algorithm.{name}"] = (f"algorithm.name: {name}. {doc}".strip(), rows)
    return sections


@app.command("config")
@user_errors
def config_cmd(
    section: Annotated[
        str | None,
        typer.Argument(
            help="With --fields: only this section (task, target, policy, train, out_dir, or an "
            "algorithm such as pin or algorithm.pin)."
        ),
    ] = None,
    config: ConfigOpt = None,
    set_: SetOpt = None,
    fields: Annotated[
        bool,
        typer.Option("--fields", help="List the fields, by section, with default and doc."),
    ] = False,
) -> None:
    """Print the merged configuration as YAML (or, with --fields, the reference of every field)."""
    import yaml

    from hardprompts.errors import ConfigError

    if section is not None and not fields:
        raise ConfigError(
            f"{section!r}: a section is given with --fields, e.g. config --fields train"
        )
    if fields:
        sections = _field_sections()
        chosen = list(sections)
        if section is not None:
            keys = [section, f"algorithm.{section.removeprefix('algorithm.')}"]
            keys.append(f"task.{section.removeprefix('task.')}")
            if section in ("algorithm", "task"):
                chosen = [s for s in sections if s == section or s.startswith(section + ".")]
            elif any(k in sections for k in keys):
                chosen = [next(k for k in keys if k in sections)]
            else:
                raise ConfigError(
                    f"config --fields {section}: no such section; sections: {', '.join(sections)}"
                )
        for name in chosen:
            doc, rows = sections[name]
            out.print(Text.assemble((name, "bold"), f"  {doc}"), soft_wrap=False)
            for field, default, text in rows:
                out.print(
                    Padding(
                        Text.assemble((field, "cyan"), f" = {default}"), (0, 0, 0, 2), expand=False
                    )
                )
                out.print(Padding(Text(text, style="dim"), (0, 0, 0, 6), expand=False))
            out.print()
        if section is None:
            out.print(f"one section: hardprompts config --fields SECTION ({', '.join(sections)})")
        return
    cfg = _load(config, set_)
    sys.stdout.write(yaml.safe_dump(cfg.to_dict(), sort_keys=False))


@app.command("sweep")
@user_errors
def sweep_cmd(
    out_dir: Annotated[Path, typer.Option("--out", help="Sweep folder (one sub-folder per cell).")],
    config: ConfigOpt = None,
    methods: Annotated[
        str, typer.Option(help="Comma-separated algorithm names, e.g. pin,rlprompt,pez.")
    ] = "pez",
    alphas: Annotated[
        str, typer.Option(help="Comma-separated perplexity weights α, e.g. 0,0.5,1.")
    ] = "0",
    seeds: Annotated[
        str, typer.Option(help="Comma-separated seeds: few-shot split seeds (task.split_seed).")
    ] = "16-100,16-13,16-21,16-42,16-87",
    seed_field: Annotated[
        str,
        typer.Option(
            help="The field the seeds set: task.split_seed, or train.seed for repeats of a task "
            "without split seeds (style transfer on Yelp), e.g. --seed-field train.seed "
            "--seeds 0,1,2."
        ),
    ] = "task.split_seed",
    method_set: Annotated[
        list[str] | None,
        typer.Option(
            "--method-set",
            help="Override for one method's cells, METHOD:KEY=VALUE, e.g. pez:algorithm.lr=0.1 "
            "(repeatable).",
        ),
    ] = None,
    threads: ThreadsOpt = "auto",
    set_: SetOpt = None,
    backend: Annotated[
        str,
        typer.Option(
            help="local: cells one after another in this process; ray: every cell a Ray task, "
            'in parallel (pip install "hardprompts[ray]"; docs/guides/ray.md).'
        ),
    ] = "local",
    address: Annotated[
        str | None,
        typer.Option(
            help="--backend ray: auto (the cluster of `ray start`) or ray://HOST:10001; "
            "unset: a new Ray on this machine."
        ),
    ] = None,
    cpus_per_cell: Annotated[
        float | None, typer.Option(help="--backend ray: CPUs of each cell's task (default 1).")
    ] = None,
    gpus_per_cell: Annotated[
        float | None, typer.Option(help="--backend ray: GPUs of each cell's task (default 0).")
    ] = None,
) -> None:
    """Run method x α x split seed, one training run per cell; finished cells are skipped and
    interrupted ones resume. Then `hardprompts report DIR`."""
    from hardprompts.checkpoint import check_writable_dir
    from hardprompts.runtime import threads as use_threads
    from hardprompts.sweep import parse_alphas, parse_list, parse_method_overrides, run_sweep

    check_writable_dir(out_dir, "--out")
    base_cfg = _checked(_load(config, set_))
    base = base_cfg.to_dict()  # validated here; each cell is validated again
    method_list = parse_list(methods, "methods")
    overrides = parse_method_overrides(method_set or [], method_list)
    ray_options = {
        k: v
        for k, v in dict(
            address=address, cpus_per_cell=cpus_per_cell, gpus_per_cell=gpus_per_cell
        ).items()
        if v is not None
    }

    def announce(cell, status: str) -> None:
        if status != "failed":  # the ray backend reports a failure with its error as it happens
            out.print(f"[bold]{status:>8}[/] {cell.out_dir}")

    with use_threads(threads, base_cfg):
        outcomes = run_sweep(
            base,
            method_list,
            parse_alphas(alphas),
            parse_list(seeds, "seeds"),
            out_dir,
            overrides,
            on_cell=announce,
            backend=backend,
            seed_field=seed_field,
            **ray_options,
        )
    statuses = ("ran", "resumed", "skipped", "failed")
    counts = {s: sum(o.status == s for o in outcomes) for s in statuses}
    if not counts["failed"]:
        del counts["failed"]
    out.print(
        ", ".join(f"{n} {s}" for s, n in counts.items())
        + f"; now run: hardprompts report {out_dir}"
    )
    failures = [o for o in outcomes if o.status == "failed"]
    if failures:
        err.print(
            f"[bold red]{len(failures)} failed:[/] "
            + ", ".join(str(o.cell.out_dir) for o in failures)
            + "\nfix them and run the same command again: finished cells are kept",
            highlight=False,
        )
        raise typer.Exit(1)


@app.command("report")
@user_errors
def report_cmd(
    paths: Annotated[
        list[Path],
        typer.Argument(
            help="The --out folder of `hardprompts sweep`; with --html also one run folder, or "
            "several run folders of one task to compare."
        ),
    ],
    html: Annotated[
        bool,
        typer.Option(
            "--html", help="Write one self-contained report.html (run, sweep or comparison page)."
        ),
    ] = False,
    out_file: Annotated[
        Path | None,
        typer.Option(
            "--out", help="With --html: the page's path (default: FIRST_PATH/report.html)."
        ),
    ] = None,
) -> None:
    """Summarise a sweep: report.md, report.csv and the accuracy-perplexity plot tradeoff.png.
    With --html: one page of a run, a sweep or a comparison of runs (docs/guides/reports.md)."""
    from hardprompts.errors import ConfigError

    if html:
        from hardprompts.html_report import write_html_report

        out.print(f"wrote {write_html_report(paths, out_file)}")
        return
    if len(paths) != 1 or out_file is not None:
        raise ConfigError(
            "without --html, report takes one sweep folder and no --out; add --html for a page "
            "of runs or a comparison"
        )
    from hardprompts.report import write_report

    paths_written = write_report(paths[0])
    for path in paths_written.values():
        out.print(f"wrote {path}")


from hardprompts.cli_cache import app as cache_app  # noqa: E402 - registered after the commands
from hardprompts.cli_data import app as data_app  # noqa: E402  (the `data` sub-commands)

app.add_typer(cache_app, name="cache")
app.add_typer(data_app, name="data")


def main() -> None:
    """Entry point of the ``hardprompts`` command."""
    app()


if __name__ == "__main__":
    main()
