"""Sample-and-select: the frozen agent's prompts, scored on train, chosen on dev.

Docs: Methods › Sample-and-select.

The baseline that ships beside StablePrompt's APPO: no training at all. Each loop step draws
``queries_per_step`` meta-prompts of fresh demonstrations from the train split, lets the frozen
agent sample ``prompts_per_query`` prompts from each, and scores them on the train split with the
StablePrompt reward. So ``train.steps`` steps draw N = steps · queries_per_step ·
prompts_per_query prompts. Each dev evaluation of the shared loop scores the ``select_top`` best
distinct prompts by train reward so far, and the loop keeps the best on dev: the chosen prompt is
selected on dev only, never on test. An independent audit found this matches APPO on
classification at about a third of the cost, so report both.

Resume is exact: the sampling generator, every sample and the candidate pool are checkpointed.
"""

from __future__ import annotations

from typing import Any, Literal

import torch
from pydantic import Field

from hardprompts.agent import AgentConfig, PromptAgent, PromptPool
from hardprompts.algorithms.base import Algorithm, RunContext
from hardprompts.config import register_algorithm
from hardprompts.tasks import StablePromptReward

__all__ = ["Search", "SearchConfig"]


@register_algorithm("search")
class SearchConfig(AgentConfig):
    """Sample-and-select with the frozen agent (StablePrompt's baseline, Kwon et al. 2024)."""

    name: Literal["search"] = Field("search", description="Selects this algorithm.")
    reward_batch_size: int | None = Field(
        None,
        ge=1,
        description="Training examples each step's prompts are scored on; null = the whole train "
        "split (default: every prompt on the same examples, so train rewards compare).",
    )

    def make(self, ctx: RunContext) -> Search:
        return Search(ctx, self)


class Search(Algorithm):
    """Sample N prompts from the frozen agent, keep the train-best, let the loop pick on dev."""

    method = "search"

    def __init__(self, ctx: RunContext, cfg: SearchConfig) -> None:
        super().__init__(ctx)
        self.cfg = cfg
        self.gen = torch.Generator().manual_seed(ctx.config.train.seed)
        self.agent = PromptAgent.from_config(cfg, ctx.config.policy.model)  # frozen: no adapters
        self.task = ctx.task
        self.reward = StablePromptReward(cfg.reward_accuracy_weight, cfg.reward_margin_weight)
        self.pool = PromptPool(cfg.select_top)
        self.samples: list[dict[str, Any]] = []
        self.pairs_scored = 0

    def step(self, step: int) -> dict[str, float]:
        cfg, n_train = self.cfg, self.task.num_inputs("train")
        if cfg.reward_batch_size is None or cfg.reward_batch_size >= n_train:
            idx = torch.arange(n_train)
        else:
            idx = torch.randperm(n_train, generator=self.gen)[: cfg.reward_batch_size]
        examples = idx.tolist()
        demos = [
            self.task.demonstrations(cfg.num_demos, self.gen) for _ in range(cfg.queries_per_step)
        ]
        rollout = self.agent.sample(
            [self.agent.query(d) for d in demos], cfg.prompts_per_query, self.gen
        )
        scored = self.task.train_rewards(rollout.texts, self.reward, examples=examples)
        rewards = scored.reward  # R(z) of each prompt  [B]
        # Per-prompt train accuracy where the task reports one (classification), else None.
        acc = scored.metrics.get("accuracy")
        accs = [None] * len(rollout.texts) if acc is None else acc.tolist()
        for text, r, a in zip(rollout.texts, rewards.tolist(), accs, strict=True):
            self.samples.append(
                {"prompt": text, "train_reward": r, "train_accuracy": a, "step": step + 1}
            )
            self.pool.add(text, r, a, step + 1)
        self.pairs_scored += len(rollout.texts) * len(examples)
        values = {
            "rewards/mean": float(rewards.mean()),
            "rewards/max": float(rewards.max()),
            "search/samples": float(len(self.samples)),
            "search/best_train_reward": self.pool.entries[0]["reward"],
        }
        if acc is not None:
            values["rewards/train_accuracy"] = float(acc.mean())
        return values

    def eval_prompts(self) -> list[str]:
        return self.pool.prompts()

    def state_dict(self) -> dict[str, Any]:
        return {
            "generator": self.gen.get_state(),
            "pool": self.pool.state_dict(),
            "samples": self.samples,
            "pairs_scored": self.pairs_scored,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.gen.set_state(state["generator"])
        self.pool.load_state_dict(state["pool"])
        self.samples = [dict(s) for s in state["samples"]]
        self.pairs_scored = state["pairs_scored"]

    def perplexity_judge(self) -> tuple[Any, Any]:
        return self.agent.base_lm(), self.agent.tokenizer

    def result_extras(self) -> dict[str, Any]:
        return {
            "prompts_sampled": len(self.samples),
            "train_pairs_scored": self.pairs_scored,
            "candidates": self.pool.entries,
            "samples": self.samples,
            "agent_model": self.ctx.config.policy.model,
        }
