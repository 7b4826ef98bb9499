"""Batched text generation by a causal LM: greedy or sampled, with a stop string.

:class:`TextGenerator` implements contract 2 of the targets (``generate``): for each
already-templated text, ``num_samples`` continuations, each cut before ``stop`` and without it
(the first ``stop`` after the continuation's leading whitespace: :func:`cut_at_stop`).

* Texts are batched, left-padded so that every text ends at the same column, and prefilled in one
  forward (:func:`hardprompts.targets.choices.prefill`); the prefix cache is computed once per
  text and read in place by its ``num_samples`` rows (:mod:`.shared_prefix`): memory grows with
  context + rows × new tokens, not rows × context. The rows' new tokens are kept in buffers
  written in place. Models whose attention cannot be routed there (the self-check at construction
  says so) copy the text's cache into each row instead (same tokens, rows × context memory).
* Texts per batch: at most ``tokens_per_batch`` prefix tokens, and what ``memory_budget_mb``
  holds (the texts' cache once, each row's new tokens and logits; a copy of the cache per row on
  the fallback; while prefilling, the texts' cache and the forward's activations); at least one
  text.
* Decoding is incremental over the key/value cache, one token per step for all rows at once; rows
  that have ended (EOS, or ``stop`` in their decoded text) leave the batch.
* Greedy (``do_sample=False``) takes the argmax (the first of tied tokens). Sampling draws from
  softmax(logits / temperature), restricted to the top-k tokens when ``top_k`` is set, with a CPU
  ``torch.Generator`` seeded by ``seed`` (the global RNG when ``seed`` is None). The same seed and
  the same call give the same samples.

The text is tokenised as given, with the tokenizer's leading special tokens (BOS) and nothing
after it; the continuation is decoded without special tokens and returned as decoded (a leading
space included: ``"Output:"`` is typically continued by ``" great"``). Write templates that end
without a trailing space, which byte-level BPE vocabularies attach to the next word.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence

import torch

from hardprompts.errors import TargetError
from hardprompts.modeling import cache_keyword, choose_next, output_cache
from hardprompts.targets.choices import (
    SHARED_PREFIX_ERRORS,
    Prefill,
    TextIds,
    cache_rows,
    prefill,
    shared_prefix,
)
from hardprompts.targets.shared_prefix import (
    activation_bytes_per_token,
    attention_implementation,
    cache_bytes_per_token,
    check_calls,
)

log = logging.getLogger(__name__)
Progress = Callable[[int], None]
# choose_next lives in modeling (the agent uses it too)
__all__ = ["TextGenerator", "choose_next", "cut_at_stop"]


class TextGenerator:
    """Greedy or sampled continuations of texts by a frozen causal LM (see the module docstring).

    Args:
        model: a causal LM in eval mode.
        tokenizer: its tokenizer.
        max_length: longest sequence (text + new tokens) the model accepts.
        tokens_per_batch: most prefix tokens of one prefill forward (rows of the decoding batch are
            those texts times ``num_samples``); None = no cap.
        memory_budget_mb: most memory (MiB) the decoding of one batch of texts may take beside
            the model (see the module docstring).
        share_prefix: rows read their text's cache in place (True), or each gets a copy (False);
            None = in place when a self-check at construction finds it gives the logits of plain
            forwards on this model, else copies (with a warning).
    """

    def __init__(
        self,
        model,
        tokenizer,
        *,
        max_length: int,
        tokens_per_batch: int | None = 2048,
        memory_budget_mb: int = 2048,
        share_prefix: bool | None = None,
    ):
        self.model = model
        self.memory_budget = memory_budget_mb * 2**20
        self.tokenizer = tokenizer
        self.max_length = max_length
        self.tokens_per_batch = tokens_per_batch
        self.ids = TextIds(tokenizer)
        self.pad_id = self.ids.pad_id
        eos = tokenizer.eos_token_id
        self.eos_ids = {eos} if eos is not None else set()
        self.shares_prefix = True if share_prefix is None else share_prefix
        if share_prefix is None:
            self.shares_prefix = self._shared_prefix_matches()
        #: Tokens generated so far, over all calls (the target's usage reads it).
        self.new_tokens = 0

    def encode(self, text: str) -> list[int]:
        """Ids of one text: leading special tokens, then the text (BOS/EOS alone when empty)."""
        return self.ids.prefix(text)

    @torch.no_grad()
    def generate(
        self,
        texts: Sequence[str],
        *,
        num_samples: int = 1,
        max_new_tokens: int = 32,
        stop: str | None = None,
        do_sample: bool = False,
        top_k: int | None = None,
        temperature: float = 1.0,
        seed: int | None = None,
        progress: Progress | None = None,
    ) -> list[list[str]]:
        """For each text, ``num_samples`` continuations cut before ``stop`` (and without it)."""
        if num_samples < 1 or max_new_tokens < 1:
            raise ValueError("num_samples and max_new_tokens must be at least 1")
        if stop == "":
            raise ValueError("stop must be a non-empty string or None")
        prefixes = [self.encode(t) for t in texts]
        for i, p in enumerate(prefixes):
            if len(p) + max_new_tokens > self.max_length:
                raise TargetError(
                    f"text {i} takes {len(p)} tokens and up to {max_new_tokens} new ones, over the "
                    f"target's limit of {self.max_length}; shorten the input or max_new_tokens"
                )
        generator = None
        if do_sample:
            generator = torch.Generator().manual_seed(seed) if seed is not None else None
        out: list[list[str]] = [[""] * num_samples for _ in texts]
        order = sorted(range(len(texts)), key=lambda i: len(prefixes[i]), reverse=True)
        start = 0
        while start < len(order):
            width = len(prefixes[order[start]])
            n = len(order) if not self.tokens_per_batch else max(1, self.tokens_per_batch // width)
            n = min(n, self._texts_fitting(width, num_samples, max_new_tokens))
            chunk = order[start : start + n]
            start += len(chunk)
            decoded = self._decode_chunk(
                [prefixes[i] for i in chunk], num_samples, max_new_tokens, stop,
                dict(do_sample=do_sample, temperature=temperature, top_k=top_k, generator=generator),
            )  # fmt: skip
            for r, i in enumerate(chunk):
                out[i] = decoded[r * num_samples : (r + 1) * num_samples]
            if progress:
                progress(len(chunk))
        return out

    def _texts_fitting(self, width: int, num_samples: int, max_new_tokens: int) -> int:
        """Texts of ``width`` tokens whose decoding fits the memory budget (at least one)."""
        per_token = cache_bytes_per_token(self.model)
        vocab = self.model.get_output_embeddings().weight.shape[0]
        logits = num_samples * vocab * 4 * 3  # the logits, and choose_next's copies of them
        if self.shares_prefix:  # the text's cache once, each row's new tokens
            decoding = (width + num_samples * max_new_tokens) * per_token + logits
        else:  # each row its own copy of the cache, and its new tokens
            decoding = num_samples * (width + max_new_tokens) * per_token + logits
        # the prefill forward: the text's cache and the forward's activations
        prefilling = width * (per_token + activation_bytes_per_token(self.model, width))
        return max(1, self.memory_budget // max(decoding, prefilling))

    def _decode_chunk(self, prefixes, num_samples, max_new_tokens, stop, sampling) -> list[str]:
        device = next(self.model.parameters()).device
        pre = prefill(self.model, prefixes, self.pad_id, self.tokens_per_batch)
        rows = torch.arange(len(prefixes), device=device).repeat_interleave(num_samples)  # [R]
        positions = pre.lengths.index_select(0, rows)  # position of each row's next token
        logits = pre.logits.index_select(0, rows)  # [R, V]
        state = (
            _SharedCache(self.model, pre, rows, max_new_tokens - 1)
            if self.shares_prefix
            else _CopiedCache(self.model, pre, rows)
        )
        del pre
        total = len(rows)
        generated: list[list[int]] = [[] for _ in range(total)]
        texts: list[str | None] = [None] * total  # set when a row has ended
        active = list(range(total))  # output row of each batch row
        for step in range(max_new_tokens):
            nxt = choose_next(logits, **sampling)  # [len(active)]
            keep = []
            for b, r in enumerate(active):
                tok = int(nxt[b])
                if tok in self.eos_ids:
                    texts[r] = self._text(generated[r], stop)
                    continue
                generated[r].append(tok)
                text, stopped = cut_at_stop(self._text(generated[r], None), stop)
                if stopped:
                    texts[r] = text
                    continue
                keep.append(b)
            if not keep or step == max_new_tokens - 1:
                break
            if len(keep) < len(active):  # ended rows leave the batch
                sel = torch.tensor(keep, device=device)
                state.keep(sel)
                positions, nxt = positions[sel], nxt[keep]
                active = [active[b] for b in keep]
            logits = state.forward(nxt.to(device), positions)
            positions = positions + 1
        self.new_tokens += sum(len(g) for g in generated)
        return [
            t if t is not None else self._text(g, stop)
            for t, g in zip(texts, generated, strict=True)
        ]

    def _text(self, ids: list[int], stop: str | None) -> str:
        return cut_at_stop(self.tokenizer.decode(ids, skip_special_tokens=True), stop)[0]

    # ------------------------------------------------------------------ self-check

    @torch.no_grad()
    def _shared_prefix_matches(self) -> bool:
        """Decoding over the in-place cache must give the logits of plain forwards over the whole
        sequence (two texts, two rows each, a row dropped between steps); checked once."""
        half = self.max_length // 2
        feed = self.ids.tokens(" one two three")
        if half < 2 or len(feed) < 2:
            return False
        device = next(self.model.parameters()).device
        prefixes = [
            self.encode("a short check sentence, and more")[:half],
            self.encode("ok")[:half],
        ]
        rows = torch.tensor([0, 0, 1, 1], device=device)
        tokens = [torch.tensor([feed[0], feed[1], feed[1], feed[0]], device=device)]
        tokens.append(tokens[0][[0, 2, 3]].flip(0))  # step 2: rows 0, 2, 3 (row 1 ended)
        try:
            pre = prefill(self.model, prefixes, self.pad_id)
            state = _SharedCache(self.model, pre, rows, 2)
            positions = pre.lengths.index_select(0, rows)
            got = [state.forward(tokens[0], positions)]
            state.keep(torch.tensor([0, 2, 3], device=device))
            got.append(state.forward(tokens[1], positions[[0, 2, 3]] + 1))
        except SHARED_PREFIX_ERRORS as err:
            log.warning(
                "%s: sampling cannot read the text's key/value cache in place (%s); copying it "
                "per sample instead (same tokens, more memory)",
                type(self.model).__name__,
                err,
            )
            return False
        seqs = [prefixes[int(r)] + [int(tokens[0][b])] for b, r in enumerate(rows)]
        seqs = [seqs[b] + [int(t)] for b, t in zip([0, 2, 3], tokens[1], strict=True)] + seqs
        want = [self.model(input_ids=torch.tensor([s], device=device)).logits[0, -1] for s in seqs]
        ok = torch.allclose(got[0], torch.stack(want[3:]), atol=1e-4, rtol=1e-4)
        ok = ok and torch.allclose(got[1], torch.stack(want[:3]), atol=1e-4, rtol=1e-4)
        if not ok:
            log.warning(
                "%s: sampling over the in-place key/value cache differs from plain forwards; "
                "copying the cache per sample instead (same tokens, more memory)",
                type(self.model).__name__,
            )
        return ok


class _CopiedCache:
    """Decoding state where each row holds its own copy of its text's cache (the fallback)."""

    def __init__(self, model, pre: Prefill, rows: torch.Tensor) -> None:
        self.model = model
        self.cache = cache_rows(pre.kv, rows)
        self.mask = pre.mask.index_select(0, rows)  # [R, Lp + tokens so far]

    def keep(self, sel: torch.Tensor) -> None:
        # Layer by layer, in place (transformers' own row selection): each layer's old rows are
        # freed as its new ones are made, so dropping rows never holds two caches at once
        self.cache.batch_select_indices(sel)
        self.mask = self.mask[sel]

    def forward(self, tokens: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
        """Logits [R, V] after feeding one token per row (at ``positions`` [R])."""
        self.mask = torch.cat([self.mask, torch.ones_like(self.mask[:, :1])], 1)
        res = self.model(
            input_ids=tokens[:, None],
            attention_mask=self.mask,
            position_ids=positions[:, None],
            use_cache=True,
            **{cache_keyword(self.model): self.cache},
        )
        self.cache = output_cache(res)
        return res.logits[:, -1]


class _SharedCache:
    """Decoding state where rows read their text's cache in place (:mod:`.shared_prefix`) and
    keep their own new tokens in buffers of ``capacity`` tokens."""

    def __init__(self, model, pre: Prefill, rows: torch.Tensor, capacity: int) -> None:
        self.model = model
        self.shared = shared_prefix(pre, rows, capacity)

    def keep(self, sel: torch.Tensor) -> None:
        self.shared.keep(sel)

    def forward(self, tokens: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
        """Logits [R, V] after feeding one token per row (at ``positions`` [R])."""
        ones = torch.ones_like(tokens)[:, None]
        self.shared.step(positions[:, None], ones.bool())
        with attention_implementation(self.model):
            res = self.model(
                input_ids=tokens[:, None],
                attention_mask=ones,  # unused by the shared-prefix attention
                position_ids=positions[:, None],
                use_cache=False,
                shared_prefix=self.shared,
            )
        check_calls(self.model, self.shared)
        return res.logits[:, -1]


def cut_at_stop(text: str, stop: str | None) -> tuple[str, bool]:
    """``text`` cut before the first ``stop`` after its leading whitespace, and whether it was.

    The references strip a generated answer before they cut it: StablePrompt generates without a
    stop string and the instruction-induction metrics keep ``answer.strip().split("\\n")[0]``. So
    an answer that starts with a newline (``"\\n alligator"``) is not cut to nothing here either:
    the search for ``stop`` starts after the leading whitespace.
    """
    if stop is None:
        return text, False
    at = text.find(stop, len(text) - len(text.lstrip()))
    return (text, False) if at < 0 else (text[:at], True)
