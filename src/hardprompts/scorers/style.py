"""Target style: ``100 · P_classifier(style | text)`` from a sequence-classification model.

Any Hugging Face ``*ForSequenceClassification`` model loads by name or folder (RLPrompt: BERT-base
fine-tuned per dataset). The built-in classifiers ``builtin:yelp-style`` and
``builtin:shakespeare-style`` are *composed* folders: they ship only the weights that training
changed (the top encoder layers, pooler and head, ``head.safetensors``) and take every other
weight from the all-MiniLM-L6-v2 encoder of the ``style`` extra, whose zip is verified by sha256
(see :mod:`hardprompts.scorers.minilm`). ``hardprompts_base.json`` in the folder names the base;
:func:`load_sequence_classifier` composes the two and checks that every weight is accounted for.
The folder deliberately has no ``model.safetensors``: a plain ``from_pretrained`` on it fails
instead of silently loading random weights for the missing layers.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import torch

from hardprompts.errors import ConfigError, ModelLoadError
from hardprompts.modeling import _load_error, load_tokenizer, resolve_model_path
from hardprompts.scorers._common import (
    check_texts,
    dedup,
    freeze,
    max_length_for,
    padded_batches,
)

BASE_FILE = "hardprompts_base.json"
HEAD_FILE = "head.safetensors"
#: Bases a composed classifier may name, each a function returning its verified folder.
_BASES = ("builtin:minilm",)


def _base_folder(base: str) -> Path:
    if base == "builtin:minilm":
        from hardprompts.scorers.minilm import minilm_path

        return minilm_path()
    raise ModelLoadError(f"unknown base model {base!r} in {BASE_FILE}; known: {', '.join(_BASES)}")


def _read_config(name: str, path: str, trust_remote_code: bool):
    from transformers import AutoConfig

    try:
        return AutoConfig.from_pretrained(path, trust_remote_code=trust_remote_code)
    except Exception as exc:
        raise _load_error(name, "model", exc) from None


def is_sequence_classifier(config) -> bool:
    """True when the config's architectures name a ``*ForSequenceClassification`` head."""
    return any(a.endswith("ForSequenceClassification") for a in (config.architectures or []))


def not_a_classifier_error(name: str, config, role: str) -> ModelLoadError:
    archs = (
        ", ".join(config.architectures or []) or f"none listed (model_type {config.model_type!r})"
    )
    return ModelLoadError(
        f"the {role} {name!r} is not a sequence classifier (its config's architectures: {archs}); "
        f"the {role} must be a Hugging Face sequence-classification model that "
        "AutoModelForSequenceClassification loads with a trained head (architectures ending in "
        "ForSequenceClassification), e.g. a fine-tuned BERT, or builtin:yelp-style / "
        "builtin:shakespeare-style"
    )


def load_sequence_classifier(
    name: str, *, device: str = "auto", trust_remote_code: bool = False, role: str = "style model"
):
    """Load a frozen sequence classifier (plain or composed); returns ``(model, tokenizer, path)``.

    A model whose config is not a ``*ForSequenceClassification``, or whose classification head
    is missing from the checkpoint (it would be randomly initialised), is a ``ModelLoadError``.
    """
    from transformers import AutoModelForSequenceClassification

    path = resolve_model_path(name)
    config = _read_config(name, path, trust_remote_code)
    if not is_sequence_classifier(config):
        raise not_a_classifier_error(name, config, role)
    tokenizer = load_tokenizer(name, trust_remote_code=trust_remote_code)
    if (Path(path) / BASE_FILE).is_file():
        model = _load_composed(name, Path(path), config)
    else:
        try:
            model, info = AutoModelForSequenceClassification.from_pretrained(
                path, trust_remote_code=trust_remote_code, output_loading_info=True
            )
        except Exception as exc:
            raise _load_error(name, role, exc) from None
        if info.get("missing_keys"):
            missing = sorted(info["missing_keys"])
            raise ModelLoadError(
                f"the {role} {name!r} has no trained weights for {', '.join(missing[:6])}"
                f"{' …' if len(missing) > 6 else ''}: loading it would use random values. Use a "
                "checkpoint saved from a trained sequence classifier"
            )
    return freeze(model, device), tokenizer, path


def _load_composed(name: str, folder: Path, config):
    from safetensors.torch import load_file
    from transformers import AutoModelForSequenceClassification

    meta = json.loads((folder / BASE_FILE).read_text())
    base = _base_folder(meta["base_model"])
    prefix = meta.get("base_prefix", "")
    with torch.random.fork_rng(devices=[]):  # random init, fully overwritten below
        model = AutoModelForSequenceClassification.from_config(config)
    state = {prefix + k: v for k, v in load_file(str(base / "model.safetensors")).items()}
    head = load_file(str(folder / meta.get("head_file", HEAD_FILE)))
    expected = model.state_dict()
    unexpected = sorted(set(head) - set(expected))
    state.update(head)
    missing = sorted(set(expected) - set(state))
    if unexpected or missing:
        raise ModelLoadError(
            f"the composed classifier {name!r} does not fit its config: "
            f"missing {missing[:6]}, unexpected {unexpected[:6]}"
        )
    model.load_state_dict({k: state[k].to(expected[k].dtype) for k in expected}, strict=True)
    return model


def save_composed_classifier(
    model, tokenizer, out_dir: str | Path, *, base_model: str, base_prefix: str,
    trained_prefixes: Sequence[str], dtype: torch.dtype = torch.float16,
) -> list[str]:  # fmt: skip
    """Save a classifier whose weights outside ``trained_prefixes`` equal ``base_model``'s.

    Writes ``config.json``, the tokenizer, ``head.safetensors`` (the trained weights in ``dtype``)
    and ``hardprompts_base.json``; checks that every other weight is bit-identical to the base
    (otherwise the composed reload would differ). Returns the saved weight names.
    """
    from safetensors.torch import load_file, save_file

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    base = {
        base_prefix + k: v
        for k, v in load_file(str(_base_folder(base_model) / "model.safetensors")).items()
    }
    state = model.state_dict()
    trained = {
        k: v.detach().to("cpu", dtype).contiguous()
        for k, v in state.items()
        if any(k.startswith(p) for p in trained_prefixes)
    }
    for k, v in state.items():
        if k in trained:
            continue
        if k not in base or not torch.equal(base[k].to(v.dtype), v.detach().cpu()):
            raise ValueError(f"weight {k} is not in trained_prefixes but differs from the base")
    model.config.save_pretrained(str(out))
    tokenizer.save_pretrained(str(out))
    save_file(trained, str(out / HEAD_FILE), metadata={"format": "pt"})
    (out / BASE_FILE).write_text(
        json.dumps(
            {"base_model": base_model, "base_prefix": base_prefix, "head_file": HEAD_FILE,
             "trained_prefixes": list(trained_prefixes)},
            indent=2,
        ) + "\n"
    )  # fmt: skip
    return sorted(trained)


class StyleScorer:
    """``scorer(texts, style)`` → ``100 · P(style | text)`` per text, CPU float32 ``[N]``.

    ``style`` is one label index for all texts or one per text. Probabilities are the softmax of
    the classifier's logits (a single-logit classifier: ``sigmoid`` for label 1).
    """

    def __init__(
        self,
        model: str,
        *,
        device: str = "auto",
        batch_size: int = 64,
        max_length: int | None = None,
        trust_remote_code: bool = False,
    ) -> None:
        self.name = model
        self.batch_size = batch_size
        self.model, self.tokenizer, path = load_sequence_classifier(
            model, device=device, trust_remote_code=trust_remote_code
        )
        self.max_length = max_length_for(path, self.model, self.tokenizer, max_length)
        self.num_labels = max(2, int(self.model.config.num_labels))
        self.id2label = dict(self.model.config.id2label or {})

    @torch.no_grad()
    def probs(self, texts: Sequence[str]) -> torch.Tensor:
        """Class probabilities ``[N, num_labels]`` (CPU float32)."""
        texts = check_texts("texts", texts)
        unique, index = dedup(texts)
        out = torch.empty(len(unique), self.num_labels)
        batches = padded_batches(
            self.model, self.tokenizer, unique, self.batch_size, self.max_length
        )
        for idx, enc in batches:
            logits = self.model(**enc).logits.float()
            if logits.shape[-1] == 1:
                p1 = torch.sigmoid(logits[:, 0])
                p = torch.stack([1 - p1, p1], dim=-1)
            else:
                p = logits.softmax(-1)
            out[idx] = p.cpu()
        return out[index] if len(texts) else out

    def __call__(self, texts: Sequence[str], style: int | Sequence[int]) -> torch.Tensor:
        texts = check_texts("texts", texts)
        if isinstance(style, int):
            styles = [style] * len(texts)
        else:
            styles = list(style)
            if len(styles) != len(texts):
                raise ConfigError(f"got {len(styles)} styles for {len(texts)} texts")
        for s in set(styles):
            if not isinstance(s, int) or not 0 <= s < self.num_labels:
                raise ConfigError(
                    f"style {s!r} is not a label of the style model {self.name!r}, which has "
                    f"{self.num_labels} labels {self.id2label or ''} (use 0..{self.num_labels - 1})"
                )
        if not texts:
            return torch.zeros(0)
        p = self.probs(texts)
        return 100.0 * p[torch.arange(len(texts)), torch.tensor(styles)]


def build_style_scorer(
    name: str,
    *,
    device: str = "auto",
    batch_size: int = 64,
    max_length: int | None = None,
    trust_remote_code: bool = False,
) -> StyleScorer:
    """A style scorer from a config string: ``builtin:yelp-style`` (0 negative, 1 positive),
    ``builtin:shakespeare-style`` (0 early modern, 1 modern), or any Hugging Face sequence
    classifier (name or folder)."""
    if not name:
        raise ConfigError("the style model name is empty")
    return StyleScorer(
        name, device=device, batch_size=batch_size, max_length=max_length,
        trust_remote_code=trust_remote_code,
    )  # fmt: skip
