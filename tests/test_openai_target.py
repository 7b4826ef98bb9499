"""Served targets against a real (tiny) model served on loopback, directly and through faults.

The loopback server (``loopback_server.py``) runs a real tiny GPT-2 with transformers (the model is
not mocked); the served targets must agree with the in-process target, survive injected faults
(``fault_proxy.py``) with identical results, and fail with the documented messages.
"""

from __future__ import annotations

import json
import math
import time

import pytest
import torch
from fault_proxy import FaultProxy
from loopback_server import LoopbackServer

from hardprompts.config import load_config
from hardprompts.errors import ConfigError, TargetError
from hardprompts.modeling import load_lm, load_tokenizer
from hardprompts.targets.hf import HFTarget
from hardprompts.targets.openai import SEED_MODULUS, OpenAIChatTarget, OpenAITarget
from hardprompts.tasks import build_task

TEXTS = ["the movie was great", "a terrible film , it was bad and boring", "news about sports"]
PROMPTS = ["the language feels", "", "film"]
VERBS = [" terrible", " great"]
LONG = " ".join(["the movie was great and the acting was good"] * 12)  # ~100 tokens


@pytest.fixture(scope="module")
def lm(tiny_gpt2):
    return load_lm(str(tiny_gpt2), "causal", device="cpu"), load_tokenizer(str(tiny_gpt2))


@pytest.fixture(scope="module")
def server(lm):
    with LoopbackServer(*lm) as srv:
        yield srv


@pytest.fixture(autouse=True)
def cache_dir(tmp_path, monkeypatch):
    """Each test its own request cache (target.request_cache: auto reads this variable)."""
    monkeypatch.setenv("HARDPROMPTS_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"


def served(url, template="{x} {prompt}", verbs=VERBS, **kw) -> OpenAITarget:
    return OpenAITarget(url, "tiny", template, verbs, **kw)


def close(a, b):
    # log-probabilities differ from logits by a per-row constant: compare class distributions
    torch.testing.assert_close(a.log_softmax(-1), b.log_softmax(-1), atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("template", ["{x} {prompt}", "{prompt} Input: {x} Output:"])
@pytest.mark.parametrize("top_logprobs", [0, 5, 300])  # always echo / mixed / one request per text
@pytest.mark.parametrize("tokenizer", ["text", "local"])
def test_endpoint_equals_in_process_target(server, lm, template, top_logprobs, tokenizer):
    model, tok = lm
    remote = served(
        server.url,
        template,
        top_logprobs=top_logprobs,
        texts_per_request=4,
        max_concurrency=3,
        tokenizer=tok if tokenizer == "local" else None,
        max_length=1000,
    )
    local = HFTarget(model, tok, "causal", template, VERBS)
    got, want = remote.score(PROMPTS, TEXTS), local.score(PROMPTS, TEXTS)
    assert got.shape == (3, 3, 2)
    close(got, want)
    assert remote.usage.pairs == local.usage.pairs == 9  # three prompts x three texts


def test_one_request_per_text_batch_when_words_are_in_the_top_k(server):
    before = server.stats["requests"]
    target = served(server.url, top_logprobs=300, texts_per_request=64)
    target.score(["a", "b", "c", "d"], TEXTS * 4)  # 48 pairs, 96 (pair, word) scores
    assert server.stats["requests"] - before == 1
    assert target.usage.requests == 1 and target.usage.pairs == 48
    assert target.usage.prompt_tokens > 48  # the server's usage block is counted


def test_requests_sized_by_tokens(server):
    before = server.stats["requests"]
    target = served(server.url, top_logprobs=300, tokens_per_request=40, texts_per_request=64)
    target.score(["a"], [LONG[:150], LONG[:150], "short", "short"])  # ~38 tokens each long one
    assert server.stats["requests"] - before == 3  # long | long | short + short


@pytest.mark.parametrize("how", ["local", "tokenize"])
def test_truncation_parity(server, lm, how):
    model, tok = lm
    local = HFTarget(model, tok, "causal", "{x} {prompt}", VERBS, max_length=40)
    want = local.score(["it was"], [LONG, TEXTS[0]])
    if how == "local":
        remote = served(server.url, tokenizer=tok, max_length=40)
    else:  # vLLM's /tokenize on the server; its context is 42 = 40 + the word + one new token
        with LoopbackServer(model, tok, max_model_len=42) as small:
            remote = served(small.url, tokenizer="auto")
            close(remote.score(["it was"], [LONG, TEXTS[0]]), want)
            untruncated = served(small.url, tokenizer=None, max_retries=0)
            with pytest.raises(TargetError, match="HTTP 400.*set target.tokenizer"):
                untruncated.score(["it was"], [LONG])
        return
    close(remote.score(["it was"], [LONG, TEXTS[0]]), want)


def test_built_from_config(server):
    cfg = load_config(
        None,
        [
            "target.kind=openai",
            f"target.base_url={server.url}",
            "target.model=tiny",
            "target.max_retries=1",
        ],
    )
    task = build_task(cfg)
    target = task.target
    assert isinstance(target, OpenAITarget) and task.template == "{x} {prompt}"
    assert target.endpoints.max_retries == 1
    assert target.score(["so"], TEXTS).shape == (1, 3, 2)
    fields = type(cfg.target).model_fields
    for name in ("base_url", "api_key_env", "request_timeout_s", "max_retries", "max_concurrency"):
        assert fields[name].json_schema_extra == {"identity": False}, name
    assert not fields["model"].json_schema_extra


def test_multi_token_word_is_reported(server, lm):
    for tok in (None, lm[1]):
        target = served(server.url, verbs=[" great", " xylophonic"], top_logprobs=0, tokenizer=tok,
                        max_length=1000)  # fmt: skip
        with pytest.raises(Exception, match="' xylophonic' is .*(single token|not one)"):
            target.score(["so"], TEXTS[:1])


def test_unreachable_endpoint_names_the_fix():
    target = served("http://127.0.0.1:9/v1", max_retries=0, timeout_s=5)
    with pytest.raises(
        TargetError, match="cannot reach http://127.0.0.1:9/v1/completions.*target.base_url"
    ):
        target.score(["so"], TEXTS[:1])


def test_server_without_prompt_logprobs(lm):
    with LoopbackServer(*lm, echo=False) as srv:
        with pytest.raises(TargetError, match="did not return prompt log-probabilities"):
            served(srv.url, top_logprobs=0).score(["so"], TEXTS[:1])


# ------------------------------------------------------------------------- faults and retries


def test_faults_are_retried_with_identical_results(server):
    want = served(server.url, texts_per_request=2, request_cache=None).score(PROMPTS, TEXTS)
    faults = ["429", "500", "reset", ("delay", 0.2), "503", "ok", "reset"]
    with FaultProxy(server.port, faults, retry_after="1") as proxy:
        target = served(proxy.url, texts_per_request=2, max_retries=3, max_concurrency=2)
        t0 = time.perf_counter()
        got = target.score(PROMPTS, TEXTS)
        elapsed = time.perf_counter() - t0
    assert torch.equal(got, want)
    assert proxy.seen[: len(faults)] == [
        "429",
        "500",
        "reset",
        "('delay', 0.2)",
        "503",
        "ok",
        "reset",
    ]
    assert target.usage.retries == 5  # every fault but the delay cost one retry
    assert elapsed >= 1.0  # Retry-After: 1 was waited


def test_slow_server_is_reported_as_slow(server):
    with FaultProxy(server.port, [("delay", 1.5)] * 3) as proxy:
        target = served(proxy.url, max_retries=0, timeout_s=0.5)
        with pytest.raises(
            TargetError, match="no answer within 0.5 s.*raise target.request_timeout_s"
        ):
            target.score(["so"], TEXTS[:1])
        # with a retry the second attempt (also slow) fails the same way; a longer timeout succeeds
        ok = served(proxy.url, max_retries=1, timeout_s=5)
        assert ok.score(["so"], TEXTS[:1]).shape == (1, 1, 2)


def test_no_retries_stops_at_the_first_fault(server):
    with FaultProxy(server.port, ["500"]) as proxy:
        target = served(proxy.url, max_retries=0)
        with pytest.raises(
            TargetError,
            match=r"answered HTTP 500 \(1 attempt on the endpoint, target.max_retries=0\); the server "
            "is overloaded or failing.*raise target.max_retries",
        ):
            target.score(["so"], TEXTS[:1])


def test_client_errors_are_not_retried(server):
    with FaultProxy(server.port, []) as proxy:
        target = OpenAITarget(proxy.url.replace("/v1", "/nope"), "tiny", "{x} {prompt}", VERBS)
        with pytest.raises(TargetError, match="HTTP 404.*check target.base_url"):
            target.score(["so"], TEXTS[:1])
        assert len(proxy.seen) == 0 or proxy.seen == ["ok"]


def test_several_endpoints_spread_and_fail_over(lm, server):
    want = served(server.url, request_cache=None).score(PROMPTS, TEXTS)
    with LoopbackServer(*lm) as other:
        a, b = server.stats["requests"], other.stats["requests"]
        target = served([server.url, other.url], texts_per_request=1, max_concurrency=2,
                        top_logprobs=300)  # fmt: skip
        close(target.score(PROMPTS, TEXTS), want)  # other batches: equal up to float rounding
        assert server.stats["requests"] > a and other.stats["requests"] > b
    # the second endpoint is gone now: its requests fail over to the first
    dead = other.url
    target = served([dead, server.url], max_retries=0, texts_per_request=1, top_logprobs=300)
    close(target.score(PROMPTS, TEXTS), want)
    with pytest.raises(TargetError, match="cannot reach .*; cannot reach .*each endpoint"):
        served([dead, "http://127.0.0.1:9/v1"], max_retries=0).score(["so"], TEXTS[:1])


# ------------------------------------------------------------------------- the request cache


def test_request_cache_spares_the_server(server, cache_dir):
    first = served(server.url, request_cache="auto")
    want = first.score(PROMPTS, TEXTS)
    first.close()
    before = server.stats["requests"]
    again = served(server.url, request_cache="auto")
    got = again.score(PROMPTS + ["new one"], TEXTS)
    assert torch.equal(got[:3], want)
    assert again.usage.request_cache_hits == 9 and again.usage.pairs == 3
    assert server.stats["requests"] - before >= 1  # only "new one" was asked
    # a line torn by a crash is skipped, not fatal
    path = next(cache_dir.glob("requests/*.jsonl"))
    path.write_text(path.read_text() + '{"k": "abc", "v": [0.1')
    assert torch.equal(served(server.url, request_cache="auto").score(PROMPTS, TEXTS), want)


# ------------------------------------------------------------------------- generation, contract 3


def test_generate_greedy_equals_in_process(server, lm):
    model, tok = lm
    target = served(server.url)
    texts = ["the movie was", "a terrible"]
    got = target.generate(texts, num_samples=2, max_new_tokens=5)
    for text, outs in zip(texts, got, strict=True):
        ids = tok(text, return_tensors="pt")["input_ids"]
        ref = model.generate(ids, max_new_tokens=5, do_sample=False, pad_token_id=0)
        assert outs == [tok.decode(ref[0, ids.shape[1] :])] * 2
    sampled = target.generate(texts, num_samples=3, max_new_tokens=4, do_sample=True, top_k=20,
                              seed=1)  # fmt: skip
    assert [len(o) for o in sampled] == [3, 3]
    # a task's 62-bit seed is sent as 31 bits (llama.cpp reads 32): the same samples as seed 1
    big = target.generate(texts, num_samples=3, max_new_tokens=4, do_sample=True, top_k=20,
                          seed=1 + 5 * SEED_MODULUS)  # fmt: skip
    assert big == sampled
    word = got[0][0].split()[0] if got[0][0].split() else None
    if word:
        cut = target.generate(texts[:1], max_new_tokens=5, stop=word)
        assert word not in cut[0][0]


def test_continuation_logprobs(server, lm):
    model, tok = lm
    target = served(server.url)
    got = target.continuation_logprobs(["the movie was", "it"], [[" great", " bad and"], [" was"]])
    for text, conts, row in zip(["the movie was", "it"], [[" great", " bad and"], [" was"]], got,
                                strict=True):  # fmt: skip
        for cont, value in zip(conts, row, strict=True):
            a = tok(text)["input_ids"]
            ids = torch.tensor([a + tok(cont)["input_ids"]])
            logp = model(input_ids=ids).logits[0].log_softmax(-1)
            want = sum(float(logp[t - 1, ids[0, t]]) for t in range(len(a), ids.shape[1]))
            assert math.isclose(value, want, abs_tol=1e-5)


# ------------------------------------------------------------------------- chat endpoints


def test_chat_classification_and_its_approximation(server):
    full = OpenAIChatTarget(server.url, "tiny", "{x} {prompt}", VERBS, top_logprobs=300)
    logits = full.score(PROMPTS, TEXTS)
    assert logits.shape == (3, 3, 2) and full.usage.approximate_scores == 0
    narrow = OpenAIChatTarget(server.url, "tiny", "{x} {prompt}", VERBS, top_logprobs=1)
    narrow.score(PROMPTS, TEXTS)
    assert narrow.usage.approximate_scores > 0  # reported, not hidden
    gen = narrow.generate(["the movie was"], num_samples=2, max_new_tokens=3)
    assert len(gen[0]) == 2 and gen[0][0] == gen[0][1]


def test_chat_without_logprobs_stops_with_a_message(lm):
    with LoopbackServer(*lm, logprobs=False) as srv:
        target = OpenAIChatTarget(srv.url, "tiny", "{x} {prompt}", VERBS)
        with pytest.raises(TargetError, match="returned no log-probabilities.*openai-chat"):
            target.score(["so"], TEXTS[:1])
        assert target.generate(["so"], max_new_tokens=2)[0][0]  # generation still works
    with pytest.raises(ConfigError, match="top_logprobs must be at least 1"):
        OpenAIChatTarget(srv.url, "tiny", "{x} {prompt}", VERBS, top_logprobs=0)


def test_cache_file_is_json_lines(server, cache_dir):
    served(server.url, request_cache="auto").score(["so"], TEXTS)
    lines = next(cache_dir.glob("requests/*.jsonl")).read_text().splitlines()
    assert len(lines) == 3 and all(len(json.loads(line)["v"]) == 2 for line in lines)


def test_tokenizer_auto_does_not_guess_when_the_server_is_down():
    target = served("http://127.0.0.1:9/v1", tokenizer="auto", max_retries=0)
    with pytest.raises(TargetError, match=r"cannot reach .*/tokenize.*target.tokenizer"):
        target.score(["so"], TEXTS[:1])


def test_chat_input_truncated_through_the_served_tokenizer(lm):
    with LoopbackServer(*lm, max_model_len=30) as srv:
        chat = OpenAIChatTarget(srv.url, "tiny", "{x} {prompt}", VERBS, tokenizer="auto")
        sent = chat._prompts([(LONG, "it was")])[0]
        ids = lm[1](sent, add_special_tokens=False)["input_ids"]
        assert sent.endswith(" it was") and len(ids) <= 28 < len(lm[1](LONG)["input_ids"])
