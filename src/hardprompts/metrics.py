"""Scores of prompts: accuracy, RLPrompt's gap reward, StablePrompt's reward, prompt perplexity.

All functions are pure (tensors in, tensors out) apart from :func:`prompt_perplexity`, which runs
a reference LM.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass

import torch


def accuracy(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Accuracy of argmax over the verbalizers. logits [..., N, C], labels [N] -> [...]."""
    return (logits.argmax(-1) == labels).float().mean(-1)


def per_class_accuracy(
    logits: torch.Tensor, labels: torch.Tensor, num_classes: int
) -> torch.Tensor:
    """Accuracy within each gold class. logits [..., N, C] -> [..., C] (nan for an absent class)."""
    hit = (logits.argmax(-1) == labels).float()
    out = []
    for c in range(num_classes):
        sel = labels == c
        out.append(
            hit[..., sel].mean(-1) if sel.any() else torch.full(hit.shape[:-1], float("nan"))
        )
    return torch.stack(out, -1)


def gap(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """p(c|x,z) - max_{c' != c} p(c'|x,z) over the C verbalizers. logits [..., N, C] -> [..., N].

    The other classes are excluded by index, not by value, so ties are handled
    (docs: Methods › RLPrompt).
    """
    probs = logits.float().softmax(-1)
    index = labels.expand(probs.shape[:-1]).unsqueeze(-1)  # [..., N, 1]
    correct = probs.gather(-1, index).squeeze(-1)
    others = probs.scatter(-1, index, float("-inf"))
    return correct - others.max(-1).values


def gap_reward(
    logits: torch.Tensor,
    labels: torch.Tensor,
    correct_coef: float = 200.0,
    incorrect_coef: float = 180.0,
) -> torch.Tensor:
    """RLPrompt's reward R(z): mean over examples of gap(x) * (200 if gap > 0 else 180). -> [...]."""
    g = gap(logits, labels)
    r = g * torch.where(g > 0, correct_coef, incorrect_coef)  # r(x) = gap · λ₂ or λ₁
    return r.mean(-1)


def stableprompt_reward(
    logits: torch.Tensor,
    labels: torch.Tensor,
    accuracy_weight: float = 30.0,
    margin_weight: float = 0.01,
) -> torch.Tensor:
    """StablePrompt's reward of each prompt. logits [..., N, C] label-word logits, labels [N] -> [...].

    R = 30 · acc + 0.01 · mean_x (ℓ_c(x) − max_{c' ≠ c} ℓ_{c'}(x)), both terms on the C label-word
    logits ℓ (the released code indexed the wrong vocabulary rows for the margin). The other
    classes are excluded by index, so ties are handled.
    """
    logits = logits.float()
    index = labels.expand(logits.shape[:-1]).unsqueeze(-1)  # [..., N, 1]
    correct = logits.gather(-1, index).squeeze(-1)  # ℓ_c, [..., N]
    best_other = logits.scatter(-1, index, float("-inf")).max(-1).values  # max_{c'≠c} ℓ_c'
    acc = (logits.argmax(-1) == labels).float().mean(-1)
    return accuracy_weight * acc + margin_weight * (correct - best_other).mean(-1)  # R(z)


@dataclass
class PromptScore:
    """How one prompt does on one split; the rows of ``hardprompts eval`` output."""

    prompt: str
    accuracy: float
    per_class_accuracy: list[float]
    mean_gap_reward: float
    n: int
    seconds: float

    def to_dict(self) -> dict:
        return asdict(self)


def prompt_scores(
    prompts: Sequence[str], logits: torch.Tensor, labels: Sequence[int], seconds: float
) -> list[PromptScore]:
    """Summaries of class logits [P, N, C] for each prompt; ``seconds`` is split evenly."""
    y = torch.tensor(list(labels))
    acc = accuracy(logits, y)
    pca = per_class_accuracy(logits, y, logits.shape[-1])
    rew = gap_reward(logits, y)
    each = seconds / max(len(prompts), 1)
    return [
        PromptScore(p, float(acc[i]), [float(v) for v in pca[i]], float(rew[i]), len(y), each)
        for i, p in enumerate(prompts)
    ]


def document_start_id(tokenizer, model=None) -> int:
    """The token a prompt is conditioned on to score it as the start of a text (Patel et al. 2025;
    docs: Methods › Perplexity regularisation).

    The tokenizer's BOS; else the BOS the model was configured with (its ``config``, then its
    ``generation_config``): chat models such as Qwen2.5-Instruct have no tokenizer BOS, and their
    EOS (``<|im_end|>``) ends a chat turn, not a document, while their configured BOS is the
    document separator ``<|endoftext|>``; else the EOS (GPT-2's ``<|endoftext|>`` is both).
    """
    if tokenizer.bos_token_id is not None:
        return int(tokenizer.bos_token_id)
    vocab = len(tokenizer)
    for cfg in (getattr(model, "config", None), getattr(model, "generation_config", None)):
        bos = getattr(cfg, "bos_token_id", None)
        if isinstance(bos, int) and 0 <= bos < vocab:
            return bos
    if tokenizer.eos_token_id is None:
        raise ValueError("the tokenizer has no BOS or EOS token and the model no BOS")
    return int(tokenizer.eos_token_id)


@torch.no_grad()
def prompt_perplexity(prompts: Sequence[str], model, tokenizer) -> list[float]:
    """PPL(z) = exp(-(1/T) Σ_t log p_ref(a_t | BOS, a_<t)) under a causal reference LM
    (Patel et al. 2025).

    Each prompt is tokenised by the reference tokenizer and scored after its document-start
    token (:func:`document_start_id`). An empty prompt has no perplexity (nan).
    """
    bos = document_start_id(tokenizer, model)
    device = next(model.parameters()).device
    out = []
    for prompt in prompts:
        ids = tokenizer(prompt.strip(), add_special_tokens=False)["input_ids"]
        if not ids:
            out.append(float("nan"))
            continue
        seq = torch.tensor([[bos, *ids]], device=device)
        logp = (
            model(input_ids=seq, attention_mask=torch.ones_like(seq))
            .logits[0, :-1]
            .float()
            .log_softmax(-1)
        )
        nll = -logp.gather(-1, seq[0, 1:, None]).mean()
        out.append(float(nll.exp()))
    return out
