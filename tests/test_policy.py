"""PromptPolicy on a tiny random GPT-2 built in-process."""

from __future__ import annotations

import pytest
import torch
from tiny_models import make_tiny_gpt2
from transformers import AutoModelForCausalLM, AutoTokenizer

from hardprompts.functional import soft_value, sql_loss
from hardprompts.policy import PromptPolicy, PromptSample, polyak_update

P, T = 8, 5


@pytest.fixture(scope="module")
def gpt2_path(tmp_path_factory):
    return make_tiny_gpt2(tmp_path_factory.mktemp("models"))


@pytest.fixture
def policy(gpt2_path):
    lm = AutoModelForCausalLM.from_pretrained(gpt2_path)
    tok = AutoTokenizer.from_pretrained(gpt2_path)
    torch.manual_seed(0)
    return PromptPolicy(lm, tok, hidden_size=64)


def uncached_greedy(policy: PromptPolicy, num_prompts: int, length: int):
    """Step-by-step reference: re-run the whole prefix through the LM at every step."""
    prefix = torch.full((num_prompts, 1), policy.bos_token_id)
    qs = []
    for _ in range(length):
        h = policy.lm.base_model(input_ids=prefix, use_cache=False).last_hidden_state[:, -1]
        q = policy.q_values(h)
        qs.append(q)
        prefix = torch.cat([prefix, q.argmax(-1, keepdim=True)], dim=1)
    return prefix[:, 1:], torch.stack(qs, dim=1)


def test_sample_shapes(policy):
    s = policy.sample(P, T, generator=torch.Generator().manual_seed(0))
    assert isinstance(s, PromptSample)
    V, d = policy.vocab_size, policy.hidden_dim
    assert s.tokens.shape == (P, T) and s.tokens.dtype == torch.long
    assert s.hidden.shape == (P, T, d) and s.hidden.dtype == torch.float32
    assert s.q.shape == (P, T, V)
    assert s.filter_mask is None
    assert not s.q.requires_grad


def test_cached_greedy_equals_uncached(policy):
    # Perturb ψ so that Q is not just the LM's logits.
    with torch.no_grad():
        for p in policy.head.parameters():
            p.add_(0.3 * torch.randn_like(p))
    s = policy.sample(P, T, greedy=True)
    ref_tokens, ref_q = uncached_greedy(policy, P, T)
    assert torch.equal(s.tokens, ref_tokens)
    torch.testing.assert_close(s.q, ref_q, atol=1e-5, rtol=1e-5)
    # Stored hidden states reproduce Q without running the LM, and match the one-forward path.
    torch.testing.assert_close(policy.q_values(s.hidden), s.q, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(policy.hidden_for(s.tokens), s.hidden, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("entropy", ["shannon", "tsallis"])
def test_sampled_hidden_match_uncached(policy, entropy):
    s = policy.sample(P, T, entropy=entropy, top_k=20, generator=torch.Generator().manual_seed(1))
    torch.testing.assert_close(policy.hidden_for(s.tokens), s.hidden, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(policy.q_values(s.hidden), s.q, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("entropy", ["shannon", "tsallis"])
def test_token_filter(policy, entropy):
    k = 5
    s = policy.sample(
        64, T, entropy=entropy, alpha=0.01, token_filter_k=k,
        generator=torch.Generator().manual_seed(2),
    )  # fmt: skip
    lm_logits = policy.lm_logits(s.hidden).masked_fill(~policy.allowed_tokens, float("-inf"))
    lm_top = lm_logits.topk(k, dim=-1).indices  # [64, T, k] the LM's own top-k (special tokens out)
    assert (lm_top == s.tokens[..., None]).any(-1).all()  # every token in the LM's own top-k
    assert s.filter_mask is not None and (s.filter_mask.sum(-1) == k).all()
    assert torch.isneginf(s.q[~s.filter_mask]).all()
    assert torch.isfinite(s.q[s.filter_mask]).all()
    # The same filter is recomputed from hidden states alone, for online and target Q.
    torch.testing.assert_close(policy.q_values(s.hidden, token_filter_k=k), s.q)
    torch.testing.assert_close(policy.q_values(s.hidden, s.filter_mask), s.q)
    q_target = policy.q_values(s.hidden, token_filter_k=k, target=True)
    assert torch.equal(torch.isneginf(q_target), ~s.filter_mask)
    # … and the loss on filtered Q is finite with gradients into ψ only.
    q = policy.q_values(s.hidden, token_filter_k=k)
    loss = sql_loss(q, q_target, s.tokens, torch.randn(64), variant="v2_v3", entropy=entropy)
    loss.backward()
    assert torch.isfinite(loss)
    assert all(
        p.grad is not None and torch.isfinite(p.grad).all() for p in policy.head.parameters()
    )
    assert all(p.grad is None for p in policy.target_head.parameters())
    assert all(p.grad is None for p in policy.lm.parameters())


def test_greedy_and_top_k(policy):
    s = policy.sample(P, T, greedy=True, token_filter_k=3)
    assert torch.equal(s.tokens, s.q.argmax(-1))
    s1 = policy.sample(P, T, top_k=1, generator=torch.Generator().manual_seed(0))
    assert torch.equal(s1.tokens, s1.q.argmax(-1))  # top-1 sampling is greedy


def test_initial_q_is_lm_log_probabilities(policy, gpt2_path):
    s = policy.sample(P, T, generator=torch.Generator().manual_seed(0))
    bos = torch.full((P, 1), policy.bos_token_id)
    logits = policy.lm(input_ids=torch.cat([bos, s.tokens[:, :-1]], 1)).logits
    ok = policy.allowed_tokens  # special tokens are masked out of Q (-inf)
    log_p = logits[..., ok].log_softmax(-1)  # the LM's log-probabilities over the actions
    assert (s.q[..., ok] - log_p).abs().max() < 1e-4
    v = soft_value(s.q, 1.0, "shannon")
    assert v.abs().max() < 1e-4  # V = logsumexp(log p) = 0: the scale of a z-scored reward
    assert logits.std() > 1e-2  # the comparison is not trivially between zeros
    # RLPrompt's init (no residual): ψ ≈ 0, so Q ≈ 0 for GPT-2 (no output bias).
    lm = AutoModelForCausalLM.from_pretrained(gpt2_path)
    rl = PromptPolicy(lm, policy.tokenizer, hidden_size=64, residual=False)
    assert rl.q_values(s.hidden)[..., ok].abs().max() < 1e-4


def test_only_head_trains(policy):
    trainable = {n for n, p in policy.named_parameters() if p.requires_grad}
    assert trainable and all(n.startswith("head.") for n in trainable)
    assert {id(p) for p in policy.trainable_parameters()} == {
        id(p) for p in policy.head.parameters()
    }
    assert not any(p.requires_grad for p in policy.lm.parameters())
    assert not any(p.requires_grad for p in policy.target_head.parameters())
    policy.train()
    assert policy.head.training and not policy.lm.training
    assert policy.bos_token_id == policy.tokenizer.eos_token_id  # GPT-2: BOS = EOS


def test_polyak_update_arithmetic():
    target = [torch.tensor([1.0, 2.0]), torch.tensor([[0.0]])]
    online = [torch.tensor([3.0, -2.0]), torch.tensor([[10.0]])]
    polyak_update(target, online, tau=0.25)
    torch.testing.assert_close(target[0], torch.tensor([0.75 * 1 + 0.25 * 3, 0.75 * 2 - 0.25 * 2]))
    torch.testing.assert_close(target[1], torch.tensor([[2.5]]))
    torch.testing.assert_close(online[0], torch.tensor([3.0, -2.0]))  # online untouched
    with pytest.raises(ValueError, match="tau"):
        polyak_update(target, online, tau=1.5)


def test_update_target(policy):
    lm_before = [p.clone() for p in policy.lm.parameters()]
    old = [p.clone() for p in policy.target_head.parameters()]
    with torch.no_grad():
        for p in policy.head.parameters():
            p.add_(1.0)
    policy.update_target(tau=0.001)
    for p_old, p_t, p_o in zip(
        old, policy.target_head.parameters(), policy.head.parameters(), strict=True
    ):
        torch.testing.assert_close(p_t, 0.999 * p_old + 0.001 * p_o)
    for a, b in zip(lm_before, policy.lm.parameters(), strict=True):
        assert torch.equal(a, b)
    # Target and online heads share the LM: only ψ is duplicated.
    n_head = sum(p.numel() for p in policy.head.parameters())
    n_all = sum(p.numel() for p in policy.parameters())
    n_lm = sum(p.numel() for p in policy.lm.parameters())
    assert n_all == n_lm + 2 * n_head
    # Round trip of the trainable state.
    state = policy.head_state_dict()
    policy.load_head_state_dict(state)
    h = torch.randn(3, policy.hidden_dim)
    assert not torch.allclose(policy.q_values(h), policy.q_values(h, target=True))


def test_same_seed_same_prompts(policy):
    def draw(seed):
        return policy.sample(P, T, top_k=50, generator=torch.Generator().manual_seed(seed)).tokens

    assert torch.equal(draw(0), draw(0))
    assert not torch.equal(draw(0), draw(1))


def test_decode(policy):
    s = policy.sample(3, T, generator=torch.Generator().manual_seed(0))
    texts = policy.decode(s.tokens)
    assert texts == [policy.tokenizer.decode(row) for row in s.tokens.tolist()]
    pieces = policy.token_strings(s.tokens)
    assert len(pieces) == 3 and all(len(p) == T for p in pieces)
    # GPT-2 BPE: a word-initial token keeps its leading space ("Ġ" → " ").
    great = policy.tokenizer.convert_tokens_to_ids("Ġgreat")
    assert policy.decode([[great, great]]) == [" great great"]
    assert policy.token_strings([[great]]) == [["Ġgreat"]]


def test_bad_arguments(policy):
    h = torch.randn(2, policy.hidden_dim)
    with pytest.raises(ValueError, match="not both"):
        policy.q_values(h, torch.ones(2, policy.vocab_size, dtype=torch.bool), token_filter_k=3)
    with pytest.raises(ValueError, match="token_filter_k"):
        policy.token_filter(h, 0)
    with pytest.raises(ValueError, match="'shannon', 'tsallis'"):
        policy.sample(2, 2, entropy="renyi")


def test_special_tokens_are_never_actions(policy):
    special = policy.tokenizer.all_special_ids
    assert special and not policy.allowed_tokens[special].any()
    s = policy.sample(256, T, alpha=100.0, generator=torch.Generator().manual_seed(3))  # ~uniform π
    assert not torch.isin(s.tokens, torch.tensor(special)).any()
    assert torch.isneginf(policy.q_values(s.hidden)[..., special]).all()
