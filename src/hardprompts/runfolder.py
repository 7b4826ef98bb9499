"""A finished run as the HTML report reads it: `hardprompts.runs.load_run`'s files, as dicts.

A run folder (``--out`` of ``tune``, ``demo`` or one cell of a sweep) holds:

* ``result.json``: best prompt, tokens, dev/test scores, prompt perplexity, the merged config;
* ``metrics.jsonl``: one line per step (``rewards/…``, ``charts/…``, and at each dev evaluation
  ``dev/<score>``, ``dev/best_<score>`` and ``dev/prompt``, the prompt that won it);
* ``outputs_test.jsonl``: what the target wrote for each test input under the best prompt
  (``input``, ``output``, ``gold``, and ``correct`` or ``content``/``style``/``reward``);
* ``visited_prompts.json``: the perplexity of the prompts of ``dev/prompt``.

The last two are written by runs since the HTML report; an older run reads without them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hardprompts.errors import DataError
from hardprompts.report import score_name_of
from hardprompts.runs import load_run

__all__ = ["RunFolder", "is_run_folder", "is_sweep_folder", "read_run_folder"]


@dataclass(frozen=True)
class RunFolder:
    """The files of one finished run, parsed."""

    path: Path
    result: dict[str, Any]
    metrics: list[dict[str, Any]] = field(default_factory=list)
    #: per test example of the best prompt; None: the run wrote none (older run, no test split)
    outputs: list[dict[str, Any]] | None = None
    #: perplexity of the visited prompts (``dev/prompt``), by prompt
    visited_perplexity: dict[str, float] = field(default_factory=dict)

    @property
    def score_name(self) -> str:
        """The task's score (``accuracy``, ``reward``, ``score``)."""
        return score_name_of(self.result, self.path / "result.json")

    @property
    def config(self) -> dict[str, Any]:
        return self.result.get("config") or {}

    @property
    def method(self) -> str:
        return str(self.result.get("method") or self.config.get("algorithm", {}).get("name"))

    @property
    def task_key(self) -> tuple[str, str]:
        """(task.kind, task.dataset): runs with equal keys solve the same task."""
        task = self.config.get("task", {})
        return str(task.get("kind", "classification")), str(task.get("dataset", "?"))


def is_run_folder(path: Path) -> bool:
    return (path / "result.json").is_file()


def is_sweep_folder(path: Path) -> bool:
    return path.is_dir() and any(path.glob("*/alpha=*/seed=*/result.json"))


def read_run_folder(path: str | Path) -> RunFolder:
    """Parse the finished run folder ``path`` (through `hardprompts.runs.load_run`); a DataError
    naming the folder when it holds no finished run."""
    path = Path(path)
    if not (path / "result.json").is_file():
        raise DataError(
            f"{path} holds no result.json: pass the --out folder of a finished `hardprompts "
            "tune`/`demo` run, a sweep folder, or several run folders"
        )
    run = load_run(path)
    assert run.result is not None  # result.json exists, so load_run read it
    if "best_prompt" not in run.result.raw:
        raise DataError(f"{path / 'result.json'}: no best_prompt; is it a result.json of a run?")
    return RunFolder(
        path=path,
        result=run.result.raw,
        metrics=run.history,
        outputs=run.outputs,
        visited_perplexity=run.visited_perplexity,
    )
