"""Multi-field templates ({passage}, {question}): parsing, truncation of the longest field first
(never the prompt or the scored position), and a BoolQ-shaped user file scored by a causal target."""

from __future__ import annotations

import json

import pytest
import torch
from tiny_models import make_tiny_tokenizer

from hardprompts.errors import ConfigError
from hardprompts.targets.hf import HFTarget
from hardprompts.taskdata import field_values, read_rows
from hardprompts.templates import Template, TemplateEncoder, allot

BOOLQ = "{passage}\nQuestion: {question}? {prompt} Answer:"


def test_fields_are_inferred_or_checked():
    t = Template.parse(BOOLQ, "causal")
    assert t.fields == ("passage", "question") and t.prompt_after_input
    assert Template.parse(BOOLQ, "causal", ["passage", "question"]).fields == t.fields
    with pytest.raises(ConfigError, match=r"\{question\}, which task.fields \['passage'\]"):
        Template.parse(BOOLQ, "causal", ["passage"])
    with pytest.raises(ConfigError, match=r"does not use task.fields \['title'\]"):
        Template.parse(BOOLQ, "causal", ["passage", "question", "title"])
    with pytest.raises(ConfigError, match="must contain"):
        Template.parse("{prompt} Answer:", "causal")
    assert Template.parse("{x} {prompt}", "causal").fields == ("x",)  # single-input unchanged
    with pytest.raises(ConfigError, match="needs a value for each"):
        t.render("only one text", "p")


def test_allot_cuts_the_longest_first():
    # cap 5: (5, 4, 5) = 14 <= 15, cap 6 would take 16; the spare token goes to the first cut field
    assert allot([10, 4, 7], [1, 1, 1], 15) == [6, 4, 5]
    assert allot([10, 4, 7], [1, 1, 1], 21) == [10, 4, 7]
    assert allot([10, 4, 7], [3, 3, 3], 9) == [3, 3, 3]
    assert allot([10, 4, 7], [3, 3, 3], 8) is None


@pytest.fixture(scope="module")
def tok():
    return make_tiny_tokenizer()


def test_truncation_never_cuts_prompt_or_template_words(tok):
    template = Template.parse(BOOLQ, "causal")
    row = {
        "passage": "This movie was great and the acting was great. " * 3,
        "question": "was it great",
    }
    enc = TemplateEncoder(tok, template, "causal", max_length=48)
    full = TemplateEncoder(tok, template, "causal", max_length=1000).encode(row, "It was")
    assert len(full.ids) > 48
    cut = enc.encode(row, "It was")
    assert len(cut.ids) == 48
    text = tok.decode(cut.ids)
    assert text.endswith("\nQuestion: was it great? It was Answer:")  # question fits whole
    assert text.startswith("This movie was great")  # the long passage lost its end
    # fit(): the same cut for targets that take text, leaving room for 5 generated tokens
    values = enc.fit(row, "It was", reserve=5)
    rendered = template.render(values, "It was")
    assert values["question"] == "was it great" and len(values["passage"]) < len(row["passage"])
    assert len(tok(rendered)["input_ids"]) <= 48 - 5
    assert rendered.endswith("? It was Answer:")


def test_boolq_shaped_file_scores_like_a_full_forward(tmp_path, tiny_gpt2):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    rows = [
        {"passage": "The review says the food was great but the service was terrible.",
         "question": "was the food great", "label": 1},
        {"passage": "A terrible film, it was bad and boring. " * 4,
         "question": "was the film good", "label": 0},
    ]  # fmt: skip
    path = tmp_path / "train.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    columns, read = read_rows(path)
    fields = {"passage": "passage", "question": "question"}
    inputs = [field_values(path, columns, row, n, fields) for n, row in read]
    model = AutoModelForCausalLM.from_pretrained(tiny_gpt2).eval()
    tokenizer = AutoTokenizer.from_pretrained(tiny_gpt2)
    target = HFTarget(model, tokenizer, "causal", BOOLQ, [" terrible", " great"], max_length=40)
    prompts = ["It was", "all in all"]
    logits = target.score(prompts, inputs)  # cached path (prompt after the fields)
    assert logits.shape == (2, 2, 2)
    for p, prompt in enumerate(prompts):
        for n, x in enumerate(inputs):
            enc = target.encode(x, prompt)
            assert len(enc.ids) <= 40
            with torch.no_grad():
                ref = model(input_ids=torch.tensor([enc.ids])).logits[0, -1, target.verbalizer_ids]
            torch.testing.assert_close(logits[p, n], ref, atol=1e-5, rtol=0)
