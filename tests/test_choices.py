"""Continuation log-likelihoods (multiple choice): the shared-prefix path equals one full forward
per (text, choice), whatever the batching; the tokenisation rule at the text/choice boundary."""

from __future__ import annotations

import pytest
import torch
from tiny_models import make_tiny_gpt2
from transformers import AutoModelForCausalLM, AutoTokenizer

from hardprompts.errors import TargetError
from hardprompts.targets.choices import ChoiceScorer, naive_continuation_logprobs, split_boundary

TEXTS = [
    "This movie was",
    "A terrible film, it was bad and boring. Answer: ",
    "",
    "The review says the food was great but the service",
    "World news",
]
CHOICES = [
    [" great", " terrible and bad", ""],
    ["yes", "no", "not sure at all, it was okay"],
    ["hello"],
    [" was great", " good", " was terrible.", " bad"],
    [" sports", " business news and tech news"],
]


@pytest.fixture(scope="module")
def lm(tmp_path_factory):
    path = make_tiny_gpt2(tmp_path_factory.mktemp("choices"), init_std=0.2)
    return AutoModelForCausalLM.from_pretrained(path).eval(), AutoTokenizer.from_pretrained(path)


@pytest.mark.parametrize("tokens_per_batch,budget_mb", [(None, 512), (24, 512), (8, 1)])
def test_equals_one_full_forward_per_choice(lm, tokens_per_batch, budget_mb):
    model, tok = lm
    scorer = ChoiceScorer(
        model, tok, max_length=64, tokens_per_batch=tokens_per_batch, memory_budget_mb=budget_mb
    )
    fast = scorer.logprobs(TEXTS, CHOICES)
    slow = naive_continuation_logprobs(model, scorer, TEXTS, CHOICES)
    assert [len(r) for r in fast] == [len(c) for c in CHOICES]
    torch.testing.assert_close(
        torch.tensor([v for r in fast for v in r]),
        torch.tensor([v for r in slow for v in r]),
        atol=1e-5,
        rtol=0,
    )
    assert fast[0][2] == 0.0  # the empty continuation has probability 1


def test_first_token_is_read_from_the_prefix(lm):
    model, tok = lm
    scorer = ChoiceScorer(model, tok, max_length=64)
    (text_ids,), ((great,),) = scorer.encode(["This movie was"], [[" great"]])
    assert len(great) == 1
    with torch.no_grad():
        logits = model(input_ids=torch.tensor([text_ids])).logits[0, -1].log_softmax(-1)
    assert scorer.logprobs(["This movie was"], [[" great"]])[0][0] == pytest.approx(
        float(logits[great[0]]), abs=1e-5
    )


def test_trailing_whitespace_moves_to_the_choice(lm):
    model, tok = lm
    assert split_boundary("Answer: ", "yes") == ("Answer:", " yes")
    assert split_boundary("Answer:\n", " yes") == ("Answer:", "\n yes")
    scorer = ChoiceScorer(model, tok, max_length=64)
    spaced = scorer.logprobs(["It was "], [["great"]])
    plain = scorer.logprobs(["It was"], [[" great"]])
    assert spaced == plain
    prefixes, conts = scorer.encode(["It was "], [["great"]])
    assert conts[0][0] == tok(" great", add_special_tokens=False)["input_ids"]


def test_too_long_is_a_clear_error(lm):
    model, tok = lm
    scorer = ChoiceScorer(model, tok, max_length=10)
    with pytest.raises(TargetError, match="over the target's limit of 10 tokens"):
        scorer.logprobs(["This movie was great and the acting was great."], [[" great", " bad"]])
