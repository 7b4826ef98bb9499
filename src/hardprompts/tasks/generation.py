"""Generation tasks (``task.kind: generation``): the target writes an answer after the template.

Instruction induction (``ii/<task>``), BIG-bench generation tasks (``bbii/<task>`` whose
``preferred_score`` is ``exact_str_match``) and user files with an answer column.

* A prompt is applied by the template (default ``"{prompt}\\nInput: {x}\\nOutput:"``, our choice
  after StablePrompt's instruction-induction format, which is ``"{prompt}\\nInput : {x}\\nOutput : "``
  with a space before each colon and after the last one); the target continues it greedily
  (briefing contract 2, ``target.generate``) until ``task.stop`` (searched after the answer's
  leading whitespace, as the references strip before they cut) or ``task.max_new_tokens``.
* Each answer is scored by the task's metric (:mod:`hardprompts.text_metrics`): for ii the metric
  of the instruction-induction paper's evaluation (exact match after normalisation; ``contains``,
  ``exact_set`` or ``f1`` for five tasks), for bbii BIG-bench's ``exact_str_match`` with the task's
  ``output_regex``; any of several acceptable answers counts.
* Training reward (StablePrompt, Kwon et al. 2024): its ``30 · metric`` on the batch; its margin
  term needs class logits, which a generated answer has not, so it is left out. RLPrompt's gap
  reward needs class scores too: ``rlprompt``/``pin`` are for classification and multiple choice.
* Evaluation: ``score`` (mean metric over the split), ``n``, ``seconds``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Literal

import torch
from pydantic import Field, field_validator

from hardprompts.config import register_task_config
from hardprompts.errors import ConfigError, DataError, TargetError
from hardprompts.targets import build_target, target_kind
from hardprompts.taskdata import Example, ExampleSplit
from hardprompts.tasks.base import RewardSpec, StablePromptReward, TaskRewards, register_task
from hardprompts.tasks.examples import ExampleTask, ExampleTaskConfig, Progress, resolve_info
from hardprompts.text_metrics import METRICS, exact_str_match

if TYPE_CHECKING:
    from hardprompts.config import Config

__all__ = ["DEFAULT_TEMPLATE", "GenerationTask", "GenerationTaskConfig"]

DEFAULT_TEMPLATE = "{prompt}\nInput: {x}\nOutput:"


@register_task_config("generation")
class GenerationTaskConfig(ExampleTaskConfig):
    """The target generates an answer; the task's metric scores it (see the module docstring)."""

    kind: Literal["generation"] = Field(
        "generation", description="The target writes the answer (instruction induction, BIG-bench)."
    )
    dataset: str = Field(
        "ii/antonyms",
        description="ii/<task> (24 instruction-induction tasks), bbii/<task> (BIG-bench generation "
        "tasks), or a folder of train/dev/test files with input and answer columns.",
    )
    template: str | None = Field(
        None,
        description="Text given to the target ({prompt}, {x} or named fields; no {mask}). Unset: "
        "'{prompt}\\nInput: {x}\\nOutput:' (our choice; StablePrompt's ii code writes "
        "'{prompt}\\nInput : {x}\\nOutput : ', a space before each colon and after the last, which "
        "tokenises differently: set that string to reproduce it).",
    )
    metric: Literal["auto", "em", "contains", "exact_set", "f1", "exact_str_match"] = Field(
        "auto",
        description="How an answer is scored. auto: the task's own (ii: the instruction-induction "
        "paper's per-task metric; bbii: exact_str_match; user files: em).",
    )
    max_new_tokens: int | Literal["auto"] = Field(
        "auto",
        description="Most tokens of a generated answer. auto (our choice): the longest train answer "
        "in the target's tokens plus 8 (32 for a target without a tokenizer).",
    )

    @field_validator("max_new_tokens")
    @classmethod
    def _positive(cls, value):
        if value != "auto" and value < 1:
            raise ValueError("max_new_tokens must be at least 1, or auto")
        return value

    stop: str | None = Field(
        "auto",
        description="The answer ends before this string, searched after the answer's leading "
        "whitespace (so an answer that starts with a newline is kept, as the references strip "
        "before they cut). auto: the task's stop_string (bbii), else a newline. null: only EOS "
        "and max_new_tokens end it.",
    )
    answer_column: str = Field(
        "output",
        description="User files: the answer column (a string, or in JSONL a list of acceptable answers).",
    )


@register_task("generation")
class GenerationTask(ExampleTask):
    """A generation task on a target that can generate (see the module docstring)."""

    kind = "generation"

    default_template = DEFAULT_TEMPLATE

    def __init__(
        self, target: Any, *, config: GenerationTaskConfig | None = None, **kwargs
    ) -> None:
        super().__init__(target, config=config, **kwargs)
        if getattr(target, "kind", "causal") == "masked" or not hasattr(target, "generate"):
            raise TargetError(
                f"this {type(target).__name__} cannot generate text; a generation task needs a causal or served target"
            )
        cfg = config or GenerationTaskConfig()
        self.metric_name = cfg.metric
        if self.metric_name == "auto":
            self.metric_name = self.info.metric if self.info is not None else "em"
        self.stop = cfg.stop
        if self.stop == "auto":
            self.stop = self.info.stop if self.info is not None else "\n"
        self._max_new_tokens = cfg.max_new_tokens
        regex = self.info.output_regex if self.info is not None else None
        if self.metric_name == "exact_str_match":
            self.metric = lambda pred, answers: exact_str_match(pred, answers, regex)
        else:
            self.metric = METRICS[self.metric_name]

    @classmethod
    def from_config(cls, config: Config) -> GenerationTask:
        from hardprompts.chat import resolve_chat

        info = resolve_info(config.task, "generation")  # type: ignore[arg-type]
        template = config.task.template or DEFAULT_TEMPLATE
        kind = target_kind(config.target)
        target = build_target(config.target, template, [], kind)
        chat = resolve_chat(config.task.chat, config.target, kind)
        return cls(target, config=config.task, info=info, template=template, chat=chat)  # type: ignore[arg-type]

    def _user_example(self, values: dict, shown: str, row: dict, where: str) -> Example:
        column = self.config.answer_column  # type: ignore[union-attr]
        if column not in row:
            raise DataError(f"{where}: no answer column {column!r}; set task.answer_column")
        value = row[column]
        answers = [str(a) for a in (value if isinstance(value, list) else [value])]
        if not any(a.strip() for a in answers):
            raise DataError(f"{where}: the answer is empty")
        return Example(values, shown, tuple(a for a in answers if a.strip()))

    def _check(self, split: ExampleSplit) -> None:
        for i, e in enumerate(split.examples):
            if not e.answers:
                raise DataError(
                    f"{split.source}: example {i} has no answer (is this a multiple-choice task?)"
                )

    @property
    def max_new_tokens(self) -> int:
        """``task.max_new_tokens``, resolved from the train answers when it is auto."""
        if self._max_new_tokens == "auto":
            tok = getattr(self.target, "tokenizer", None)
            if tok is None:
                self._max_new_tokens = 32
            else:
                answers = [a for e in self.split("train").examples for a in e.answers]
                longest = max(
                    len(tok(" " + a, add_special_tokens=False)["input_ids"]) for a in answers
                )
                self._max_new_tokens = longest + 8
        return self._max_new_tokens  # type: ignore[return-value]

    def desired_output(self, example: Example) -> str:
        return example.answers[0]

    # -- outputs and rewards -------------------------------------------------------------------

    def _outputs(
        self, prompts: Sequence[str], examples: Sequence[Example], progress: Progress | None
    ):
        texts = [self.render(p, e, self.max_new_tokens) for p in prompts for e in examples]
        # Contract 2: greedy, cut before the stop string.
        generated = self.target.generate(texts, max_new_tokens=self.max_new_tokens, stop=self.stop)
        if progress:
            progress(len(texts))
        n = len(examples)
        outputs = [[generated[p * n + i][0].strip() for i in range(n)] for p in range(len(prompts))]
        scores = torch.tensor(
            [
                [self.metric(outputs[p][i], e.answers) for i, e in enumerate(examples)]
                for p in range(len(prompts))
            ],
            dtype=torch.float32,
        ).view(len(prompts), n)
        return outputs, scores, None

    def train_rewards(
        self, prompts: Sequence[str], reward: RewardSpec, examples: Sequence[int] | None = None
    ) -> TaskRewards:
        if not isinstance(reward, StablePromptReward):
            raise ConfigError(
                "RLPrompt's gap reward needs a score per class; a generation task has generated "
                "answers only. Use algorithm appo or search here, or a multiple_choice task"
            )
        train = self.split("train")
        chosen = train.examples if examples is None else [train.examples[i] for i in examples]
        _, scores, _ = self._outputs(list(prompts), chosen, None)
        metric = scores.mean(-1)  # [P]
        # R = 30 · metric (StablePrompt); the margin term needs class logits, absent here.
        return TaskRewards(reward.accuracy_weight * metric, metrics={"score": metric})

    def describe(self, split: str) -> dict[str, Any]:
        return {
            **super().describe(split),
            "metric": self.metric_name,
            "stop": self.stop,
            "max_new_tokens": self.max_new_tokens,
        }
