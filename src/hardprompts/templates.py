"""Templates: how an input ``x`` and a prompt ``z`` become the token ids a target scores.

Inputs are *named fields*: ``{x}`` for single-input tasks, or any names the task lists
(``"{passage}\nQuestion: {question}? {prompt} Answer:"`` with fields ``passage`` and ``question``);
``{prompt}`` (alias ``{z}``) and ``{mask}`` are reserved. A template such as ``"{x} {prompt} {mask} ."`` is cut into *segments*; each placeholder takes the
literal text in front of it, so ``"{x} {prompt} {mask} ."`` becomes ``[x] [" " + prompt]
[" " + <mask>] [" ."]``. Segments are tokenised one by one and concatenated, which gives:

* truncation of the inputs alone: tokens are cut from the end of the *longest* field first (the
  fields are cut down to a common length, longer ones first), never from the prompt, the mask or
  the template's words (:func:`allot`), and
* a token prefix that does not depend on the prompt, so a causal target can compute the input's
  key/value cache once and reuse it for every prompt.

With byte-level BPE (GPT-2, RoBERTa, the built-in models) the result equals tokenising the whole
string, because the pre-tokeniser splits before every space. Filled values are stripped of
surrounding whitespace: spacing comes from the template. An empty prompt drops its segment's
whitespace, so the bare template (no prompt) reads naturally.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Literal

from hardprompts.errors import ConfigError, VerbalizerError

Kind = Literal["masked", "causal"]
RESERVED = ("prompt", "z", "mask")
_PLACEHOLDER = re.compile(r"\{([A-Za-z_][A-Za-z0-9_]*)\}")
Values = str | Mapping[str, str]  # the input: ``x`` alone, or every field by name


@dataclass(frozen=True)
class Segment:
    """Literal text followed by at most one placeholder: a field name, ``prompt``, ``mask`` or none."""

    literal: str
    slot: str | None


@dataclass(frozen=True)
class Template:
    """A parsed template; see the module docstring. ``fields`` are the input fields, in order."""

    text: str
    segments: tuple[Segment, ...]
    fields: tuple[str, ...] = ("x",)

    @classmethod
    def parse(cls, text: str, kind: Kind, fields: Sequence[str] | None = None) -> Template:
        """Parse and check ``text`` for a target of ``kind``; errors name the fix.

        ``fields`` names the input fields (``task.fields``); unset, they are the template's
        placeholders other than ``{prompt}``/``{z}``/``{mask}``, in order of appearance.
        """
        if fields is not None:
            fields = list(fields)
            bad = [f for f in fields if f in RESERVED or not _PLACEHOLDER.fullmatch("{" + f + "}")]
            if bad or len(set(fields)) != len(fields):
                raise ConfigError(
                    f"task.fields {fields!r}: names must be distinct identifiers other than "
                    f"{', '.join(RESERVED)}"
                )
        segments: list[Segment] = []
        pos = 0
        for match in _PLACEHOLDER.finditer(text):
            name = match.group(1)
            if fields is not None and name not in RESERVED and name not in fields:
                raise ConfigError(
                    f"task.template {text!r} has {{{name}}}, which task.fields {fields} does not "
                    "list; add it to task.fields or fix the template"
                )
            slot = "prompt" if name == "z" else name
            segments.append(Segment(text[pos : match.start()], slot))
            pos = match.end()
        tail = text[pos:]
        slots = [s.slot for s in segments]
        found = [s for s in dict.fromkeys(slots) if s not in ("prompt", "mask")]
        for slot in dict.fromkeys(slots):
            if slots.count(slot) > 1:
                raise ConfigError(f"task.template {text!r}: {{{slot}}} appears more than once")
        if fields is not None:
            missing = [f for f in fields if f not in found]
            if missing:
                raise ConfigError(
                    f"task.template {text!r} does not use task.fields {missing}; every listed field "
                    "needs its {name} in the template"
                )
        if not found:
            raise ConfigError(
                f"task.template {text!r} must contain {{x}} (where the input goes), or the named "
                "fields of a multi-field input such as {passage} and {question}"
            )
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
        return cls(text, tuple(segments), tuple(found))

    @property
    def prompt_after_input(self) -> bool:
        """True when every input-dependent segment precedes the prompt (the causal cache applies)."""
        slots = [s.slot for s in self.segments]
        if "prompt" not in slots:
            return False
        cut = slots.index("prompt")
        return all(slots.index(f) < cut for f in self.fields)

    def values(self, x: Values) -> Mapping[str, str]:
        """The field values of an input given as ``x`` alone or as a mapping of every field."""
        if isinstance(x, str):
            if self.fields != ("x",):
                raise ConfigError(
                    f"task.template {self.text!r} has the fields {list(self.fields)}; an input needs "
                    "a value for each"
                )
            return {"x": x}
        missing = [f for f in self.fields if f not in x]
        if missing:
            raise ConfigError(f"the input has no value for the template's field(s) {missing}")
        return x

    def render(self, x: Values, prompt: str, mask_token: str = "<mask>") -> str:
        """The template as one string (for display and for endpoints that take text)."""
        values = self.values(x)
        out = []
        for seg in self.segments:
            if seg.slot == "prompt":
                value = prompt.strip()
                if not value and not seg.literal.strip():
                    continue
            elif seg.slot == "mask":
                value = mask_token
            elif seg.slot is None:
                value = ""
            else:
                value = values[seg.slot].strip()
            out.append(seg.literal + value)
        return "".join(out)


@dataclass(frozen=True)
class Encoded:
    """Token ids of one (input, prompt) pair and the position whose logits give the class scores."""

    ids: list[int]
    position: int
    input_span: tuple[int, int]  # [start, end) of the (first) input field's tokens in ``ids``


def allot(lengths: Sequence[int], floors: Sequence[int], budget: int) -> list[int] | None:
    """How many tokens each field keeps so that they fit ``budget``, cutting the longest first.

    Every field keeps ``max(floor_i, min(length_i, c))`` tokens for the largest common cap ``c``
    that fits; what the cap leaves of the budget goes, one token each, to the cut fields in order.
    None when even the floors do not fit. Example: lengths (10, 4, 7), floors (1, 1, 1), budget 15
    -> cap 5 -> (5, 4, 5), one spare token -> (6, 4, 5).
    """
    if sum(lengths) <= budget:
        return list(lengths)
    if sum(floors) > budget:
        return None

    def kept(cap: int) -> list[int]:
        return [max(f, min(n, cap)) for n, f in zip(lengths, floors, strict=True)]

    lo, hi = 0, max(lengths)  # kept(lo) fits (the floors do), kept(hi) does not
    while hi - lo > 1:
        mid = (lo + hi) // 2
        lo, hi = (mid, hi) if sum(kept(mid)) <= budget else (lo, mid)
    keep = kept(lo)
    spare = budget - sum(keep)
    for i, n in enumerate(lengths):
        if spare and keep[i] < n:
            keep[i] += 1
            spare -= 1
    return keep


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

    def _segment(self, seg: Segment, x: Values, prompt: str) -> list[int] | None:
        """Token ids of one segment (None when an empty prompt drops it)."""
        if seg.slot == "mask":
            lit = seg.literal if seg.literal.strip() else ""  # the mask token absorbs a bare space
            return (self._tok(lit) if lit else []) + [self.tokenizer.mask_token_id]
        if seg.slot == "prompt":
            value = prompt.strip()
            if not value:
                return self._tok(seg.literal.rstrip()) if seg.literal.strip() else None
            return self._tok(seg.literal + value)
        if seg.slot is not None:
            return self._tok(seg.literal + self.template.values(x)[seg.slot].strip())
        return self._tok(seg.literal)

    def segment_ids(self, x: Values, prompt: str) -> list[tuple[str | None, list[int]]]:
        """Token ids of each segment, labelled by slot (mask segments end in the mask id)."""
        out = []
        values = self.template.values(x) if x != "" else dict.fromkeys(self.template.fields, "")
        for seg in self.template.segments:
            ids = self._segment(seg, values, prompt)
            if ids is not None:
                out.append((seg.slot, ids))
        return out

    def split_at_prompt(self, x: Values | None, prompt: str | None) -> list[int]:
        """Untruncated ids before the prompt (given ``x``) or from the prompt on (given ``prompt``).

        Only for templates whose input precedes the prompt; ``prefix + suffix`` equals
        :meth:`encode` whenever no truncation is needed.
        """
        cut = next(i for i, seg in enumerate(self.template.segments) if seg.slot == "prompt")
        if x is not None:
            segs, ids = self.template.segments[:cut], list(self.lead)
        else:
            segs, ids = self.template.segments[cut:], []
            x = dict.fromkeys(self.template.fields, "")
        for seg in segs:
            ids.extend(self._segment(seg, x, prompt or "") or [])
        return ids if x is not None else ids + self.trail

    def truncate(
        self, parts: list[tuple[str | None, list[int]]], fixed: int = 0
    ) -> list[tuple[str | None, list[int]]]:
        """Cut the field segments of ``parts`` (longest first) so that everything fits ``max_length``.

        ``fixed`` counts tokens outside ``parts`` (e.g. a prompt given as embeddings). A field keeps
        at least one token (and the template words in front of it); the prompt, the mask and the
        template's other words are never cut. Too long even then: :class:`ConfigError`.
        """
        total = fixed + len(self.lead) + len(self.trail) + sum(len(ids) for _, ids in parts)
        if total <= self.max_length:
            return parts
        is_field = [slot not in (None, "prompt", "mask") for slot, _ in parts]
        lengths = [len(ids) for (_, ids), f in zip(parts, is_field, strict=True) if f]
        floors = [max(1, len(self._tok(seg.literal.rstrip()))) for seg in self._field_segments()]
        budget = self.max_length - (total - sum(lengths))
        keep = allot(lengths, floors, budget)
        if keep is None:
            raise ConfigError(
                f"the template and prompt alone take {total - sum(lengths)} tokens, over the "
                f"target's limit of {self.max_length} with {sum(floors)} token(s) left for the "
                "input; shorten the prompt or template"
            )
        out, k = [], iter(keep)
        for (slot, ids), f in zip(parts, is_field, strict=True):
            out.append((slot, ids[: next(k)] if f else ids))
        return out

    def _field_segments(self) -> list[Segment]:
        return [s for s in self.template.segments if s.slot not in (None, "prompt", "mask")]

    def encode(self, x: Values, prompt: str) -> Encoded:
        """Ids for one pair, the input fields cut (longest first) to fit ``max_length``."""
        parts = self.truncate(self.segment_ids(x, prompt))
        ids = list(self.lead)
        span = None
        position = -1
        for slot, seg in parts:
            if slot not in (None, "prompt", "mask") and span is None:
                span = (len(ids), len(ids) + len(seg))
            ids.extend(seg)
            if slot == "mask":
                position = len(ids) - 1
        ids.extend(self.trail)
        if self.kind == "causal":
            if not ids:  # empty input, bare template, no BOS: condition on the BOS/EOS token alone
                ids = [self._start_id()]
            position = len(ids) - 1
        return Encoded(ids, position, span or (0, 0))

    def fit(self, x: Values, prompt: str, reserve: int = 0) -> dict[str, str]:
        """The field values, cut (longest first, at token boundaries) so that the rendered text
        leaves ``reserve`` tokens free (for generated tokens or a choice).

        For targets that take text (generation, multiple choice): render the template with the
        returned values. Each value is tokenised on its own, cut, decoded and checked again.
        """
        values = dict(self.template.values(x))
        limit = self.max_length - reserve
        for _ in range(8):  # re-tokenising a decoded cut may merge differently; converge
            parts = self.segment_ids(values, prompt)
            total = len(self.lead) + sum(len(ids) for _, ids in parts)
            if total <= limit:
                return values
            toks = {f: self._tok(values[f].strip()) for f in self.template.fields}
            fields = list(self.template.fields)
            budget = sum(len(toks[f]) for f in fields) - (total - limit)
            keep = allot([len(toks[f]) for f in fields], [1] * len(fields), budget)
            if keep is None:
                raise ConfigError(
                    f"the template and prompt alone take about {total - sum(len(t) for t in toks.values())} "
                    f"tokens, over the target's limit of {self.max_length} minus {reserve} reserved; "
                    "shorten the prompt or template"
                )
            for f, n in zip(fields, keep, strict=True):
                if n < len(toks[f]):
                    values[f] = self.tokenizer.decode(toks[f][:n])
        raise ConfigError(f"could not fit the input fields in {limit} tokens")


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
