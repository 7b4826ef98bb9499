"""Reading what a finished run left in its folder (for ``hardprompts report --html``).

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

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hardprompts.errors import DataError
from hardprompts.report import score_name_of

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


def _json_lines(path: Path) -> list[dict[str, Any]]:
    rows = []
    for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError as exc:
            raise DataError(f"{path}, line {n}: not JSON ({exc.msg})") from None
    return rows


def read_run_folder(path: str | Path) -> RunFolder:
    """Parse the run folder ``path``; a DataError naming the file when it is not one."""
    path = Path(path)
    result_path = path / "result.json"
    if not result_path.is_file():
        raise DataError(
            f"{path} holds no result.json: pass the --out folder of a finished `hardprompts "
            "tune`/`demo` run, a sweep folder, or several run folders"
        )
    try:
        result = json.loads(result_path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise DataError(f"{result_path}: not JSON ({exc.msg})") from None
    if not isinstance(result, dict) or "best_prompt" not in result:
        raise DataError(f"{result_path}: no best_prompt; is it a result.json of a run?")
    metrics_path, outputs_path = path / "metrics.jsonl", path / "outputs_test.jsonl"
    visited_path = path / "visited_prompts.json"
    visited: dict[str, float] = {}
    if visited_path.is_file():
        visited = json.loads(visited_path.read_text(encoding="utf-8")).get("perplexity", {})
    return RunFolder(
        path=path,
        result=result,
        metrics=_json_lines(metrics_path) if metrics_path.is_file() else [],
        outputs=_json_lines(outputs_path) if outputs_path.is_file() else None,
        visited_perplexity=visited,
    )
