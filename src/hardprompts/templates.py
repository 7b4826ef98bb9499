"""Templates: how an input ``x`` and a prompt ``z`` become the token ids a target scores.

A template such as ``"{x} {prompt} {mask} ."`` is cut into *segments*; each placeholder takes the
literal text in front of it, so ``"{x} {prompt} {mask} ."`` becomes ``[x] [" " + prompt]
[" " + <mask>] [" ."]``. Segments are tokenised one by one and concatenated, which gives:

* truncation of the input alone (the input's tokens are cut from the end; never the prompt, the
  mask or the template's words), and
* a token prefix that does not depend on the prompt, so a causal target can compute the input's
  key/value cache once and reuse it for every prompt.

With byte-level BPE (GPT-2, RoBERTa, the built-in models) the result equals tokenising the whole
string, because the pre-tokeniser splits before every space. Filled values are stripped of
surrounding whitespace: spacing comes from the template. An empty prompt drops its segment's
whitespace, so the bare template (no prompt) reads naturally.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal

from hardprompts.errors import ConfigError, VerbalizerError

Kind = Literal["masked", "causal"]
_PLACEHOLDER = re.compile(r"\{(x|prompt|z|mask)\}")


@dataclass(frozen=True)
class Segment:
    """Literal text followed by at most one placeholder (``x``, ``prompt``, ``mask`` or none)."""

    literal: str
    slot: Literal["x", "prompt", "mask", None]


@dataclass(frozen=True)
class Template:
    """A parsed template; see the module docstring."""

    text: str
    segments: tuple[Segment, ...]

    @classmethod
    def parse(cls, text: str, kind: Kind) -> Template:
        """Parse and check ``text`` for a target of ``kind``; errors name the fix."""
        segments: list[Segment] = []
        pos = 0
        for match in _PLACEHOLDER.finditer(text):
            slot = "prompt" if match.group(1) == "z" else match.group(1)
            segments.append(Segment(text[pos : match.start()], slot))  # type: ignore[arg-type]
            pos = match.end()
        tail = text[pos:]
        slots = [s.slot for s in segments]
        for slot in ("x", "prompt", "mask"):
            if slots.count(slot) > 1:
                raise ConfigError(f"task.template {text!r}: {{{slot}}} appears more than once")
        if "x" not in slots:
            raise ConfigError(f"task.template {text!r} must contain {{x}} (where the input goes)")
        if kind == "masked":
            if "mask" not in slots:
                raise ConfigError(
                    f"task.template {text!r} has no {{mask}}: a masked-LM target predicts the label "
                    "word at the mask, e.g. '{x} {prompt} {mask} .'"
                )
        else:
            if "mask" in slots:
                if slots[-1] != "mask" or tail.strip():
                    raise ConfigError(
                        f"task.template {text!r}: a causal target predicts the token after the text, so "
                        "{mask} may only end the template (e.g. '{x} {prompt}')"
                    )
                segments[-1] = Segment(segments[-1].literal, None)
        if tail:
            segments.append(Segment(tail, None))
        segments = [s for s in segments if s.literal or s.slot]
        return cls(text, tuple(segments))

    @property
    def prompt_after_input(self) -> bool:
        """True when every input-dependent segment precedes the prompt (the causal cache applies)."""
        slots = [s.slot for s in self.segments]
        return "prompt" in slots and slots.index("x") < slots.index("prompt")

    def render(self, x: str, prompt: str, mask_token: str = "<mask>") -> str:
        """The template as one string (for display and for endpoints that take text)."""
        out = []
        for seg in self.segments:
            value = {"x": x.strip(), "prompt": prompt.strip(), "mask": mask_token, None: ""}[
                seg.slot
            ]
            if seg.slot == "prompt" and not value and not seg.literal.strip():
                continue
            out.append(seg.literal + value)
        return "".join(out)


@dataclass(frozen=True)
class Encoded:
    """Token ids of one (input, prompt) pair and the position whose logits give the class scores."""

    ids: list[int]
    position: int
    input_span: tuple[int, int]  # [start, end) of the input's tokens in ``ids``


class TemplateEncoder:
    """Turns (input, prompt) pairs into token ids for one tokenizer and template.

    Args:
        tokenizer: a Hugging Face tokenizer.
        template: the parsed template.
        kind: ``masked`` (score at the mask token) or ``causal`` (score the next token after the text).
        max_length: longest sequence; the input is cut from its end to fit.
    """

    def __init__(self, tokenizer, template: Template, kind: Kind, max_length: int) -> None:
        self.tokenizer = tokenizer
        self.template = template
        self.kind = kind
        self.max_length = max_length
        if kind == "masked" and tokenizer.mask_token_id is None:
            raise ConfigError("the target's tokenizer has no mask token; set target.kind: causal")
        self.lead, self.trail = special_tokens_around(tokenizer)
        if kind == "causal":
            self.trail = []  # a causal target predicts the next token: never end on EOS/SEP
        self._cache: dict[str, list[int]] = {}

    def _start_id(self) -> int:
        tok = self.tokenizer
        start = tok.bos_token_id if tok.bos_token_id is not None else tok.eos_token_id
        if start is None:
            raise ConfigError("an empty text with no BOS/EOS token leaves nothing to score")
        return start

    def _tok(self, text: str) -> list[int]:
        ids = self._cache.get(text)
        if ids is None:
            ids = self.tokenizer(text, add_special_tokens=False)["input_ids"]
            if len(self._cache) < 200_000:
                self._cache[text] = ids
        return ids

    def _segment(self, seg: Segment, x: str, prompt: str) -> list[int] | None:
        """Token ids of one segment (None when an empty prompt drops it)."""
        if seg.slot == "mask":
            lit = seg.literal if seg.literal.strip() else ""  # the mask token absorbs a bare space
            return (self._tok(lit) if lit else []) + [self.tokenizer.mask_token_id]
        if seg.slot == "prompt":
            value = prompt.strip()
            if not value:
                return self._tok(seg.literal.rstrip()) if seg.literal.strip() else None
            return self._tok(seg.literal + value)
        if seg.slot == "x":
            return self._tok(seg.literal + x.strip())
        return self._tok(seg.literal)

    def segment_ids(self, x: str, prompt: str) -> list[tuple[str | None, list[int]]]:
        """Token ids of each segment, labelled by slot (mask segments end in the mask id)."""
        out = []
        for seg in self.template.segments:
            ids = self._segment(seg, x, prompt)
            if ids is not None:
                out.append((seg.slot, ids))
        return out

    def split_at_prompt(self, x: str | None, prompt: str | None) -> list[int]:
        """Untruncated ids before the prompt (given ``x``) or from the prompt on (given ``prompt``).

        Only for templates whose input precedes the prompt; ``prefix + suffix`` equals
        :meth:`encode` whenever no truncation is needed.
        """
        cut = next(i for i, seg in enumerate(self.template.segments) if seg.slot == "prompt")
        if x is not None:
            segs, ids = self.template.segments[:cut], list(self.lead)
        else:
            segs, ids = self.template.segments[cut:], []
        for seg in segs:
            ids.extend(self._segment(seg, x or "", prompt or "") or [])
        return ids if x is not None else ids + self.trail

    def encode(self, x: str, prompt: str) -> Encoded:
        """Ids for one pair, with the input truncated from its end to fit ``max_length``."""
        parts = self.segment_ids(x, prompt)
        total = len(self.lead) + len(self.trail) + sum(len(ids) for _, ids in parts)
        excess = total - self.max_length
        ids = list(self.lead)
        span = (0, 0)
        position = -1
        for slot, seg in parts:
            if slot == "x":
                if excess > 0:
                    keep = len(seg) - excess
                    if keep < 1:
                        raise ConfigError(
                            f"the template and prompt alone take {total - len(seg)} tokens, over the "
                            f"target's limit of {self.max_length}; shorten the prompt or template"
                        )
                    seg = seg[:keep]
                span = (len(ids), len(ids) + len(seg))
            ids.extend(seg)
            if slot == "mask":
                position = len(ids) - 1
        ids.extend(self.trail)
        if self.kind == "causal":
            if not ids:  # empty input, bare template, no BOS: condition on the BOS/EOS token alone
                ids = [self._start_id()]
            position = len(ids) - 1
        return Encoded(ids, position, span)


def special_tokens_around(tokenizer) -> tuple[list[int], list[int]]:
    """The special tokens a tokenizer puts before and after a text (e.g. ``<s>`` and ``</s>``)."""
    probe = "hello world"
    full = tokenizer(probe, add_special_tokens=True)["input_ids"]
    bare = tokenizer(probe, add_special_tokens=False)["input_ids"]
    for start in range(len(full) - len(bare) + 1):
        if full[start : start + len(bare)] == bare:
            return list(full[:start]), list(full[start + len(bare) :])
    return [], []


def verbalizer_ids(tokenizer, words: list[str]) -> list[int]:
    """Token id of each label word; a word that is not exactly one token is a :class:`VerbalizerError`."""
    ids = []
    for word in words:
        toks = tokenizer(word, add_special_tokens=False)["input_ids"]
        if len(toks) != 1:
            pieces = tokenizer.convert_ids_to_tokens(toks)
            hint = (
                " (a leading space changes the token in BPE vocabularies: try "
                f"{(' ' + word.strip()) if not word.startswith(' ') else word.strip()!r})"
            )
            raise VerbalizerError(
                f"verbalizer {word!r} is {len(toks)} tokens {pieces} for this target's tokenizer, not "
                f"one; choose single-token label words in task.verbalizers{hint}"
            )
        ids.append(toks[0])
    if len(set(ids)) != len(ids):
        raise VerbalizerError(f"verbalizers {words!r} map to repeated token ids {ids}")
    return ids
