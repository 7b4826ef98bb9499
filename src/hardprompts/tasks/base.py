"""The task interface: what algorithms and the training loop may ask of a task, and nothing more.

A task owns its data, how a prompt is applied to an input, what it asks of its target (score label
words, generate text, score continuations), how the target's outputs become a *training reward*
per prompt and which *evaluation metrics* it reports. Algorithms see prompts (strings) and
rewards (tensors); they never see label words, labels or generated text.

* :class:`PromptTask` is the protocol every task family implements.
* :class:`TaskRewards` is what :meth:`PromptTask.train_rewards` returns: the raw task reward of
  each prompt, before the shared, task-independent shaping of :class:`hardprompts.rewards.
  TrainingReward` (perplexity term, z-score, scale, cache). ``group`` says how the z-score
  normalises: over all prompts of a step (None), or within groups of prompts (style transfer:
  prompts scored on the same input, as RLPrompt §4; docs: Guides › Style transfer).
* :class:`EvalResult` is one prompt's evaluation on a split: a primary ``score`` (the dev metric
  that picks the best prompt; ties broken by ``tiebreak``) and the family's ``metrics``.
* :class:`RLPromptReward` and :class:`StablePromptReward` name the paper whose reward an algorithm
  trains on, with its coefficients; each family maps them onto its own outputs or raises
  :class:`~hardprompts.errors.ConfigError` for a reward it has no meaning for.
* :class:`ClassLogitsTask` is the extra capability the gradient methods (PEZ, soft prompts) need:
  differentiable class logits, so label words and labelled splits.
* :func:`register_task` and :func:`build_task`: the registry of families by ``task.kind``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol, TypeVar, runtime_checkable

import torch
from torch import Tensor

from hardprompts.errors import ConfigError

if TYPE_CHECKING:
    from hardprompts.config import Config
    from hardprompts.tasks.data import Split

__all__ = [
    "ClassLogitsTask",
    "EvalResult",
    "OutputsTask",
    "PromptTask",
    "RLPromptReward",
    "RewardSpec",
    "StablePromptReward",
    "TaskRewards",
    "build_task",
    "evaluate_with_outputs",
    "register_task",
    "require_class_logits",
    "task_families",
]


# ----------------------------------------------------------------------------------------------
# What an algorithm asks for, and what it gets back
# ----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class RLPromptReward:
    """RLPrompt's task reward (Deng et al. 2022; docs: Methods › RLPrompt). Classification: the
    gap reward with λ₂ = ``correct_coef`` for a positive gap and λ₁ = ``incorrect_coef`` for a
    negative one. A family without label words (style transfer: content + style, RLPrompt §4)
    defines its own and rejects coefficients it does not use."""

    correct_coef: float = 200.0
    incorrect_coef: float = 180.0


@dataclass(frozen=True)
class StablePromptReward:
    """StablePrompt's reward (Kwon et al. 2024; docs: Methods › StablePrompt (APPO)).
    Classification: ``accuracy_weight`` · accuracy + ``margin_weight`` · mean label-word logit
    margin."""

    accuracy_weight: float = 30.0
    margin_weight: float = 0.01


RewardSpec = RLPromptReward | StablePromptReward


@dataclass(frozen=True)
class TaskRewards:
    """Raw task rewards of the P prompts of one call, in the order they were given.

    Attributes:
        reward: [P] float32, R_task(z) of each prompt.
        group: [P] long or None. Prompts with the same group id are z-scored together by the
            shared shaping (e.g. prompts scored on the same input); None: all P together.
        metrics: per-prompt scalars, each [P] (classification: ``accuracy``), for logging and
            for the algorithms' candidate pools.
        spread: [P, K] or None. The values whose mean and standard deviation (over all rows of
            a group) z-score each prompt's reward, instead of the group's P rewards themselves
            (RLPrompt's style transfer: each prompt's K bootstrap maxima, whose mean is its
            reward). None: the rewards.
        shaping: (new_min, new_max) or None. Map the z-score z to new_min + (new_max − new_min)·z
            (RLPrompt's reward_shaping from [0, 1]) in place of the algorithm's ``scale · z``.
    """

    reward: Tensor
    group: Tensor | None = None
    metrics: dict[str, Tensor] = field(default_factory=dict)
    spread: Tensor | None = None
    shaping: tuple[float, float] | None = None


@dataclass(frozen=True)
class EvalResult:
    """How one prompt does on one split.

    Attributes:
        prompt: the prompt.
        score: the primary metric, higher is better; the loop keeps the prompt with the best
            (score, tiebreak) on dev (classification: accuracy, then the mean gap reward).
        tiebreak: the secondary key.
        metrics: every metric the family reports (JSON-able): the rows of ``hardprompts eval``.
    """

    prompt: str
    score: float
    tiebreak: float
    metrics: dict[str, Any]

    def to_dict(self) -> dict[str, Any]:
        """``{"prompt": ..., **metrics}``: one row of ``eval`` output."""
        return {"prompt": self.prompt, **self.metrics}

    def state(self) -> dict[str, Any]:
        """Everything, as plain JSON (checkpoints keep the best dev result this way)."""
        return {
            "prompt": self.prompt,
            "score": self.score,
            "tiebreak": self.tiebreak,
            "metrics": dict(self.metrics),
        }

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> EvalResult:
        return cls(state["prompt"], state["score"], state["tiebreak"], dict(state["metrics"]))


# ----------------------------------------------------------------------------------------------
# The protocols
# ----------------------------------------------------------------------------------------------


@runtime_checkable
class PromptTask(Protocol):
    """What every task family offers the algorithms, the training loop and ``hardprompts eval``."""

    #: the family's ``task.kind``
    kind: str
    #: name of :attr:`EvalResult.score` and :attr:`EvalResult.tiebreak` in logs (``dev/<name>``)
    score_name: str
    tiebreak_name: str
    #: True when a prompt's train reward is a function of the prompt string alone (no sampling,
    #: always the same inputs): the shared reward then scores each distinct prompt once and caches
    #: it. False: every prompt of every call is scored, duplicates included, and nothing is cached.
    deterministic_rewards: bool
    #: the frozen LM being prompted (a :mod:`hardprompts.targets` object)
    target: Any

    def num_inputs(self, split: str) -> int:
        """Load and check ``split`` (train, dev or test); the number of its inputs. A split that
        does not exist is a :class:`~hardprompts.errors.DataError`."""
        ...

    def train_rewards(
        self, prompts: Sequence[str], reward: RewardSpec, examples: Sequence[int] | None = None
    ) -> TaskRewards:
        """Raw rewards of ``prompts`` on training inputs: ``examples`` (indices into the train
        split, in [0, num_inputs("train"))) or, when None, the inputs the family chooses (the
        whole train split for classification)."""
        ...

    def evaluate(
        self, prompts: Sequence[str], split: str, progress: Callable[[int], None] | None = None
    ) -> list[EvalResult]:
        """Every prompt on every input of ``split``; ``progress(n)`` after n more pairs."""
        ...

    def demonstrations(self, k: int, generator: torch.Generator) -> list[tuple[str, str]]:
        """k distinct (input, desired output) pairs from the train split, drawn with
        ``generator`` (the meta-prompt of the LLM-agent methods)."""
        ...

    def report_fields(self, split: str, result: EvalResult | None) -> dict[str, Any]:
        """result.json fields for the best prompt's evaluation on ``split`` (dev or test; None:
        the split does not exist). Classification: dev_accuracy, dev_gap_reward; test_accuracy,
        test_n."""
        ...

    def describe(self, split: str) -> dict[str, Any]:
        """What ``hardprompts eval`` prints beside the results: the split's source, the template
        and the family's settings (classification: verbalizers)."""
        ...

    def state_dict(self) -> dict[str, Any]:
        """The task's own state for a checkpoint (e.g. its sampling generator); {} if none."""
        ...

    def load_state_dict(self, state: dict[str, Any]) -> None: ...


@runtime_checkable
class OutputsTask(Protocol):
    """A task that also returns what the target wrote for each example (``eval --outputs``, and
    the ``outputs_test.jsonl`` of a run that ``hardprompts report --html`` shows). Every shipped
    family offers it; a new family adds this one method and nothing in the algorithms."""

    def evaluate_with_outputs(
        self, prompts: Sequence[str], split: str, progress: Callable[[int], None] | None = None
    ) -> tuple[list[EvalResult], list[list[dict[str, Any]]]]:
        """:meth:`PromptTask.evaluate`, and per prompt one JSON-able record per example, in the
        split's order: ``input``, ``output`` (what the target produced), ``gold`` (the desired
        output, None when the data has none) and the family's per-example judgement:
        ``correct`` (classification, generation, multiple choice) or ``content``, ``style``,
        ``reward`` (style transfer)."""
        ...


def evaluate_with_outputs(
    task: PromptTask, prompts: Sequence[str], split: str
) -> tuple[list[EvalResult], list[list[dict[str, Any]]] | None]:
    """``task.evaluate_with_outputs`` when the task offers it (:class:`OutputsTask`), else
    ``task.evaluate`` and None for the records."""
    if isinstance(task, OutputsTask):
        return task.evaluate_with_outputs(prompts, split)
    return task.evaluate(prompts, split), None


@runtime_checkable
class ClassLogitsTask(Protocol):
    """A task whose target gives class logits over label words, so that a prompt's loss is
    differentiable in its embeddings (PEZ, soft prompts). Classification offers it."""

    verbalizers: list[str]
    template: str

    def split(self, name: str) -> Split:
        """The labelled split ``name`` (texts and integer labels)."""
        ...


def require_class_logits(task: Any, method: str) -> ClassLogitsTask:
    """``task`` as a :class:`ClassLogitsTask`, or a ConfigError saying ``method`` needs one."""
    if not isinstance(task, ClassLogitsTask):
        raise ConfigError(
            f"algorithm {method!r} differentiates label-word logits, which task.kind "
            f"{getattr(task, 'kind', type(task).__name__)!r} does not offer; use task.kind "
            "classification, or an algorithm that needs only rewards (rlprompt, pin, appo, search)"
        )
    return task


# ----------------------------------------------------------------------------------------------
# The registry of task families
# ----------------------------------------------------------------------------------------------

_FAMILIES: dict[str, Callable[[Config], PromptTask]] = {}
F = TypeVar("F", bound=type)


def register_task(kind: str) -> Callable[[F], F]:
    """Class decorator: ``task.kind: <kind>`` builds its task with ``cls.from_config(config)``.

    The family's config class registers separately, in the config layer
    (:func:`hardprompts.config.register_task_config`), so that configs validate at load time.
    """

    def decorate(cls: F) -> F:
        _FAMILIES[kind] = cls.from_config  # type: ignore[attr-defined]
        return cls

    return decorate


def task_families() -> list[str]:
    """The registered ``task.kind`` names."""
    return sorted(_FAMILIES)


def build_task(config: Config) -> PromptTask:
    """The task of a run: its family's ``from_config(config)`` (which loads its target)."""
    kind = config.task.kind
    if kind not in _FAMILIES:
        raise ConfigError(
            f"task.kind {kind!r} has no task family registered; known: {', '.join(task_families())}"
        )
    return _FAMILIES[kind](config)
