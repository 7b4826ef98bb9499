"""A target served elsewhere: any OpenAI-compatible ``/completions`` endpoint (vLLM, llama.cpp, ...).

Class scores are exact log-probabilities, read with ``echo``: for every (prompt, input) text and
every label word, the server is sent ``text + word`` with ``echo: true, logprobs: 1`` and returns
the log-probability of each prompt token; the last one is ``log p(word | text)``. Differences of
these scores equal differences of the model's logits, so softmax over the label words, accuracy
and RLPrompt's gap reward are the same as in-process. A server that does not return prompt
log-probabilities (``echo``) is reported as such, not approximated.

Requests carry many texts each (``prompt`` is a list) and run ``max_concurrency`` at a time.
"""

from __future__ import annotations

import json
import os
import urllib.error
import urllib.request
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor

import torch

from hardprompts.config import TargetConfig
from hardprompts.errors import TargetError
from hardprompts.templates import Template


class OpenAITarget:
    """Scores prompts through an OpenAI-compatible completions endpoint.

    Args:
        base_url: e.g. ``http://localhost:8000/v1``.
        model: the served model's name.
        template: causal template (the label word follows the text).
        verbalizers: one label word per class (a single token of the served tokenizer).
        api_key: sent as a bearer token when given.
        texts_per_request: how many texts one request carries.
    """

    def __init__(
        self,
        base_url: str,
        model: str,
        template: str,
        verbalizers: Sequence[str],
        *,
        api_key: str | None = None,
        timeout_s: float = 60.0,
        max_concurrency: int = 8,
        texts_per_request: int = 32,
    ) -> None:
        self.url = base_url.rstrip("/") + "/completions"
        self.model = model
        self.template = Template.parse(template, "causal")
        self.verbalizers = list(verbalizers)
        self.api_key = api_key
        self.timeout_s = timeout_s
        self.max_concurrency = max_concurrency
        self.texts_per_request = texts_per_request

    @classmethod
    def from_config(
        cls, config: TargetConfig, template: str, verbalizers: Sequence[str]
    ) -> OpenAITarget:
        return cls(
            config.base_url or "",
            config.model,
            template,
            verbalizers,
            api_key=os.environ.get(config.api_key_env),
            timeout_s=config.request_timeout_s,
            max_concurrency=config.max_concurrency,
        )

    @property
    def num_classes(self) -> int:
        return len(self.verbalizers)

    def score(
        self,
        prompts: Sequence[str],
        texts: Sequence[str],
        progress: Callable[[int], None] | None = None,
    ) -> torch.Tensor:
        """Label-word log-probabilities [P, N, C] (logits up to a per-row constant)."""
        keys = [p.strip() for p in prompts]
        unique = list(dict.fromkeys(keys))
        rendered = [self.template.render(x, p) for p in unique for x in texts]
        queries = [(r, word) for r in rendered for word in self.verbalizers]
        batches = [
            queries[i : i + self.texts_per_request]
            for i in range(0, len(queries), self.texts_per_request)
        ]
        with ThreadPoolExecutor(max_workers=self.max_concurrency) as pool:
            results = []
            for batch_scores in pool.map(self._request, batches):
                results.extend(batch_scores)
                if progress:
                    progress(len(batch_scores) // self.num_classes)
        logits = torch.tensor(results, dtype=torch.float32).view(
            len(unique), len(texts), self.num_classes
        )
        where = {p: i for i, p in enumerate(unique)}
        return logits[[where[k] for k in keys]]

    def _request(self, batch: list[tuple[str, str]]) -> list[float]:
        body = {
            "model": self.model,
            "prompt": [text + word for text, word in batch],
            "max_tokens": 1,
            "temperature": 0.0,
            "echo": True,
            "logprobs": 1,
        }
        headers = {"Content-Type": "application/json"}
        if self.api_key:
            headers["Authorization"] = f"Bearer {self.api_key}"
        req = urllib.request.Request(
            self.url, data=json.dumps(body).encode(), headers=headers, method="POST"
        )
        try:
            with urllib.request.urlopen(req, timeout=self.timeout_s) as resp:
                payload = json.loads(resp.read())
        except urllib.error.HTTPError as exc:
            detail = exc.read().decode(errors="replace")[:300]
            raise TargetError(f"{self.url} answered HTTP {exc.code}: {detail}") from None
        except (urllib.error.URLError, TimeoutError, ConnectionError) as exc:
            raise TargetError(
                f"cannot reach the completions endpoint {self.url} ({exc}); check target.base_url and that "
                "the server is running"
            ) from None
        choices = sorted(payload.get("choices", []), key=lambda c: c.get("index", 0))
        if len(choices) != len(batch):
            raise TargetError(
                f"{self.url} returned {len(choices)} choices for {len(batch)} prompts"
            )
        scores = []
        for (text, word), choice in zip(batch, choices, strict=True):
            logprobs = (choice.get("logprobs") or {}).get("token_logprobs")
            offsets = (choice.get("logprobs") or {}).get("text_offset")
            if not logprobs or offsets is None:
                raise TargetError(
                    f"{self.url} did not return prompt log-probabilities (echo with logprobs); this target "
                    "needs a server that supports them, e.g. vLLM's OpenAI-compatible server"
                )
            # The label word must be exactly the last prompt token: the one starting where it starts.
            full = len(text) + len(word)
            last = max(i for i, off in enumerate(offsets) if off < full)
            if offsets[last] != len(text) or last == 0 or logprobs[last] is None:
                raise TargetError(
                    f"label word {word!r} is not a single token of the served model's tokenizer (or the text "
                    "before it is empty); choose single-token words in task.verbalizers"
                )
            scores.append(float(logprobs[last]))
        return scores
