"""Talking to served models: endpoints, retries, the request cache and the served tokenizer.

Shared by the ``/completions`` and ``/chat/completions`` targets (:mod:`hardprompts.targets.openai`).

* :class:`Endpoints` holds one maintained ``openai`` client per base URL over one pooled HTTP
  client (keep-alive connections, at most ``max_concurrency`` of them). Each request goes to the
  least busy endpoint. The ``openai`` client retries it there (``max_retries`` times) after HTTP
  408/409/429/5xx, a reset connection or a timeout, waiting the server's ``Retry-After`` when it
  sends one (up to 120 s; a longer one is not waited) and otherwise 0.5 s doubling to 8 s, minus
  up to 25 % jitter. When the retries are spent on one endpoint the request moves to the next;
  when every endpoint has failed, a :class:`~hardprompts.errors.TargetError` names the
  endpoints, the last status and what to change.
* :class:`RequestCache` keeps the class scores of finished requests in an append-only JSONL file
  (crash-safe: see the class), so a re-run of ``eval`` or a resumed run does not ask the server
  again. A run keeps its own (:func:`run_cache`, in its run folder); the cross-run cache
  (:func:`shared_cache`) is keyed also by a fingerprint of what the endpoint serves
  (:func:`probe_fingerprint`: the log-probabilities of a fixed probe text and ``/v1/models``), so
  new weights served under the same name are a different cache. Stored values are the server's own
  numbers (JSON floats round-trip exactly), so a result never depends on whether it came from a cache.
* :class:`ServedTokenizer` tokenises through vLLM's ``/tokenize`` endpoint, so inputs are cut to
  the served context exactly as the in-process target cuts them.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import threading
import time
from collections.abc import Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from hardprompts.caches import cache_root
from hardprompts.errors import ConfigError, TargetError
from hardprompts.targets.usage import TargetUsage

log = logging.getLogger(__name__)

# Statuses after which the openai client retries (its own policy); others are the request's fault.
RETRIED = {408, 409, 429}


def _retried(status: int) -> bool:
    return status in RETRIED or status >= 500


class Fields(dict):
    """A JSON object whose fields read as attributes (``choice.logprobs``; None when absent)."""

    __getattr__ = dict.get


class _Endpoint:
    def __init__(self, url: str, client: Any) -> None:
        self.url = url
        self.client = client
        self.busy = 0
        self.sent = 0


class Endpoints:
    """OpenAI-compatible endpoints serving the same model, with pooling, retries and failover.

    Args:
        urls: base URLs such as ``http://localhost:8000/v1``.
        api_key: bearer token (``None``: servers that need none, such as a local vLLM).
        timeout_s: seconds to wait for one answer.
        max_retries: retries per endpoint (the openai client's backoff policy, see the module doc).
        max_concurrency: connections kept open and requests in flight at once.
        usage: counters of requests, retries and tokens.
    """

    def __init__(
        self,
        urls: Sequence[str],
        *,
        api_key: str | None,
        timeout_s: float,
        max_retries: int,
        max_concurrency: int,
        usage: TargetUsage,
    ) -> None:
        import httpx2
        import openai

        self.usage = usage
        self.timeout_s = timeout_s
        self.max_retries = max_retries
        self.http = httpx2.Client(
            timeout=httpx2.Timeout(timeout_s, connect=min(timeout_s, 10.0)),
            limits=httpx2.Limits(
                max_connections=max_concurrency, max_keepalive_connections=max_concurrency
            ),
            event_hooks={"request": [self._on_request]},
        )
        self.endpoints = [
            _Endpoint(
                url.rstrip("/"),
                openai.OpenAI(
                    base_url=url.rstrip("/"),
                    api_key=api_key or "EMPTY",
                    timeout=timeout_s,
                    max_retries=max_retries,
                    http_client=self.http,
                ),
            )
            for url in urls
        ]
        self._auth = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self.lock = threading.Lock()
        self._turn = 0

    def _on_request(self, request: Any) -> None:
        if not request.url.path.endswith("completions"):
            return  # /tokenize is not scoring work
        retry = int(request.headers.get("x-stainless-retry-count", "0") or 0) > 0
        self.usage.add(requests=1, retries=int(retry))

    @property
    def urls(self) -> list[str]:
        return [ep.url for ep in self.endpoints]

    def _order(self) -> list[_Endpoint]:
        """Endpoints, least busy first (ties in turn), so the load spreads over all of them."""
        with self.lock:
            self._turn += 1
            n = len(self.endpoints)
            rotated = [self.endpoints[(self._turn + i) % n] for i in range(n)]
            return sorted(rotated, key=lambda ep: ep.busy)

    @contextmanager
    def _use(self, ep: _Endpoint):
        with self.lock:
            ep.busy += 1
            ep.sent += 1
        try:
            yield
        finally:
            with self.lock:
                ep.busy -= 1

    def create(self, api: str, **body: Any) -> Any:
        """POST one request (``api`` is ``completions`` or ``chat``); retried, then failed over."""
        import openai

        route = "/completions" if api == "completions" else "/chat/completions"
        failures: list[str] = []
        last_status: int | None = None
        for ep in self._order():
            resource = ep.client.completions if api == "completions" else ep.client.chat.completions
            with self._use(ep):
                try:
                    raw = resource.with_raw_response.create(**body)
                except openai.APIStatusError as exc:
                    if not _retried(exc.status_code):
                        raise self._refused(ep.url + route, exc) from None
                    last_status = exc.status_code
                    failures.append(f"{ep.url + route} answered HTTP {exc.status_code}")
                    continue
                except openai.APITimeoutError:
                    failures.append(f"{ep.url + route} gave no answer within {self.timeout_s:g} s")
                    continue
                except openai.APIConnectionError as exc:
                    cause = exc.__cause__ or exc
                    failures.append(f"cannot reach {ep.url + route} ({cause})")
                    continue
            # Parsed as plain JSON: the client's typed models cost more than the request itself
            # for echo answers of thousands of tokens.
            try:
                response = json.loads(raw.http_response.content, object_hook=Fields)
            except ValueError:
                raise TargetError(
                    f"{ep.url + route} answered with something that is not JSON; check target.base_url"
                ) from None
            usage = response.usage
            if usage:
                self.usage.add(
                    prompt_tokens=usage.prompt_tokens or 0,
                    completion_tokens=usage.completion_tokens or 0,
                )
            return response
        raise self._exhausted(failures, last_status)

    def _exhausted(self, failures: list[str], last_status: int | None) -> TargetError:
        tries = f"{self.max_retries + 1} attempt{'s' if self.max_retries else ''}"
        what = "; ".join(failures)
        if last_status is not None:
            fix = (
                "the server is overloaded or failing: lower target.max_concurrency, raise "
                "target.max_retries, or check the server's log"
            )
        elif all("no answer within" in f for f in failures):
            fix = (
                "the server is reachable but slow: raise target.request_timeout_s or lower "
                "target.tokens_per_request / target.texts_per_request"
            )
        else:
            fix = "check target.base_url and that the server is running (raise target.max_retries to wait longer)"
        per = "each endpoint" if len(failures) > 1 else "the endpoint"
        return TargetError(
            f"{what} ({tries} on {per}, target.max_retries={self.max_retries}); {fix}"
        )

    def _refused(self, url: str, exc: Any) -> TargetError:
        status = exc.status_code
        detail = str(getattr(exc, "message", exc))[:400]
        if status in (401, 403):
            fix = "set the API key in the environment variable named by target.api_key_env"
        elif status == 404:
            fix = (
                "check target.base_url (it usually ends in /v1) and target.model (the served name)"
            )
        elif "context" in detail.lower() or "maximum" in detail.lower():
            fix = (
                "the text is longer than the served context: set target.tokenizer (or serve vLLM, "
                "whose /tokenize is used) so that inputs are truncated, or lower target.max_length"
            )
        else:
            fix = "the server rejected the request; check that it supports this request (see the detail)"
        return TargetError(f"{url} answered HTTP {status}: {detail}; {fix}")

    def post_json(self, path: str, body: dict) -> tuple[int, Any]:
        """POST to the server root (e.g. ``/tokenize``) of the first endpoint; (status, JSON or None).

        Not retried: used only for optional endpoints, whose absence is an answer.
        """
        import httpx2

        root = self.endpoints[0].url.removesuffix("/v1")
        try:
            return _status_and_json(self.http.post(root + path, json=body))
        except httpx2.HTTPError:
            return 0, None

    def get_json(self, path: str) -> tuple[int, Any]:
        """GET ``path`` under the first endpoint's base URL (e.g. ``/models``); (status, JSON or None).

        Not retried: used only for what a server may not offer.
        """
        import httpx2

        try:
            return _status_and_json(self.http.get(self.endpoints[0].url + path, headers=self._auth))
        except httpx2.HTTPError:
            return 0, None

    def close(self) -> None:
        self.http.close()


class ServedTokenizer:
    """The served model's tokenizer through vLLM's ``/tokenize`` (what a TemplateEncoder needs).

    Built by :meth:`probe`, which returns None when the server has no such endpoint.
    """

    mask_token_id = None
    pad_token_id = None

    def __init__(self, endpoints: Endpoints, model: str, max_model_len: int | None) -> None:
        self.endpoints = endpoints
        self.model = model
        self.max_model_len = max_model_len
        self.bos_token_id = None
        self.eos_token_id = None

    @classmethod
    def probe(cls, endpoints: Endpoints, model: str) -> ServedTokenizer | None:
        """The served tokenizer, or None when the server answers that it has no ``/tokenize``.

        A server that does not answer at all is an error (after the same number of tries as a
        scoring request): deciding "no tokenizer" then would change how inputs are truncated.
        """
        body = {"model": model, "prompt": "hello", "add_special_tokens": True}
        for attempt in range(endpoints.max_retries + 1):
            status, payload = endpoints.post_json("/tokenize", body)
            if status != 0:
                break
            time.sleep(min(0.5 * 2**attempt, 8.0))
        else:
            raise TargetError(
                f"cannot reach {endpoints.urls[0]} (asking its /tokenize, "
                f"{endpoints.max_retries + 1} attempts); check target.base_url and that the server "
                "is running, or set target.tokenizer"
            )
        if status != 200 or not isinstance(payload, dict) or "tokens" not in payload:
            return None
        tok = cls(endpoints, model, payload.get("max_model_len"))
        lead = tok("hello", add_special_tokens=True)["input_ids"]
        bare = tok("hello", add_special_tokens=False)["input_ids"]
        if len(lead) > len(bare):
            tok.bos_token_id = lead[0]
        return tok

    def __call__(self, text: str, add_special_tokens: bool = True) -> dict[str, list[int]]:
        status, payload = self.endpoints.post_json(
            "/tokenize",
            {"model": self.model, "prompt": text, "add_special_tokens": add_special_tokens},
        )
        if status != 200 or not isinstance(payload, dict):
            raise TargetError(
                f"{self.endpoints.urls[0]}: /tokenize answered {status or 'nothing'} after answering "
                "before; check the server, or set target.tokenizer to the model's tokenizer"
            )
        return {"input_ids": list(payload["tokens"])}

    def decode(self, ids: list[int]) -> str:
        """Text of token ids (vLLM's ``/detokenize``)."""
        status, payload = self.endpoints.post_json(
            "/detokenize", {"model": self.model, "tokens": list(ids)}
        )
        if status != 200 or not isinstance(payload, dict) or "prompt" not in payload:
            raise TargetError(
                f"{self.endpoints.urls[0]}: /detokenize answered {status or 'nothing'}; set "
                "target.tokenizer to the model's tokenizer to truncate chat inputs"
            )
        return payload["prompt"]

    def convert_ids_to_tokens(self, ids: list[int]) -> list[str]:
        return [str(i) for i in ids]


def _status_and_json(response: Any) -> tuple[int, Any]:
    """(HTTP status, the body as JSON or None when it is not JSON)."""
    try:
        return response.status_code, response.json()
    except ValueError:
        return response.status_code, None


def cache_folder(setting: str | None) -> Path | None:
    """The cross-run request cache's folder for ``target.request_cache`` (None: off)."""
    if setting is None:
        return None
    if setting != "auto":
        return Path(setting).expanduser()
    return cache_root() / "requests"


#: Folder of a run's own request cache, inside its run folder.
RUN_CACHE_DIR = "requests"
#: The fixed text whose token log-probabilities fingerprint what an endpoint serves (short enough
#: for any served context, common words so that every tokenizer cuts it into a few tokens).
PROBE_TEXT = "The movie was great, but the plot was thin. One, two, three,"
#: Log-probabilities are stored rounded to this many decimals ...
FINGERPRINT_DECIMALS = 3
#: ... and two probes are the same model when none differs by more than this (nats): what a
#: server's batching changes in the last bits is not a new model; new weights move some of the
#: probe's log-probabilities by more (a probe that differs only by noise beyond it is a cache miss,
#: asked again, never a wrong answer).
FINGERPRINT_TOLERANCE = 0.02


def request_key(model: str, *parts: Any) -> str:
    """Key of one cached request: the served model's name and what was asked (hashed)."""
    raw = json.dumps([model, *parts], ensure_ascii=False)
    return hashlib.sha256(raw.encode()).hexdigest()


def probe_fingerprint(endpoints: Endpoints, model: str) -> tuple[dict | None, str]:
    """What ``model`` at ``endpoints`` serves: ``(fingerprint, "")``, or ``(None, reason)``.

    One ``/completions`` request scores :data:`PROBE_TEXT` (``echo``: the log-probability of each
    of its tokens, and of the greedy next token with the top 5 there); a server that refuses
    ``echo`` is asked for the next token's top 5 only. ``/v1/models`` adds the model's ``id``,
    ``root`` and ``max_model_len`` where the server reports them.
    """
    reply = None
    for echo in (True, False):
        try:
            reply = endpoints.create(
                "completions",
                model=model,
                prompt=PROBE_TEXT,
                max_tokens=1,
                temperature=0.0,
                echo=echo,
                logprobs=5,
            )
            break
        except TargetError as exc:
            if echo and " answered HTTP 4" in str(exc):
                continue  # refused echo: try the next token alone
            raise
    choice = (reply.choices or [None])[0] if reply is not None else None
    lp = choice.logprobs if choice is not None else None
    values = [v for v in (lp.token_logprobs or []) if v is not None] if lp is not None else []
    tops = (lp.top_logprobs or [None])[-1] if lp is not None else None
    if not values and not tops:
        return None, (
            f"{endpoints.urls[0]} returned no log-probabilities for the probe text, so what it "
            "serves cannot be fingerprinted"
        )
    assert lp is not None  # no log-probabilities at all returned above
    rounded = [
        None if v is None else round(float(v), FINGERPRINT_DECIMALS)
        for v in lp.token_logprobs or []
    ]
    return {
        "server": served_model_info(endpoints, model),
        "probe": PROBE_TEXT,
        "tokens": list(lp.tokens or []),
        "logprobs": rounded,
        "top": sorted(
            (round(float(v), FINGERPRINT_DECIMALS) for v in (tops or {}).values()), reverse=True
        ),
    }, ""


def served_model_info(endpoints: Endpoints, model: str) -> dict[str, Any]:
    """``id``, ``root`` and ``max_model_len`` of ``model`` in ``GET /v1/models`` (empty: none)."""
    status, payload = endpoints.get_json("/models")
    if status != 200 or not isinstance(payload, dict):
        return {}
    for entry in payload.get("data") or []:
        if isinstance(entry, dict) and entry.get("id") == model:
            return {
                k: entry[k] for k in ("id", "root", "max_model_len") if entry.get(k) is not None
            }
    return {}


def same_model(a: dict, b: dict) -> bool:
    """Whether two fingerprints are of the same served model (log-probabilities within tolerance)."""
    if any(a.get(k) != b.get(k) for k in ("server", "probe", "tokens")):
        return False
    for key in ("logprobs", "top"):
        x, y = a.get(key) or [], b.get(key) or []
        if len(x) != len(y):
            return False
        for u, v in zip(x, y, strict=True):
            if (u is None) != (v is None) or (u is not None and abs(u - v) > FINGERPRINT_TOLERANCE):
                return False
    return True


def fingerprint_id(fingerprint: dict) -> str:
    """Short name of a fingerprint (the hash of its JSON)."""
    return hashlib.sha256(json.dumps(fingerprint, sort_keys=True).encode()).hexdigest()[:12]


class RequestCache:
    """Scores of finished requests in ``<folder>/<name>.jsonl``, described by ``<name>.json``.

    The JSONL file is append-only, one ``{"k": key, "v": value}`` line per request, written with
    one ``write`` under an exclusive lock (several runs may share the file) and flushed. A line cut
    short by a crash never parses (its closing brace is its last character), so it is skipped when
    the file is read again and the request is simply asked again; before appending after such a
    line the cache first ends it with a newline, so no later line is glued to it. The description
    (``meta``: the model's name, its fingerprint or cache key) is written whole through a temporary
    file and a rename. Nothing is created before the first :meth:`put`.
    """

    def __init__(self, folder: Path, name: str, meta: dict[str, Any]) -> None:
        self.folder = folder
        self.path = folder / f"{name}.jsonl"
        self.meta_path = folder / f"{name}.json"
        self.meta = meta
        self.lock = threading.Lock()
        self.values: dict[str, Any] = {}
        self.fh: Any = None
        if self.path.exists():
            for line in self.path.read_text(encoding="utf-8", errors="replace").splitlines():
                try:
                    item = json.loads(line)
                    self.values[item["k"]] = item["v"]
                except (ValueError, KeyError, TypeError):
                    continue  # a line torn by a crash

    def __len__(self) -> int:
        return len(self.values)

    def get(self, key: str) -> Any:
        return self.values.get(key)

    def _open(self) -> None:
        from hardprompts.checkpoint import atomic_write_json

        try:
            self.folder.mkdir(parents=True, exist_ok=True)
            if not self.meta_path.exists():
                atomic_write_json(self.meta_path, {**self.meta, "created": time.time()})
            self.fh = self.path.open("a+b")
        except OSError as exc:
            raise ConfigError(
                f"cannot write the request cache {self.path} ({exc.strerror or exc}); set "
                "target.request_cache to a writable folder, or to null to turn the cache off"
            ) from None

    def put(self, key: str, value: Any) -> None:
        line = (json.dumps({"k": key, "v": value}) + "\n").encode()
        with self.lock:
            self.values[key] = value
            if self.fh is None:
                self._open()
            with _locked(self.fh):
                self.fh.seek(0, os.SEEK_END)
                if self.fh.tell() > 0:  # a torn last line (a crash mid-write) is ended first
                    self.fh.seek(-1, os.SEEK_END)
                    if self.fh.read(1) != b"\n":
                        line = b"\n" + line
                self.fh.write(line)
                self.fh.flush()

    def close(self) -> None:
        with self.lock:
            if self.fh is not None:
                self.fh.close()
                self.fh = None


@contextmanager
def _locked(fh: Any):
    """An exclusive lock on an open file (POSIX ``flock``; a no-op where there is none)."""
    try:
        import fcntl
    except ImportError:  # pragma: no cover - Windows: one writer per file is assumed
        yield
        return
    fcntl.flock(fh.fileno(), fcntl.LOCK_EX)
    try:
        yield
    finally:
        fcntl.flock(fh.fileno(), fcntl.LOCK_UN)


def shared_cache(
    folder: Path, model: str, fingerprint: dict | None, cache_key: str | None
) -> RequestCache:
    """The cross-run cache of ``model`` as it is served now: the one whose fingerprint matches
    (:func:`same_model`), else a new one; with ``cache_key``, the one of that key."""
    if cache_key is not None:
        meta: dict[str, Any] = {"model": model, "cache_key": cache_key}
        ident = "key-" + hashlib.sha256(cache_key.encode()).hexdigest()[:12]
    else:
        assert fingerprint is not None
        ident = fingerprint_id(fingerprint)
        for other in sorted(folder.glob("*.json")) if folder.is_dir() else []:
            try:
                known = json.loads(other.read_text(encoding="utf-8"))
            except (OSError, ValueError):
                continue
            if (
                isinstance(known, dict)
                and known.get("model") == model
                and isinstance(known.get("fingerprint"), dict)
                and same_model(known["fingerprint"], fingerprint)
            ):
                ident = known.get("fingerprint_id", ident)
                break
        meta = {"model": model, "fingerprint_id": ident, "fingerprint": fingerprint}
    name = hashlib.sha256(f"{model}\0{ident}".encode()).hexdigest()[:16]
    return RequestCache(folder, name, meta)


def run_cache(run_dir: Path, model: str) -> RequestCache:
    """A run's own cache of ``model``'s requests, in ``<run_dir>/requests``."""
    name = hashlib.sha256(model.encode()).hexdigest()[:16]
    return RequestCache(Path(run_dir) / RUN_CACHE_DIR, name, {"model": model, "run": True})


def list_caches(folder: Path) -> list[dict[str, Any]]:
    """The request caches in ``folder`` (a cache folder, or a run folder holding ``requests/``).

    Each: ``path``, ``bytes`` (of its two files), ``entries`` (scored texts), ``model``,
    ``fingerprint`` (its id, ``key:<cache_key>``, ``run`` for a run's own cache, or None for a
    file written before fingerprints, which is never read), ``server`` (``/v1/models``' fields).
    """
    folder = Path(folder)
    if (folder / RUN_CACHE_DIR).is_dir() and not any(folder.glob("*.jsonl")):
        folder = folder / RUN_CACHE_DIR
    found = []
    for data in sorted(folder.glob("*.jsonl")) if folder.is_dir() else []:
        meta_path = data.with_suffix(".json")
        try:
            meta = json.loads(meta_path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            meta = {}
        if meta.get("cache_key") is not None:
            ident = f"key:{meta['cache_key']}"
        elif meta.get("run"):
            ident = "run" + (
                f" (served {meta['fingerprint_id']})" if meta.get("fingerprint_id") else ""
            )
        else:
            ident = meta.get("fingerprint_id")
        with data.open("rb") as fh:
            entries = sum(1 for line in fh if line.endswith(b"}\n"))
        size = data.stat().st_size + (meta_path.stat().st_size if meta_path.exists() else 0)
        found.append(
            {
                "path": str(data),
                "bytes": size,
                "entries": entries,
                "model": meta.get("model"),
                "fingerprint": ident,
                "server": (meta.get("fingerprint") or {}).get("server", {}),
                "created": meta.get("created"),
            }
        )
    return found


def remove_cache(path: str | Path) -> int:
    """Delete one cache (its ``.jsonl`` and ``.json``); returns the bytes freed."""
    freed = 0
    for file in (Path(path), Path(path).with_suffix(".json")):
        if file.exists():
            freed += file.stat().st_size
            file.unlink()
    return freed
