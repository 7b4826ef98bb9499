"""Sample-and-select: the frozen agent's prompts, scored on train, chosen on dev (METHODS.md 7).

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

from hardprompts.agent import AgentConfig, PromptAgent, PromptPool, sample_demos
from hardprompts.algorithms.appo import stableprompt_reward
from hardprompts.config import register_algorithm
from hardprompts.metrics import accuracy
from hardprompts.training import Algorithm, RunContext

__all__ = ["Search", "SearchConfig"]


@register_algorithm("search")
class SearchConfig(AgentConfig):
    """Sample-and-select with the frozen agent (StablePrompt's baseline, METHODS.md 7)."""

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
        self.agent = PromptAgent.from_config(cfg)  # frozen: no adapters
        self.labels = torch.tensor(ctx.train.labels)
        self.pool = PromptPool(cfg.select_top)
        self.samples: list[dict[str, Any]] = []
        self.pairs_scored = 0

    def step(self, step: int) -> dict[str, float]:
        cfg, train = self.cfg, self.ctx.train
        if cfg.reward_batch_size is None or cfg.reward_batch_size >= len(train):
            idx = torch.arange(len(train))
        else:
            idx = torch.randperm(len(train), generator=self.gen)[: cfg.reward_batch_size]
        texts = [train.texts[i] for i in idx.tolist()]
        labels = self.labels[idx]
        demos = [
            sample_demos(train, self.ctx.task.verbalizers, cfg.num_demos, self.gen)
            for _ in range(cfg.queries_per_step)
        ]
        rollout = self.agent.sample(
            [self.agent.query(d) for d in demos], cfg.prompts_per_query, self.gen
        )
        logits = self.ctx.target.score(rollout.texts, texts)  # [B, N, C]
        rewards = stableprompt_reward(
            logits, labels, cfg.reward_accuracy_weight, cfg.reward_margin_weight
        )
        acc = accuracy(logits, labels)
        for text, r, a in zip(rollout.texts, rewards.tolist(), acc.tolist(), strict=True):
            self.samples.append(
                {"prompt": text, "train_reward": r, "train_accuracy": a, "step": step + 1}
            )
            self.pool.add(text, r, a, step + 1)
        self.pairs_scored += len(rollout.texts) * len(texts)
        return {
            "rewards/mean": float(rewards.mean()),
            "rewards/max": float(rewards.max()),
            "rewards/train_accuracy": float(acc.mean()),
            "search/samples": float(len(self.samples)),
            "search/best_train_reward": self.pool.entries[0]["reward"],
        }

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
            "agent_model": self.cfg.agent_model,
        }
