"""Multiple-choice tasks (``task.kind: multiple_choice``): score each option, pick the best.

BIG-bench tasks scored by ``multiple_choice_grade`` (``bbii/<task>``: the options are the keys of
``target_scores``, also appended to the input as BIG-bench does unless the task says not to) and
user files with a list of options and the index of the correct one.

* A prompt is applied by the template (default ``"{prompt}\\nInput: {x}\\nAnswer:"``); each option,
  after ``task.choice_prefix`` (a space), is scored by its summed log-likelihood after the text
  (briefing contract 3, ``target.continuation_logprobs``: each text's cache is computed once and
  shared by its options). Nothing is generated. The prediction is the best-scored option.
* The option scores play the part of class logits: softmax over a row gives a distribution over
  the options. So the classification rewards carry over unchanged: RLPrompt's gap reward
  (``rlprompt``, ``pin``; Deng et al. 2022) and StablePrompt's ``30 · accuracy + 0.01 · margin``
  (``appo``, ``search``; Kwon et al. 2024), the margin being the correct option's log-likelihood
  minus the best other's. These are StablePrompt's classification weights; its BIG-bench
  multiple-choice code (``stableprompt_bbii_tc.py``) uses ``3 · accuracy + 0.05 · margin`` (set
  ``algorithm.reward_accuracy_weight: 3`` and ``reward_margin_weight: 0.05`` to reproduce it).
  Examples with fewer options are padded with -inf (never chosen).
* ``task.chat``: the text is the chat-formatted user turn and each option follows the assistant
  turn's start (``choice_prefix`` then defaults to nothing; :mod:`hardprompts.chat`).
* When every example has the same options and each (with its prefix) is one token of the target's
  tokenizer (e.g. `` True``/`` False``), the options are label words: the task is then also a
  :class:`~hardprompts.tasks.ClassLogitsTask` (:class:`LabelWordChoiceTask`) and the gradient methods
  (``pez``, ``softprompt``) run on it. With one-token options both scorings pick the same option.
* Evaluation: ``score`` = ``accuracy``, ``mean_gap_reward`` (the tie-break), ``n``, ``seconds``.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Literal

import torch
from pydantic import Field

from hardprompts.config import register_task_config
from hardprompts.errors import ConfigError, DataError, TargetError
from hardprompts.metrics import accuracy, gap_reward, stableprompt_reward
from hardprompts.targets import build_target, target_kind
from hardprompts.taskdata import Example, ExampleSplit
from hardprompts.tasks.base import (
    RewardSpec,
    RLPromptReward,
    StablePromptReward,
    TaskRewards,
    register_task,
)
from hardprompts.tasks.examples import ExampleTask, ExampleTaskConfig, Progress, resolve_info

if TYPE_CHECKING:
    from hardprompts.config import Config

__all__ = [
    "DEFAULT_TEMPLATE",
    "LabelWordChoiceTask",
    "MultipleChoiceTask",
    "MultipleChoiceTaskConfig",
]

DEFAULT_TEMPLATE = "{prompt}\nInput: {x}\nAnswer:"


@register_task_config("multiple_choice")
class MultipleChoiceTaskConfig(ExampleTaskConfig):
    """Each option is scored by its log-likelihood after the template (see the module docstring)."""

    kind: Literal["multiple_choice"] = Field(
        "multiple_choice", description="Score each option's log-likelihood; pick the best."
    )
    dataset: str = Field(
        "bbii/snarks",
        description="bbii/<task> (BIG-bench multiple-choice tasks) or a folder of train/dev/test "
        "files with input, choices and label columns.",
    )
    template: str | None = Field(
        None,
        description="Text given to the target ({prompt}, {x} or named fields; no {mask}). Unset: "
        "'{prompt}\\nInput: {x}\\nAnswer:' (our choice). Rewards of appo/search: "
        "algorithm.reward_accuracy_weight · accuracy + reward_margin_weight · margin, default "
        "30 and 0.01 (StablePrompt's classification weights; its BIG-bench multiple-choice code "
        "uses 3 · accuracy + 0.05 · margin).",
    )
    choice_prefix: str = Field(
        " ",
        description="Text between the template's end and each option (our choice: one space, the "
        "spelling byte-level BPE vocabularies give a word after a space).",
    )
    choices_column: str = Field(
        "choices",
        description="User files: the options column (a JSON list; in CSV/TSV a JSON-encoded list). "
        "task.label_column holds the index of the correct option.",
    )


@register_task("multiple_choice")
class MultipleChoiceTask(ExampleTask):
    """A multiple-choice task on a target that scores continuations (see the module docstring)."""

    kind = "multiple_choice"
    score_name = "accuracy"
    tiebreak_name = "mean_gap_reward"

    default_template = DEFAULT_TEMPLATE

    def __init__(
        self, target: Any, *, config: MultipleChoiceTaskConfig | None = None, **kwargs
    ) -> None:
        super().__init__(target, config=config, **kwargs)
        if getattr(target, "kind", "causal") == "masked" or not hasattr(
            target, "continuation_logprobs"
        ):
            raise TargetError(
                f"{type(target).__name__} cannot score continuations; a multiple-choice task needs "
                "a target that can (an in-process causal LM)"
            )
        self.choice_prefix = (config or MultipleChoiceTaskConfig()).choice_prefix

    @classmethod
    def from_config(cls, config: Config) -> MultipleChoiceTask:
        from hardprompts.chat import resolve_chat

        task_cfg: MultipleChoiceTaskConfig = config.task  # type: ignore[assignment]
        info = resolve_info(task_cfg, "multiple_choice")
        template = task_cfg.template or DEFAULT_TEMPLATE
        kind = target_kind(config.target)
        chat = resolve_chat(task_cfg.chat, config.target, kind)
        if chat is not None and "choice_prefix" not in task_cfg.model_fields_set:
            # the option is the answer: it follows the assistant turn's start directly
            task_cfg = task_cfg.model_copy(update={"choice_prefix": ""})
        probe = cls(_NoTarget(), config=task_cfg, info=info, template=template)
        words = probe.label_words(config)
        # The target's own template scores label words (pez, softprompt): chat-formatted too.
        wrapped = chat.wrap_template(template) if chat is not None and words else template
        target = build_target(config.target, wrapped, words or [], kind)
        task_cls = LabelWordChoiceTask if words else cls
        return task_cls(
            target, config=task_cfg, info=info, template=template, splits=probe._splits, chat=chat
        )

    def label_words(self, config: Config) -> list[str] | None:
        """The options as label words, when every example has the same options and each is one
        token of the target's tokenizer; else None."""
        sets = set()
        for name in ("train", "dev", "test"):
            try:
                sets |= {e.choices for e in self.split(name).examples}
            except DataError:
                if name != "test":
                    raise
        if len(sets) != 1 or target_kind(config.target) == "openai":
            return None
        from hardprompts.modeling import load_tokenizer

        tok = load_tokenizer(config.target.model, trust_remote_code=config.target.trust_remote_code)
        words = [self.choice_prefix + c for c in next(iter(sets))]
        ids = [tok(w, add_special_tokens=False)["input_ids"] for w in words]
        if any(len(i) != 1 for i in ids) or len({i[0] for i in ids}) != len(ids):
            return None
        return words

    def _user_example(self, values: dict, shown: str, row: dict, where: str) -> Example:
        cfg: MultipleChoiceTaskConfig = self.config  # type: ignore[assignment]
        if cfg.choices_column not in row:
            raise DataError(
                f"{where}: no choices column {cfg.choices_column!r}; set task.choices_column"
            )
        choices = row[cfg.choices_column]
        if isinstance(choices, str):
            try:
                choices = json.loads(choices)
            except json.JSONDecodeError:
                raise DataError(f"{where}: the choices are not a JSON list: {choices!r}") from None
        if not isinstance(choices, list) or len(choices) < 2:
            raise DataError(f"{where}: give at least two choices as a list")
        label = row.get(cfg.label_column)
        try:
            label = int(str(label).strip())
        except ValueError:
            label = None
        if label is None or not 0 <= label < len(choices):
            raise DataError(
                f"{where}: no correct choice: {cfg.label_column!r} must be the index (0..{len(choices) - 1}) "
                f"of the correct choice, got {row.get(cfg.label_column)!r}"
            )
        return Example(values, shown, choices=tuple(str(c) for c in choices), label=label)

    def _check(self, split: ExampleSplit) -> None:
        for i, e in enumerate(split.examples):
            if len(e.choices) < 2 or e.label is None:
                raise DataError(
                    f"{split.source}: example {i} has no options with a correct one (is this a "
                    "generation task? set task.kind: generation)"
                )

    def desired_output(self, example: Example) -> str:
        return example.choices[example.label]  # type: ignore[index]

    # -- scores --------------------------------------------------------------------------------

    def applied(self, prompt: str, example: Example) -> tuple[str, list[str]]:
        """The target's text for (prompt, example), its fields cut to leave room for the longest
        option, and the options as scored (after ``task.choice_prefix``)."""
        conts = [self.choice_prefix + c for c in example.choices]
        reserve = 0
        if self.encoder is not None:
            tok = self.encoder.tokenizer
            reserve = max(len(tok(c, add_special_tokens=False)["input_ids"]) for c in conts) + 1
        return self.render(prompt, example, reserve), conts

    def choice_scores(
        self, prompts: Sequence[str], examples: Sequence[Example], progress: Progress | None = None
    ) -> torch.Tensor:
        """[P, N, C] summed log-likelihood of each option (C = most options; -inf pads)."""
        texts, options = [], []
        for p in prompts:
            for e in examples:
                text, conts = self.applied(p, e)
                texts.append(text)
                options.append(conts)
        # Contract 3: each text's cache computed once, shared by its options.
        logps = self.target.continuation_logprobs(texts, options)
        if progress:
            progress(len(texts))
        width = max(len(e.choices) for e in examples)
        out = torch.full((len(prompts) * len(examples), width), float("-inf"))
        for row, values in enumerate(logps):
            out[row, : len(values)] = torch.tensor(values)
        return out.view(len(prompts), len(examples), width)

    def _labels(self, examples: Sequence[Example]) -> torch.Tensor:
        return torch.tensor([e.label for e in examples], dtype=torch.long)

    def _outputs(
        self, prompts: Sequence[str], examples: Sequence[Example], progress: Progress | None
    ):
        scores = self.choice_scores(prompts, examples, progress)
        best = scores.argmax(-1)  # [P, N]; ties go to the first option
        labels = self._labels(examples)
        outputs = [
            [examples[n].choices[int(best[p, n])] for n in range(len(examples))]
            for p in range(len(prompts))
        ]
        return outputs, (best == labels).float(), scores

    def _metrics(self, scores: torch.Tensor, choice_scores, data: ExampleSplit) -> dict[str, Any]:
        labels = self._labels(data.examples)
        acc = float(accuracy(choice_scores, labels))
        return {
            "score": acc,
            "accuracy": acc,
            "mean_gap_reward": float(gap_reward(choice_scores, labels)),
        }

    def _reported(self) -> list[str]:
        return ["score", "accuracy"]

    def train_rewards(
        self, prompts: Sequence[str], reward: RewardSpec, examples: Sequence[int] | None = None
    ) -> TaskRewards:
        train = self.split("train")
        chosen = train.examples if examples is None else [train.examples[i] for i in examples]
        scores = self.choice_scores(list(prompts), chosen)  # [P, N, C], option log-likelihoods
        labels = self._labels(chosen)
        if isinstance(reward, RLPromptReward):
            # r(x) = gap(x) · (λ₂ if gap > 0 else λ₁) over the softmax of the options (RLPrompt)
            r = gap_reward(scores, labels, reward.correct_coef, reward.incorrect_coef)
        elif isinstance(reward, StablePromptReward):
            # R = 30 · acc + 0.01 · mean_x (ℓ_correct − max_other ℓ)   (StablePrompt)
            r = stableprompt_reward(scores, labels, reward.accuracy_weight, reward.margin_weight)
        else:
            raise ConfigError(f"multiple choice has no reward {type(reward).__name__}")
        return TaskRewards(r, metrics={"accuracy": accuracy(scores, labels)})

    def describe(self, split: str) -> dict[str, Any]:
        return {**super().describe(split), "choice_prefix": self.choice_prefix}


class LabelWordChoiceTask(MultipleChoiceTask):
    """A multiple-choice task whose options are the same one-token label words for every example:
    also a :class:`~hardprompts.tasks.ClassLogitsTask` (``verbalizers``, ``template``, ``split``
    with ``texts`` and ``labels``), so ``pez`` and ``softprompt`` run on it."""

    @property
    def verbalizers(self) -> list[str]:
        return [self.choice_prefix + c for c in self.split("train").examples[0].choices]


class _NoTarget:
    """Stands in for the target while the options are read, before the target is loaded."""

    continuation_logprobs = None
