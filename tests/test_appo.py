"""StablePrompt's APPO: reward and PPO pieces by hand, the anchor (KL, update, rollback), the agent,
learning on a toy reward, and `hardprompts tune` end to end with resume."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest
import torch
import yaml
from peft import LoraConfig
from tiny_models import TINY_AGENT
from transformers import AutoModelForCausalLM, AutoTokenizer
from typer.testing import CliRunner

from hardprompts.agent import ANCHOR, POLICY, PromptAgent
from hardprompts.algorithms.appo import (
    Anchor,
    APPOConfig,
    anchor_decision,
    clipped_policy_loss,
    clipped_value_loss,
    gae,
    kl_penalized_rewards,
    masked_mean,
    ppo_batch,
    ppo_loss,
    ppo_update,
    stableprompt_reward,
    whiten,
)
from hardprompts.cli import app
from hardprompts.config import load_config
from hardprompts.errors import ConfigError
from hardprompts.tasks import Split, sample_demos

REPO = Path(__file__).resolve().parents[1]
# A meta-prompt short enough for the tiny GPT-2's 64 positions (the default one is tested below).
TOY = Split(
    "train", ["a great film", "a terrible film", "great fun", "so bad"], [1, 0, 1, 0], "toy"
)


# ---------------------------------------------------------------------------- pure functions


def test_reward_by_hand():
    logits = torch.tensor([[[2.0, 1.0], [0.0, 3.0]]])  # one prompt, two examples, label 0 both
    labels = torch.tensor([0, 0])
    # acc = 1/2; margins 2 - 1 = 1 and 0 - 3 = -3 -> mean -1; R = 30 * 0.5 + 0.01 * (-1)
    assert stableprompt_reward(logits, labels).tolist() == pytest.approx([14.99])
    # Margins on logits, not probabilities: shifting all logits of an example changes nothing.
    assert stableprompt_reward(logits + 5.0, labels).tolist() == pytest.approx([14.99])
    # Three classes with a tie: the label is excluded by index, so the margin is 0, not -inf/+...
    tie = torch.tensor([[[1.0, 1.0, -2.0]]])
    assert stableprompt_reward(tie, torch.tensor([1])).tolist() == pytest.approx([0.0])
    # Batched over prompts, custom weights: acc 1, margin 4 -> 2 * 1 + 0.5 * 4
    two = torch.tensor([[[5.0, 1.0]], [[1.0, 5.0]]])
    assert stableprompt_reward(two, torch.tensor([0]), 2.0, 0.5).tolist() == pytest.approx(
        [4.0, -2.0]
    )


def test_gae_by_hand():
    rewards = torch.tensor([[0.0, 0.0, 1.0], [2.0, 9.0, 9.0]])
    values = torch.tensor([[0.5, 0.2, 0.1], [1.0, 7.0, 7.0]])
    mask = torch.tensor([[1.0, 1.0, 1.0], [1.0, 0.0, 0.0]])
    adv, ret = gae(rewards, values, mask, gamma=1.0, lam=0.5)
    # row 0: δ2 = 1 - 0.1 = 0.9; δ1 = 0.1 - 0.2 = -0.1, A1 = -0.1 + 0.5 * 0.9 = 0.35;
    #        δ0 = 0.2 - 0.5 = -0.3, A0 = -0.3 + 0.5 * 0.35 = -0.125
    # row 1: one token, terminal: A0 = 2 - 1 = 1; the padded positions are 0
    torch.testing.assert_close(adv, torch.tensor([[-0.125, 0.35, 0.9], [1.0, 0.0, 0.0]]))
    torch.testing.assert_close(ret, torch.tensor([[0.375, 0.55, 1.0], [2.0, 0.0, 0.0]]))
    # γ discounts the bootstrap: γ = 0.5, λ = 1 on row 0: A2 = 0.9, A1 = 0.5*0.1 - 0.2 + 0.5*0.9
    adv, _ = gae(rewards[:1], values[:1], mask[:1], gamma=0.5, lam=1.0)
    assert adv[0, 1].item() == pytest.approx(0.05 - 0.2 + 0.45)


def test_clipped_policy_loss_by_hand():
    old = torch.zeros(1, 3)
    new = torch.log(torch.tensor([[1.5, 0.5, 1.1]]))  # ratios 1.5, 0.5, 1.1
    adv = torch.tensor([[1.0, -1.0, 2.0]])
    mask = torch.tensor([[1.0, 1.0, 0.0]])  # the third token is padding
    loss, clipfrac = clipped_policy_loss(new, old, adv, mask, clip=0.2)
    # token 0: max(-1.5, -1.2) = -1.2; token 1: max(0.5, 0.8) = 0.8 -> mean -0.2, both clipped
    assert loss.item() == pytest.approx(-0.2)
    assert clipfrac.item() == pytest.approx(1.0)
    loss, clipfrac = clipped_policy_loss(old, old, adv, torch.ones(1, 3), clip=0.2)
    assert loss.item() == pytest.approx(-(1 - 1 + 2) / 3) and clipfrac.item() == 0.0


def test_clipped_value_loss_by_hand():
    values = torch.tensor([[1.0, 0.0]])
    old = torch.tensor([[0.5, 0.5]])
    returns = torch.tensor([[2.0, 0.0]])
    # token 0: V_clip = 0.7, max((1-2)^2, (0.7-2)^2) = 1.69; token 1: V_clip = 0.3, max(0, 0.09)
    loss = clipped_value_loss(values, old, returns, torch.ones(1, 2), clip=0.2)
    assert loss.item() == pytest.approx(0.5 * (1.69 + 0.09) / 2)


def test_kl_penalized_rewards_by_hand():
    logp = torch.tensor([[-1.0, -2.0, -3.0], [-1.0, 0.0, 0.0]])
    anchor = torch.tensor([[-1.5, -2.0, -2.0], [-0.5, 0.0, 0.0]])
    mask = torch.tensor([[1.0, 1.0, 1.0], [1.0, 0.0, 0.0]])
    r = kl_penalized_rewards(torch.tensor([10.0, 20.0]), logp, anchor, mask, beta=0.1)
    # r_t = -0.1 (logp - anchor), plus the score at each row's last token
    torch.testing.assert_close(r, torch.tensor([[-0.05, 0.0, 10.1], [20.05, 0.0, 0.0]]))


def test_whiten_and_masked_mean():
    x = torch.tensor([[1.0, 3.0, 100.0]])
    mask = torch.tensor([[1.0, 1.0, 0.0]])
    assert masked_mean(x, mask).item() == 2.0
    w = whiten(x, mask)
    torch.testing.assert_close(w, torch.tensor([[-1.0, 1.0, 0.0]]), atol=1e-6, rtol=0)


@pytest.mark.parametrize(
    "policy, anchor, expected",
    [
        (0.75, 0.5, "update"),
        (0.25, 0.5, "rollback"),
        (0.5625, 0.5, "keep"),
        (0.625, 0.5, "keep"),  # exactly the threshold (binary fractions: no rounding) keeps
        (0.375, 0.5, "keep"),
    ],
)
def test_anchor_decision(policy, anchor, expected):
    assert anchor_decision(policy, anchor, 0.125) == expected


# ---------------------------------------------------------------------------- the agent


def make_agent(path, *, r: int = 4, dropout: float = 0.0, targets=None, **kwargs) -> PromptAgent:
    model = AutoModelForCausalLM.from_pretrained(path)
    model.requires_grad_(False).eval()
    lora = LoraConfig(
        r=r, lora_alpha=2 * r, lora_dropout=dropout, target_modules=targets, task_type="CAUSAL_LM"
    )
    settings = {**TINY_AGENT, **kwargs}
    settings.pop("num_demos")
    return PromptAgent(model, AutoTokenizer.from_pretrained(path), lora=lora, **settings)


@torch.no_grad()
def perturb(agent: PromptAgent, adapter: str, seed: int, scale: float = 0.3) -> None:
    g = torch.Generator().manual_seed(seed)
    for p in agent.adapter_parameters(adapter).values():
        p.add_(scale * torch.randn(p.shape, generator=g))


def same(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def rollout_of(agent: PromptAgent, seed: int = 0, n: int = 4, queries: int = 2):
    g = torch.Generator().manual_seed(seed)
    qs = [agent.query(sample_demos(TOY, [" terrible", " great"], 1, g)) for _ in range(queries)]
    return agent.sample(qs, n, g)


@pytest.fixture
def agent(tiny_gpt2):
    return make_agent(tiny_gpt2)


def test_two_adapters_start_equal_and_copy_exactly(agent):
    policy, anchor = agent.adapter_state(POLICY), agent.adapter_state(ANCHOR)
    assert policy and same(policy, anchor)
    trainable = {id(p) for p in agent.trainable_parameters()}
    assert all(id(p) not in trainable for p in agent.adapter_parameters(ANCHOR).values())
    perturb(agent, POLICY, seed=1)
    assert not same(agent.adapter_state(POLICY), agent.adapter_state(ANCHOR))
    agent.copy_adapter(POLICY, ANCHOR)
    assert same(agent.adapter_state(POLICY), agent.adapter_state(ANCHOR))
    perturb(agent, ANCHOR, seed=2)
    agent.copy_adapter(ANCHOR, POLICY)
    assert same(agent.adapter_state(POLICY), agent.adapter_state(ANCHOR))
    # Switching adapters for a forward leaves the policy active and the anchor frozen.
    with agent.using(ANCHOR):
        pass
    assert all(p.requires_grad for p in agent.adapter_parameters(POLICY).values())
    assert not any(p.requires_grad for p in agent.adapter_parameters(ANCHOR).values())


def test_adapters_of_a_bfloat16_agent_stay_float32_and_copy_exactly(tiny_gpt2):
    # peft (pinned in pyproject) keeps LoRA weights in float32 on a bf16 base model
    # (autocast_adapter_dtype); the anchor's exact copies and rollbacks rely on it.
    model = AutoModelForCausalLM.from_pretrained(tiny_gpt2, dtype=torch.bfloat16)
    model.requires_grad_(False).eval()
    lora = LoraConfig(r=4, lora_alpha=8, lora_dropout=0.0, task_type="CAUSAL_LM")
    settings = {k: v for k, v in TINY_AGENT.items() if k != "num_demos"}
    agent = PromptAgent(model, AutoTokenizer.from_pretrained(tiny_gpt2), lora=lora, **settings)
    weights = agent.adapter_parameters(POLICY)
    assert weights and all(p.dtype == torch.float32 for p in weights.values())
    perturb(agent, POLICY, seed=3, scale=1e-3)  # a change below bf16's resolution near 1
    agent.copy_adapter(POLICY, ANCHOR)
    assert same(agent.adapter_state(POLICY), agent.adapter_state(ANCHOR))


def test_sampling_is_reproducible_and_cut_at_the_stop(agent):
    a, b, c = rollout_of(agent, 0), rollout_of(agent, 0), rollout_of(agent, 1)
    assert torch.equal(a.response, b.response) and a.texts == b.texts
    assert not torch.equal(a.response, c.response)
    assert a.response.shape[0] == 8 and a.mask[:, 0].all()
    assert (a.mask.sum(1) <= 8).all()
    # A stop string cuts the text; the row ends on the token that completed it.
    tok = agent.tokenizer
    space = tok(" ", add_special_tokens=False)["input_ids"][0]
    agent.stop = [" "]
    ids = tok("ab", add_special_tokens=False)["input_ids"]
    assert agent._finished(ids) is None
    assert agent._finished([*ids, space]) == "ab"
    assert agent._finished([space, *ids]) is None  # leading whitespace is skipped first
    assert agent._finished([*ids, tok.eos_token_id]) == "ab"  # EOS ends a row too


def test_teacher_forced_logprobs_ignore_padding_and_match_sampling(agent):
    perturb(agent, POLICY, seed=3)
    ro = rollout_of(agent, seed=5)
    logp, values = agent.evaluate(ro, POLICY, values=True)
    assert logp.shape == ro.response.shape and values.shape == ro.response.shape
    assert (logp[~ro.mask] == 0).all() and (logp[ro.mask] < 0).all()
    # Each row alone, without padding, through a plain forward of the whole sequence.
    for b in range(ro.response.shape[0]):
        length = int(ro.mask[b].sum())
        q = ro.queries[b // ro.per_query]
        ids = torch.cat([q, ro.response[b, :length]])[None]
        with torch.no_grad():
            full = agent.model(input_ids=ids).logits[0, len(q) - 1 : -1].log_softmax(-1)
        ref = full.gather(-1, ro.response[b, :length, None]).squeeze(-1)
        torch.testing.assert_close(logp[b, :length].detach(), ref, atol=1e-5, rtol=1e-5)


def test_meta_prompt_holds_the_demos_and_fails_clearly_when_too_long(tiny_gpt2):
    agent = make_agent(tiny_gpt2, demo_max_tokens=3)
    text = agent.tokenizer.decode(agent.query([("a great film indeed", "great")]))
    assert text.startswith("Pairs:\nInput: a great") and text.endswith(
        "Output: great\nInstruction:"
    )
    assert "indeed" not in text  # the input was cut to demo_max_tokens
    model = AutoModelForCausalLM.from_pretrained(tiny_gpt2)
    default = PromptAgent(model, AutoTokenizer.from_pretrained(tiny_gpt2))  # default meta-prompt
    with pytest.raises(
        ConfigError, match=r"over the agent's limit of 64; lower algorithm.num_demos"
    ):
        default.query([("a great film", "great")] * 5)
    with pytest.raises(ConfigError, match="has no chat template"):
        PromptAgent(model, AutoTokenizer.from_pretrained(tiny_gpt2), chat_template="on")


# ---------------------------------------------------------------------------- KL and the anchor


def test_kl_uses_the_anchor_not_the_initial_model(agent):
    cfg = APPOConfig(kl_coef=0.5)
    perturb(agent, POLICY, seed=4)  # the policy moves away from the initial (base) model
    agent.copy_adapter(POLICY, ANCHOR)
    ro = rollout_of(agent, seed=6)
    scores = torch.arange(8, dtype=torch.float32)
    batch = ppo_batch(agent, ro, scores, cfg)
    # Equal weights: exactly zero KL, so the rewards are the scores alone ...
    assert torch.equal(batch.anchor_logprobs, batch.old_logprobs)
    assert torch.equal(batch.rewards.sum(1), scores)
    # ... although the policy is far from the initial model (which the anchor is not).
    with torch.no_grad():
        base_logp, _ = agent.evaluate(ro, None)
    assert (base_logp - batch.old_logprobs).abs().max() > 1e-2
    loss_equal, _ = ppo_loss(agent, ro, batch, cfg)
    # Moving the anchor alone changes the KL term, the rewards and the loss.
    perturb(agent, ANCHOR, seed=7)
    moved = ppo_batch(agent, ro, scores, cfg)
    assert torch.equal(moved.old_logprobs, batch.old_logprobs)
    kl = (moved.old_logprobs - moved.anchor_logprobs) * moved.mask
    assert kl.abs().sum() > 1e-2
    torch.testing.assert_close(moved.rewards.sum(1), scores - 0.5 * kl.sum(1))
    loss_moved, _ = ppo_loss(agent, ro, moved, cfg)
    assert abs(loss_moved.item() - loss_equal.item()) > 1e-4


def test_anchor_update_and_rollback_are_exact(agent):
    cfg = APPOConfig(lr=1e-2, ppo_epochs=2)
    opt = torch.optim.Adam(agent.trainable_parameters(), lr=cfg.lr)
    anchor = Anchor(agent, opt)
    scores = torch.tensor([1.0, 0.0, 2.0, 0.0, 1.0, 3.0, 0.0, 1.0])
    ppo_update(agent, opt, rollout_of(agent, 0), scores, cfg)
    # update: the anchor becomes an exact copy of the policy; a snapshot of value head and Adam
    anchor.update()
    assert same(agent.adapter_state(ANCHOR), agent.adapter_state(POLICY))
    taken = agent.adapter_state(POLICY)
    head = copy.deepcopy(agent.value_head.state_dict())
    adam = copy.deepcopy(opt.state_dict())
    for seed in (1, 2):
        ppo_update(agent, opt, rollout_of(agent, seed), scores, cfg)
    assert not same(agent.adapter_state(POLICY), taken)
    assert same(agent.adapter_state(ANCHOR), taken)  # training never touches the anchor
    # rollback: policy, value head and optimizer state return exactly to the anchor's
    for seed in (3, 4):  # twice: the snapshot must survive the optimizer's in-place updates
        anchor.rollback()
        assert same(agent.adapter_state(POLICY), taken)
        assert same(agent.value_head.state_dict(), head)
        state = opt.state_dict()
        assert state["param_groups"] == adam["param_groups"]
        for i, s in adam["state"].items():
            assert same(state["state"][i], s)
        ppo_update(agent, opt, rollout_of(agent, seed), scores, cfg)


def test_ppo_raises_the_reward_of_a_favoured_token(tiny_gpt2):
    """Toy task: reward = share of the prompt's tokens equal to X, the initial likeliest first
    token (probability 0.5% at first). LoRA also sits on the LM head here: a random 2-layer model
    cannot move its output enough through the attention adapters alone."""
    torch.manual_seed(0)  # LoRA dropout draws from the global generator
    agent = make_agent(
        tiny_gpt2, dropout=0.05, targets=["c_attn", "lm_head"], max_prompt_tokens=3, stop=[]
    )
    cfg = APPOConfig(lr=1e-2, kl_coef=0.0)
    opt = torch.optim.Adam(agent.trainable_parameters(), lr=cfg.lr)
    g = torch.Generator().manual_seed(0)
    query = agent.query([("a great film", "great")])
    with torch.no_grad():
        favoured = int(agent.model(input_ids=query[None]).logits[0, -1].argmax())
    curve = []
    for _ in range(20):
        ro = agent.sample([query], 16, g)
        scores = ((ro.response == favoured) & ro.mask).float().sum(1) / ro.mask.sum(1)
        curve.append(scores.mean().item())
        ppo_update(agent, opt, ro, scores, cfg)
    assert sum(curve[:5]) / 5 < 0.05, curve
    assert sum(curve[-5:]) / 5 > 0.9, curve


# ---------------------------------------------------------------------------- end to end


runner = CliRunner()


def write_config(tmp_path: Path, fsc_dir, tiny_gpt2, **algorithm) -> Path:
    cfg = {
        "task": {
            "dataset": "sst-2",
            "data_dir": str(fsc_dir),
            "template": "{prompt} Input: {x} Output:",
        },
        "target": {"model": str(tiny_gpt2), "kind": "causal"},
        "policy": {"model": str(tiny_gpt2)},
        "algorithm": {"name": "appo", **TINY_AGENT, **algorithm},
        "train": {"steps": 4, "eval_every": 2, "checkpoint_every": 2, "seed": 3},
    }
    path = tmp_path / "appo.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def tune(config: Path, out: Path, *extra: str):
    res = runner.invoke(app, ["tune", "--config", str(config), "--out", str(out), *extra])
    assert res.exit_code == 0, res.output
    return json.loads((out / "result.json").read_text())


def strip_timing(result: dict) -> dict:
    return {k: v for k, v in result.items() if k not in ("wall_seconds", "config")}


@pytest.mark.slow
def test_tune_appo_end_to_end_and_resume_equals_uninterrupted(fsc_dir, tiny_gpt2, tmp_path):
    # lr high enough that the policy's greedy prompts change within 2 steps, threshold 0 and an
    # anchor check every epoch: the anchor moves or rolls back before the checkpoint at step 2.
    config = write_config(
        tmp_path, fsc_dir, tiny_gpt2, lr=3e-2, update_term=1, anchor_threshold=0.0
    )
    full = tune(config, tmp_path / "full")
    assert full["method"] == "appo" and full["steps"] == 4 and full["test_n"] == 1821
    events = full["anchor_events"]
    assert [e["step"] for e in events] == [2, 4]  # 32 train examples / 16 per step: 2 per epoch
    assert events[0]["event"] != "keep", events  # so that resume restores an anchor event
    assert full["anchor_updates"] + full["anchor_rollbacks"] == sum(
        e["event"] != "keep" for e in full["anchor_events"]
    )
    assert full["prompts_sampled"] == 16 and full["train_pairs_scored"] == 16 * 16
    assert full["prompt_perplexity"] is not None
    lines = [json.loads(x) for x in (tmp_path / "full" / "metrics.jsonl").read_text().splitlines()]
    assert [x["step"] for x in lines] == [1, 2, 3, 4]
    assert "anchor/policy_dev_accuracy" in lines[1] and "losses/policy" in lines[0]

    half = tmp_path / "half"
    tune(config, half, "--set", "train.steps=2")
    resumed = tune(config, half, "--resume")
    assert strip_timing(resumed) == strip_timing(full)
    timing = {"charts/step_seconds"}
    strip = [{k: v for k, v in x.items() if k not in timing} for x in lines]
    again = [json.loads(x) for x in (half / "metrics.jsonl").read_text().splitlines()]
    assert [{k: v for k, v in x.items() if k not in timing} for x in again] == strip


def test_anchor_refresh_updates_and_rolls_back_in_the_algorithm(fsc_dir, tiny_gpt2, tmp_path):
    from hardprompts.tasks import build_task
    from hardprompts.training import RunContext

    cfg = load_config(write_config(tmp_path, fsc_dir, tiny_gpt2, lr=1e-2))
    task = build_task(cfg)
    ctx = RunContext(cfg, task, tmp_path)
    algo = cfg.algorithm.make(ctx)
    algo.step(0)
    algo.step(1)
    agent = algo.agent
    assert not same(agent.adapter_state(POLICY), agent.adapter_state(ANCHOR))
    scores = {POLICY: 0.9, ANCHOR: 0.5}
    algo.dev_accuracy = lambda adapter: scores[adapter]
    values = algo.refresh_anchor(2)
    assert values["anchor/event"] == 1.0 and values["anchor/updates"] == 1.0
    assert same(agent.adapter_state(POLICY), agent.adapter_state(ANCHOR))
    kept = agent.adapter_state(ANCHOR)
    algo.step(2)
    scores[POLICY] = 0.2  # the anchor's cached score is now the policy's 0.9
    values = algo.refresh_anchor(3)
    assert values["anchor/event"] == -1.0 and values["anchor/anchor_dev_accuracy"] == 0.9
    assert same(agent.adapter_state(POLICY), kept)
    assert algo.result_extras()["anchor_updates"] == 1
    assert algo.result_extras()["anchor_rollbacks"] == 1


@pytest.mark.parametrize("name", ["sst2_appo", "agnews_appo", "sst2_search"])
def test_shipped_configs_load(name):
    cfg = load_config(REPO / "configs" / f"{name}.yaml")
    assert cfg.algorithm.name == name.split("_")[1]
    assert cfg.task.template == "{prompt} Input: {x} Output:"
    assert cfg.target.kind == "causal"


def test_bad_algorithm_fields_name_the_field():
    with pytest.raises(ConfigError, match=r"algorithm.meta_prompt: the meta-prompt must contain"):
        load_config(None, ["algorithm.name=appo", "algorithm.meta_prompt=no slot"])
    with pytest.raises(ConfigError, match=r"algorithm.clip_range"):
        load_config(None, ["algorithm.name=appo", "algorithm.clip_range=0"])
