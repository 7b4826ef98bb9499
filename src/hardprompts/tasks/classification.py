"""Few-shot classification: the target scores one label word (verbalizer) per class.

The family behind RLPrompt, PIN, PEZ, soft prompts and StablePrompt's classification runs:

* data: labelled splits (:mod:`hardprompts.tasks.data`; presets with the literature's template and
  label words per target kind);
* a prompt is applied by the template (``{x}`` input, ``{prompt}``, ``{mask}``), which the target
  encodes; the target returns label-word logits [P, N, C];
* training reward: RLPrompt's gap reward (Deng et al. 2022; docs: Methods › RLPrompt) or
  StablePrompt's accuracy + margin (Kwon et al. 2024; docs: Methods › StablePrompt (APPO)), per
  prompt, over the whole train split or given examples;
* evaluation: accuracy (the dev score), per-class accuracy, mean gap reward (the tie-break), n.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch

from hardprompts.config import ClassificationTaskConfig
from hardprompts.errors import ConfigError, DataError
from hardprompts.metrics import accuracy, gap_reward, prompt_scores, stableprompt_reward
from hardprompts.targets import Target, build_target, target_kind, template_kind
from hardprompts.tasks.base import (
    EvalResult,
    RewardSpec,
    RLPromptReward,
    StablePromptReward,
    TaskRewards,
    register_task,
)
from hardprompts.tasks.data import PRESETS, Preset, Split, check_folder_dataset, load_split
from hardprompts.templates import Kind

if TYPE_CHECKING:
    from hardprompts.config import Config

__all__ = ["ClassificationTask", "Resolved", "resolve_task", "sample_demos"]


@dataclass(frozen=True)
class Resolved:
    """A classification config's template and label words for one target kind, plus data access."""

    config: ClassificationTaskConfig
    template: str
    verbalizers: list[str]
    preset: Preset | None

    @property
    def num_classes(self) -> int:
        return len(self.verbalizers)

    def split(self, name: str) -> Split:
        """Load and check the split ``name`` (train, dev or test)."""
        return load_split(self.config, name, self.num_classes)


def resolve_task(config: ClassificationTaskConfig, kind: Kind) -> Resolved:
    """Fill the template and verbalizers from the preset when the config leaves them unset."""
    preset = PRESETS.get(config.dataset)
    template = config.template
    verbalizers = config.verbalizers
    if preset is None and not config.dataset.startswith("hf:"):
        check_folder_dataset(config.dataset)  # before asking for verbalizers
    if preset is not None and verbalizers is not None and len(verbalizers) != preset.num_classes:
        raise ConfigError(
            f"task.verbalizers has {len(verbalizers)} words but {config.dataset} has "
            f"{preset.num_classes} classes; give one label word per class"
        )
    if preset is not None:
        template = template or (
            preset.masked_template if kind == "masked" else preset.causal_template
        )
        verbalizers = verbalizers or (
            preset.masked_verbalizers if kind == "masked" else preset.causal_verbalizers
        )
    if template is None:
        template = "{x} {prompt} {mask} ." if kind == "masked" else "{x} {prompt}"
    if verbalizers is None:
        raise ConfigError(
            f"task.dataset {config.dataset!r} is not a preset, so task.verbalizers must be set "
            f"(one label word per class). Presets: {', '.join(PRESETS)}"
            + (
                "; ii/ and bbii/ tasks are task.kind generation or multiple_choice"
                if config.dataset.startswith(("ii/", "bbii/"))
                else ""
            )
        )
    return Resolved(config, template, list(verbalizers), preset)


def sample_demos(
    split: Split, verbalizers: Sequence[str], k: int, generator: torch.Generator
) -> list[tuple[str, str]]:
    """k distinct (input, label word) pairs drawn uniformly from ``split``.

    The label word is the verbalizer without its leading space (" great" -> "great").
    """
    if k > len(split):
        raise ConfigError(
            f"algorithm.num_demos is {k} but the train split has only {len(split)} examples; "
            "lower algorithm.num_demos"
        )
    idx = torch.randperm(len(split), generator=generator)[:k].tolist()
    return [(_shown(split.texts[i]), verbalizers[split.labels[i]].strip()) for i in idx]


def _shown(text) -> str:
    """An input as the agent's meta-prompt shows it: the text, or each named field on a line."""
    if isinstance(text, str):
        return text
    return "\n".join(f"{name}: {value}" for name, value in text.items())


@register_task("classification")
class ClassificationTask:
    """A classification task on a label-word target (see the module docstring).

    Args:
        target: any :class:`~hardprompts.targets.Target` built with these label words.
        template: the template the target applies (reported by ``eval``).
        verbalizers: one label word per class; default the target's.
        config: where the splits are read from; without it only ``splits`` exist.
        splits: splits given directly (tests, toy problems), by name.
    """

    kind = "classification"
    score_name = "accuracy"
    tiebreak_name = "gap_reward"
    deterministic_rewards = True  # every prompt is scored on the same inputs, no sampling

    def __init__(
        self,
        target: Target,
        *,
        template: str | None = None,
        verbalizers: Sequence[str] | None = None,
        config: ClassificationTaskConfig | None = None,
        splits: Mapping[str, Split] | None = None,
    ) -> None:
        self.target = target
        self.template = template
        self.verbalizers = list(verbalizers if verbalizers is not None else target.verbalizers)
        self.config = config
        self._splits: dict[str, Split] = dict(splits or {})
        self._labels: dict[str, torch.Tensor] = {}

    @classmethod
    def from_config(cls, config: Config) -> ClassificationTask:
        """Resolve the template and label words for the target's kind, then load the target."""
        from hardprompts.chat import resolve_chat

        kind = target_kind(config.target)
        resolved = resolve_task(config.task, template_kind(kind))  # type: ignore[arg-type]
        template, verbalizers = resolved.template, resolved.verbalizers
        chat = resolve_chat(config.task.chat, config.target, kind)
        if chat is not None:  # the label word is the answer's first token, after the turn's start
            template = chat.wrap_template(template)
            verbalizers = [w.lstrip() for w in verbalizers]
            if len(set(verbalizers)) != len(verbalizers):
                raise ConfigError(
                    f"task.chat: the label words {resolved.verbalizers} are not distinct without "
                    "their leading spaces; choose other task.verbalizers"
                )
        target = build_target(config.target, template, verbalizers, kind)
        return cls(
            target,
            template=template,
            verbalizers=verbalizers,
            config=config.task,  # type: ignore[arg-type]
        )

    @property
    def num_classes(self) -> int:
        return len(self.verbalizers)

    # -- data ----------------------------------------------------------------------------------

    def split(self, name: str) -> Split:
        """The labelled split ``name``, read and checked once."""
        if name not in self._splits:
            if self.config is None:
                raise DataError(f"this task was given no {name} split")
            split = load_split(self.config, name, self.num_classes)
            missing = [c for c in range(self.num_classes) if c not in set(split.labels)]
            if name == "train" and missing:  # more label words than the data has classes
                raise DataError(
                    f"task.verbalizers gives {self.num_classes} classes, but {split.source} has no "
                    "example of class "
                    + ", ".join(f"{c} ({self.verbalizers[c]!r})" for c in missing)
                    + "; give one verbalizer per class of the data"
                )
            self._splits[name] = split
        return self._splits[name]

    def labels(self, name: str) -> torch.Tensor:
        """[N] long gold classes of split ``name``."""
        if name not in self._labels:
            self._labels[name] = torch.tensor(self.split(name).labels)
        return self._labels[name]

    def num_inputs(self, split: str) -> int:
        return len(self.split(split))

    # -- training reward -----------------------------------------------------------------------

    def train_rewards(
        self, prompts: Sequence[str], reward: RewardSpec, examples: Sequence[int] | None = None
    ) -> TaskRewards:
        train = self.split("train")
        labels = self.labels("train")
        if examples is None:
            texts = train.texts
        else:
            texts = [train.texts[i] for i in examples]
            labels = labels[torch.as_tensor(list(examples), dtype=torch.long)]
        logits = self.target.score(list(prompts), texts)  # [P, N, C] label-word logits
        if isinstance(reward, RLPromptReward):
            # r(x) = gap(x) · (λ₂ if gap > 0 else λ₁);  R = mean_x r(x)   (RLPrompt)
            r = gap_reward(logits, labels, reward.correct_coef, reward.incorrect_coef)
        elif isinstance(reward, StablePromptReward):
            # R = 30 · acc + 0.01 · mean_x margin   (StablePrompt)
            r = stableprompt_reward(logits, labels, reward.accuracy_weight, reward.margin_weight)
        else:
            raise ConfigError(f"classification has no reward {type(reward).__name__}")
        return TaskRewards(r, metrics={"accuracy": accuracy(logits, labels)})

    # -- evaluation ----------------------------------------------------------------------------

    def evaluate(
        self, prompts: Sequence[str], split: str, progress: Callable[[int], None] | None = None
    ) -> list[EvalResult]:
        return self.evaluate_with_outputs(prompts, split, progress)[0]

    def evaluate_with_outputs(
        self, prompts: Sequence[str], split: str, progress: Callable[[int], None] | None = None
    ) -> tuple[list[EvalResult], list[list[dict[str, Any]]]]:
        """Evaluation rows, and per prompt one record per example: ``input``, ``output`` (the
        predicted label word, stripped), ``gold`` (the correct label word) and ``correct``."""
        data = self.split(split)
        t0 = time.perf_counter()
        logits = self.target.score(list(prompts), data.texts, progress=progress)
        scores = prompt_scores(list(prompts), logits, data.labels, time.perf_counter() - t0)
        results = [
            EvalResult(
                s.prompt,
                s.accuracy,
                s.mean_gap_reward,
                {"score": s.accuracy, **{k: v for k, v in s.to_dict().items() if k != "prompt"}},
            )
            for s in scores
        ]
        predicted = logits.argmax(-1)  # [P, N]
        records = [
            [
                {
                    "input": text,
                    "output": self.verbalizers[int(predicted[p, n])].strip(),
                    "gold": self.verbalizers[label].strip(),
                    "correct": int(predicted[p, n]) == label,
                }
                for n, (text, label) in enumerate(zip(data.texts, data.labels, strict=True))
            ]
            for p in range(len(prompts))
        ]
        return results, records

    def report_fields(self, split: str, result: EvalResult | None) -> dict[str, Any]:
        if split == "dev":
            if result is None:
                raise DataError("classification: the best prompt has no dev evaluation")
            return {
                "dev_accuracy": result.metrics["accuracy"],
                "dev_gap_reward": result.metrics["mean_gap_reward"],
            }
        return {
            f"{split}_accuracy": None if result is None else result.metrics["accuracy"],
            f"{split}_n": 0 if result is None else result.metrics["n"],
        }

    def describe(self, split: str) -> dict[str, Any]:
        return {
            "source": self.split(split).source,
            "template": self.template,
            "verbalizers": self.verbalizers,
        }

    # -- what the agent methods and the gradient methods read ------------------------------------

    def demonstrations(self, k: int, generator: torch.Generator) -> list[tuple[str, str]]:
        """k (input, label word) pairs from train, the label word without its leading space."""
        return sample_demos(self.split("train"), self.verbalizers, k, generator)

    def state_dict(self) -> dict[str, Any]:
        return {}  # nothing random, nothing learned

    def load_state_dict(self, state: dict[str, Any]) -> None:
        return None
