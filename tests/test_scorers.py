"""Reward models of text style transfer (hardprompts.scorers): content, style, fluency, BLEU.

Tiny random models built here for the math and the errors; the real all-MiniLM-L6-v2 (the
``style`` extra) and the shipped classifiers in the tests marked slow.
"""

from __future__ import annotations

import json
import math
import shutil
import zipfile
from importlib import metadata
from pathlib import Path

import pytest
import torch
from tiny_models import make_tiny_tokenizer
from transformers import (
    AutoModel,
    AutoModelForCausalLM,
    RobertaConfig,
    RobertaForSequenceClassification,
)

from hardprompts.errors import ConfigError, MissingExtraError, ModelLoadError
from hardprompts.modeling import BUILTIN_DIR
from hardprompts.scorers import (
    PerplexityFluency,
    bleu,
    build_content_scorer,
    build_fluency_scorer,
    build_style_scorer,
    corpus_bleu,
    self_bleu,
)
from hardprompts.scorers import minilm as minilm_mod
from hardprompts.scorers.content import BertScoreContent, greedy_f1

POS = "the food was great and the staff was so friendly ."
NEG = "the food was cold and the service was terrible ."


def make_tiny_classifier(
    tmp_dir: Path, id2label: dict[int, str] | None = None, seed: int = 0
) -> Path:
    """A random 2-layer RoBERTa sequence classifier (2 labels) with the tiny tokenizer."""
    path = Path(tmp_dir) / f"tiny-clf-{seed}-{'named' if id2label else 'plain'}"
    tok = make_tiny_tokenizer(path, kind="roberta")
    config = RobertaConfig(
        vocab_size=len(tok), hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
        intermediate_size=64, max_position_embeddings=66, pad_token_id=tok.pad_token_id,
        bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id, num_labels=2,
        **({"id2label": id2label, "label2id": {v: k for k, v in id2label.items()}} if id2label else {}),
    )  # fmt: skip
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = RobertaForSequenceClassification(config)
        for p in model.classifier.parameters():  # a head large enough to give varied probabilities
            p.data.normal_(0, 1.0)
    model.save_pretrained(str(path))
    return path


@pytest.fixture(scope="module")
def tiny_clf(tmp_path_factory) -> Path:
    return make_tiny_classifier(tmp_path_factory.mktemp("clf"))


@pytest.fixture(scope="module")
def minilm_cache(tmp_path_factory):
    """Extract the real MiniLM once for this module into a private cache."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("HARDPROMPTS_CACHE", str(tmp_path_factory.mktemp("hp-cache")))
        yield


# --------------------------------------------------------------------------- BERTScore math


def _unit(*v):
    t = torch.tensor(v, dtype=torch.float32)
    return t / t.norm()


def test_greedy_f1_hand_worked():
    # candidate c1=(1,0,0), c2=(0,1,0); reference r1=(1,0,0), r2=(.8,.6,0), r3=(0,1,0) with weight 0
    # (a [CLS]/[SEP] position: it can be matched but is not averaged).
    # P = mean(max(1,.8,0), max(0,.6,1)) = 1;  R = mean(max(1,0), max(.8,.6)) = .9 (r3 skipped)
    # F = 2 * 1 * .9 / 1.9
    cand = (torch.stack([_unit(1, 0, 0), _unit(0, 1, 0)]), torch.tensor([1.0, 1.0]))
    ref = (
        torch.stack([_unit(1, 0, 0), _unit(0.8, 0.6, 0), _unit(0, 1, 0)]),
        torch.tensor([1.0, 1.0, 0.0]),
    )
    # a shorter pair in the same padded batch: all similarities negative.
    # P = -.6 (its only token's best), R = mean(-.6, -.8) = -.7, F = 2(-.6)(-.7)/(-1.3)
    cand2 = (_unit(-0.6, -0.8, 0)[None], torch.tensor([1.0]))
    ref2 = (torch.stack([_unit(1, 0, 0), _unit(0, 1, 0)]), torch.tensor([1.0, 1.0]))
    # an empty candidate: only special tokens (weight 0) -> F1 = 0
    cand3 = (_unit(1, 0, 0)[None], torch.tensor([0.0]))
    f = greedy_f1([cand, cand2, cand3], [ref, ref2, ref])
    expected = torch.tensor([2 * 0.9 / 1.9, 2 * 0.42 / -1.3, 0.0])
    assert torch.allclose(f, expected, atol=1e-6)
    # padding never wins the max: the short pair alone gives the same value
    assert torch.allclose(greedy_f1([cand2], [ref2]), expected[1:2], atol=1e-6)


def test_bertscore_matches_manual_computation(tiny_roberta):
    scorer = BertScoreContent(str(tiny_roberta), layer=1, baseline=None, device="cpu")
    assert scorer.prefix_space  # byte-level BPE without a prefix space, like RoBERTa's
    model = AutoModel.from_pretrained(str(tiny_roberta)).eval()
    tok = scorer.tokenizer

    def emb(text):
        ids = tok(" " + text)["input_ids"]
        with torch.no_grad():
            h = model(input_ids=torch.tensor([ids]), output_hidden_states=True).hidden_states[1][0]
        w = torch.tensor([0.0 if i in (tok.cls_token_id, tok.sep_token_id) else 1.0 for i in ids])
        return torch.nn.functional.normalize(h, dim=-1), w

    src, out = "the movie was great", "the plot was terrible and boring"
    (hs, ws), (ho, wo) = emb(src), emb(out)
    sim = ho @ hs.T
    p = (sim.max(1).values * wo).sum() / wo.sum()
    r = (sim.max(0).values * ws).sum() / ws.sum()
    f = 2 * p * r / (p + r)
    got = scorer.f1([src, src, src, ""], [out, src, "", ""])
    assert got[0].item() == pytest.approx(f.item(), abs=1e-5)
    assert got[1].item() == pytest.approx(1.0, abs=1e-5)
    assert got[2:].tolist() == [0.0, 0.0]  # an empty text has only special tokens
    assert scorer.model.encoder.layer.__len__() == 1  # layers above the one used are dropped


def test_bertscore_rescaling_and_clamp(tiny_roberta):
    raw = BertScoreContent(str(tiny_roberta), layer=2, baseline=None, device="cpu")
    scaled = build_content_scorer(f"bertscore:{tiny_roberta}", layer=2, baseline=0.9, device="cpu")
    src = ["the movie was great", "a terrible film", "news"]
    out = ["the movie was great", "world news and sports", "it was okay"]
    f1 = raw.f1(src, out)
    assert torch.allclose(raw(src, out), 100 * f1.clamp(min=0), atol=1e-4)
    assert torch.allclose(scaled(src, out), 100 * ((f1 - 0.9) / 0.1).clamp(min=0), atol=1e-3)
    assert scaled(src, out)[0].item() == pytest.approx(100.0, abs=1e-3)


def test_bertscore_errors(tiny_roberta):
    with pytest.raises(ConfigError, match="no rescaling baseline is known"):
        build_content_scorer(f"bertscore:{tiny_roberta}", device="cpu")
    with pytest.raises(ConfigError, match="outside 0..2"):
        BertScoreContent(str(tiny_roberta), layer=5, baseline=None, device="cpu")
    scorer = BertScoreContent(str(tiny_roberta), baseline=None, device="cpu")
    assert scorer.layer == 2  # unknown model: the last layer
    with pytest.raises(ConfigError, match="one source per output"):
        scorer(["a", "b"], ["a"])
    with pytest.raises(ConfigError, match="one string"):
        scorer("a sentence", "a sentence")


# --------------------------------------------------------------------------- embedding cosine


def test_cosine_scorer_is_mean_pooled_cosine(tiny_roberta):
    scorer = build_content_scorer(f"cosine:{tiny_roberta}", device="cpu", batch_size=2)
    model = AutoModel.from_pretrained(str(tiny_roberta)).eval()
    tok = scorer.tokenizer

    def sent(text):
        enc = tok([text], return_tensors="pt")
        with torch.no_grad():
            h = model(**enc).last_hidden_state[0]
        return torch.nn.functional.normalize(h.mean(0), dim=0)

    src = ["the movie was great", "the movie was great", "news and sports"]
    out = ["the movie was great", "a terrible film, bad and boring", "news and sports"]
    got = scorer(src, out)
    cos = float(sent(src[1]) @ sent(out[1]))
    assert got[1].item() == pytest.approx(100 * max(cos, 0.0), abs=1e-3)
    assert got[0].item() == pytest.approx(100.0, abs=1e-3) and got[2].item() == pytest.approx(
        100.0, abs=1e-3
    )
    assert got[1] < 100.0
    assert scorer([], []).shape == (0,)


def test_content_builder_errors(tiny_roberta):
    with pytest.raises(ConfigError, match="unknown content model 'roberta-large'.*bertscore:"):
        build_content_scorer("roberta-large")
    with pytest.raises(ConfigError, match="needs a model after the colon"):
        build_content_scorer("bertscore:")
    with pytest.raises(ConfigError, match="not bertscore"):
        build_content_scorer(f"cosine:{tiny_roberta}", layer=3)


# --------------------------------------------------------------------------- MiniLM cache


def _zip_folder(folder: Path, zip_path: Path) -> str:
    with zipfile.ZipFile(zip_path, "w") as zf:
        for f in sorted(folder.rglob("*")):
            if f.is_file():
                zf.write(f, f.relative_to(folder).as_posix())
    return minilm_mod.sha256_file(zip_path)


@pytest.fixture()
def small_zip(tmp_path):
    src = tmp_path / "src"
    (src / "sub").mkdir(parents=True)
    (src / "config.json").write_text("{}")
    (src / "sub" / "weights.bin").write_bytes(b"\x00" * 1000)
    zip_path = tmp_path / "model.zip"
    return zip_path, _zip_folder(src, zip_path)


def test_extract_verified_zip_is_idempotent_and_complete(tmp_path, small_zip, monkeypatch):
    zip_path, sha = small_zip
    dest = tmp_path / "cache"
    folder = minilm_mod.extract_verified_zip(zip_path, sha, dest, "m", required=("config.json",))
    assert folder == dest / f"m-{sha[:16]}"
    assert (folder / "sub" / "weights.bin").read_bytes() == b"\x00" * 1000
    assert (folder / minilm_mod.COMPLETE_MARKER).is_file()
    assert sorted(p.name for p in dest.iterdir()) == [folder.name]  # no temporary folder left

    def no_zip(*a, **k):
        raise AssertionError("a complete extraction must not be redone")

    monkeypatch.setattr(zipfile, "ZipFile", no_zip)
    monkeypatch.setattr(minilm_mod, "sha256_file", no_zip)
    assert (
        minilm_mod.extract_verified_zip(zip_path, sha, dest, "m", required=("config.json",))
        == folder
    )


def test_extract_crash_leaves_nothing_and_stale_folder_is_replaced(
    tmp_path, small_zip, monkeypatch
):
    zip_path, sha = small_zip
    dest = tmp_path / "cache"
    real_extractall = zipfile.ZipFile.extractall

    def crash(self, path, *a, **k):
        real_extractall(self, path, *a, **k)  # files written, then the process "dies"
        raise KeyboardInterrupt

    monkeypatch.setattr(zipfile.ZipFile, "extractall", crash)
    with pytest.raises(KeyboardInterrupt):
        minilm_mod.extract_verified_zip(zip_path, sha, dest, "m")
    assert list(dest.iterdir()) == []
    monkeypatch.undo()
    # a folder without the completion marker (e.g. copied by hand, half-deleted) is redone
    stale = dest / f"m-{sha[:16]}"
    stale.mkdir()
    (stale / "config.json").write_text("broken")
    folder = minilm_mod.extract_verified_zip(zip_path, sha, dest, "m", required=("config.json",))
    assert folder == stale and (folder / "config.json").read_text() == "{}"


def test_extract_sha_mismatch_and_unsafe_names(tmp_path, small_zip):
    zip_path, sha = small_zip
    dest = tmp_path / "cache"
    with pytest.raises(
        ModelLoadError, match=r"has sha256 [0-9a-f]{64}, expected 0{64}.*hardprompts\[style\]"
    ):
        minilm_mod.extract_verified_zip(zip_path, "0" * 64, dest, "m")
    assert not dest.exists()
    evil = tmp_path / "evil.zip"
    with zipfile.ZipFile(evil, "w") as zf:
        zf.writestr("../escape.txt", "x")
    with pytest.raises(ModelLoadError, match="unsafe member name"):
        minilm_mod.extract_verified_zip(evil, minilm_mod.sha256_file(evil), dest, "m")
    assert not (tmp_path / "escape.txt").exists() and list(dest.iterdir()) == []


def test_missing_style_extra_is_one_clear_error(monkeypatch):
    def missing(name):
        raise metadata.PackageNotFoundError(name)

    monkeypatch.setattr(metadata, "distribution", missing)
    with pytest.raises(MissingExtraError, match=r'pip install "hardprompts\[style\]"'):
        build_content_scorer("builtin:minilm")


def test_minilm_pinned_zip_matches_installed_package():
    assert minilm_mod.sha256_file(minilm_mod.minilm_zip_path()) == minilm_mod.MINILM_ZIP_SHA256


@pytest.mark.slow
def test_minilm_content_identical_100_unrelated_lower(minilm_cache):
    scorer = build_content_scorer("builtin:minilm", device="cpu")
    assert scorer.name == "builtin:minilm" and scorer.max_length == 256
    src = [POS, POS, POS]
    out = [
        POS,
        "the food was great and the staff was really friendly .",
        "my car needs new tires .",
    ]
    got = scorer(src, out)
    assert got[0].item() == pytest.approx(100.0, abs=1e-3)
    assert 70 < got[1] < 100 and got[2] < 30 and got[1] > got[2] + 40
    # the extracted folder is a normal HF model folder
    folder = minilm_mod.minilm_path()
    assert AutoModel.from_pretrained(str(folder)).config.hidden_size == 384


# --------------------------------------------------------------------------- style


def test_style_scorer_is_softmax_probability(tiny_clf):
    scorer = build_style_scorer(str(tiny_clf), device="cpu", batch_size=2)
    texts = ["the movie was great", "a terrible film", "the movie was great", "news"]
    model = RobertaForSequenceClassification.from_pretrained(str(tiny_clf)).eval()
    with torch.no_grad():
        enc = scorer.tokenizer(texts, padding=True, return_tensors="pt")
        p = model(**enc).logits.softmax(-1)
    assert torch.allclose(scorer.probs(texts), p, atol=1e-5)
    assert torch.allclose(scorer(texts, 1), 100 * p[:, 1], atol=1e-3)
    assert torch.allclose(
        scorer(texts, [0, 1, 0, 1]), 100 * p[torch.arange(4), torch.tensor([0, 1, 0, 1])], atol=1e-3
    )
    with pytest.raises(ConfigError, match=r"style 2 is not a label.*0\.\.1"):
        scorer(texts, 2)
    with pytest.raises(ConfigError, match="3 styles for 4 texts"):
        scorer(texts, [0, 1, 0])


def test_style_model_not_a_classifier_is_one_clear_error(tiny_gpt2, tiny_roberta):
    with pytest.raises(
        ModelLoadError,
        match=r"style model '.*tiny-gpt2' is not a sequence classifier.*GPT2LMHeadModel.*AutoModelForSequenceClassification",
    ):
        build_style_scorer(str(tiny_gpt2), device="cpu")
    with pytest.raises(ModelLoadError, match="RobertaForMaskedLM"):
        build_style_scorer(str(tiny_roberta), device="cpu")


def test_style_classifier_without_trained_head_is_rejected(tmp_path, tiny_roberta):
    path = tmp_path / "headless"
    AutoModel.from_pretrained(str(tiny_roberta)).save_pretrained(str(path))
    shutil.copy(tiny_roberta / "tokenizer.json", path)
    shutil.copy(tiny_roberta / "tokenizer_config.json", path)
    config = json.loads((path / "config.json").read_text())
    config["architectures"] = ["RobertaForSequenceClassification"]
    (path / "config.json").write_text(json.dumps(config))
    with pytest.raises(ModelLoadError, match="no trained weights for .*classifier.*random"):
        build_style_scorer(str(path), device="cpu")


@pytest.mark.slow
@pytest.mark.parametrize(
    ("name", "texts", "labels"),
    [
        ("yelp-style", [POS, NEG, "i love this place , best pizza in town !", "worst experience ever , never again ."], [1, 0, 1, 0]),
        ("shakespeare-style", ["Thou art a villain, and thy tongue doth lie.", "What say'st thou, knave? Hast thou no shame?",
                               "You are a liar and I don't trust you.", "Where are you going tonight?"], [0, 0, 1, 1]),
    ],
)  # fmt: skip
def test_builtin_style_classifiers(minilm_cache, name, texts, labels):
    by_name = build_style_scorer(f"builtin:{name}", device="cpu")
    by_path = build_style_scorer(str(BUILTIN_DIR / name), device="cpu")
    p = by_name.probs(texts)
    assert torch.allclose(p, by_path.probs(texts))
    assert p.argmax(-1).tolist() == labels
    record = json.loads((BUILTIN_DIR / name / "training_record.json").read_text())
    assert record["evaluation"]["test_accuracy"] > 0.75
    card = (BUILTIN_DIR / name / "README.md").read_text()
    assert f"{100 * record['evaluation']['test_accuracy']:.1f}%" in card


@pytest.mark.slow
def test_composed_classifier_checks_its_weights(minilm_cache, tmp_path):
    from safetensors.torch import load_file, save_file
    from transformers import AutoModelForSequenceClassification

    folder = tmp_path / "yelp-style"
    shutil.copytree(BUILTIN_DIR / "yelp-style", folder)
    with pytest.raises(OSError):  # no model.safetensors on purpose: never a half-random model
        AutoModelForSequenceClassification.from_pretrained(str(folder))
    head = load_file(str(folder / "head.safetensors"))
    save_file({**head, "bogus.weight": torch.zeros(1)}, str(folder / "head.safetensors"))
    with pytest.raises(ModelLoadError, match="does not fit its config.*bogus.weight"):
        build_style_scorer(str(folder), device="cpu")


# --------------------------------------------------------------------------- fluency


def test_perplexity_matches_hf_loss(tiny_gpt2):
    scorer = build_fluency_scorer(f"lm:{tiny_gpt2}", device="cpu", batch_size=2)
    assert isinstance(scorer, PerplexityFluency) and not scorer.higher_is_better
    model = AutoModelForCausalLM.from_pretrained(str(tiny_gpt2)).eval()
    tok = scorer.tokenizer
    texts = ["the movie was great", "a terrible film, it was bad and boring", "", "news"]
    got = scorer(texts)
    for text, value in zip(texts, got.tolist(), strict=True):
        if not text:
            assert math.isnan(value)
            continue
        ids = torch.tensor([[tok.bos_token_id] + tok(text, add_special_tokens=False)["input_ids"]])
        with torch.no_grad():
            loss = model(input_ids=ids, labels=ids).loss  # mean NLL of every token after the first
        assert value == pytest.approx(math.exp(loss.item()), rel=1e-4)
    sums, counts = scorer.nll(texts)
    assert counts[2] == 0 and sums[2] == 0
    expected = math.exp(float(sums.sum()) / int(counts.sum()))
    assert PerplexityFluency.corpus_perplexity(sums, counts) == pytest.approx(expected)


def test_classifier_fluency_and_label_choice(tmp_path, tiny_gpt2, tiny_roberta):
    named = make_tiny_classifier(tmp_path, id2label={0: "unacceptable", 1: "acceptable"})
    scorer = build_fluency_scorer(str(named), device="cpu")
    assert scorer.kind == "classifier" and scorer.higher_is_better and scorer.acceptable_label == 1
    texts = ["the movie was great", "great great was the"]
    style = build_style_scorer(str(named), device="cpu")
    assert torch.allclose(scorer(texts), style(texts, 1))
    plain = make_tiny_classifier(tmp_path)
    with pytest.raises(ConfigError, match="which label.*'acceptable'.*LABEL_0"):
        build_fluency_scorer(str(plain), device="cpu")
    assert (
        build_fluency_scorer(str(plain), acceptable_label="LABEL_0", device="cpu").acceptable_label
        == 0
    )
    with pytest.raises(
        ModelLoadError,
        match=f"causal LM: to score fluency by its perplexity write 'lm:{tiny_gpt2}'",
    ):
        build_fluency_scorer(str(tiny_gpt2), device="cpu")
    with pytest.raises(ModelLoadError, match="not a causal LM"):
        build_fluency_scorer(f"lm:{tiny_roberta}", device="cpu")


@pytest.mark.slow
def test_default_fluency_is_builtin_lm():
    scorer = build_fluency_scorer()
    ppl = scorer([POS, "the the the . food was , staff"])
    assert scorer.name == "lm:builtin:yelp-small"
    assert ppl[0] < 100 < ppl[1]  # a fluent review sentence vs word salad


# --------------------------------------------------------------------------- BLEU


def test_bleu_helpers():
    out = ["the cat sat on the mat .", "a dog ran in the park ."]
    assert bleu(out, out) == pytest.approx(100.0)
    assert self_bleu(out, ["zebra xylophone quantum", "zebra xylophone quantum"]) == pytest.approx(
        0.0, abs=1e-6
    )
    multi = [["the cat sat on a mat .", "the cat sat on the mat ."], "a dog ran in the park ."]
    assert bleu(out, multi) == pytest.approx(100.0)
    assert corpus_bleu(out, multi) == pytest.approx(100.0)
    one = bleu(out[:1], ["the cat sat on a mat ."])
    assert 0 < one < 100
    with pytest.raises(ConfigError, match="2 references for 1 outputs"):
        bleu(out[:1], out)


@pytest.mark.slow
def test_save_composed_refuses_changed_base_weights(minilm_cache, tmp_path):
    from safetensors.torch import load_file
    from transformers import AutoConfig, BertForSequenceClassification

    from hardprompts.scorers.style import save_composed_classifier

    base = minilm_mod.minilm_path()
    config = AutoConfig.from_pretrained(str(base), num_labels=2)
    config.architectures = ["BertForSequenceClassification"]
    model = BertForSequenceClassification(config)
    state = {"bert." + k: v for k, v in load_file(str(base / "model.safetensors")).items()}
    model.load_state_dict(state, strict=False)
    tok = make_tiny_tokenizer()
    kwargs = dict(base_model="builtin:minilm", base_prefix="bert.", trained_prefixes=["classifier."])
    saved = save_composed_classifier(model, tok, tmp_path / "ok", **kwargs)
    assert saved == ["classifier.bias", "classifier.weight"]
    reloaded = build_style_scorer(str(tmp_path / "ok"), device="cpu").model
    assert torch.equal(reloaded.classifier.weight, model.classifier.weight.half().float())
    with torch.no_grad():
        model.bert.encoder.layer[0].output.dense.bias.add_(1.0)
    with pytest.raises(ValueError, match="layer.0.output.dense.bias is not in trained_prefixes"):
        save_composed_classifier(model, tok, tmp_path / "bad", **kwargs)
