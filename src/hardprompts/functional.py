"""Entropy-regularised values, policies and soft Q-learning losses, as pure functions on tensors.

Two regularisers are supported, named by the ``entropy`` argument:

``"shannon"`` (RLPrompt, Deng et al. 2022)
    V(s) = α · logsumexp(Q(s,·)/α),  π(·|s) = softmax(Q(s,·)/α).
``"tsallis"`` (PIN, Choi et al. 2024; sparse Tsallis entropy, q = 2, constant ½)
    V(s) = α · spmax(Q(s,·)/α),  π(·|s) = sparsemax(Q(s,·)/α).

Masked actions are given as ``-inf`` entries of Q: they get probability 0 and do not change the
value (nor τ for sparsemax). A row with no finite entry has no distribution; like
``torch.softmax``, the functions return NaN for it.

The equations are those of RLPrompt (Deng et al. 2022) and PIN (Choi et al. 2024), written out
with hand-worked values in the docs: Methods › RLPrompt and Methods › PIN.
"""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = [
    "ENTROPIES",
    "SQL_VARIANTS",
    "log_policy",
    "soft_advantage",
    "soft_policy",
    "soft_value",
    "sparsemax",
    "spmax",
    "sql_loss",
    "sql_loss_and_stats",
    "sql_step_losses",
    "tsallis_entropy",
]

#: Entropy regularisers understood by :func:`soft_value` and :func:`soft_policy`.
ENTROPIES: tuple[str, ...] = ("shannon", "tsallis")

#: Soft Q-learning losses understood by :func:`sql_loss`, with what each one regresses.
SQL_VARIANTS: dict[str, str] = {
    "v1": "one-step soft Q-learning: Q_t(a_t) on Q̂_t = V'_{t+1} (Q̂_{T-1} = r)",
    "v2": "one-step path consistency: A_t on V'_{t+1} - V'_t (r - V'_{T-1} at the last step)",
    "v3": "multi-step path consistency: sum_{k>=t} A_k on r - V'_t",
    "v2_v3": "(v2 + v3) / 2; RLPrompt's default, shipped there as 'v2_v2r_v3_v3r'",
    "mc_return": "Monte-Carlo return regression: Q_t(a_t) on r (PIN's released 'v1')",
}

# First k tried by the top-k sparsemax threshold search; doubled until the support fits.
_TOPK_START = 64


def _check_entropy(entropy: str) -> None:
    if entropy not in ENTROPIES:
        valid = ", ".join(repr(e) for e in ENTROPIES)
        raise ValueError(f"unknown entropy {entropy!r}; valid entropies: {valid}")


def _check_alpha(alpha: float) -> None:
    if not alpha > 0:
        raise ValueError(f"alpha (the entropy temperature) must be > 0, got {alpha!r}")


# ----------------------------------------------------------------------------------------------
# Sparsemax and its value function
# ----------------------------------------------------------------------------------------------


def _sparsemax_threshold(y: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """Threshold τ of sparsemax along the last dim, from the largest entries only.

    Args:
        y: [..., d], already shifted so that the row maximum is 0 (stability).

    Returns:
        tau: [..., 1] the threshold τ(y).
        y_top: [..., k] the k largest entries of y, descending (k ≥ support size).
        in_support: [..., k] bool, True for the entries of ``y_top`` that are in the support S.

    Uses ``topk`` with k doubled until every row's support is smaller than k (the condition
    1 + i·y₍ᵢ₎ > Σ_{j≤i} y₍ⱼ₎ holds for a prefix of i only, so a support shorter than k is the
    full support); a full sort only when the support may span the whole row.
    """
    d = y.shape[-1]
    k = min(d, _TOPK_START)
    while True:
        y_top = torch.topk(y, k, dim=-1, sorted=True).values  # [..., k] descending
        cumsum = y_top.cumsum(dim=-1)  # Σ_{j≤i} y₍ⱼ₎
        i = torch.arange(1, k + 1, device=y.device, dtype=y.dtype)
        in_support = 1 + i * y_top > cumsum  # K(y) = max{i : 1 + i·y₍ᵢ₎ > Σ_{j≤i} y₍ⱼ₎}
        support = in_support.sum(dim=-1, keepdim=True)  # [..., 1] = K(y)
        if k == d or bool((support < k).all()):
            break
        k = min(2 * k, d)
    # A row without a finite entry has an empty "support"; clamp so that it yields NaN, not an
    # index error.
    support = support.clamp(min=1)
    tau = (cumsum.gather(-1, support - 1) - 1) / support  # τ = (Σ_{j≤K} y₍ⱼ₎ − 1) / K
    return tau, y_top, in_support


def sparsemax(z: Tensor, dim: int = -1) -> Tensor:
    """Sparsemax (Martins & Astudillo, 2016): the Euclidean projection of z onto the simplex.

    sparsemax(z)_i = max(z_i − τ(z), 0), with τ as in PIN (Choi et al. 2024; docs: Methods › PIN).
    Differentiable (autograd); its Jacobian is diag(s) − s sᵀ/|S| with s the support indicator.

    Args:
        z: [..., d, ...] scores; ``-inf`` entries are masked (probability 0, no effect on τ).
        dim: the dimension to normalise over.

    Returns:
        Probabilities, same shape as z, summing to 1 along ``dim``.
    """
    y = z.movedim(dim, -1)
    y = y - y.amax(dim=-1, keepdim=True).detach()  # shift invariance: τ(y + c) = τ(y) + c
    tau, _, _ = _sparsemax_threshold(y)
    p = torch.clamp(y - tau, min=0)  # sparsemax(y)_i = max(y_i − τ(y), 0)
    return p.movedim(-1, dim)


def spmax(z: Tensor, dim: int = -1) -> Tensor:
    """Sparse-max value: max_p [p·z + ½(1 − ‖p‖²)] over the simplex (Tsallis entropy, α = 1).

    spmax(z) = ½ Σ_{i∈S} (z_i² − τ(z)²) + ½, S the support of sparsemax(z). Its gradient is
    sparsemax(z), and max(z) ≤ spmax(z) ≤ max(z) + (d − 1)/(2d).

    Args:
        z: [..., d, ...] scores; ``-inf`` entries are masked.
        dim: the dimension reduced.

    Returns:
        [...] (``dim`` removed) the value.
    """
    y = z.movedim(dim, -1)
    m = y.amax(dim=-1, keepdim=True).detach()
    y = y - m  # spmax(z) = max(z) + spmax(z − max(z))
    tau, y_top, in_support = _sparsemax_threshold(y)
    # Off-support entries are replaced by τ, so they add exactly 0 (and no NaN gradient from -inf).
    y_s = torch.where(in_support, y_top, tau)
    value = 0.5 * (y_s.square() - tau.square()).sum(dim=-1) + 0.5  # ½ Σ_{i∈S}(z_i² − τ²) + ½
    return value + m.squeeze(-1)


def tsallis_entropy(p: Tensor, dim: int = -1) -> Tensor:
    """Sparse Tsallis entropy W(p) = ½ (1 − ‖p‖²) (q = 2, constant ½).

    Args:
        p: [..., d, ...] probabilities.
        dim: the dimension reduced.

    Returns:
        [...] (``dim`` removed).
    """
    return 0.5 * (1 - p.square().sum(dim=dim))  # W(π) = ½ (1 − ‖π‖²)


# ----------------------------------------------------------------------------------------------
# Soft values and policies
# ----------------------------------------------------------------------------------------------


def soft_value(q: Tensor, alpha: float, entropy: str, dim: int = -1) -> Tensor:
    """Soft state value V(s) of Q-values q under temperature α.

    Args:
        q: [..., V, ...] Q-values (``-inf`` = masked action).
        alpha: temperature α > 0.
        entropy: ``"shannon"`` or ``"tsallis"``.
        dim: the action dimension.

    Returns:
        [...] (``dim`` removed). Shannon: α·logsumexp(q/α); Tsallis: α·spmax(q/α).
    """
    _check_entropy(entropy)
    _check_alpha(alpha)
    if entropy == "shannon":
        return alpha * torch.logsumexp(q / alpha, dim=dim)  # V = α · logsumexp(Q/α)
    return alpha * spmax(q / alpha, dim=dim)  # V = α · spmax(Q/α)


def soft_policy(q: Tensor, alpha: float, entropy: str, dim: int = -1) -> Tensor:
    """Policy π(·|s) induced by q under temperature α (the gradient of the value in q).

    Args:
        q: [..., V, ...] Q-values (``-inf`` = masked action).
        alpha: temperature α > 0.
        entropy: ``"shannon"`` or ``"tsallis"``.
        dim: the action dimension.

    Returns:
        Probabilities, same shape as q. Shannon: softmax(q/α); Tsallis: sparsemax(q/α).
    """
    _check_entropy(entropy)
    _check_alpha(alpha)
    if entropy == "shannon":
        return torch.softmax(q / alpha, dim=dim)  # π = softmax(Q/α)
    return sparsemax(q / alpha, dim=dim)  # π = sparsemax(Q/α)


def log_policy(q: Tensor, alpha: float, entropy: str, dim: int = -1) -> Tensor:
    """log π(·|s), same shape as q; ``-inf`` off the support (always so for masked actions).

    Shannon: log_softmax(q/α) (= A/α). Tsallis: log sparsemax(q/α).
    """
    _check_entropy(entropy)
    _check_alpha(alpha)
    if entropy == "shannon":
        return torch.log_softmax(q / alpha, dim=dim)
    return torch.log(sparsemax(q / alpha, dim=dim))


def soft_advantage(q: Tensor, alpha: float, entropy: str, dim: int = -1) -> Tensor:
    """Soft advantage A(s,·) = Q(s,·) − V(s), same shape as q.

    For Shannon entropy A = α · log π. For Tsallis A ≤ 0 is finite off the support too.
    """
    return q - soft_value(q, alpha, entropy, dim=dim).unsqueeze(dim)  # A = Q − V


# ----------------------------------------------------------------------------------------------
# Soft Q-learning losses with a sparse terminal reward (γ = 1)
# ----------------------------------------------------------------------------------------------


def _masked_mean(x: Tensor, valid: Tensor) -> Tensor:
    return (x * valid).sum() / valid.sum().clamp(min=1)


def _sql_terms(
    q: Tensor,
    q_target: Tensor,
    actions: Tensor,
    reward: Tensor,
    *,
    variant: str,
    entropy: str,
    alpha: float,
    mask: Tensor | None,
) -> tuple[Tensor, Tensor, dict[str, Tensor]]:
    """Per-step squared errors [B, T] (0 at padded steps), the valid mask [B, T], and stats."""
    if variant not in SQL_VARIANTS:
        valid_names = ", ".join(repr(v) for v in SQL_VARIANTS)
        raise ValueError(f"unknown sql variant {variant!r}; valid variants: {valid_names}")
    _check_entropy(entropy)
    _check_alpha(alpha)
    if q.ndim != 3 or q_target.shape != q.shape:
        raise ValueError(
            f"q and q_target must both be [B, T, V]; got {tuple(q.shape)} and "
            f"{tuple(q_target.shape)}"
        )
    B, T, _ = q.shape
    if actions.shape != (B, T):
        raise ValueError(f"actions must be [B, T] = {(B, T)}, got {tuple(actions.shape)}")
    if reward.shape != (B,):
        raise ValueError(f"reward must be [B] = {(B,)}, got {tuple(reward.shape)}")

    steps = torch.arange(T, device=q.device)
    if mask is None:
        valid = torch.ones(B, T, dtype=torch.bool, device=q.device)
    else:
        if mask.shape != (B, T):
            raise ValueError(f"mask must be [B, T] = {(B, T)}, got {tuple(mask.shape)}")
        valid = mask.to(torch.bool)
    lengths = valid.sum(dim=1)  # [B]
    if bool((lengths == 0).any()):
        raise ValueError("mask: every sequence needs at least one valid step")
    if not torch.equal(valid, steps < lengths[:, None]):
        raise ValueError("mask: valid steps must be a prefix (True, …, True, False, …)")

    # Padded steps: neutral rows and action 0, so no inf/NaN reaches the loss or its gradient.
    q = torch.where(valid[..., None], q, torch.zeros((), dtype=q.dtype, device=q.device))
    q_target = torch.where(
        valid[..., None], q_target.detach(), torch.zeros((), dtype=q.dtype, device=q.device)
    )
    actions = torch.where(valid, actions, torch.zeros_like(actions))
    reward = reward.detach().to(q.dtype)

    is_last = steps == (lengths - 1)[:, None]  # [B, T] the step that receives r
    r = reward[:, None].expand(B, T)  # [B, T]

    q_a = q.gather(-1, actions[..., None]).squeeze(-1)  # Q_t = Q_θ(s_t, a_t)      [B, T]
    v_tgt = soft_value(q_target, alpha, entropy)  # V'_t = V_θ'(s_t)             [B, T]
    v_tgt_next = torch.cat([v_tgt[:, 1:], torch.zeros_like(v_tgt[:, :1])], dim=1)  # V'_{t+1}
    q_hat = torch.where(is_last, r, v_tgt_next)  # Q̂_t = V'_{t+1}; Q̂_{T−1} = r (γ = 1)

    stats: dict[str, Tensor] = {
        "q_action": _masked_mean(q_a, valid),
        "v_target": _masked_mean(v_tgt, valid),
        "reward": reward.mean(),
    }
    if variant in ("v2", "v3", "v2_v3"):
        v = soft_value(q, alpha, entropy)  # V_t = V_θ(s_t), online               [B, T]
        adv = torch.where(valid, q_a - v, torch.zeros_like(q_a))  # A_t = Q_t − V_t
        stats["v"] = _masked_mean(v, valid)
        stats["advantage"] = _masked_mean(adv, valid)

    def one_step_pcl() -> Tensor:
        adv_hat = q_hat - v_tgt  # Â_t = V'_{t+1} − V'_t;  Â_{T−1} = r − V'_{T−1}
        return (adv - adv_hat).square()  # (A_t − Â_t)²

    def multi_step_pcl() -> Tensor:
        adv_to_go = adv.flip(1).cumsum(1).flip(1)  # Σ_{k≥t} A_k (padded A_k are 0)
        return (adv_to_go - (r - v_tgt)).square()  # (Σ_{k≥t} A_k − (r − V'_t))²

    if variant == "v1":
        per_step = (q_a - q_hat).square()  # (Q_t − Q̂_t)²
        stats["target"] = _masked_mean(q_hat, valid)
    elif variant == "mc_return":
        per_step = (q_a - r).square()  # (Q_t − G_t)², G_t = r for a terminal reward and γ = 1
        stats["target"] = reward.mean()
    elif variant == "v2":
        per_step = one_step_pcl()
    elif variant == "v3":
        per_step = multi_step_pcl()
    else:  # "v2_v3"
        loss_v2, loss_v3 = one_step_pcl(), multi_step_pcl()
        stats["loss_v2"] = (loss_v2 * valid).sum(1).mean().detach()
        stats["loss_v3"] = (loss_v3 * valid).sum(1).mean().detach()
        per_step = (loss_v2 + loss_v3) / 2  # ½ (v2 + v3)

    if entropy == "tsallis":
        support = (soft_policy(q.detach(), alpha, entropy) > 0).sum(-1).to(q.dtype)  # |S_t|
        stats["policy_support"] = _masked_mean(support, valid)

    per_step = torch.where(valid, per_step, torch.zeros_like(per_step))
    stats = {k: s.detach() for k, s in stats.items()}
    return per_step, valid, stats


def sql_step_losses(
    q: Tensor,
    q_target: Tensor,
    actions: Tensor,
    reward: Tensor,
    *,
    variant: str,
    entropy: str,
    alpha: float = 1.0,
    mask: Tensor | None = None,
) -> Tensor:
    """Per-step squared errors of :func:`sql_loss`, [B, T], zero at padded steps.

    ``sql_loss(...) == sql_step_losses(...).sum(1).mean()``. Arguments as in :func:`sql_loss`.
    """
    per_step, _, _ = _sql_terms(
        q, q_target, actions, reward, variant=variant, entropy=entropy, alpha=alpha, mask=mask
    )
    return per_step


def sql_loss(
    q: Tensor,
    q_target: Tensor,
    actions: Tensor,
    reward: Tensor,
    *,
    variant: str,
    entropy: str,
    alpha: float = 1.0,
    mask: Tensor | None = None,
) -> Tensor:
    """Soft Q-learning loss for token sequences with one terminal reward (γ = 1).

    Summed over steps, averaged over the batch (as RLPrompt and PIN reduce it). Notation: Q_t =
    Q_θ(s_t, a_t) from ``q``; V_t = V(q[:, t]) from the online ``q``; V'_t = V(q_target[:, t])
    from the target network; V is the soft value of :func:`soft_value` for ``entropy`` and
    ``alpha``; A_t = Q_t − V_t; r the reward.

    Variants (see :data:`SQL_VARIANTS`):

    - ``"v1"``: Σ_t (Q_t − Q̂_t)², Q̂_t = V'_{t+1}, Q̂_{T−1} = r.
    - ``"v2"``: Σ_t (A_t − Â_t)², Â_t = V'_{t+1} − V'_t, Â_{T−1} = r − V'_{T−1}.
    - ``"v3"``: Σ_t (Σ_{k≥t} A_k − (r − V'_t))².
    - ``"v2_v3"``: (v2 + v3)/2 per step, which is what RLPrompt's default "v2_v2r_v3_v3r"
      computes as shipped.
    - ``"mc_return"``: Σ_t (Q_t − r)², regression on the Monte-Carlo return, which with γ = 1 and
      a terminal reward is r at every step. This is what PIN's released code runs as "v1"; it
      ignores the bootstrapped (spmax/logsumexp) target. Offered for reproduction; prefer a
      bootstrapped variant.

    Decisions where the papers leave it open:

    - V_t inside A_t is computed from the online ``q`` and gradients flow through it (as in
      both reference codes); everything computed from ``q_target`` and ``reward`` is detached.
    - ``q_target`` is the target network's Q at the same states s_t (not s_{t+1}); the shift to
      V'_{t+1} happens here. With ``q_target = q`` the targets are the online values (detached).
    - Temperature: V = α·logsumexp(Q/α) or α·spmax(Q/α) (Choi et al. 2024); PIN's code uses
      spmax(Q/α) without the factor α. The two agree at α = 1, the papers' setting.
    - Padding: ``mask`` must be a prefix; the last valid step of each row receives r. Padded steps
      contribute 0, and their Q rows, actions and targets are never read (they may hold ±inf).
    - Filtered actions (``-inf`` in q) are allowed anywhere except at the taken action a_t.

    Args:
        q: [B, T, V] online Q_θ(s_t, ·) (with any token filter already applied).
        q_target: [B, T, V] target-network Q_θ'(s_t, ·) at the same states (detached here).
        actions: [B, T] long, the tokens a_t taken.
        reward: [B] the final (shaped) reward r, received after the last step.
        variant: one of :data:`SQL_VARIANTS`.
        entropy: ``"shannon"`` (RLPrompt) or ``"tsallis"`` (PIN).
        alpha: temperature α > 0.
        mask: optional [B, T] bool, True for real steps, False for padding after the end.

    Returns:
        Scalar loss.
    """
    per_step, _, _ = _sql_terms(
        q, q_target, actions, reward, variant=variant, entropy=entropy, alpha=alpha, mask=mask
    )
    return per_step.sum(dim=1).mean()  # Σ_t, then mean over the batch


def sql_loss_and_stats(
    q: Tensor,
    q_target: Tensor,
    actions: Tensor,
    reward: Tensor,
    *,
    variant: str,
    entropy: str,
    alpha: float = 1.0,
    mask: Tensor | None = None,
) -> tuple[Tensor, dict[str, Tensor]]:
    """:func:`sql_loss` plus detached scalar diagnostics for logging.

    Stats (means over valid steps unless said): ``q_action`` (Q_t), ``v_target`` (V'_t),
    ``reward`` (mean r), ``target`` (Q̂_t, v1 / mc_return), ``v`` and ``advantage`` (V_t, A_t;
    v2 / v3 / v2_v3), ``loss_v2`` / ``loss_v3`` (v2_v3), ``policy_support`` (mean |S_t| of the
    sparsemax policy, Tsallis only), ``loss``.
    """
    per_step, _, stats = _sql_terms(
        q, q_target, actions, reward, variant=variant, entropy=entropy, alpha=alpha, mask=mask
    )
    loss = per_step.sum(dim=1).mean()  # Σ_t, then mean over the batch
    stats["loss"] = loss.detach()
    return loss, stats
