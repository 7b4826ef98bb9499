"""Differentiable scoring of prompt *embeddings* on an in-process target (PEZ, soft prompts).

:meth:`HFTarget.score` takes prompt text. PEZ and prompt tuning need the class logits as a
function of the prompt's input embeddings, with gradients. :class:`EmbeddingScorer` does this on
the target's own model, template and verbalizers:

1. each input is encoded by the target's template with the prompt slot holding T placeholder
   positions (:func:`encode_with_prompt_slot`; the input alone is truncated, never the prompt, the
   mask or the template's words, exactly as :class:`~hardprompts.templates.TemplateEncoder` does);
2. the rows ``model.get_input_embeddings()(ids)`` at those T positions are replaced by the given
   prompt embeddings, and the model runs on ``inputs_embeds``;
3. the verbalizer logits are read at the mask (masked LM) or last (causal LM) position.

With embeddings equal to the embedding rows of a token prompt, this reproduces
``HFTarget.score`` for that prompt (the tests check this to 1e-5, for both kinds).

Token convention: a prompt's tokens are the ids the template gives the prompt in its slot, so
with ``"{x} {prompt} ..."`` and byte-level BPE the first prompt token carries the space marker
(``Ġthe``): the template's whitespace before ``{prompt}`` belongs to the prompt's first token.
:meth:`EmbeddingScorer.prompt_ids` and :meth:`EmbeddingScorer.prompt_text` convert both ways.

:func:`prompt_nll` is the reference-LM negative log-likelihood of a prompt given as embeddings
(Patel et al. 2025: the perplexity term of PEZ's loss), also differentiable.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from hardprompts.errors import ConfigError, TargetError
from hardprompts.templates import TemplateEncoder, Values

__all__ = ["EmbeddingScorer", "SlotEncoded", "encode_with_prompt_slot", "prompt_nll"]


@dataclass(frozen=True)
class SlotEncoded:
    """Ids of one input with the prompt slot left as placeholders.

    Attributes:
        ids: token ids; the T positions ``prompt_start .. prompt_start + T - 1`` are placeholders.
        position: the position whose logits give the class scores (mask, or last for causal).
        prompt_start: first prompt position.
    """

    ids: list[int]
    position: int
    prompt_start: int


def encode_with_prompt_slot(
    encoder: TemplateEncoder, x: Values, length: int, placeholder: int
) -> SlotEncoded:
    """Encode input ``x`` with ``length`` placeholder tokens in the template's prompt slot.

    Mirrors :meth:`TemplateEncoder.encode` (same segments, same truncation of the input fields,
    :meth:`TemplateEncoder.truncate`) with the prompt's ids replaced by ``length`` copies of ``placeholder``. The literal text
    in front of ``{prompt}`` is kept up to its trailing whitespace, which the first prompt token
    carries (see the module docstring).
    """
    segments = encoder.template.segments
    if not any(seg.slot == "prompt" for seg in segments):
        raise ConfigError(
            f"task.template {encoder.template.text!r} has no {{prompt}} slot; prompt embeddings "
            "need one, e.g. '{x} {prompt} {mask} .'"
        )
    # segment_ids drops only the prompt segment when its literal is blank; walk both in step.
    encoded = encoder.segment_ids(x, "")
    parts: list[tuple[str | None, list[int]]] = []
    i = 0
    for seg in segments:
        if seg.slot == "prompt":
            literal: list[int] = []
            if i < len(encoded) and encoded[i][0] == "prompt":
                literal = encoded[i][1]
                i += 1
            parts.append((None, literal))
            parts.append(("prompt", [placeholder] * length))
        else:
            parts.append(encoded[i])
            i += 1
    parts = encoder.truncate(parts)  # the input fields only, longest first
    ids = list(encoder.lead)
    position = prompt_start = -1
    for slot, seg_ids in parts:
        if slot == "prompt":
            prompt_start = len(ids)
        ids.extend(seg_ids)
        if slot == "mask":
            position = len(ids) - 1
    ids.extend(encoder.trail)
    if encoder.kind == "causal":
        position = len(ids) - 1
    return SlotEncoded(ids, position, prompt_start)


class EmbeddingScorer:
    """Class logits of prompt embedding matrices on texts, differentiable in the embeddings.

    Args:
        target: an in-process target (:class:`~hardprompts.targets.hf.HFTarget`, masked or causal).
        batch_size: (prompt, input) rows per forward. Unset: ``target.batch_size``, else 32.
    """

    def __init__(self, target, batch_size: int | None = None) -> None:
        if not hasattr(target, "model") or not hasattr(target, "encoder"):
            raise TargetError(
                f"{type(target).__name__} gives no gradients: prompt embeddings need an in-process "
                "Hugging Face target (target.kind masked or causal)"
            )
        self.target = target
        self.model = target.model
        self.encoder: TemplateEncoder = target.encoder
        self.tokenizer = target.tokenizer
        self.batch_size = batch_size or getattr(target, "batch_size", None) or 32
        self.pad_id = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else 0

    @property
    def embedding_table(self) -> Tensor:
        """The target's input embedding matrix [V, d] (frozen)."""
        return self.model.get_input_embeddings().weight

    @property
    def device(self) -> torch.device:
        return self.embedding_table.device

    # ------------------------------------------------------------------ tokens <-> text

    def prompt_ids(self, prompt: str) -> list[int]:
        """The ids the target's template gives ``prompt`` in its slot (see the module docstring)."""
        with_prompt = dict(self.encoder.segment_ids("", prompt)).get("prompt", [])
        literal = dict(self.encoder.segment_ids("", "")).get("prompt", [])
        if with_prompt[: len(literal)] != literal:
            raise ConfigError(
                f"task.template {self.encoder.template.text!r}: the words before {{prompt}} merge "
                "with the prompt's first token; end them with a space or punctuation"
            )
        return with_prompt[len(literal) :]

    def prompt_text(self, ids: Sequence[int]) -> str:
        """Prompt text of token ids (decoded, surrounding whitespace stripped: the template adds it)."""
        return self.tokenizer.decode(list(ids), clean_up_tokenization_spaces=False).strip()

    # ------------------------------------------------------------------ scoring

    def score(self, prompt_embeds: Tensor, texts: Sequence[str]) -> Tensor:
        """Class logits of every prompt on every input.

        Args:
            prompt_embeds: [P, T, d] prompts in the target's input-embedding space.
            texts: N inputs.

        Returns:
            [P, N, C] float32 logits on the model's device, differentiable in ``prompt_embeds``.
        """
        if prompt_embeds.dim() != 3:
            raise ValueError(f"prompt_embeds must be [P, T, d], got {tuple(prompt_embeds.shape)}")
        n_prompts, length, _ = prompt_embeds.shape
        prompt_embeds = prompt_embeds.to(device=self.device, dtype=self.embedding_table.dtype)
        encoded = [encode_with_prompt_slot(self.encoder, x, length, self.pad_id) for x in texts]
        rows = [(p, n) for p in range(n_prompts) for n in range(len(texts))]
        # Longest first so that each chunk pads little; `order` maps chunk rows back to (p, n).
        order = sorted(range(len(rows)), key=lambda r: -len(encoded[rows[r][1]].ids))
        chunks = []
        for start in range(0, len(order), self.batch_size):
            chunk = [rows[r] for r in order[start : start + self.batch_size]]
            chunks.append(self._forward(prompt_embeds, [(p, encoded[n]) for p, n in chunk]))
        usage = getattr(self.target, "usage", None)
        if usage is not None:  # target work like HFTarget.score's (the hook sees no input_ids)
            usage.add(pairs=len(rows))
        logits = torch.cat(chunks)  # [P*N, C] in `order`
        inverse = torch.empty(len(order), dtype=torch.long)
        inverse[torch.tensor(order)] = torch.arange(len(order))
        return logits[inverse.to(logits.device)].view(n_prompts, len(texts), -1)

    def _forward(self, prompt_embeds: Tensor, chunk: list[tuple[int, SlotEncoded]]) -> Tensor:
        """Verbalizer logits [B, C] of B (prompt index, encoded input) rows."""
        length = prompt_embeds.shape[1]
        width = max(len(e.ids) for _, e in chunk)
        ids = torch.full((len(chunk), width), self.pad_id, dtype=torch.long)
        mask = torch.zeros((len(chunk), width), dtype=torch.long)  # right padding
        for i, (_, e) in enumerate(chunk):
            ids[i, : len(e.ids)] = torch.tensor(e.ids)
            mask[i, : len(e.ids)] = 1
        ids, mask = ids.to(self.device), mask.to(self.device)
        usage = getattr(self.target, "usage", None)
        if usage is not None:
            usage.add(requests=1, prompt_tokens=ids.numel())
        rows = torch.arange(len(chunk), device=self.device)
        starts = torch.tensor([e.prompt_start for _, e in chunk], device=self.device)
        cols = starts[:, None] + torch.arange(length, device=self.device)  # [B, T]
        which = torch.tensor([p for p, _ in chunk], device=self.device)
        embeds = self.model.get_input_embeddings()(ids)  # [B, L, d]
        # Splice the prompts into their slots (out of place, so gradients reach prompt_embeds).
        embeds = embeds.index_put((rows[:, None].expand_as(cols), cols), prompt_embeds[which])
        positions = torch.tensor([e.position for _, e in chunk], device=self.device)
        head = getattr(self.target, "head", None)
        if head is not None:  # only the C verbalizer rows of the output layer
            out = self.model.base_model(inputs_embeds=embeds, attention_mask=mask)
            logits = head(out.last_hidden_state[rows, positions])
        else:
            out = self.model(inputs_embeds=embeds, attention_mask=mask)
            logits = out.logits[rows, positions][:, self.target.verbalizer_ids]
        return logits.float()


def prompt_nll(
    model,
    prompt_embeds: Tensor,
    token_ids: Tensor,
    bos_id: int,
    *,
    through_token: bool = False,
) -> Tensor:
    """Mean negative log-likelihood of prompts under a causal LM, from their input embeddings.

    NLL(z) = −(1/T) Σ_t log p_ref(a_t | BOS, a_<t)   (Patel et al. 2025; PPL(z) = exp(NLL(z)))

    The value equals the NLL of the token ids (what :func:`hardprompts.metrics.prompt_perplexity`
    logs) when ``prompt_embeds`` are those tokens' embedding rows. Gradients with respect to
    ``prompt_embeds`` flow:

    * as context (always): row t is the input that conditions the predictions of a_{t+1}, …
      This is the only path in PEZ's and Patel et al.'s released fluency term.
    * through the output layer (``through_token=True``, tied input/output embeddings only): the
      output row of each prompt token a_t *is* its embedding e_t, in every position's logits:
      its own logit h_t·e_t and the log-partition log Σ_v exp(h_s·w_v) of every position s. The
      gradient is then exact for the function NLL(E) of a model whose tied rows are the prompt's
      embeddings: ∂/∂e_t = context + (1/T) Σ_s (p_s(a_t) − 1[a_s = a_t]) h_s. A token that occurs
      several times shares its row, whose gradient is split equally between the occurrences.

    Args:
        model: a causal LM whose input-embedding space ``prompt_embeds`` live in.
        prompt_embeds: [P, T, d] prompt embeddings.
        token_ids: [P, T] long, the tokens a_t whose log-probabilities are taken.
        bos_id: the token every prompt is conditioned on first (the document-start token).
        through_token: also differentiate through the prompt tokens' output rows (see above).

    Returns:
        [P] float32 mean NLL per prompt.

    Raises:
        ValueError: ``through_token`` with untied input and output embeddings (no such path).
    """
    emb = model.get_input_embeddings()
    out = model.get_output_embeddings()
    if through_token and out.weight.data_ptr() != emb.weight.data_ptr():
        raise ValueError(
            "through_token needs tied input and output embeddings (the output row of a prompt "
            "token is then its input embedding); this model's are separate"
        )
    prompt_embeds = prompt_embeds.to(emb.weight.dtype)
    n, length, _ = prompt_embeds.shape
    bos = emb(torch.full((n, 1), bos_id, dtype=torch.long, device=prompt_embeds.device))
    inputs = torch.cat([bos, prompt_embeds[:, :-1]], dim=1)  # [P, T, d]: BOS, e_0 … e_{T−2}
    hidden = model.base_model(inputs_embeds=inputs).last_hidden_state  # [P, T, d]: h_t predicts a_t
    logits = out(hidden).float()  # [P, T, V], output rows w_v (frozen)
    if not through_token:
        own = logits.gather(-1, token_ids[..., None]).squeeze(-1)  # h_t · w_{a_t} + b_{a_t}
        return -(own - logits.logsumexp(-1)).mean(-1)  # −(1/T) Σ_t log p(a_t | BOS, a_<t)

    # The prompt tokens' output rows are their embeddings: row a_t = the mean of e over the
    # occurrences of a_t (equal in value to w_{a_t} at a projection).
    same = token_ids[:, :, None] == token_ids[:, None, :]  # [P, T, T] a_t == a_u
    rows = same.to(prompt_embeds.dtype) @ prompt_embeds / same.sum(-1, keepdim=True)  # [P, T, d]
    cols = (hidden @ rows.transpose(1, 2)).float()  # [P, T(s), T(t)] = h_s · e_{a_t}
    if out.bias is not None:
        cols = cols + out.bias[token_ids].float()[:, None, :]
    own = cols.diagonal(dim1=1, dim2=2)  # [P, T] logit of a_t at position t
    # log Σ_v exp(logit_v): frozen columns for the other tokens, one column per distinct prompt
    # token (its first occurrence) computed from the embeddings.
    in_prompt = torch.zeros_like(logits[:, 0], dtype=torch.bool).scatter_(1, token_ids, True)
    first = ~torch.tril(same, diagonal=-1).any(-1)  # [P, T] first occurrence of a_t
    others = logits.masked_fill(in_prompt[:, None, :], float("-inf"))
    prompt_cols = cols.masked_fill(~first[:, None, :], float("-inf"))
    log_z = torch.cat([others, prompt_cols], dim=-1).logsumexp(-1)  # [P, T]
    return -(own - log_z).mean(-1)  # −(1/T) Σ_t log p(a_t | BOS, a_<t)
