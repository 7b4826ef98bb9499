"""RLPrompt's training reward (METHODS.md §2), with the optional perplexity term (§6).

For a prompt z and the training split {(x, c)}:

    gap(x)   = p(c | x, z) − max_{c' ≠ c} p(c' | x, z)            (over the C verbalizers)
    r(x)     = gap(x) · (λ₂ = 200 if gap(x) > 0 else λ₁ = 180)
    R_task   = mean_x r(x)
    R_total  = R_task − α_ppl · log PPL(z)                        (§6; α_ppl = 0: off)
    R̃        = (R_total − mean_P R_total) / (std_P R_total + 1e-4)  (over the P prompts of a step)
    r_final  = 5 · R̃                                              (the reward the loss sees)

The functions below compute one line each and are pure. :class:`TrainingReward` owns what is not
pure: it calls the target on the training split, runs the reference LM for the perplexity, and
caches both per prompt string, so a prompt sampled again is not scored again. The cache is part
of the checkpoint: a resumed run then asks the target for exactly the prompts an uninterrupted
run asks for, in the same batches, and gets bit-identical rewards.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any, NamedTuple

import torch
from torch import Tensor

from hardprompts.metrics import gap_reward
from hardprompts.targets import Target
from hardprompts.tasks import Split

__all__ = [
    "RewardBatch",
    "TrainingReward",
    "perplexity_regularised",
    "prompt_log_perplexity",
    "shaped_reward",
    "task_reward",
    "zscore",
]


# ----------------------------------------------------------------------------------------------
# Pure functions
# ----------------------------------------------------------------------------------------------


def task_reward(
    logits: Tensor,
    labels: Tensor,
    *,
    correct_coef: float = 200.0,
    incorrect_coef: float = 180.0,
) -> Tensor:
    """R_task(z): the mean gap reward of each prompt over the examples (METHODS.md §2).

    Args:
        logits: [P, N, C] verbalizer logits of P prompts on N examples.
        labels: [N] long gold classes.
        correct_coef: λ₂, the weight of a positive gap (RLPrompt: 200).
        incorrect_coef: λ₁, the weight of a negative gap (RLPrompt: 180).

    Returns:
        [P]. The other classes of the max are excluded by index, so ties count (gap = 0).
    """
    # r(x) = gap(x) · (λ₂ if gap > 0 else λ₁);  R = mean_x r(x)
    return gap_reward(logits, labels, correct_coef, incorrect_coef)


def perplexity_regularised(task: Tensor, log_perplexity: Tensor | None, weight: float) -> Tensor:
    """R_total = R_task − α · log PPL(z) (METHODS.md §6). [P], [P] → [P]; α = 0 returns R_task."""
    if weight == 0.0:
        return task
    if log_perplexity is None:
        raise ValueError("a perplexity weight needs log_perplexity")
    return task - weight * log_perplexity  # R_total = R_task − α · log PPL(z)


def zscore(reward: Tensor, eps: float = 1e-4) -> Tensor:
    """R̃ = (R − mean) / (std + 1e-4) over the P prompts of one step. [P] → [P].

    The standard deviation is the population one (divide by P), as ``np.std`` in RLPrompt's
    reward; equal rewards give R̃ = 0.
    """
    mean = reward.mean()
    std = reward.std(correction=0)
    return (reward - mean) / (std + eps)  # R̃ = (R − mean) / (std + 1e-4)


def shaped_reward(total: Tensor, *, normalise: bool = True, scale: float = 5.0) -> Tensor:
    """The reward the loss sees: r_final = scale · zscore(R_total) (RLPrompt: 5 · R̃). [P] → [P]."""
    r = zscore(total) if normalise else total
    return scale * r  # r_final = 5 · R̃


@torch.no_grad()
def prompt_log_perplexity(prompts: Sequence[str], model, tokenizer) -> Tensor:
    """log PPL(z) = −(1/T) Σ_t log p_ref(a_t | BOS, a_<t) of each prompt (METHODS.md §6). → [P].

    Batched version of :func:`hardprompts.metrics.prompt_perplexity` (same tokenisation: the
    stripped prompt, no special tokens, after the reference's BOS, else EOS), so the penalised
    quantity is the logarithm of the perplexity that ``result.json`` reports.

    A prompt with no tokens after stripping (whitespace only) gets log |V|, the perplexity of
    uniform noise (our choice): it is never preferred as "readable".
    """
    bos = tokenizer.bos_token_id if tokenizer.bos_token_id is not None else tokenizer.eos_token_id
    device = next(model.parameters()).device
    ids = [tokenizer(p.strip(), add_special_tokens=False)["input_ids"] for p in prompts]
    out = torch.full((len(prompts),), math.log(model.get_output_embeddings().out_features))
    rows = [i for i, seq in enumerate(ids) if seq]
    if not rows:
        return out
    width = 1 + max(len(ids[i]) for i in rows)
    seq = torch.full((len(rows), width), bos, dtype=torch.long)
    attn = torch.zeros((len(rows), width), dtype=torch.long)
    for j, i in enumerate(rows):
        seq[j, : 1 + len(ids[i])] = torch.tensor([bos, *ids[i]])
        attn[j, : 1 + len(ids[i])] = 1
    seq, attn = seq.to(device), attn.to(device)
    logp = model(input_ids=seq, attention_mask=attn).logits[:, :-1].float().log_softmax(-1)
    token_logp = logp.gather(-1, seq[:, 1:, None]).squeeze(-1)  # log p(a_t | BOS, a_<t)  [R, L]
    valid = attn[:, 1:].float()
    nll = -(token_logp * valid).sum(1) / valid.sum(1)  # −(1/T) Σ_t log p(a_t | …)
    out[rows] = nll.cpu()
    return out


# ----------------------------------------------------------------------------------------------
# The reward of one training step, with its cache
# ----------------------------------------------------------------------------------------------


class RewardBatch(NamedTuple):
    """Rewards of the P prompts of one step; every field is [P] float32 on the CPU.

    Attributes:
        task: R_task, the mean gap reward on the training split.
        log_perplexity: log PPL(z) under the reference LM; None when the weight is 0.
        total: R_total = R_task − α · log PPL(z) (= task when the weight is 0).
        shaped: r_final, z-scored over the P prompts and scaled: what the loss receives.
        scored: how many distinct prompts the target scored this step (cache misses).
    """

    task: Tensor
    log_perplexity: Tensor | None
    total: Tensor
    shaped: Tensor
    scored: int


class TrainingReward:
    """Scores prompts on the training split with the target; caches the raw scores per prompt.

    Args:
        target: the frozen LM being prompted (any :class:`~hardprompts.targets.Target`).
        train: the training split; every example is scored for every prompt.
        correct_coef, incorrect_coef: λ₂ and λ₁ of the gap reward.
        normalise: z-score over the step's prompts.
        scale: the shaping factor after the z-score.
        perplexity_weight: α of METHODS.md §6 (0 = off).
        reference: (causal LM, tokenizer) for log PPL; needed when ``perplexity_weight`` > 0.
        cache: remember the scores of every prompt already seen (keyed by the exact string).
    """

    def __init__(
        self,
        target: Target,
        train: Split,
        *,
        correct_coef: float = 200.0,
        incorrect_coef: float = 180.0,
        normalise: bool = True,
        scale: float = 5.0,
        perplexity_weight: float = 0.0,
        reference: tuple[Any, Any] | None = None,
        cache: bool = True,
    ) -> None:
        if perplexity_weight != 0.0 and reference is None:
            raise ValueError("perplexity_weight > 0 needs a reference (model, tokenizer)")
        self.target = target
        self.texts = list(train.texts)
        self.labels = torch.tensor(list(train.labels))
        self.correct_coef = correct_coef
        self.incorrect_coef = incorrect_coef
        self.normalise = normalise
        self.scale = scale
        self.perplexity_weight = perplexity_weight
        self.reference = reference if perplexity_weight != 0.0 else None
        self.use_cache = cache
        # prompt → (R_task, log PPL or nan)
        self.cache: dict[str, tuple[float, float]] = {}

    def _score(self, prompts: list[str]) -> dict[str, tuple[float, float]]:
        """Raw scores of distinct prompts: the target on the training split, then the reference LM."""
        logits = self.target.score(prompts, self.texts)  # [P, N, C]
        task = task_reward(
            logits,
            self.labels,
            correct_coef=self.correct_coef,
            incorrect_coef=self.incorrect_coef,
        )
        if self.reference is not None:
            log_ppl = prompt_log_perplexity(prompts, *self.reference).tolist()
        else:
            log_ppl = [float("nan")] * len(prompts)
        return {p: (float(t), lp) for p, t, lp in zip(prompts, task.tolist(), log_ppl, strict=True)}

    def __call__(self, prompts: Sequence[str]) -> RewardBatch:
        """Rewards of the P prompts sampled in one training step."""
        known = self.cache if self.use_cache else {}
        new = [p for p in dict.fromkeys(prompts) if p not in known]  # distinct, unseen
        fresh = self._score(new) if new else {}
        if self.use_cache:
            self.cache.update(fresh)
        scores = [known[p] if p in known else fresh[p] for p in prompts]
        task = torch.tensor([s[0] for s in scores], dtype=torch.float32)
        log_ppl = (
            torch.tensor([s[1] for s in scores], dtype=torch.float32)
            if self.reference is not None
            else None
        )
        total = perplexity_regularised(task, log_ppl, self.perplexity_weight)
        shaped = shaped_reward(total, normalise=self.normalise, scale=self.scale)
        return RewardBatch(task, log_ppl, total, shaped, len(new))

    def state_dict(self) -> dict[str, Any]:
        """The cache as a list of prompts and two float64 tensors (for the checkpoint)."""
        return {
            "prompts": list(self.cache),
            "task": torch.tensor([v[0] for v in self.cache.values()], dtype=torch.float64),
            "log_perplexity": torch.tensor(
                [v[1] for v in self.cache.values()], dtype=torch.float64
            ),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        task, log_ppl = state["task"].tolist(), state["log_perplexity"].tolist()
        self.cache = {p: (t, lp) for p, t, lp in zip(state["prompts"], task, log_ppl, strict=True)}
