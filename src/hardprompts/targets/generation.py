"""Batched text generation by a causal LM: greedy or sampled, with a stop string.

:class:`TextGenerator` implements contract 2 of the targets (``generate``): for each
already-templated text, ``num_samples`` continuations, each cut before ``stop`` and without it.

* Texts are batched, left-padded so that every text ends at the same column, and prefilled in one
  forward (:func:`hardprompts.targets.choices.prefill`); the prefix cache is computed once per
  text and copied for its ``num_samples`` rows, never recomputed.
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

from collections.abc import Callable, Sequence

import torch

from hardprompts.errors import TargetError
from hardprompts.modeling import cache_keyword, choose_next, output_cache
from hardprompts.targets.choices import cache_rows, kv_layers, prefill
from hardprompts.templates import special_tokens_around

Progress = Callable[[int], None]
__all__ = ["TextGenerator", "choose_next"]  # choose_next lives in modeling (the agent uses it too)


class TextGenerator:
    """Greedy or sampled continuations of texts by a frozen causal LM (see the module docstring).

    Args:
        model: a causal LM in eval mode.
        tokenizer: its tokenizer.
        max_length: longest sequence (text + new tokens) the model accepts.
        tokens_per_batch: most prefix tokens of one prefill forward (rows of the decoding batch are
            those texts times ``num_samples``); None = no cap.
    """

    def __init__(self, model, tokenizer, *, max_length: int, tokens_per_batch: int | None = 2048):
        self.model = model
        self.tokenizer = tokenizer
        self.max_length = max_length
        self.tokens_per_batch = tokens_per_batch
        self.lead, _ = special_tokens_around(tokenizer)
        start = (
            tokenizer.bos_token_id if tokenizer.bos_token_id is not None else tokenizer.eos_token_id
        )
        self.start_id = start
        self.pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else (start or 0)
        eos = tokenizer.eos_token_id
        self.eos_ids = {eos} if eos is not None else set()
        #: Tokens generated so far, over all calls (the target's usage reads it).
        self.new_tokens = 0

    def encode(self, text: str) -> list[int]:
        """Ids of one text: leading special tokens, then the text (BOS/EOS alone when empty)."""
        ids = self.lead + (
            self.tokenizer(text, add_special_tokens=False)["input_ids"] if text else []
        )
        if not ids:
            if self.start_id is None:
                raise TargetError(
                    "an empty text with no BOS/EOS token leaves nothing to condition on"
                )
            ids = [self.start_id]
        return ids

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

    def _decode_chunk(self, prefixes, num_samples, max_new_tokens, stop, sampling) -> list[str]:
        device = next(self.model.parameters()).device
        pre = prefill(self.model, prefixes, self.pad_id)
        rows = torch.arange(len(prefixes), device=device).repeat_interleave(num_samples)  # [R]
        kv, mask = pre.kv, pre.mask.index_select(0, rows)
        positions = pre.lengths.index_select(0, rows)  # position of each row's next token
        logits = pre.logits.index_select(0, rows)  # [R, V]
        cache = cache_rows(kv, rows)
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
                text = self._text(generated[r], None)
                if stop is not None and stop in text:
                    texts[r] = text[: text.index(stop)]
                    continue
                keep.append(b)
            if not keep or step == max_new_tokens - 1:
                break
            sel = torch.tensor(keep, device=device)
            if len(keep) < len(active):  # ended rows leave the batch
                cache = cache_rows(kv_layers(cache), sel)
                mask, positions, nxt = mask[sel], positions[sel], nxt[keep]
                active = [active[b] for b in keep]
            mask = torch.cat([mask, torch.ones_like(mask[:, :1])], 1)
            res = self.model(
                input_ids=nxt[:, None].to(device),
                attention_mask=mask,
                position_ids=positions[:, None],
                use_cache=True,
                **{cache_keyword(self.model): cache},
            )
            cache = output_cache(res)
            positions = positions + 1
            logits = res.logits[:, -1]
        self.new_tokens += sum(len(g) for g in generated)
        return [
            t if t is not None else self._text(g, stop)
            for t, g in zip(texts, generated, strict=True)
        ]

    def _text(self, ids: list[int], stop: str | None) -> str:
        text = self.tokenizer.decode(ids, skip_special_tokens=True)
        return text[: text.index(stop)] if stop is not None and stop in text else text
