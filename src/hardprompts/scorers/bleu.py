"""BLEU of outputs against references (sacrebleu, in the ``style`` extra).

``bleu`` averages sentence-level BLEU (RLPrompt's evaluator: ``sacrebleu.sentence_bleu`` per
output, then the mean); ``corpus_bleu`` is sacrebleu's corpus BLEU; ``self_bleu`` is BLEU against
the inputs (how much an output merely copies its source). All on 0–100, sacrebleu's defaults
(13a tokenisation, exponential smoothing for sentence BLEU).
"""

from __future__ import annotations

from collections.abc import Sequence

from hardprompts.errors import ConfigError, MissingExtraError
from hardprompts.scorers._common import check_texts


def _sacrebleu():
    try:
        import sacrebleu
    except ImportError:
        raise MissingExtraError(
            'BLEU needs sacrebleu, part of the optional extra "style": run '
            '`pip install "hardprompts[style]"`'
        ) from None
    return sacrebleu


def _refs(outputs: Sequence[str], references) -> tuple[list[str], list[list[str]]]:
    outputs = check_texts("outputs", outputs)
    if isinstance(references, str):
        raise ConfigError("references must be a sequence (one per output), got one string")
    refs = [[r] if isinstance(r, str) else check_texts("references", r) for r in references]
    if len(refs) != len(outputs):
        raise ConfigError(f"got {len(refs)} references for {len(outputs)} outputs")
    if any(not r for r in refs):
        raise ConfigError("every output needs at least one reference")
    return outputs, refs


def bleu(outputs: Sequence[str], references: Sequence[str] | Sequence[Sequence[str]]) -> float:
    """Mean sentence BLEU; ``references[i]`` is one string or a list of strings for output i."""
    sb = _sacrebleu()
    outputs, refs = _refs(outputs, references)
    if not outputs:
        raise ConfigError("BLEU of no outputs is undefined")
    return sum(sb.sentence_bleu(o, r).score for o, r in zip(outputs, refs, strict=True)) / len(
        outputs
    )


def corpus_bleu(
    outputs: Sequence[str], references: Sequence[str] | Sequence[Sequence[str]]
) -> float:
    """sacrebleu corpus BLEU (outputs may have different numbers of references)."""
    sb = _sacrebleu()
    outputs, refs = _refs(outputs, references)
    if not outputs:
        raise ConfigError("BLEU of no outputs is undefined")
    width = max(len(r) for r in refs)
    streams = [[r[k] if k < len(r) else None for r in refs] for k in range(width)]
    return sb.corpus_bleu(outputs, streams).score


def self_bleu(outputs: Sequence[str], sources: Sequence[str]) -> float:
    """Mean sentence BLEU of each output against its own source (lower = less copying)."""
    return bleu(outputs, check_texts("sources", sources))
