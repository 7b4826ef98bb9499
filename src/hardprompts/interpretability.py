"""Reading continuous prompts as tokens, and how faithful that reading is (Wen et al. 2023;
Patel et al. 2025; docs: Methods › PEZ and Methods › Soft prompts).

* :func:`nearest_tokens`: project each row of a continuous prompt onto the nearest vocabulary
  embedding (cosine, PEZ's default, or L2), among allowed tokens only.
* :func:`allowed_token_mask` and :func:`reference_topk_mask`: which tokens a projection may use.
* :func:`faithfulness`: does the model treat a soft prompt as it treats its hard projection?
  Label agreement, 1 − mean total-variation distance between the class distributions, and the
  accuracy gap (Patel et al., 2025, "Towards Interpretable Soft Prompts").

The projection and the faithfulness maths are pure functions on tensors.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import torch
from torch import Tensor

from hardprompts.errors import ConfigError
from hardprompts.metrics import document_start_id

__all__ = [
    "allowed_token_mask",
    "faithfulness",
    "nearest_tokens",
    "reference_topk_mask",
    "total_variation",
]

Metric = Literal["cosine", "l2"]


def nearest_tokens(
    embeds: Tensor, table: Tensor, allowed: Tensor | None = None, metric: Metric = "cosine"
) -> Tensor:
    """Nearest allowed vocabulary row of each prompt row.

    a_t = argmax_{v allowed} cos(P_t, E_v)   (cosine, PEZ's projection), or
    a_t = argmin_{v allowed} ‖P_t − E_v‖²     (l2)

    Args:
        embeds: [..., T, d] continuous prompt rows P_t.
        table: [V, d] vocabulary embeddings E.
        allowed: [V] bool, True where a token may be chosen; None = every row.
        metric: ``cosine`` or ``l2``.

    Returns:
        [..., T] long token ids. Ties go to the lowest id.
    """
    embeds = embeds.detach().float()
    table = table.detach().float()
    if metric == "cosine":
        score = (
            torch.nn.functional.normalize(embeds, dim=-1)
            @ torch.nn.functional.normalize(table, dim=-1).T
        )  # [..., T, V]
    elif metric == "l2":
        # −‖p − e‖² = 2 p·e − ‖e‖² − ‖p‖²; the last term is constant per row.
        score = 2 * embeds @ table.T - (table * table).sum(-1)
    else:
        raise ConfigError(f"projection metric {metric!r} is not one of cosine, l2")
    if allowed is not None:
        if not bool(allowed.any()):
            raise ConfigError("the allowed-token mask allows no token; relax allowed_tokens")
        score = score.masked_fill(~allowed.to(score.device), float("-inf"))
    return score.argmax(-1)


def _word_start(tokens: Sequence[str]) -> tuple[str, bool]:
    """The tokenizer's word-start convention: (marker, marker starts words) or ('##', continues)."""
    for marker in ("Ġ", "▁"):  # byte-level BPE (GPT-2, RoBERTa), SentencePiece (Llama, T5)
        if sum(t.startswith(marker) for t in tokens) > len(tokens) // 20:
            return marker, True
    if any(t.startswith("##") for t in tokens):  # WordPiece (BERT): '##' continues a word
        return "##", False
    raise ConfigError(
        "allowed_tokens: words needs a tokenizer that marks word starts (Ġ or ▁) or continuations "
        "(##); this one marks neither, so use allowed_tokens: all or topk"
    )


def allowed_token_mask(tokenizer, num_rows: int, mode: Literal["all", "words"] = "all") -> Tensor:
    """Tokens a projection may use. Special tokens and rows past the tokenizer's vocabulary never.

    Args:
        tokenizer: the target's tokenizer.
        num_rows: rows of the embedding table (may exceed the vocabulary: padding rows).
        mode: ``all``; or ``words``: whole alphabetic words only, i.e. tokens that start a word
            (byte-level BPE: ``Ġ`` then letters; SentencePiece: ``▁`` then letters; WordPiece:
            letters without ``##``).

    Returns:
        [num_rows] bool.
    """
    size = min(num_rows, len(tokenizer))
    tokens = tokenizer.convert_ids_to_tokens(list(range(size)))
    mask = torch.zeros(num_rows, dtype=torch.bool)
    mask[:size] = True
    if mode == "words":
        marker, starts = _word_start(tokens)
        for i, tok in enumerate(tokens):
            if starts:
                mask[i] = tok.startswith(marker) and tok[len(marker) :].isalpha()
            else:
                mask[i] = not tok.startswith(marker) and tok.isalpha()
    elif mode != "all":
        raise ConfigError(f"allowed_tokens {mode!r} is not one of all, words, topk")
    special = [i for i in tokenizer.all_special_ids if i is not None and 0 <= i < num_rows]
    mask[special] = False
    return mask


@torch.no_grad()
def reference_topk_mask(
    model, ref_tokenizer, target_tokenizer, texts: Sequence[str], num_rows: int, k: int
) -> Tensor:
    """The k target tokens a reference causal LM finds most likely in the task's inputs.

    Our choice of a static "top-k of the reference LM" (PIN's filter is per position): the
    reference LM reads each text after its BOS token (cut to its length limit); its next-token probabilities are averaged
    over every position of every text; the k most probable tokens, mapped to the target's
    vocabulary by their token strings, are allowed (special tokens never).

    Returns:
        [num_rows] bool over the target's embedding rows.
    """
    bos = document_start_id(ref_tokenizer, model)
    from hardprompts.modeling import model_max_length

    device = next(model.parameters()).device
    longest = model_max_length(model, ref_tokenizer) - 1  # room for BOS
    total: Tensor | None = None
    count = 0
    for text in texts:
        ids = ref_tokenizer(text.strip(), add_special_tokens=False)["input_ids"][:longest]
        seq = torch.tensor([[bos, *ids]], device=device)
        probs = model(input_ids=seq).logits[0].float().softmax(-1)  # [L, V_ref]
        total = probs.sum(0) if total is None else total + probs.sum(0)
        count += probs.shape[0]
    if total is None:
        raise ConfigError("allowed_tokens: topk needs training texts to rank tokens by")
    special = set(ref_tokenizer.all_special_ids)
    ranked = [int(i) for i in (total / count).argsort(descending=True) if int(i) not in special]
    mask = torch.zeros(num_rows, dtype=torch.bool)
    same_vocab = ref_tokenizer.get_vocab() == target_tokenizer.get_vocab()
    target_vocab = target_tokenizer.get_vocab()
    target_special = set(target_tokenizer.all_special_ids)
    kept = 0
    for ref_id in ranked:
        if kept == k:
            break
        if same_vocab:
            tid = ref_id
        else:
            tid = target_vocab.get(ref_tokenizer.convert_ids_to_tokens(ref_id))
        if tid is None or tid >= num_rows or tid in target_special:
            continue
        mask[tid] = True
        kept += 1
    if kept == 0:
        raise ConfigError(
            "allowed_tokens: topk found no token shared by the reference LM's and the target's "
            "vocabularies; choose a reference_model with the target's tokenizer"
        )
    return mask


def total_variation(logits_a: Tensor, logits_b: Tensor) -> Tensor:
    """TV(p, q) = ½ Σ_c |p_c − q_c| between softmax class distributions. [..., C] x2 -> [...]."""
    p = logits_a.float().softmax(-1)
    q = logits_b.float().softmax(-1)
    return 0.5 * (p - q).abs().sum(-1)


def faithfulness(
    soft_logits: Tensor, hard_logits: Tensor, labels: Tensor | None = None
) -> dict[str, float]:
    """How faithfully a hard (projected) prompt stands for its soft prompt on one split.

    Args:
        soft_logits: [N, C] class logits with the soft prompt.
        hard_logits: [N, C] class logits with its projection.
        labels: [N] gold labels, to add the accuracies and their gap.

    Returns:
        ``label_agreement``: fraction of inputs where both predict the same class;
        ``tv_faithfulness``: 1 − mean_x TV(p_soft(·|x), p_hard(·|x));
        with labels, ``soft_accuracy``, ``projected_accuracy`` and
        ``accuracy_gap`` = soft − projected accuracy.
        All equal 1 (gap 0) when the two logits are equal.
    """
    if soft_logits.shape != hard_logits.shape:
        raise ValueError(
            f"soft and hard logits differ in shape: {tuple(soft_logits.shape)} vs "
            f"{tuple(hard_logits.shape)}"
        )
    soft_pred = soft_logits.argmax(-1)
    hard_pred = hard_logits.argmax(-1)
    out = {
        "label_agreement": float((soft_pred == hard_pred).float().mean()),
        "tv_faithfulness": float(1 - total_variation(soft_logits, hard_logits).mean()),
    }
    if labels is not None:
        labels = labels.to(soft_pred.device)
        soft_acc = float((soft_pred == labels).float().mean())
        hard_acc = float((hard_pred == labels).float().mean())
        out.update(
            soft_accuracy=soft_acc, projected_accuracy=hard_acc, accuracy_gap=soft_acc - hard_acc
        )
    return out
