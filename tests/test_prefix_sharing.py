"""Multiple choice and sampled generation read each text's key/value cache in place: the same
numbers as plain forwards (and as the copy-per-row fallback) on tiny models of every family the
causal scorer supports; the batch planners count the cache once; a failed self-check falls back."""

from __future__ import annotations

import logging

import pytest
import torch
from tiny_models import make_tiny_causal

from hardprompts.targets import choices as choices_module
from hardprompts.targets import shared_prefix as sp
from hardprompts.targets.choices import ChoiceScorer, naive_continuation_logprobs
from hardprompts.targets.generation import TextGenerator
from hardprompts.targets.hf import HFTarget

FAMILIES = ["gpt2", "llama", "mistral"]  # learned positions; rotary + grouped-query; + window 6
TEXTS = [
    "This movie was great and the acting was",  # longer than Mistral's window of 6 tokens
    "A terrible film, it was bad. Answer: ",
    "ok",
    "",
]
CHOICES = [
    [" great", " terrible and bad", ""],
    ["yes", "no way, it was not"],
    [" sports news and business"],
    [" a b c d", " e"],
]


def flat(rows: list[list[float]]) -> torch.Tensor:
    return torch.tensor([v for r in rows for v in r])


@pytest.fixture(scope="module", params=FAMILIES)
def lm(request):
    return make_tiny_causal(request.param)


@pytest.mark.parametrize("tokens_per_batch,budget_mb", [(None, 512), (24, 512), (8, 1)])
def test_choices_read_in_place_equal_plain_forwards_and_copies(lm, tokens_per_batch, budget_mb):
    model, tok = lm
    kw = dict(max_length=64, tokens_per_batch=tokens_per_batch, memory_budget_mb=budget_mb)
    shared = ChoiceScorer(model, tok, **kw)
    assert shared.shares_prefix  # the self-check passed: the in-place path is in use
    copied = ChoiceScorer(model, tok, share_prefix=False, **kw)
    got = flat(shared.logprobs(TEXTS, CHOICES))
    want = flat(naive_continuation_logprobs(model, shared, TEXTS, CHOICES))
    assert want.std() > 1.0  # the choices' log-likelihoods differ: the comparison is not vacuous
    torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-6)
    torch.testing.assert_close(got, flat(copied.logprobs(TEXTS, CHOICES)), atol=1e-5, rtol=1e-6)


def test_greedy_generation_in_place_equals_hf_generate_and_copies(lm):
    model, tok = lm
    shared = TextGenerator(model, tok, max_length=64, tokens_per_batch=30)
    assert shared.shares_prefix
    copied = TextGenerator(model, tok, max_length=64, share_prefix=False)
    got = shared.generate(TEXTS, max_new_tokens=10, num_samples=2)
    assert got == copied.generate(TEXTS, max_new_tokens=10, num_samples=2)
    for text, outs in zip(TEXTS, got, strict=True):
        ids = torch.tensor([shared.encode(text)])
        ref = model.generate(
            ids, attention_mask=torch.ones_like(ids), max_new_tokens=10, do_sample=False,
            pad_token_id=tok.eos_token_id,
        )  # fmt: skip
        assert outs == [tok.decode(ref[0, ids.shape[1] :], skip_special_tokens=True)] * 2


def test_sampling_in_place_equals_copies_as_rows_end(lm):
    """Rows that end (the stop string) leave the batch at different steps: the remaining rows
    still read the right prefix and their own earlier tokens."""
    model, tok = lm
    shared = TextGenerator(model, tok, max_length=64)
    copied = TextGenerator(model, tok, max_length=64, share_prefix=False)
    kw = dict(num_samples=6, max_new_tokens=12, do_sample=True, top_k=30, seed=3, stop="a")
    got = shared.generate(TEXTS, **kw)
    assert got == copied.generate(TEXTS, **kw)
    lengths = {len(o) for row in got for o in row}
    assert len(lengths) > 3  # rows ended at many different steps


def test_decoding_logits_equal_whole_sequence_forwards(lm):
    """Step by step, with rows of different texts dropped in between: the logits of the in-place
    decoding state equal one plain forward over each row's whole sequence."""
    from hardprompts.targets.choices import prefill
    from hardprompts.targets.generation import _SharedCache

    model, tok = lm
    gen = TextGenerator(model, tok, max_length=64, share_prefix=False)
    prefixes = [gen.encode(t) for t in TEXTS[:3]]
    rows = torch.tensor([0, 0, 0, 1, 2, 2])
    seqs = [list(prefixes[r]) for r in rows.tolist()]
    pre = prefill(model, prefixes, gen.pad_id)
    state = _SharedCache(model, pre, rows, capacity=4)
    positions = pre.lengths[rows]
    g = torch.Generator().manual_seed(0)
    alive = list(range(len(rows)))
    for sel in (None, [0, 2, 3, 5], [1, 3], None):
        if sel is not None:
            state.keep(torch.tensor(sel))
            positions, alive = positions[sel], [alive[i] for i in sel]
        tokens = torch.randint(5, 200, (len(alive),), generator=g)
        for b, r in enumerate(alive):
            seqs[r].append(int(tokens[b]))
        got = state.forward(tokens, positions)
        positions = positions + 1
        with torch.no_grad():
            want = torch.stack(
                [model(input_ids=torch.tensor([seqs[r]])).logits[0, -1] for r in alive]
            )
        torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)


def test_hf_target_uses_the_in_place_paths(lm):
    model, tok = lm
    target = HFTarget(model, tok, "causal", "{x} {prompt}", [], max_length=64)
    got = target.continuation_logprobs(TEXTS, CHOICES)
    assert target._choice_scorer.shares_prefix
    torch.testing.assert_close(
        flat(got), flat(naive_continuation_logprobs(model, target._choice_scorer, TEXTS, CHOICES)),
        atol=1e-5, rtol=1e-6,
    )  # fmt: skip
    kw = dict(num_samples=3, max_new_tokens=6, do_sample=True, top_k=30, seed=1)
    assert target.generate(TEXTS, **kw) == TextGenerator(
        model, tok, max_length=64, share_prefix=False
    ).generate(TEXTS, **kw)
    assert target._generator.shares_prefix


def test_choice_planner_counts_the_cache_once():
    """A budget that holds the texts' cache once and every choice's logits (and the texts' prefill)
    scores all choices in one forward in place; copying the cache per choice, the same budget takes
    many forwards."""
    model, tok = make_tiny_causal("gpt2")
    texts = ["This movie was great and the acting was great, the plot was terrible and bad."] * 4
    options = [[" great.", " good,", " great great", " great."] * 3] * 4  # two tokens each
    forwards = {}
    for share in (True, False):
        scorer = ChoiceScorer(model, tok, max_length=64, tokens_per_batch=None, share_prefix=share)
        prefixes, conts = scorer.encode(texts, options)
        cache = len(texts) * len(prefixes[0]) * sp.cache_bytes_per_token(model)
        lc = max(len(c) for cs in conts for c in cs) - 1
        per_row = lc * (2 * len(tok) * 4 + 16 * 32 * 4)  # logits + log-softmax, activations
        width = len(prefixes[0])
        prefilling = cache + len(texts) * width * sp.activation_bytes_per_token(model, width)
        # the cache once and all 48 choices, and the four texts' prefill in one forward
        scorer.memory_budget = max(cache + 48 * per_row, prefilling)
        calls = []
        hook = model.register_forward_pre_hook(lambda *a, seen=calls: seen.append(1))
        scorer.logprobs(texts, options)
        hook.remove()
        forwards[share] = len(calls) - 1  # less the prefill
    assert forwards[True] == 1
    assert forwards[False] >= 3  # each row also holds a copy of its text's cache


def test_chunked_prefill_equals_one_forward_within_the_token_cap(lm):
    """A prefill over more tokens than the cap goes through in column pieces of at most the cap:
    the same last-position logits and the same cache on every real token as one forward."""
    model, tok = lm
    scorer = ChoiceScorer(model, tok, max_length=64, share_prefix=False)
    prefixes, _ = scorer.encode(TEXTS, [[] for _ in TEXTS])
    whole = choices_module.prefill(model, prefixes, scorer.pad_id)
    shapes = []
    hook = model.register_forward_pre_hook(
        lambda mod, args, kwargs: shapes.append(tuple(kwargs["input_ids"].shape)),
        with_kwargs=True,
    )
    pieces = choices_module.prefill(model, prefixes, scorer.pad_id, max_tokens=12)
    hook.remove()
    n, lp = whole.mask.shape
    assert lp > 3 and all(rows * cols <= 12 for rows, cols in shapes) and len(shapes) > 1
    assert sum(cols for _, cols in shapes) == lp
    torch.testing.assert_close(pieces.logits, whole.logits, atol=1e-5, rtol=1e-5)
    real = whole.mask.bool()  # keys of padding columns are never read
    for (k1, v1), (k2, v2) in zip(pieces.kv, whole.kv, strict=True):
        torch.testing.assert_close(
            k1.transpose(1, 2)[real], k2.transpose(1, 2)[real], atol=1e-5, rtol=1e-5
        )
        torch.testing.assert_close(
            v1.transpose(1, 2)[real], v2.transpose(1, 2)[real], atol=1e-5, rtol=1e-5
        )


@pytest.mark.parametrize("share", [True, False])
def test_choice_planner_counts_the_prefill_activations(monkeypatch, share):
    """Texts per prefill: a budget that holds two texts' cache and prefill activations, not three,
    prefills four texts two at a time (the cache alone would fit them all at once), with the same
    numbers as a roomy budget."""
    model, tok = make_tiny_causal("llama")
    texts = ["This movie was great and the acting was great, the plot was terrible and bad."] * 4
    options = [[" great.", " good, and more"]] * 4
    scorer = ChoiceScorer(model, tok, max_length=64, tokens_per_batch=None, share_prefix=share)
    roomy = flat(scorer.logprobs(texts, options))
    width = len(scorer.encode(texts[:1], options[:1])[0][0])
    cached = width * sp.cache_bytes_per_token(model)
    prefilling = cached + width * sp.activation_bytes_per_token(model, width)
    scorer.memory_budget = 2 * prefilling + prefilling // 2
    assert (scorer.memory_budget // 2) // cached >= 4  # the cache alone would not split them
    sizes = []
    real = choices_module.prefill
    monkeypatch.setattr(
        choices_module, "prefill", lambda m, p, *rest: sizes.append(len(p)) or real(m, p, *rest)
    )
    torch.testing.assert_close(flat(scorer.logprobs(texts, options)), roomy, atol=1e-5, rtol=1e-6)
    assert sizes == [2, 2]


def test_generation_planner_counts_the_prefill_activations():
    """A long text with one short sample: the prefill forward, not the decoding, sets the texts
    per batch."""
    model, tok = make_tiny_causal("llama")
    gen = TextGenerator(model, tok, max_length=64, share_prefix=True, memory_budget_mb=1)
    per_token = sp.cache_bytes_per_token(model)
    prefilling = 60 * (per_token + sp.activation_bytes_per_token(model, 60))
    decoding = (60 + 1) * per_token + len(tok) * 4 * 3
    assert prefilling > decoding
    assert gen._texts_fitting(60, 1, 1) == 2**20 // prefilling


def test_generation_planner_counts_the_cache_once():
    model, tok = make_tiny_causal("llama")
    shared = TextGenerator(model, tok, max_length=64, share_prefix=True, memory_budget_mb=8)
    copied = TextGenerator(model, tok, max_length=64, share_prefix=False, memory_budget_mb=8)
    per_token = sp.cache_bytes_per_token(model)  # 2 layers x 2 x 2 kv heads x 8 x 4 bytes
    assert per_token == 2 * 2 * 2 * 8 * 4
    logits = 128 * len(tok) * 4 * 3
    assert shared._texts_fitting(40, 128, 8) == 8 * 2**20 // ((40 + 128 * 8) * per_token + logits)
    assert copied._texts_fitting(40, 128, 8) == 8 * 2**20 // (128 * 48 * per_token + logits)
    assert shared._texts_fitting(40, 128, 8) > copied._texts_fitting(40, 128, 8)


@pytest.mark.parametrize("how", ["error", "wrong"])
def test_failed_self_check_falls_back_to_copies(monkeypatch, caplog, how):
    model, tok = make_tiny_causal("llama")
    if how == "error":  # the model bypasses the shared attention (as an unsupported family would)

        def bypassed(model, shared):
            raise RuntimeError("0 of 2 attention layers read the shared prefix cache")

        monkeypatch.setattr("hardprompts.targets.choices.check_calls", bypassed)
        monkeypatch.setattr("hardprompts.targets.generation.check_calls", bypassed)
    else:  # the shared path runs but computes something else (prefix keys all masked out)
        real = sp.SharedPrefix.allowed

        def blind(self, window):
            allowed = real(self, window).clone()
            allowed[..., : self.key_mask.shape[1]] = False
            return allowed

        monkeypatch.setattr(sp.SharedPrefix, "allowed", blind)
    with caplog.at_level(logging.WARNING):
        scorer = ChoiceScorer(model, tok, max_length=64)
        gen = TextGenerator(model, tok, max_length=64)
    assert not scorer.shares_prefix and not gen.shares_prefix
    assert "copying it per choice" in caplog.text or "copying the cache per choice" in caplog.text
    assert "per sample instead" in caplog.text
    torch.testing.assert_close(
        flat(scorer.logprobs(TEXTS, CHOICES)),
        flat(naive_continuation_logprobs(model, scorer, TEXTS, CHOICES)),
        atol=1e-5, rtol=1e-6,
    )  # fmt: skip


def test_self_checks_are_not_counted_as_target_work(lm):
    """The in-place self-checks run when the scorer / generator is first built: not target usage
    (a resumed run rebuilds them, and must count what an uninterrupted run counts)."""
    model, tok = lm
    target = HFTarget(model, tok, "causal", "{x} {prompt}", [], max_length=64)
    for call in (
        lambda: target.generate(TEXTS, max_new_tokens=4),
        lambda: target.continuation_logprobs(TEXTS, CHOICES),
    ):
        before = target.usage.requests
        call()
        first = target.usage.requests - before
        call()
        assert target.usage.requests - before == 2 * first
