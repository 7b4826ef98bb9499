"""Read the data a command needs before any model is loaded, so a wrong path fails in a second.

Loading a model can take minutes (a download, a large checkpoint); a wrong dataset path, a
missing split or a bad column should fail before that, in a second. :func:`check_data` reads
and checks the named splits of the families whose data does not depend on the target
(classification, generation, multiple choice); the task built afterwards reads them again (the
files are small) and keeps its own checks. Other families (style transfer) and ``hf:`` datasets
are read after the target, as before.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any


def check_data(config: Any, splits: Iterable[str]) -> None:
    """Read ``splits`` of ``config.task``'s dataset and raise the task's DataError/ConfigError
    if they cannot serve it; no model is loaded."""
    task = config.task
    if str(getattr(task, "dataset", "")).startswith("hf:"):
        return
    if task.kind == "classification":
        from hardprompts.tasks.classification import resolve_task
        from hardprompts.tasks.data import load_split

        # The number of label words does not depend on the target's kind; the template does,
        # and it is not needed to read the data.
        resolved = resolve_task(task, "masked" if config.target.kind == "masked" else "causal")
        for split in splits:
            load_split(task, split, len(resolved.verbalizers))
    elif task.kind in ("generation", "multiple_choice"):
        from hardprompts.tasks.examples import resolve_info
        from hardprompts.tasks.generation import GenerationTask
        from hardprompts.tasks.multiple_choice import MultipleChoiceTask

        cls = GenerationTask if task.kind == "generation" else MultipleChoiceTask
        probe = cls(_DataOnly(), config=task, info=resolve_info(task, task.kind))
        for split in splits:
            probe.split(split)


class _DataOnly:
    """Stands in for the target while the data is read: it can do what the families ask of a
    target at construction, and nothing is ever called."""

    kind = "causal"
    generate = None
    continuation_logprobs = None
