"""Content preservation: how much of the input sentence an output keeps, on a 0–100 scale.

Two scorers, both ``scorer(sources, outputs) -> Tensor [N]``:

* :class:`BertScoreContent` — BERTScore F1 (Zhang et al., 2020) with any Hugging Face encoder,
  as RLPrompt's style-transfer reward (``roberta-large``, layer 17, rescaled with baseline):
  ``content = 100 · max(F1', 0)`` with ``F1' = (F1 − b) / (1 − b)`` for a baseline ``b``.
* :class:`EmbeddingCosineContent` — cosine similarity of mean-pooled, L2-normalised sentence
  embeddings (sentence-transformers' recipe), ``content = 100 · max(cos, 0)``; the offline
  default ``builtin:minilm`` uses all-MiniLM-L6-v2 from the ``style`` extra.

Both are symmetric in ``(source, output)``, so an identical output scores 100 (up to float
rounding) and an unrelated one scores less.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from typing import Literal

import torch
import torch.nn.functional as F
from torch.nn.utils.rnn import pad_sequence

from hardprompts.errors import ConfigError, ModelLoadError
from hardprompts.scorers._common import (
    check_texts,
    dedup,
    length_batches,
    load_frozen,
    max_length_for,
    model_device,
    padded_batches,
)

#: bert_score's default layer per model (its ``model2layers`` table, chosen there by correlation
#: with human judgements on WMT16) and the F column of its English rescaling baseline at that
#: layer (``rescale_baseline/en/<model>.tsv``). RLPrompt uses ``roberta-large``.
KNOWN_BERTSCORE: dict[str, tuple[int, float]] = {
    "roberta-large": (17, 0.83122575),
    "roberta-base": (10, 0.814463),
    "roberta-large-mnli": (19, 0.6896288),
    "bert-base-uncased": (9, 0.35219112),
    "distilbert-base-uncased": (5, 0.66620487),
    "microsoft/deberta-xlarge-mnli": (40, 0.5150192),
}
for _short in ("roberta-large", "roberta-base", "roberta-large-mnli"):
    KNOWN_BERTSCORE["FacebookAI/" + _short] = KNOWN_BERTSCORE[_short]
for _short in ("bert-base-uncased",):
    KNOWN_BERTSCORE["google-bert/" + _short] = KNOWN_BERTSCORE[_short]
for _short in ("distilbert-base-uncased",):
    KNOWN_BERTSCORE["distilbert/" + _short] = KNOWN_BERTSCORE[_short]

MINILM_NAMES = ("builtin:minilm", "minilm")
#: Pairs scored per padded batched matrix product in BERTScore's greedy matching.
PAIR_CHUNK = 256


class ContentScorer(ABC):
    """``scorer(sources, outputs)`` → content preservation of each output w.r.t. its source,
    a CPU float32 tensor ``[N]`` on 0–100."""

    name: str

    @abstractmethod
    def __call__(self, sources: Sequence[str], outputs: Sequence[str]) -> torch.Tensor: ...

    @staticmethod
    def _pairs(sources: Sequence[str], outputs: Sequence[str]) -> tuple[list[str], list[str]]:
        sources = check_texts("sources", sources)
        outputs = check_texts("outputs", outputs)
        if len(sources) != len(outputs):
            raise ConfigError(
                f"content scorer needs one source per output, got {len(sources)} sources and "
                f"{len(outputs)} outputs"
            )
        return sources, outputs


class EmbeddingCosineContent(ContentScorer):
    """``100 · max(cos(e(source), e(output)), 0)`` with ``e`` the attention-mask-weighted mean of
    the encoder's last hidden states, L2-normalised (sentence-transformers' mean pooling)."""

    def __init__(
        self,
        model: str,
        *,
        device: str = "auto",
        batch_size: int = 64,
        max_length: int | None = None,
        trust_remote_code: bool = False,
        name: str | None = None,
    ) -> None:
        from transformers import AutoModel

        self.name = name or f"cosine:{model}"
        self.batch_size = batch_size
        self.model, self.tokenizer, path = load_frozen(
            AutoModel, model, "encoder", device=device, trust_remote_code=trust_remote_code
        )
        self.max_length = max_length_for(path, self.model, self.tokenizer, max_length)

    @torch.no_grad()
    def embed(self, texts: Sequence[str]) -> torch.Tensor:
        """Unit-norm sentence embeddings ``[len(texts), d]`` (float32, on CPU)."""
        texts = check_texts("texts", texts)
        out = torch.empty(len(texts), self.model.config.hidden_size)
        batches = padded_batches(
            self.model, self.tokenizer, texts, self.batch_size, self.max_length
        )
        for idx, enc in batches:
            hidden = self.model(**enc).last_hidden_state.float()
            mask = enc["attention_mask"].unsqueeze(-1).to(hidden.dtype)
            mean = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
            out[idx] = F.normalize(mean, p=2, dim=-1).cpu()
        return out

    def __call__(self, sources: Sequence[str], outputs: Sequence[str]) -> torch.Tensor:
        sources, outputs = self._pairs(sources, outputs)
        if not sources:
            return torch.zeros(0)
        unique, index = dedup(sources + outputs)
        emb = self.embed(unique)
        n = len(sources)
        cos = (emb[index[:n]] * emb[index[n:]]).sum(-1)
        return 100.0 * cos.clamp(0.0, 1.0)


class BertScoreContent(ContentScorer):
    """BERTScore F1 between output (candidate) and source (reference), idf off.

    Each text is encoded with the tokenizer's special tokens (a leading space is added for
    byte-level BPE tokenizers such as RoBERTa's, as bert_score does with ``add_prefix_space``),
    and represented by the hidden states of ``layer`` (0 = embeddings), each row L2-normalised.
    Greedy matching: every candidate token takes its most similar reference token (precision P)
    and every reference token its most similar candidate token (recall R); the averages skip the
    ``[CLS]``/``[SEP]`` (``<s>``/``</s>``) positions (weight 0, as bert_score with idf off) but
    those positions can still be matched. ``F1 = 2PR / (P + R)``; an empty text gives F1 = 0.
    With a baseline ``b``: ``F1' = (F1 − b) / (1 − b)``; the score is ``100 · max(F1', 0)``.

    Differences from the bert_score package, on purpose: padded positions never take part in the
    max (bert_score multiplies them by 0, so a padded 0 can win when all similarities are
    negative and the result then depends on the batch); nothing else.
    """

    def __init__(
        self,
        model: str,
        *,
        layer: int | None = None,
        baseline: float | Literal["auto"] | None = "auto",
        device: str = "auto",
        batch_size: int = 64,
        max_length: int | None = None,
        trust_remote_code: bool = False,
    ) -> None:
        from transformers import AutoModel

        self.name = f"bertscore:{model}"
        self.batch_size = batch_size
        known = KNOWN_BERTSCORE.get(model)
        encoder, self.tokenizer, path = load_frozen(
            AutoModel, model, "encoder", device=device, trust_remote_code=trust_remote_code
        )
        if hasattr(encoder, "encoder") and hasattr(encoder, "decoder"):  # seq2seq: its encoder
            encoder = encoder.get_encoder()
        num_layers = getattr(encoder.config, "num_hidden_layers", None)
        if not isinstance(num_layers, int):
            raise ModelLoadError(
                f"cannot tell how many layers {model!r} has (no num_hidden_layers)"
            )
        if layer is None:
            layer = known[0] if known else num_layers
        if not 0 <= layer <= num_layers:
            raise ConfigError(f"BERTScore layer {layer} is outside 0..{num_layers} for {model!r}")
        self.layer = layer
        self.model = _truncate_layers(encoder, layer)
        self.max_length = max_length_for(path, encoder, self.tokenizer, max_length)
        if baseline == "auto":
            if known is None or known[0] != layer:
                raise ConfigError(
                    f"no rescaling baseline is known for {model!r} at layer {layer} (known: "
                    + ", ".join(f"{m} layer {lv}" for m, (lv, _) in KNOWN_BERTSCORE.items())
                    + "); pass baseline=<float> (the F column of bert_score's "
                    "rescale_baseline/<lang>/<model>.tsv at that layer) or baseline=None for raw F1"
                )
            baseline = known[1]
        if baseline is not None and not (isinstance(baseline, int | float) and baseline < 1):
            raise ConfigError(
                f"BERTScore baseline must be a number below 1 or None, got {baseline!r}"
            )
        self.baseline = None if baseline is None else float(baseline)
        toks = self.tokenizer.tokenize
        self.prefix_space = toks("a") != toks(" a")  # byte-level BPE without a prefix space
        self.skip_ids = {
            i for i in (self.tokenizer.cls_token_id, self.tokenizer.sep_token_id) if i is not None
        }

    @torch.no_grad()
    def encode(self, texts: Sequence[str]) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """Per text: unit-norm token embeddings ``[L, d]`` and token weights ``[L]`` (0 for
        [CLS]/[SEP], 1 otherwise), float32 on the model's device."""
        ids: list[list[int]] = []
        for t in check_texts("texts", texts):
            t = t.strip()  # an empty text becomes its special tokens only (F1 = 0)
            ids.append(
                self.tokenizer(
                    (" " + t) if self.prefix_space and t else t,
                    truncation=True,
                    max_length=self.max_length,
                )["input_ids"]
            )
        device = model_device(self.model)
        pad = self.tokenizer.pad_token_id
        out: list[tuple[torch.Tensor, torch.Tensor]] = [None] * len(ids)  # type: ignore[list-item]
        for idx in length_batches([len(x) for x in ids], self.batch_size):
            seqs = [torch.tensor(ids[i]) for i in idx]
            input_ids = pad_sequence(seqs, batch_first=True, padding_value=pad).to(device)
            mask = pad_sequence([torch.ones_like(s) for s in seqs], batch_first=True).to(device)
            hidden = (
                self.model(input_ids=input_ids, attention_mask=mask, output_hidden_states=True)
                .hidden_states[self.layer]
                .float()
            )
            hidden = F.normalize(hidden, p=2, dim=-1)
            for row, i in enumerate(idx):
                n = len(ids[i])
                w = torch.tensor(
                    [0.0 if t in self.skip_ids else 1.0 for t in ids[i]], device=device
                )
                out[i] = (hidden[row, :n], w)
        return out

    def f1(self, sources: Sequence[str], outputs: Sequence[str]) -> torch.Tensor:
        """Raw (not rescaled) BERTScore F1 of each output against its source, CPU ``[N]``."""
        sources, outputs = self._pairs(sources, outputs)
        if not sources:
            return torch.zeros(0)
        unique, index = dedup(sources + outputs)
        enc = self.encode(unique)
        n = len(sources)
        pairs = list(zip(index[n:].tolist(), index[:n].tolist(), strict=True))  # (cand, ref)
        upairs, pair_index = dedup(pairs)  # type: ignore[arg-type]
        f1 = torch.empty(len(upairs))
        for start in range(0, len(upairs), PAIR_CHUNK):
            chunk = upairs[start : start + PAIR_CHUNK]
            f1[start : start + len(chunk)] = greedy_f1(
                [enc[c] for c, _ in chunk], [enc[r] for _, r in chunk]
            ).cpu()
        return f1[pair_index]

    def __call__(self, sources: Sequence[str], outputs: Sequence[str]) -> torch.Tensor:
        f1 = self.f1(sources, outputs)
        if self.baseline is not None:
            f1 = (f1 - self.baseline) / (1.0 - self.baseline)
        return 100.0 * f1.clamp(min=0.0)


def greedy_f1(
    cands: Sequence[tuple[torch.Tensor, torch.Tensor]],
    refs: Sequence[tuple[torch.Tensor, torch.Tensor]],
) -> torch.Tensor:
    """BERTScore F1 of each (candidate, reference) pair from unit-norm token embeddings and
    token weights; ``[B]``. P = Σ_i w_i max_j c_i·r_j / Σ w (candidate tokens i, reference
    tokens j), R symmetrically, F1 = 2PR/(P+R), 0 where undefined."""
    c = pad_sequence([e for e, _ in cands], batch_first=True)  # [B, Lc, d]
    r = pad_sequence([e for e, _ in refs], batch_first=True)  # [B, Lr, d]
    wc = pad_sequence([w for _, w in cands], batch_first=True)  # [B, Lc], 0 on padding
    wr = pad_sequence([w for _, w in refs], batch_first=True)
    mc = pad_sequence([torch.ones(len(w), dtype=torch.bool) for _, w in cands], batch_first=True)
    mr = pad_sequence([torch.ones(len(w), dtype=torch.bool) for _, w in refs], batch_first=True)
    mc, mr = mc.to(c.device), mr.to(c.device)
    sim = torch.bmm(c, r.transpose(1, 2))  # [B, Lc, Lr] cosine similarities
    sim = sim.masked_fill(~(mc[:, :, None] & mr[:, None, :]), float("-inf"))
    best_for_c = sim.max(dim=2).values.masked_fill(~mc, 0.0)  # each candidate token's best match
    best_for_r = sim.max(dim=1).values.masked_fill(~mr, 0.0)
    p = (best_for_c * wc).sum(1) / wc.sum(1)  # 0/0 = nan for an empty text, zeroed below
    rec = (best_for_r * wr).sum(1) / wr.sum(1)
    f = 2 * p * rec / (p + rec)
    return torch.nan_to_num(f, nan=0.0, posinf=0.0, neginf=0.0)


def _truncate_layers(model, layer: int):
    """Drop the transformer layers above ``layer`` when the model keeps them in
    ``encoder.layer`` (BERT, RoBERTa, …): ``hidden_states[layer]`` is unchanged and cheaper."""
    enc = getattr(model, "encoder", None)
    layers = getattr(enc, "layer", None)
    if isinstance(layers, torch.nn.ModuleList) and layer < len(layers):
        enc.layer = torch.nn.ModuleList(list(layers)[:layer])
    return model


def _encoder(model: str, prefix: str) -> str:
    """The encoder's name or folder; ``builtin:minilm`` becomes the extracted MiniLM folder."""
    if not model:
        raise ConfigError(f"content model {prefix!r} needs a model after the colon")
    if model in MINILM_NAMES:
        from hardprompts.scorers.minilm import minilm_path

        return str(minilm_path())
    return model


def build_content_scorer(
    name: str,
    *,
    device: str = "auto",
    batch_size: int = 64,
    max_length: int | None = None,
    layer: int | None = None,
    baseline: float | Literal["auto"] | None = "auto",
    trust_remote_code: bool = False,
) -> ContentScorer:
    """A content scorer from a config string.

    * ``builtin:minilm`` / ``minilm``: all-MiniLM-L6-v2 cosine (needs ``hardprompts[style]``);
    * ``cosine:<model>``: the same with any Hugging Face encoder (name or folder);
      ``<model>`` may be ``builtin:minilm`` in both forms below;
    * ``bertscore:<model>``: BERTScore F1 (``layer``: default bert_score's table, else the last
      layer; ``baseline``: ``"auto"`` = bert_score's value for a known model and layer, a float,
      or ``None`` for raw F1). ``bertscore:roberta-large`` is RLPrompt's content reward.
    """
    kwargs = dict(
        device=device, batch_size=batch_size, max_length=max_length,
        trust_remote_code=trust_remote_code,
    )  # fmt: skip
    if name.startswith("bertscore:"):
        model = _encoder(name.removeprefix("bertscore:"), "bertscore:")
        return BertScoreContent(model, layer=layer, baseline=baseline, **kwargs)
    if layer is not None:
        raise ConfigError(
            f"a BERTScore layer was given, but content model {name!r} is not bertscore:"
        )
    if name in MINILM_NAMES:
        return EmbeddingCosineContent(_encoder(name, ""), name="builtin:minilm", **kwargs)
    if name.startswith("cosine:"):
        model = _encoder(name.removeprefix("cosine:"), "cosine:")
        return EmbeddingCosineContent(model, name=name, **kwargs)
    raise ConfigError(
        f"unknown content model {name!r}: write builtin:minilm (offline sentence-embedding cosine), "
        "cosine:<encoder name or folder>, or bertscore:<encoder name or folder> (RLPrompt: "
        "bertscore:roberta-large)"
    )
