"""The shared, task-independent part of the RL training reward (RLPrompt, Deng et al. 2022, with
the perplexity term of Patel et al. 2025; docs: Methods › RLPrompt, Methods › Perplexity
regularisation).

A task (:mod:`hardprompts.tasks`) gives the raw reward R_task(z) of each prompt (classification:
RLPrompt's gap reward below); from there on every task is treated alike:

    gap(x)   = p(c | x, z) − max_{c' ≠ c} p(c' | x, z)            (classification, over the C verbalizers)
    r(x)     = gap(x) · (λ₂ = 200 if gap(x) > 0 else λ₁ = 180)
    R_task   = mean_x r(x)
    R_total  = R_task − α_ppl · log PPL(z)                        (Patel et al.; α_ppl = 0: off)
    R̃        = (R_total − mean_P R_total) / (std_P R_total + 1e-4)  (over the P prompts of a step,
                                                                   or within the task's groups)
    r_final  = 5 · R̃                                              (the reward the loss sees)

The functions below compute one line each and are pure. :class:`TrainingReward` owns what is not
pure: it asks the task for R_task, runs the reference LM for the perplexity, and — when the task
says its rewards depend on the prompt alone — caches both per prompt string, so a prompt sampled
again is not scored again. The cache is part of the checkpoint: a resumed run then asks the task
for exactly the prompts an uninterrupted run asks for, in the same batches, and gets
bit-identical rewards. A task whose rewards are sampled (style transfer) is asked for every
prompt every time, and may return groups: the z-score then runs within each group (per input,
as RLPrompt §4; docs: Guides › Style transfer).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any, NamedTuple

import torch
from torch import Tensor

from hardprompts.metrics import document_start_id, gap_reward
from hardprompts.tasks import PromptTask, RewardSpec, RLPromptReward

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
    """R_task(z): the mean gap reward of each prompt over the examples (Deng et al. 2022).

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
    """R_total = R_task − α · log PPL(z) (Patel et al. 2025). [P], [P] → [P]; α = 0: R_task."""
    if weight == 0.0:
        return task
    if log_perplexity is None:
        raise ValueError("a perplexity weight needs log_perplexity")
    return task - weight * log_perplexity  # R_total = R_task − α · log PPL(z)


def zscore(
    reward: Tensor,
    eps: float = 1e-4,
    groups: Tensor | None = None,
    spread: Tensor | None = None,
) -> Tensor:
    """R̃ = (R − mean) / (std + 1e-4) over the P prompts of one step. [P] → [P].

    The standard deviation is the population one (divide by P), as ``np.std`` in RLPrompt's
    reward; equal rewards give R̃ = 0. With ``groups`` ([P] ids), each group of prompts is
    z-scored on its own (RLPrompt's style transfer: per input); a group of one gets 0.
    With ``spread`` ([P, K]), mean and std are taken over every value of the group's rows
    instead of over its rewards (RLPrompt's style transfer: over the K bootstrap maxima of
    every prompt of the input, ``np.mean``/``np.std`` of its ``input_rewards[src]`` list).
    """
    if groups is not None:
        out = torch.empty_like(reward)
        for g in groups.unique():
            sel = groups == g
            out[sel] = zscore(reward[sel], eps, spread=None if spread is None else spread[sel])
        return out
    values = reward if spread is None else spread.reshape(-1)
    mean = values.mean()
    std = values.std(correction=0)
    return (reward - mean) / (std + eps)  # R̃ = (R − mean) / (std + 1e-4)


def shaped_reward(
    total: Tensor, *, normalise: bool = True, scale: float = 5.0, groups: Tensor | None = None
) -> Tensor:
    """The reward the loss sees: r_final = scale · zscore(R_total) (RLPrompt: 5 · R̃). [P] → [P].

    ``groups``: z-score within each group of prompts (see :func:`zscore`)."""
    r = zscore(total, groups=groups) if normalise else total
    return scale * r  # r_final = 5 · R̃


@torch.no_grad()
def prompt_log_perplexity(prompts: Sequence[str], model, tokenizer) -> Tensor:
    """log PPL(z) = −(1/T) Σ_t log p_ref(a_t | BOS, a_<t) of each prompt (Patel et al. 2025). → [P].

    Batched version of :func:`hardprompts.metrics.prompt_perplexity` (same tokenisation: the
    stripped prompt, no special tokens, after the reference's document-start token), so the penalised
    quantity is the logarithm of the perplexity that ``result.json`` reports.

    A prompt with no tokens after stripping (whitespace only) gets log |V|, the perplexity of
    uniform noise (our choice): it is never preferred as "readable".
    """
    bos = document_start_id(tokenizer, model)
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
        task: R_task, the task's raw reward (classification: the mean gap reward on train).
        log_perplexity: log PPL(z) under the reference LM; None when the weight is 0.
        total: R_total = R_task − α · log PPL(z) (= task when the weight is 0).
        shaped: r_final, z-scored over the P prompts (or within ``group``) and scaled: what the
            loss receives.
        scored: how many prompts the task scored this step (cache misses).
        group: the task's z-score groups, or None.
        metrics: the task's per-prompt scalars (only from tasks whose rewards are not cached).
    """

    task: Tensor
    log_perplexity: Tensor | None
    total: Tensor
    shaped: Tensor
    scored: int
    group: Tensor | None = None
    metrics: dict[str, Tensor] = {}


class TrainingReward:
    """Asks the task for the raw reward of prompts; adds the perplexity term, z-score and shaping.

    Args:
        task: any :class:`~hardprompts.tasks.PromptTask`.
        reward: which paper's task reward to ask for (default RLPrompt's, λ₂ = 200, λ₁ = 180).
        normalise: z-score over the step's prompts (within the task's groups, if it gives any).
        scale: the shaping factor after the z-score.
        perplexity_weight: α of Patel et al. 2025 (0 = off).
        reference: (causal LM, tokenizer) for log PPL; needed when ``perplexity_weight`` > 0.
        cache: remember the scores of every prompt already seen (keyed by the exact string);
            only where ``task.deterministic_rewards`` (a prompt's reward is a function of it).
    """

    def __init__(
        self,
        task: PromptTask,
        reward: RewardSpec | None = None,
        *,
        normalise: bool = True,
        scale: float = 5.0,
        perplexity_weight: float = 0.0,
        reference: tuple[Any, Any] | None = None,
        cache: bool = True,
    ) -> None:
        if perplexity_weight != 0.0 and reference is None:
            raise ValueError("perplexity_weight > 0 needs a reference (model, tokenizer)")
        self.task = task
        self.reward = reward if reward is not None else RLPromptReward()
        self.normalise = normalise
        self.scale = scale
        self.perplexity_weight = perplexity_weight
        self.reference = reference if perplexity_weight != 0.0 else None
        self.use_cache = cache and task.deterministic_rewards
        # prompt → (R_task, log PPL or nan)
        self.cache: dict[str, tuple[float, float]] = {}

    def _log_ppl(self, prompts: list[str]) -> list[float]:
        if self.reference is None:
            return [float("nan")] * len(prompts)
        return prompt_log_perplexity(prompts, *self.reference).tolist()

    def _score(self, prompts: list[str]) -> dict[str, tuple[float, float]]:
        """Raw scores of distinct prompts: the task on its training inputs, then the reference LM."""
        raw = self.task.train_rewards(prompts, self.reward)
        if raw.group is not None:
            raise ValueError(
                f"task {self.task.kind!r} groups its rewards but declares them deterministic; "
                "grouped (per-input) rewards need deterministic_rewards = False"
            )
        task = raw.reward.tolist()
        log_ppl = self._log_ppl(prompts)
        return {p: (float(t), lp) for p, t, lp in zip(prompts, task, log_ppl, strict=True)}

    def __call__(self, prompts: Sequence[str]) -> RewardBatch:
        """Rewards of the P prompts sampled in one training step."""
        if not self.task.deterministic_rewards:
            return self._uncached(list(prompts))
        known = self.cache if self.use_cache else {}
        new = [p for p in dict.fromkeys(prompts) if p not in known]  # distinct, unseen
        usage = getattr(getattr(self.task, "target", None), "usage", None)  # what the run cost
        if usage is not None and self.use_cache:
            usage.add(reward_cache_hits=len(prompts) - len(new))
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

    def _uncached(self, prompts: list[str]) -> RewardBatch:
        """A task with sampled rewards: every prompt scored, z-scored within the task's groups."""
        raw = self.task.train_rewards(prompts, self.reward)
        task = raw.reward.detach().float().cpu()
        log_ppl = (
            torch.tensor(self._log_ppl(prompts), dtype=torch.float32)
            if self.reference is not None
            else None
        )
        total = perplexity_regularised(task, log_ppl, self.perplexity_weight)
        group = None if raw.group is None else raw.group.cpu()
        spread = None
        if raw.spread is not None:  # each prompt's values share its perplexity term
            spread = raw.spread.detach().float().cpu()
            if log_ppl is not None:
                spread = spread - self.perplexity_weight * log_ppl[:, None]
        z = zscore(total, groups=group, spread=spread) if self.normalise else total
        if raw.shaping is None:
            shaped = self.scale * z  # r_final = scale · R̃
        else:
            lo, hi = raw.shaping
            shaped = lo + (hi - lo) * z  # RLPrompt's shaping of [0, 1] onto [new_min, new_max]
        return RewardBatch(task, log_ppl, total, shaped, len(prompts), group, dict(raw.metrics))

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
