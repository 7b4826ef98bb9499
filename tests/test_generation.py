"""Batched generation: greedy equals one-at-a-time and Hugging Face's own greedy decoding; the stop
string cuts; seeded sampling repeats."""

from __future__ import annotations

import pytest
import torch
from tiny_models import make_tiny_gpt2
from transformers import AutoModelForCausalLM, AutoTokenizer

from hardprompts.errors import TargetError
from hardprompts.targets.generation import TextGenerator, choose_next

TEXTS = ["This movie was", "A terrible film, it was bad and boring. Answer:", "", "The review says"]


@pytest.fixture(scope="module")
def lm(tmp_path_factory):
    path = make_tiny_gpt2(tmp_path_factory.mktemp("gen"), init_std=0.2)
    return AutoModelForCausalLM.from_pretrained(path).eval(), AutoTokenizer.from_pretrained(path)


def test_batched_greedy_equals_single_and_hf_generate(lm):
    model, tok = lm
    gen = TextGenerator(model, tok, max_length=64, tokens_per_batch=30)
    batched = gen.generate(TEXTS, max_new_tokens=8)
    single = [gen.generate([t], max_new_tokens=8)[0] for t in TEXTS]
    assert batched == single
    for text, (out,) in zip(TEXTS, batched, strict=True):
        ids = torch.tensor([gen.encode(text)])
        ref = model.generate(
            ids, attention_mask=torch.ones_like(ids), max_new_tokens=8, do_sample=False,
            pad_token_id=tok.eos_token_id,
        )  # fmt: skip
        assert out == tok.decode(ref[0, ids.shape[1] :], skip_special_tokens=True)


def test_stop_string_cuts_before_it(lm):
    model, tok = lm
    gen = TextGenerator(model, tok, max_length=64)
    full = gen.generate(TEXTS, max_new_tokens=8)
    for text, (whole,) in zip(TEXTS, full, strict=True):
        assert len(whole) >= 5
        stop = whole[3:5]  # a piece of what greedy decoding writes
        ((cut,),) = gen.generate([text], max_new_tokens=8, stop=stop)
        assert cut == whole[: whole.index(stop)] and stop not in cut


def test_seeded_sampling_repeats_and_gives_num_samples(lm):
    model, tok = lm
    gen = TextGenerator(model, tok, max_length=64)
    kw = dict(num_samples=3, max_new_tokens=5, do_sample=True, top_k=20, seed=7)
    a, b = gen.generate(TEXTS, **kw), gen.generate(TEXTS, **kw)
    assert a == b and all(len(row) == 3 for row in a)
    assert a != gen.generate(TEXTS, **{**kw, "seed": 8})
    assert len({s for row in a for s in row}) > 4  # samples differ


def test_choose_next_top_k_and_greedy():
    logits = torch.tensor([[0.0, 5.0, 1.0, 4.0]])
    assert choose_next(logits, do_sample=False).tolist() == [1]
    g = torch.Generator().manual_seed(0)
    draws = {int(choose_next(logits, do_sample=True, top_k=2, generator=g)) for _ in range(200)}
    assert draws == {1, 3}  # only the two best tokens are ever drawn
    with pytest.raises(ValueError, match="temperature"):
        choose_next(logits, do_sample=True, temperature=0.0)
    # nucleus: probabilities .644 .237 .087 .032; top_p 0.8 keeps the first two (the second
    # crosses 0.8), top_p 0.5 only the first
    nucleus = torch.tensor([[3.0, 2.0, 1.0, 0.0]])
    for top_p, want in ((0.8, {0, 1}), (0.5, {0})):
        draws = {int(choose_next(nucleus, do_sample=True, top_p=top_p, generator=g)) for _ in range(300)}
        assert draws == want, top_p


def test_choose_next_in_place_draws_equal_the_definition():
    """The in-place masking draws what the definition draws (out-of-place: scale, keep the top-k,
    keep the nucleus, softmax, one multinomial draw with the seeded generator), and leaves the
    caller's logits as they were."""

    def reference(logits, temperature, top_k, top_p, seed):
        x = logits / temperature
        if top_k:
            x = x.masked_fill(x < x.topk(top_k, dim=-1).values[:, -1:], float("-inf"))
        if top_p < 1.0:
            s, order = x.sort(-1, descending=True)
            p = s.softmax(-1)
            x = x.scatter(-1, order, s.masked_fill(p.cumsum(-1) - p >= top_p, float("-inf")))
        g = torch.Generator().manual_seed(seed)
        return torch.multinomial(x.softmax(-1), 1, generator=g).squeeze(1)

    logits = torch.randn(64, 1000, generator=torch.Generator().manual_seed(0)) * 3
    before = logits.clone()
    for temperature, top_k, top_p in ((1.0, 10, 1.0), (0.7, None, 0.9), (1.3, 50, 0.8)):
        for seed in range(3):
            g = torch.Generator().manual_seed(seed)
            got = choose_next(
                logits, do_sample=True, temperature=temperature, top_k=top_k, top_p=top_p,
                generator=g,
            )  # fmt: skip
            assert torch.equal(got, reference(logits, temperature, top_k, top_p, seed))
    assert torch.equal(logits, before)


def test_too_long_is_a_clear_error(lm):
    model, tok = lm
    gen = TextGenerator(model, tok, max_length=12)
    with pytest.raises(TargetError, match="shorten the input or max_new_tokens"):
        gen.generate(["This movie was great and the acting"], max_new_tokens=8)


def test_hf_target_without_label_words_generates_and_scores_choices(lm, tiny_roberta):
    from hardprompts.targets.choices import ChoiceScorer
    from hardprompts.targets.hf import HFTarget

    model, tok = lm
    target = HFTarget(model, tok, "causal", "{x} {prompt}", [], max_length=64)
    assert target.head is None
    assert target.generate(TEXTS, max_new_tokens=6) == TextGenerator(
        model, tok, max_length=64
    ).generate(TEXTS, max_new_tokens=6)
    options = [[" great", " bad"]] * len(TEXTS)
    assert target.continuation_logprobs(TEXTS, options) == ChoiceScorer(
        model, tok, max_length=64
    ).logprobs(TEXTS, options)
    from transformers import AutoModelForMaskedLM

    masked = HFTarget(
        AutoModelForMaskedLM.from_pretrained(tiny_roberta).eval(),
        AutoTokenizer.from_pretrained(tiny_roberta),
        "masked",
        "{x} {prompt} {mask} .",
        [],
    )
    with pytest.raises(TargetError, match="masked-LM target cannot generate"):
        masked.generate(["a"])


def test_generation_and_choices_count_their_pairs(lm):
    """Every target call is target work (issue 25: style runs reported pairs: 0)."""
    from hardprompts.targets.hf import HFTarget

    model, tok = lm
    target = HFTarget(model, tok, "causal", "{x} {prompt}", [], max_length=64)
    outs = target.generate(TEXTS, num_samples=3, max_new_tokens=4, do_sample=True, seed=0)
    usage = target.usage
    assert usage.pairs == len(TEXTS)  # one (prompt, input) pair per text, whatever the samples
    assert usage.requests > 0 and usage.prompt_tokens > 0
    # every generated token counts: at most 4 for each of the 3 samples of each text
    assert all(len(s) == 3 for s in outs)
    assert 0 < usage.completion_tokens <= 3 * len(TEXTS) * 4
    target.continuation_logprobs(TEXTS[:2], [[" great", " bad"]] * 2)
    assert usage.pairs == len(TEXTS) + 2
