"""The Python API: build a config, tune a prompt, evaluate prompts, read a run.

The command line is a thin shell over these functions: ``hardprompts tune`` calls `tune`,
``hardprompts eval`` calls `evaluate`, ``hardprompts demo`` calls both. Every error a user
can cause is a `hardprompts.errors.HardpromptsError` subclass with a message that says
what to change; the command line prints the same message in one line.

Example:
    >>> import hardprompts as hp
    >>> config = hp.make_config({"target.model": "builtin:yelp-small", "target.kind": "causal"})
    >>> config.target.model
    'builtin:yelp-small'
"""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from hardprompts.config import (
    Config,
    apply_overrides,
    config_from_dict,
    dotted_section,
    read_config_file,
)
from hardprompts.errors import ConfigError
from hardprompts.runs import TuneResult

__all__ = ["ConfigLike", "EvalReport", "evaluate", "make_config", "tune"]

#: What `tune` and `evaluate` accept as a configuration: a `Config`, the path
#: of a YAML file, or a dict (nested sections, dotted keys, or both).
ConfigLike = Config | str | Path | Mapping[str, Any]


def _set_dotted(data: dict[str, Any], key: str, value: Any) -> None:
    """``data[a][b] = value`` for ``key`` ``"a.b"`` (a Python value, not parsed as YAML)."""
    if not all(key.split(".")):
        raise ConfigError(f"override {key!r}: expected a dotted field name such as train.steps")
    node, name = dotted_section(data, key, f"override {key!r}")
    if isinstance(value, Path):
        value = str(value)
    if isinstance(value, Mapping) and isinstance(node.get(name), dict):
        for sub, sub_value in value.items():  # a section given as a dict merges into the file's
            _set_dotted(node[name], str(sub), sub_value)
        return
    node[name] = dict(value) if isinstance(value, Mapping) else value


def make_config(
    source: ConfigLike | None = None,
    overrides: Mapping[str, Any] | Sequence[str] | None = None,
    /,
    **sections: Any,
) -> Config:
    """Build and validate a configuration: defaults < ``source`` < ``overrides`` < ``sections``.

    Args:
        source: a YAML file (path), a dict, or a `Config` to start from; None for the
            defaults. A dict may nest sections (``{"train": {"steps": 5}}``) or use dotted keys
            (``{"train.steps": 5}``).
        overrides: dotted keys and Python values (``{"train.steps": 5}``), or ``KEY=VALUE``
            strings parsed as YAML exactly like the command line's ``--set``.
        **sections: whole sections or top-level fields as keywords, e.g.
            ``algorithm={"name": "pin"}`` or ``out_dir="runs/x"``; merged into what came before.

    Returns:
        The validated `Config`.

    Raises:
        ConfigError: an unknown field, a wrong type or a bad combination (the message names the
            field and the fix), or a file that is missing or not YAML.

    Examples:
        >>> import hardprompts as hp
        >>> cfg = hp.make_config({"task.dataset": "sst-2"}, ["train.steps=50"], out_dir="runs/a")
        >>> cfg.task.dataset, cfg.train.steps, cfg.out_dir
        ('sst-2', 50, 'runs/a')
    """
    data: dict[str, Any]
    origin = "defaults"
    if source is None:
        data = {}
    elif isinstance(source, Config):
        data, origin = source.to_dict(), "config"
    elif isinstance(source, (str, Path)):
        data, origin = read_config_file(source), str(source)
    elif isinstance(source, Mapping):
        data, origin = {}, "dict"
        for key, value in source.items():
            _set_dotted(data, str(key), value)
    else:
        raise ConfigError(
            f"make_config: cannot read a config from a {type(source).__name__}; pass a YAML path, "
            "a dict or a Config"
        )
    if isinstance(overrides, Mapping):
        for key, value in overrides.items():
            _set_dotted(data, str(key), value)
    elif overrides is not None:
        if isinstance(overrides, str):
            raise ConfigError(
                f"make_config: overrides {overrides!r} is one string; pass a list of KEY=VALUE "
                "strings or a dict"
            )
        apply_overrides(data, overrides)
    for key, value in sections.items():
        _set_dotted(data, key, value)
    return config_from_dict(data, origin)


def _config(config: ConfigLike) -> Config:
    return config if isinstance(config, Config) else make_config(config)


def _in_notebook() -> bool:
    """Whether we run inside a Jupyter kernel (where a live terminal bar renders badly)."""
    shell = sys.modules.get("IPython")
    get_ipython = getattr(shell, "get_ipython", None)
    if get_ipython is None:
        return False
    ip = get_ipython()
    return ip is not None and type(ip).__name__ == "ZMQInteractiveShell"


def default_progress() -> bool:
    """The progress bar's default: on in a terminal, off in a notebook or when stderr is a file."""
    stream = sys.stderr
    return (not _in_notebook()) and bool(getattr(stream, "isatty", lambda: False)())


@contextlib.contextmanager
def _running(config: Config, threads: int | str | None) -> Iterator[None]:
    """Check the devices, quiet third-party libraries and set the thread count for ``config``
    (``threads`` None: leave torch's count as it is)."""
    from hardprompts.modeling import check_devices
    from hardprompts.runtime import quiet_libraries
    from hardprompts.runtime import threads as use_threads

    check_devices(config)
    with quiet_libraries():
        if threads is None:
            yield
        else:
            with use_threads(str(threads), config):
                yield


def tune(
    config: ConfigLike,
    /,
    *,
    resume: bool | Literal["auto"] = False,
    progress: bool | None = None,
    threads: int | str | None = "auto",
) -> TuneResult:
    """Tune a prompt with ``config.algorithm`` and return what the run found.

    The run writes to ``config.out_dir``: ``metrics.jsonl``, TensorBoard events, a resumable
    ``checkpoint/``, ``config.json`` and ``result.json``. The best prompt is chosen on dev only.

    Args:
        config: a `Config`, a YAML path or a dict (see `make_config`).
        resume: False starts a new run (a folder that holds one is an error); True continues the
            run in ``out_dir`` from its checkpoint; ``"auto"`` resumes when there is a checkpoint.
        progress: show a progress bar; None (default) shows it in a terminal, not in a notebook.
        threads: CPU threads for torch: a number, ``"auto"`` (see ``--threads``), or None to
            leave torch's setting as it is.

    Returns:
        The run's `TuneResult`: ``best_prompt``, ``tokens``, ``dev_score``, ``test_score``,
            ``prompt_perplexity``, ``target_usage``, ``out_dir``, ``history`` and ``curve(name)``.
            It keeps the run's target loaded: pass it to `evaluate` to score more prompts
            without loading the models again.

    Raises:
        HardpromptsError: a bad config, data, model or output folder (`ConfigError`, `DataError`,
            `ModelLoadError`, ...), before anything is written; `CheckpointError` for a damaged
            checkpoint with nothing to fall back on.

    Examples:
        >>> import hardprompts as hp
        >>> result = hp.tune("configs/sst2_pin.yaml", threads=1)  # doctest: +SKIP
        >>> result.best_prompt, result.test_score  # doctest: +SKIP
        ('This language delivery feels consistently', 0.92)
    """
    from hardprompts.training import run_with_context

    cfg = _config(config)
    show = default_progress() if progress is None else progress
    with _running(cfg, threads):
        raw, ctx = run_with_context(cfg, resume=resume, show_progress=show)
    out_dir = Path(cfg.out_dir)
    result = TuneResult.from_dict(raw, out_dir)
    return TuneResult(**{**result.__dict__, "_task": ctx.task})


@dataclass(frozen=True)
class EvalReport:
    """Scores of prompts on one split, as `evaluate` returns them.

    Attributes:
        rows: one dict per prompt: ``prompt`` and the task's metrics (``score``, ``n``,
            ``seconds``; classification and multiple choice also ``accuracy``,
            ``per_class_accuracy``, ``mean_gap_reward``).
        outputs: with ``outputs=True``, per prompt one dict per example (``input``, ``output``,
            ``correct``...); else None.
        dataset: ``task.dataset``.
        split: the split scored.
        num_inputs: the number of inputs in the split.
        target: ``target.model``.
        info: what the task says about the split (``source`` file, its size, label words...).
        target_usage: the work the target has done since it was loaded (with a `tune`
            result passed in, the training's work too).
        approximation: a note when some scores are approximate (chat endpoints), else None.

    Examples:
        >>> report = hp.evaluate(cfg, ["It was", "All in all"])  # doctest: +SKIP
        >>> [(r["prompt"], r["score"]) for r in report.rows]  # doctest: +SKIP
        [('It was', 0.695), ('All in all', 0.62)]
    """

    rows: list[dict[str, Any]]
    outputs: list[list[dict[str, Any]]] | None
    dataset: str
    split: str
    num_inputs: int
    target: str
    info: dict[str, Any] = field(default_factory=dict)
    target_usage: dict[str, Any] = field(default_factory=dict)
    approximation: str | None = None

    def scores(self) -> dict[str, float]:
        """``{prompt: score}``, the task's main metric per prompt."""
        return {str(r["prompt"]): float(r["score"]) for r in self.rows}

    def usage_summary(self) -> str:
        """The target's work in one line, e.g. ``'pairs 400, forwards 13, tokens 9,216'``."""
        from hardprompts.targets.usage import TargetUsage

        usage = TargetUsage()
        usage.load_dict(self.target_usage)
        return usage.summary()

    def to_dict(self) -> dict[str, Any]:
        """The JSON of ``hardprompts eval --json``."""
        info = dict(self.info)
        out: dict[str, Any] = {
            "dataset": self.dataset,
            "split": self.split,
            "source": info.pop("source", None),
            "target": self.target,
            **info,
            "results": [dict(r) for r in self.rows],
            "target_usage": dict(self.target_usage),
        }
        if self.approximation is not None:
            out["approximation"] = self.approximation
        return out


def evaluate(
    config: ConfigLike | TuneResult,
    prompts: str | Sequence[str] = ("",),
    /,
    *,
    split: str = "test",
    outputs: bool = False,
    progress: bool | None = None,
    threads: int | str | None = "auto",
) -> EvalReport:
    """Score prompts on a split with the task's metrics.

    Args:
        config: a `Config`, a YAML path or a dict (see `make_config`), or the result
            of `tune`, whose task and loaded target are reused.
        prompts: one prompt or several; ``""`` scores the bare template (the default).
        split: ``train``, ``dev`` or ``test``.
        outputs: also return, per prompt, one record per example (input, output, correct).
        progress: show a progress bar; None (default) shows it in a terminal, not in a notebook.
        threads: CPU threads for torch: a number, ``"auto"``, or None to leave it as it is.

    Returns:
        An `EvalReport`: one row per prompt, in the order given.

    Examples:
        >>> import hardprompts as hp
        >>> report = hp.evaluate("configs/sst2_builtin_eval.yaml", ["It was"])  # doctest: +SKIP
        >>> report.rows[0]["accuracy"]  # doctest: +SKIP
        0.695
    """
    from hardprompts.progress import CountProgress
    from hardprompts.tasks import build_task
    from hardprompts.training import usage_report

    prompt_list = [prompts] if isinstance(prompts, str) else list(prompts)
    if not prompt_list:
        raise ConfigError("evaluate: no prompt given; pass [''] to score the bare template")
    task: Any
    if isinstance(config, TuneResult):
        if config._task is None:
            raise ConfigError(
                "evaluate: this result was read from a folder and holds no loaded task; pass "
                "its config instead: evaluate(load_run(folder).to_config(), prompts)"
            )
        cfg, task = make_config(config.config, None, out_dir=str(config.out_dir)), config._task
    else:
        cfg, task = _config(config), None
    show = default_progress() if progress is None else progress
    if task is None:
        from hardprompts.tasks.precheck import check_data

        check_data(cfg, [split])  # the data, before any model is loaded
    with _running(cfg, threads):
        if task is None:
            task = build_task(cfg)
        n = task.num_inputs(split)
        if outputs and not hasattr(task, "evaluate_with_outputs"):
            raise ConfigError(f"task.kind {cfg.task.kind!r} does not write per-example outputs")
        results: list[Any] = []
        records: list[list[dict[str, Any]]] = []
        with CountProgress(len(prompt_list) * n, f"scoring {split}", enabled=show) as bar:
            for p in prompt_list:  # one prompt at a time, so that `seconds` is its own time
                if not outputs:
                    results += task.evaluate([p], split, progress=bar.advance)
                else:
                    got, per_prompt = task.evaluate_with_outputs([p], split, progress=bar.advance)
                    results += got
                    records += per_prompt
    usage = usage_report(task)
    return EvalReport(
        rows=[r.to_dict() for r in results],
        outputs=records if outputs else None,
        dataset=cfg.task.dataset,
        split=split,
        num_inputs=n,
        target=cfg.target.model,
        info=dict(task.describe(split)),
        target_usage=dict(usage["target_usage"]),
        approximation=usage.get("approximation"),
    )
