"""What a target was asked to do: the cost of a run, counted the same way in-process and served.

Every target carries a :class:`TargetUsage` as ``target.usage``. The training loop and ``eval``
read it once per log line and once at the end (``result.json``'s ``target_usage``); a served
model's numbers are its bill, and the number to compare methods by.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field, fields


@dataclass
class TargetUsage:
    """Counters of target work (thread-safe increments through :meth:`add`).

    Attributes:
        requests: HTTP requests sent, retries included (served); forward passes (in-process).
        retries: requests that repeated a failed one (served only).
        pairs: (prompt, input) pairs scored by the target (cache hits not included).
        reward_cache_hits: prompts whose training reward came from the reward cache.
        request_cache_hits: texts whose scores came from the served target's request caches
            (``run_cache_hits + shared_cache_hits``).
        prompt_tokens: tokens sent to the model (served: the server's ``usage``; in-process:
            tokens run through the model, padding included).
        completion_tokens: tokens generated.
        approximate_scores: texts whose class scores were approximated (chat targets: a label
            word missing from the top log-probabilities).
        run_cache_hits: texts whose scores came from the run's own request cache (its folder).
        shared_cache_hits: texts whose scores came from the cross-run request cache (of the
            same served model: same name and fingerprint, or same ``target.cache_key``).
    """

    requests: int = 0
    retries: int = 0
    pairs: int = 0
    reward_cache_hits: int = 0
    request_cache_hits: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    approximate_scores: int = 0
    run_cache_hits: int = 0
    shared_cache_hits: int = 0
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False)

    def add(self, **counts: int) -> None:
        """Add to the named counters, e.g. ``usage.add(requests=1, prompt_tokens=120)``."""
        with self._lock:
            for name, value in counts.items():
                setattr(self, name, getattr(self, name) + int(value))

    def to_dict(self) -> dict[str, int]:
        with self._lock:
            return {
                f.name: getattr(self, f.name) for f in fields(self) if not f.name.startswith("_")
            }

    def load_dict(self, state: dict[str, int] | None) -> None:
        """Restore counters saved by :meth:`to_dict` (a resumed run keeps counting from there)."""
        with self._lock:
            for f in fields(self):
                if not f.name.startswith("_"):
                    setattr(self, f.name, int((state or {}).get(f.name, 0)))

    def summary(self) -> str:
        """Short text for a progress line: requests, pairs and tokens so far."""
        d = self.to_dict()
        text = f"{d['pairs']} pairs, {d['requests']} req"
        tokens = d["prompt_tokens"] + d["completion_tokens"]
        if tokens:
            text += f", {tokens / 1000:.1f}k tok"
        return text
