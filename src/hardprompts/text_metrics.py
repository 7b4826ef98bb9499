"""Metrics on generated answers and chosen options: pure functions, strings in, floats out.

Instruction induction (Honovich et al., 2022) scores a generated answer against every acceptable
answer of the example and keeps the best (any-of). Its evaluation code normalises both sides the
same way (:func:`normalize_answer`) and uses, per task (:data:`II_TASK_METRIC`):

* ``em``: the normalised strings are equal (the default);
* ``contains``: the normalised answer appears in the normalised prediction as whole words
  (``synonyms``: the model may list several synonyms);
* ``exact_set``: the same set of words (``orthography_starts_with``, ``taxonomy_animal``: the order
  of the listed words does not matter);
* ``f1``: word-overlap F1, max over answers (``common_concept``, ``informal_to_formal``).

BIG-bench generation tasks use ``exact_str_match``: the answer after the task's own output regex, with
surrounding whitespace stripped, equals one of the targets exactly (case and punctuation count).
Multiple choice uses :func:`choice_accuracy` (argmax of the choices' scores is the correct one).
"""

from __future__ import annotations

import re
import string
from collections import Counter
from collections.abc import Callable, Sequence

__all__ = [
    "II_TASK_METRIC",
    "METRICS",
    "choice_accuracy",
    "contains",
    "exact_match",
    "exact_set",
    "exact_str_match",
    "normalize_answer",
    "token_f1",
]

_PUNCT = str.maketrans("", "", string.punctuation)


def normalize_answer(text: str) -> str:
    """The instruction-induction normalisation, applied to predictions and answers alike.

    In order: ``" and "`` becomes a space; the markers ``Sentence 1:`` / ``Sentence 2:`` are removed;
    surrounding whitespace is stripped; only the first line, and in it the text before the first
    ``"."``, is kept; lower case; ``"-"`` becomes a space; ASCII punctuation is removed. Inner
    whitespace is kept as it is (as in the paper's code), so ``"a  b"`` and ``"a b"`` differ.
    """
    text = text.replace(" and ", " ").replace("Sentence 1:", " ").replace("Sentence 2:", " ")
    text = text.strip().split("\n")[0].split(".")[0].lower()
    return text.replace("-", " ").translate(_PUNCT)


def exact_match(prediction: str, answers: Sequence[str]) -> float:
    """1.0 if the normalised prediction equals any normalised answer, else 0.0."""
    pred = normalize_answer(prediction)
    return float(any(pred == normalize_answer(a) for a in answers))


def contains(prediction: str, answers: Sequence[str]) -> float:
    """1.0 if any normalised answer occurs in the normalised prediction between word boundaries.

    An answer that normalises to the empty string matches only an empty prediction.
    """
    pred = normalize_answer(prediction)
    for answer in answers:
        gold = normalize_answer(answer)
        if not gold.strip():
            if not pred.strip():
                return 1.0
            continue
        if re.search(rf"\b{re.escape(gold)}\b", pred):
            return 1.0
    return 0.0


def exact_set(prediction: str, answers: Sequence[str]) -> float:
    """1.0 if the prediction's set of normalised words equals any answer's, else 0.0."""
    pred = set(normalize_answer(prediction).split())
    return float(any(pred == set(normalize_answer(a).split()) for a in answers))


def token_f1(prediction: str, answers: Sequence[str]) -> float:
    """Best word-overlap F1 between the normalised prediction and any normalised answer.

    F1 = 2·P·R / (P + R) with P = shared / prediction words and R = shared / answer words (shared
    words counted with multiplicity); 0 when no word is shared.
    """
    pred = normalize_answer(prediction).split()
    best = 0.0
    for answer in answers:
        gold = normalize_answer(answer).split()
        shared = sum((Counter(pred) & Counter(gold)).values())
        if shared:
            precision, recall = shared / len(pred), shared / len(gold)
            best = max(best, 2 * precision * recall / (precision + recall))
    return best


def exact_str_match(
    prediction: str, answers: Sequence[str], output_regex: str | None = None
) -> float:
    """BIG-bench's ``exact_str_match``: 1.0 if the stripped prediction is one of the answers.

    With ``output_regex`` (a task's own post-processing, e.g. BIG-bench ``operators``), the
    prediction is first replaced by the regex's first match (its first group, if it has groups), or
    the empty string when nothing matches. Case, inner whitespace and punctuation count.
    """
    if output_regex is not None:
        found = re.search(output_regex, prediction)
        prediction = "" if found is None else (found.group(1) if found.groups() else found.group(0))
    pred = prediction.strip()
    return float(any(pred == a.strip() for a in answers))


#: Generation metrics by name: ``metric(prediction, answers) -> float in [0, 1]``.
METRICS: dict[str, Callable[[str, Sequence[str]], float]] = {
    "em": exact_match,
    "contains": contains,
    "exact_set": exact_set,
    "f1": token_f1,
    "exact_str_match": exact_str_match,
}

#: The instruction-induction tasks whose metric is not ``em`` (Honovich et al.'s evaluation code).
II_TASK_METRIC: dict[str, str] = {
    "common_concept": "f1",
    "informal_to_formal": "f1",
    "orthography_starts_with": "exact_set",
    "taxonomy_animal": "exact_set",
    "synonyms": "contains",
}


def choice_accuracy(scores: Sequence[Sequence[float]], labels: Sequence[int]) -> float:
    """Fraction of examples whose best-scored choice is the correct one.

    ``scores[i]`` holds one score per choice of example ``i`` (choices may differ in number); a
    tie goes to the first of the tied choices, so a constant scorer is not credited by luck.
    """
    if len(scores) != len(labels):
        raise ValueError(f"{len(scores)} score rows for {len(labels)} labels")
    if not labels:
        raise ValueError("no examples to score")
    hits = 0
    for row, label in zip(scores, labels, strict=True):
        best = max(range(len(row)), key=lambda j: (row[j], -j))
        hits += best == label
    return hits / len(labels)
