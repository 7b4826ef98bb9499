"""RLPrompt's training reward (hardprompts.rewards) against hand-worked numbers."""

from __future__ import annotations

import copy
import math

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from hardprompts.checkpoint import load_checkpoint, save_checkpoint
from hardprompts.metrics import document_start_id, prompt_perplexity
from hardprompts.rewards import (
    TrainingReward,
    perplexity_regularised,
    prompt_log_perplexity,
    shaped_reward,
    task_reward,
    zscore,
)
from hardprompts.tasks import ClassificationTask, Split

LOG3 = math.log(3.0)

# Two prompts on two examples (labels 0 and 1), logits chosen so that the class probabilities are
# 3:1 or 1:1.
#   prompt 0: example 0 p = (.75, .25), label 0: gap +.5 → r = 200 · .5 = 100
#             example 1 p = (.5, .5),   label 1: gap 0 (a tie, not "the max of the others is −1")
#                                                → r = 180 · 0 = 0;            R = 50
#   prompt 1: example 0 p = (.25, .75), label 0: gap −.5 → r = 180 · −.5 = −90
#             example 1 p = (.25, .75), label 1: gap +.5 → r = 100;            R = 5
LOGITS = torch.tensor([[[LOG3, 0.0], [0.0, 0.0]], [[0.0, LOG3], [0.0, LOG3]]])
LABELS = torch.tensor([0, 1])


def test_task_reward_hand_worked():
    torch.testing.assert_close(task_reward(LOGITS, LABELS), torch.tensor([50.0, 5.0]))
    # λ₂ and λ₁ are the knobs: λ₂ = 1, λ₁ = 10 → prompt 1 = (−5 + .5) / 2.
    torch.testing.assert_close(
        task_reward(LOGITS, LABELS, correct_coef=1.0, incorrect_coef=10.0),
        torch.tensor([0.25, -2.25]),
    )


def test_ties_are_excluded_by_index_not_value():
    # Three classes, label 2, p = (.4, .4, .2): the best other class is .4 (either index).
    logits = torch.log(torch.tensor([[[0.4, 0.4, 0.2]]]))
    torch.testing.assert_close(task_reward(logits, torch.tensor([2])), torch.tensor([-36.0]))
    # Label 0 tied with class 1 at the top: gap 0, not +.2 (value-based exclusion drops both).
    torch.testing.assert_close(task_reward(logits, torch.tensor([0])), torch.tensor([0.0]))


def test_zscore_and_shaping_hand_worked():
    r = torch.tensor([50.0, 5.0])  # mean 27.5, population std 22.5
    z = 22.5 / (22.5 + 1e-4)
    torch.testing.assert_close(zscore(r), torch.tensor([z, -z]))
    torch.testing.assert_close(shaped_reward(r), torch.tensor([5 * z, -5 * z]))
    torch.testing.assert_close(shaped_reward(r, scale=2.0), torch.tensor([2 * z, -2 * z]))
    torch.testing.assert_close(shaped_reward(r, normalise=False, scale=2.0), 2 * r)
    # Four values: mean 2.5, population std √1.25 (np.std), not the sample std √(5/3).
    r4 = torch.tensor([1.0, 2.0, 3.0, 4.0])
    torch.testing.assert_close(zscore(r4), (r4 - 2.5) / (math.sqrt(1.25) + 1e-4))
    # Equal rewards carry no preference: all zero, no NaN.
    assert torch.equal(zscore(torch.full((16,), 7.0)), torch.zeros(16))


def test_perplexity_term_applies_before_the_zscore():
    task = torch.tensor([50.0, 5.0])
    log_ppl = torch.tensor([10.0, 1.0])
    total = perplexity_regularised(task, log_ppl, 5.0)  # 50 − 5·10 = 0, 5 − 5·1 = 0
    torch.testing.assert_close(total, torch.tensor([0.0, 0.0]))
    # Before the z-score the two prompts become equal, so neither is preferred; subtracting after
    # the z-score would have kept prompt 0 ahead (5z − 50 vs −5z − 5).
    torch.testing.assert_close(shaped_reward(total), torch.tensor([0.0, 0.0]))
    assert perplexity_regularised(task, None, 0.0) is task  # weight 0: off
    with pytest.raises(ValueError, match="log_perplexity"):
        perplexity_regularised(task, None, 1.0)


@pytest.fixture(scope="module")
def gpt2(tiny_gpt2):
    return AutoModelForCausalLM.from_pretrained(tiny_gpt2), AutoTokenizer.from_pretrained(tiny_gpt2)


def test_log_perplexity_matches_reported_perplexity(gpt2):
    model, tok = gpt2
    prompts = [" great movie", "the plot was terrible", " good", "great great great great"]
    ours = prompt_log_perplexity(prompts, model, tok)
    reported = torch.tensor(prompt_perplexity(prompts, model, tok)).log()
    torch.testing.assert_close(ours, reported, atol=1e-5, rtol=1e-5)
    # Whitespace only: no tokens to read, the log-perplexity of uniform noise.
    empty = prompt_log_perplexity(["   "], model, tok)
    assert empty.item() == pytest.approx(math.log(model.config.vocab_size))


class CountingTarget:
    """Class logits from a table per prompt string; records every call."""

    verbalizers = [" no", " yes"]

    def __init__(self, table: dict[str, torch.Tensor]) -> None:
        self.table = table
        self.calls: list[list[str]] = []

    @property
    def num_classes(self) -> int:
        return 2

    def score(self, prompts, texts, progress=None):
        self.calls.append(list(prompts))
        return torch.stack([self.table[p] for p in prompts])  # [P, N, C]


def test_training_reward_caches_by_prompt(tmp_path):
    target = CountingTarget({"a": LOGITS[0], "b": LOGITS[1], "c": LOGITS[0] * 0})
    train = Split("train", ["x0", "x1"], [0, 1], "memory")
    reward = TrainingReward(ClassificationTask(target, splits={"train": train}))
    out = reward(["a", "b", "a", "b"])
    assert target.calls == [["a", "b"]]  # distinct prompts, scored once
    assert out.scored == 2 and out.log_perplexity is None
    torch.testing.assert_close(out.task, torch.tensor([50.0, 5.0, 50.0, 5.0]))
    torch.testing.assert_close(out.total, out.task)
    z = 22.5 / (22.5 + 1e-4)
    torch.testing.assert_close(out.shaped, torch.tensor([5 * z, -5 * z, 5 * z, -5 * z]))

    out = reward(["b", "c"])
    assert target.calls[-1] == ["c"] and out.scored == 1  # "b" came from the cache
    torch.testing.assert_close(out.task, torch.tensor([5.0, 0.0]))

    # The cache survives a checkpoint round trip exactly, and then nothing is scored again.
    save_checkpoint(tmp_path / "ckpt", {"cache": reward.state_dict()})
    restored = TrainingReward(ClassificationTask(target, splits={"train": train}))
    restored.load_state_dict(load_checkpoint(tmp_path / "ckpt")["cache"])
    assert list(restored.cache) == list(reward.cache)
    a, b = restored.state_dict(), reward.state_dict()
    assert torch.equal(a["task"], b["task"])  # bit-identical rewards
    assert torch.isnan(a["log_perplexity"]).all()  # no perplexity term in this run
    n_calls = len(target.calls)
    again = restored(["c", "a", "b"])
    assert len(target.calls) == n_calls and again.scored == 0

    # Without the cache every step asks the target.
    uncached = TrainingReward(ClassificationTask(target, splits={"train": train}), cache=False)
    uncached(["a"])
    uncached(["a"])
    assert target.calls[-2:] == [["a"], ["a"]]


def test_training_reward_with_perplexity(gpt2):
    model, tok = gpt2
    prompts = [" great", " great great great"]
    target = CountingTarget({p: LOGITS[0] for p in prompts})  # equal task rewards
    train = Split("train", ["x0", "x1"], [0, 1], "memory")
    reward = TrainingReward(
        ClassificationTask(target, splits={"train": train}),
        perplexity_weight=2.0,
        reference=(model, tok),
    )
    out = reward(prompts)
    log_ppl = prompt_log_perplexity(prompts, model, tok)
    torch.testing.assert_close(out.log_perplexity, log_ppl)
    torch.testing.assert_close(out.total, out.task - 2.0 * log_ppl)
    # Equal task rewards: the shaped reward prefers the prompt with the lower perplexity.
    better = int(log_ppl.argmin())
    assert out.shaped[better] > 0 > out.shaped[1 - better]
    with pytest.raises(ValueError, match="reference"):
        TrainingReward(ClassificationTask(target, splits={"train": train}), perplexity_weight=1.0)


def test_perplexity_starts_at_the_models_document_token_when_the_tokenizer_has_no_bos(gpt2):
    # A chat-style tokenizer (as Qwen2.5-Instruct): no BOS, EOS = the end of a chat turn, and the
    # model configured with the document separator as its BOS.
    model, tok = gpt2
    chat = copy.deepcopy(tok)
    chat.bos_token, chat.eos_token = None, "</s>"  # "</s>" stands for <|im_end|>
    doc = tok.convert_tokens_to_ids("<|endoftext|>")
    model.config.bos_token_id = doc
    assert document_start_id(chat, model) == doc != chat.eos_token_id
    prompts = [" great movie", "the plot was terrible"]

    def ppl_after(start: int) -> list[float]:
        out = []
        for p in prompts:
            seq = torch.tensor([[start, *tok(p.strip(), add_special_tokens=False)["input_ids"]]])
            logp = model(input_ids=seq).logits[0, :-1].log_softmax(-1)
            out.append(float((-logp.gather(-1, seq[0, 1:, None]).mean()).exp()))
        return out

    with torch.no_grad():
        want, wrong = ppl_after(doc), ppl_after(chat.eos_token_id)
    assert prompt_perplexity(prompts, model, chat) == pytest.approx(want, rel=1e-5)
    assert prompt_perplexity(prompts, model, chat) != pytest.approx(wrong, rel=1e-3)
    logp = prompt_log_perplexity(prompts, model, chat)
    torch.testing.assert_close(logp, torch.tensor(want).log(), rtol=1e-5, atol=1e-5)
    assert document_start_id(tok, model) == tok.bos_token_id  # a BOS of its own wins
