"""What the generation and multiple-choice families share: their data (instruction induction,
BIG-bench, user files with named fields), how a prompt is applied (the template, with the input
fields cut to fit the target), demonstrations for the agent, and per-example outputs.

Data sources (``task.dataset``):

* ``ii/<task>``: instruction induction (Honovich et al., 2022), read from ``task.data_dir`` (the
  ``ii/`` folder or the root holding it; unset: ``$HARDPROMPTS_DATA_DIR/ii``, the cache, or a
  download, see :mod:`hardprompts.datastore`);
* ``bbii/<task>``: BIG-bench Instruction Induction, found the same way under ``bbii/``;
* a folder of ``[<split_seed>/]{train,dev,test}.{jsonl,csv,tsv}`` user files with the template's
  field columns (``{x}`` reads ``task.text_column``, default ``input``) and the family's answer
  columns (see each family).

The ii/bbii splits are drawn with ``task.split_seed`` (unset: ``"0"``) as documented in
:mod:`hardprompts.taskdata`; ``task.train_size`` and ``task.dev_size`` size them.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch
from pydantic import Field

from hardprompts.chat import ChatFormat
from hardprompts.config import TaskConfig
from hardprompts.errors import ConfigError, DataError
from hardprompts.taskdata import (
    DEFAULT_DEV_SIZE,
    DEFAULT_TRAIN_SIZE,
    BenchmarkTask,
    Example,
    ExampleSplit,
    bbii_info,
    field_values,
    ii_info,
    load_bbii,
    load_ii,
    read_rows,
)
from hardprompts.tasks.data import split_path
from hardprompts.templates import Template, TemplateEncoder

__all__ = ["ExampleTask", "ExampleTaskConfig", "benchmark_of"]

Progress = Callable[[int], None]


class ExampleTaskConfig(TaskConfig):
    """Fields shared by the generation and multiple-choice families (see :mod:`.examples`)."""

    split_seed: str | None = Field(
        None,
        description="ii/ and bbii/ presets: the seed of the drawn train/dev(/test) split (unset: "
        "'0'; any string). A folder of user files: its split sub-folder (unset: none).",
    )
    train_size: int = Field(
        DEFAULT_TRAIN_SIZE,
        ge=1,
        description="ii/bbii presets: most train examples (our choice 100; StablePrompt's code used "
        "32). bbii keeps at most a third of the task for train.",
    )
    dev_size: int = Field(
        DEFAULT_DEV_SIZE,
        ge=1,
        description="ii/bbii presets: most dev examples (our choice 50; at most a third of the data).",
    )


def benchmark_of(config: ExampleTaskConfig) -> tuple[str, str] | None:
    """(family, task) of an ``ii/<task>`` or ``bbii/<task>`` dataset, else None (a folder)."""
    family, _, name = config.dataset.partition("/")
    if family in ("ii", "bbii") and name and not Path(config.dataset).is_dir():
        return family, name
    return None


def bench_root(config: ExampleTaskConfig) -> Path:
    """The ``ii/`` or ``bbii/`` folder of an ``ii/<task>`` / ``bbii/<task>`` dataset."""
    from hardprompts.datastore import locate

    return locate(config.dataset, config.data_dir)


class ExampleTask:
    """Base of the families whose examples carry their own answers (generation, multiple choice).

    Subclasses set ``kind`` and implement :meth:`_outputs` (what the target produces for the P × N
    (prompt, example) pairs and how each is scored) and :meth:`train_rewards`.
    """

    kind = "examples"
    default_template = "{prompt}\nInput: {x}\nOutput:"
    score_name = "score"
    tiebreak_name = "score"
    deterministic_rewards = True  # greedy / likelihood scoring of fixed inputs: no sampling

    def __init__(
        self,
        target: Any,
        *,
        template: str | None = None,
        config: ExampleTaskConfig | None = None,
        info: BenchmarkTask | None = None,
        splits: dict[str, ExampleSplit] | None = None,
        chat: ChatFormat | None = None,
    ) -> None:
        self.target = target
        self.chat = chat  # task.chat: the filled template becomes the user turn (hardprompts.chat)
        self.config = config
        self.info = info
        template = template or (config.template if config else None) or self.default_template
        self.template = template
        fields = config.fields if config is not None else None
        self.parsed = Template.parse(template, "causal", fields)
        if "mask" in {s.slot for s in self.parsed.segments}:
            raise ConfigError(
                f"task.template {template!r}: a {self.kind} task continues the text after the "
                "template; remove {mask}"
            )
        tokenizer = getattr(target, "tokenizer", None)
        max_length = getattr(target, "max_length", None)
        self.encoder = (
            TemplateEncoder(tokenizer, self.parsed, "causal", max_length)
            if tokenizer is not None and max_length
            else None
        )  # None: a served target; the inputs are sent whole
        self._chat_tokens = 0  # tokens the chat format adds, kept free when fitting an input
        if chat is not None and self.encoder is not None:
            self._chat_tokens = len(
                tokenizer(chat.extra_text(), add_special_tokens=False)["input_ids"]
            )
        self._splits: dict[str, ExampleSplit] = dict(splits or {})

    # -- data ----------------------------------------------------------------------------------

    def split(self, name: str) -> ExampleSplit:
        """The examples of split ``name``, read and checked once."""
        if name not in self._splits:
            if self.config is None:
                raise DataError(f"this task was given no {name} split")
            self._splits[name] = self._load(name)
        return self._splits[name]

    def num_inputs(self, split: str) -> int:
        return len(self.split(split))

    def _load(self, split: str) -> ExampleSplit:
        cfg = self.config
        assert cfg is not None
        bench = benchmark_of(cfg)
        if bench is not None:
            family, name = bench
            loader = load_ii if family == "ii" else load_bbii
            out = loader(
                name,
                split,
                root=bench_root(cfg),
                split_seed=cfg.split_seed or "0",
                train_size=cfg.train_size,
                dev_size=cfg.dev_size,
            )
            missing = [f for f in self.parsed.fields if f != "x"]
            if missing:
                raise ConfigError(
                    f"task.template {self.template!r} uses {missing}, but {cfg.dataset} "
                    "examples have one input, {x}"
                )
            self._check(out)
            return out
        path = split_path(cfg, split)
        columns, rows = read_rows(path)
        text_column = cfg.text_column or "input"
        mapping = {f: (text_column if f == "x" else f) for f in self.parsed.fields}
        examples = []
        for lineno, row in rows:
            values = field_values(path, columns, row, lineno, mapping)
            shown = values["x"] if list(values) == ["x"] else json.dumps(values, ensure_ascii=False)
            examples.append(self._user_example(values, shown, row, f"{path}, line {lineno}"))
        if not examples:
            raise DataError(f"{path}: the {split} split has no examples")
        out = ExampleSplit(split, examples, str(path))
        self._check(out)
        return out

    def _user_example(self, values: dict, shown: str, row: dict, where: str) -> Example:
        raise NotImplementedError

    def _check(self, split: ExampleSplit) -> None:
        """A family's check that the examples are of its kind."""

    # -- applying a prompt ---------------------------------------------------------------------

    def render(self, prompt: str, example: Example, reserve: int = 0) -> str:
        """The target's text for one (prompt, example): the template, fields cut to leave
        ``reserve`` tokens free for what the target adds (generated tokens, a choice)."""
        values = example.fields
        if self.encoder is not None:
            values = self.encoder.fit(values, prompt, reserve + self._chat_tokens)
        text = self.parsed.render(values, prompt).rstrip()
        return text if self.chat is None else self.chat.wrap(text)

    def demonstrations(self, k: int, generator: torch.Generator) -> list[tuple[str, str]]:
        """k distinct (input, desired output) pairs from train only (the agent's meta-prompt)."""
        train = self.split("train")
        if k > len(train):
            raise ConfigError(
                f"algorithm.num_demos is {k} but the train split has only {len(train)} examples; "
                "lower algorithm.num_demos"
            )
        idx = torch.randperm(len(train), generator=generator)[:k].tolist()
        return [(train.examples[i].input, self.desired_output(train.examples[i])) for i in idx]

    def desired_output(self, example: Example) -> str:
        raise NotImplementedError

    def gold(self, example: Example) -> str:
        """The desired output as the outputs file shows it: every acceptable answer."""
        return " | ".join(example.answers) if example.answers else self.desired_output(example)

    # -- evaluation ----------------------------------------------------------------------------

    def _outputs(
        self, prompts: Sequence[str], examples: Sequence[Example], progress: Progress | None
    ) -> tuple[list[list[str]], torch.Tensor, torch.Tensor | None]:
        """(outputs [P][N] as strings, per-example scores [P, N] in [0, 1], choice scores
        [P, N, C] or None)."""
        raise NotImplementedError

    def evaluate(
        self, prompts: Sequence[str], split: str, progress: Progress | None = None
    ) -> list:
        return self.evaluate_with_outputs(prompts, split, progress)[0]

    def evaluate_with_outputs(
        self, prompts: Sequence[str], split: str, progress: Progress | None = None
    ) -> tuple[list, list[list[dict[str, Any]]]]:
        """Evaluation rows, and per prompt one record per example: ``input`` (as in the data),
        ``output`` (the generated answer or the chosen choice as the data spells it), ``gold``
        (the desired output; several acceptable answers joined by `` | ``) and ``correct``."""
        from hardprompts.tasks.base import EvalResult

        data = self.split(split)
        t0 = time.perf_counter()
        outputs, scores, choice_scores = self._outputs(list(prompts), data.examples, progress)
        each = (time.perf_counter() - t0) / max(len(prompts), 1)
        results, records = [], []
        for p, prompt in enumerate(prompts):
            metrics = self._metrics(
                scores[p], None if choice_scores is None else choice_scores[p], data
            )
            metrics.update(n=len(data), seconds=each)
            results.append(
                EvalResult(prompt, metrics["score"], metrics[self.tiebreak_name], metrics)
            )
            records.append(
                [
                    {
                        "input": e.input,
                        "output": outputs[p][n],
                        "gold": self.gold(e),
                        "correct": bool(scores[p, n] >= 1.0),
                    }
                    for n, e in enumerate(data.examples)
                ]
            )
        return results, records

    def _metrics(self, scores: torch.Tensor, choice_scores, data: ExampleSplit) -> dict[str, Any]:
        return {"score": float(scores.mean())}

    def report_fields(self, split: str, result) -> dict[str, Any]:
        if split == "dev":
            if result is None:
                raise DataError(f"{self.kind}: the best prompt has no dev evaluation")
            return {f"dev_{k}": result.metrics[k] for k in self._reported()}
        out: dict[str, Any] = {f"{split}_{k}": None for k in self._reported()}
        if result is not None:
            out.update({f"{split}_{k}": result.metrics[k] for k in self._reported()})
        out[f"{split}_n"] = 0 if result is None else result.metrics["n"]
        return out

    def _reported(self) -> list[str]:
        return ["score"]

    def describe(self, split: str) -> dict[str, Any]:
        out = {"source": self.split(split).source, "template": self.template, "kind": self.kind}
        if self.chat is not None:
            out["chat"] = True
        if self.info is not None and self.info.manual_prompt:
            out["manual_prompt"] = self.info.manual_prompt
        return out

    def state_dict(self) -> dict[str, Any]:
        return {}  # nothing random, nothing learned

    def load_state_dict(self, state: dict[str, Any]) -> None:
        return None


def resolve_info(config: ExampleTaskConfig, kind: str) -> BenchmarkTask | None:
    """The ii/bbii task's own settings, checking that its kind is the configured one."""
    bench = benchmark_of(config)
    if bench is None:
        return None
    family, name = bench
    root = bench_root(config)
    info = ii_info(name, root=root) if family == "ii" else bbii_info(name, root=root)
    if info.kind != kind:
        raise ConfigError(
            f"task.dataset {config.dataset} is a {info.kind} task; set task.kind: {info.kind}"
        )
    return info
