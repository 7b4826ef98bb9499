"""How the command line runs: the number of CPU threads, and quiet third-party libraries.

Threads (``--threads`` on eval, tune, demo and sweep). Models of a few million parameters, such as
``builtin:yelp-small`` and the tiny test models, do so little work per operation that more than
one thread mostly adds synchronisation, and on a machine whose cores are busy with other work each
extra thread waits for a core: the demo ran several times slower with torch's default (one thread
per core) than with one thread on a shared 2-core machine. Large models split their matrix
products well over many threads. So ``--threads auto`` (the default) reads each local model's
config (no weights, no network) and uses

* 1 thread when every model the config names is a local one (a folder, ``builtin:``, or already
  in the Hugging Face cache) smaller than :data:`SMALL_MODEL_PARAMS`;
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


def _model_names(config: Any) -> list[str]:
    """Every ``model`` / ``*_model`` string field of a config (target, policy, agent, judge...)."""
    from pydantic import BaseModel

    names: list[str] = []

    def walk(model: BaseModel) -> None:
        for name in type(model).model_fields:
            value = getattr(model, name)
            if isinstance(value, BaseModel):
                if name == "target" and getattr(value, "kind", None) == "openai":
                    continue  # served: no local weights
                walk(value)
            elif (name == "model" or name.endswith("_model")) and isinstance(value, str):
                names.append(value)

    walk(config)
    return list(dict.fromkeys(names))


def estimated_parameters(name: str) -> int | None:
    """Rough parameter count of a local model from its config alone (None when unknown).

    Reads ``config.json`` of a folder, a ``builtin:`` model or a model already in the Hugging
    Face cache; never the network. Transformer blocks (12·d² each) plus the embedding table.
    """
    from transformers import AutoConfig

    from hardprompts.errors import ModelLoadError
    from hardprompts.modeling import resolve_model_path

    try:
        path = resolve_model_path(name)
        cfg = AutoConfig.from_pretrained(path, local_files_only=True)
    except (ModelLoadError, OSError, ValueError):
        return None
    d = getattr(cfg, "hidden_size", None)
    layers = getattr(cfg, "num_hidden_layers", None)
    vocab = getattr(cfg, "vocab_size", None) or 0
    if not isinstance(d, int) or not isinstance(layers, int):
        return None
    return layers * 12 * d * d + vocab * d


def auto_threads(config: Any) -> int:
    """The thread count ``--threads auto`` picks for ``config`` (see the module doc)."""
    if os.environ.get("OMP_NUM_THREADS"):
        return _DEFAULT_THREADS
    many = min(_DEFAULT_THREADS, MAX_AUTO_THREADS)
    for name in _model_names(config):
        size = estimated_parameters(name)
        if size is None or size >= SMALL_MODEL_PARAMS:
            return many  # large, or not sized (not downloaded yet): do not guess that it is small
    return 1


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
def threads(text: str, config: Any) -> Iterator[int]:
    """Run the block with ``--threads`` (``auto`` or N) applied for ``config``; yields the count.

    The previous count is restored afterwards (commands also run in-process, e.g. in tests).
    """
    n = parse_threads(text)
    n = auto_threads(config) if n is None else n
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
