"""In-process Hugging Face targets: masked and causal LMs scored in batched forwards.

What makes scoring fast, and where each happens:

* identical prompts are scored once (:meth:`HFTarget.score`);
* all P x N (prompt, example) pairs go through batched forwards, sorted by length so that little
  padding is computed, with the number of rows per forward chosen from a memory budget;
* only the final hidden state at the mask / last position is read, and only the C verbalizer rows
  of the output layer are multiplied (:class:`_VerbalizerHead`);
* for a causal target whose template puts the prompt after the input (``"{x} {prompt}"``), the
  input's key/value cache is computed once per example and shared by every prompt
  (:meth:`HFTarget._score_cached`): the prompt tokens attend to that one copy through an attention
  function registered with transformers (:mod:`.shared_prefix`), so the cache is
  never repeated per prompt, and ``memory_budget_mb`` counts it once.

Every path gives the same numbers as one plain forward per example with full logits (the tests
check this to 1e-5).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from typing import Literal

import torch
import torch.nn.functional as F

from hardprompts.config import TargetConfig
from hardprompts.errors import TargetError
from hardprompts.modeling import load_lm, load_tokenizer, model_max_length, placement
from hardprompts.targets.shared_prefix import (
    SharedPrefix,
    activation_bytes_per_token,
    attention_implementation,
    cache_bytes_per_token,
    check_calls,
)
from hardprompts.targets.usage import TargetUsage
from hardprompts.templates import Encoded, Kind, Template, TemplateEncoder, verbalizer_ids

log = logging.getLogger(__name__)
Progress = Callable[[int], None]

# On CPU a forward of many more tokens than this runs slower per token (cache effects): with a
# 6 x 768 RoBERTa, 400-3,200 tokens per forward ran at the same speed and one forward of all 256
# pairs 1.6x slower (`benchmarks/score_throughput.py --kinds masked --tokens-per-batch 0`).
CPU_TOKENS_PER_BATCH = 2048


class _VerbalizerHead(torch.nn.Module):
    """Maps final hidden states [B, d] to the C verbalizer logits [B, C] without the V-wide matmul.

    Supported output layers: a plain linear LM head (GPT-2, Llama, OPT, ...) and RoBERTa's and BERT's
    transform + decoder heads. Anything else returns None from :meth:`build`, and the target computes
    full logits at the scored position instead (correct, slower; a warning says so).
    """

    def __init__(
        self, transform: Callable[[torch.Tensor], torch.Tensor] | None, weight, bias
    ) -> None:
        super().__init__()
        self.transform = transform
        self.register_buffer("weight", weight.detach().clone())  # [C, d]
        self.register_buffer("bias", None if bias is None else bias.detach().clone())  # [C]

    @classmethod
    def build(cls, model, kind: Kind, ids: list[int]) -> _VerbalizerHead | None:
        idx = torch.tensor(ids, device=model.device)
        if kind == "causal":
            out = model.get_output_embeddings()
            if not isinstance(out, torch.nn.Linear):
                return None
            bias = out.bias[idx] if out.bias is not None else None
            return cls(None, out.weight[idx], bias)
        head = getattr(model, "lm_head", None)
        if head is not None and all(hasattr(head, a) for a in ("dense", "layer_norm", "decoder")):
            # RobertaLMHead: decoder(layer_norm(gelu(dense(h))))
            def transform(h: torch.Tensor) -> torch.Tensor:
                return head.layer_norm(F.gelu(head.dense(h)))

            bias = (
                head.decoder.bias if head.decoder.bias is not None else getattr(head, "bias", None)
            )
            return cls(transform, head.decoder.weight[idx], None if bias is None else bias[idx])
        cls_head = getattr(getattr(model, "cls", None), "predictions", None)
        if cls_head is not None and hasattr(cls_head, "transform") and hasattr(cls_head, "decoder"):
            bias = (
                cls_head.decoder.bias
                if cls_head.decoder.bias is not None
                else getattr(cls_head, "bias", None)
            )
            return cls(
                cls_head.transform,
                cls_head.decoder.weight[idx],
                None if bias is None else bias[idx],
            )
        return None

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        if self.transform is not None:
            hidden = self.transform(hidden)
        logits = hidden @ self.weight.T  # [B, C]
        return logits if self.bias is None else logits + self.bias


class HFTarget:
    """A frozen Hugging Face LM scored on (prompt, input) pairs.

    Args:
        model: a masked or causal LM (eval mode; gradients are not needed).
        tokenizer: its tokenizer.
        kind: ``masked`` or ``causal``.
        template: the task template (see :mod:`hardprompts.templates`).
        verbalizers: one single-token label word per class.
        max_length: longest sequence (default: the model's limit).
        batch_size: rows per forward (default: from ``memory_budget_mb``).
        memory_budget_mb: activation / cache memory one forward may use.
    """

    def __init__(
        self,
        model,
        tokenizer,
        kind: Kind,
        template: str,
        verbalizers: Sequence[str],
        *,
        max_length: int | None = None,
        batch_size: int | None = None,
        memory_budget_mb: int = 2048,
        tokens_per_batch: int | None | Literal["auto"] = "auto",
    ) -> None:
        self.model = model
        self.tokenizer = tokenizer
        self.kind = kind
        self.verbalizers = list(verbalizers)
        self.verbalizer_ids = verbalizer_ids(tokenizer, self.verbalizers)
        self.template = Template.parse(template, kind)
        self.max_length = max_length or model_max_length(model, tokenizer)
        self.encoder = TemplateEncoder(tokenizer, self.template, kind, self.max_length)
        self.batch_size = batch_size
        self.memory_budget = memory_budget_mb * 2**20
        if tokens_per_batch == "auto":  # CPU caches favour small forwards; GPUs favour big ones
            tokens_per_batch = CPU_TOKENS_PER_BATCH if self.device.type == "cpu" else None
        self.tokens_per_batch = tokens_per_batch
        self.pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
        self._choice_scorer = self._generator = None  # built on first use
        self.head = None  # no label words (generation, multiple choice): score() is not used
        if self.verbalizer_ids:
            self.head = _VerbalizerHead.build(model, kind, self.verbalizer_ids)
            if self.head is not None and not self._head_matches_full_logits():
                self.head = None
        if self.head is None and self.verbalizer_ids:
            log.warning(
                "%s: no verbalizer-row head for this architecture; computing full logits at the "
                "scored position (correct but slower)",
                type(model).__name__,
            )
        # What the run cost: forwards and tokens (padding included) of this target's scoring only;
        # the model may be shared (e.g. with a policy), so the hook counts only inside score().
        self.usage = TargetUsage()
        self._scoring = False
        model.base_model.register_forward_pre_hook(self._count_forward, with_kwargs=True)
        self.shares_prefix = (
            kind == "causal" and self.template.prompt_after_input and self._shared_prefix_matches()
        )

    def _count_forward(self, module, args, kwargs) -> None:
        if self._scoring:
            ids = kwargs.get("input_ids", args[0] if args else None)
            self.usage.add(requests=1, prompt_tokens=ids.numel() if ids is not None else 0)

    @classmethod
    def from_config(
        cls, config: TargetConfig, template: str, verbalizers: Sequence[str], kind: Kind
    ) -> HFTarget:
        """Load the model named by ``config`` and build the target."""
        tokenizer = load_tokenizer(config.model, trust_remote_code=config.trust_remote_code)
        model = load_lm(
            config.model,
            kind,
            dtype=config.dtype,
            trust_remote_code=config.trust_remote_code,
            **placement(config),
        )
        return cls(
            model,
            tokenizer,
            kind,
            template,
            verbalizers,
            max_length=config.max_length,
            batch_size=config.batch_size,
            memory_budget_mb=config.memory_budget_mb,
            tokens_per_batch=config.tokens_per_batch,
        )

    @property
    def num_classes(self) -> int:
        return len(self.verbalizers)

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    # ------------------------------------------------------------------ public API

    @torch.no_grad()
    def score(
        self, prompts: Sequence[str], texts: Sequence[str], progress: Progress | None = None
    ) -> torch.Tensor:
        """Class logits [P, N, C] (float32, CPU) of every prompt on every input.

        ``progress``, if given, is called with the number of (prompt, input) pairs just finished.
        """
        keys = [p.strip() for p in prompts]
        unique = list(dict.fromkeys(keys))  # identical prompts are scored once
        self._scoring = True
        try:
            if self.shares_prefix:
                logits = self._score_cached(unique, list(texts), progress)
            else:
                logits = self._score_pairs(
                    unique,
                    list(texts),
                    [(p, n) for p in range(len(unique)) for n in range(len(texts))],
                    progress,
                )
        finally:
            self._scoring = False
        self.usage.add(pairs=len(unique) * len(texts))
        where = {p: i for i, p in enumerate(unique)}
        return logits[[where[k] for k in keys]]

    def encode(self, text: str, prompt: str) -> Encoded:
        """Token ids and scored position of one pair (what every path computes on)."""
        return self.encoder.encode(text, prompt)

    # ------------------------------------------------------------------ batching

    def _bytes_per_token(self, length: int) -> int:
        return activation_bytes_per_token(self.model, length)

    def _rows_for(self, length: int) -> int:
        """Sequences of ``length`` tokens per forward: memory budget, then the CPU token cap."""
        if self.batch_size:
            return self.batch_size
        per_row = length * self._bytes_per_token(length)
        rows = self.memory_budget // max(per_row, 1)
        if self.tokens_per_batch:
            rows = min(rows, self.tokens_per_batch // max(length, 1))
        return max(1, rows)

    def _class_logits(self, out, positions: torch.Tensor) -> torch.Tensor:
        rows = torch.arange(positions.shape[0], device=positions.device)
        if self.head is not None:
            return self.head(out.last_hidden_state[rows, positions])
        return out.logits[rows, positions][:, self.verbalizer_ids]

    def _forward(self, **inputs):
        if self.head is not None:
            return self.model.base_model(**inputs)
        return self.model(**inputs)

    def _score_pairs(
        self,
        prompts: list[str],
        texts: list[str],
        pairs: list[tuple[int, int]],
        progress: Progress | None,
        out: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Score (prompt index, text index) pairs with whole-sequence forwards into ``out``."""
        if out is None:
            out = torch.empty(len(prompts), len(texts), self.num_classes)
        encoded = [(p, n, self.encoder.encode(texts[n], prompts[p])) for p, n in pairs]
        encoded.sort(key=lambda item: len(item[2].ids), reverse=True)
        start = 0
        while start < len(encoded):
            rows = self._rows_for(len(encoded[start][2].ids))
            chunk = encoded[start : start + rows]
            start += len(chunk)
            ids, mask = self._pad([e.ids for _, _, e in chunk])
            positions = torch.tensor([e.position for _, _, e in chunk], device=self.device)
            logits = (
                self._class_logits(self._forward(input_ids=ids, attention_mask=mask), positions)
                .float()
                .cpu()
            )
            for (p, n, _), row in zip(chunk, logits, strict=True):
                out[p, n] = row
            if progress:
                progress(len(chunk))
        return out

    def _pad(self, seqs: list[list[int]]) -> tuple[torch.Tensor, torch.Tensor]:
        width = max(len(s) for s in seqs)
        ids = torch.full((len(seqs), width), self.pad_id, dtype=torch.long)
        mask = torch.zeros((len(seqs), width), dtype=torch.long)
        for i, s in enumerate(seqs):
            ids[i, : len(s)] = torch.tensor(s, dtype=torch.long)
            mask[i, : len(s)] = 1
        return ids.to(self.device), mask.to(self.device)

    # ------------------------------------------------------------------ causal, prompt after input

    def _cache_bytes_per_token(self) -> int:
        """Bytes of key/value cache one token holds over all layers (grouped-query heads counted)."""
        return cache_bytes_per_token(self.model)

    def _score_cached(
        self, prompts: list[str], texts: list[str], progress: Progress | None
    ) -> torch.Tensor:
        """Causal target, prompt after input: one prefix forward per input, its cache shared by all prompts.

        The memory budget holds, at once, the prefixes' key/value cache (one copy, however many
        prompts attend to it) and the activations of one forward: a prefix forward, or a suffix
        forward of several prompts per prefix.
        """
        out = torch.empty(len(prompts), len(texts), self.num_classes)
        prefixes = [self.encoder.split_at_prompt(x, None) for x in texts]
        suffixes = [self.encoder.split_at_prompt(None, p) for p in prompts]
        longest = max(len(s) for s in suffixes)
        # A sliding-window cache keeps only the last window - 1 keys of a prefix: longer prefixes
        # cannot be shared whole.
        window = getattr(self.model.config, "sliding_window", None) or self.max_length + 1
        fits = [
            n
            for n in range(len(texts))
            if 0 < len(prefixes[n]) < window and len(prefixes[n]) + longest <= self.max_length
        ]
        too_long = sorted(set(range(len(texts))) - set(fits))
        if too_long:  # inputs that need truncation (or exceed the window) take the whole-sequence
            # path (same numbers)
            pairs = [(p, n) for p in range(len(prompts)) for n in too_long]
            self._score_pairs(prompts, texts, pairs, progress, out)
        fits.sort(key=lambda n: len(prefixes[n]), reverse=True)
        cache_per_token = self._cache_bytes_per_token()
        start = 0
        while start < len(fits):
            lp = len(prefixes[fits[start]])
            n_rows = self._rows_for(lp)
            if not self.batch_size:  # the cache, and one suffix row per prefix, must fit too
                per_prefix = lp * (cache_per_token + self._bytes_per_token(lp))
                per_prefix += longest * self._bytes_per_token(lp + longest)
                n_rows = min(n_rows, self.memory_budget // per_prefix)
            n_rows = max(1, min(n_rows, len(fits) - start))
            chunk = fits[start : start + n_rows]
            start += len(chunk)
            self._score_suffixes(
                [prefixes[n] for n in chunk], chunk, suffixes, out, cache_per_token, progress
            )
        return out

    def _score_suffixes(
        self, prefixes, example_ids, suffixes, out, cache_bytes_per_token, progress
    ) -> None:
        """Score every suffix after each of ``prefixes``: one prefix forward, then suffix forwards
        whose attention reads the prefixes' keys and values in place (:mod:`.shared_prefix`).
        """
        ids, mask = self._pad(prefixes)  # right-padded: real tokens at positions 0 .. len - 1
        lengths = mask.sum(1)  # [n]
        base = self.model.base_model if self.head is not None else self.model
        pre = base(input_ids=ids, attention_mask=mask, use_cache=True)
        cache = pre.get("cache") if pre.get("cache") is not None else pre.get("past_key_values")
        keys = [layer.keys for layer in cache.layers]  # each [n, H_kv, Lp, hd], held once
        values = [layer.values for layer in cache.layers]
        if any(k.shape[-2] != ids.shape[1] for k in keys):
            raise RuntimeError(
                f"{type(self.model).__name__}: the cache did not keep every prefix key"
            )
        bare = self._class_logits(pre, lengths - 1).float().cpu()  # the prefix alone (empty suffix)
        del pre, cache
        with_suffix = [p for p, s in enumerate(suffixes) if s]
        for p, s in enumerate(suffixes):
            if not s:
                out[p, example_ids] = bare
        if progress and len(with_suffix) < len(suffixes):
            progress(len(example_ids) * (len(suffixes) - len(with_suffix)))
        if not with_suffix:
            return
        n, lp = ids.shape
        longest = max(len(suffixes[p]) for p in with_suffix)
        if self.batch_size:
            rows = self.batch_size
        else:  # what the budget leaves beside the shared cache, one suffix row at a time
            held = n * lp * cache_bytes_per_token
            rows = (self.memory_budget - held) // (longest * self._bytes_per_token(lp + longest))
            if self.tokens_per_batch:
                rows = min(rows, self.tokens_per_batch // longest)
        p_rows = max(1, rows // n)
        key_pos = torch.arange(lp, device=self.device).expand(n, lp)
        for start in range(0, len(with_suffix), p_rows):
            group = with_suffix[start : start + p_rows]
            g = len(group)
            s_ids, s_mask = self._pad([suffixes[p] for p in group])  # [g, Ls]
            ls = s_ids.shape[1]
            # Rows are (example, prompt) pairs in example-major order: row = i * g + j.
            rows = torch.arange(n, device=self.device).repeat_interleave(g)
            shared = SharedPrefix(keys, values, mask.bool(), key_pos, rows)
            positions = lengths.repeat_interleave(g)[:, None] + torch.arange(
                ls, device=self.device
            )  # [n*g, Ls]: the prompt's positions follow its prefix
            shared.step(positions, s_mask.bool().repeat(n, 1))
            with attention_implementation(self.model):
                res = self._forward(
                    input_ids=s_ids.repeat(n, 1),
                    attention_mask=s_mask.repeat(n, 1),  # unused by our attention; no pad warning
                    position_ids=positions,
                    use_cache=False,
                    shared_prefix=shared,
                )
            check_calls(self.model, shared)
            last = s_mask.sum(1).repeat(n) - 1
            logits = self._class_logits(res, last).float().cpu().view(n, g, -1)
            for j, p in enumerate(group):
                out[p, example_ids] = logits[:, j]
            if progress:
                progress(n * g)

    # ------------------------------------------------------------------ choices and generation

    def continuation_logprobs(
        self,
        texts: Sequence[str],
        continuations: Sequence[Sequence[str]],
        progress: Progress | None = None,
    ) -> list[list[float]]:
        """For each text, the summed log-probability of each of its continuations given the text
        (each text's cache computed once and shared by its choices: :mod:`.choices`)."""
        scorer = self._choices()  # built (and self-checked) before counting target work
        self._scoring = True  # counted as target work (usage)
        try:
            out = scorer.logprobs(texts, continuations, progress)
        finally:
            self._scoring = False
        self.usage.add(pairs=len(texts))  # one (prompt, input) pair per text, all its choices
        return out

    def _choices(self):
        if self._choice_scorer is None:
            from hardprompts.targets.choices import ChoiceScorer

            self._choice_scorer = ChoiceScorer(
                self._causal("score choices"), self.tokenizer, max_length=self.max_length,
                tokens_per_batch=self.tokens_per_batch,
                memory_budget_mb=max(1, self.memory_budget // 2**20),
            )  # fmt: skip
        return self._choice_scorer

    def generate(self, texts: Sequence[str], **kwargs) -> list[list[str]]:
        """For each text, ``num_samples`` continuations cut before ``stop`` (contract 2; the
        arguments of :meth:`hardprompts.targets.generation.TextGenerator.generate`)."""
        generator = self._text_generator()  # built (and self-checked) before counting
        self._scoring = True  # counted as target work (usage)
        before = generator.new_tokens
        try:
            out = generator.generate(texts, **kwargs)
        finally:
            self._scoring = False
        # one (prompt, input) pair per text, however many samples it was given
        self.usage.add(pairs=len(texts), completion_tokens=generator.new_tokens - before)
        return out

    def _text_generator(self):
        if self._generator is None:
            from hardprompts.targets.generation import TextGenerator

            self._generator = TextGenerator(
                self._causal("generate"), self.tokenizer, max_length=self.max_length,
                tokens_per_batch=self.tokens_per_batch,
                memory_budget_mb=max(1, self.memory_budget // 2**20),
            )  # fmt: skip
        return self._generator

    def _causal(self, what: str):
        if self.kind != "causal":
            raise TargetError(
                f"a masked-LM target cannot {what}; use a causal target (target.kind: causal)"
            )
        return self.model

    # ------------------------------------------------------------------ self-check

    @torch.no_grad()
    def _head_matches_full_logits(self) -> bool:
        """The verbalizer-row head must reproduce the model's own logits; checked once at load."""
        enc = self.encoder.encode(dict.fromkeys(self.template.fields, "a short check"), "a prompt")
        ids = torch.tensor([enc.ids], device=self.device)
        full = self.model(input_ids=ids).logits[0, enc.position, self.verbalizer_ids].float()
        hidden = self.model.base_model(input_ids=ids).last_hidden_state[0, enc.position]
        mine = self.head(hidden[None])[0].float()
        ok = torch.allclose(full, mine, atol=1e-4, rtol=1e-4)
        if not ok:
            log.warning("verbalizer-row head differs from the model's logits; using full logits")
        return ok

    @torch.no_grad()
    def _shared_prefix_matches(self) -> bool:
        """The shared-prefix path must reproduce whole-sequence forwards; checked once at load."""
        fields = self.template.fields
        texts = [dict.fromkeys(fields, "a short check sentence"), dict.fromkeys(fields, "ok")]
        prompts = ["a prompt", "two more words"]
        try:
            cached = self._score_cached(prompts, texts, None)
        except (
            NotImplementedError,
            RuntimeError,
            AttributeError,
            KeyError,
            TypeError,
            ValueError,
        ) as err:
            log.warning(
                "%s: cannot share the input's key/value cache across prompts (%s); scoring whole "
                "sequences instead (correct but slower)",
                type(self.model).__name__,
                err,
            )
            return False
        pairs = [(p, n) for p in range(len(prompts)) for n in range(len(texts))]
        plain = self._score_pairs(prompts, texts, pairs, None)
        ok = torch.allclose(cached, plain, atol=1e-4, rtol=1e-4)
        if not ok:
            log.warning(
                "%s: the shared key/value cache path differs from whole-sequence forwards; "
                "scoring whole sequences instead (correct but slower)",
                type(self.model).__name__,
            )
        return ok
