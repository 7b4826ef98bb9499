"""The OpenAI-compatible endpoint target against a real (tiny) model served on loopback.

The server below is a minimal completions endpoint that runs a real tiny GPT-2 with
transformers (the model is not mocked); the target must agree with the in-process target.
"""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
import torch

from hardprompts.config import load_config
from hardprompts.errors import TargetError
from hardprompts.modeling import load_lm, load_tokenizer
from hardprompts.targets.hf import HFTarget
from hardprompts.targets.openai import OpenAITarget
from hardprompts.tasks import build_task

TEXTS = ["the movie was great", "a terrible film , it was bad and boring", "news about sports"]
PROMPTS = ["the language feels", "", "film"]


def serve(model, tokenizer, echo: bool = True):
    lock = threading.Lock()

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args):  # keep test output clean
            pass

        def do_POST(self):  # noqa: N802 - http.server's naming
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            choices = []
            for i, text in enumerate(body["prompt"]):
                enc = tokenizer(text, return_offsets_mapping=True, add_special_tokens=False)
                ids = torch.tensor([enc["input_ids"]])
                with lock, torch.no_grad():
                    logp = model(input_ids=ids).logits[0].log_softmax(-1)
                token_lp = [None] + [float(logp[t - 1, ids[0, t]]) for t in range(1, ids.shape[1])]
                nxt = int(logp[-1].argmax())
                logprobs = {"token_logprobs": token_lp + [float(logp[-1, nxt])],
                            "text_offset": [s for s, _ in enc["offset_mapping"]] + [len(text)]}  # fmt: skip
                choices.append({"index": i, "text": text, "logprobs": logprobs if echo else None})
            out = json.dumps({"choices": choices}).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(out)))
            self.end_headers()
            self.wfile.write(out)

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


@pytest.fixture(scope="module")
def served(tiny_gpt2):
    model, tok = load_lm(str(tiny_gpt2), "causal", device="cpu"), load_tokenizer(str(tiny_gpt2))
    server = serve(model, tok)
    yield model, tok, f"http://127.0.0.1:{server.server_address[1]}/v1"
    server.shutdown()


@pytest.mark.parametrize("template", ["{x} {prompt}", "{prompt} Input: {x} Output:"])
def test_endpoint_equals_in_process_target(served, template):
    model, tok, url = served
    verbs = [" terrible", " great"]
    remote = OpenAITarget(url, "tiny", template, verbs, texts_per_request=4, max_concurrency=3)
    local = HFTarget(model, tok, "causal", template, verbs)
    got, want = remote.score(PROMPTS, TEXTS), local.score(PROMPTS, TEXTS)
    assert got.shape == (3, 3, 2)
    # log-probabilities differ from logits by a per-row constant: compare class distributions
    torch.testing.assert_close(got.log_softmax(-1), want.log_softmax(-1), atol=1e-5, rtol=1e-5)


def test_built_from_config(served):
    _, _, url = served
    cfg = load_config(None, ["target.kind=openai", f"target.base_url={url}", "target.model=tiny"])
    task = build_task(cfg)
    target = task.target
    assert isinstance(target, OpenAITarget) and task.template == "{x} {prompt}"
    assert target.score(["so"], TEXTS).shape == (1, 3, 2)


def test_multi_token_word_is_reported(served):
    _, _, url = served
    target = OpenAITarget(url, "tiny", "{x} {prompt}", [" great", " xylophonic"])
    with pytest.raises(TargetError, match="' xylophonic' is not a single token"):
        target.score(["so"], TEXTS[:1])


def test_unreachable_endpoint():
    target = OpenAITarget(
        "http://127.0.0.1:9/v1", "tiny", "{x} {prompt}", [" a", " b"], timeout_s=5
    )
    with pytest.raises(
        TargetError, match="cannot reach the completions endpoint .*target.base_url"
    ):
        target.score(["so"], TEXTS[:1])


def test_server_without_prompt_logprobs(tiny_gpt2):
    server = serve(
        load_lm(str(tiny_gpt2), "causal", device="cpu"), load_tokenizer(str(tiny_gpt2)), echo=False
    )
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}/v1"
        with pytest.raises(TargetError, match="did not return prompt log-probabilities"):
            OpenAITarget(url, "tiny", "{x} {prompt}", [" terrible", " great"]).score(
                ["so"], TEXTS[:1]
            )
    finally:
        server.shutdown()
