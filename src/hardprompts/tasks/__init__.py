"""Tasks: what is solved, how a prompt is applied and how it is rewarded and evaluated.

* :mod:`hardprompts.tasks.base`: the interface (:class:`PromptTask`, :class:`TaskRewards`,
  :class:`EvalResult`, the reward specs) and the registry of families by ``task.kind``;
* :mod:`hardprompts.tasks.data`: presets and the checked reading of labelled split files;
* :mod:`hardprompts.tasks.classification`: ``task.kind: classification``.

A new family is a module here that defines a config class (registered with
:func:`hardprompts.config.register_task_config`) and a task class registered with
:func:`register_task`, and one line in :data:`hardprompts.config.BUILTIN_PLUGINS` naming the
module, which a config with that ``task.kind`` imports (registering both). The docs page
reference/architecture.md has the layering; ``tests/test_task_layer.py`` a toy family to copy.
"""

from hardprompts.tasks import classification  # noqa: F401  (registers "classification")
from hardprompts.tasks.base import (
    ClassLogitsTask,
    EvalResult,
    OutputsTask,
    PromptTask,
    RewardSpec,
    RLPromptReward,
    StablePromptReward,
    TaskRewards,
    build_task,
    evaluate_with_outputs,
    register_task,
    require_class_logits,
    task_families,
)
from hardprompts.tasks.classification import ClassificationTask, resolve_task, sample_demos
from hardprompts.tasks.data import (
    PRESETS,
    SPLIT_SEEDS,
    SPLITS,
    Preset,
    Split,
    load_split,
    read_examples,
    split_path,
)

__all__ = [
    "PRESETS",
    "SPLITS",
    "SPLIT_SEEDS",
    "ClassLogitsTask",
    "ClassificationTask",
    "EvalResult",
    "OutputsTask",
    "Preset",
    "PromptTask",
    "RLPromptReward",
    "RewardSpec",
    "Split",
    "StablePromptReward",
    "TaskRewards",
    "build_task",
    "evaluate_with_outputs",
    "load_split",
    "read_examples",
    "register_task",
    "require_class_logits",
    "resolve_task",
    "sample_demos",
    "split_path",
    "task_families",
]
