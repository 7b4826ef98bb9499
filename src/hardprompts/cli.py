"""The ``hardprompts`` command line: eval, tune, config.

Configuration precedence everywhere: defaults < ``--config`` YAML < ``--set key.sub=value``.
User errors print one message (no traceback) and exit with status 2.
"""

from __future__ import annotations

import json
import sys
from functools import wraps
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from hardprompts.errors import HardpromptsError

app = typer.Typer(
    help="Find short, discrete, human-readable prompts for frozen language models.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
out = Console()
err = Console(stderr=True)

ConfigOpt = Annotated[Path | None, typer.Option("--config", "-c", help="YAML config file.")]
SetOpt = Annotated[
    list[str] | None,
    typer.Option("--set", help="Override a config field, e.g. --set train.steps=100 (repeatable)."),
]


def user_errors(fn):
    """Turn HardpromptsError into a one-line message and exit status 2."""

    @wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except HardpromptsError as exc:
            err.print(f"[bold red]error:[/] {escape(str(exc))}", highlight=False, soft_wrap=True)
            raise typer.Exit(2) from None

    return wrapper


def _load(config: Path | None, overrides: list[str] | None, extra: list[str] = ()):
    from hardprompts.config import load_config

    return load_config(config, [*(overrides or []), *extra])


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
    set_: SetOpt = None,
) -> None:
    """Score prompts (or the bare template) on a split with the task's metrics: score (the task
    metric), n, seconds; classification and multiple choice also accuracy."""
    from hardprompts.checkpoint import atomic_write_json, atomic_write_text
    from hardprompts.errors import ConfigError
    from hardprompts.progress import CountProgress
    from hardprompts.tasks import build_task

    cfg = _load(config, set_)
    prompts = list(prompt or [])
    if prompt_file is not None:
        if not prompt_file.is_file():
            raise ConfigError(f"--prompt-file {prompt_file} does not exist")
        prompts += [
            line.strip()
            for line in prompt_file.read_text(encoding="utf-8").splitlines()
            if line.strip()
        ]
    if not prompts:
        prompts = [""]  # the bare template
    task = build_task(cfg)
    n = task.num_inputs(split)
    with CountProgress(len(prompts) * n, f"scoring {split}", enabled=not as_json) as bar:
        if outputs is None:
            results = task.evaluate(prompts, split, progress=bar.advance)
        elif hasattr(task, "evaluate_with_outputs"):
            results, records = task.evaluate_with_outputs(prompts, split, progress=bar.advance)
        else:
            raise ConfigError(f"task.kind {cfg.task.kind!r} does not write per-example --outputs")
    if outputs is not None:
        lines = [
            json.dumps({"prompt": p, **record}, ensure_ascii=False)
            for p, per_prompt in zip(prompts, records, strict=True)
            for record in per_prompt
        ]
        atomic_write_text(outputs, "\n".join(lines) + "\n")
    described = task.describe(split)
    report = {
        "dataset": cfg.task.dataset,
        "split": split,
        "source": described.pop("source"),
        "target": cfg.target.model,
        **described,
        "results": [r.to_dict() for r in results],
    }
    if output is not None:
        atomic_write_json(output, report)
    if as_json:
        sys.stdout.write(json.dumps(report, indent=2) + "\n")
        return
    table = Table(title=f"{cfg.task.dataset} {split} ({n} examples) on {cfg.target.model}")
    columns = [k for k in results[0].metrics if k != "n"]
    same = [
        k
        for k in columns
        if k != "score" and all(r.metrics[k] == r.metrics.get("score") for r in results)
    ]
    if same:  # the score is another column (classification, multiple choice: accuracy)
        columns.remove("score")
        described = {**described, "score": same[0]}
    table.add_column("prompt", justify="left")
    for col in columns:
        table.add_column(col.replace("_", " ").replace("per class", "per-class"), justify="right")
    for r in results:
        table.add_row(
            repr(r.prompt) if r.prompt else "(bare template)",
            *(_cell(r.metrics[col]) for col in columns),
        )
    out.print(table)
    out.print(", ".join(f"{k} {v!r}" for k, v in described.items()))
    for path in (output, outputs):
        if path is not None:
            out.print(f"wrote {path}")


def _cell(value) -> str:
    """A metric in the eval table: floats to 4 places, lists of floats to 3."""
    if isinstance(value, list):
        return " ".join(f"{v:.3f}" for v in value)
    if isinstance(value, float):
        return f"{value:.4f}"
    return str(value)


@app.command("tune")
@user_errors
def tune_cmd(
    config: ConfigOpt = None,
    out_dir: Annotated[
        Path | None, typer.Option("--out", help="Output folder (overrides out_dir).")
    ] = None,
    resume: Annotated[
        bool, typer.Option(help="Continue the run in the output folder from its checkpoint.")
    ] = False,
    set_: SetOpt = None,
) -> None:
    """Optimise a prompt with algorithm.name; writes metrics.jsonl, TensorBoard events, result.json."""
    from hardprompts.training import run

    extra = [f"out_dir={out_dir}"] if out_dir is not None else []
    cfg = _load(config, set_, extra)
    result = run(cfg, resume=resume)
    out.print(f"[bold]method[/] {result['method']}  [bold]best prompt[/] {result['best_prompt']!r}")
    out.print(f"tokens {result['tokens']}")
    scores = [  # the task's dev_* and test_* scores (classification: accuracy, gap reward)
        f"{key.replace('_', ' ')} {'n/a' if value is None else format(value, '.4f')}"
        for key, value in result.items()
        if key.startswith(("dev_", "test_")) and (value is None or isinstance(value, float))
    ]
    out.print("  ".join([*scores, f"perplexity {result['prompt_perplexity']}"]))
    out.print(f"wrote {Path(cfg.out_dir) / 'result.json'}")


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
    method: Annotated[str, typer.Option(help="pin, rlprompt or pez.")] = "pin",
    steps: Annotated[int, typer.Option(min=1, help="Training steps.")] = 300,
    out_dir: Annotated[Path, typer.Option("--out", help="Output folder.")] = Path("runs/demo"),
    resume: Annotated[bool, typer.Option(help="Continue an interrupted demo in --out.")] = False,
    set_: SetOpt = None,
) -> None:
    """Tune a prompt offline with the built-in model; compare with a manual prompt; plot the curves."""
    from hardprompts.demo import dataset_label, demo_config, run_demo

    cfg = demo_config(dataset, method, steps, str(out_dir), set_)
    out.print(
        f"[bold]hardprompts demo[/]: {method} on {dataset_label(cfg)}, policy and target "
        f"{cfg.target.model}, {steps} steps -> {out_dir}"
    )
    r = run_demo(cfg, resume=resume)
    table = Table(title=f"{r['compared_on']} accuracy, {dataset_label(cfg)}")
    for col in ("prompt", "accuracy"):
        table.add_column(col)
    table.add_row(f"manual: {r['manual_prompt']!r}", f"{r['manual_accuracy']:.3f}")
    table.add_row(f"tuned ({r['method']}): {r['best_prompt']!r}", f"{r['tuned_accuracy']:.3f}")
    out.print(table)
    ppl = r["prompt_perplexity"]
    out.print(f"tokens {r['tokens']}  perplexity {'n/a' if ppl is None else format(ppl, '.1f')}")
    out.print(f"curves: {r['curves_png']}\nresult: {out_dir / 'result.json'}")


@app.command("config")
@user_errors
def config_cmd(
    config: ConfigOpt = None,
    set_: SetOpt = None,
    fields: Annotated[
        bool, typer.Option("--fields", help="List every field with its default and doc.")
    ] = False,
) -> None:
    """Print the merged configuration as YAML (or, with --fields, the reference of every field)."""
    import yaml

    from hardprompts.config import (
        algorithm_config_class,
        algorithm_names,
        describe_fields,
        task_config_class,
        task_kinds,
    )

    if fields:
        table = Table(title="configuration fields")
        for col in ("field", "default", "description"):
            table.add_column(col)
        for row in describe_fields():
            table.add_row(*row)
        shown = {row[:2] for row in describe_fields()}  # (field, default) of classification
        for kind in task_kinds():  # the other task families' own fields
            extra = [
                r for r in describe_fields(task_config_class(kind), "task.") if r[0] not in shown
            ]
            if kind != "classification" and extra:
                table.add_section()
                for field, default, doc in extra:
                    table.add_row(f"{field} [dim]({kind})[/]", default, doc)
        for name in algorithm_names():
            table.add_section()
            for field, default, doc in describe_fields(algorithm_config_class(name), "algorithm."):
                if field != "algorithm.name":
                    table.add_row(f"{field} [dim]({name})[/]", default, doc)
        out.print(table)
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
        str, typer.Option(help="Comma-separated few-shot split seeds (task.split_seed).")
    ] = "16-100,16-13,16-21,16-42,16-87",
    method_set: Annotated[
        list[str] | None,
        typer.Option(
            "--method-set",
            help="Override for one method's cells, METHOD:KEY=VALUE, e.g. pez:algorithm.lr=0.1 "
            "(repeatable).",
        ),
    ] = None,
    set_: SetOpt = None,
    backend: Annotated[
        str,
        typer.Option(
            help="local: cells one after another in this process; ray: every cell a Ray task, "
            'in parallel (pip install "hardprompts[ray]"; README, Scaling out).'
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
    from hardprompts.sweep import parse_alphas, parse_list, parse_method_overrides, run_sweep

    base = _load(config, set_).to_dict()  # validated here; each cell is validated again
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

    outcomes = run_sweep(
        base,
        method_list,
        parse_alphas(alphas),
        parse_list(seeds, "seeds"),
        out_dir,
        overrides,
        on_cell=announce,
        backend=backend,
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
    sweep_dir: Annotated[Path, typer.Argument(help="The --out folder of `hardprompts sweep`.")],
) -> None:
    """Summarise a sweep: report.md, report.csv and the accuracy-perplexity plot tradeoff.png."""
    from hardprompts.report import write_report

    paths = write_report(sweep_dir)
    for path in paths.values():
        out.print(f"wrote {path}")


def main() -> None:
    """Entry point of the ``hardprompts`` command."""
    app()


if __name__ == "__main__":
    main()
