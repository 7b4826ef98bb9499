"""Targets: the frozen language models being prompted.

A target turns P prompts and N inputs into class logits of shape [P, N, C] (one logit per
verbalizer). Algorithms see only this interface (:class:`Target`), so a new kind of target never
touches an algorithm.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Protocol, runtime_checkable

import torch

from hardprompts.config import TargetConfig, TaskConfig
from hardprompts.errors import ConfigError
from hardprompts.tasks import Task, resolve_task


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


def target_kind(config: TargetConfig) -> str:
    """The resolved kind (masked, causal or openai) of a target config."""
    if config.kind != "auto":
        return config.kind
    from hardprompts.modeling import detect_kind

    return detect_kind(config.model, trust_remote_code=config.trust_remote_code)


def build_target(config: TargetConfig, task_config: TaskConfig) -> tuple[Target, Task]:
    """Load the configured target and resolve the task's template and verbalizers for its kind."""
    kind = target_kind(config)
    if kind == "openai":
        from hardprompts.targets.openai import OpenAITarget

        task = resolve_task(task_config, "causal")
        return OpenAITarget.from_config(config, task.template, task.verbalizers), task
    if kind not in ("masked", "causal"):
        raise ConfigError(f"target.kind {kind!r} is not one of auto, masked, causal, openai")
    from hardprompts.targets.hf import HFTarget

    task = resolve_task(task_config, kind)  # type: ignore[arg-type]
    return HFTarget.from_config(config, task.template, task.verbalizers, kind), task  # type: ignore[arg-type]
