"""Maths of hardprompts.functional against hand-worked values (METHODS.md §3–4)."""

from __future__ import annotations

import math

import pytest
import torch

from hardprompts.functional import (
    ENTROPIES,
    SQL_VARIANTS,
    log_policy,
    soft_advantage,
    soft_policy,
    soft_value,
    sparsemax,
    spmax,
    sql_loss,
    sql_loss_and_stats,
    sql_step_losses,
    tsallis_entropy,
)

INF = float("inf")

# METHODS.md §4 reference table: z, sparsemax(z), τ, spmax(z).
REFERENCE = [
    ((0.0, 0.0), (0.5, 0.5), -0.5, 0.25),
    ((2.0, 0.0), (1.0, 0.0), 1.0, 2.0),
    ((0.5, 0.0), (0.75, 0.25), -0.25, 0.5625),
    ((0.0, 0.0, 0.0, 0.0), (0.25, 0.25, 0.25, 0.25), -0.25, 0.375),
    ((1.0, 0.8, 0.1, -1.0), (0.6, 0.4, 0.0, 0.0), 0.4, 1.16),
    ((3.0, 1.0, 2.9), (0.55, 0.0, 0.45), 2.45, 3.2025),
]


# ---------------------------------------------------------------------------------------------
# sparsemax / spmax / Tsallis entropy
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize(("z", "p", "tau", "value"), REFERENCE)
def test_reference_table(z, p, tau, value, dtype):
    z = torch.tensor(z, dtype=dtype)
    p_out = sparsemax(z)
    torch.testing.assert_close(p_out, torch.tensor(p, dtype=dtype), atol=1e-6, rtol=0)
    assert spmax(z).item() == pytest.approx(value, abs=1e-6)
    # τ: every support entry satisfies p_i = z_i − τ.
    support = p_out > 0
    torch.testing.assert_close(z[support] - p_out[support], torch.full_like(z[support], tau))
    # spmax(z) = p·z + W(p) at p = sparsemax(z) (the maximiser).
    assert (p_out @ z + tsallis_entropy(p_out)).item() == pytest.approx(value, abs=1e-6)


def test_alpha_half_line():
    # METHODS.md: α = 0.5, Q = (1, 0.8, 0.1, −1) → V = 1.045, π = (.7, .3, 0, 0).
    q = torch.tensor([1.0, 0.8, 0.1, -1.0])
    assert soft_value(q, 0.5, "tsallis").item() == pytest.approx(1.045, abs=1e-6)
    torch.testing.assert_close(
        soft_policy(q, 0.5, "tsallis"), torch.tensor([0.7, 0.3, 0.0, 0.0]), atol=1e-6, rtol=0
    )


def test_spmax_gradient_is_sparsemax():
    g = torch.Generator().manual_seed(0)
    z = (torch.randn(5, 7, 40, generator=g, dtype=torch.float64) * 2).requires_grad_(True)
    (grad,) = torch.autograd.grad(spmax(z).sum(), z)
    torch.testing.assert_close(grad, sparsemax(z.detach()), atol=1e-12, rtol=0)


def test_sparsemax_gradcheck():
    g = torch.Generator().manual_seed(1)
    z = torch.randn(3, 6, generator=g, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(sparsemax, (z,))
    assert torch.autograd.gradcheck(spmax, (z,))


@pytest.mark.parametrize("d", [1, 2, 3, 10, 100, 1000])
def test_spmax_bounds(d):
    g = torch.Generator().manual_seed(d)
    z = torch.randn(64, d, generator=g, dtype=torch.float64) * torch.rand(64, 1, generator=g) * 5
    v, zmax = spmax(z), z.max(dim=-1).values
    assert (zmax <= v + 1e-12).all()
    assert (v <= zmax + (d - 1) / (2 * d) + 1e-12).all()  # max(z) + (d − 1)/(2d)
    # Equality on the right for a constant row: the uniform distribution.
    assert spmax(torch.zeros(d, dtype=torch.float64)).item() == pytest.approx((d - 1) / (2 * d))


def test_neg_inf_masking():
    z = torch.tensor([1.0, -INF, 0.8, 0.1, -INF, -1.0])
    p = sparsemax(z)
    torch.testing.assert_close(p, torch.tensor([0.6, 0.0, 0.4, 0.0, 0.0, 0.0]), atol=1e-6, rtol=0)
    assert spmax(z).item() == pytest.approx(1.16, abs=1e-6)  # as without the masked entries
    # Masked entries do not move τ even when they would be in the support of the unmasked row.
    both = torch.tensor([0.0, 0.0, -INF, -INF])
    torch.testing.assert_close(sparsemax(both), torch.tensor([0.5, 0.5, 0.0, 0.0]))
    assert spmax(both).item() == pytest.approx(0.25)
    # A row with a single finite entry: all mass on it, value = that entry.
    one = torch.full((7,), -INF)
    one[3] = -2.5
    torch.testing.assert_close(
        sparsemax(one), torch.nn.functional.one_hot(torch.tensor(3), 7).float()
    )
    assert spmax(one).item() == pytest.approx(-2.5)
    for entropy in ENTROPIES:
        torch.testing.assert_close(soft_policy(one, 0.7, entropy).sum(), torch.tensor(1.0))
        assert soft_value(one, 0.7, entropy).item() == pytest.approx(-2.5, abs=1e-6)


def test_neg_inf_gradients_are_finite():
    z = torch.tensor([[1.0, -INF, 0.8, 0.1], [-INF, -INF, 2.0, -INF]], requires_grad=True)
    for entropy in ENTROPIES:
        (grad,) = torch.autograd.grad(soft_value(z, 0.5, entropy).sum(), z)
        assert torch.isfinite(grad).all()
        assert grad[0, 1] == 0 and grad[1, 0] == 0
        torch.testing.assert_close(grad, soft_policy(z.detach(), 0.5, entropy))


def test_wide_vocabulary_float32():
    g = torch.Generator().manual_seed(0)
    z = torch.randn(3, 50_257, generator=g) * 10 + 1e4  # large offset: needs the max shift
    z[1, 10:] = -INF
    z = z.requires_grad_(True)
    p = sparsemax(z)
    assert torch.isfinite(p).all()
    torch.testing.assert_close(p.sum(-1), torch.ones(3), atol=1e-5, rtol=0)
    v = spmax(z)
    assert torch.isfinite(v).all()
    zmax = z.max(-1).values
    assert ((v >= zmax - 1e-2) & (v <= zmax + 0.5 + 1e-2)).all()
    (grad,) = torch.autograd.grad(v.sum(), z)
    torch.testing.assert_close(grad, p.detach(), atol=1e-5, rtol=0)


def test_support_wider_than_first_topk():
    # Almost-constant rows have a support of hundreds of entries: the top-k search must widen.
    g = torch.Generator().manual_seed(3)
    z = torch.rand(2, 3000, generator=g, dtype=torch.float64) * 1e-3
    p = sparsemax(z)
    assert (p > 0).sum() > 2 * 64
    # Against the closed form with a full sort.
    zs = z.sort(dim=-1, descending=True).values
    k = torch.arange(1, 3001, dtype=torch.float64)
    support = (1 + k * zs > zs.cumsum(-1)).sum(-1, keepdim=True)
    tau = (zs.cumsum(-1).gather(-1, support - 1) - 1) / support
    torch.testing.assert_close(p, (z - tau).clamp(min=0))


def test_batched_and_dim():
    g = torch.Generator().manual_seed(0)
    z = torch.randn(2, 3, 5, 4, generator=g, dtype=torch.float64)
    rows = z.movedim(2, -1).reshape(-1, 5)
    expected_p = torch.stack([sparsemax(r) for r in rows]).reshape(2, 3, 4, 5).movedim(-1, 2)
    torch.testing.assert_close(sparsemax(z, dim=2), expected_p)
    expected_v = torch.stack([spmax(r) for r in rows]).reshape(2, 3, 4)
    torch.testing.assert_close(spmax(z, dim=2), expected_v)
    torch.testing.assert_close(sparsemax(z, dim=-1).sum(-1), torch.ones(2, 3, 5, dtype=z.dtype))
    torch.testing.assert_close(soft_value(z, 0.3, "tsallis", dim=1), 0.3 * spmax(z / 0.3, dim=1))


def test_tsallis_entropy():
    p = torch.tensor([[0.6, 0.4, 0.0], [1 / 3, 1 / 3, 1 / 3]])
    torch.testing.assert_close(tsallis_entropy(p), torch.tensor([0.5 * (1 - 0.52), 1 / 3]))


# ---------------------------------------------------------------------------------------------
# Shannon value and policy
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("alpha", [1.0, 0.25, 3.0])
def test_shannon_matches_torch(alpha):
    g = torch.Generator().manual_seed(0)
    q = torch.randn(4, 3, 11, generator=g, dtype=torch.float64)
    torch.testing.assert_close(
        soft_value(q, alpha, "shannon"), alpha * torch.logsumexp(q / alpha, dim=-1)
    )
    torch.testing.assert_close(soft_policy(q, alpha, "shannon"), torch.softmax(q / alpha, -1))
    torch.testing.assert_close(
        soft_value(q, alpha, "shannon", dim=0), alpha * torch.logsumexp(q / alpha, dim=0)
    )
    # A = Q − V = α log π for Shannon.
    torch.testing.assert_close(
        soft_advantage(q, alpha, "shannon"), alpha * log_policy(q, alpha, "shannon")
    )


def test_log_policy_tsallis():
    lp = log_policy(torch.tensor([1.0, 0.8, 0.1, -1.0]), 1.0, "tsallis")
    torch.testing.assert_close(lp[:2], torch.tensor([math.log(0.6), math.log(0.4)]))
    assert lp[2] == -INF and lp[3] == -INF


def test_unknown_entropy_and_bad_alpha():
    q = torch.zeros(3)
    with pytest.raises(ValueError, match="'shannon', 'tsallis'"):
        soft_value(q, 1.0, "renyi")
    with pytest.raises(ValueError, match="'shannon', 'tsallis'"):
        soft_policy(q, 1.0, "Shannon")
    with pytest.raises(ValueError, match="alpha"):
        soft_value(q, 0.0, "shannon")


# ---------------------------------------------------------------------------------------------
# sql_loss against hand-worked numbers (B = 1, T = 2, V = 3)
# ---------------------------------------------------------------------------------------------

# Online Q at s_0, s_1 and target Q′ at s_0, s_1; actions a_0 = 0, a_1 = 2; reward r = 1.5.
Q = [[0.5, 0.0, -3.0], [1.0, 2.0, 0.0]]
QT = [[2.0, 0.0, -1.0], [0.0, 0.0, 0.0]]
ACTIONS = [0, 2]
R = 1.5


def lse(xs):
    return math.log(sum(math.exp(x) for x in xs))


def hand_values(entropy):
    """(Q_0, Q_1, V_0, V_1, V′_0, V′_1) worked out by hand for α = 1."""
    q0, q1 = Q[0][ACTIONS[0]], Q[1][ACTIONS[1]]  # 0.5, 0.0
    if entropy == "shannon":
        v0, v1 = lse(Q[0]), lse(Q[1])
        vt0, vt1 = lse(QT[0]), lse(QT[1])
    else:
        # (0.5, 0, −3): S = {0.5, 0}, τ = (0.5 − 1)/2 = −0.25, spmax = ½(0.25 − 0.0625 + 0 −
        # 0.0625) + ½ = 0.5625.
        v0 = 0.5 * ((0.5**2 - 0.25**2) + (0.0 - 0.25**2)) + 0.5
        # (1, 2, 0): S = {2} (1 + 2·1 = 3 > 3 fails), τ = 1, spmax = ½(4 − 1) + ½ = 2.
        v1 = 0.5 * (2.0**2 - 1.0**2) + 0.5
        # (2, 0, −1): S = {2}, τ = 1, spmax = 2.
        vt0 = 0.5 * (2.0**2 - 1.0**2) + 0.5
        # (0, 0, 0): uniform, τ = −1/3, spmax = ½·3·(0 − 1/9) + ½ = 1/3.
        vt1 = 0.5 * 3 * (0.0 - (1 / 3) ** 2) + 0.5
    return q0, q1, v0, v1, vt0, vt1


def hand_loss(variant, entropy):
    q0, q1, v0, v1, vt0, vt1 = hand_values(entropy)
    a0, a1 = q0 - v0, q1 - v1  # A_t = Q_t − V_t
    v1_loss = (q0 - vt1) ** 2 + (q1 - R) ** 2  # Q̂_0 = V′_1, Q̂_1 = r
    v2_loss = (a0 - (vt1 - vt0)) ** 2 + (a1 - (R - vt1)) ** 2  # Â_0 = V′_1 − V′_0, Â_1 = r − V′_1
    v3_loss = (a0 + a1 - (R - vt0)) ** 2 + (a1 - (R - vt1)) ** 2  # Σ_{k≥t} A_k vs r − V′_t
    mc_loss = (q0 - R) ** 2 + (q1 - R) ** 2  # Q_t vs the return r
    return {
        "v1": v1_loss,
        "v2": v2_loss,
        "v3": v3_loss,
        "v2_v3": (v2_loss + v3_loss) / 2,
        "mc_return": mc_loss,
    }[variant]


def sql_inputs(dtype=torch.float64):
    q = torch.tensor([Q], dtype=dtype, requires_grad=True)
    qt = torch.tensor([QT], dtype=dtype, requires_grad=True)
    return q, qt, torch.tensor([ACTIONS]), torch.tensor([R], dtype=dtype)


def test_hand_values_match_reference_functions():
    # The hand-worked spmax values above, cross-checked once against the implementation.
    q0, q1, v0, v1, vt0, vt1 = hand_values("tsallis")
    got = spmax(torch.tensor(Q + QT, dtype=torch.float64)).tolist()
    assert got == pytest.approx([v0, v1, vt0, vt1])


@pytest.mark.parametrize("entropy", ENTROPIES)
@pytest.mark.parametrize("variant", list(SQL_VARIANTS))
def test_sql_loss_by_hand(variant, entropy):
    q, qt, actions, reward = sql_inputs()
    loss = sql_loss(q, qt, actions, reward, variant=variant, entropy=entropy)
    assert loss.item() == pytest.approx(hand_loss(variant, entropy), abs=1e-10)


@pytest.mark.parametrize("entropy", ENTROPIES)
@pytest.mark.parametrize("variant", list(SQL_VARIANTS))
def test_sql_loss_batch_mean_and_alpha(variant, entropy):
    # Two copies of the example with rewards r and 2r: the loss is the mean of the two.
    q, qt, actions, _ = sql_inputs()
    q2, qt2 = q.detach().expand(2, -1, -1), qt.detach().expand(2, -1, -1)
    loss = sql_loss(
        q2,
        qt2,
        actions.expand(2, -1),
        torch.tensor([R, 0.0], dtype=q.dtype),
        variant=variant,
        entropy=entropy,
    )
    zero_r = sql_loss(
        q.detach(),
        qt.detach(),
        actions,
        torch.tensor([0.0], dtype=q.dtype),
        variant=variant,
        entropy=entropy,
    )
    assert loss.item() == pytest.approx((hand_loss(variant, entropy) + zero_r.item()) / 2)
    # Temperature: all values scale with α, so Q → cQ, α → cα and r → cr scales the loss by c².
    c = 2.0
    scaled = sql_loss(
        c * q.detach(),
        c * qt.detach(),
        actions,
        torch.tensor([c * R], dtype=q.dtype),
        variant=variant,
        entropy=entropy,
        alpha=c,
    )
    assert scaled.item() == pytest.approx(c**2 * hand_loss(variant, entropy))


@pytest.mark.parametrize("entropy", ENTROPIES)
@pytest.mark.parametrize("variant", list(SQL_VARIANTS))
def test_sql_gradients_only_into_q(variant, entropy):
    q, qt, actions, reward = sql_inputs()
    reward.requires_grad_(True)
    loss = sql_loss(q, qt, actions, reward, variant=variant, entropy=entropy)
    loss.backward()
    assert q.grad is not None and q.grad.abs().sum() > 0
    assert qt.grad is None
    assert reward.grad is None


def test_sql_v1_gradient_by_hand():
    # d/dQ_t (Q_t − Q̂_t)² = 2 (Q_t − Q̂_t) at the taken action only.
    q, qt, actions, reward = sql_inputs()
    sql_loss(q, qt, actions, reward, variant="v1", entropy="shannon").backward()
    expected = torch.zeros(1, 2, 3, dtype=q.dtype)
    expected[0, 0, 0] = 2 * (0.5 - lse(QT[1]))
    expected[0, 1, 2] = 2 * (0.0 - R)
    torch.testing.assert_close(q.grad, expected)


def hand_policy(entropy):
    """π(·|s_0), π(·|s_1) of the online Q by hand: the gradient of V in Q (α = 1)."""
    if entropy == "shannon":
        return [[math.exp(x - lse(row)) for x in row] for row in Q]
    # sparsemax(0.5, 0, −3) = (0.75, 0.25, 0) with τ = −0.25; sparsemax(1, 2, 0) = (0, 1, 0).
    return [[0.75, 0.25, 0.0], [0.0, 1.0, 0.0]]


@pytest.mark.parametrize("entropy", ENTROPIES)
@pytest.mark.parametrize("variant", ["v2", "v3"])
def test_sql_path_consistency_gradient_by_hand(variant, entropy):
    # ∂A_t/∂Q_t = δ_{a_t} − π_t, because the online V_t inside A_t = Q_t(a_t) − V_t is
    # differentiated (both reference codes); a detached V_t would leave only δ_{a_t}.
    q, qt, actions, reward = sql_inputs()
    sql_loss(q, qt, actions, reward, variant=variant, entropy=entropy).backward()
    q0, q1, v0, v1, vt0, vt1 = hand_values(entropy)
    a0, a1 = q0 - v0, q1 - v1
    if variant == "v2":  # L = Σ_t e_t², e_t = A_t − Â_t
        e0, e1 = a0 - (vt1 - vt0), a1 - (R - vt1)
        weight = [2 * e0, 2 * e1]  # ∂L/∂A_t
    else:  # L = Σ_t e_t², e_t = Σ_{k≥t} A_k − (r − V′_t): ∂L/∂A_k = Σ_{t≤k} 2 e_t
        e0, e1 = a0 + a1 - (R - vt0), a1 - (R - vt1)
        weight = [2 * e0, 2 * (e0 + e1)]
    pi = hand_policy(entropy)
    expected = torch.tensor(
        [[[weight[t] * (float(j == ACTIONS[t]) - pi[t][j]) for j in range(3)] for t in range(2)]],
        dtype=q.dtype,
    )
    torch.testing.assert_close(q.grad, expected)


@pytest.mark.parametrize("entropy", ENTROPIES)
@pytest.mark.parametrize("variant", list(SQL_VARIANTS))
def test_sql_mask(variant, entropy):
    # Row 0: the 2-step example. Row 1: a 1-step episode padded with garbage (inf Q, bad action).
    q, qt, actions, _ = sql_inputs()
    pad_q = torch.tensor([[Q[0], [INF, -INF, INF]]], dtype=q.dtype)
    pad_qt = torch.tensor([[QT[1], [INF, -INF, INF]]], dtype=q.dtype)
    qb = torch.cat([q.detach(), pad_q]).requires_grad_(True)
    qtb = torch.cat([qt.detach(), pad_qt])
    actions_b = torch.tensor([ACTIONS, [1, -100]])
    reward_b = torch.tensor([R, -0.5], dtype=q.dtype)
    mask = torch.tensor([[True, True], [True, False]])
    loss = sql_loss(qb, qtb, actions_b, reward_b, variant=variant, entropy=entropy, mask=mask)
    # The 1-step episode alone: Q_0 = Q[0][1] = 0, V_0 = V(Q[0]), V′_0 = V(QT[1]); every
    # variant's last-step target applies at t = 0.
    q0 = Q[0][1]
    v0 = lse(Q[0]) if entropy == "shannon" else 0.5625
    vt0 = lse(QT[1]) if entropy == "shannon" else 1 / 3
    r = -0.5
    one_step = {
        "v1": (q0 - r) ** 2,
        "mc_return": (q0 - r) ** 2,
        "v2": ((q0 - v0) - (r - vt0)) ** 2,
        "v3": ((q0 - v0) - (r - vt0)) ** 2,
        "v2_v3": ((q0 - v0) - (r - vt0)) ** 2,
    }[variant]
    assert loss.item() == pytest.approx((hand_loss(variant, entropy) + one_step) / 2)
    loss.backward()
    assert torch.isfinite(qb.grad).all()
    assert (qb.grad[1, 1] == 0).all()
    steps = sql_step_losses(
        qb, qtb, actions_b, reward_b, variant=variant, entropy=entropy, mask=mask
    )
    assert steps[1, 1] == 0
    torch.testing.assert_close(steps.sum(1).mean(), loss.detach())


def test_sql_filtered_entries():
    # −inf (filtered) entries away from the taken action leave the loss finite and as without them.
    q, qt, actions, reward = sql_inputs()
    qf = torch.tensor([[[0.5, 0.0, -INF], [-INF, 2.0, 0.0]]], dtype=q.dtype, requires_grad=True)
    for variant in SQL_VARIANTS:
        loss = sql_loss(qf, qt, actions, reward, variant=variant, entropy="tsallis")
        (grad,) = torch.autograd.grad(loss, qf)
        assert torch.isfinite(loss) and torch.isfinite(grad).all()


def test_sql_stats():
    q, qt, actions, reward = sql_inputs()
    loss, stats = sql_loss_and_stats(q, qt, actions, reward, variant="v2_v3", entropy="tsallis")
    assert stats["loss"] == loss.detach()
    assert stats["loss_v2"].item() == pytest.approx(hand_loss("v2", "tsallis"))
    assert stats["loss_v3"].item() == pytest.approx(hand_loss("v3", "tsallis"))
    q0, q1, v0, v1, vt0, vt1 = hand_values("tsallis")
    assert stats["v"].item() == pytest.approx((v0 + v1) / 2)
    assert stats["v_target"].item() == pytest.approx((vt0 + vt1) / 2)
    assert stats["policy_support"].item() == pytest.approx((2 + 1) / 2)
    assert all(not s.requires_grad for s in stats.values())


def test_sql_bad_inputs():
    q, qt, actions, reward = sql_inputs()
    with pytest.raises(ValueError, match="'v1', 'v2', 'v3', 'v2_v3', 'mc_return'"):
        sql_loss(q, qt, actions, reward, variant="v2_v2r_v3_v3r", entropy="shannon")
    with pytest.raises(ValueError, match="'shannon', 'tsallis'"):
        sql_loss(q, qt, actions, reward, variant="v1", entropy="sparse")
    with pytest.raises(ValueError, match="prefix"):
        sql_loss(
            q,
            qt,
            actions,
            reward,
            variant="v1",
            entropy="shannon",
            mask=torch.tensor([[False, True]]),
        )
    with pytest.raises(ValueError, match="reward"):
        sql_loss(q, qt, actions, reward[None], variant="v1", entropy="shannon")
