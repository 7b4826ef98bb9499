"""Soft prompt tuning: the continuous baseline, read back as tokens (Lester et al. 2021;
Patel et al. 2025; docs: Methods › Soft prompts).

A continuous matrix P ∈ R^{T×d} in the target's input-embedding space is trained by AdamW on the
cross-entropy of the verbalizer logits (so the task must offer label-word logits:
:class:`~hardprompts.tasks.ClassLogitsTask`, i.e. classification), with P itself as the prompt's input embeddings (prompt
tuning, Lester et al., 2021; PEZ's baseline). No projection enters training.

What a person can read is P's nearest-token projection a = proj(P) (the same projection as PEZ:
cosine or L2, restricted to the allowed tokens). How faithfully that text stands for P is
measured by :func:`hardprompts.interpretability.faithfulness` (Patel et al., 2025): agreement of
predicted labels, 1 − mean total-variation distance between the class distributions, and the
accuracy gap, soft vs projected, each on dev and test.

How this fits the loop, which scores *text* on dev:

* ``eval_prompts()`` returns the projection's text, so ``best_prompt``, ``dev_accuracy`` and
  ``test_accuracy`` in result.json are those of the best **projection** on dev, comparable with
  every discrete method;
* after each dev evaluation the soft prompt itself is scored on dev (``soft/dev_accuracy``,
  ``faithfulness/dev_*`` in the metrics), and the soft prompt with the best soft dev accuracy is
  kept;
* result.json's ``soft_prompt`` block reports that soft prompt: the step, its projection and
  tokens, and the faithfulness metrics (with soft and projected accuracy) on dev and test. The
  projection is scored as text through the target's ordinary path, i.e. as a reader would use it.
"""

from __future__ import annotations

from typing import Any, Literal

import torch
import torch.nn.functional as F
from pydantic import Field

from hardprompts.algorithms.base import Algorithm, RunContext
from hardprompts.algorithms.pez import (
    ReferenceLM,
    initial_prompt,
    lr_factor,
    projection_mask,
    sample_batch,
    set_lr,
)
from hardprompts.config import AlgorithmConfig, register_algorithm
from hardprompts.errors import DataError
from hardprompts.interpretability import faithfulness, nearest_tokens
from hardprompts.metrics import gap_reward
from hardprompts.targets.embeds import EmbeddingScorer
from hardprompts.tasks import require_class_logits

__all__ = ["SoftPrompt", "SoftPromptConfig"]


@register_algorithm("softprompt")
class SoftPromptConfig(AlgorithmConfig):
    """Continuous prompt tuning (Lester et al., 2021) with a nearest-token reading of the result."""

    name: Literal["softprompt"] = Field("softprompt", description="Selects this algorithm.")
    prompt_length: int = Field(
        10, ge=1, description="Soft prompt vectors T (10: PEZ's LM setting, to compare with PEZ)."
    )
    lr: float = Field(
        0.3, gt=0, description="AdamW learning rate (prompt tuning, Lester et al. 2021: 0.3)."
    )
    weight_decay: float = Field(0.0, ge=0, description="AdamW weight decay (as PEZ: 0).")
    batch_size: int = Field(16, ge=1, description="Training examples per step (as PEZ: 16).")
    lr_warmup_steps: int = Field(
        500,
        ge=0,
        description="Linear warm-up of the learning rate from 0 over this many steps (PEZ's "
        "script, which also trains this baseline: 500).",
    )
    lr_schedule: Literal["linear", "constant"] = Field(
        "linear",
        description="After the warm-up: linear decay to 0 at the last step (PEZ's script with "
        "AdamW) or constant (its Adafactor branch; Lester et al.).",
    )
    grad_clip: float = Field(1.0, gt=0, description="Clip the gradient norm of P (as PEZ: 1.0).")
    init: Literal["label_words", "random"] = Field(
        "label_words",
        description="Start of P: the verbalizers' embeddings repeated, or random allowed tokens.",
    )
    projection: Literal["cosine", "l2"] = Field(
        "cosine", description="Nearest-token metric of the readable projection (PEZ: cosine)."
    )
    allowed_tokens: Literal["all", "words", "topk"] = Field(
        "all", description="Tokens the projection may use (as algorithm pez)."
    )
    allowed_topk: int = Field(10000, ge=1, description="k of allowed_tokens: topk.")
    reference_model: str | None = Field(
        None,
        description="Causal LM judging the projection's perplexity in result.json. Unset: the "
        "target when causal, else policy.model.",
    )

    def make(self, ctx: RunContext) -> SoftPrompt:
        return SoftPrompt(ctx, self)


class SoftPrompt(Algorithm):
    """Prompt tuning of P with a faithfulness report of its projection; see the module docstring."""

    method = "softprompt"

    def __init__(self, ctx: RunContext, cfg: SoftPromptConfig) -> None:
        super().__init__(ctx)
        self.cfg = cfg
        self.data = require_class_logits(ctx.task, "softprompt")  # labelled splits, label words
        self.train = self.data.split("train")
        self.scorer = EmbeddingScorer(ctx.target)
        self.table = self.scorer.embedding_table.detach()  # [V, d]
        self.device = self.table.device
        self.reference = ReferenceLM(ctx, cfg.reference_model)
        self.allowed = projection_mask(
            ctx, cfg.allowed_tokens, cfg.allowed_topk, self.reference, self.table.shape[0]
        ).to(self.device)
        self.labels = torch.tensor(self.train.labels, device=self.device)
        self.generator = torch.Generator().manual_seed(ctx.config.train.seed)
        start = initial_prompt(
            self.table,
            ctx.target.verbalizer_ids,
            self.allowed,
            cfg.prompt_length,
            cfg.init,
            self.generator,
        )
        self.prompt = torch.nn.Parameter(start)  # P: [T, d]
        self.optimizer = torch.optim.AdamW([self.prompt], lr=cfg.lr, weight_decay=cfg.weight_decay)
        # The soft prompt with the best soft dev accuracy so far (ties: the earlier one).
        self.best: dict[str, Any] | None = None

    def projection(self, prompt: torch.Tensor | None = None) -> list[int]:
        """Token ids of the nearest-token projection of P (or of ``prompt``)."""
        rows = self.prompt if prompt is None else prompt
        return nearest_tokens(rows, self.table, self.allowed, self.cfg.projection).tolist()

    def step(self, step: int) -> dict[str, float]:
        idx = sample_batch(len(self.train), self.cfg.batch_size, self.generator)
        texts = [self.train.texts[i] for i in idx.tolist()]
        labels = self.labels[idx.to(self.device)]
        logits = self.scorer.score(self.prompt[None], texts)[0]  # [B, C], P read as is
        loss = F.cross_entropy(logits, labels)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        grad_norm = torch.nn.utils.clip_grad_norm_([self.prompt], self.cfg.grad_clip)
        cfg = self.cfg
        lr = cfg.lr * lr_factor(
            step, cfg.lr_warmup_steps, self.ctx.config.train.steps, cfg.lr_schedule
        )
        set_lr(self.optimizer, lr)
        self.optimizer.step()
        return {
            "losses/task_ce": float(loss.detach()),
            "charts/train_accuracy": float((logits.argmax(-1) == labels).float().mean()),
            "charts/grad_norm": float(grad_norm),
            "charts/lr": lr,
        }

    def eval_prompts(self) -> list[str]:
        """The projection's text (the loop scores text on dev); the soft prompt is scored after."""
        return [self.scorer.prompt_text(self.projection())]

    @torch.no_grad()
    def _faithfulness(self, prompt: torch.Tensor, texts: list[str], labels: list[int]) -> dict:
        """Faithfulness of ``prompt`` [T, d] to its projection on one split (see module docstring)."""
        text = self.scorer.prompt_text(self.projection(prompt))
        soft = self.scorer.score(prompt[None], texts)[0].cpu()  # [N, C]
        hard = self.ctx.target.score([text], texts)[0]  # [N, C], the projection read as text
        y = torch.tensor(labels)
        return {
            **faithfulness(soft, hard, y),
            "soft_gap_reward": float(gap_reward(soft, y)),
            "n": len(labels),
        }

    def after_eval(self, step: int, scores) -> dict[str, float]:
        dev = self.data.split("dev")
        prompt = self.prompt.detach().clone()
        faith = self._faithfulness(prompt, dev.texts, dev.labels)
        key = (faith["soft_accuracy"], faith["soft_gap_reward"])
        if self.best is None or key > (self.best["accuracy"], self.best["gap_reward"]):
            self.best = {
                "prompt": prompt,
                "step": step,
                "accuracy": faith["soft_accuracy"],
                "gap_reward": faith["soft_gap_reward"],
            }
        return {
            "soft/dev_accuracy": faith["soft_accuracy"],
            "soft/best_dev_accuracy": self.best["accuracy"],
            "faithfulness/dev_label_agreement": faith["label_agreement"],
            "faithfulness/dev_tv": faith["tv_faithfulness"],
            "faithfulness/dev_accuracy_gap": faith["accuracy_gap"],
        }

    def perplexity_judge(self) -> tuple[Any, Any]:
        return self.reference.get()

    def result_extras(self) -> dict[str, Any]:
        if self.best is None:  # the loop always evaluates at the last step; guard anyway
            raise RuntimeError(
                "softprompt: no dev evaluation happened, so no soft prompt to report"
            )
        prompt = self.best["prompt"].to(self.device)
        ids = self.projection(prompt)
        text = self.scorer.prompt_text(ids)
        dev = self.data.split("dev")
        try:
            test = self.data.split("test")
        except DataError:
            test = None
        return {
            "perplexity_reference": self.reference.name,
            "prompt_length": self.cfg.prompt_length,
            "soft_prompt": {
                "step": self.best["step"],
                "projection": text,
                "projection_tokens": self.ctx.target.tokenizer.convert_ids_to_tokens(ids),
                "dev": self._faithfulness(prompt, dev.texts, dev.labels),
                "test": None
                if test is None
                else self._faithfulness(prompt, test.texts, test.labels),
            },
        }

    def state_dict(self) -> dict[str, Any]:
        return {
            "prompt": self.prompt.detach().clone(),
            "optimizer": self.optimizer.state_dict(),
            "generator": self.generator.get_state(),
            "best": self.best,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        with torch.no_grad():
            self.prompt.copy_(state["prompt"].to(self.device))
        self.optimizer.load_state_dict(state["optimizer"])
        self.generator.set_state(state["generator"])
        self.best = state["best"]
