"""Targets served elsewhere: OpenAI-compatible ``/completions`` and ``/chat/completions`` endpoints.

``kind: openai`` (:class:`OpenAITarget`, vLLM, llama.cpp, TGI, ...) reads **exact** label-word
log-probabilities, in as few requests as the server allows:

1. one request per text (many texts per request) with ``max_tokens: 1, logprobs: k``: the top-k
   log-probabilities of the next token after the text; a label word among them is read there;
2. for the label words that were not, one ``echo`` request of ``text + word`` (again many per
   request), whose last prompt log-probability is ``log p(word | text)``.

Both are the model's own ``log p(word | text)``; differences of them equal differences of the
logits, so accuracy and RLPrompt's gap reward are the same as in-process. A server that returns no
prompt log-probabilities for step 2 is reported, not approximated.

Inputs are truncated as in-process: the template is tokenised segment by segment with the served
model's tokenizer (``target.tokenizer``: loaded locally, or vLLM's ``/tokenize``), the input alone
is cut to fit, and the token ids are sent. Requests are sized by tokens (``tokens_per_request``)
and texts (``texts_per_request``), run ``max_concurrency`` at a time over pooled connections,
retried and failed over as :mod:`hardprompts.targets.served` describes, and finished results are
kept in the run's own request cache (its folder) and in the cross-run one, keyed also by a
fingerprint of what the endpoint serves (``docs/guides/served-cache.md``).

``kind: openai-chat`` (:class:`OpenAIChatTarget`) sends each templated text as one user message.
Generation works as with completions. Classification reads the top log-probabilities of the first
answer token: a label word among them (compared without surrounding spaces) gets its exact
log-probability; a label word that is not gets the lowest log-probability returned, an upper
bound, and the text is counted in ``usage.approximate_scores`` (reported in ``result.json``). A
server that returns no log-probabilities at all stops classification with a message.
"""

from __future__ import annotations

import json
import logging
import math
import os
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import torch

from hardprompts.config import TargetConfig
from hardprompts.errors import ConfigError, TargetError
from hardprompts.targets.served import (
    Endpoints,
    RequestCache,
    ServedTokenizer,
    cache_folder,
    probe_fingerprint,
    request_key,
    run_cache,
    shared_cache,
)
from hardprompts.targets.usage import TargetUsage
from hardprompts.templates import Template, TemplateEncoder, verbalizer_ids

log = logging.getLogger(__name__)
Progress = Callable[[int], None]
Prompt = str | list[int]  # text, or token ids when the served tokenizer is known

# A scoring request generates one token: the served context must hold the text, the label word
# (echo) and that token.
_RESERVED = 2
#: Sampling seeds are sent modulo this (see ``generate``).
SEED_MODULUS = 2**31


def _cut(text: str, stop: str | None) -> str:
    from hardprompts.targets.generation import cut_at_stop

    return cut_at_stop(text, stop or None)[0]


class _ServedBase:
    """What both served targets share: endpoints, usage, cache, concurrency and generation."""

    api = "completions"

    def __init__(
        self,
        base_url: str | Sequence[str],
        model: str,
        template: str,
        verbalizers: Sequence[str],
        *,
        api_key: str | None = None,
        timeout_s: float = 300.0,
        max_retries: int = 5,
        max_concurrency: int = 8,
        texts_per_request: int = 128,
        tokens_per_request: int = 16384,
        top_logprobs: int = 20,
        tokenizer: Any = None,
        max_length: int | None = None,
        request_cache: str | None = None,
        cache_key: str | None = None,
        run_cache: bool = True,
    ) -> None:
        urls = [base_url] if isinstance(base_url, str) else list(base_url)
        self.model = model
        self.template = Template.parse(template, "causal")
        self.verbalizers = list(verbalizers)
        self.usage = TargetUsage()
        self.endpoints = Endpoints(
            urls,
            api_key=api_key,
            timeout_s=timeout_s,
            max_retries=max_retries,
            max_concurrency=max_concurrency,
            usage=self.usage,
        )
        self.max_concurrency = max_concurrency
        self.texts_per_request = texts_per_request
        self.tokens_per_request = tokens_per_request
        self.top_logprobs = top_logprobs
        self._shared_folder = cache_folder(request_cache)
        self.cache_key = cache_key
        self._run_cache_on = run_cache
        self.shared: RequestCache | None = None  # the cross-run cache, opened at the first score
        self.run: RequestCache | None = None  # the run's own, in its folder (use_run_folder)
        self.fingerprint: dict | None = None
        self.shared_note = (
            "" if self._shared_folder is not None else "off (target.request_cache: null)"
        )
        self._shared_ready = False
        self._tokenizer_setting = tokenizer
        self._max_length = max_length
        self._encoder: TemplateEncoder | None = None
        self._encoder_ready = False
        self.tokenizer = tokenizer if not isinstance(tokenizer, str) else None

    @classmethod
    def from_config(
        cls, config: TargetConfig, template: str, verbalizers: Sequence[str]
    ) -> _ServedBase:
        tokenizer: Any = config.tokenizer
        if tokenizer not in (None, "auto"):
            from hardprompts.modeling import load_tokenizer

            tokenizer = load_tokenizer(tokenizer, trust_remote_code=config.trust_remote_code)
        return cls(
            config.base_url or "",
            config.model,
            template,
            verbalizers,
            api_key=os.environ.get(config.api_key_env),
            timeout_s=config.request_timeout_s,
            max_retries=config.max_retries,
            max_concurrency=config.max_concurrency,
            texts_per_request=config.texts_per_request,
            tokens_per_request=config.tokens_per_request,
            top_logprobs=config.top_logprobs,
            tokenizer=tokenizer,
            max_length=config.max_length,
            request_cache=config.request_cache,
            cache_key=config.cache_key,
            run_cache=config.run_cache,
        )

    @property
    def num_classes(self) -> int:
        return len(self.verbalizers)

    @property
    def urls(self) -> list[str]:
        return self.endpoints.urls

    def close(self) -> None:
        self.endpoints.close()
        for cache in (self.shared, self.run):
            if cache is not None:
                cache.close()

    # ------------------------------------------------------------------ request caches

    def use_run_folder(self, run_dir: Any) -> None:
        """Keep this run's requests in ``<run_dir>/requests`` (unless ``target.run_cache`` is off):
        a resumed run, and every evaluation inside the run, finds them there."""
        if self._run_cache_on and self.run is None:
            self.run = run_cache(run_dir, self.model)

    def _fingerprint(self) -> tuple[dict | None, str]:
        return probe_fingerprint(self.endpoints, self.model)

    def _open_shared(self) -> None:
        """Open the cross-run cache of what the endpoint serves now (once; see the module doc)."""
        if self._shared_ready:
            return
        self._shared_ready = True
        if self._shared_folder is None:
            return
        if self.cache_key is None:
            self.fingerprint, why = self._fingerprint()
            if self.fingerprint is None:
                self.shared_note = (
                    f"off: {why}; set target.cache_key to a name for the served model (and change "
                    "it when the model changes) to share answers across runs"
                )
                log.warning("the cross-run request cache is %s", self.shared_note)
                return
        self.shared = shared_cache(
            self._shared_folder, self.model, self.fingerprint, self.cache_key
        )
        if self.run is not None:
            self._check_run_fingerprint()

    def _check_run_fingerprint(self) -> None:
        """Say so when a resumed run's endpoint serves another model than when the run began."""
        assert self.run is not None
        now = self.fingerprint_id
        try:
            began = json.loads(self.run.meta_path.read_text(encoding="utf-8")).get("fingerprint_id")
        except (OSError, ValueError):
            began = None
        if began and now and began != now:
            log.warning(
                "%s now serves %s under the name %r, not the model this run began with (%s); the "
                "run's own request cache keeps that model's answers, so its scores mix the two. "
                "Start a new run (another --out) to score with the new model only",
                self.urls[0], now, self.model, began,
            )  # fmt: skip
        self.run.meta["fingerprint_id"] = now

    @property
    def fingerprint_id(self) -> str | None:
        """The served model's fingerprint (``key:<target.cache_key>`` when one is named)."""
        if self.cache_key is not None:
            return f"key:{self.cache_key}"
        return self.shared.meta.get("fingerprint_id") if self.shared is not None else None

    def cache_report(self) -> dict[str, Any]:
        """For result.json's ``target_usage``: where the caches are and the fingerprint."""
        report: dict[str, Any] = {
            "fingerprint": self.fingerprint_id,
            "run_cache": str(self.run.path)
            if self.run is not None and self.run.path.exists()
            else None,
            "shared_cache": str(self.shared.path) if self.shared is not None else None,
        }
        if self.shared_note:
            report["shared_cache_note"] = self.shared_note
        return report

    def _caches(self) -> list[tuple[str, RequestCache]]:
        """The caches a scored text is looked up in, the run's own first."""
        self._open_shared()
        named = (("run", self.run), ("shared", self.shared))
        return [(name, cache) for name, cache in named if cache is not None]

    def _store(self, key: str, value: Any) -> None:
        for cache in (self.run, self.shared):
            if cache is not None:
                cache.put(key, value)

    # ------------------------------------------------------------------ tokenisation

    def encoder(self) -> TemplateEncoder | None:
        """The template encoder over the served model's tokenizer (None: texts are sent as text)."""
        if self._encoder_ready:
            return self._encoder
        tok, limit = self.tokenizer, self._max_length
        if self._tokenizer_setting == "auto":
            tok = ServedTokenizer.probe(self.endpoints, self.model)
            if tok is None:
                log.warning(
                    "%s has no /tokenize endpoint: texts are sent untruncated; set target.tokenizer to "
                    "the served model's tokenizer to truncate inputs exactly as in-process",
                    self.urls[0],
                )
            elif tok.max_model_len:
                served = int(tok.max_model_len) - _RESERVED
                limit = min(limit, served) if limit else served
        elif tok is not None and not limit:
            tml = getattr(tok, "model_max_length", None)
            if not tml or tml >= 1_000_000:
                raise ConfigError(
                    "target.tokenizer has no model_max_length; set target.max_length to the served "
                    "context length"
                )
            limit = int(tml) - _RESERVED
        if tok is not None:
            self.tokenizer = tok
            self._encoder = TemplateEncoder(tok, self.template, "causal", int(limit or 1 << 30))
        self._encoder_ready = True
        return self._encoder

    def _prompts(self, pairs: list[tuple[str, str]]) -> list[Prompt]:
        """What is sent for each (input, prompt) pair: truncated token ids, or the rendered text."""
        enc = self.encoder()
        if enc is None:
            return [self.template.render(x, p) for x, p in pairs]
        if isinstance(self.tokenizer, ServedTokenizer):  # tokenise distinct segments concurrently
            with ThreadPoolExecutor(self.max_concurrency) as pool:
                list(pool.map(lambda xp: enc.segment_ids(*xp), pairs))
        return [enc.encode(x, p).ids for x, p in pairs]

    def _size(self, prompt: Prompt) -> int:
        return len(prompt) if isinstance(prompt, list) else len(prompt) // 4 + 1

    def _batches(self, items: list[Any], size_of: Callable[[Any], int]) -> list[list[Any]]:
        """Consecutive groups of at most texts_per_request items and tokens_per_request tokens."""
        batches: list[list[Any]] = []
        current: list[Any] = []
        tokens = 0
        for item in items:
            n = size_of(item)
            if current and (
                len(current) >= self.texts_per_request or tokens + n > self.tokens_per_request
            ):
                batches.append(current)
                current, tokens = [], 0
            current.append(item)
            tokens += n
        if current:
            batches.append(current)
        return batches

    def _run(self, fn: Callable[[Any], Any], jobs: list[Any]) -> list[Any]:
        if len(jobs) <= 1:
            return [fn(j) for j in jobs]
        with ThreadPoolExecutor(min(self.max_concurrency, len(jobs))) as pool:
            return list(pool.map(fn, jobs))

    # ------------------------------------------------------------------ scoring

    def score(
        self,
        prompts: Sequence[str],
        texts: Sequence[str],
        progress: Progress | None = None,
    ) -> torch.Tensor:
        """Label-word log-probabilities [P, N, C] (logits up to a per-row constant)."""
        keys = [p.strip() for p in prompts]
        unique = list(dict.fromkeys(keys))
        pairs = [(x, p) for p in unique for x in texts]
        rows: list[list[float] | None] = [None] * len(pairs)
        todo = list(range(len(pairs)))
        self._keys: dict[int, str] = {}
        self._counted: set[int] = set()
        caches = self._caches()
        if caches:  # keyed before tokenising: a cached re-run asks nothing
            enc = self.encoder()
            limit = enc.max_length if enc is not None else None
            todo = []
            hits = {"run": 0, "shared": 0}
            for i, (x, p) in enumerate(pairs):
                key = self._cache_key(self.template.render(x, p), limit)
                found = next(((n, v) for n, c in caches if (v := c.get(key)) is not None), None)
                if found is None:
                    self._keys[i] = key
                    todo.append(i)
                    continue
                rows[i] = self._from_cache(found[1])
                hits[found[0]] += 1
                if found[0] == "shared" and self.run is not None:
                    self.run.put(key, found[1])  # the run folder holds every answer the run used
            if len(todo) < len(pairs):
                self.usage.add(
                    request_cache_hits=len(pairs) - len(todo),
                    run_cache_hits=hits["run"],
                    shared_cache_hits=hits["shared"],
                )
                if progress:
                    progress(len(pairs) - len(todo))
        sent = self._prompts([pairs[i] for i in todo])
        for i, row in self._score_texts(list(zip(todo, sent, strict=True)), progress):
            rows[i] = row
        logits = torch.tensor(rows, dtype=torch.float32).view(
            len(unique), len(texts), self.num_classes
        )
        where = {p: i for i, p in enumerate(unique)}
        return logits[[where[k] for k in keys]]

    def _cache_key(self, text: str, limit: int | None) -> str:
        """Key of one scored text: the API, the templated text, the token limit, the label words."""
        tok = self._tokenizer_setting
        tok = tok if isinstance(tok, str) or tok is None else getattr(tok, "name_or_path", "local")
        return request_key(self.model, self.api, text, limit, tok, self.verbalizers)

    def _from_cache(self, value: Any) -> list[float]:
        return [float(v) for v in value]

    def _score_texts(
        self, items: list[tuple[int, Prompt]], progress: Progress | None
    ) -> list[tuple[int, list[float]]]:
        raise NotImplementedError

    # ------------------------------------------------------------------ generation (contract 2)

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
    ) -> list[list[str]]:
        """For each already-templated text, ``num_samples`` continuations cut before ``stop``.

        Greedy (temperature 0) when ``do_sample`` is False; the one greedy answer is then repeated
        ``num_samples`` times. ``top_k`` is sent as vLLM's ``top_k`` (servers without it may refuse).
        """
        n = num_samples if do_sample else 1
        body: dict[str, Any] = {
            "model": self.model,
            "max_tokens": max_new_tokens,
            "temperature": temperature if do_sample else 0.0,
            "n": n,
        }
        if stop and not stop[0].isspace():
            # A stop string that starts with whitespace (a newline) is cut here, after the
            # answer's leading whitespace (cut_at_stop); a server would cut a leading newline.
            body["stop"] = [stop]
        if seed is not None:
            # 31 bits: llama.cpp reads a 32-bit seed and the tasks draw up to 62-bit ones
            # (vLLM and the hosted APIs take any of these).
            body["seed"] = seed % SEED_MODULUS
        if top_k is not None and do_sample:
            body["extra_body"] = {"top_k": top_k}
        outs = self._generate(list(texts), body)
        if not do_sample:
            outs = [o * num_samples for o in outs]
        return [[_cut(s, stop) for s in o] for o in outs]

    def _generate(self, texts: list[str], body: dict[str, Any]) -> list[list[str]]:
        raise NotImplementedError


class OpenAITarget(_ServedBase):
    """Scores prompts through an OpenAI-compatible ``/completions`` endpoint (see the module doc).

    Args:
        base_url: e.g. ``http://localhost:8000/v1``, or a list of such URLs.
        model: the served model's name.
        template: causal template (the label word follows the text).
        verbalizers: one label word per class (a single token of the served tokenizer).
        api_key: sent as a bearer token when given.
        timeout_s, max_retries, max_concurrency: connection settings (``target.*`` of the config).
        texts_per_request, tokens_per_request: request sizes.
        top_logprobs: k of step 1 (0: always echo).
        tokenizer: a Hugging Face tokenizer of the served model, ``"auto"`` (vLLM's /tokenize) or None.
        max_length: longest text in tokens (default: the served context).
        request_cache: ``target.request_cache``: the cross-run cache's folder (None: off).
        cache_key: ``target.cache_key``: names the served model in place of its fingerprint.
        run_cache: ``target.run_cache``: keep a run's requests in its folder (:meth:`use_run_folder`).
    """

    api = "completions"

    def encoder(self) -> TemplateEncoder | None:
        enc = super().encoder()
        if enc is not None and not isinstance(self.tokenizer, ServedTokenizer):
            verbalizer_ids(self.tokenizer, self.verbalizers)  # single tokens, checked up front
        return enc

    def _score_texts(
        self, items: list[tuple[int, Prompt]], progress: Progress | None
    ) -> list[tuple[int, list[float]]]:
        results: dict[int, list[float | None]] = {i: [None] * self.num_classes for i, _ in items}
        prompts = dict(items)
        # 1. top-k of the next token: all label words of a text in one entry where they are there
        if self.top_logprobs > 0:
            batches = self._batches(items, lambda it: self._size(it[1]))

            def top(batch: list[tuple[int, Prompt]]) -> None:
                resp = self.endpoints.create(
                    "completions",
                    model=self.model,
                    prompt=[p for _, p in batch],
                    max_tokens=1,
                    temperature=0.0,
                    logprobs=self.top_logprobs,
                )
                choices = self._choices(resp, len(batch))
                for (i, _), choice in zip(batch, choices, strict=True):
                    lp = choice.logprobs
                    tops = (lp.top_logprobs or [None])[0] if lp is not None else None
                    if not tops:
                        continue  # no top log-probabilities: step 2 reads every word exactly
                    for c, word in enumerate(self.verbalizers):
                        if word in tops:
                            results[i][c] = float(tops[word])
                self._finish(batch, results, progress)

            self._run(top, batches)
        # 2. exact echo of text + word for every label word still missing
        missing = [(i, c) for i, row in results.items() for c, v in enumerate(row) if v is None]
        if missing:
            batches = self._batches(missing, lambda ic: self._size(prompts[ic[0]]) + 1)
            ids = self._word_ids()

            def echo(batch: list[tuple[int, int]]) -> None:
                sent = [self._append(prompts[i], c, ids) for i, c in batch]
                resp = self.endpoints.create(
                    "completions",
                    model=self.model,
                    prompt=sent,
                    max_tokens=1,
                    temperature=0.0,
                    echo=True,
                    logprobs=0,  # the echoed tokens' own log-probabilities only
                )
                choices = self._choices(resp, len(batch))
                for (i, c), choice in zip(batch, choices, strict=True):
                    results[i][c] = self._last_prompt_logprob(prompts[i], c, choice)
                self._finish([(i, None) for i, _ in batch], results, progress)

            self._run(echo, batches)
        return [(i, [float(v) for v in row]) for i, row in results.items()]  # type: ignore[arg-type]

    def _finish(self, batch, results, progress: Progress | None) -> None:
        """Cache and count the texts of ``batch`` whose every label word is now scored."""
        with self.endpoints.lock:
            done = [
                i
                for i in dict.fromkeys(i for i, _ in batch)
                if i not in self._counted and None not in results[i]
            ]
            self._counted.update(done)
        if not done:
            return
        self.usage.add(pairs=len(done))
        for i in done:
            if i in self._keys:
                self._store(self._keys[i], results[i])
        if progress:
            progress(len(done))

    def _word_ids(self) -> list[int] | None:
        if self._encoder is None:
            return None
        return [self.tokenizer(w, add_special_tokens=False)["input_ids"] for w in self.verbalizers]

    def _append(self, prompt: Prompt, c: int, ids) -> Prompt:
        if isinstance(prompt, list):
            word = ids[c]
            if len(word) != 1:
                raise TargetError(
                    f"label word {self.verbalizers[c]!r} is {len(word)} tokens of the served model's "
                    "tokenizer, not one; choose single-token words in task.verbalizers"
                )
            return prompt + word
        return prompt + self.verbalizers[c]

    def _choices(self, resp: Any, n: int) -> list[Any]:
        choices = sorted(resp.choices, key=lambda ch: ch.index)
        if len(choices) != n:
            raise TargetError(f"{self.urls[0]} returned {len(choices)} choices for {n} prompts")
        return choices

    def _last_prompt_logprob(self, prompt: Prompt, c: int, choice: Any) -> float:
        word = self.verbalizers[c]
        lp = choice.logprobs
        logprobs = lp.token_logprobs if lp is not None else None
        # with echo there is one log-probability per prompt token, then the generated one
        echoed = len(logprobs or []) > (len(prompt) if isinstance(prompt, list) else 1)
        if not logprobs or not echoed:
            raise TargetError(
                f"{self.urls[0]} did not return prompt log-probabilities (echo with logprobs); this "
                "target needs a server that supports them, e.g. vLLM's OpenAI-compatible server"
            )
        if isinstance(prompt, list):
            return float(logprobs[len(prompt)])  # the word's position among the echoed tokens
        # The label word must be exactly the last prompt token: the one starting where it starts.
        offsets = lp.text_offset
        full = len(prompt) + len(word)
        last = max(i for i, off in enumerate(offsets) if off < full)
        if offsets[last] != len(prompt) or last == 0 or logprobs[last] is None:
            raise TargetError(
                f"label word {word!r} is not a single token of the served model's tokenizer (or the "
                "text before it is empty); choose single-token words in task.verbalizers"
            )
        return float(logprobs[last])

    def _generate(self, texts: list[str], body: dict[str, Any]) -> list[list[str]]:
        n = body["n"]
        batches = self._batches(list(enumerate(texts)), lambda it: self._size(it[1]))
        outs: list[list[str]] = [[] for _ in texts]

        def one(batch: list[tuple[int, str]]) -> None:
            resp = self.endpoints.create("completions", prompt=[t for _, t in batch], **body)
            choices = sorted(resp.choices, key=lambda ch: ch.index)
            if len(choices) != n * len(batch):
                raise TargetError(
                    f"{self.urls[0]} returned {len(choices)} choices for {len(batch)} prompts x n={n}"
                )
            for j, (i, _) in enumerate(batch):
                outs[i] = [ch.text for ch in choices[j * n : (j + 1) * n]]

        self._run(one, batches)
        return outs

    # ------------------------------------------------------------------ contract 3

    def continuation_logprobs(
        self,
        texts: Sequence[str],
        continuations: Sequence[Sequence[str]],
        progress: Progress | None = None,
    ) -> list[list[float]]:
        """For each text, the summed log-probability of each continuation given the text (echo).

        Every continuation must start at a token boundary of the served tokenizer (as a label word
        with its leading space does); one that does not is an error naming it.
        """
        items = [(t, k) for t, conts in enumerate(continuations) for k in range(len(conts))]
        out = [[0.0] * len(c) for c in continuations]
        batches = self._batches(
            items, lambda tk: self._size(texts[tk[0]] + continuations[tk[0]][tk[1]])
        )

        def one(batch: list[tuple[int, int]]) -> None:
            resp = self.endpoints.create(
                "completions",
                model=self.model,
                prompt=[texts[t] + continuations[t][k] for t, k in batch],
                max_tokens=1,
                temperature=0.0,
                echo=True,
                logprobs=0,  # the echoed tokens' own log-probabilities only
            )
            for (t, k), ch in zip(batch, self._choices(resp, len(batch)), strict=True):
                lp = ch.logprobs
                if lp is None or not lp.token_logprobs:
                    raise TargetError(
                        f"{self.urls[0]} did not return prompt log-probabilities (echo with logprobs)"
                    )
                start, end = len(texts[t]), len(texts[t]) + len(continuations[t][k])
                idx = [j for j, off in enumerate(lp.text_offset) if start <= off < end]
                if not idx or start not in lp.text_offset or idx[0] == 0:
                    raise TargetError(
                        f"continuation {continuations[t][k]!r} does not start at a token boundary after "
                        "its text (or the text is empty); start continuations with their leading space"
                    )
                out[t][k] = float(sum(lp.token_logprobs[j] for j in idx))
            if progress:
                progress(len(batch))

        self._run(one, batches)
        return out


class OpenAIChatTarget(_ServedBase):
    """Scores prompts and generates through a ``/chat/completions`` endpoint (see the module doc).

    Arguments as :class:`OpenAITarget`; ``texts_per_request`` does not apply (one text a request).
    """

    api = "chat"

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        if self.top_logprobs < 1:
            raise ConfigError(
                "target.top_logprobs must be at least 1 for an openai-chat target: classification "
                "reads the label words among the top log-probabilities of the first answer token"
            )

    def _prompts(self, pairs: list[tuple[str, str]]) -> list[Prompt]:
        enc = self.encoder()
        if enc is None:
            return [self.template.render(x, p) for x, p in pairs]
        # Truncate by the served tokenizer, then send the text of the truncated input.
        out = []
        for x, p in pairs:
            e = enc.encode(x, p)
            full = enc.segment_ids(x, p)
            x_ids = next(ids for slot, ids in full if slot == "x")
            cut = e.input_span[1] - e.input_span[0]
            if cut < len(x_ids) and hasattr(self.tokenizer, "decode"):
                x = self.tokenizer.decode(x_ids[:cut])
            out.append(self.template.render(x, p))
        return out

    def _cache_key(self, text: str, limit: int | None) -> str:
        return super()._cache_key(text, limit) + f":top{self.top_logprobs}"

    def _fingerprint(self) -> tuple[dict | None, str]:
        return None, (
            "a chat endpoint scores no given text (the server wraps it in its chat template, and "
            "hosted chat models' log-probabilities vary between calls), so what it serves cannot be "
            "fingerprinted"
        )

    def _from_cache(self, value: Any) -> list[float]:
        if value.get("approximate"):
            self.usage.add(approximate_scores=1)
        return [float(v) for v in value["scores"]]

    def _score_texts(
        self, items: list[tuple[int, Prompt]], progress: Progress | None
    ) -> list[tuple[int, list[float]]]:
        def one(item: tuple[int, Prompt]) -> tuple[int, list[float]]:
            i, text = item
            resp = self.endpoints.create(
                "chat",
                model=self.model,
                messages=[{"role": "user", "content": text}],
                max_tokens=1,
                temperature=0.0,
                logprobs=True,
                top_logprobs=self.top_logprobs,
            )
            choice = resp.choices[0]
            content = choice.logprobs.content if choice.logprobs is not None else None
            if not content:
                raise TargetError(
                    f"{self.urls[0]}/chat/completions returned no log-probabilities; classification "
                    "with kind openai-chat needs a server that returns logprobs/top_logprobs (vLLM "
                    "does); use kind openai with a completions endpoint, or a generation task"
                )
            tops: dict[str, float] = {}
            for entry in content[0].top_logprobs or []:
                key = entry.token.strip()
                tops[key] = max(tops.get(key, -math.inf), float(entry.logprob))
            if not tops:
                tops[content[0].token.strip()] = float(content[0].logprob)
            floor = min(tops.values())
            row = [tops.get(w.strip(), floor) for w in self.verbalizers]
            approximate = any(w.strip() not in tops for w in self.verbalizers)
            self.usage.add(pairs=1, approximate_scores=int(approximate))
            if i in self._keys:
                self._store(self._keys[i], {"scores": row, "approximate": approximate})
            if progress:
                progress(1)
            return i, row

        return self._run(one, items)

    def _generate(self, texts: list[str], body: dict[str, Any]) -> list[list[str]]:
        n = body["n"]

        def one(text: str) -> list[str]:
            resp = self.endpoints.create(
                "chat", messages=[{"role": "user", "content": text}], **body
            )
            choices = sorted(resp.choices, key=lambda ch: ch.index)
            if len(choices) != n:
                raise TargetError(f"{self.urls[0]} returned {len(choices)} choices for n={n}")
            return [ch.message.content or "" for ch in choices]

        return self._run(one, texts)
