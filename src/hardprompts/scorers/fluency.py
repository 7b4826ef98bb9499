"""Fluency of generated text: a grammaticality classifier or perplexity under a causal LM.

The name selects the kind, explicitly:

* ``lm:<causal LM>`` (default ``lm:builtin:yelp-small``): :class:`PerplexityFluency`, per-text
  perplexity (lower is better, ``higher_is_better = False``);
* any other name is a sequence classifier (papers: ``cointegrated/roberta-large-cola-krishna2020``,
  trained on CoLA): :class:`ClassifierFluency`, ``100 · P(acceptable | text)`` (higher is better).

A causal LM named without ``lm:`` is an error that says to add it (no guessing).
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Sequence
from typing import Literal

import torch
from torch.nn.utils.rnn import pad_sequence

from hardprompts.errors import ConfigError, ModelLoadError
from hardprompts.modeling import load_lm, load_tokenizer, model_max_length, resolve_model_path
from hardprompts.scorers._common import check_texts, dedup, length_batches, model_device
from hardprompts.scorers.style import StyleScorer, _read_config, is_sequence_classifier

LM_PREFIX = "lm:"
DEFAULT_FLUENCY_MODEL = "lm:builtin:yelp-small"
#: Index of the "acceptable" label of known CoLA classifiers whose labels are unnamed.
KNOWN_ACCEPTABLE_LABEL: dict[str, int] = {
    # RLPrompt's evaluator counts LABEL_0 as fluent for this model
    "cointegrated/roberta-large-cola-krishna2020": 0,
    "textattack/roberta-base-CoLA": 1,
    "textattack/bert-base-uncased-CoLA": 1,
}


class FluencyScorer(ABC):
    """``scorer(texts)`` → one fluency value per text, CPU float32 ``[N]``."""

    name: str
    kind: Literal["classifier", "perplexity"]
    higher_is_better: bool

    @abstractmethod
    def __call__(self, texts: Sequence[str]) -> torch.Tensor: ...


class ClassifierFluency(FluencyScorer):
    """``100 · P(acceptable | text)`` from a grammaticality (CoLA) sequence classifier.

    ``acceptable_label``: the label index, or its name in ``config.id2label``; ``None`` means the
    known index for the models in :data:`KNOWN_ACCEPTABLE_LABEL`, else the label named
    "acceptable" (any case); if there is none, a ``ConfigError`` lists the labels to choose from.
    """

    kind = "classifier"
    higher_is_better = True

    def __init__(
        self,
        model: str,
        *,
        acceptable_label: int | str | None = None,
        device: str = "auto",
        batch_size: int = 64,
        max_length: int | None = None,
        trust_remote_code: bool = False,
    ) -> None:
        self.name = model
        self._clf = StyleScorer(
            model, device=device, batch_size=batch_size, max_length=max_length,
            trust_remote_code=trust_remote_code,
        )  # fmt: skip
        self.acceptable_label = self._resolve_label(model, acceptable_label, self._clf.id2label)

    @staticmethod
    def _resolve_label(model: str, label: int | str | None, id2label: dict) -> int:
        names = {int(k): str(v) for k, v in id2label.items()}
        if label is None:
            if model in KNOWN_ACCEPTABLE_LABEL:
                return KNOWN_ACCEPTABLE_LABEL[model]
            hits = [i for i, n in names.items() if n.lower() == "acceptable"]
            if len(hits) == 1:
                return hits[0]
            raise ConfigError(
                f"cannot tell which label of the fluency classifier {model!r} means 'acceptable' "
                f"(its labels: {names}); set the acceptable label (index or name)"
            )
        if isinstance(label, str):
            hits = [i for i, n in names.items() if n == label]
            if not hits:
                raise ConfigError(
                    f"fluency classifier {model!r} has no label {label!r}; labels: {names}"
                )
            return hits[0]
        if not 0 <= label < max(2, len(names)):
            raise ConfigError(
                f"acceptable label {label} is outside the labels of {model!r}: {names}"
            )
        return label

    def __call__(self, texts: Sequence[str]) -> torch.Tensor:
        return self._clf(texts, self.acceptable_label)


class PerplexityFluency(FluencyScorer):
    """Per-text perplexity under a causal LM: ``exp(mean NLL of the text's tokens)``.

    Each text is tokenised without special tokens and scored after one prefix token (the
    tokenizer's BOS, else its EOS; a tokenizer with neither is an error), so every token of the
    text is predicted; the end of text is not scored (as the built-in LM's evaluation and
    RLPrompt's, which however scores from the second token on). An empty text has no tokens:
    its perplexity is NaN. Texts longer than the model's context are cut (``max_length``).
    :meth:`nll` gives the summed NLL and token count per text for the corpus perplexity
    ``exp(Σ nll / Σ tokens)`` that RLPrompt's evaluator reports.
    """

    kind = "perplexity"
    higher_is_better = False

    def __init__(
        self,
        model: str,
        *,
        device: str = "auto",
        batch_size: int = 64,
        max_length: int | None = None,
        trust_remote_code: bool = False,
    ) -> None:
        self.name = LM_PREFIX + model
        self.batch_size = batch_size
        self.tokenizer = load_tokenizer(model, trust_remote_code=trust_remote_code)
        self.model = load_lm(model, "causal", device=device, trust_remote_code=trust_remote_code)
        prefix = self.tokenizer.bos_token_id
        if prefix is None:
            prefix = self.tokenizer.eos_token_id
        if prefix is None:
            raise ModelLoadError(
                f"the tokenizer of {model!r} has neither a BOS nor an EOS token to start a text with"
            )
        self.prefix_id = int(prefix)
        if max_length is None:  # the model's context
            max_length = model_max_length(self.model, self.tokenizer)
        if max_length < 2:
            raise ConfigError(f"max_length must be at least 2, got {max_length}")
        self.max_length = int(max_length)

    @torch.no_grad()
    def nll(self, texts: Sequence[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """Summed token NLL (nats) and number of scored tokens per text, CPU ``[N]`` each."""
        texts = check_texts("texts", texts)
        unique, index = dedup(texts)
        ids = [
            [self.prefix_id] + self.tokenizer(t, add_special_tokens=False)["input_ids"]
            for t in unique
        ]
        ids = [x[: self.max_length] for x in ids]
        sums = torch.zeros(len(unique))
        counts = torch.tensor([len(x) - 1 for x in ids], dtype=torch.long)
        device = model_device(self.model)
        pad = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else 0
        for idx in length_batches([len(x) for x in ids], self.batch_size):
            if all(len(ids[i]) < 2 for i in idx):
                continue
            seqs = [torch.tensor(ids[i]) for i in idx]
            input_ids = pad_sequence(seqs, batch_first=True, padding_value=pad).to(device)
            mask = pad_sequence([torch.ones_like(s) for s in seqs], batch_first=True).to(device)
            logits = self.model(input_ids=input_ids, attention_mask=mask).logits.float()
            logp = logits[:, :-1].log_softmax(-1)
            target = input_ids[:, 1:]
            tok_nll = -logp.gather(-1, target.unsqueeze(-1)).squeeze(-1) * mask[:, 1:]
            sums[idx] = tok_nll.sum(1).cpu()
        return sums[index], counts[index]

    def __call__(self, texts: Sequence[str]) -> torch.Tensor:
        sums, counts = self.nll(texts)
        ppl = torch.exp(sums / counts.clamp(min=1))
        return torch.where(counts > 0, ppl, torch.full_like(ppl, math.nan))

    @staticmethod
    def corpus_perplexity(sums: torch.Tensor, counts: torch.Tensor) -> float:
        """``exp(Σ nll / Σ tokens)`` over texts with at least one token."""
        total = int(counts.sum())
        return math.exp(float(sums.sum()) / total) if total else math.nan


def build_fluency_scorer(
    name: str = DEFAULT_FLUENCY_MODEL,
    *,
    device: str = "auto",
    batch_size: int = 64,
    max_length: int | None = None,
    acceptable_label: int | str | None = None,
    trust_remote_code: bool = False,
) -> FluencyScorer:
    """``lm:<causal LM>`` → :class:`PerplexityFluency`; a sequence classifier →
    :class:`ClassifierFluency`. Anything else is a clear error."""
    kwargs = dict(device=device, batch_size=batch_size, max_length=max_length,
                  trust_remote_code=trust_remote_code)  # fmt: skip
    if name.startswith(LM_PREFIX):
        model = name.removeprefix(LM_PREFIX)
        if not model:
            raise ConfigError("fluency model 'lm:' needs a causal LM after the colon")
        if acceptable_label is not None:
            raise ConfigError(f"an acceptable label was given, but {name!r} is a perplexity scorer")
        from hardprompts.modeling import detect_kind

        if detect_kind(model, trust_remote_code=trust_remote_code) != "causal":
            raise ModelLoadError(f"fluency model {name!r}: {model!r} is not a causal LM")
        return PerplexityFluency(model, **kwargs)
    config = _read_config(name, resolve_model_path(name), trust_remote_code)
    if not is_sequence_classifier(config):
        archs = ", ".join(config.architectures or []) or f"model_type {config.model_type!r}"
        causal = any(a.endswith(("ForCausalLM", "LMHeadModel")) for a in config.architectures or [])
        hint = (
            f"it is a causal LM: to score fluency by its perplexity write 'lm:{name}'"
            if causal
            else "use a grammaticality (CoLA) sequence classifier, or 'lm:<causal LM>' for perplexity"
        )
        raise ModelLoadError(
            f"the fluency model {name!r} is not a sequence classifier ({archs}); {hint}"
        )
    return ClassifierFluency(name, acceptable_label=acceptable_label, **kwargs)
