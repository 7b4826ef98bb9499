"""Helpers shared by the scorers: loading, de-duplication, length-sorted batches."""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from pathlib import Path

import torch

from hardprompts.errors import ConfigError
from hardprompts.modeling import (
    _load_error,
    load_tokenizer,
    model_max_length,
    pick_device,
    resolve_model_path,
)

#: Longest input a scorer feeds its model unless the call says otherwise.
DEFAULT_MAX_LENGTH = 512


def check_texts(what: str, texts: Sequence[str]) -> list[str]:
    """Texts as a list of ``str`` (a lone string is a mistake: it would be read char by char)."""
    if isinstance(texts, str):
        raise ConfigError(f"{what} must be a sequence of strings, got one string {texts[:40]!r}")
    texts = list(texts)
    for t in texts:
        if not isinstance(t, str):
            raise ConfigError(f"{what} must hold strings, got {type(t).__name__}: {t!r}")
    return texts


def dedup(texts: Sequence[str]) -> tuple[list[str], torch.Tensor]:
    """Unique texts (first-seen order) and, for each input, the index of its unique text."""
    first: dict[str, int] = {}
    index = [first.setdefault(t, len(first)) for t in texts]
    return list(first), torch.tensor(index, dtype=torch.long)


def length_batches(lengths: Sequence[int], batch_size: int) -> Iterator[list[int]]:
    """Indices grouped into batches of similar length (longest first), to pad little."""
    if batch_size < 1:
        raise ConfigError(f"batch_size must be at least 1, got {batch_size}")
    order = sorted(range(len(lengths)), key=lambda i: -lengths[i])
    for start in range(0, len(order), batch_size):
        yield order[start : start + batch_size]


def max_length_for(path: str, model, tokenizer, max_length: int | None) -> int:
    """The explicit ``max_length``, else sentence-transformers' ``max_seq_length`` when the folder
    has one, else the model's limit (``modeling.model_max_length``) capped at 512."""
    if max_length is not None:
        if max_length < 2:
            raise ConfigError(f"max_length must be at least 2, got {max_length}")
        return max_length
    st = Path(path) / "sentence_bert_config.json"
    if st.is_file():
        value = json.loads(st.read_text()).get("max_seq_length")
        if isinstance(value, int) and value > 1:
            return value
    try:
        limit = model_max_length(model, tokenizer)
    except ValueError:  # neither the tokenizer nor the config states a limit
        limit = DEFAULT_MAX_LENGTH
    return min(limit, DEFAULT_MAX_LENGTH)


def load_frozen(model_cls, name: str, what: str, *, device: str, trust_remote_code: bool):
    """``model_cls.from_pretrained`` of a (resolved) name, frozen, eval mode, on ``device``;
    returns ``(model, tokenizer, path)``."""
    path = resolve_model_path(name)
    tokenizer = load_tokenizer(name, trust_remote_code=trust_remote_code)
    try:
        model = model_cls.from_pretrained(path, trust_remote_code=trust_remote_code)
    except Exception as exc:
        raise _load_error(name, what, exc) from None
    return freeze(model, device), tokenizer, path


def freeze(model, device: str):
    model.to(pick_device(device))
    model.eval()
    model.requires_grad_(False)
    return model


def padded_batches(model, tokenizer, texts: Sequence[str], batch_size: int, max_length: int):
    """``(indices, encoding on the model's device)`` per length-sorted batch of ``texts``."""
    device = model_device(model)
    for idx in length_batches([len(t) for t in texts], batch_size):
        enc = tokenizer(
            [texts[i] for i in idx],
            padding=True,
            truncation=True,
            max_length=max_length,
            return_tensors="pt",
        )
        yield idx, enc.to(device)


def model_device(model) -> torch.device:
    return next(model.parameters()).device
