"""PEZ: projected gradient descent over prompt embeddings (Wen et al., NeurIPS 2023, "Hard
Prompts Made Easy"), with the perplexity regulariser of Patel et al. (2025).
Docs: Methods › PEZ and Methods › Perplexity regularisation.

A continuous matrix P ∈ R^{T×d} lives in the target's input-embedding space. Each step:

PEZ differentiates the target's label-word logits, so it needs a task that offers them
(:class:`~hardprompts.tasks.ClassLogitsTask`: classification); the training texts, labels and
label words come from that task.

1. project every row onto the nearest allowed vocabulary embedding: P′ = E[a], a = proj(P);
2. forward and backward at P′ (the prompt the target actually reads is a token sequence);
3. apply that gradient ∂loss/∂P′ to P, not to P′, and take an AdamW step on P;
4. the loop scores the current projection on dev every ``train.eval_every`` steps and keeps the
   best (dev only, never test).

Loss (per step, on ``batch_size`` training examples):
    loss = CE(verbalizer logits of P′, labels) + α · NLL_ref(a)          (α = perplexity_weight)
NLL_ref is the mean negative log-likelihood of the projected tokens under the target itself,
differentiated with respect to P′ (:func:`hardprompts.targets.embeds.prompt_nll`). That gradient
lives in the target's embedding space, so the perplexity term needs a causal target; with a
masked target ``perplexity_weight`` must be 0. ``reference_model`` chooses the LM that *judges*
the prompt in result.json (and ranks tokens for ``allowed_tokens: topk``); an independent judge
is a useful check, since a regulariser can game the model it is computed with.

Random restarts split ``train.steps`` into ``restarts`` equal segments; each segment starts
from a fresh P (restart 0 from ``init``, later ones from random allowed tokens, since the
label-word start is deterministic) and fresh optimizer moments. The last prompt of every segment
is scored on dev at the next evaluation, so no restart goes unscored; the loop keeps the best
over all of them.

Defaults follow the PEZ paper's language-model setting (Wen et al. 2023): T = 10, lr 0.3,
batch 16, grad clip 1.0, 5,000 steps (set ``train.steps: 5000``; the loop's default is
RLPrompt's 12,000), and its script's schedule: a linear warm-up over 500 steps, then (with AdamW) a linear decay to 0
at the last step. PEZ's released LM script used Adafactor (with a constant rate after the
warm-up: ``lr_schedule: constant``); we use AdamW (docs: Methods › PEZ).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Literal

import torch
import torch.nn.functional as F
from pydantic import Field

from hardprompts.algorithms.base import Algorithm, RunContext
from hardprompts.config import AlgorithmConfig, register_algorithm
from hardprompts.errors import ConfigError
from hardprompts.interpretability import allowed_token_mask, nearest_tokens, reference_topk_mask
from hardprompts.metrics import document_start_id
from hardprompts.targets.embeds import EmbeddingScorer, prompt_nll
from hardprompts.tasks import require_class_logits

__all__ = [
    "PEZ",
    "PEZConfig",
    "ReferenceLM",
    "initial_prompt",
    "lr_factor",
    "projected_gradient_step",
    "projection_mask",
]


@register_algorithm("pez")
class PEZConfig(AlgorithmConfig):
    """PEZ (Wen et al., 2023) with optional perplexity regularisation (Patel et al., 2025)."""

    name: Literal["pez"] = Field("pez", description="Selects this algorithm.")
    prompt_length: int = Field(
        10,
        ge=1,
        description="Prompt tokens T. PEZ's LM setting: 10. PEZ reads this field, not "
        "policy.prompt_length (5, the RL papers' T): set it to 5 to compare at equal length.",
    )
    lr: float = Field(0.3, gt=0, description="AdamW learning rate on P (PEZ LM setting: 0.3).")
    weight_decay: float = Field(
        0.0,
        ge=0,
        description="AdamW weight decay on P. 0: PEZ's LM script used Adafactor without decay.",
    )
    batch_size: int = Field(
        16, ge=1, description="Training examples per step (PEZ LM setting: 16)."
    )
    lr_warmup_steps: int = Field(
        500,
        ge=0,
        description="The learning rate rises linearly from 0 over this many steps (PEZ's LM "
        "script: warmup_step_prompt 500), so the first steps do not erase the initialisation.",
    )
    lr_schedule: Literal["linear", "constant"] = Field(
        "linear",
        description="After the warm-up: linear decay to 0 at the last step of the run (or of the "
        "restart), as PEZ's script does with AdamW (get_linear_schedule_with_warmup); constant "
        "as its Adafactor branch.",
    )
    grad_clip: float = Field(
        1.0, gt=0, description="Clip the gradient norm of P to this (PEZ: 1.0)."
    )
    projection: Literal["cosine", "l2"] = Field(
        "cosine", description="Nearest-token metric: cosine (PEZ's choice) or l2."
    )
    allowed_tokens: Literal["all", "words", "topk"] = Field(
        "all",
        description="Tokens the projection may use: all (PEZ), words (whole alphabetic words: "
        "tokens starting with the BPE space marker), or topk (the reference LM's allowed_topk "
        "most likely tokens over the training inputs; our choice). Special tokens never.",
    )
    allowed_topk: int = Field(
        10000,
        ge=1,
        description="k of allowed_tokens: topk (PIN's filter keeps the LM's top 10,000).",
    )
    init: Literal["label_words", "random"] = Field(
        "label_words",
        description="Start of P: the verbalizers' embeddings repeated to length T (PEZ's "
        "initialise_from_classes), or random allowed tokens.",
    )
    restarts: int = Field(
        1,
        ge=1,
        description="Random restarts; train.steps is split into this many equal segments, "
        "restarts after the first start from random tokens (our choice; PEZ: 1).",
    )
    perplexity_weight: float = Field(
        0.0,
        ge=0,
        description="α of loss = CE + α · NLL_ref(prompt) (Patel et al., 2025; 0 = plain PEZ). "
        "Needs a causal target.",
    )
    perplexity_gradient: Literal["exact", "context"] = Field(
        "exact",
        description="How NLL_ref reaches P. exact: the gradient of the loss as written (Patel et "
        "al.'s CE + α·NLL): through the prompt as context and, when the target ties its input "
        "and output embeddings (GPT-2, OPT), through the prompt tokens' output rows as well "
        "(their own logits and every log-partition); context: the context path alone, as PEZ's "
        "and Patel et al.'s released fluency term computes it.",
    )
    reference_model: str | None = Field(
        None,
        description="Causal LM judging prompt perplexity in result.json and ranking tokens for "
        "allowed_tokens: topk. Unset: the target when causal, else policy.model.",
    )

    def make(self, ctx: RunContext) -> PEZ:
        return PEZ(ctx, self)


# ---------------------------------------------------------------------- shared with softprompt


class ReferenceLM:
    """The causal LM that judges prompt perplexity: a named model, else the causal target, else
    ``policy.model`` (Patel et al. 2025; loaded on first use)."""

    def __init__(self, ctx: RunContext, name: str | None) -> None:
        self.ctx = ctx
        target = ctx.target
        causal = getattr(target, "kind", None) == "causal"
        if causal and name in (None, ctx.config.target.model):  # the target judges itself
            self.name = ctx.config.target.model
            self._loaded = (target.model, target.tokenizer)
        else:
            self.name = name or ctx.config.policy.model
            self._loaded = None

    def get(self) -> tuple[Any, Any]:
        """(model, tokenizer)."""
        if self._loaded is None:
            from hardprompts.modeling import load_lm, load_tokenizer, placement

            cfg = self.ctx.config.target
            self._loaded = (
                load_lm(self.name, "causal", dtype=cfg.dtype, **placement(cfg)),
                load_tokenizer(self.name),
            )
        return self._loaded


def projection_mask(
    ctx: RunContext, mode: str, topk: int, reference: ReferenceLM, num_rows: int
) -> torch.Tensor:
    """[num_rows] bool: the target tokens a projection may use (see ``allowed_tokens``)."""
    tokenizer = ctx.target.tokenizer
    if mode == "topk":
        model, ref_tok = reference.get()
        texts = require_class_logits(ctx.task, ctx.config.algorithm.name).split("train").texts
        return reference_topk_mask(model, ref_tok, tokenizer, texts, num_rows, topk)
    return allowed_token_mask(tokenizer, num_rows, mode)  # type: ignore[arg-type]


def initial_prompt(
    table: torch.Tensor,
    verbalizer_ids: list[int],
    allowed: torch.Tensor,
    length: int,
    init: str,
    generator: torch.Generator,
) -> torch.Tensor:
    """[T, d] start of P: label words repeated (a_t = verbalizer t mod C) or random allowed tokens."""
    if init == "label_words":
        ids = torch.tensor([verbalizer_ids[t % len(verbalizer_ids)] for t in range(length)])
    else:
        choices = allowed.nonzero().squeeze(-1)
        ids = choices[torch.randint(len(choices), (length,), generator=generator)]
    return table[ids.to(table.device)].detach().float().clone()


def lr_factor(step: int, warmup: int, total: int, schedule: str) -> float:
    """Multiplier of the learning rate at optimizer step ``step`` (0-based) of ``total``.

    As Hugging Face's schedules that PEZ's script uses: step / warmup during the warm-up (0 at the
    first step), then 1 (``constant``) or (total − step) / (total − warmup), floored at 0
    (``linear``).
    """
    if step < warmup:
        return step / max(1, warmup)  # linear warm-up from 0
    if schedule == "constant":
        return 1.0
    return max(0.0, (total - step) / max(1, total - warmup))  # linear decay to 0 at `total`


def set_lr(optimizer: torch.optim.Optimizer, lr: float) -> None:
    for group in optimizer.param_groups:
        group["lr"] = lr


def sample_batch(n: int, size: int, generator: torch.Generator) -> torch.Tensor:
    """``size`` distinct example indices out of ``n`` (all of them, shuffled, when size >= n)."""
    return torch.randperm(n, generator=generator)[:size]


def projected_gradient_step(
    prompt: torch.nn.Parameter,
    table: torch.Tensor,
    allowed: torch.Tensor | None,
    metric: str,
    loss_at: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
) -> tuple[torch.Tensor, torch.Tensor]:
    """PEZ steps 1–3: project P, take the gradient at the projection, put it on P.

    Args:
        prompt: P [T, d], the continuous matrix (its ``.grad`` is overwritten).
        table: E [V, d], the vocabulary embeddings.
        allowed: [V] bool mask of the tokens the projection may use (None: all).
        metric: ``cosine`` or ``l2`` (see :func:`~hardprompts.interpretability.nearest_tokens`).
        loss_at: loss of a projected prompt, ``loss_at(P′ [T, d], a [T]) -> scalar``.

    Returns:
        (a [T], loss). Afterwards ``prompt.grad`` = ∂loss/∂P′ evaluated at P′ = E[a]; the caller
        clips it and steps the optimizer.
    """
    ids = nearest_tokens(prompt, table, allowed, metric)  # step 1: a = proj(P)
    projected = table[ids].float().clone().requires_grad_()  # P′ = E[a]: [T, d]
    loss = loss_at(projected, ids)
    loss.backward()  # step 2: ∂loss/∂P′ at the projected point
    prompt.grad = projected.grad.to(prompt.dtype)  # step 3: applied to P, not to P′
    return ids, loss


# ---------------------------------------------------------------------- the algorithm


class PEZ(Algorithm):
    """Projected gradient descent over a prompt embedding matrix; see the module docstring."""

    method = "pez"

    def __init__(self, ctx: RunContext, cfg: PEZConfig) -> None:
        super().__init__(ctx)
        self.cfg = cfg
        self.train = require_class_logits(ctx.task, "pez").split("train")  # texts and labels
        self.scorer = EmbeddingScorer(ctx.target)
        target = ctx.target
        if cfg.perplexity_weight > 0 and target.kind != "causal":
            raise ConfigError(
                "algorithm.perplexity_weight > 0 needs a causal target: PEZ differentiates the "
                "prompt's NLL through the target's own embeddings, and target.kind is "
                f"{target.kind!r}; use a causal target or set algorithm.perplexity_weight: 0"
            )
        steps = ctx.config.train.steps
        if cfg.restarts > steps:
            raise ConfigError(
                f"algorithm.restarts ({cfg.restarts}) exceeds train.steps ({steps}); each restart "
                "needs at least one step"
            )
        self.table = self.scorer.embedding_table.detach()  # [V, d]
        out = target.model.get_output_embeddings() if target.kind == "causal" else None
        self.tied = out is not None and out.weight.data_ptr() == self.table.data_ptr()
        self.device = self.table.device
        self.reference = ReferenceLM(ctx, cfg.reference_model)
        self.allowed = projection_mask(
            ctx, cfg.allowed_tokens, cfg.allowed_topk, self.reference, self.table.shape[0]
        ).to(self.device)
        tok = target.tokenizer
        self.bos_id = document_start_id(tok, target.model)
        self.labels = torch.tensor(self.train.labels, device=self.device)
        self.generator = torch.Generator().manual_seed(ctx.config.train.seed)
        # Restart r owns steps [starts[r], starts[r+1]); each has its own warm-up and decay.
        self.steps = steps
        self.starts = [r * steps // cfg.restarts for r in range(cfg.restarts)]
        self.restart = 0
        self.unscored: list[str] = []  # last prompts of finished restarts, for the next dev eval
        self.prompt = torch.nn.Parameter(self._initial(cfg.init))  # P: [T, d]
        self.optimizer = self._new_optimizer()

    def _initial(self, init: str) -> torch.Tensor:
        return initial_prompt(
            self.table,
            self.ctx.target.verbalizer_ids,
            self.allowed,
            self.cfg.prompt_length,
            init,
            self.generator,
        )

    def _new_optimizer(self) -> torch.optim.Optimizer:
        return torch.optim.AdamW([self.prompt], lr=self.cfg.lr, weight_decay=self.cfg.weight_decay)

    def project(self) -> torch.Tensor:
        """[T] token ids a of the current projection of P."""
        return nearest_tokens(self.prompt, self.table, self.allowed, self.cfg.projection)

    def current_prompt(self) -> str:
        return self.scorer.prompt_text(self.project().tolist())

    def _restart_of(self, step: int) -> int:
        return max(r for r, start in enumerate(self.starts) if start <= step)

    # ------------------------------------------------------------------ one step

    def step(self, step: int) -> dict[str, float]:
        restart = self._restart_of(step)
        if restart != self.restart:  # a new segment: keep the old prompt for dev, start afresh
            self.unscored.append(self.current_prompt())
            self.restart = restart
            with torch.no_grad():
                self.prompt.copy_(self._initial("random"))
            self.optimizer = self._new_optimizer()

        idx = sample_batch(len(self.train), self.cfg.batch_size, self.generator)
        texts = [self.train.texts[i] for i in idx.tolist()]
        labels = self.labels[idx.to(self.device)]

        alpha = self.cfg.perplexity_weight
        terms: dict[str, torch.Tensor] = {}

        def loss_at(projected: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
            logits = self.scorer.score(projected[None], texts)[0]  # [B, C]
            terms["logits"] = logits.detach()
            terms["task"] = F.cross_entropy(logits, labels)  # CE over the verbalizer logits
            nll = self._nll(projected, ids, grad=alpha > 0)
            if nll is not None:
                terms["nll"] = nll.detach()
            return terms["task"] + alpha * nll if alpha > 0 else terms["task"]  # CE + α · NLL_ref

        ids, loss = projected_gradient_step(
            self.prompt, self.table, self.allowed, self.cfg.projection, loss_at
        )
        grad_norm = torch.nn.utils.clip_grad_norm_([self.prompt], self.cfg.grad_clip)
        start = self.starts[restart]
        end = self.starts[restart + 1] if restart + 1 < len(self.starts) else self.steps
        lr = self.cfg.lr * lr_factor(
            step - start, self.cfg.lr_warmup_steps, end - start, self.cfg.lr_schedule
        )
        set_lr(self.optimizer, lr)
        self.optimizer.step()

        logits = terms["logits"]
        values = {
            "losses/task_ce": float(terms["task"].detach()),
            "losses/total": float(loss.detach()),
            "charts/train_accuracy": float((logits.argmax(-1) == labels).float().mean()),
            "charts/grad_norm": float(grad_norm),
            "charts/lr": lr,
            "charts/restart": float(self.restart),
            # 1 when the prompt's text re-tokenises to the projected ids (what dev eval scores).
            "charts/prompt_roundtrip": float(
                self.scorer.prompt_ids(self.scorer.prompt_text(ids.tolist())) == ids.tolist()
            ),
        }
        if "nll" in terms:
            values["losses/perplexity_nll"] = float(terms["nll"])
            values["charts/prompt_perplexity"] = float(terms["nll"].exp())
        return values

    def _nll(self, projected: torch.Tensor, ids: torch.Tensor, grad: bool) -> torch.Tensor | None:
        """NLL of the projected tokens under the (causal) target; logged even when α = 0."""
        if self.ctx.target.kind != "causal":
            return None
        # The output-row path exists only when the target's output rows are its input embeddings.
        through = self.cfg.perplexity_gradient == "exact" and self.tied
        with torch.set_grad_enabled(grad):
            return prompt_nll(
                self.ctx.target.model,
                projected[None],
                ids[None],
                self.bos_id,
                through_token=through,
            )[0]

    # ------------------------------------------------------------------ loop hooks

    def eval_prompts(self) -> list[str]:
        """The current projection, plus the last prompt of each restart finished since the last eval."""
        return [*self.unscored, self.current_prompt()]

    def after_eval(self, step: int, scores) -> dict[str, float]:
        self.unscored = []
        return {}

    def perplexity_judge(self) -> tuple[Any, Any]:
        return self.reference.get()

    def result_extras(self) -> dict[str, Any]:
        return {
            "perplexity_weight": self.cfg.perplexity_weight,
            "perplexity_reference": self.reference.name,
            "prompt_length": self.cfg.prompt_length,
            "restarts": self.cfg.restarts,
        }

    def state_dict(self) -> dict[str, Any]:
        return {
            "prompt": self.prompt.detach().clone(),
            "optimizer": self.optimizer.state_dict(),
            "generator": self.generator.get_state(),
            "restart": self.restart,
            "unscored": list(self.unscored),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        with torch.no_grad():
            self.prompt.copy_(state["prompt"].to(self.device))
        self.optimizer = self._new_optimizer()
        self.optimizer.load_state_dict(state["optimizer"])
        self.generator.set_state(state["generator"])
        self.restart = int(state["restart"])
        self.unscored = list(state["unscored"])
