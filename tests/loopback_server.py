"""A small OpenAI-compatible server on 127.0.0.1 that runs a real Hugging Face causal LM.

Used by the served-target tests and by ``benchmarks/served_throughput.py``. It answers what
vLLM's OpenAI-compatible server answers for the requests hardprompts sends (the model is never
mocked: every number comes from a forward pass):

* ``POST /v1/completions``: ``prompt`` as a string, a list of strings, a list of token ids or a
  list of lists of ids; ``echo`` (log-probabilities of the prompt tokens), ``logprobs`` (top-k of
  each position), ``max_tokens``, ``n``, ``temperature`` (0 = greedy), ``top_k``, ``seed``,
  ``stop``; a ``usage`` block.
* ``POST /v1/chat/completions``: the messages' contents joined by newlines are the text (no chat
  template), or with ``chat_template=True`` the tokenizer's chat template applied to the messages
  with the generation prompt and tokenised without added special tokens (as vLLM);
  ``logprobs`` / ``top_logprobs`` of the answer tokens; ``max_tokens``, ``n``, ...
* ``GET /v1/models``: the served name (``id``), ``root`` and ``max_model_len``, as vLLM lists them.
* ``POST /tokenize`` and ``/detokenize`` (vLLM's endpoints, at the server root):
  ``{"tokens": [...], "count", "max_model_len"}`` and ``{"prompt": text}``; only when
  ``tokenize=True``.

``stats`` counts requests (all, and ``scoring``: completions and chat ones), connections and prompts.
:meth:`LoopbackServer.serve` swaps the model behind the same name while the server runs (what
restarting vLLM with new weights and the same ``--served-model-name`` does).
"""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import torch


class LocalServer:
    """An HTTP server on 127.0.0.1 in a daemon thread (``self.server``), stopped by :meth:`close`."""

    server: ThreadingHTTPServer

    def _start(self, handler: type, port: int) -> None:
        self.server = ThreadingHTTPServer(("127.0.0.1", port), handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    @property
    def port(self) -> int:
        return self.server.server_address[1]

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    def __enter__(self):
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


class LoopbackServer(LocalServer):
    """Serve ``model`` (a causal LM) and ``tokenizer`` on 127.0.0.1 until :meth:`close`.

    Args:
        echo: return prompt log-probabilities (``echo``); False mimics servers that cannot.
        logprobs: return log-probabilities at all (False: ``logprobs`` is always null).
        tokenize: offer vLLM's ``/tokenize``.
        completions: offer ``/v1/completions`` (False: a chat-only endpoint).
        refuse_echo: answer HTTP 400 to ``echo`` with ``logprobs`` (as OpenAI's hosted API does).
        max_model_len: reported by ``/tokenize``; longer prompts get HTTP 400 as vLLM gives.
        port: 0 picks a free port.
        name: the served model's name in ``/v1/models`` (requests may ask for any name).
        root: the ``root`` in ``/v1/models`` (default: the model's ``name_or_path``).
        chat_template: chat requests go through the tokenizer's chat template.
    """

    def __init__(
        self,
        model,
        tokenizer,
        *,
        echo: bool = True,
        logprobs: bool = True,
        tokenize: bool = True,
        completions: bool = True,
        refuse_echo: bool = False,
        max_model_len: int = 1024,
        port: int = 0,
        name: str = "tiny",
        root: str | None = None,
        chat_template: bool = False,
    ) -> None:
        self.model, self.tokenizer = model, tokenizer
        self.chat_template = chat_template
        self.echo, self.logprobs, self.tokenize = echo, logprobs, tokenize
        self.completions, self.name, self.refuse_echo = completions, name, refuse_echo
        self.root = root if root is not None else str(model.config.name_or_path)
        self.max_model_len = max_model_len
        self.lock = threading.Lock()
        self._tokens: dict[int, str] = {}
        self.stats = {"requests": 0, "connections": 0, "prompts": 0, "scoring": 0}
        owner = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"  # keep-alive, as real servers

            def log_message(self, *args):  # keep test output clean
                pass

            def setup(self):
                super().setup()
                with owner.lock:
                    owner.stats["connections"] += 1

            def do_GET(self):  # noqa: N802 - http.server's naming
                self.do_POST(get=True)

            def do_POST(self, get: bool = False):  # noqa: N802 - http.server's naming
                size = int(self.headers.get("Content-Length") or 0)
                body = json.loads(self.rfile.read(size)) if size else {}
                with owner.lock:
                    owner.stats["requests"] += 1
                    owner.stats["scoring"] += self.path.endswith("completions")
                try:
                    if get:
                        status, payload = owner.handle_get(self.path)
                    else:
                        status, payload = owner.handle(self.path, body)
                except Exception as exc:  # a bug here must show in the test, not hang it
                    status, payload = 500, {"error": {"message": repr(exc), "code": 500}}
                out = json.dumps(payload).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(out)))
                self.end_headers()
                self.wfile.write(out)

        self._start(Handler, port)

    def serve(self, model, tokenizer=None, root: str | None = None) -> None:
        """Serve ``model`` (and ``tokenizer``) from now on, under the same name (``root``: what
        ``/v1/models`` reports; default: unchanged, as a checkpoint overwritten in place)."""
        with self.lock:
            self.model = model
            if tokenizer is not None:
                self.tokenizer = tokenizer
                self._tokens = {}
            if root is not None:
                self.root = root

    # ------------------------------------------------------------------ requests

    def handle_get(self, path: str) -> tuple[int, dict]:
        if path == "/v1/models":
            entry = {"id": self.name, "object": "model", "owned_by": "loopback", "root": self.root,
                     "parent": None, "max_model_len": self.max_model_len}  # fmt: skip
            return 200, {"object": "list", "data": [entry]}
        return 404, {"error": {"message": f"no route {path}", "code": 404}}

    def handle(self, path: str, body: dict) -> tuple[int, dict]:
        if path == "/detokenize" and self.tokenize:
            return 200, {"prompt": self.tokenizer.decode(body["tokens"])}
        if path == "/tokenize" and self.tokenize:
            add = body.get("add_special_tokens", True)
            ids = self.tokenizer(body["prompt"], add_special_tokens=add)["input_ids"]
            return 200, {"tokens": ids, "count": len(ids), "max_model_len": self.max_model_len}
        if path == "/v1/completions" and self.completions:
            return self._completions(body)
        if path == "/v1/chat/completions":
            return self._chat(body)
        return 404, {"error": {"message": f"no route {path}", "code": 404}}

    def _token(self, i: int) -> str:
        text = self._tokens.get(i)
        if text is None:
            text = self._tokens[i] = self.tokenizer.decode([i])
        return text

    @torch.no_grad()
    def _logprobs(self, ids: list[int]) -> torch.Tensor:
        with self.lock:
            logits = self.model(input_ids=torch.tensor([ids])).logits[0]
        return logits.float().log_softmax(-1)

    @torch.no_grad()
    def _batch_logprobs(self, seqs: list[list[int]], last_only: bool = False) -> list[torch.Tensor]:
        """Log-probabilities [L, V] of each sequence ([1, V]: the last position only), the prompts
        of a request batched in padded forwards of at most 4,096 tokens (as vLLM batches them)."""
        out: list[torch.Tensor | None] = [None] * len(seqs)
        order = sorted(range(len(seqs)), key=lambda i: len(seqs[i]))
        start = 0
        while start < len(order):
            width = len(seqs[order[start]])
            end = start
            while end < len(order) and (end - start + 1) * len(seqs[order[end]]) <= 4096:
                width = len(seqs[order[end]])
                end += 1
            end = max(end, start + 1)
            chunk = order[start:end]
            width = max(len(seqs[i]) for i in chunk)
            ids = torch.zeros((len(chunk), width), dtype=torch.long)
            mask = torch.zeros((len(chunk), width), dtype=torch.long)
            for r, i in enumerate(chunk):
                ids[r, : len(seqs[i])] = torch.tensor(seqs[i])
                mask[r, : len(seqs[i])] = 1
            with self.lock:
                if last_only:  # the LM head at the last position only, as a generating server
                    hidden = self.model.base_model(input_ids=ids, attention_mask=mask)[0]
                    lengths = mask.sum(1) - 1
                    last = hidden[torch.arange(len(chunk)), lengths]
                    logits = self.model.get_output_embeddings()(last)[:, None]
                else:
                    logits = self.model(input_ids=ids, attention_mask=mask).logits
            logp = logits.float().log_softmax(-1)
            for r, i in enumerate(chunk):
                out[i] = logp[r, : 1 if last_only else len(seqs[i])]
            start = end
        return out  # type: ignore[return-value]

    def _top(self, row: torch.Tensor, k: int) -> dict[str, float]:
        values, idx = row.topk(k)
        return {self._token(int(i)): float(v) for v, i in zip(values, idx, strict=True)}

    @torch.no_grad()
    def _generate(
        self, ids: list[int], body: dict, sample: int, first: torch.Tensor | None = None
    ) -> tuple[list[int], list[torch.Tensor]]:
        """New token ids and the log-probability row of each step (greedy at temperature 0).

        ``first``: the row after ``ids`` when already computed (an echo's forward).
        """
        temperature = float(body.get("temperature", 1.0))
        top_k = body.get("top_k")
        gen = torch.Generator().manual_seed(int(body.get("seed") or 0) * 1000 + sample)
        stop = body.get("stop")
        stops = [stop] if isinstance(stop, str) else list(stop or [])
        out: list[int] = []
        rows: list[torch.Tensor] = []
        for _ in range(int(body.get("max_tokens", 16))):
            row = first if first is not None and not out else self._logprobs(ids + out)[-1]
            rows.append(row)
            if temperature == 0:
                nxt = int(row.argmax())
            else:
                scaled = row / temperature
                if top_k and top_k > 0:
                    kth = scaled.topk(int(top_k)).values[-1]
                    scaled = scaled.masked_fill(scaled < kth, float("-inf"))
                nxt = int(torch.multinomial(scaled.softmax(-1), 1, generator=gen))
            out.append(nxt)
            if any(s in self.tokenizer.decode(out) for s in stops):
                break
        return out, rows

    def _cut(self, text: str, body: dict) -> tuple[str, str]:
        stop = body.get("stop")
        for s in [stop] if isinstance(stop, str) else list(stop or []):
            if s in text:
                return text[: text.index(s)], "stop"
        return text, "length"

    def _prompts(self, prompt: Any) -> list[tuple[list[int], str | None, list[int] | None]]:
        """(token ids, text or None, character offset of each token or None) of each prompt."""
        if isinstance(prompt, str):
            prompt = [prompt]
        if prompt and isinstance(prompt[0], int):
            prompt = [prompt]
        out = []
        for p in prompt:
            if isinstance(p, list):
                out.append((p, None, None))
            else:
                enc = self.tokenizer(p, add_special_tokens=False, return_offsets_mapping=True)
                out.append((enc["input_ids"], p, [a for a, _ in enc["offset_mapping"]]))
        return out

    def _completions(self, body: dict) -> tuple[int, dict]:
        prompts = self._prompts(body["prompt"])
        with self.lock:
            self.stats["prompts"] += len(prompts)
        k = body.get("logprobs")
        if body.get("echo") and k is not None and self.refuse_echo:
            return 400, {"error": {"message": "echo is not supported with logprobs", "code": 400}}
        echo = bool(body.get("echo")) and self.echo
        choices, prompt_tokens, completion_tokens = [], 0, 0
        for ids, _, _ in prompts:
            if len(ids) + int(body.get("max_tokens", 16)) > self.max_model_len:
                return 400, {
                    "error": {
                        "message": f"This model's maximum context length is {self.max_model_len} "
                        f"tokens. However, you requested {len(ids)} tokens in the prompt.",
                        "code": 400,
                    }
                }
        fulls = self._batch_logprobs([ids for ids, _, _ in prompts], last_only=not echo)
        for (ids, source, source_offsets), full in zip(prompts, fulls, strict=True):
            prompt_tokens += len(ids)
            for sample in range(int(body.get("n", 1))):
                new, rows = self._generate(ids, body, sample, full[-1])
                completion_tokens += len(new)
                text, reason = self._cut(self.tokenizer.decode(new), body)
                logprobs = None
                if k is not None and self.logprobs:
                    toks = ids + new if echo else new
                    lps: list[float | None] = []
                    tops: list[dict[str, float] | None] = []
                    if echo:  # one gather and one top-k over all prompt positions
                        nxt = torch.tensor(ids[1:], dtype=torch.long)
                        lps = [None, *full[:-1].gather(1, nxt[:, None])[:, 0].tolist()]
                        tops = [None]
                        if k:
                            values, idx = full[:-1].topk(k, dim=-1)
                            for vs, js in zip(values.tolist(), idx.tolist(), strict=True):
                                tops.append({self._token(j): v for v, j in zip(vs, js, strict=True)})
                        else:
                            tops += [None] * (len(ids) - 1)
                    for t, row in zip(new, rows, strict=True):
                        lps.append(float(row[t]))
                        tops.append(self._top(row, k) if k else None)
                    strs = [self._token(t) for t in toks]
                    offsets, pos = [], 0
                    for s in strs:
                        offsets.append(pos)
                        pos += len(s)
                    if echo and source is not None:  # offsets into the text as sent (as vLLM)
                        offsets, q = list(source_offsets), len(source)
                        for t in new:
                            offsets.append(q)
                            q += len(self._token(t))
                    logprobs = {
                        "tokens": strs,
                        "token_logprobs": lps,
                        "top_logprobs": tops,
                        "text_offset": offsets,
                    }
                if echo:
                    text = (source if source is not None else self.tokenizer.decode(ids)) + text
                choices.append(
                    {
                        "index": len(choices),
                        "text": text,
                        "logprobs": logprobs,
                        "finish_reason": reason,
                    }
                )
        usage = {
            "prompt_tokens": prompt_tokens,
            "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens,
        }
        return 200, {
            "id": "cmpl-loopback",
            "object": "text_completion",
            "created": 0,
            "model": body.get("model", ""),
            "choices": choices,
            "usage": usage,
        }

    def _chat(self, body: dict) -> tuple[int, dict]:
        text = "\n".join(m["content"] for m in body["messages"])
        with self.lock:  # a fast tokenizer is not to be used by several threads at once
            if self.chat_template:
                text = self.tokenizer.apply_chat_template(
                    body["messages"], tokenize=False, add_generation_prompt=True
                )
            ids = self.tokenizer(text, add_special_tokens=False)["input_ids"]
            self.stats["prompts"] += 1
        choices, completion_tokens = [], 0
        want = bool(body.get("logprobs")) and self.logprobs
        k = int(body.get("top_logprobs") or 0)
        for sample in range(int(body.get("n", 1))):
            new, rows = self._generate(ids, body, sample)
            completion_tokens += len(new)
            content, reason = self._cut(self.tokenizer.decode(new), body)
            logprobs = None
            if want:
                logprobs = {
                    "content": [
                        {
                            "token": self._token(t),
                            "logprob": float(row[t]),
                            "bytes": None,
                            "top_logprobs": [
                                {"token": tok, "logprob": lp, "bytes": None}
                                for tok, lp in (self._top(row, k) if k else {}).items()
                            ],
                        }
                        for t, row in zip(new, rows, strict=True)
                    ]
                }
            choices.append(
                {
                    "index": sample,
                    "message": {"role": "assistant", "content": content},
                    "logprobs": logprobs,
                    "finish_reason": reason,
                }
            )
        usage = {
            "prompt_tokens": len(ids),
            "completion_tokens": completion_tokens,
            "total_tokens": len(ids) + completion_tokens,
        }
        return 200, {
            "id": "chat-loopback",
            "object": "chat.completion",
            "created": 0,
            "model": body.get("model", ""),
            "choices": choices,
            "usage": usage,
        }
