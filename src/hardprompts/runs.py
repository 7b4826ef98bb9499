"""Reading a run folder: its result, its metrics history, its config, and resuming it.

A run folder (the ``out_dir`` of ``hardprompts tune``, of `hardprompts.tune`, of a sweep
cell or of the demo) holds ``config.json`` (the merged config, written when the run starts),
``metrics.jsonl`` (one line per step), ``checkpoint/`` (while and after it trains) and, once it has
finished, ``result.json``. `load_run` reads those files, and nothing else, into a
`Run`; `TuneResult` is the typed view of one ``result.json``. This module loads no
model, so tools that only read runs (reports, notebooks) stay fast.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from hardprompts.errors import CheckpointError, DataError

if TYPE_CHECKING:
    from hardprompts.config import Config

__all__ = ["Run", "TuneResult", "load_run", "read_history"]

#: One row of ``metrics.jsonl``: ``step`` and the values logged at that step.
MetricsRow = dict[str, float]


def read_history(path: str | Path) -> list[MetricsRow]:
    """The rows of a ``metrics.jsonl`` file, in order (a torn last line of a killed run is skipped).

    A missing file is an empty history.

    Examples:
        >>> read_history("runs/does-not-exist/metrics.jsonl")
        []
    """
    path = Path(path)
    if not path.is_file():
        return []
    rows: list[MetricsRow] = []
    for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            continue  # the line a kill cut short
        if isinstance(row, dict) and "step" in row:
            rows.append(row)
    return rows


def _is_number(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _curve(history: list[MetricsRow], key: str) -> list[tuple[int, float]]:
    return [(int(row["step"]), float(row[key])) for row in history if _is_number(row.get(key))]


def _curve_names(history: list[MetricsRow]) -> list[str]:
    """Names of the numeric values logged (``dev/prompt``, a string, is not a curve)."""
    names: dict[str, None] = {}
    for row in history:
        names.update(dict.fromkeys(k for k, v in row.items() if k != "step" and _is_number(v)))
    return list(names)


@dataclass(frozen=True)
class TuneResult:
    """What a tuning run found: the typed view of its ``result.json``.

    Attributes:
        method: the algorithm (``pin``, ``rlprompt``, ``pez``, ...).
        best_prompt: the prompt with the best dev score (chosen on dev only).
        tokens: its tokens, as the prompt writer's tokenizer spells them.
        score_name: the task's score: ``accuracy`` (classification, multiple choice), ``score``
            (generation), ``reward`` (style transfer).
        dev_score: the best prompt's dev score.
        test_score: its test score; None for a dataset without a test split.
        best_step: the step at which it was found.
        prompt_perplexity: its perplexity under the reference LM (lower reads better).
        steps: training steps run.
        wall_seconds: training time.
        target_usage: the work the target did (requests, scored pairs, cache hits, tokens).
        out_dir: the run folder.
        history: the rows of ``metrics.jsonl`` (see `curve`).
        raw: the whole ``result.json`` (every dev_* and test_* metric, the merged config).

    Examples:
        >>> r = load_run("runs/sst2-pin").result  # doctest: +SKIP
        >>> r.best_prompt, r.test_score, r.curve("dev/accuracy")[-1]  # doctest: +SKIP
        ('the food was good,', 0.85, (300, 0.84375))
    """

    method: str
    best_prompt: str
    tokens: list[str]
    score_name: str
    dev_score: float | None
    test_score: float | None
    best_step: int | None
    prompt_perplexity: float | None
    steps: int
    wall_seconds: float
    target_usage: dict[str, Any]
    out_dir: Path
    history: list[MetricsRow] = field(repr=False)
    raw: dict[str, Any] = field(repr=False)
    #: the live task of an in-process run (its target stays loaded); see hardprompts.evaluate
    _task: Any = field(default=None, repr=False, compare=False)

    @classmethod
    def from_dict(
        cls, raw: dict[str, Any], out_dir: str | Path, history: list[MetricsRow] | None = None
    ) -> TuneResult:
        """Build from a ``result.json`` dict; ``history`` defaults to the folder's metrics.jsonl."""
        out_dir = Path(out_dir)
        name = raw.get("score_name") or "accuracy"
        return cls(
            method=str(raw["method"]),
            best_prompt=str(raw["best_prompt"]),
            tokens=list(raw.get("tokens") or []),
            score_name=str(name),
            dev_score=raw.get(f"dev_{name}"),
            test_score=raw.get(f"test_{name}"),
            best_step=raw.get("best_step"),
            prompt_perplexity=raw.get("prompt_perplexity"),
            steps=int(raw.get("steps", 0)),
            wall_seconds=float(raw.get("wall_seconds", 0.0)),
            target_usage=dict(raw.get("target_usage") or {}),
            out_dir=out_dir,
            history=read_history(out_dir / "metrics.jsonl") if history is None else history,
            raw=raw,
        )

    @property
    def metrics(self) -> dict[str, Any]:
        """Every ``dev_*`` and ``test_*`` field of the result (e.g. ``test_per_class_accuracy``)."""
        return {k: v for k, v in self.raw.items() if k.startswith(("dev_", "test_"))}

    @property
    def config(self) -> dict[str, Any]:
        """The merged configuration the run used, as a plain dict."""
        config = self.raw.get("config")
        return dict(config) if isinstance(config, dict) else {}

    def curve(self, name: str) -> list[tuple[int, float]]:
        """``(step, value)`` of one logged value, e.g. ``dev/accuracy`` or ``charts/mean_reward``;
        `curve_names` lists them."""
        return _curve(self.history, name)

    def curve_names(self) -> list[str]:
        """The names logged in ``metrics.jsonl``, in the order they first appear."""
        return _curve_names(self.history)

    def to_dict(self) -> dict[str, Any]:
        """The ``result.json`` dict (a copy)."""
        return dict(self.raw)


def _read_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise DataError(f"{path} is not valid JSON ({exc}); is the run folder damaged?") from None
    if not isinstance(data, dict):
        raise DataError(f"{path}: expected a JSON object")
    return data


def _checkpoint_step(folder: Path) -> int | None:
    """The step of the run's latest checkpoint, from its JSON part alone (no tensors are read)."""
    for name in ("checkpoint", "checkpoint.prev"):
        meta = folder / name / "state.json"
        if not meta.is_file():
            continue
        try:
            doc = json.loads(meta.read_text(encoding="utf-8"))
            state = doc.get("state", doc)  # format 1 stored the structure itself
            return int(state["loop"]["step"])
        except (UnicodeDecodeError, json.JSONDecodeError, KeyError, TypeError, ValueError):
            continue
    return None


@dataclass(frozen=True)
class Run:
    """A run folder as `load_run` read it.

    Attributes:
        folder: the run folder.
        config: the merged configuration, as a plain dict (``config.json``).
        history: the rows of ``metrics.jsonl``.
        result: the result when the run has finished, else None.
        checkpoint_step: the step of its latest checkpoint (None without one).

    Examples:
        >>> run = load_run("runs/sst2-pin")  # doctest: +SKIP
        >>> run.finished, run.step  # doctest: +SKIP
        (False, 150)
        >>> result = run.resume()  # doctest: +SKIP
    """

    folder: Path
    config: dict[str, Any]
    history: list[MetricsRow] = field(repr=False)
    result: TuneResult | None
    checkpoint_step: int | None

    @property
    def finished(self) -> bool:
        """Whether the run wrote its ``result.json``."""
        return self.result is not None

    @property
    def step(self) -> int:
        """The last step logged (0 before the first)."""
        return int(self.history[-1]["step"]) if self.history else 0

    @property
    def resumable(self) -> bool:
        """Whether it has a checkpoint to continue from."""
        return self.checkpoint_step is not None

    def curve(self, name: str) -> list[tuple[int, float]]:
        """``(step, value)`` of one logged value, e.g. ``dev/accuracy``."""
        return _curve(self.history, name)

    def curve_names(self) -> list[str]:
        """The names logged in ``metrics.jsonl``, in the order they first appear."""
        return _curve_names(self.history)

    @property
    def outputs(self) -> list[dict[str, Any]] | None:
        """What the target wrote for each test input under the best prompt
        (``outputs_test.jsonl``: ``input``, ``output``, ``gold`` and the task's per-example
        scores); None when the run wrote none (unfinished, older, or no test split)."""
        path = self.folder / "outputs_test.jsonl"
        if not path.is_file():
            return None
        rows: list[dict[str, Any]] = []
        for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            if not line.strip():
                continue
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError as exc:
                raise DataError(f"{path}, line {n}: not JSON ({exc.msg})") from None
        return rows

    @property
    def visited_perplexity(self) -> dict[str, float]:
        """Perplexity of the prompts that won a dev evaluation (``dev/prompt`` in the history),
        by prompt, from ``visited_prompts.json``; empty when the run recorded none."""
        path = self.folder / "visited_prompts.json"
        if not path.is_file():
            return {}
        perplexity = _read_json(path).get("perplexity", {})
        return {str(k): float(v) for k, v in perplexity.items()} if isinstance(perplexity, dict) else {}

    def to_config(self) -> Config:
        """The run's configuration as a validated `hardprompts.config.Config`, with
        ``out_dir`` set to this folder (so a moved or copied folder resumes in place)."""
        from hardprompts.config import config_from_dict

        return config_from_dict({**self.config, "out_dir": str(self.folder)}, str(self.folder))

    def resume(
        self,
        *,
        steps: int | None = None,
        progress: bool | None = None,
        threads: int | str = "auto",
    ) -> TuneResult:
        """Continue the run from its checkpoint to its ``train.steps`` (or ``steps``, which may
        extend a finished run) and return the result; the same as ``hardprompts tune --resume``.

        Examples:
            >>> load_run("runs/sst2-pin").resume(steps=600)  # doctest: +SKIP
        """
        from hardprompts.api import tune

        if not self.resumable:
            raise CheckpointError(
                f"{self.folder} holds no checkpoint, so the run cannot be resumed; start a new "
                "run with hardprompts.tune"
            )
        config = self.to_config()
        if steps is not None:
            config.train.steps = steps
        return tune(config, resume=True, progress=progress, threads=threads)


def load_run(folder: str | Path) -> Run:
    """Read a finished or interrupted run folder: its result (if finished), metrics, config.

    Nothing is loaded but the folder's JSON files. A folder that is not a run (no
    ``config.json`` and no ``result.json``) is a `hardprompts.errors.DataError`.

    Examples:
        >>> run = load_run("runs/sst2-pin")  # doctest: +SKIP
        >>> run.result.best_prompt if run.finished else run.step  # doctest: +SKIP
        'the food was good,'
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise DataError(
            f"run folder {folder} does not exist; pass the --out (out_dir) of a tune run"
        )
    result_path, config_path = folder / "result.json", folder / "config.json"
    if not result_path.is_file() and not config_path.is_file():
        raise DataError(
            f"{folder} is not a run folder (it holds neither result.json nor config.json); pass "
            "the --out (out_dir) of a tune run"
        )
    history = read_history(folder / "metrics.jsonl")
    raw = _read_json(result_path) if result_path.is_file() else None
    if config_path.is_file():
        config = _read_json(config_path)
    else:
        config = dict(raw.get("config") or {}) if raw is not None else {}
    return Run(
        folder=folder,
        config=config,
        history=history,
        result=TuneResult.from_dict(raw, folder, history) if raw is not None else None,
        checkpoint_step=_checkpoint_step(folder),
    )
