"""What every algorithm is: the :class:`Algorithm` interface the training loop drives, and the
:class:`RunContext` it is built from. The loop itself is :mod:`hardprompts.training`."""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hardprompts.config import Config
from hardprompts.tasks import EvalResult, PromptTask

__all__ = ["Algorithm", "RunContext"]


@dataclass
class RunContext:
    """What an algorithm is built from: the config, the task (its data, target, rewards and
    evaluation) and the output folder."""

    config: Config
    task: PromptTask
    out_dir: Path

    @property
    def target(self) -> Any:
        """The task's frozen LM (for methods that need its weights: PEZ, soft prompts)."""
        return self.task.target


class Algorithm(ABC):
    """A prompt optimiser. Subclasses implement the maths; :func:`hardprompts.training.run` owns
    the loop. Rewards and evaluations come from ``ctx.task``, never from labels directly."""

    #: name written to result.json
    method: str = "algorithm"

    def __init__(self, ctx: RunContext) -> None:
        self.ctx = ctx

    @abstractmethod
    def step(self, step: int) -> dict[str, float]:
        """One optimisation step; returns scalars to log (keys like ``losses/...``, ``charts/...``)."""

    @abstractmethod
    def eval_prompts(self) -> list[str]:
        """Prompts to score on dev now (e.g. the greedy prompt of the current policy)."""

    @abstractmethod
    def state_dict(self) -> dict[str, Any]:
        """Everything needed to resume (tensors, numbers, strings; see :mod:`hardprompts.checkpoint`)."""

    @abstractmethod
    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore what :meth:`state_dict` returned."""

    def after_eval(self, step: int, results: list[EvalResult]) -> dict[str, float]:
        """Hook called after each dev evaluation (e.g. an anchor refresh); returns scalars to log."""
        return {}

    def prompt_tokens(self, prompt: str) -> list[str]:
        """The prompt's tokens as the method sees them (default: the target's tokenizer)."""
        tok = getattr(self.ctx.target, "tokenizer", None)
        if tok is None:
            return prompt.split()
        return tok.convert_ids_to_tokens(tok(prompt.strip(), add_special_tokens=False)["input_ids"])

    def perplexity_judge(self) -> tuple[Any, Any] | None:
        """(causal LM, tokenizer) under which result.json reports prompt perplexity, or None."""
        return None

    def result_extras(self) -> dict[str, Any]:
        """Extra fields for result.json."""
        return {}

    def first_update_step(self) -> int:
        """The first step (1-based) whose end sees the method's prompt source updated; a run of
        fewer steps made no update. 1 unless the method waits (PIN: until its replay buffer holds
        a batch)."""
        return 1
