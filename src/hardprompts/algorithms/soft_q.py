"""RLPrompt and PIN: discrete prompts by soft Q-learning over the tokens of a frozen LM.

``algorithm.name: rlprompt``
    Deng et al., "RLPrompt: Optimizing Discrete Text Prompts with Reinforcement Learning",
    EMNLP 2022. Shannon entropy (softmax policy), on-policy updates on the prompts just sampled,
    top-256 sampling (docs: Methods › RLPrompt).
``algorithm.name: pin``
    Choi et al., "Hard Prompts Made Interpretable: Sparse Entropy Regularization for Prompt
    Tuning with RL", ACL 2024. Sparse Tsallis entropy (sparsemax policy), the ignorable-token
    filter (only the policy LM's own top-k next tokens), off-policy updates from a replay buffer of
    the frozen LM's hidden states (docs: Methods › PIN).

Both are one algorithm with different settings, so one class runs both. The policy is
:class:`hardprompts.policy.PromptPolicy` (a frozen causal LM and a trainable head ψ with
Q_θ(s_t, ·) = W_LM · ψ(h_t) + b); the losses are :func:`hardprompts.functional.sql_loss`; the
reward is :class:`hardprompts.rewards.TrainingReward`. One step:

1. sample P prompts of T tokens from π(·|s_t) (one batched, KV-cached pass of the frozen LM);
2. ask the task for their rewards (classification: the gap reward on the whole training split),
   R(z), z-scored over the P prompts (or per group the task gives) and scaled (RLPrompt ×5,
   PIN ×1);
3. update ψ: on the P fresh prompts (on-policy) or on a batch drawn from the replay buffer,
   with Q recomputed from the stored hidden states (no LM forward); clip; Adam; then the
   Polyak update of the target head ψ′. A non-finite loss or gradient is never applied: the
   update is skipped, counted in ``charts/skipped_updates`` and reported once as a warning.

Evaluation (``eval_prompts``) is the greedy prompt, argmax_a Q(s_t, a) at every step (inside
PIN's filter).

The reward uses the whole training split every step (32 examples for a 2-class 16-shot split),
as both reference codes do for few-shot classification (their run scripts set the data batch to
the whole training set; ``prompt_train_batch_size: 16`` is the number of *prompts* per step).
Scoring the whole split also makes the reward a function of the prompt alone, which the reward
cache relies on.

Replay (PIN, Choi et al. 2024): the buffer counts whole prompts (capacity 64,000 prompts, batches of
256 prompts drawn uniformly with replacement), and no update happens before it holds one batch:
with 16 prompts a step the first 15 steps only sample, score and store, and the first update is
at step 16. Those steps log no ``losses/*``.

Reward normalisation (``reward_zscore_stats``): the papers z-score R over the P prompts of the
step and store that in the buffer ("step", the default). Once the policy has converged the P
prompts are often all the same prompt, whose z-score is then 0 whatever its reward; a stored
prompt's reward also depends on the batch it happened to be sampled with
(``charts/replay_reward_spread`` shows that drift). "distinct_prompts" stores the raw R and
z-scores it at update time against the mean and standard deviation of R over every distinct
prompt scored so far, so a prompt's training reward no longer depends on its company. Measured on
the demo (see the field), both end at the same dev accuracy once the residual head is fixed.

Why the demo used to unlearn: with ``residual_head: true`` Q started at the LM's raw
logits (~10), so V′ ≈ 10 and every bootstrapped target r − V′ ≈ −10 pushed down whatever was
sampled, while the reward scale 5 (effective α 0.2) had collapsed the sparsemax policy onto one
prompt. The residual head now starts at V = 0 (:class:`~hardprompts.policy.PromptPolicy`) and
PIN's scale is 1.

Logged every step: ``rewards/mean`` (R_total), ``rewards/task`` (R_task), ``rewards/task_max``,
``rewards/perplexity`` (mean log PPL, when its weight is > 0), ``rewards/new_prompts`` (cache
misses), ``charts/distinct_prompts`` and ``charts/modal_prompt_share`` (share of the step's
prompts equal to its most frequent one), ``charts/replay_size`` (prompts). On update steps also
``losses/sql`` (and ``losses/v2``, ``losses/v3`` for v2_v3), ``rewards/shaped_mean``,
``rewards/shaped_std`` and ``rewards/zscore_std`` (the std the z-score divided by) of the
trained batch, ``charts/replay_reward_spread`` (mean max − min of the rewards trained on for the
same prompt within the replayed batch: 0 when a prompt's reward does not drift),
``charts/q_action``, ``charts/v_target``, ``charts/grad_norm``, ``charts/policy_support``
(Tsallis), ``charts/skipped_updates``, and the step's time split
``charts/{sample,reward,update}_seconds``.
"""

from __future__ import annotations

import time
import warnings
from collections import Counter
from typing import Any, Literal, NamedTuple

import torch
from pydantic import Field, model_validator
from torch import Tensor

from hardprompts.algorithms.base import Algorithm, RunContext
from hardprompts.config import AlgorithmConfig, register_algorithm
from hardprompts.errors import ConfigError
from hardprompts.functional import sql_loss_and_stats
from hardprompts.modeling import load_lm, load_tokenizer, placement
from hardprompts.policy import PromptPolicy
from hardprompts.rewards import TrainingReward
from hardprompts.tasks import RLPromptReward

__all__ = ["PINConfig", "RLPromptConfig", "ReplayBatch", "ReplayBuffer", "SoftQPrompt"]

LossName = Literal["v1", "v2", "v3", "v2_v3", "mc_return"]
ZscoreStats = Literal["step", "replay_batch", "distinct_prompts"]


# ----------------------------------------------------------------------------------------------
# Configuration: one class per paper, shared fields on a common base
# ----------------------------------------------------------------------------------------------


class SoftQConfig(AlgorithmConfig):
    """Fields shared by ``rlprompt`` and ``pin`` (same default in both papers)."""

    alpha: float = Field(
        1.0,
        gt=0,
        description="Entropy temperature α: V = α·logsumexp(Q/α) or α·spmax(Q/α). RLPrompt: 1; "
        "PIN writes it as a reward scale 1/α = 1 for classification (2 for style transfer).",
    )
    prompts_per_step: int = Field(
        16, ge=1, description="Prompts P sampled and scored per step (RLPrompt: 16)."
    )
    learning_rate: float = Field(5e-5, gt=0, description="Adam step size (both papers: 5e-5).")
    grad_clip: float | None = Field(
        5.0, gt=0, description="Clip ψ's gradient to this global norm; null = off (RLPrompt: 5)."
    )
    target_update_rate: float = Field(
        0.001,
        ge=0,
        le=1,
        description="Polyak τ of the target head, θ′ ← (1 − τ)θ′ + τθ every step (RLPrompt: 0.001).",
    )
    residual_head: bool = Field(
        False,
        description="ψ(h) = h + MLP(h), so that Q starts at the LM's own logits (ours). Default "
        "off: the papers' ψ(h) = MLP(h) with Xavier gain 1e-4, Q ≈ 0 at the start.",
    )
    reward_correct_coef: float = Field(
        200.0, gt=0, description="λ₂, weight of a positive gap in the reward (RLPrompt: 200)."
    )
    reward_incorrect_coef: float = Field(
        180.0, gt=0, description="λ₁, weight of a negative gap in the reward (RLPrompt: 180)."
    )
    reward_zscore: bool = Field(
        True,
        description="z-score R over the prompts of each step, (R − mean)/(std + 1e-4) (RLPrompt).",
    )
    reward_scale: float = Field(
        5.0,
        gt=0,
        description="Shaping factor after the z-score (RLPrompt, classification: 5). Scaling r, Q "
        "and α together changes nothing but α, so this is 1/α in disguise.",
    )
    reward_zscore_stats: ZscoreStats = Field(
        "step",
        description="What the z-score's mean and std are taken over. step: the P prompts of the "
        "step (or the task's groups), applied when sampled and stored so (RLPrompt, PIN); "
        "replay_batch: the batch being trained on, at update time; distinct_prompts: every "
        "distinct prompt scored so far, at update time (ours: a stored prompt's reward then "
        "never drifts, and a step of identical prompts no longer scores 0 whatever their "
        "reward). The last two need rewards that are a function of the prompt (not style "
        "transfer). On the demo (300 steps, seed 0) step and distinct_prompts both end at dev "
        "0.844, so the papers' step stays the default.",
    )
    perplexity_weight: float = Field(
        0.0,
        ge=0,
        description="α of Patel et al. (2025): R_total = R_task − α·log PPL(z), before the "
        "z-score (docs: Methods › Perplexity regularisation). 0 = off.",
    )
    perplexity_model: str | None = Field(
        None,
        description="Causal reference LM of the perplexity term and of result.json's "
        "prompt_perplexity (also when perplexity_weight is 0). Unset: the policy's frozen LM "
        "(Patel et al. 2025).",
    )
    reward_cache: bool = Field(
        True,
        description="Score each distinct prompt on the training split once and reuse it (ours; "
        "the reward is deterministic given the prompt).",
    )
    replay_batch_size: int = Field(
        256,
        ge=1,
        description="Whole prompts per off-policy update, drawn uniformly with replacement; no "
        "update happens before the buffer holds this many (PIN: 256 prompts). Used when "
        "replay_capacity > 0.",
    )

    @model_validator(mode="after")
    def _check(self) -> SoftQConfig:
        if self.reward_zscore and self.prompts_per_step < 2:
            raise ValueError(
                "algorithm.reward_zscore needs algorithm.prompts_per_step ≥ 2 (the z-score of one "
                "prompt is always 0); raise prompts_per_step or set reward_zscore: false"
            )
        capacity = getattr(self, "replay_capacity", 0)
        if capacity and capacity < max(self.replay_batch_size, self.prompts_per_step):
            raise ValueError(
                f"algorithm.replay_capacity {capacity} (prompts) holds fewer than "
                f"algorithm.replay_batch_size {self.replay_batch_size} or one step of "
                f"algorithm.prompts_per_step {self.prompts_per_step}, so no update could ever run; "
                "raise replay_capacity, lower the others, or set replay_capacity: 0 for on-policy "
                "updates"
            )
        return self

    def make(self, ctx: RunContext) -> SoftQPrompt:
        return SoftQPrompt(ctx, self)


@register_algorithm("rlprompt")
class RLPromptConfig(SoftQConfig):
    """RLPrompt (Deng et al., EMNLP 2022): soft Q-learning with Shannon entropy, on-policy.

    Defaults are the paper's few-shot classification settings: distilgpt2 policy
    (``policy.model``), 5 tokens, MLP 2048, 16 prompts a step, top-256 sampling, α = 1, loss
    (v2 + v3)/2, Adam 5e-5, clip 5, τ = 0.001, reward 200/180 z-scored ×5. The paper trains
    12,000 steps: set ``train.steps: 12000`` (the loop's default).
    """

    name: Literal["rlprompt"] = Field("rlprompt", description="RLPrompt (Deng et al., 2022).")
    entropy: Literal["shannon", "tsallis"] = Field(
        "shannon",
        description="Entropy regulariser: shannon (softmax policy, RLPrompt) or tsallis "
        "(sparsemax policy, PIN).",
    )
    loss: LossName = Field(
        "v2_v3",
        description="Soft Q-learning loss: v1 one-step soft Q, v2 one-step path consistency, v3 "
        "multi-step path consistency, v2_v3 their mean (RLPrompt's shipped default "
        "'v2_v2r_v3_v3r'), mc_return regression on the Monte-Carlo return.",
    )
    top_k: int | None = Field(
        256,
        ge=1,
        description="Sample among the k most probable tokens (RLPrompt: 256 for classification, "
        "50 for style transfer); null = the whole policy.",
    )
    token_filter_k: int | None = Field(
        None,
        ge=1,
        description="Mask Q outside the policy LM's own top-k next tokens (PIN's filter); null = "
        "off (RLPrompt). Clamped to the LM's vocabulary size.",
    )
    replay_capacity: int = Field(
        0,
        ge=0,
        description="Replay buffer size in whole prompts; 0 = on-policy updates on the prompts "
        "just sampled (RLPrompt: only on-policy works in its code).",
    )


@register_algorithm("pin")
class PINConfig(SoftQConfig):
    """PIN (Choi et al., ACL 2024): sparse Tsallis entropy, token filter, replay buffer.

    Defaults are the paper's classification settings: Tsallis entropy, filter k = 10,000,
    buffer of 64,000 prompts with batches of 256 prompts (no update before 256 are stored), α = 1
    and reward scale 1 after the z-score (PIN's configs shape [0, 1] → [0, 1]; RLPrompt's → [0,
    5]), Adam 5e-5, prompt length 5, MLP 2048. The paper's policy LM is facebook/opt-125m (set
    ``policy.model``) and it trains 6,000 steps (``train.steps: 6000``). Loss: the bootstrapped
    (v2 + v3)/2, as RLPrompt. PIN's sparse-Tsallis module ships a "v1" that regresses Q on the
    Monte-Carlo return (``loss: mc_return`` here); its README's command runs ``algo=sql``,
    RLPrompt's Shannon module, with ``loss_impl=v1`` (docs: Methods › PIN).
    """

    name: Literal["pin"] = Field("pin", description="PIN (Choi et al., 2024).")
    reward_scale: float = Field(
        1.0,
        gt=0,
        description="Shaping factor after the z-score (PIN, classification: 1; 2 for style "
        "transfer). RLPrompt's 5 would run PIN at an effective α of 0.2.",
    )
    entropy: Literal["shannon", "tsallis"] = Field(
        "tsallis",
        description="Entropy regulariser: tsallis (sparsemax policy, PIN) or shannon (softmax, "
        "RLPrompt).",
    )
    loss: LossName = Field(
        "v2_v3",
        description="Soft Q-learning loss. Default the bootstrapped (v2 + v3)/2 (PIN's v2/v3 "
        "family, RLPrompt's default; ours: keeps the comparison with RLPrompt to PIN's three "
        "changes); mc_return = the Monte-Carlo regression of PIN's sparse-ql 'v1'; v1 = "
        "one-step soft Q with the spmax target.",
    )
    top_k: int | None = Field(
        None,
        ge=1,
        description="Sample among the k most probable tokens; null = the whole sparsemax policy, "
        "already sparse and inside the token filter (our choice).",
    )
    token_filter_k: int | None = Field(
        10_000,
        ge=1,
        description="Ignorable-token filter: mask Q outside the policy LM's own top-k next tokens "
        "(PIN: 10,000 for text); null = off. Clamped to the LM's vocabulary size.",
    )
    replay_capacity: int = Field(
        64_000,
        ge=0,
        description="Replay buffer size in whole prompts (PIN: 64,000 prompts); 0 = on-policy. "
        "Memory grows with use, up to capacity × T × d float32 hidden states.",
    )


# ----------------------------------------------------------------------------------------------
# Replay buffer of frozen-LM hidden states (PIN, Choi et al. 2024, fix 3)
# ----------------------------------------------------------------------------------------------


class ReplayBatch(NamedTuple):
    """Whole prompts for the loss.

    Attributes:
        hidden: [B, T, d] float32 frozen-LM hidden states h_t at s_0 … s_{T−1}.
        tokens: [B, T] long actions a_0 … a_{T−1}.
        reward: [B] float32 shaped reward as computed when the prompt was sampled (z-scored over
            its step and scaled: what RLPrompt and PIN train on).
        raw: [B] float32 R_total(z), before any z-score (normalised at update time by the other
            ``reward_zscore_stats`` settings).
    """

    hidden: Tensor
    tokens: Tensor
    reward: Tensor
    raw: Tensor


class ReplayBuffer:
    """Ring buffer of whole prompts; the oldest prompt is overwritten first.

    Storage grows with use (doubling, up to ``capacity``), so a large capacity costs memory only
    once it is filled.

    Args:
        capacity: prompts held (PIN: 64,000).
        length: T, tokens per prompt.
        hidden_dim: d of the policy LM.
        device: where the tensors live (the policy's device).
    """

    _FIRST_ALLOCATION = 1024

    def __init__(self, capacity: int, length: int, hidden_dim: int, device: torch.device) -> None:
        self.capacity = capacity
        self.length, self.hidden_dim, self.device = length, hidden_dim, device
        self.pos = 0  # next slot to write
        self.size = 0  # filled slots
        self._allocate(min(capacity, self._FIRST_ALLOCATION))

    def _allocate(self, rows: int) -> None:
        """(Re)allocate storage for ``rows`` prompts, keeping the filled ones."""
        old = getattr(self, "hidden", None)
        hidden = torch.zeros(rows, self.length, self.hidden_dim, device=self.device)
        tokens = torch.zeros(rows, self.length, dtype=torch.long, device=self.device)
        reward = torch.zeros(rows, device=self.device)
        raw = torch.zeros(rows, device=self.device)
        if old is not None and self.size:
            n = self.size
            hidden[:n], tokens[:n] = self.hidden[:n], self.tokens[:n]
            reward[:n], raw[:n] = self.reward[:n], self.raw[:n]
        self.hidden, self.tokens, self.reward, self.raw = hidden, tokens, reward, raw

    def __len__(self) -> int:
        return self.size

    def add(self, batch: ReplayBatch) -> None:
        """Append B prompts (B may exceed the free space; the oldest are overwritten)."""
        n = batch.tokens.shape[0]
        if n > self.capacity:  # only the newest `capacity` prompts can stay
            batch = ReplayBatch(*(t[n - self.capacity :] for t in batch))
            n = self.capacity
        needed = min(self.size + n, self.capacity)
        if needed > self.hidden.shape[0]:  # still filling: pos == size, grow before writing
            self._allocate(min(self.capacity, max(needed, 2 * self.hidden.shape[0])))
        slots = (self.pos + torch.arange(n, device=self.tokens.device)) % self.capacity
        self.hidden[slots] = batch.hidden.to(self.hidden)
        self.tokens[slots] = batch.tokens.to(self.tokens)
        self.reward[slots] = batch.reward.to(self.reward)
        self.raw[slots] = batch.raw.to(self.raw)
        self.pos = (self.pos + n) % self.capacity
        self.size = min(self.size + n, self.capacity)

    def sample(self, n: int, generator: torch.Generator) -> ReplayBatch:
        """n prompts drawn uniformly with replacement from the filled slots (as PIN)."""
        if self.size == 0:
            raise RuntimeError("sample() from an empty replay buffer")
        idx = torch.randint(self.size, (n,), generator=generator, device=generator.device)
        idx = idx.to(self.tokens.device)
        return ReplayBatch(self.hidden[idx], self.tokens[idx], self.reward[idx], self.raw[idx])

    def state_dict(self) -> dict[str, Any]:
        return {
            "hidden": self.hidden[: self.size],
            "tokens": self.tokens[: self.size],
            "reward": self.reward[: self.size],
            "raw": self.raw[: self.size],
            "pos": self.pos,
            "size": self.size,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        size = int(state["size"])
        shape = (self.length, self.hidden_dim)
        if size > self.capacity or tuple(state["hidden"].shape[1:]) != shape:
            raise ValueError(
                f"replay buffer checkpoint holds {size} prompts of shape "
                f"{tuple(state['hidden'].shape[1:])}; this buffer holds {self.capacity} of {shape}"
            )
        self.size = 0
        self._allocate(max(size, min(self.capacity, self._FIRST_ALLOCATION)))
        self.hidden[:size] = state["hidden"].to(self.hidden)
        self.tokens[:size] = state["tokens"].to(self.tokens)
        self.reward[:size] = state["reward"].to(self.reward)
        self.raw[:size] = state["raw"].to(self.raw)
        self.pos, self.size = int(state["pos"]), size


# ----------------------------------------------------------------------------------------------
# The algorithm
# ----------------------------------------------------------------------------------------------


class SoftQPrompt(Algorithm):
    """Soft Q-learning prompt optimiser: RLPrompt or PIN, depending on the config's settings."""

    def __init__(self, ctx: RunContext, cfg: SoftQConfig) -> None:
        super().__init__(ctx)
        self.cfg = cfg
        self.method = cfg.name
        pc = ctx.config.policy
        seed = ctx.config.train.seed
        self.length = pc.prompt_length  # T

        # Policy: the frozen causal LM and the head ψ, initialised from the run's seed alone.
        tokenizer = load_tokenizer(pc.model)
        lm = load_lm(pc.model, "causal", **placement(pc))
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            self.policy = PromptPolicy(
                lm,
                tokenizer,
                hidden_size=pc.mlp_hidden,
                residual=cfg.residual_head,
                entropy=cfg.entropy,
                alpha=cfg.alpha,
            )
        vocab = self.policy.vocab_size
        # PIN's filter k (10,000) is clamped to the vocabulary, e.g. for small test models.
        self.filter_k = None if cfg.token_filter_k is None else min(cfg.token_filter_k, vocab)
        self.top_k = cfg.top_k

        self.optimizer = torch.optim.Adam(self.policy.trainable_parameters(), lr=cfg.learning_rate)
        self.generator = torch.Generator(device=self.policy.device).manual_seed(seed)

        self.buffer: ReplayBuffer | None = None
        if cfg.replay_capacity > 0:  # in whole prompts (PIN: 64,000), checked at config load
            self.buffer = ReplayBuffer(
                cfg.replay_capacity, self.length, self.policy.hidden_dim, self.policy.device
            )
        # R_total of every distinct prompt scored so far ("distinct_prompts" z-score), with its
        # running sums (float64) so that the mean and std cost nothing per step.
        self.seen: dict[str, float] = {}
        self.seen_sums = [0.0, 0.0]  # Σ R, Σ R²
        self.skipped_updates = 0  # non-finite losses or gradients, never applied

        # The reference LM judges readability: in the reward (weight > 0) and in result.json.
        if cfg.perplexity_model is None:
            self.judge = (self.policy.lm, tokenizer)
        else:
            self.judge = (
                load_lm(cfg.perplexity_model, "causal", **placement(pc)),
                load_tokenizer(cfg.perplexity_model),
            )
        reference = self.judge if cfg.perplexity_weight > 0 else None
        self.reward = TrainingReward(
            ctx.task,
            RLPromptReward(cfg.reward_correct_coef, cfg.reward_incorrect_coef),
            normalise=cfg.reward_zscore,
            scale=cfg.reward_scale,
            perplexity_weight=cfg.perplexity_weight,
            reference=reference,
            cache=cfg.reward_cache,
        )
        if cfg.reward_zscore and cfg.reward_zscore_stats != "step":
            if not ctx.task.deterministic_rewards:  # sampled, per-input grouped (style transfer)
                raise ConfigError(
                    f"algorithm.reward_zscore_stats {cfg.reward_zscore_stats!r} needs a reward "
                    f"that is a function of the prompt; task {ctx.task.kind!r} samples its "
                    "rewards (z-scored per input): set algorithm.reward_zscore_stats: step"
                )
        # Greedy prompts shown to the loop, with their policy tokens (for result.json).
        self.eval_tokens: dict[str, list[str]] = {}

    # -- one training step -------------------------------------------------------------------

    def step(self, step: int) -> dict[str, float]:
        cfg = self.cfg
        t0 = time.perf_counter()
        self.policy.train()
        sample = self.policy.sample(
            cfg.prompts_per_step,
            self.length,
            entropy=cfg.entropy,
            alpha=cfg.alpha,
            top_k=self.top_k,
            token_filter_k=self.filter_k,
            generator=self.generator,
        )  # tokens [P, T], hidden [P, T, d]
        prompts = self.policy.decode(sample.tokens)

        t1 = time.perf_counter()
        reward = self.reward(prompts)  # R_task, log PPL, R_total, r_final: each [P]
        for prompt, total in zip(prompts, reward.total.tolist(), strict=True):
            if prompt not in self.seen:  # the population of the "distinct_prompts" z-score
                self.seen[prompt] = total
                self.seen_sums[0] += total
                self.seen_sums[1] += total * total

        t2 = time.perf_counter()
        device = self.policy.device
        fresh = ReplayBatch(
            sample.hidden, sample.tokens, reward.shaped.to(device), reward.total.to(device)
        )
        stats: dict[str, float] = {}
        if self.buffer is not None:  # PIN: off-policy, from the buffer (fresh prompts included)
            self.buffer.add(fresh)
            if len(self.buffer) >= cfg.replay_batch_size:  # PIN: no update before one batch
                stats = self._update(self.buffer.sample(cfg.replay_batch_size, self.generator))
        else:  # RLPrompt: on-policy, the prompts just sampled
            stats = self._update(fresh)
        t3 = time.perf_counter()

        modal = max(Counter(prompts).values())
        values = {
            "rewards/mean": float(reward.total.mean()),
            "rewards/task": float(reward.task.mean()),
            "rewards/task_max": float(reward.task.max()),
            "rewards/new_prompts": float(reward.scored),
            **stats,
            "charts/distinct_prompts": float(len(set(prompts))),
            "charts/modal_prompt_share": modal / len(prompts),
            "charts/skipped_updates": float(self.skipped_updates),
            "charts/sample_seconds": t1 - t0,
            "charts/reward_seconds": t2 - t1,
            "charts/update_seconds": t3 - t2,
        }
        if cfg.reward_zscore and cfg.reward_zscore_stats == "step":  # the std R̃ divides by
            values["rewards/zscore_std"] = float(reward.total.std(correction=0))
        if reward.log_perplexity is not None:
            values["rewards/perplexity"] = float(reward.log_perplexity.mean())  # mean log PPL
        for key, metric in reward.metrics.items():  # the task's own per-prompt scalars
            values[f"rewards/{key}"] = float(metric.float().mean())
        if self.buffer is not None:
            values["charts/replay_size"] = float(len(self.buffer))  # prompts
        return values

    def _training_reward(self, batch: ReplayBatch) -> tuple[Tensor, float | None]:
        """The reward r the loss sees for each prompt of the batch, and the z-score's std (None:
        the z-score was taken when the prompts were sampled)."""
        cfg = self.cfg
        if not cfg.reward_zscore or cfg.reward_zscore_stats == "step":
            return batch.reward, None  # shaped when sampled (RLPrompt, PIN)
        raw = batch.raw.double()
        if cfg.reward_zscore_stats == "replay_batch":
            mean, std = raw.mean(), raw.std(correction=0)
        else:  # "distinct_prompts": every distinct prompt scored so far (population std)
            n = len(self.seen)
            mean = self.seen_sums[0] / n
            std = max(self.seen_sums[1] / n - mean * mean, 0.0) ** 0.5
        r = cfg.reward_scale * (raw - mean) / (std + 1e-4)  # r = scale · (R − μ) / (σ + 1e-4)
        return r.to(batch.reward), float(std)

    def _update(self, batch: ReplayBatch) -> dict[str, float]:
        """One gradient step of ψ on the soft Q-learning loss, then the Polyak update of ψ′."""
        cfg = self.cfg
        reward, zscore_std = self._training_reward(batch)
        mask = None
        if self.filter_k is not None:  # the same filter for online and target Q (PIN, fix 2)
            mask = self.policy.token_filter(batch.hidden, self.filter_k)  # [B, T, V]
            # The taken token is always allowed: the filter is recomputed here on another batch
            # shape, and a top-k boundary that flips would give Q(s_t, a_t) = −inf.
            mask.scatter_(-1, batch.tokens[..., None], True)
        q = self.policy.q_values(batch.hidden, mask)  # Q_θ(s_t, ·)   [B, T, V]
        q_target = self.policy.q_values(batch.hidden, mask, target=True)  # Q_θ′(s_t, ·)
        loss, stats = sql_loss_and_stats(
            q,
            q_target,
            batch.tokens,
            reward,
            variant=cfg.loss,
            entropy=cfg.entropy,
            alpha=cfg.alpha,
        )
        self.optimizer.zero_grad(set_to_none=True)
        params = self.policy.trainable_parameters()
        grad_norm = torch.full((), float("nan"))
        if torch.isfinite(loss):
            loss.backward()
            if cfg.grad_clip is not None:
                grad_norm = torch.nn.utils.clip_grad_norm_(params, cfg.grad_clip)
            else:
                grad_norm = torch.linalg.vector_norm(
                    torch.stack([torch.linalg.vector_norm(p.grad) for p in params])
                )
        if torch.isfinite(grad_norm):
            self.optimizer.step()
            self.policy.update_target(cfg.target_update_rate)  # θ′ ← (1 − τ)θ′ + τθ
        else:  # never apply a non-finite step: it would turn every parameter into NaN
            self.optimizer.zero_grad(set_to_none=True)
            self.skipped_updates += 1
            if self.skipped_updates == 1:
                warnings.warn(
                    f"{self.method}: a non-finite loss ({float(loss.detach())}) or gradient norm "
                    f"({float(grad_norm)}) was skipped, not applied; charts/skipped_updates counts "
                    "them. Check the reward (NaN scores from the target?) and lower "
                    "algorithm.learning_rate if it recurs.",
                    RuntimeWarning,
                    stacklevel=2,
                )

        if zscore_std is not None:
            stats["zscore_std"] = torch.tensor(zscore_std)  # logged as rewards/zscore_std below
        out = {
            "losses/sql": float(loss.detach()),
            "charts/grad_norm": float(grad_norm),
            "rewards/shaped_mean": float(reward.mean()),
            "rewards/shaped_std": float(reward.std(correction=0)),
            "charts/replay_reward_spread": _reward_spread(batch.tokens, reward),
        }
        for key, value in stats.items():
            if key in ("loss", "reward"):
                continue
            prefix = "losses" if key.startswith("loss_") else "charts"
            prefix = "rewards" if key == "zscore_std" else prefix
            out[f"{prefix}/{key.removeprefix('loss_')}"] = float(value)
        return out

    # -- evaluation and results --------------------------------------------------------------

    def eval_prompts(self) -> list[str]:
        """The greedy prompt: argmax_a Q(s_t, a) at each step (filter applied for PIN)."""
        self.policy.eval()
        sample = self.policy.sample(1, self.length, greedy=True, token_filter_k=self.filter_k)
        prompt = self.policy.decode(sample.tokens)[0]
        self.eval_tokens[prompt] = self.policy.token_strings(sample.tokens)[0]
        return [prompt]

    def prompt_tokens(self, prompt: str) -> list[str]:
        """The policy tokens the prompt was written with (policy tokenizer's strings)."""
        if prompt in self.eval_tokens:
            return list(self.eval_tokens[prompt])
        tok = self.policy.tokenizer
        return tok.convert_ids_to_tokens(tok(prompt, add_special_tokens=False)["input_ids"])

    def perplexity_judge(self) -> tuple[Any, Any]:
        """result.json's prompt perplexity: under algorithm.perplexity_model, else the policy LM."""
        return self.judge

    def first_update_step(self) -> int:
        """On-policy (RLPrompt): 1. Off-policy (PIN): the step whose prompts fill the replay
        buffer to ``replay_batch_size`` (64 prompts at 16 a step: step 4)."""
        if self.buffer is None:
            return 1
        return -(-self.cfg.replay_batch_size // self.cfg.prompts_per_step)

    def result_extras(self) -> dict[str, Any]:
        return {
            "policy_model": self.ctx.config.policy.model,
            "perplexity_reference": self.cfg.perplexity_model or self.ctx.config.policy.model,
            # Distinct prompts scored on the training split (known only with the cache on).
            "distinct_prompts_scored": len(self.reward.cache) if self.reward.use_cache else None,
        }

    # -- checkpoint --------------------------------------------------------------------------

    def state_dict(self) -> dict[str, Any]:
        return {
            "heads": self.policy.head_state_dict(),  # ψ and ψ′ (the LM is frozen)
            "optimizer": self.optimizer.state_dict(),
            "generator": self.generator.get_state(),
            "reward_cache": self.reward.state_dict(),
            "buffer": None if self.buffer is None else self.buffer.state_dict(),
            "eval_tokens": dict(self.eval_tokens),
            "seen_prompts": list(self.seen),
            "seen_rewards": torch.tensor(list(self.seen.values()), dtype=torch.float64),
            "seen_sums": torch.tensor(self.seen_sums, dtype=torch.float64),
            "skipped_updates": self.skipped_updates,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.policy.load_head_state_dict(state["heads"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.generator.set_state(state["generator"])
        self.reward.load_state_dict(state["reward_cache"])
        if self.buffer is not None:
            self.buffer.load_state_dict(state["buffer"])
        self.eval_tokens = {k: list(v) for k, v in state["eval_tokens"].items()}
        rewards = state["seen_rewards"].tolist()
        self.seen = dict(zip(state["seen_prompts"], rewards, strict=True))
        self.seen_sums = state["seen_sums"].tolist()
        self.skipped_updates = int(state["skipped_updates"])


def _reward_spread(tokens: Tensor, reward: Tensor) -> float:
    """Mean over the prompts that occur more than once in the batch of (max − min) of their r."""
    _, inverse, counts = torch.unique(tokens, dim=0, return_inverse=True, return_counts=True)
    if not bool((counts > 1).any()):
        return 0.0
    r = reward.detach().float()
    hi = torch.full((counts.numel(),), float("-inf")).scatter_reduce(
        0, inverse.cpu(), r.cpu(), "amax"
    )
    lo = torch.full((counts.numel(),), float("inf")).scatter_reduce(
        0, inverse.cpu(), r.cpu(), "amin"
    )
    repeated = counts.cpu() > 1
    return float((hi - lo)[repeated].mean())
