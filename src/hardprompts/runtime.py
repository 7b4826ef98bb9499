"""How the command line runs: the number of CPU threads, and quiet third-party libraries.

Threads (``--threads`` on eval, tune, demo and sweep). Models of a few million parameters, such as
``builtin:yelp-small`` and the tiny test models, do so little work per operation that more than
one thread mostly adds synchronisation, and on a machine whose cores are busy with other work each
extra thread waits for a core: the demo ran several times slower with torch's default (one thread
per core) than with one thread on a shared 2-core machine. Large models split their matrix
products well over many threads. So ``--threads auto`` (the default) reads each local model's
config (no weights, no network) and uses

* 1 thread when every model the run loads (:func:`loaded_models`: the target, the policy or
  agent, the reward models of a task that uses them; not the sections the run ignores) is a local
  one (a folder, ``builtin:``, or already in the Hugging Face cache) smaller than
  :data:`SMALL_MODEL_PARAMS`;
* otherwise (a larger model, or one not downloaded yet) torch's own default (one per physical
  core), at most :data:`MAX_AUTO_THREADS`.

An explicit ``--threads N``, or ``OMP_NUM_THREADS`` in the environment, wins over ``auto``.
``benchmarks/threads.py`` measures the choice (steps per second of the demo at 1 and 2 threads).
One thread also makes every result independent of the machine's core count.

Quiet libraries (:func:`quiet_libraries`). While a command runs, the "Loading weights" progress
bars of transformers are off (our own bars show progress) and so are the deprecation notices
transformers raises about how *our* code calls it (``past_key_values`` and the like: they are for
the developers of hardprompts, not for its users). Every other warning still shows, for instance
transformers' report of weights missing from a checkpoint.
"""

from __future__ import annotations

import contextlib
import logging
import os
import warnings
from collections.abc import Iterator
from typing import Any

import torch

#: Models below this many parameters run on one thread under ``--threads auto``.
SMALL_MODEL_PARAMS = 50_000_000
#: The most threads ``--threads auto`` uses for larger models.
MAX_AUTO_THREADS = 8
#: torch's thread count at import: one per physical core, or $OMP_NUM_THREADS.
_DEFAULT_THREADS = torch.get_num_threads()


#: Content-model names of the style reward that mean the packaged all-MiniLM-L6-v2 encoder, and
#: its size (22.7M parameters: 6 layers of d = 384 and a 30,522-token vocabulary).
_MINILM = {"builtin:minilm": 22_700_000, "minilm": 22_700_000}
#: Prefixes of reward-model names (``bertscore:<model>``, ``cosine:<model>``, ``lm:<model>``).
_REWARD_PREFIXES = ("bertscore:", "cosine:", "lm:")


def _strip_reward_prefix(name: str) -> str:
    for prefix in _REWARD_PREFIXES:
        if name.startswith(prefix):
            return name.removeprefix(prefix)
    return name


def loaded_models(config: Any) -> list[str]:
    """The models a run of ``config`` loads: what ``--threads auto`` sizes.

    * the target, unless it is served (``target.kind`` openai or openai-chat);
    * with an algorithm: ``policy.model`` (the policy's LM, the agent of appo and search; pez and
      softprompt read it only as the perplexity judge of a masked target) and the algorithm's own
      model fields (``perplexity_model``, ``reference_model``) when set;
    * the reward models only when the task uses them (``task.kind: style_transfer``): content,
      style (unset: the preset's built-in classifier, small), fluency and perplexity models,
      without their ``bertscore:``/``cosine:``/``lm:`` prefixes.

    Sections the run does not use (the classification config's ``reward:``, a ``policy:`` of an
    ``eval``) are not looked at.
    """
    names: list[str] = []
    target = getattr(config, "target", None)
    if target is not None and getattr(target, "kind", None) not in ("openai", "openai-chat"):
        names.append(target.model)
    algorithm = getattr(config, "algorithm", None)
    if algorithm is not None:
        own = [
            getattr(algorithm, field)
            for field in type(algorithm).model_fields
            if field.endswith("_model") and field != "agent_model"  # its deprecated alias
        ]
        own = [name for name in own if isinstance(name, str)]
        gradient = algorithm.name in ("pez", "softprompt")  # no policy: a reference LM at most
        if not gradient or (not own and getattr(target, "kind", None) == "masked"):
            names.append(config.policy.model)
        names += own
    task = getattr(config, "task", None)
    if getattr(task, "kind", None) == "style_transfer":
        reward = config.reward
        # An unset style model is the preset's built-in classifier (22M parameters): not listed.
        models = (reward.content_model, reward.style_model, reward.fluency_model)
        for name in (*models, reward.perplexity_model):
            if isinstance(name, str):
                names.append(_strip_reward_prefix(name))
    return list(dict.fromkeys(names))


def estimated_parameters(name: str) -> int | None:
    """Rough parameter count of a local model from its config alone (None when unknown).

    Reads ``config.json`` of a folder, a ``builtin:`` model or a model already in the Hugging
    Face cache; never the network. Transformer blocks (12·d² each) plus the embedding table.
    """
    from transformers import AutoConfig

    from hardprompts.errors import ModelLoadError
    from hardprompts.modeling import resolve_model_path

    if name in _MINILM:
        return _MINILM[name]
    try:
        path = resolve_model_path(name, probe_hub=False)
        cfg = AutoConfig.from_pretrained(path, local_files_only=True)
    except (ModelLoadError, OSError, ValueError):
        return None
    d = getattr(cfg, "hidden_size", None)
    layers = getattr(cfg, "num_hidden_layers", None)
    vocab = getattr(cfg, "vocab_size", None) or 0
    if not isinstance(d, int) or not isinstance(layers, int):
        return None
    return layers * 12 * d * d + vocab * d


class ThreadChoice(int):
    """A thread count that knows why it was chosen: ``text`` is the banner's words for it,
    e.g. ``1 thread: every model is local and under 50M parameters``."""

    reason: str

    def __new__(cls, n: int, reason: str) -> ThreadChoice:
        self = super().__new__(cls, n)
        self.reason = reason
        return self

    @property
    def text(self) -> str:
        return f"{int(self)} thread{'s' * (self != 1)}: {self.reason}"


def choose_auto_threads(config: Any) -> ThreadChoice:
    """The thread count ``--threads auto`` picks for ``config``, with the reason (module doc)."""
    omp = os.environ.get("OMP_NUM_THREADS")
    if omp:
        return ThreadChoice(_DEFAULT_THREADS, f"$OMP_NUM_THREADS={omp}")
    many = min(_DEFAULT_THREADS, MAX_AUTO_THREADS)
    names = loaded_models(config) if config is not None else []
    for name in names:
        size = estimated_parameters(name)
        if size is None:  # not downloaded yet, or not a model folder: do not guess that it is small
            return ThreadChoice(many, f"{name} cannot be sized offline (not a local model yet)")
        if size >= SMALL_MODEL_PARAMS:
            return ThreadChoice(many, f"{name} has about {size / 1e6:.0f}M parameters")
    if not names:
        return ThreadChoice(many, "no local model")
    return ThreadChoice(
        1, f"every model is local and under {SMALL_MODEL_PARAMS // 1_000_000}M parameters"
    )


def auto_threads(config: Any) -> int:
    """The thread count ``--threads auto`` picks for ``config`` (see the module doc)."""
    return int(choose_auto_threads(config))


def parse_threads(text: str) -> int | None:
    """``auto`` -> None; a positive integer -> itself; anything else is a ConfigError."""
    from hardprompts.errors import ConfigError

    if text.strip().lower() == "auto":
        return None
    try:
        n = int(text)
    except ValueError:
        n = 0
    if n < 1:
        raise ConfigError(f"--threads {text!r}: give a positive integer or auto")
    return n


@contextlib.contextmanager
def threads(text: str, config: Any) -> Iterator[ThreadChoice]:
    """Run the block with ``--threads`` (``auto`` or N) applied for ``config``; yields the count
    (a :class:`ThreadChoice`: an int whose ``text`` says why, for the banner).

    The previous count is restored afterwards (commands also run in-process, e.g. in tests).
    """
    n = parse_threads(text)
    n = choose_auto_threads(config) if n is None else ThreadChoice(n, f"--threads {n}")
    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield n
    finally:
        torch.set_num_threads(before)


class _DropDeprecations(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return "deprecated" not in record.getMessage()


@contextlib.contextmanager
def quiet_libraries() -> Iterator[None]:
    """Within the block: no transformers loading bars and no deprecation notices about our calls."""
    from transformers.utils import logging as hf_logging

    bars = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    dropper = _DropDeprecations()
    # warning_once notices from transformers' call-signature shims (`past_key_values`/`cache`).
    shim_logger = logging.getLogger("transformers.utils.generic")
    shim_logger.addFilter(dropper)
    try:
        with warnings.catch_warnings():
            # FutureWarnings that transformers attributes to its own modules announce API changes
            # in how hardprompts calls it; warnings raised at the user's level still show.
            warnings.filterwarnings("ignore", category=FutureWarning, module=r"transformers\.")
            yield
    finally:
        shim_logger.removeFilter(dropper)
        if bars:
            hf_logging.enable_progress_bar()
