"""StablePrompt: PPO with an adaptive anchor (APPO) on an LLM agent that writes prompts.

Kwon et al., "StablePrompt: Automatic Prompt Tuning using Reinforcement Learning for Large
Language Models", EMNLP 2024; docs: Methods › StablePrompt (APPO). One training step:

1. draw a meta-prompt of k demonstrations from the train split and let the policy (the agent
   with its "policy" LoRA adapter) sample 4 prompts from it;
2. score every prompt on a batch of training examples through the task (classification, template
   ``{prompt} Input: {x} Output:``: R = 30 · accuracy + 0.01 · label-word logit margin,
   :func:`hardprompts.metrics.stableprompt_reward`);
3. one PPO update (``ppo_epochs`` passes): token-level clipped ratio, clipped value loss, GAE,
   and a per-token KL penalty against the **anchor** adapter, not the initial model;
4. every ``update_term`` epochs, compare the policy's and the anchor's greedy prompts on dev (the
   task's dev score: accuracy for classification):
   policy better by more than ``anchor_threshold`` -> the anchor becomes an exact copy of the
   policy; worse by more than that -> the policy (value head and optimizer state too) rolls back
   to the anchor. The released code aliased the two models, so that neither the KL term nor the
   rollback acted (docs: Methods › StablePrompt (APPO)); here the anchor is a second LoRA
   adapter and a snapshot.

PPO is written here (no TRL trainer); the loss pieces are pure functions below, each with the
equation beside the line computing it. Defaults follow the TRL ``PPOConfig`` that StablePrompt's
release ran with, except where a field's doc says otherwise.
"""

from __future__ import annotations

import copy
import math
from typing import Any, Literal, NamedTuple

import torch
from pydantic import Field
from torch import Tensor

from hardprompts.agent import ANCHOR, POLICY, AgentConfig, PromptAgent, PromptPool
from hardprompts.algorithms.base import Algorithm, RunContext
from hardprompts.config import register_algorithm
from hardprompts.metrics import stableprompt_reward
from hardprompts.tasks import StablePromptReward

__all__ = [
    "APPO",
    "APPOConfig",
    "Anchor",
    "anchor_decision",
    "clipped_policy_loss",
    "clipped_value_loss",
    "gae",
    "kl_penalized_rewards",
    "masked_mean",
    "ppo_update",
    "stableprompt_reward",  # re-exported from hardprompts.metrics, where the task layer reads it
    "whiten",
]


@register_algorithm("appo")
class APPOConfig(AgentConfig):
    """StablePrompt's APPO: PPO on the agent's LoRA adapter with an adaptive anchor policy."""

    name: Literal["appo"] = Field("appo", description="Selects this algorithm.")
    lr: float = Field(1e-5, gt=0, description="Adam learning rate. StablePrompt: 1e-5.")
    lora_r: int = Field(16, ge=1, description="LoRA rank. StablePrompt: 16.")
    lora_alpha: float = Field(32.0, gt=0, description="LoRA alpha. StablePrompt: 32.")
    lora_dropout: float = Field(0.05, ge=0, lt=1, description="LoRA dropout. StablePrompt: 0.05.")
    lora_target_modules: list[str] | None = Field(
        None,
        description="Module names that get LoRA; null = peft's default for the architecture "
        "(q_proj/v_proj for Llama, Qwen2, Gemma), as StablePrompt's release.",
    )
    clip_range: float = Field(0.2, gt=0, description="PPO ratio clip ε. StablePrompt: 0.2.")
    value_clip_range: float = Field(
        0.2, gt=0, description="Value clip around the rollout's values. TRL PPOConfig: 0.2."
    )
    vf_coef: float = Field(0.1, ge=0, description="Weight of the value loss. TRL PPOConfig: 0.1.")
    gamma: float = Field(1.0, ge=0, le=1, description="Discount γ of GAE. TRL PPOConfig: 1.")
    lam: float = Field(0.95, ge=0, le=1, description="GAE λ. TRL PPOConfig: 0.95.")
    kl_coef: float = Field(
        0.2,
        ge=0,
        description="β of the per-token KL penalty to the anchor. TRL PPOConfig's initial 0.2; "
        "TRL's adaptive controller (which moves β very slowly) is not reproduced: β is fixed.",
    )
    ppo_epochs: int = Field(
        4, ge=1, description="Optimisation passes (one Adam step each) per batch. TRL: 4."
    )
    max_grad_norm: float | None = Field(
        None, gt=0, description="Clip the gradient norm to this; null = off (TRL's default)."
    )
    whiten_advantages: bool = Field(
        True, description="Normalise advantages over the batch's tokens (TRL does)."
    )
    update_term: int = Field(
        5,
        ge=1,
        description="Compare policy and anchor on dev every this many epochs (passes over the "
        "train split). StablePrompt: 5 in its few-shot script (15 in its argument default).",
    )
    anchor_threshold: float = Field(
        0.05,
        ge=0,
        description="Dev accuracy difference that moves the anchor or rolls back. StablePrompt: 0.05.",
    )
    eval_queries: int = Field(
        2,
        ge=1,
        description="Fixed meta-prompts whose greedy prompts are compared on dev (anchor check) and "
        "sent to dev evaluations. StablePrompt compared 2 sampled prompts; ours are greedy.",
    )

    def make(self, ctx: RunContext) -> APPO:
        return APPO(ctx, self)


# ---------------------------------------------------------------------------- pure functions


def masked_mean(x: Tensor, mask: Tensor) -> Tensor:
    """Mean of ``x`` over the positions where ``mask`` is 1. x, mask [B, T] -> scalar."""
    return (x * mask).sum() / mask.sum().clamp(min=1)


def whiten(x: Tensor, mask: Tensor, eps: float = 1e-8) -> Tensor:
    """(x − mean) / sqrt(var + eps) over the masked positions; 0 elsewhere. [B, T] -> [B, T]."""
    mean = masked_mean(x, mask)
    var = masked_mean((x - mean) ** 2, mask)
    return (x - mean) * torch.rsqrt(var + eps) * mask


def kl_penalized_rewards(
    scores: Tensor, logprobs: Tensor, anchor_logprobs: Tensor, mask: Tensor, beta: float
) -> Tensor:
    """Per-token rewards: the KL penalty to the anchor at every token, the score at the last.

    scores [B]; logprobs, anchor_logprobs, mask [B, T] (mask a prefix of ones) -> [B, T].
    r_t = −β (log π(a_t|s_t) − log π_anchor(a_t|s_t)) + 1[t = last] · R   (Ziegler et al. 2019)
    """
    kl = (logprobs - anchor_logprobs) * mask  # per-token KL estimate to the anchor
    rewards = -beta * kl
    last = (mask.sum(1).long() - 1).clamp(min=0)  # index of each row's final token
    return rewards.scatter_add(1, last[:, None], scores[:, None].to(rewards))


def gae(
    rewards: Tensor, values: Tensor, mask: Tensor, gamma: float, lam: float
) -> tuple[Tensor, Tensor]:
    """Generalised advantage estimation (Schulman et al. 2016). All [B, T] -> (advantages, returns).

    δ_t = r_t + γ V(s_{t+1}) − V(s_t), with V = 0 after a row's last token;
    A_t = δ_t + γλ A_{t+1};  returns G_t = A_t + V(s_t). Positions outside ``mask`` are 0.
    """
    width = rewards.shape[1]
    adv = torch.zeros_like(rewards)
    running = torch.zeros_like(rewards[:, 0])
    for t in reversed(range(width)):
        alive = mask[:, t + 1] if t + 1 < width else torch.zeros_like(running)
        next_value = values[:, t + 1] * alive if t + 1 < width else torch.zeros_like(running)
        delta = rewards[:, t] + gamma * next_value - values[:, t]  # δ_t
        running = delta + gamma * lam * alive * running  # A_t = δ_t + γλ A_{t+1}
        adv[:, t] = running * mask[:, t]
    return adv, (adv + values) * mask  # G_t = A_t + V_t


def clipped_policy_loss(
    logprobs: Tensor, old_logprobs: Tensor, advantages: Tensor, mask: Tensor, clip: float
) -> tuple[Tensor, Tensor]:
    """PPO's clipped surrogate (Schulman et al. 2017, eq. 7), token level. [B, T] -> (loss, clipfrac).

    ρ_t = exp(log π − log π_old);  L = mean_t max(−A_t ρ_t, −A_t clip(ρ_t, 1 − ε, 1 + ε)).
    clipfrac is the share of tokens where the clipped term is the larger one.
    """
    ratio = torch.exp(logprobs - old_logprobs)  # ρ_t
    unclipped = -advantages * ratio
    clipped = -advantages * ratio.clamp(1.0 - clip, 1.0 + clip)
    loss = masked_mean(torch.maximum(unclipped, clipped), mask)
    clipfrac = masked_mean((clipped > unclipped).float(), mask)
    return loss, clipfrac


def clipped_value_loss(
    values: Tensor, old_values: Tensor, returns: Tensor, mask: Tensor, clip: float
) -> Tensor:
    """Clipped value loss (as in TRL and OpenAI baselines). [B, T] -> scalar.

    V_clip = V_old + clip(V − V_old, −ε_v, ε_v);  L_V = ½ mean_t max((V − G)², (V_clip − G)²).
    """
    v_clip = old_values + (values - old_values).clamp(-clip, clip)
    return 0.5 * masked_mean(torch.maximum((values - returns) ** 2, (v_clip - returns) ** 2), mask)


def anchor_decision(
    policy_score: float, anchor_score: float, threshold: float
) -> Literal["update", "rollback", "keep"]:
    """APPO's anchor rule: update when the policy leads by more than the threshold, roll back when
    it trails by more, else keep."""
    diff = policy_score - anchor_score
    if diff > threshold:
        return "update"
    if diff < -threshold:
        return "rollback"
    return "keep"


# ---------------------------------------------------------------------------- PPO update


class PPOBatch(NamedTuple):
    """What one PPO update works on, computed once from the rollout (no gradients). All [B, T].

    Attributes:
        old_logprobs: log π_old(a_t|s_t), the policy at sampling time.
        anchor_logprobs: log π_anchor(a_t|s_t).
        old_values: V_old(s_t).
        rewards: per-token rewards (KL penalty + score at the last token).
        advantages: GAE advantages (whitened if configured).
        returns: GAE returns G_t (targets of the value head).
        mask: 1.0 on the tokens the agent took.
    """

    old_logprobs: Tensor
    anchor_logprobs: Tensor
    old_values: Tensor
    rewards: Tensor
    advantages: Tensor
    returns: Tensor
    mask: Tensor


@torch.no_grad()
def ppo_batch(agent: PromptAgent, rollout, scores: Tensor, cfg: APPOConfig) -> PPOBatch:
    """Log-probs, values, KL-penalised rewards and advantages of a rollout with prompt scores [B]."""
    agent.model.eval()
    mask = rollout.mask.to(agent.device).float()
    old_logp, old_values = agent.evaluate(rollout, POLICY, values=True)
    anchor_logp, _ = agent.evaluate(rollout, ANCHOR)
    rewards = kl_penalized_rewards(scores.to(mask), old_logp, anchor_logp, mask, cfg.kl_coef)
    adv, returns = gae(rewards, old_values, mask, cfg.gamma, cfg.lam)
    if cfg.whiten_advantages:
        adv = whiten(adv, mask)
    return PPOBatch(old_logp, anchor_logp, old_values, rewards, adv, returns, mask)


def ppo_loss(
    agent: PromptAgent, rollout, batch: PPOBatch, cfg: APPOConfig
) -> tuple[Tensor, dict[str, float]]:
    """The PPO loss L = L_clip + c_v L_V of the current policy on a prepared batch (with grad)."""
    logp, values = agent.evaluate(rollout, POLICY, values=True)
    pg, clipfrac = clipped_policy_loss(
        logp, batch.old_logprobs, batch.advantages, batch.mask, cfg.clip_range
    )
    vf = clipped_value_loss(
        values, batch.old_values, batch.returns, batch.mask, cfg.value_clip_range
    )
    loss = pg + cfg.vf_coef * vf  # L = L_clip + c_v L_V
    stats = {
        "losses/policy": pg.item(),
        "losses/value": vf.item(),
        "losses/total": loss.item(),
        "charts/clipfrac": clipfrac.item(),
        "charts/approx_kl": float(masked_mean(batch.old_logprobs - logp.detach(), batch.mask)),
    }
    return loss, stats


def ppo_update(
    agent: PromptAgent,
    optimizer: torch.optim.Optimizer,
    rollout,
    scores: Tensor,
    cfg: APPOConfig,
) -> dict[str, float]:
    """One PPO update on a rollout with scores [B]: ``ppo_epochs`` Adam steps. Returns stats."""
    batch = ppo_batch(agent, rollout, scores, cfg)
    stats: dict[str, float] = {}
    with agent.lora_dropout_only():
        for _ in range(cfg.ppo_epochs):
            loss, stats = ppo_loss(agent, rollout, batch, cfg)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            if cfg.max_grad_norm is not None:
                torch.nn.utils.clip_grad_norm_(agent.trainable_parameters(), cfg.max_grad_norm)
            optimizer.step()
    kl = (batch.old_logprobs - batch.anchor_logprobs) * batch.mask
    stats["charts/kl_anchor"] = float(kl.sum(1).mean())  # per prompt, summed over its tokens
    stats["charts/prompt_tokens"] = float(batch.mask.sum(1).mean())
    return stats


# ---------------------------------------------------------------------------- the anchor


class Anchor:
    """The anchor policy: the agent's "anchor" LoRA adapter, plus the value head and optimizer
    state the policy had when the anchor was taken (what a rollback restores)."""

    def __init__(self, agent: PromptAgent, optimizer: torch.optim.Optimizer) -> None:
        self.agent = agent
        self.optimizer = optimizer
        self.update()

    def update(self) -> None:
        """The anchor becomes an exact copy of the policy."""
        self.agent.copy_adapter(POLICY, ANCHOR)
        self.value_head = {
            k: v.detach().clone() for k, v in self.agent.value_head.state_dict().items()
        }
        self.optimizer_state = copy.deepcopy(self.optimizer.state_dict())

    def rollback(self) -> None:
        """The policy (LoRA weights, value head, optimizer state) returns exactly to the anchor."""
        self.agent.copy_adapter(ANCHOR, POLICY)
        self.agent.value_head.load_state_dict(self.value_head)
        # A deep copy: the optimizer updates its state in place and must not touch the snapshot.
        self.optimizer.load_state_dict(copy.deepcopy(self.optimizer_state))

    def state_dict(self) -> dict[str, Any]:
        return {
            "lora": self.agent.adapter_state(ANCHOR),
            "value_head": self.value_head,
            "optimizer": self.optimizer_state,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.agent.load_adapter_state(ANCHOR, state["lora"])
        self.value_head = {k: v.clone() for k, v in state["value_head"].items()}
        self.optimizer_state = copy.deepcopy(state["optimizer"])


# ---------------------------------------------------------------------------- the algorithm


class APPO(Algorithm):
    """StablePrompt's APPO in the shared loop: one loop step = one PPO batch (one meta-prompt per
    ``queries_per_step``, ``prompts_per_query`` prompts each); an epoch = one pass over the train
    split in reward batches of ``reward_batch_size``."""

    method = "appo"

    def __init__(self, ctx: RunContext, cfg: APPOConfig) -> None:
        super().__init__(ctx)
        from peft import LoraConfig

        self.cfg = cfg
        seed = ctx.config.train.seed
        self.gen = torch.Generator().manual_seed(seed)
        lora = LoraConfig(
            r=cfg.lora_r,
            lora_alpha=cfg.lora_alpha,
            lora_dropout=cfg.lora_dropout,
            target_modules=cfg.lora_target_modules,
            bias="none",
            task_type="CAUSAL_LM",
        )
        self.agent = PromptAgent.from_config(cfg, ctx.config.policy.model, lora=lora, seed=seed)
        self.optimizer = torch.optim.Adam(self.agent.trainable_parameters(), lr=cfg.lr)
        self.anchor = Anchor(self.agent, self.optimizer)
        self.task = ctx.task
        self.reward = StablePromptReward(cfg.reward_accuracy_weight, cfg.reward_margin_weight)
        n_train = self.task.num_inputs("train")
        self.batch_size = min(cfg.reward_batch_size or n_train, n_train)
        self.steps_per_epoch = math.ceil(n_train / self.batch_size)
        # Fixed meta-prompts for greedy prompts (dev evaluations and the anchor check).
        self.eval_queries = [self._query() for _ in range(cfg.eval_queries)]
        self.pool = PromptPool(cfg.select_top)
        self.order: Tensor | None = None  # this epoch's shuffled train indices
        self.anchor_dev_accuracy: float | None = None  # valid until the anchor changes
        self.events: list[dict[str, Any]] = []
        self.prompts_sampled = 0
        self.pairs_scored = 0

    def _query(self) -> Tensor:
        return self.agent.query(self.task.demonstrations(self.cfg.num_demos, self.gen))

    # -- the loop's interface --------------------------------------------------------------

    def step(self, step: int) -> dict[str, float]:
        cfg = self.cfg
        j = step % self.steps_per_epoch
        if j == 0 or self.order is None:
            self.order = torch.randperm(self.task.num_inputs("train"), generator=self.gen)
        idx = self.order[j * self.batch_size : (j + 1) * self.batch_size].tolist()

        queries = [self._query() for _ in range(cfg.queries_per_step)]
        rollout = self.agent.sample(queries, cfg.prompts_per_query, self.gen)
        rewards = self.task.train_rewards(rollout.texts, self.reward, examples=idx)
        scores = rewards.reward  # R(z) of each prompt  [B]
        acc = rewards.metrics.get("accuracy")  # classification reports one; else None
        accs = [None] * len(rollout.texts) if acc is None else acc.tolist()
        for text, r, a in zip(rollout.texts, scores.tolist(), accs, strict=True):
            self.pool.add(text, r, a, step + 1)
        self.prompts_sampled += len(rollout.texts)
        self.pairs_scored += len(rollout.texts) * len(idx)

        values = ppo_update(self.agent, self.optimizer, rollout, scores, cfg)
        values.update(
            {
                "rewards/mean": float(scores.mean()),
                "rewards/max": float(scores.max()),
            }
        )
        if acc is not None:
            values["rewards/train_accuracy"] = float(acc.mean())
        done = step + 1
        if (
            done % self.steps_per_epoch == 0
            and (done // self.steps_per_epoch) % cfg.update_term == 0
        ):
            values.update(self.refresh_anchor(done))
        return values

    def refresh_anchor(self, done: int) -> dict[str, float]:
        """Compare policy and anchor on dev; update the anchor or roll the policy back."""
        policy_acc = self.dev_accuracy(POLICY)
        if self.anchor_dev_accuracy is None:
            self.anchor_dev_accuracy = self.dev_accuracy(ANCHOR)
        anchor_acc = self.anchor_dev_accuracy
        event = anchor_decision(policy_acc, anchor_acc, self.cfg.anchor_threshold)
        if event == "update":
            self.anchor.update()
            self.anchor_dev_accuracy = policy_acc  # same weights, same greedy prompts
        elif event == "rollback":
            self.anchor.rollback()
        self.events.append(
            {
                "step": done,
                "event": event,
                "policy_dev_accuracy": policy_acc,
                "anchor_dev_accuracy": anchor_acc,
            }
        )
        return {
            "anchor/policy_dev_accuracy": policy_acc,
            "anchor/anchor_dev_accuracy": anchor_acc,
            "anchor/event": {"update": 1.0, "rollback": -1.0, "keep": 0.0}[event],
            "anchor/updates": float(self._count("update")),
            "anchor/rollbacks": float(self._count("rollback")),
        }

    def dev_accuracy(self, adapter: str) -> float:
        """Mean dev score (classification: accuracy) of the adapter's greedy prompts for the fixed
        eval meta-prompts."""
        prompts = self.agent.sample(self.eval_queries, 1, greedy=True, adapter=adapter).texts
        scores = [r.score for r in self.task.evaluate(prompts, "dev")]
        return float(torch.tensor(scores, dtype=torch.float32).mean())

    def _count(self, event: str) -> int:
        return sum(e["event"] == event for e in self.events)

    def eval_prompts(self) -> list[str]:
        greedy = self.agent.sample(self.eval_queries, 1, greedy=True).texts
        return list(dict.fromkeys(greedy + self.pool.prompts()))

    def state_dict(self) -> dict[str, Any]:
        return {
            "policy": self.agent.adapter_state(POLICY),
            "value_head": self.agent.value_head.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "anchor": self.anchor.state_dict(),
            "generator": self.gen.get_state(),
            "order": self.order,
            "anchor_dev_accuracy": self.anchor_dev_accuracy,
            "pool": self.pool.state_dict(),
            "events": self.events,
            "prompts_sampled": self.prompts_sampled,
            "pairs_scored": self.pairs_scored,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.agent.load_adapter_state(POLICY, state["policy"])
        self.agent.value_head.load_state_dict(state["value_head"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.anchor.load_state_dict(state["anchor"])
        self.gen.set_state(state["generator"])
        self.order = state["order"]
        self.anchor_dev_accuracy = state["anchor_dev_accuracy"]
        self.pool.load_state_dict(state["pool"])
        self.events = [dict(e) for e in state["events"]]
        self.prompts_sampled = state["prompts_sampled"]
        self.pairs_scored = state["pairs_scored"]

    def perplexity_judge(self) -> tuple[Any, Any]:
        return self.agent.base_lm(), self.agent.tokenizer

    def result_extras(self) -> dict[str, Any]:
        return {
            "anchor_updates": self._count("update"),
            "anchor_rollbacks": self._count("rollback"),
            "anchor_events": self.events,
            "candidates": self.pool.entries,
            "prompts_sampled": self.prompts_sampled,
            "train_pairs_scored": self.pairs_scored,
            "agent_model": self.ctx.config.policy.model,
        }
