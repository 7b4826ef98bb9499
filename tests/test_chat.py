"""task.chat: the filled template as the user turn of the target tokenizer's chat template.

A tiny GPT-2 whose tokenizer carries a chat template is scored in-process with chat formatting and
served through the loopback server's ``/chat/completions`` (which applies the same chat template,
as vLLM does): classification scores agree to 1e-5 and greedy answers are the same. Multiple choice
and style transfer wrap their texts the same way; masked LMs and served kinds refuse task.chat.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
import yaml
from loopback_server import LoopbackServer

from hardprompts.chat import ChatFormat, chat_format, resolve_chat, says_chat_model
from hardprompts.config import load_config
from hardprompts.errors import ConfigError
from hardprompts.modeling import load_lm, load_tokenizer
from hardprompts.targets.hf import HFTarget
from hardprompts.targets.openai import OpenAIChatTarget
from hardprompts.tasks import build_task

CHAT_TEMPLATE = (
    "{% for m in messages %}<|user|>\n{{ m['content'] }}\n{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>\n{% endif %}"
)
TEXTS = ["the movie was great", "a terrible film , it was bad and boring", "news about sports"]
PROMPTS = ["the language feels", "", "film"]


@pytest.fixture(scope="module")
def chat_model(tiny_gpt2, tmp_path_factory) -> Path:
    """The tiny GPT-2, saved as an 'instruct' model whose tokenizer has a chat template."""
    path = tmp_path_factory.mktemp("models") / "tiny-chat-instruct"
    shutil.copytree(tiny_gpt2, path)
    tok = load_tokenizer(str(path))
    tok.chat_template = CHAT_TEMPLATE
    tok.save_pretrained(path)
    return path


@pytest.fixture(scope="module")
def lm(chat_model):
    return load_lm(str(chat_model), "causal", device="cpu"), load_tokenizer(str(chat_model))


@pytest.fixture(scope="module")
def server(lm):
    with LoopbackServer(*lm, chat_template=True) as srv:
        yield srv


@pytest.fixture(autouse=True)
def cache_dir(tmp_path, monkeypatch):
    monkeypatch.setenv("HARDPROMPTS_CACHE", str(tmp_path / "cache"))


def label_words(tok, n: int = 2) -> list[str]:
    """Single-token words no other token equals once stripped (openai-chat compares stripped
    tokens and keeps the best of a word's spellings; in-process scores the word's own token)."""
    stripped: dict[str, int] = {}
    for i in range(len(tok)):
        key = tok.decode([i]).strip()
        stripped[key] = stripped.get(key, 0) + 1
    words = [w for w in "qzxjkvwy" if stripped.get(w) == 1 and len(tok(w)["input_ids"]) == 1]
    return words[:n]


def close(a, b):
    # log-probabilities differ from logits by a per-row constant: compare class distributions
    torch.testing.assert_close(a.log_softmax(-1), b.log_softmax(-1), atol=1e-5, rtol=1e-5)


# ---------------------------------------------------------------------------------- the format


def test_chat_format_splits_the_rendered_chat_around_the_users_message(lm):
    _, tok = lm
    fmt = chat_format(tok)
    assert fmt == ChatFormat("<|user|>\n", "\n<|assistant|>\n", trims=False)
    assert fmt.wrap("hi") == tok.apply_chat_template(
        [{"role": "user", "content": "hi"}], tokenize=False, add_generation_prompt=True
    )
    assert fmt.wrap_template("{x} {prompt}") == "<|user|>\n{x} {prompt}\n<|assistant|>\n"
    # a causal {mask} ends the template: the label word follows the assistant turn's start
    assert fmt.wrap_template("{x} It was {mask}") == "<|user|>\n{x} It was \n<|assistant|>\n"


def test_a_trimming_chat_template_with_bos(lm):
    _, tok = lm
    tok = tok.__class__.from_pretrained(tok.name_or_path)
    tok.chat_template = (
        "{{ bos_token }}{% for m in messages %}<|user|>\n{{ m['content'] | trim }}\n{% endfor %}"
        "{% if add_generation_prompt %}<|assistant|>\n{% endif %}"
    )
    fmt = chat_format(tok)
    assert fmt.trims
    # this tokenizer adds no BOS itself, so the chat template's BOS stays in the text
    assert fmt.prefix == tok.bos_token + "<|user|>\n"
    assert fmt.wrap("  hi ") == fmt.prefix + "hi" + fmt.suffix
    assert fmt.wrap_template(" {x} {prompt} ") == fmt.prefix + "{x} {prompt}" + fmt.suffix


def test_auto_needs_a_chat_template_and_an_instruct_name(chat_model, tiny_gpt2):
    assert says_chat_model("meta-llama/Meta-Llama-3-8B-Instruct")
    assert says_chat_model("google/gemma-2b-it") and says_chat_model("Qwen/Qwen1.5-0.5B-Chat")
    assert not says_chat_model("gpt2") and not says_chat_model("facebook/opt-1.3b")
    cfg = load_config(None, [f"target.model={chat_model}"])
    assert resolve_chat("auto", cfg.target, "causal") == ChatFormat(
        "<|user|>\n", "\n<|assistant|>\n", False
    )
    assert resolve_chat(False, cfg.target, "causal") is None
    plain = load_config(None, [f"target.model={tiny_gpt2}"])
    assert resolve_chat("auto", plain.target, "causal") is None  # no chat template, no instruct
    with pytest.raises(ConfigError, match="has no chat template"):
        resolve_chat(True, plain.target, "causal")
    assert resolve_chat("auto", cfg.target, "openai-chat") is None  # the server formats


def test_masked_lm_and_served_kinds_refuse_chat_true(chat_model, tiny_roberta):
    cfg = load_config(None, [f"target.model={tiny_roberta}"])
    with pytest.raises(ConfigError, match="masked LM, which has no chat turns"):
        resolve_chat(True, cfg.target, "masked")
    cfg = load_config(None, [f"target.model={chat_model}"])
    with pytest.raises(ConfigError, match="use kind openai-chat"):
        resolve_chat(True, cfg.target, "openai-chat")


def folder(root: Path, name: str, rows: list[dict]) -> Path:
    path = root / name
    path.mkdir(parents=True, exist_ok=True)
    for split in ("train", "dev", "test"):
        (path / f"{split}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def write_config(tmp_path: Path, task: dict, target: dict) -> Path:
    path = tmp_path / f"cfg-{len(list(tmp_path.glob('cfg-*')))}.yaml"
    path.write_text(
        yaml.safe_dump({"task": task, "target": target, "algorithm": {"name": "search"}})
    )
    return path


def test_masked_lm_with_chat_true_is_a_clear_error_through_the_task(tiny_roberta, tmp_path):
    rows = [{"sentence": t, "label": i % 2} for i, t in enumerate(TEXTS)]
    data = folder(tmp_path, "cls", rows)
    task = {"dataset": str(data), "split_seed": None, "verbalizers": [" great", " terrible"],
            "chat": True}  # fmt: skip
    cfg = load_config(write_config(tmp_path, task, {"model": str(tiny_roberta), "kind": "masked"}))
    with pytest.raises(ConfigError, match="task.chat is true but target.model is a masked LM"):
        build_task(cfg)


# ------------------------------------------------------------------ in-process equals served


def test_classification_scores_equal_the_openai_chat_path(server, lm):
    model, tok = lm
    words = label_words(tok)
    assert len(words) == 2
    fmt = chat_format(tok)
    local = HFTarget(model, tok, "causal", fmt.wrap_template("{x} {prompt}"), words)
    remote = OpenAIChatTarget(server.url, "tiny", "{x} {prompt}", words, top_logprobs=len(tok))
    got, want = remote.score(PROMPTS, TEXTS), local.score(PROMPTS, TEXTS)
    assert remote.usage.approximate_scores == 0  # every label word's exact log-probability
    close(got, want)
    # not the raw template's scores
    raw = HFTarget(model, tok, "causal", "{x} {prompt}", words).score(PROMPTS, TEXTS)
    assert not torch.allclose(raw.log_softmax(-1), want.log_softmax(-1), atol=1e-3)


def test_classification_task_with_chat_equals_the_served_task(server, chat_model, tmp_path, lm):
    _, tok = lm
    words = label_words(tok)
    rows = [{"sentence": t, "label": i % 2} for i, t in enumerate(TEXTS)]
    data = folder(tmp_path, "cls", rows)
    task = {"dataset": str(data), "split_seed": None, "verbalizers": [" " + w for w in words]}
    local = build_task(load_config(write_config(
        tmp_path, {**task, "chat": True}, {"model": str(chat_model), "kind": "causal"})))  # fmt: skip
    remote = build_task(load_config(write_config(tmp_path, task, {
        "model": "tiny", "kind": "openai-chat", "base_url": server.url,
        "top_logprobs": len(tok), "request_cache": None})))  # fmt: skip
    assert local.verbalizers == words  # scored without the leading space, after the turn's start
    assert local.template == "<|user|>\n{x} {prompt}\n<|assistant|>\n"
    close(remote.target.score(PROMPTS, TEXTS), local.target.score(PROMPTS, TEXTS))


@pytest.mark.parametrize("stop", [None, "\n"])
def test_generation_equals_the_openai_chat_path(server, chat_model, tmp_path, stop):
    rows = [{"input": t, "output": "great"} for t in ("the movie", "bad")]  # 64 positions
    data = folder(tmp_path, "gen", rows)
    task = {"kind": "generation", "dataset": str(data), "split_seed": None, "max_new_tokens": 6,
            "stop": stop}  # fmt: skip
    local = build_task(load_config(write_config(
        tmp_path, {**task, "chat": True}, {"model": str(chat_model), "kind": "causal"})))  # fmt: skip
    remote = build_task(load_config(write_config(tmp_path, task, {
        "model": "tiny", "kind": "openai-chat", "base_url": server.url, "request_cache": None})))  # fmt: skip
    examples = local.split("test").examples
    prompts = ["film", ""]
    got = remote._outputs(prompts, examples, None)[0]
    want = local._outputs(prompts, examples, None)[0]
    assert got == want and any(o for row in want for o in row)  # not all empty
    text = local.render(prompts[0], examples[0])
    assert text == "<|user|>\nfilm\nInput: the movie\nOutput:\n<|assistant|>\n"


def test_multiple_choice_options_follow_the_assistant_turn(chat_model, tmp_path, lm):
    model, tok = lm
    rows = [{"input": t, "choices": ["good movie", "bad movie"], "label": i % 2}
            for i, t in enumerate(TEXTS)]  # fmt: skip
    data = folder(tmp_path, "mc", rows)
    task = {"kind": "multiple_choice", "dataset": str(data), "split_seed": None, "chat": True}
    mc = build_task(load_config(write_config(tmp_path, task, {"model": str(chat_model)})))
    e = mc.split("train").examples[0]
    text, options = mc.applied("p", e)
    assert text == f"<|user|>\np\nInput: {TEXTS[0]}\nAnswer:\n<|assistant|>\n"
    assert options == ["good movie", "bad movie"]  # no choice prefix after the turn's start
    # the scores are the options' log-likelihoods after the chat-formatted text (up to the
    # newline that ends the turn's start, scored with every option alike)
    scores = mc.choice_scores(["p"], [e])[0, 0]
    ids = tok(text, add_special_tokens=False)["input_ids"]
    want = []
    with torch.no_grad():
        for opt in options:
            cont = tok(opt, add_special_tokens=False)["input_ids"]
            logp = model(torch.tensor([ids + cont])).logits[0].log_softmax(-1)
            want.append(sum(float(logp[len(ids) - 1 + k, t]) for k, t in enumerate(cont)))
    diff = float(scores[0] - scores[1])
    assert diff == pytest.approx(want[0] - want[1], abs=1e-4)


def test_style_transfer_wraps_the_filled_template():
    from hardprompts.tasks.style import RewardModels, StyleSplit, StyleTransferTask

    class Recorder:
        def __init__(self):
            self.texts = []

        def generate(self, texts, *, num_samples=1, **_):
            self.texts += list(texts)
            return [["nice."] * num_samples for _ in texts]

    class Content:
        def __call__(self, sources, outputs):
            return torch.zeros(len(outputs))

    class Style:
        num_labels = 2

        def probs(self, texts):
            return torch.tensor([[0.5, 0.5]] * len(texts))

    cfg = load_config(None, ["task.kind=style_transfer", "task.dataset=toy",
                             "task.control_output_length=false", "task.eval_num_samples=2"])  # fmt: skip
    split = StyleSplit("dev", ["bad food"], None, "toy")
    target = Recorder()
    fmt = ChatFormat("<|user|>\n", "\n<|assistant|>\n", False)
    task = StyleTransferTask(target, RewardModels(Content(), Style()), cfg.task, 1,
                             {"train": split, "dev": split}, chat=fmt)  # fmt: skip
    task.evaluate(["Rewrite:"], "dev")
    assert target.texts == ['<|user|>\nRewrite: "bad food" "\n<|assistant|>\n']
