"""The batched / cached scorer must equal a plain one-pair-at-a-time forward with full logits."""

from __future__ import annotations

import warnings

import pytest
import torch
from tiny_models import make_tiny_tokenizer
from transformers import LlamaConfig, LlamaForCausalLM, MistralConfig, MistralForCausalLM

from hardprompts.errors import ConfigError, VerbalizerError
from hardprompts.modeling import load_lm, load_tokenizer
from hardprompts.targets.hf import HFTarget

VERBS = [" terrible", " great"]
TEXTS = [
    "the movie was great",
    "a terrible film , it was bad and boring",
    "ok",
    "the review says the food was great but the service was terrible " * 4,  # needs truncation
    "news about sports",
    " ",  # an empty input (the real CR data has one)
]
PROMPTS = ["the language feels", "", "the language feels", "great great", "film"]


def reference_scores(target: HFTarget, prompts, texts) -> torch.Tensor:
    """One forward per pair, full-vocabulary logits at every position, then pick the scored row."""
    out = torch.empty(len(prompts), len(texts), len(target.verbalizers))
    for p, prompt in enumerate(prompts):
        for n, text in enumerate(texts):
            enc = target.encode(text, prompt)
            logits = target.model(input_ids=torch.tensor([enc.ids])).logits[0]
            out[p, n] = logits[enc.position, target.verbalizer_ids]
    return out


def make_target(path, kind, template, **kw) -> HFTarget:
    return HFTarget(
        load_lm(str(path), kind, device="cpu"),
        load_tokenizer(str(path)),
        kind,
        template,
        VERBS,
        **kw,
    )


@pytest.mark.parametrize("batch_size", [None, 1, 3])
@pytest.mark.parametrize(
    "kind,template",
    [
        ("causal", "{x} {prompt}"),  # cached path: prompt after input
        ("causal", "{x} {prompt} It was"),  # cached path with template words after the prompt
        ("causal", "{prompt} Input: {x} Output:"),  # whole-sequence path
        ("masked", "{x} {prompt} {mask} ."),
        ("masked", "{mask} {prompt} {x}"),
    ],
)
def test_batched_scores_equal_reference(request, kind, template, batch_size):
    path = request.getfixturevalue("tiny_gpt2" if kind == "causal" else "tiny_roberta")
    target = make_target(path, kind, template, max_length=40, batch_size=batch_size)
    assert target.head is not None  # the verbalizer-row head is in use, not the full-logits path
    # the shared key/value cache path is in use where the prompt follows the input
    assert target.shares_prefix == (kind == "causal" and template.startswith("{x} {prompt}"))
    got = target.score(PROMPTS, TEXTS)
    want = reference_scores(target, PROMPTS, TEXTS)
    assert got.shape == (len(PROMPTS), len(TEXTS), 2)
    torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)


def tiny_rotary_lm(family: str):
    """A random 2-layer Llama (rotary positions, 4 query heads sharing 2 key/value heads) or
    Mistral (the same with a sliding window of 8 tokens), with weights large enough that the
    scores depend on every position."""
    tok = make_tiny_tokenizer(None, "gpt2")
    common = dict(
        vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64,
        initializer_range=0.3, bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id,
    )  # fmt: skip
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        if family == "llama":
            model = LlamaForCausalLM(LlamaConfig(**common))
        else:
            model = MistralForCausalLM(MistralConfig(sliding_window=8, **common))
    return model.eval(), tok


@pytest.mark.parametrize("batch_size", [None, 2])
@pytest.mark.parametrize("family", ["llama", "mistral"])
def test_shared_cache_with_rotary_grouped_heads_and_window(family, batch_size):
    model, tok = tiny_rotary_lm(family)
    target = HFTarget(model, tok, "causal", "{x} {prompt}", VERBS, max_length=40)
    target.batch_size = batch_size
    assert target.shares_prefix
    prompts = [*PROMPTS, "the film was great and the cast"]  # longer than Mistral's window
    got = target.score(prompts, TEXTS)
    want = reference_scores(target, prompts, TEXTS)
    assert want.std() > 0.1  # the scores differ across pairs: the comparison is not vacuous
    torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)


def test_cached_path_uses_no_deprecated_cache_argument(tiny_gpt2):
    target = make_target(tiny_gpt2, "causal", "{x} {prompt}", max_length=40)
    with warnings.catch_warnings():
        warnings.simplefilter("error", FutureWarning)
        target.score(PROMPTS, TEXTS)


def test_memory_budget_counts_the_shared_cache_once(tiny_gpt2):
    """Prompts per suffix forward: what the budget leaves beside one copy of the inputs' cache."""
    target = make_target(tiny_gpt2, "causal", "{x} {prompt}", max_length=64, tokens_per_batch=None)
    texts, prompts = ["the movie was great"] * 4, ["great", "film", "it was", "the language"]
    n = len(texts)
    lp = len(target.encoder.split_at_prompt(texts[0], None))
    ls = max(len(target.encoder.split_at_prompt(None, p)) for p in prompts)
    held = n * lp * target._cache_bytes_per_token()
    row = ls * target._bytes_per_token(lp + ls)
    target.memory_budget = held + 2 * n * row  # the cache once, and 2 prompts x 4 inputs
    seen: list[int] = []
    target.score(prompts, texts, progress=seen.append)
    assert seen == [2 * n, 2 * n]
    # Charged a copy of the cache per (prompt, input) row, the same budget held fewer prompts.
    assert target.memory_budget // ((lp + ls) * target._cache_bytes_per_token() + row) < 2 * n


def test_small_memory_budget_chunks_and_agrees(tiny_gpt2):
    target = make_target(tiny_gpt2, "causal", "{x} {prompt}", max_length=40, memory_budget_mb=16)
    target.memory_budget = 40_000  # force many tiny chunks
    torch.testing.assert_close(
        target.score(PROMPTS, TEXTS), reference_scores(target, PROMPTS, TEXTS), atol=1e-5, rtol=1e-5
    )


@pytest.mark.parametrize("kind", ["causal", "masked"])
def test_token_cap_per_forward_chunks_and_agrees(request, kind):
    path = request.getfixturevalue("tiny_gpt2" if kind == "causal" else "tiny_roberta")
    template = "{x} {prompt}" if kind == "causal" else "{x} {prompt} {mask} ."
    target = make_target(path, kind, template, max_length=40, tokens_per_batch=30)
    assert target._rows_for(15) == 2
    torch.testing.assert_close(
        target.score(PROMPTS, TEXTS), reference_scores(target, PROMPTS, TEXTS), atol=1e-5, rtol=1e-5
    )


def test_truncation_cuts_only_the_input(tiny_roberta):
    target = make_target(tiny_roberta, "masked", "{x} {prompt} {mask} .", max_length=24)
    enc = target.encode(TEXTS[3], "great great")
    tok = target.tokenizer
    assert len(enc.ids) == 24
    assert enc.ids[enc.position] == tok.mask_token_id
    tail = tok.convert_ids_to_tokens(enc.ids[enc.input_span[1] :])
    assert tok.convert_tokens_to_string(tail).replace("</s>", "").strip() == "great great<mask> ."
    assert enc.input_span[1] - enc.input_span[0] < len(
        tok(TEXTS[3], add_special_tokens=False)["input_ids"]
    )


def test_multi_token_verbalizer_is_an_error_naming_it(tiny_gpt2):
    model, tok = load_lm(str(tiny_gpt2), "causal", device="cpu"), load_tokenizer(str(tiny_gpt2))
    with pytest.raises(VerbalizerError, match="'xylophonic'.*not one"):
        HFTarget(model, tok, "causal", "{x} {prompt}", [" great", "xylophonic"])


@pytest.mark.parametrize(
    "kind,template,message",
    [
        ("masked", "{x} {prompt} .", "has no {mask}"),
        ("causal", "{x} {mask} {prompt}", "may only end the template"),
        ("causal", "{prompt} only", "must contain {x}"),
        ("causal", "{x} {x} {prompt}", "more than once"),
    ],
)
def test_bad_templates(tiny_roberta, tiny_gpt2, kind, template, message):
    path = tiny_roberta if kind == "masked" else tiny_gpt2
    with pytest.raises(ConfigError, match=message):
        make_target(path, kind, template)


def test_identical_prompts_are_scored_once(tiny_gpt2):
    target = make_target(tiny_gpt2, "causal", "{prompt} Input: {x} Output:")
    seen = []
    target.score(["a", "a", " a ", "b"], TEXTS[:2], progress=seen.append)
    assert sum(seen) == 2 * 2  # two distinct prompts x two inputs
