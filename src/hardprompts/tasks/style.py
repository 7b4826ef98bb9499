"""Text style transfer (``task.kind: style_transfer``): a prompt makes a frozen causal LM rewrite
a sentence in a target style (RLPrompt, Deng et al. 2022, §4; PIN, Choi et al. 2024; Patel et al.
2025, Fig. 4; docs: Guides › Style transfer).

* data: sentences with a style label; the inputs are those *not* in ``task.target_style``.
  Presets ``yelp-sentiment`` and ``shakespeare`` read RLPrompt's files under ``task.data_dir``
  (the ``tst/`` folder or the root holding it; unset: ``$HARDPROMPTS_DATA_DIR/tst``, the cache, or
  a download, see :mod:`hardprompts.datastore`), see :func:`load_style_splits`;
  a folder holds ``train/dev/test`` files with a text and a style-label column.
* a prompt is applied by the template (RLPrompt: ``{prompt} "{x}" "``); the target samples
  ``num_samples × num_bootstraps`` continuations per (prompt, input), top-k, cut at
  ``task.end_text`` and after the first sentence end, as RLPrompt's ``postprocess_output``.
* training reward (RLPrompt's ``PromptedTextStyleTransferReward``): per output
  R = (content + style) / 2 with content = 100·max(sim(y, x), 0) and style = 100·P(s | y); the
  N outputs are cut into ``num_bootstraps`` consecutive groups, the max of each taken, their mean
  is the prompt's reward on x. The shared reward then z-scores per input over every prompt's
  bootstrap maxima (``TaskRewards.spread``) and shapes z onto [new_min, new_max] = [−20, 80].
* evaluation: per input the best of ``eval_num_samples`` outputs by the same reward (RLPrompt's
  ``select_outputs_batch``), then content, style accuracy, fluency, J, GM, BLEU, self-BLEU and
  perplexity as RLPrompt's ``TextStyleTransferEvaluator``.

What we found in the reference code (``mingkaid/rl-prompt``, ``examples/text-style-transfer``):
``tst_reward.py`` z-scores *before* the SQL module's shaping (``sql_module.py``:
``shaped = shaping(raw)``, ``module_utils.get_reward_shaping_func``), with ``tst_config.yaml``
``reward_shaping_old_min/max = 0/1``, ``new_min/max = −20/80``, i.e. r = 100·z − 20. The z-score's
mean and ``np.std`` run over ``input_rewards[src]``, the list of every bootstrap max of every
prompt paired with that input in the step (4 prompts × 4 bootstraps = 16 values), not over the 4
prompt rewards. Each step takes ``train_batch_size: 2`` inputs in file order
(``train_shuffle: false``), each repeated ``num_repeats: 4`` times against
``prompt_train_batch_size: 8`` prompts. Generation: ``task_top_k: 10``, ``num_samples: 32``,
``num_bootstraps: 4``, ``control_output_length: true`` caps new tokens at
``max(1.5·n, n + 10)`` for an input of n tokens (we round down), ``lower_outputs: true`` (PIN's
README: false for Shakespeare). PIN's ``tst_config.yaml`` keeps the same reward but shapes [0, 1]
onto [0, 1] (no shaping) with ``num_repeats: 8``.

Special tokens: an in-process target's input starts with its tokenizer's BOS when the tokenizer
adds one (OPT's ``</s>``; GPT-2 adds none), as RLPrompt's ``text-generation`` pipeline does. The
length cap counts the input sentence's tokens *without* special tokens; RLPrompt's
``len(tokenizer(source_text)['input_ids'])`` counted OPT's BOS too, so with an OPT target its cap
is one input token larger (``max(1.5·(n + 1), n + 11)``); with GPT-2 both agree.
"""

from __future__ import annotations

import math
import random
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import torch
from pydantic import Field, field_validator, model_validator

from hardprompts.config import TaskConfig, register_task_config
from hardprompts.errors import ConfigError, DataError
from hardprompts.tasks.base import (
    EvalResult,
    RewardSpec,
    RLPromptReward,
    TaskRewards,
    register_task,
)
from hardprompts.tasks.data import read_examples, split_path

if TYPE_CHECKING:
    from hardprompts.chat import ChatFormat
    from hardprompts.config import Config, RewardConfig

__all__ = [
    "STYLE_PRESETS",
    "StyleSplit",
    "StyleTransferTask",
    "StyleTransferTaskConfig",
    "apply_template",
    "bootstrap_max",
    "load_style_splits",
    "output_token_cap",
    "postprocess",
]

#: The presets' style names, in label order, and their built-in style classifiers.
STYLE_PRESETS: dict[str, dict[str, Any]] = {
    "yelp-sentiment": {"styles": ["negative", "positive"], "style_model": "builtin:yelp-style",
                       "lower_outputs": True},
    "shakespeare": {"styles": ["early_modern", "modern"],
                    "style_model": "builtin:shakespeare-style", "lower_outputs": False},
}  # fmt: skip
SHAKESPEARE_SEEDS = ("100-100", "100-13", "100-21", "100-42", "100-87")

# The sentences of sentiment.dev.* that builtin:yelp-style was trained and selected on
# (scripts/train_style_classifier.py defaults: random.Random(0) shuffles label 0's then label 1's
# stripped non-empty lines; the first 500 select, the next 6,000 train). The preset leaves them out.
_YELP_CLASSIFIER_SEED, _YELP_CLASSIFIER_PER_CLASS = 0, 500 + 6000
YELP_DEV_INPUTS = 16  # RLPrompt's tst_helpers: "only use 16 examples for Yelp validation"


@register_task_config("style_transfer")
class StyleTransferTaskConfig(TaskConfig):
    """Text style transfer: the target rewrites each input in ``target_style`` (RLPrompt §4)."""

    kind: Literal["style_transfer"] = Field(
        "style_transfer",
        description="Text style transfer (RLPrompt section 4, PIN): the target generates rewrites.",
    )
    dataset: str = Field(
        "yelp-sentiment",
        description="yelp-sentiment (Yelp negative/positive, RLPrompt's files: train and dev are "
        "disjoint slices of sentiment.dev.*, test sentiment.test.* with sentiment.ref.* as "
        "references), shakespeare (100-shot splits, task.split_seed), or a folder of "
        "train/dev/test files with a text and a style-label column. Default yelp-sentiment as "
        "RLPrompt.",
    )
    data_dir: str | None = Field(
        None,
        description="Folder holding yelp/clean/ and shakespeare/100-shot/ (RLPrompt's layout: the "
        "tst/ folder), or the root holding tst/. Unset: $HARDPROMPTS_DATA_DIR/tst, else the "
        "cache, else a download on first use (hardprompts data).",
    )
    split_seed: str | None = Field(
        None,
        description="shakespeare: the 100-shot split folder (100-100, 100-13, 100-21, 100-42, "
        "100-87); unset = 100-13, the split builtin:shakespeare-style was trained on (RLPrompt's "
        "dataset_seed 1). A folder dataset: a sub-folder, or unset for files directly inside.",
    )
    template: str | None = Field(
        '{prompt} "{x}" "',
        description="Text the target continues: {prompt} the prompt, {x} the input. RLPrompt: "
        '\'{prompt} "{x}" "\'.',
    )
    end_text: str = Field(
        '"', description="Outputs are cut before this text (RLPrompt's end_punct '\"')."
    )
    target_style: int | str = Field(
        1,
        description="The style to write in: a label index, or a preset's style name (yelp: "
        "negative 0, positive 1; shakespeare: early_modern 0, modern 1). The inputs are the "
        "sentences of the other style(s). Default 1 (RLPrompt's 0_to_1).",
    )
    num_samples: int = Field(32, ge=1, description="Outputs per bootstrap group (RLPrompt: 32).")
    num_bootstraps: int = Field(
        4,
        ge=1,
        description="Groups the num_samples × num_bootstraps outputs of a (prompt, input) are cut "
        "into; the prompt's reward is the mean of the groups' max (RLPrompt: 4).",
    )
    top_k: int | None = Field(
        10, ge=1, description="Top-k sampling of the target (RLPrompt's task_top_k: 10)."
    )
    num_repeats: int = Field(
        4,
        ge=1,
        description="Prompts paired with each input in a step: a step of P prompts uses "
        "P / num_repeats inputs (RLPrompt: 8 prompts, 4 repeats, 2 inputs).",
    )
    shuffle: bool = Field(
        False,
        description="Draw training inputs in a seeded random order each epoch; false = file "
        "order (RLPrompt's train_shuffle: false).",
    )
    control_output_length: bool = Field(
        True,
        description="Cap new tokens at max(1.5·n, n + 10) for an input of n tokens, counted "
        "without special tokens (RLPrompt's tst_config: true; its count included OPT's BOS, one "
        "token more with an OPT target); false = max_new_tokens.",
    )
    max_new_tokens: int = Field(
        40, ge=1, description="New-token cap when control_output_length is false (ours)."
    )
    lower_outputs: bool | None = Field(
        None,
        description="Lower-case outputs before scoring. Unset: yelp-sentiment true, shakespeare "
        "false (RLPrompt/PIN), a folder false.",
    )
    reward_shaping: tuple[float, float] = Field(
        (-20.0, 80.0),
        description="[new_min, new_max]: the per-input z-score z becomes new_min + (new_max − "
        "new_min)·z (RLPrompt's tst_config: [0, 1] → [−20, 80]; PIN's: [0, 1] → [0, 1]). "
        "Replaces algorithm.reward_scale.",
    )
    eval_num_samples: int = Field(
        32,
        ge=1,
        description="Outputs per input at evaluation; the best by the training reward is kept "
        "(RLPrompt's run_eval: num_samples = 32).",
    )
    eval_max_inputs: int | None = Field(
        None, ge=1, description="Evaluate on the first this many inputs of a split (null: all)."
    )
    train_size: int | None = Field(
        None, ge=1, description="Use the first this many training inputs (null: all)."
    )
    reference_column: str | None = Field(
        None,
        description="Folder datasets: a column of human rewrites for BLEU (test split); unset: "
        "no BLEU.",
    )

    @field_validator("template")
    @classmethod
    def _has_prompt(cls, value: str | None) -> str | None:
        if value is not None and "{prompt}" not in value:
            raise ValueError("the template must contain {prompt} (where the prompt goes)")
        return value

    @model_validator(mode="after")
    def _check(self) -> StyleTransferTaskConfig:
        if not self.end_text:
            raise ValueError("task.end_text must not be empty")
        lo, hi = self.reward_shaping
        if not hi > lo:
            raise ValueError(f"task.reward_shaping needs new_min < new_max, got {[lo, hi]}")
        return self


# ----------------------------------------------------------------------------------------------
# Pure pieces
# ----------------------------------------------------------------------------------------------


def apply_template(template: str, prompt: str, text: str) -> str:
    """The template with ``{prompt}`` and ``{x}`` filled (no str.format: inputs may hold braces)."""
    return template.replace("{prompt}", prompt).replace("{x}", text)


def postprocess(text: str, lower: bool) -> str:
    """RLPrompt's ``postprocess_output`` after the cut at end_text: strip, keep up to and with the
    first '.', '!' or '?', strip, lower-case if asked."""
    text = text.strip()
    ends = [i for i in (text.find("."), text.find("!"), text.find("?")) if i >= 0]
    if ends:
        text = text[: min(ends) + 1]
    text = text.strip()
    return text.lower() if lower else text


def output_token_cap(num_tokens: int, control: bool, default: int) -> int:
    """New tokens allowed for an input of ``num_tokens`` tokens: RLPrompt's
    max(1.5·n, n + 10) (rounded down) when ``control``, else ``default``."""
    return int(max(1.5 * num_tokens, num_tokens + 10)) if control else default


def bootstrap_max(rewards: torch.Tensor, num_bootstraps: int) -> torch.Tensor:
    """[P, N] rewards of N outputs → [P, K] maxima of K consecutive groups of N / K outputs
    (RLPrompt's ``_boostrap_max_rewards_k_times``). The prompt's reward is their mean."""
    p, n = rewards.shape
    if n % num_bootstraps:
        raise ValueError(f"{n} outputs do not split into {num_bootstraps} equal groups")
    return rewards.reshape(p, num_bootstraps, n // num_bootstraps).max(-1).values


# ----------------------------------------------------------------------------------------------
# Data
# ----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class StyleSplit:
    """The inputs of one split: sentences not in the target style, and their references."""

    name: str
    sources: list[str]
    references: list[list[str]] | None
    source: str

    def __len__(self) -> int:
        return len(self.sources)


def tst_data_dir(config: StyleTransferTaskConfig) -> Path:
    """The ``tst/`` folder of a preset (see :func:`hardprompts.datastore.locate`)."""
    from hardprompts.datastore import locate

    return locate(config.dataset, config.data_dir)


def _lines(path: Path) -> list[str]:
    if not path.is_file():
        raise DataError(
            f"{path} not found; set task.data_dir to the tst/ folder that holds "
            "yelp/clean/sentiment.*.clean, or unset it (hardprompts data fetch yelp-sentiment)"
        )
    return [s.strip() for s in path.read_text(encoding="utf-8").splitlines() if s.strip()]


def yelp_classifier_sentences(root: Path) -> set[str]:
    """The sentiment.dev.* sentences builtin:yelp-style saw (see the constant's comment)."""
    rng = random.Random(_YELP_CLASSIFIER_SEED)
    seen: set[str] = set()
    for label in (0, 1):
        lines = _lines(root / f"sentiment.dev.{label}.clean")
        rng.shuffle(lines)
        seen.update(lines[:_YELP_CLASSIFIER_PER_CLASS])
    return seen


def _yelp(config: StyleTransferTaskConfig, target: int) -> dict[str, StyleSplit]:
    root = tst_data_dir(config) / "yelp" / "clean"
    src = 1 - target
    dev_file = root / f"sentiment.dev.{src}.clean"
    held = yelp_classifier_sentences(root)
    # Training and selection inputs: the source style's dev sentences the classifier never saw,
    # in file order; the first 16 select (RLPrompt's dev size), the rest train.
    free = [s for s in _lines(dev_file) if s not in held]
    where = f"{dev_file} minus the sentences builtin:yelp-style was trained on"
    test = _lines(root / f"sentiment.test.{src}.clean")
    refs = _lines(root / f"sentiment.ref.{src}.clean")
    if len(refs) != len(test):
        raise DataError(f"{root}: {len(refs)} references for {len(test)} test sentences")
    return {
        "dev": StyleSplit("dev", free[:YELP_DEV_INPUTS], None, f"{where}, lines 1-16"),
        "train": StyleSplit("train", free[YELP_DEV_INPUTS:], None, f"{where}, after the first 16"),
        "test": StyleSplit(
            "test", test, [[r] for r in refs], str(root / f"sentiment.test.{src}.clean")
        ),
    }


def _labelled(path: Path, column: str | None, num_styles: int, config) -> tuple[list, list, list]:
    # RLPrompt reads the Shakespeare TSVs with pandas' default CSV quoting (tst_data_utils.py:
    # pd.read_csv(path, sep="\t")): 63 test rows per split are quoted, '""' inside them is '"'.
    quoted = config.dataset == "shakespeare"
    data = read_examples(
        path, num_styles, config.text_column or None, config.label_column, quoted_tsv=quoted
    )
    refs: list[str] = []
    if column is not None:
        refs = [str(r) for r in _column(path, column)]
    return data.texts, data.labels, refs


def _column(path: Path, column: str) -> list[str]:
    """One column of a TSV/CSV/JSONL file (for the references of a folder dataset)."""
    import csv
    import json

    if path.suffix == ".jsonl":
        rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line]
        if rows and column not in rows[0]:
            raise DataError(f"{path}: no column {column!r} (task.reference_column)")
        return [r.get(column, "") for r in rows]
    with path.open(encoding="utf-8", newline="") as fh:
        delim = "\t" if path.suffix == ".tsv" else ","
        quoting = csv.QUOTE_NONE if path.suffix == ".tsv" else csv.QUOTE_MINIMAL
        reader = csv.DictReader(fh, delimiter=delim, quoting=quoting)
        if column not in (reader.fieldnames or []):
            raise DataError(
                f"{path}: no column {column!r} (task.reference_column); columns are "
                f"{reader.fieldnames}"
            )
        return [row[column] for row in reader if any(row.values())]


def _from_labelled(
    name: str, path: Path, target: int, num_styles: int, config, refs_from_other: bool = False
) -> StyleSplit:
    texts, labels, refs = _labelled(path, config.reference_column, num_styles, config)
    keep = [i for i, y in enumerate(labels) if y != target]
    if not keep:
        raise DataError(
            f"{path}: the {name} split has no sentences of a style other than task.target_style "
            f"{target}, so there is nothing to rewrite; check task.target_style and the "
            f"{config.label_column!r} column"
        )
    sources = [texts[i] for i in keep]
    references = None
    if refs:
        references = [[refs[i]] for i in keep]
    elif refs_from_other:
        # RLPrompt's Shakespeare references: the target-style test sentences, aligned by order.
        other = [texts[i] for i, y in enumerate(labels) if y == target]
        if len(other) == len(sources):
            references = [[r] for r in other]
    return StyleSplit(name, sources, references, str(path))


def load_style_splits(
    config: StyleTransferTaskConfig, target: int, num_styles: int
) -> dict[str, Callable[[], StyleSplit]]:
    """Loaders of the train/dev/test inputs (read on first use).

    * ``yelp-sentiment``: ``yelp/clean/sentiment.dev.<src>.clean`` minus the sentences the
      built-in style classifier was trained and selected on (6,500 per style, recomputed from its
      seeded draw), in file order: the first 16 are dev, the rest train; test is
      ``sentiment.test.<src>.clean`` (500) with ``sentiment.ref.<src>.clean`` as references.
    * ``shakespeare``: ``shakespeare/100-shot/<split_seed>/{train,dev,test}.tsv`` rows of the
      source style, read with CSV quoting as RLPrompt's pandas reads them; references of test =
      the target-style test rows in order (as RLPrompt).
    * a folder: ``[<split_seed>/]{train,dev,test}.{tsv,csv,jsonl}``.
    """
    if config.dataset == "yelp-sentiment":
        if num_styles != 2:
            raise ConfigError(f"yelp-sentiment has 2 styles; the style model has {num_styles}")
        cache: dict[str, dict[str, StyleSplit]] = {}

        def yelp(name: str) -> Callable[[], StyleSplit]:
            return lambda: cache.setdefault("all", _yelp(config, target))[name]

        return {s: yelp(s) for s in ("train", "dev", "test")}
    if config.dataset == "shakespeare":
        seed = config.split_seed or "100-13"
        if seed not in SHAKESPEARE_SEEDS:
            raise ConfigError(
                f"task.split_seed {seed!r} is not a Shakespeare split; use one of "
                f"{', '.join(SHAKESPEARE_SEEDS)}"
            )
        root = tst_data_dir(config) / "shakespeare" / "100-shot" / seed
        if not root.is_dir():
            raise DataError(
                f"{root} not found; set task.data_dir to the tst/ folder that holds "
                "shakespeare/100-shot/, or unset it (hardprompts data fetch shakespeare)"
            )

        def shk(name: str) -> Callable[[], StyleSplit]:
            return lambda: _from_labelled(
                name, root / f"{name}.tsv", target, num_styles, config, name == "test"
            )

        return {s: shk(s) for s in ("train", "dev", "test")}

    def folder(name: str) -> Callable[[], StyleSplit]:
        return lambda: _from_labelled(name, split_path(config, name), target, num_styles, config)

    return {s: folder(s) for s in ("train", "dev", "test")}


# ----------------------------------------------------------------------------------------------
# The task
# ----------------------------------------------------------------------------------------------


@dataclass
class RewardModels:
    """The scorers of a style-transfer task (:mod:`hardprompts.scorers` objects)."""

    content: Any  # (sources, outputs) -> [N] 0..100
    style: Any  # StyleScorer: probs(texts) [N, C]
    fluency: Any | None = None  # FluencyScorer, evaluation only
    perplexity: Any | None = None  # PerplexityFluency, evaluation only (output_perplexity)


def build_reward_models(reward: RewardConfig, style_model: str) -> RewardModels:
    from hardprompts.scorers import (
        build_content_scorer,
        build_fluency_scorer,
        build_style_scorer,
    )

    kw = {"device": reward.device, "batch_size": reward.batch_size}
    content = _reward_model("content_model", build_content_scorer, reward.content_model, kw)
    style = _reward_model("style_model", build_style_scorer, style_model, kw)
    fluency = _reward_model("fluency_model", build_fluency_scorer, reward.fluency_model, kw)
    if reward.perplexity_model == reward.fluency_model:
        perplexity = fluency
    else:
        perplexity = _reward_model(
            "perplexity_model", build_fluency_scorer, reward.perplexity_model, kw
        )
    if getattr(perplexity, "kind", None) != "perplexity":
        raise ConfigError(
            f"reward.perplexity_model {reward.perplexity_model!r} is not a language model; "
            "write lm:<causal LM name or folder>"
        )
    return RewardModels(content, style, fluency, perplexity)


#: The offline built-in that can stand in for each reward model (shipped with the package).
OFFLINE_REWARD_MODELS = {
    "content_model": "builtin:minilm",
    "style_model": "builtin:yelp-style or builtin:shakespeare-style",
    "fluency_model": "lm:builtin:yelp-small",
    "perplexity_model": "lm:builtin:yelp-small",
}


def _reward_model(field: str, build: Callable[..., Any], name: str, kw: dict) -> Any:
    """``build(name)``; a model that cannot load is an error naming ``reward.<field>`` and the
    offline built-in that would work."""
    from hardprompts.errors import HardpromptsError, MissingExtraError

    try:
        return build(name, **kw)
    except MissingExtraError:
        raise
    except HardpromptsError as exc:
        raise type(exc)(
            f"reward.{field} {name!r} cannot be loaded; offline, set reward.{field}: "
            f"{OFFLINE_REWARD_MODELS[field]} (built in). {exc}"
        ) from None


@register_task("style_transfer")
class StyleTransferTask:
    """Style transfer on a generating target (see the module docstring).

    Args:
        target: a target with ``generate`` (contract 2) and, for ``control_output_length``, a
            ``tokenizer``.
        models: the content/style (and evaluation) scorers.
        config: the task section (template, sampling, data).
        target_style: the resolved label index of the style to write in.
        splits: the inputs per split, given directly (tests) or as loaders.
        seed: seeds the task's own generator (training inputs order and sampling seeds).
    """

    kind = "style_transfer"
    score_name = "reward"
    tiebreak_name = "content"
    deterministic_rewards = False  # outputs are sampled; inputs change every step

    def __init__(
        self,
        target: Any,
        models: RewardModels,
        config: StyleTransferTaskConfig,
        target_style: int,
        splits: Mapping[str, StyleSplit | Callable[[], StyleSplit]],
        *,
        seed: int = 0,
        style_names: Sequence[str] | None = None,
        chat: ChatFormat | None = None,
    ) -> None:
        if not callable(getattr(target, "generate", None)):
            raise ConfigError(
                f"style transfer needs a target that generates text; {type(target).__name__} "
                "does not (use a causal LM, target.kind: causal)"
            )
        self.target = target
        self.models = models
        self.config = config
        self.template = config.template or '{prompt} "{x}" "'
        self.chat = chat  # task.chat: the filled template becomes the user turn (hardprompts.chat)
        self.target_style = target_style
        self.style_names = list(style_names) if style_names else None
        self._loaders = dict(splits)
        self._splits: dict[str, StyleSplit] = {}
        preset = STYLE_PRESETS.get(config.dataset, {})
        self.lower = (
            config.lower_outputs
            if config.lower_outputs is not None
            else preset.get("lower_outputs", False)
        )
        self.seed = seed
        self.generator = torch.Generator().manual_seed(seed)
        self.cursor = 0  # next position in the training order
        self.order: list[int] = []  # this epoch's training order
        self.epoch = 0
        #: per (split, prompt): the last evaluation's per-input records
        self.records: dict[tuple[str, str], list[dict[str, Any]]] = {}

    # -- construction --------------------------------------------------------------------------

    @classmethod
    def from_config(cls, config: Config) -> StyleTransferTask:
        from hardprompts.targets import build_target, target_kind

        task_cfg: StyleTransferTaskConfig = config.task  # type: ignore[assignment]
        _check_algorithm(config)
        preset = STYLE_PRESETS.get(task_cfg.dataset)
        style_model = config.reward.style_model or (preset or {}).get("style_model")
        if style_model is None:
            raise ConfigError(
                f"task.dataset {task_cfg.dataset!r} is not a preset ({', '.join(STYLE_PRESETS)}), "
                "so reward.style_model must name a style classifier (a Hugging Face "
                "*ForSequenceClassification name or folder)"
            )
        models = build_reward_models(config.reward, style_model)
        names = (preset or {}).get("styles") or _label_names(models.style)
        target_style = resolve_style(task_cfg.target_style, names, models.style.num_labels)
        kind = target_kind(config.target)
        if kind == "masked":
            raise ConfigError(
                "style transfer generates text: target.model must be a causal LM (target.kind "
                "causal or openai), not a masked LM"
            )
        from hardprompts.chat import resolve_chat

        target = build_target(config.target, task_cfg.template or "{x}", [], kind)
        chat = resolve_chat(task_cfg.chat, config.target, kind)
        splits = load_style_splits(task_cfg, target_style, models.style.num_labels)
        return cls(
            target, models, task_cfg, target_style, splits, seed=config.train.seed,
            style_names=names, chat=chat,
        )  # fmt: skip

    # -- data ----------------------------------------------------------------------------------

    def split(self, name: str) -> StyleSplit:
        if name not in self._splits:
            if name not in self._loaders:
                raise DataError(f"this style-transfer task has no {name} split")
            loaded = self._loaders[name]
            data = loaded() if callable(loaded) else loaded
            if not data.sources:
                raise DataError(
                    f"{data.source}: the {name} split has no sentences to rewrite (none of a "
                    "style other than task.target_style)"
                )
            if name == "train" and self.config.train_size is not None:
                data = StyleSplit(name, data.sources[: self.config.train_size], None, data.source)
            if name != "train" and self.config.eval_max_inputs is not None:
                k = self.config.eval_max_inputs
                refs = None if data.references is None else data.references[:k]
                data = StyleSplit(name, data.sources[:k], refs, data.source)
            self._splits[name] = data
        return self._splits[name]

    def num_inputs(self, split: str) -> int:
        return len(self.split(split))

    # -- generation and scoring ----------------------------------------------------------------

    def _cap(self, text: str) -> int:
        cfg = self.config
        if not cfg.control_output_length:
            return cfg.max_new_tokens
        tokenizer = getattr(self.target, "tokenizer", None)
        if tokenizer is None:
            raise ConfigError(
                "task.control_output_length needs the target's tokenizer; this target has none "
                "(set task.control_output_length: false and task.max_new_tokens)"
            )
        n = len(tokenizer(text, add_special_tokens=False)["input_ids"])
        return output_token_cap(n, True, cfg.max_new_tokens)

    def _sample(self, prompts: Sequence[str], text: str, num: int, seed: int) -> list[list[str]]:
        """``num`` post-processed outputs of every prompt on one input."""
        cfg = self.config
        raw = self.target.generate(
            [self._text(p, text) for p in prompts],
            num_samples=num,
            max_new_tokens=self._cap(text),
            stop=cfg.end_text,
            do_sample=True,
            top_k=cfg.top_k,
            seed=seed,
        )
        return [[postprocess(o, self.lower) for o in outs] for outs in raw]

    def _text(self, prompt: str, source: str) -> str:
        """What the target continues: the filled template, chat-formatted when task.chat is on."""
        text = apply_template(self.template, prompt, source)
        return text if self.chat is None else self.chat.wrap(text)

    def _scores(self, sources: Sequence[str], outputs: Sequence[str]):
        """Per output: content, 100·P(target style), the style probabilities [N, C], reward."""
        content = self.models.content(list(sources), list(outputs)).float()
        probs = self.models.style.probs(list(outputs)).float()
        style = 100.0 * probs[:, self.target_style]
        return content, style, probs, (content + style) / 2  # R = (content + style) / 2

    def _next_inputs(self, count: int) -> list[int]:
        n = self.num_inputs("train")
        out = []
        for _ in range(count):
            if self.cursor >= len(self.order):
                self.order = (
                    torch.randperm(n, generator=self.generator).tolist()
                    if self.config.shuffle
                    else list(range(n))
                )
                self.cursor = 0
                self.epoch += 1
            out.append(self.order[self.cursor])
            self.cursor += 1
        return out

    def train_rewards(
        self, prompts: Sequence[str], reward: RewardSpec, examples: Sequence[int] | None = None
    ) -> TaskRewards:
        if not isinstance(reward, RLPromptReward):
            raise ConfigError(
                f"style transfer trains on RLPrompt's content + style reward; "
                f"{type(reward).__name__} has no meaning here (use algorithm rlprompt or pin)"
            )
        cfg = self.config
        repeats = cfg.num_repeats
        if len(prompts) % repeats:
            raise ConfigError(
                f"algorithm.prompts_per_step ({len(prompts)}) must be a multiple of "
                f"task.num_repeats ({repeats}): each input is paired with num_repeats prompts"
            )
        count = len(prompts) // repeats
        inputs = list(examples) if examples is not None else self._next_inputs(count)
        if len(inputs) != count:
            raise ConfigError(f"{len(prompts)} prompts need {count} inputs, got {len(inputs)}")
        data = self.split("train")
        k, n_out = cfg.num_bootstraps, cfg.num_samples * cfg.num_bootstraps
        maxima, contents, styles = [], [], []
        for j, idx in enumerate(inputs):
            block = list(prompts[j * repeats : (j + 1) * repeats])  # prompts paired with input j
            text = data.sources[idx]
            seed = int(torch.randint(2**62, (1,), generator=self.generator))
            outs = self._sample(block, text, n_out, seed)
            flat = [o for per in outs for o in per]
            content, style, _, r = self._scores([text] * len(flat), flat)
            maxima.append(bootstrap_max(r.reshape(len(block), n_out), k))  # [R, K]
            contents.append(content.reshape(len(block), n_out).mean(1))
            styles.append(style.reshape(len(block), n_out).mean(1))
        spread = torch.cat(maxima)  # [P, K] bootstrap maxima
        return TaskRewards(
            reward=spread.mean(1),  # R(z, x) = mean_k max_{group k} R(y)
            group=torch.arange(count).repeat_interleave(repeats),  # z-score per input
            metrics={"content": torch.cat(contents), "style": torch.cat(styles)},
            spread=spread,
            shaping=tuple(cfg.reward_shaping),  # type: ignore[arg-type]
        )

    # -- evaluation ----------------------------------------------------------------------------

    def _eval_seed(self, split: str) -> int:
        # Fixed per run and split, independent of training: every prompt sees the same seeds.
        return self.seed * 1_000_003 + {"train": 1, "dev": 2, "test": 3}.get(split, 4)

    def _rewrite(self, prompt: str, split: str, progress) -> list[dict[str, Any]]:
        """Per input the best of ``eval_num_samples`` outputs by the reward, batched: inputs with
        the same token cap share generate calls (at most 8 inputs each), and all candidates are
        scored in one content call and one style call."""
        cfg = self.config
        data = self.split(split)
        seed = self._eval_seed(split)
        caps = [self._cap(t) for t in data.sources]
        outs: list[list[str]] = [[] for _ in data.sources]
        for cap in sorted(set(caps)):
            same = [i for i, c in enumerate(caps) if c == cap]
            for start in range(0, len(same), 8):
                idx = same[start : start + 8]
                raw = self.target.generate(
                    [self._text(prompt, data.sources[i]) for i in idx],
                    num_samples=cfg.eval_num_samples,
                    max_new_tokens=cap,
                    stop=cfg.end_text,
                    do_sample=True,
                    top_k=cfg.top_k,
                    seed=seed + 7919 * idx[0],  # fixed per run, split and input group
                )
                for i, o in zip(idx, raw, strict=True):
                    outs[i] = [c for c in (postprocess(x, self.lower) for x in o) if c] or [""]
                if progress is not None:
                    progress(len(idx))  # RLPrompt drops empty outputs before selecting
        sources = [t for t, o in zip(data.sources, outs, strict=True) for _ in o]
        flat = [c for o in outs for c in o]
        content, style, probs, r = self._scores(sources, flat)
        rows, at = [], 0
        refs = data.references or [[] for _ in data.sources]
        for text, cands, gold in zip(data.sources, outs, refs, strict=True):
            best = at + int(r[at : at + len(cands)].argmax())  # first of ties
            rows.append({
                "input": text,
                "output": flat[best],
                "gold": " | ".join(gold) if gold else None,  # the human references, if any
                "content": float(content[best]),
                "style": float(style[best]),
                "reward": float(r[best]),
                "style_correct": bool(int(probs[best].argmax()) == self.target_style),
            })  # fmt: skip
            at += len(cands)
        return rows

    def _metrics(self, rows: list[dict[str, Any]], split: str, seconds: float) -> dict[str, Any]:
        from hardprompts.scorers import bleu, self_bleu

        data = self.split(split)
        outputs = [r["output"] for r in rows]
        content = torch.tensor([r["content"] for r in rows])
        correct = torch.tensor([float(r["style_correct"]) for r in rows])
        c, s = float(content.mean()), 100.0 * float(correct.mean())
        fluency = joint = gm = None
        flu = self.models.fluency
        if flu is not None and getattr(flu, "kind", None) == "classifier":
            fluent = (flu(outputs).float() > 50.0).float()  # the classifier's decision
            for row, ok in zip(rows, fluent.tolist(), strict=True):
                row["fluency"] = 100.0 * ok  # per example, as the outputs file shows it
            f = 100.0 * float(fluent.mean())
            fluency = f
            joint = float((content * correct * fluent).mean())  # J = mean_i c_i · s_i · f_i
            gm = (
                math.exp((math.log(c) + math.log(s) + math.log(f)) / 3) if min(c, s, f) > 0 else 0.0
            )
        ppl = None
        if self.models.perplexity is not None:
            sums, counts = self.models.perplexity.nll(outputs)
            ok = ~torch.isnan(sums)
            if ok.any():
                ppl = float(torch.exp(sums[ok].sum() / counts[ok].sum()))
        refs = data.references
        reference_content = None
        if refs is not None:  # RLPrompt's BERTScore-to-reference column (content scorer)
            flat = [(ref, out) for out, group in zip(outputs, refs, strict=True) for ref in group]
            scores = self.models.content([r for r, _ in flat], [o for _, o in flat]).float()
            best, at = [], 0
            for group in refs:  # the closest of an input's references
                best.append(float(scores[at : at + len(group)].max()))
                at += len(group)
            reference_content = sum(best) / len(best) if best else None
        reward = float(torch.tensor([r["reward"] for r in rows]).mean())
        return {
            "score": reward,  # the dev score every family reports (here the mean reward)
            "reward": reward,
            "content": c,
            "style": s,
            "style_probability": float(torch.tensor([r["style"] for r in rows]).mean()),
            "fluency": fluency,
            "joint": joint,
            "gm": gm,
            "bleu": None if refs is None else bleu(outputs, refs),
            "reference_content": reference_content,
            "self_bleu": self_bleu(outputs, data.sources),
            "output_perplexity": ppl,
            "n": len(rows),
            "seconds": seconds,
        }

    def evaluate_with_outputs(
        self, prompts: Sequence[str], split: str, progress: Callable[[int], None] | None = None
    ) -> tuple[list[EvalResult], list[list[dict[str, Any]]]]:
        """The evaluation and, per prompt, one record per input: input, output, gold (the
        references joined by `` | ``, None without), content, style, reward, style_correct (and
        fluency with a fluency classifier) — what ``eval --outputs`` writes."""
        results, records = [], []
        for prompt in prompts:
            t0 = time.perf_counter()
            rows = self._rewrite(prompt, split, progress)
            metrics = self._metrics(rows, split, time.perf_counter() - t0)
            self.records[(split, prompt)] = rows
            results.append(EvalResult(prompt, metrics["reward"], metrics["content"], metrics))
            records.append(rows)
        return results, records

    def evaluate(
        self, prompts: Sequence[str], split: str, progress: Callable[[int], None] | None = None
    ) -> list[EvalResult]:
        return self.evaluate_with_outputs(prompts, split, progress)[0]

    def report_fields(self, split: str, result: EvalResult | None) -> dict[str, Any]:
        keys = ("reward", "content", "style", "fluency", "joint", "gm", "bleu",
                "reference_content", "self_bleu", "output_perplexity", "n")  # fmt: skip
        if result is None:
            return {f"{split}_{k}": None for k in keys}
        fields = {f"{split}_{k}": result.metrics.get(k) for k in keys}
        rows = self.records.get((split, result.prompt))
        if split == "test" and rows:
            fields["test_examples"] = [
                {"input": r["input"], "output": r["output"]} for r in rows[:3]
            ]
        return fields

    def describe(self, split: str) -> dict[str, Any]:
        names = self.style_names
        style = names[self.target_style] if names else self.target_style
        flu = self.models.fluency
        return {
            "source": self.split(split).source,
            "template": self.template,
            "target_style": style,
            "selection": f"best of {self.config.eval_num_samples} outputs by (content + style)/2",
            "fluency": getattr(flu, "kind", None) if flu is not None else None,
            **({"chat": True} if self.chat is not None else {}),
        }

    def demonstrations(self, k: int, generator: torch.Generator) -> list[tuple[str, str]]:
        raise ConfigError(
            "style transfer has no (input, desired output) pairs for an LLM agent's meta-prompt; "
            "use algorithm rlprompt or pin"
        )

    def state_dict(self) -> dict[str, Any]:
        return {
            "generator": self.generator.get_state(),
            "cursor": self.cursor,
            "order": torch.tensor(self.order, dtype=torch.long),
            "epoch": self.epoch,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if not state:
            return
        self.generator.set_state(state["generator"])
        self.cursor = int(state["cursor"])
        self.order = [int(i) for i in state["order"].tolist()]
        self.epoch = int(state["epoch"])


def _label_names(style: Any) -> list[str] | None:
    id2label = getattr(style, "id2label", None) or {}
    if not id2label:
        return None
    return [str(id2label.get(i, id2label.get(str(i), i))) for i in range(style.num_labels)]


def resolve_style(value: int | str, names: Sequence[str] | None, num_labels: int) -> int:
    """``task.target_style`` as a label index of the style model, or a ConfigError."""
    known = f"0..{num_labels - 1}" + (f" or {', '.join(names)}" if names else "")
    if isinstance(value, str):
        if value.strip().isdigit():
            value = int(value)
        elif names and value in names:
            return list(names).index(value)
        else:
            raise ConfigError(f"task.target_style {value!r} is not a style here; use {known}")
    if not 0 <= value < num_labels:
        raise ConfigError(f"task.target_style {value} is not a style here; use {known}")
    return value


def _check_algorithm(config: Config) -> None:
    """Algorithm fields that do not apply to style transfer, named if the user set them."""
    algo = config.algorithm
    if algo is None:
        return
    if algo.name not in ("rlprompt", "pin"):
        raise ConfigError(
            f"algorithm {algo.name!r} does not train style-transfer prompts here; use rlprompt "
            "or pin (task.kind style_transfer)"
        )
    set_fields = algo.model_fields_set
    for name, instead in (
        ("reward_scale", "task.reward_shaping"),
        ("reward_correct_coef", "nothing (the reward is (content + style) / 2)"),
        ("reward_incorrect_coef", "nothing (the reward is (content + style) / 2)"),
        ("reward_cache", "nothing (sampled rewards are never cached)"),
    ):
        if name in set_fields:
            raise ConfigError(
                f"algorithm.{name} does not apply to task.kind style_transfer; remove it (use "
                f"{instead})"
            )
    per_step = getattr(algo, "prompts_per_step", None)
    repeats = config.task.num_repeats  # type: ignore[attr-defined]
    if per_step is not None and per_step % repeats:
        raise ConfigError(
            f"algorithm.prompts_per_step ({per_step}) must be a multiple of task.num_repeats "
            f"({repeats}): each input is paired with num_repeats prompts"
        )
