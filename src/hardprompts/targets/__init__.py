"""Targets: the frozen language models being prompted.

A target is a service a task calls; it knows nothing about datasets, labels or rewards. What a
target can do is a small protocol each:

* :class:`Target`: class logits [P, N, C] of the label words it was built with, for P prompts on
  N inputs (the template and label words are fixed at construction; classification needs this);
* :class:`GenerationTarget`: ``generate(texts, ...)``, continuations of already-templated texts
  (the briefing's generation contract; style transfer and generation tasks need this);
* :class:`ContinuationTarget`: ``continuation_logprobs(texts, continuations)`` (multiple choice).

Tasks (:mod:`hardprompts.tasks`) build their target with :func:`build_target` and are the only
callers; algorithms reach a target only for gradient methods that need its weights.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Protocol, runtime_checkable

import torch

from hardprompts.config import TargetConfig
from hardprompts.errors import ConfigError
from hardprompts.templates import Kind


@runtime_checkable
class Target(Protocol):
    """What every target offers the algorithms."""

    verbalizers: list[str]

    @property
    def num_classes(self) -> int: ...

    def score(
        self,
        prompts: Sequence[str],
        texts: Sequence[str],
        progress: Callable[[int], None] | None = None,
    ) -> torch.Tensor:
        """Class logits [P, N, C] (float32, CPU) of every prompt on every input."""
        ...


@runtime_checkable
class GenerationTarget(Protocol):
    """A target that writes text (in-process causal LMs, served completion endpoints)."""

    def generate(
        self,
        texts: Sequence[str],
        *,
        num_samples: int = 1,
        max_new_tokens: int = 32,
        stop: str | None = None,
        do_sample: bool = False,
        top_k: int | None = None,
        temperature: float = 1.0,
        seed: int | None = None,
    ) -> list[list[str]]:
        """For each already-templated text, num_samples continuations (strings, cut before `stop`
        and without it). Greedy when do_sample is False."""
        ...


@runtime_checkable
class ContinuationTarget(Protocol):
    """A target that scores given continuations of texts (multiple-choice tasks)."""

    def continuation_logprobs(
        self, texts: Sequence[str], continuations: Sequence[Sequence[str]]
    ) -> list[list[float]]:
        """For each text, the summed log-probability of each of its continuations given the text."""
        ...


def target_kind(config: TargetConfig) -> str:
    """The resolved kind (masked, causal, openai or openai-chat) of a target config.

    A kind set by hand must agree with the architecture the model's config names (a masked-LM
    config pointed at a causal model is an error naming target.kind, not a failed load).
    """
    if config.kind in ("masked", "causal"):
        from hardprompts.modeling import declared_kind

        declared = declared_kind(config.model, trust_remote_code=config.trust_remote_code)
        if declared is not None and declared[0] != config.kind:
            raise ConfigError(
                f"target.kind is {config.kind!r} but target.model {config.model!r} is a "
                f"{declared[0]} LM ({declared[1]}); set target.kind to {declared[0]} or auto (the "
                f"template then defaults to the preset's {declared[0]} one), or choose a "
                f"{config.kind} model"
            )
    if config.kind != "auto":
        return config.kind
    from hardprompts.modeling import detect_kind

    return detect_kind(config.model, trust_remote_code=config.trust_remote_code)


def template_kind(kind: str) -> Kind:
    """Which templates a target kind reads: masked, or causal (a served endpoint continues text)."""
    if kind not in ("masked", "causal", "openai", "openai-chat"):
        raise ConfigError(
            f"target.kind {kind!r} is not one of auto, masked, causal, openai, openai-chat"
        )
    return "masked" if kind == "masked" else "causal"


def build_target(
    config: TargetConfig, template: str, verbalizers: Sequence[str], kind: str | None = None
) -> Target:
    """Load the configured target for a template and label words (``kind``: resolved already)."""
    kind = kind or target_kind(config)
    if kind in ("openai", "openai-chat"):
        from hardprompts.targets.openai import OpenAIChatTarget, OpenAITarget

        cls = OpenAITarget if kind == "openai" else OpenAIChatTarget
        return cls.from_config(config, template, verbalizers)
    from hardprompts.targets.hf import HFTarget

    return HFTarget.from_config(config, template, verbalizers, template_kind(kind))
