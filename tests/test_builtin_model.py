"""The project's own small LM (builtin:yelp-small): loads offline by name and path, and is a real LM."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
from conftest import DATA_ROOT
from transformers import AutoConfig, AutoModelForCausalLM

from hardprompts.metrics import prompt_perplexity
from hardprompts.modeling import (
    BUILTIN_DIR,
    builtin_models,
    load_lm,
    load_tokenizer,
    resolve_model_path,
)

NAME = "builtin:yelp-small"
YELP_TEST = DATA_ROOT / "tst/yelp/clean/sentiment.test.1.clean"


@pytest.fixture(scope="module")
def sentences() -> list[str]:
    if not YELP_TEST.exists():
        pytest.skip(f"Yelp test sentences not found at {YELP_TEST}")
    return YELP_TEST.read_text(encoding="utf-8").splitlines()[:40]


def test_loads_offline_by_name_and_by_path(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert "yelp-small" in builtin_models()
    path = resolve_model_path(NAME)
    assert Path(path) == BUILTIN_DIR / "yelp-small"
    by_name = load_lm(NAME, "causal", device="cpu")
    by_path = load_lm(path, "causal", device="cpu")
    assert by_name.config.model_type == "gpt2" and by_name.dtype == torch.float32
    for a, b in zip(by_name.parameters(), by_path.parameters(), strict=True):
        assert torch.equal(a, b)
    tok = load_tokenizer(NAME)
    for word in (" terrible", " bad", " okay", " good", " great"):
        assert len(tok(word, add_special_tokens=False)["input_ids"]) == 1, word


def test_is_a_working_language_model(sentences):
    tok = load_tokenizer(NAME)
    model = load_lm(NAME, "causal", device="cpu")
    ppl = prompt_perplexity(sentences, model, tok)
    mean = math.exp(sum(math.log(p) for p in ppl) / len(ppl))
    # The same architecture with random weights: perplexity near the vocabulary size.
    torch.manual_seed(0)
    random_model = AutoModelForCausalLM.from_config(
        AutoConfig.from_pretrained(resolve_model_path(NAME))
    ).eval()
    rand = prompt_perplexity(sentences[:5], random_model, tok)
    assert min(rand) > 1000
    assert mean < 200, f"held-out Yelp perplexity {mean:.1f}"


def test_model_card_and_record_describe_the_weights():
    folder = BUILTIN_DIR / "yelp-small"
    record = json.loads((folder / "training_record.json").read_text())
    assert "seed" in json.dumps(record)
    card = (folder / "README.md").read_text()
    assert "perplexity" in card.lower() and "sst-2" in card.lower()
    size = sum(p.stat().st_size for p in folder.glob("*.safetensors"))
    assert 0 < size <= 25 * 2**20
