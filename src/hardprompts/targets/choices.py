"""Log-likelihood of continuations (the choices of a multiple-choice task) under a causal LM.

:func:`continuation_logprobs` implements contract 3 of the targets: for each text, the
summed log-probability of each of its continuations given the text,

    log p(c | t) = Σ_k log p(c_k | t, c_<k)

How it is computed (and why it is fast):

* each text's key/value cache is computed **once**, by one left-padded forward over a batch of
  texts, and every continuation of that text reads it (no prefix is recomputed per choice);
* the first token of every continuation is scored from that same prefix forward (its last
  position), so a one-token choice costs nothing beyond the prefix;
* the remaining tokens of the continuations of *all* texts in the batch go through batched
  forwards over the shared cache, sized by a token cap and a logits-memory budget.

The numbers equal one plain forward per (text, continuation) over the concatenated ids to 1e-5
(``tests/test_choices.py``).

Tokenisation at the boundary (our choice, as in EleutherAI's lm-evaluation-harness): the text and
the continuation are tokenised **separately** and the ids concatenated, so the continuation's
tokens are the same whatever text precedes it. Whitespace that ends the text is moved to the front
of the continuation (``"Answer: "`` + ``"yes"`` is scored as ``"Answer:"`` + ``" yes"``): byte-level
BPE vocabularies attach a space to the word after it, and a lone trailing space token is an
unnatural context. So a choice is scored with the spelling it has after a space; write templates
that end without a space (``"... Answer:"``) and give choices as the data spells them (the task adds
the separating space). The tokenizer's leading special tokens (BOS) start the text; nothing is
appended after it. An empty text is conditioned on the BOS token (EOS when there is none); an empty
continuation has log-probability 0.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Sequence
from typing import NamedTuple

import torch
from transformers import DynamicCache

from hardprompts.errors import TargetError
from hardprompts.modeling import cache_keyword, output_cache
from hardprompts.templates import special_tokens_around

Progress = Callable[[int], None]


class Prefill(NamedTuple):
    """One left-padded forward over a batch of texts: what their continuations read."""

    logits: torch.Tensor  # [n, V] float32: next-token logits after each text
    kv: list[tuple[torch.Tensor, torch.Tensor]]  # per layer, keys and values [n, H, Lp, hd]
    mask: torch.Tensor  # [n, Lp] attention mask (0 on the left padding)
    lengths: torch.Tensor  # [n] tokens of each text (the position of its first new token)


def cache_rows(kv: list[tuple[torch.Tensor, torch.Tensor]], rows: torch.Tensor) -> DynamicCache:
    """A fresh cache holding the given batch rows of ``kv`` (a forward extends the cache in place,
    so each forward over a shared prefix gets its own)."""
    return DynamicCache(
        ddp_cache_data=[(k.index_select(0, rows), v.index_select(0, rows)) for k, v in kv]
    )


def kv_layers(cache) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Keys and values per layer of a cache, each [batch, heads, length, head dim]."""
    return [(layer.keys, layer.values) for layer in cache.layers]


def prefill(model, prefixes: Sequence[Sequence[int]], pad_id: int) -> Prefill:
    """Left-pad ``prefixes`` (every text then ends at the last column), run one forward with
    explicit position ids and keep only the last position's logits and the cache."""
    device = next(model.parameters()).device
    n, lp = len(prefixes), max(len(p) for p in prefixes)
    ids = torch.full((n, lp), pad_id, dtype=torch.long)
    mask = torch.zeros((n, lp), dtype=torch.long)
    for r, p in enumerate(prefixes):
        ids[r, lp - len(p) :] = torch.tensor(list(p), dtype=torch.long)
        mask[r, lp - len(p) :] = 1
    ids, mask = ids.to(device), mask.to(device)
    positions = (mask.cumsum(-1) - 1).clamp(min=0)  # real tokens at 0.., as without padding
    keep = (
        {"logits_to_keep": 1}
        if "logits_to_keep" in inspect.signature(model.forward).parameters
        else {}
    )
    out = model(input_ids=ids, attention_mask=mask, position_ids=positions, use_cache=True, **keep)
    return Prefill(out.logits[:, -1].float(), kv_layers(output_cache(out)), mask, mask.sum(1))


def split_boundary(text: str, continuation: str) -> tuple[str, str]:
    """Move the whitespace that ends ``text`` to the front of ``continuation`` (see module doc)."""
    stripped = text.rstrip()
    return stripped, text[len(stripped) :] + continuation


class ChoiceScorer:
    """Scores continuations of texts with a frozen causal LM (see the module docstring).

    Args:
        model: a causal LM (``AutoModelForCausalLM``), in eval mode.
        tokenizer: its tokenizer.
        max_length: longest sequence (text + continuation) the model accepts.
        tokens_per_batch: most tokens of one forward (prefix tokens when prefilling, new tokens when
            scoring continuations over the cache); None = no cap.
        memory_budget_mb: most memory (MiB) that the continuation logits of one forward and its
            copies of the prefix cache may take.
    """

    def __init__(
        self,
        model,
        tokenizer,
        *,
        max_length: int,
        tokens_per_batch: int | None = 2048,
        memory_budget_mb: int = 512,
    ) -> None:
        self.model = model
        self.tokenizer = tokenizer
        self.max_length = max_length
        self.tokens_per_batch = tokens_per_batch
        self.memory_budget = memory_budget_mb * 2**20
        self.lead, _ = special_tokens_around(tokenizer)
        start = (
            tokenizer.bos_token_id if tokenizer.bos_token_id is not None else tokenizer.eos_token_id
        )
        self.start_id = start
        self.pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else (start or 0)

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    # ------------------------------------------------------------------ tokenisation

    def encode(self, texts: Sequence[str], continuations: Sequence[Sequence[str]]):
        """Ids of every text and of each of its continuations (the boundary rule of the module doc)."""
        if len(texts) != len(continuations):
            raise ValueError(f"{len(texts)} texts but {len(continuations)} lists of continuations")
        prefixes, conts = [], []
        for text, options in zip(texts, continuations, strict=True):
            stripped = text.rstrip()
            ids = self.lead + self._tok(stripped)
            if not ids:
                if self.start_id is None:
                    raise TargetError(
                        "an empty text with no BOS/EOS token leaves nothing to condition on"
                    )
                ids = [self.start_id]
            prefixes.append(ids)
            conts.append([self._tok(split_boundary(text, c)[1]) for c in options])
        return prefixes, conts

    def _tok(self, text: str) -> list[int]:
        return self.tokenizer(text, add_special_tokens=False)["input_ids"] if text else []

    # ------------------------------------------------------------------ scoring

    @torch.no_grad()
    def logprobs(
        self,
        texts: Sequence[str],
        continuations: Sequence[Sequence[str]],
        progress: Progress | None = None,
    ) -> list[list[float]]:
        """For each text, the summed log-probability of each of its continuations given the text."""
        prefixes, conts = self.encode(texts, continuations)
        return self.logprobs_ids(prefixes, conts, progress)

    @torch.no_grad()
    def logprobs_ids(
        self,
        prefixes: Sequence[Sequence[int]],
        continuations: Sequence[Sequence[Sequence[int]]],
        progress: Progress | None = None,
    ) -> list[list[float]]:
        """:meth:`logprobs` on token ids (prefixes must be non-empty)."""
        out = [[0.0] * len(c) for c in continuations]
        for i, (p, cs) in enumerate(zip(prefixes, continuations, strict=True)):
            if not p:
                raise ValueError(f"text {i} has no tokens")
            longest = max((len(c) for c in cs), default=0)
            if len(p) + longest > self.max_length:
                raise TargetError(
                    f"text {i} ({len(p)} tokens) with its longest choice ({longest} tokens) is over "
                    f"the target's limit of {self.max_length} tokens; shorten the input fields "
                    "(the task truncates them when it knows the target's tokenizer)"
                )
        order = sorted(range(len(prefixes)), key=lambda i: len(prefixes[i]), reverse=True)
        start = 0
        while start < len(order):
            width = len(prefixes[order[start]])
            n = 1 if not self.tokens_per_batch else max(1, self.tokens_per_batch // width)
            chunk = order[start : start + n]
            start += len(chunk)
            self._score_chunk(chunk, prefixes, continuations, out)
            if progress:
                progress(sum(len(continuations[i]) for i in chunk))
        return out

    def _score_chunk(self, chunk, prefixes, continuations, out) -> None:
        pre = prefill(self.model, [prefixes[i] for i in chunk], self.pad_id)
        first = pre.logits.log_softmax(-1)  # [n, V]: log p(c_0 | text)
        kv, mask, lengths = pre.kv, pre.mask, pre.lengths

        rows = []  # (chunk row, choice index, ids) of continuations with 2+ tokens
        for r, i in enumerate(chunk):
            for j, c in enumerate(continuations[i]):
                if c:
                    out[i][j] = float(first[r, c[0]])
                if len(c) > 1:
                    rows.append((r, j, c))
        if not rows:
            return
        rows.sort(key=lambda item: len(item[2]), reverse=True)
        vocab = first.shape[-1]
        cache_per_row = sum(k[0].numel() * k.element_size() * 2 for k, _ in kv)  # one row's cache
        start = 0
        while start < len(rows):
            lc = len(rows[start][2]) - 1  # the last token's own logits are never needed
            k = max(1, self.memory_budget // (lc * vocab * 4 + cache_per_row))
            if self.tokens_per_batch:
                k = min(k, max(1, self.tokens_per_batch // lc))
            group = rows[start : start + k]
            start += len(group)
            self._score_tails(group, chunk, kv, mask, lengths, out)

    def _score_tails(self, group, chunk, kv, mask, lengths, out) -> None:
        """Tokens 1.. of each continuation in ``group``, read from the shared prefix cache."""
        device = self.device
        lc = max(len(c) for _, _, c in group) - 1
        g = len(group)
        src = torch.tensor([r for r, _, _ in group], device=device)  # which prefix each row reads
        inp = torch.full((g, lc), self.pad_id, dtype=torch.long)
        cmask = torch.zeros((g, lc), dtype=torch.long)
        for row, (_, _, c) in enumerate(group):
            inp[row, : len(c) - 1] = torch.tensor(c[:-1], dtype=torch.long)  # inputs c_0..c_{L-2}
            cmask[row, : len(c) - 1] = 1
        inp, cmask = inp.to(device), cmask.to(device)
        res = self.model(
            input_ids=inp,
            attention_mask=torch.cat([mask.index_select(0, src), cmask], 1),  # [g, lp + lc]
            position_ids=lengths.index_select(0, src)[:, None] + torch.arange(lc, device=device),
            use_cache=True,
            **{cache_keyword(self.model): cache_rows(kv, src)},
        )
        logp = res.logits.float().log_softmax(-1)  # [g, lc, V]: log p(c_{t+1} | text, c_<=t)
        for row, (r, j, c) in enumerate(group):
            targets = torch.tensor(c[1:], device=device)
            tail = logp[row, : len(c) - 1].gather(-1, targets[:, None]).sum()
            out[chunk[r]][j] += float(tail)


def naive_continuation_logprobs(
    model, scorer: ChoiceScorer, texts, continuations
) -> list[list[float]]:
    """Reference: one full forward per (text, continuation), no cache, no padding, full logits."""
    prefixes, conts = scorer.encode(texts, continuations)
    device = next(model.parameters()).device
    out = []
    with torch.no_grad():
        for p, cs in zip(prefixes, conts, strict=True):
            row = []
            for c in cs:
                if not c:
                    row.append(0.0)
                    continue
                seq = torch.tensor([p + c], device=device)
                logp = model(input_ids=seq).logits[0].float().log_softmax(-1)  # [L, V]
                idx = torch.arange(len(p) - 1, len(p) + len(c) - 1, device=device)
                row.append(float(logp[idx, torch.tensor(c, device=device)].sum()))
            out.append(row)
    return out
