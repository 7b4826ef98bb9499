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
  forwards whose attention reads the texts' cache in place (:mod:`.shared_prefix`): the cache is
  held once however many choices a text has, and the memory budget counts it once. Models whose
  attention cannot be routed there (the self-check at construction says so) copy each text's cache
  into the rows of its choices instead (:func:`cache_rows`; same numbers, rows × context memory).

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
import logging
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

import torch
from transformers import DynamicCache

from hardprompts.errors import TargetError
from hardprompts.modeling import cache_keyword, output_cache
from hardprompts.targets.shared_prefix import (
    SharedPrefix,
    activation_bytes_per_token,
    attention_implementation,
    cache_bytes_per_token,
    check_calls,
)
from hardprompts.templates import special_tokens_around

log = logging.getLogger(__name__)
Progress = Callable[[int], None]

# What a failed shared-prefix forward raises (the self-checks then fall back to copying the cache).
SHARED_PREFIX_ERRORS = (NotImplementedError, RuntimeError, AttributeError, KeyError, TypeError,
                        ValueError, IndexError)  # fmt: skip


class Prefill(NamedTuple):
    """One left-padded forward over a batch of texts: what their continuations read."""

    logits: torch.Tensor  # [n, V] float32: next-token logits after each text
    kv: list[tuple[torch.Tensor, torch.Tensor]]  # per layer, keys and values [n, H, Lp, hd]
    mask: torch.Tensor  # [n, Lp] attention mask (0 on the left padding)
    lengths: torch.Tensor  # [n] tokens of each text (the position of its first new token)


def cache_rows(kv: list[tuple[torch.Tensor, torch.Tensor]], rows: torch.Tensor) -> DynamicCache:
    """A fresh cache holding the given batch rows of ``kv`` (a forward extends the cache in place,
    so each forward over a shared prefix gets its own).

    The rows are selected one layer at a time (a generator, not a list): the cache stores its own
    copy of each layer it is given, so a list of every layer's selection would hold the rows twice
    until the cache is built."""
    return DynamicCache(
        ddp_cache_data=((k.index_select(0, rows), v.index_select(0, rows)) for k, v in kv)
    )


def kv_layers(cache) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Keys and values per layer of a cache, each [batch, heads, length, head dim]."""
    return [(layer.keys, layer.values) for layer in cache.layers]


def prefill(
    model, prefixes: Sequence[Sequence[int]], pad_id: int, max_tokens: int | None = None
) -> Prefill:
    """Left-pad ``prefixes`` (every text then ends at the last column), run them through the model
    with explicit position ids and keep only the last position's logits and the cache.

    With ``max_tokens``, a batch of more tokens goes through in pieces of columns (chunked
    prefill): each forward reads the cache of the columns before it and adds its own, so one
    forward's activations stay within ``max_tokens`` tokens however long the texts are. The cache
    and the logits are those of one forward (to float rounding)."""
    device = next(model.parameters()).device
    n, lp = len(prefixes), max(len(p) for p in prefixes)
    ids = torch.full((n, lp), pad_id, dtype=torch.long)
    mask = torch.zeros((n, lp), dtype=torch.long)
    for r, p in enumerate(prefixes):
        ids[r, lp - len(p) :] = torch.tensor(list(p), dtype=torch.long)
        mask[r, lp - len(p) :] = 1
    ids, mask = ids.to(device), mask.to(device)
    positions = (mask.cumsum(-1) - 1).clamp(min=0)  # real tokens at 0.., as without padding
    keep: dict[str, Any] = (
        {"logits_to_keep": 1}
        if "logits_to_keep" in inspect.signature(model.forward).parameters
        else {}
    )
    # A cache without the model's config keeps every key: a sliding-window cache would keep only
    # the last window - 1, which the copies of :func:`cache_rows` cannot be masked against.
    keep[cache_keyword(model)] = DynamicCache()
    width = lp if not max_tokens else max(1, max_tokens // n)  # columns per forward
    for start in range(0, lp, width):
        end = min(lp, start + width)
        out = model(
            input_ids=ids[:, start:end],
            attention_mask=mask[:, :end],  # the columns so far: cached keys, then this piece's
            position_ids=positions[:, start:end],
            use_cache=True,
            **keep,
        )
        keep[cache_keyword(model)] = output_cache(out)
    return Prefill(out.logits[:, -1].float(), kv_layers(output_cache(out)), mask, mask.sum(1))


def shared_prefix(pre: Prefill, rows: torch.Tensor, capacity: int = 0) -> SharedPrefix:
    """The prefill's cache, read in place by continuation rows ``rows`` (the prefix of each row,
    non-decreasing). A sliding-window cache keeps only the last keys of the left-padded prefixes:
    they are the last columns of every row, so the masks and positions are cut the same way."""
    lk = {k.shape[-2] for k, _ in pre.kv}
    if len(lk) != 1:
        raise NotImplementedError(f"layers keep different numbers of prefix keys ({sorted(lk)})")
    width = lk.pop()
    positions = (pre.mask.cumsum(-1) - 1).clamp(min=0)  # as in prefill
    return SharedPrefix(
        [k for k, _ in pre.kv],
        [v for _, v in pre.kv],
        pre.mask[:, -width:].bool(),
        positions[:, -width:],
        rows,
        capacity,
    )


class TextIds:
    """How a causal target's continuations see a text: the tokenizer's leading special tokens
    (BOS), then the text; an empty text is conditioned on BOS (EOS when there is none). Batches are
    padded with the pad token, else that same token, else 0."""

    def __init__(self, tokenizer) -> None:
        self.tokenizer = tokenizer
        self.lead, _ = special_tokens_around(tokenizer)
        bos, eos, pad = tokenizer.bos_token_id, tokenizer.eos_token_id, tokenizer.pad_token_id
        self.start_id = bos if bos is not None else eos
        self.pad_id = pad if pad is not None else (self.start_id or 0)

    def tokens(self, text: str) -> list[int]:
        """The text's ids alone (no special tokens)."""
        return self.tokenizer(text, add_special_tokens=False)["input_ids"] if text else []

    def prefix(self, text: str) -> list[int]:
        """The ids a continuation of ``text`` is conditioned on."""
        ids = self.lead + self.tokens(text)
        if ids:
            return ids
        if self.start_id is None:
            raise TargetError("an empty text with no BOS/EOS token leaves nothing to condition on")
        return [self.start_id]


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
            scoring continuations over the cache); None = no cap (the memory budget still splits).
        memory_budget_mb: most memory (MiB) that one continuation forward may take beside the
            model: its logits, and the texts' cache (once when shared, once per choice when copied);
            a prefill forward's activations and its texts' cache fit it too.
        share_prefix: choices read their text's cache in place (True), or each gets a copy (False);
            None = in place when a self-check at construction finds it gives the numbers of plain
            forwards on this model, else copies (with a warning).
    """

    def __init__(
        self,
        model,
        tokenizer,
        *,
        max_length: int,
        tokens_per_batch: int | None = 2048,
        memory_budget_mb: int = 512,
        share_prefix: bool | None = None,
    ) -> None:
        self.model = model
        self.tokenizer = tokenizer
        self.max_length = max_length
        self.tokens_per_batch = tokens_per_batch
        self.memory_budget = memory_budget_mb * 2**20
        self.ids = TextIds(tokenizer)
        self.pad_id = self.ids.pad_id
        self.shares_prefix = True if share_prefix is None else share_prefix
        if share_prefix is None:
            self.shares_prefix = self._shared_prefix_matches()

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
            prefixes.append(self.ids.prefix(text.rstrip()))
            conts.append([self.ids.tokens(split_boundary(text, c)[1]) for c in options])
        return prefixes, conts

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
            # Texts per prefill: their cache in half the budget (the rest is for the choices'
            # forwards), their cache and the prefill's activations in all of it, the token cap
            cached = width * cache_bytes_per_token(self.model)
            prefilling = cached + width * activation_bytes_per_token(self.model, width)
            n = min((self.memory_budget // 2) // cached, self.memory_budget // prefilling)
            if self.tokens_per_batch:
                n = min(n, self.tokens_per_batch // width)
            n = max(1, n)
            chunk = order[start : start + n]
            start += len(chunk)
            self._score_chunk(chunk, prefixes, continuations, out)
            if progress:
                progress(sum(len(continuations[i]) for i in chunk))
        return out

    def _score_chunk(self, chunk, prefixes, continuations, out) -> None:
        pre = prefill(self.model, [prefixes[i] for i in chunk], self.pad_id, self.tokens_per_batch)
        first = pre.logits.log_softmax(-1)  # [n, V]: log p(c_0 | text)
        kv = pre.kv

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
        cache = sum(k.numel() * k.element_size() * 2 for k, _ in kv)  # the chunk's prefix cache
        cfg = self.model.config
        width = getattr(cfg, "hidden_size", None) or int(getattr(cfg, "n_embd", 768))
        start = 0
        while start < len(rows):
            lc = len(rows[start][2]) - 1  # the last token's own logits are never needed
            if self.shares_prefix:  # the cache is held once; a row adds its logits (and their
                # log-softmax) and activations
                per_row = lc * (2 * vocab * 4 + 16 * width * first.element_size())
                k = max(1, (self.memory_budget - cache) // per_row)
            else:  # each row holds a copy of its text's cache, beside the texts' own
                k = max(1, (self.memory_budget - cache) // (lc * vocab * 4 + cache // len(chunk)))
            if self.tokens_per_batch:
                k = min(k, max(1, self.tokens_per_batch // lc))
            group = rows[start : start + k]
            start += len(group)
            if self.shares_prefix:
                group.sort(key=lambda item: item[0])  # rows grouped by text (stable)
            self._score_tails(group, chunk, pre, out)

    def _score_tails(self, group, chunk, pre: Prefill, out) -> None:
        """Tokens 1.. of each continuation in ``group``, read from the texts' prefix cache."""
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
        positions = pre.lengths.index_select(0, src)[:, None] + torch.arange(lc, device=device)
        if self.shares_prefix:
            shared = shared_prefix(pre, src)
            shared.step(positions, cmask.bool())
            with attention_implementation(self.model):
                res = self.model(
                    input_ids=inp,
                    attention_mask=cmask,  # unused by the shared-prefix attention
                    position_ids=positions,
                    use_cache=False,
                    shared_prefix=shared,
                )
            check_calls(self.model, shared)
        else:
            res = self.model(
                input_ids=inp,
                attention_mask=torch.cat([pre.mask.index_select(0, src), cmask], 1),  # [g, lp+lc]
                position_ids=positions,
                use_cache=True,
                **{cache_keyword(self.model): cache_rows(pre.kv, src)},
            )
        # log p(c_{t+1} | text, c_<=t) = logit of c_{t+1} - logsumexp of the logits: the target
        # tokens' logits and one normaliser per position, without a log-softmax copy [g, lc, V]
        # (logsumexp's own temporary is bounded by computing it 16 rows at a time)
        logits = res.logits
        del res
        targets = torch.full((g, lc), self.pad_id, dtype=torch.long)
        for row, (_, _, c) in enumerate(group):
            targets[row, : len(c) - 1] = torch.tensor(c[1:], dtype=torch.long)
        targets = targets.to(logits.device)
        picked = logits.gather(-1, targets[..., None])[..., 0].float()  # [g, lc]
        logp = picked - torch.cat([b.float().logsumexp(-1) for b in logits.split(16)])  # [g, lc]
        logp = logp.masked_fill(cmask.to(logp.device) == 0, 0.0).sum(-1).cpu()  # [g]
        for row, (r, j, _) in enumerate(group):
            out[chunk[r]][j] += float(logp[row])

    # ------------------------------------------------------------------ self-check

    @torch.no_grad()
    def _shared_prefix_matches(self) -> bool:
        """The shared-prefix path must reproduce plain forwards; checked once at construction."""
        half = self.max_length // 2
        if half < 2:  # no room for a continuation of two tokens: nothing to check on
            return False
        (a, b), _ = self.encode(["a short check sentence, and more", "ok"], [[], []])
        one, two, three = (
            self.ids.tokens(c) for c in (" one two three four", " five", " six seven")
        )
        prefixes = [a[:half], b[:half]]
        options = [[one[:half], two[:half]], [three[:half]]]
        try:
            fast = self.logprobs_ids(prefixes, options)
        except SHARED_PREFIX_ERRORS as err:
            log.warning(
                "%s: multiple choice cannot read the text's key/value cache in place (%s); copying "
                "it per choice instead (same numbers, more memory)",
                type(self.model).__name__,
                err,
            )
            return False
        slow = naive_logprobs_ids(self.model, prefixes, options)
        ok = torch.allclose(
            torch.tensor([v for r in fast for v in r]),
            torch.tensor([v for r in slow for v in r]),
            atol=1e-4,
            rtol=1e-4,
        )
        if not ok:
            log.warning(
                "%s: multiple choice over the in-place key/value cache differs from plain "
                "forwards; copying the cache per choice instead (same numbers, more memory)",
                type(self.model).__name__,
            )
        return ok


def naive_continuation_logprobs(
    model, scorer: ChoiceScorer, texts, continuations
) -> list[list[float]]:
    """Reference: one full forward per (text, continuation), no cache, no padding, full logits."""
    return naive_logprobs_ids(model, *scorer.encode(texts, continuations))


def naive_logprobs_ids(model, prefixes, continuations) -> list[list[float]]:
    """:func:`naive_continuation_logprobs` on token ids."""
    device = next(model.parameters()).device
    out = []
    with torch.no_grad():
        for p, cs in zip(prefixes, continuations, strict=True):
            row = []
            for c in cs:
                if not c:
                    row.append(0.0)
                    continue
                seq = torch.tensor([list(p) + list(c)], device=device)
                logp = model(input_ids=seq).logits[0].float().log_softmax(-1)  # [L, V]
                idx = torch.arange(len(p) - 1, len(p) + len(c) - 1, device=device)
                row.append(float(logp[idx, torch.tensor(c, device=device)].sum()))
            out.append(row)
    return out
