"""Projection onto the vocabulary, allowed tokens, and faithfulness of soft prompts."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
from tiny_models import make_tiny_tokenizer

from hardprompts.config import config_from_dict
from hardprompts.errors import ConfigError
from hardprompts.interpretability import (
    allowed_token_mask,
    faithfulness,
    nearest_tokens,
    total_variation,
)
from hardprompts.tasks import build_task
from hardprompts.training import RunContext, run

# ---------------------------------------------------------------------- pure maths, by hand


def test_faithfulness_is_one_when_equal():
    logits = torch.tensor([[0.3, -1.0], [2.0, 0.5], [0.0, 0.1]])
    labels = torch.tensor([0, 0, 0])
    out = faithfulness(logits, logits.clone(), labels)
    assert out == {
        "label_agreement": 1.0,
        "tv_faithfulness": 1.0,
        "soft_accuracy": pytest.approx(2 / 3),
        "projected_accuracy": pytest.approx(2 / 3),
        "accuracy_gap": 0.0,
    }


def test_faithfulness_by_hand_when_different():
    ln3 = math.log(3)
    soft = torch.tensor([[0.0, ln3], [0.0, 0.0]])  # p = (.25, .75), (.5, .5)
    hard = torch.tensor([[ln3, 0.0], [0.0, 0.0]])  # p = (.75, .25), (.5, .5)
    labels = torch.tensor([1, 0])
    # TV: ½(|.25−.75| + |.75−.25|) = .5 on the first input, 0 on the second -> mean .25.
    torch.testing.assert_close(total_variation(soft, hard), torch.tensor([0.5, 0.0]))
    out = faithfulness(soft, hard, labels)
    assert out["tv_faithfulness"] == pytest.approx(0.75)
    assert out["label_agreement"] == 0.5  # argmax 1 vs 0, then 0 vs 0 (ties: the first class)
    assert out["soft_accuracy"] == 1.0 and out["projected_accuracy"] == 0.5
    assert out["accuracy_gap"] == 0.5
    assert "soft_accuracy" not in faithfulness(soft, hard)  # no labels, no accuracies
    with pytest.raises(ValueError, match="differ in shape"):
        faithfulness(soft, hard[:1])


def test_nearest_tokens_cosine_l2_and_mask():
    table = torch.tensor([[10.0, 0.0], [0.5, 0.4], [0.0, -1.0]])
    p = torch.tensor([[3.0, 0.0]])
    assert nearest_tokens(p, table, metric="cosine").tolist() == [0]  # same direction
    assert nearest_tokens(p, table, metric="l2").tolist() == [1]  # 6.41 < 49
    assert nearest_tokens(p, table, torch.tensor([False, False, True])).tolist() == [2]
    batch = torch.stack([p, -p])  # [2, 1, 2]: leading dims are kept
    assert nearest_tokens(batch, table).tolist() == [[0], [2]]  # −p: cos 0 (row 2) > −.78 > −1
    with pytest.raises(ConfigError, match="allows no token"):
        nearest_tokens(p, table, torch.zeros(3, dtype=torch.bool))


def test_allowed_token_mask_words_and_specials():
    tok = make_tiny_tokenizer(kind="roberta")
    rows = len(tok) + 4  # padding rows past the vocabulary are never allowed
    every = allowed_token_mask(tok, rows, "all")
    assert not every[len(tok) :].any()
    assert not every[tok.all_special_ids].any()
    assert int(every.sum()) == len(tok) - len(tok.all_special_ids)
    words = allowed_token_mask(tok, rows, "words")
    chosen = tok.convert_ids_to_tokens(words.nonzero().squeeze(-1).tolist())
    assert {" great", " terrible"} <= {t.replace("Ġ", " ") for t in chosen}
    assert all(t.startswith("Ġ") and t[1:].isalpha() for t in chosen)
    with pytest.raises(ConfigError, match="allowed_tokens"):
        allowed_token_mask(tok, rows, "nouns")  # type: ignore[arg-type]


# ---------------------------------------------------------------------- the softprompt method


def _config(model, fsc_dir, out, steps=8, **algorithm):
    return config_from_dict(
        {
            "task": {"dataset": "sst-2", "data_dir": str(fsc_dir), "split_seed": "16-100"},
            "target": {"model": str(model), "device": "cpu", "max_length": 64, "batch_size": 64},
            "algorithm": {"name": "softprompt", **algorithm},
            "train": {"steps": steps, "seed": 0, "eval_every": 4, "checkpoint_every": 4},
            "out_dir": str(out),
        }
    )


def test_soft_prompt_equal_to_its_projection_is_faithful(tiny_gpt2, fsc_dir, tmp_path):
    config = _config(tiny_gpt2, fsc_dir, tmp_path, lr=0.5)
    task = build_task(config)
    ctx = RunContext(config, task, tmp_path)
    algo = config.algorithm.make(ctx)
    # Initialised on the label words' embedding rows: P is exactly its own projection.
    assert torch.equal(algo.prompt.detach(), algo.table[algo.projection()])
    dev = task.split("dev")
    same = algo._faithfulness(algo.prompt.detach(), dev.texts, dev.labels)
    assert same["label_agreement"] == 1.0
    assert same["tv_faithfulness"] == pytest.approx(1.0, abs=1e-6)
    assert same["accuracy_gap"] == 0.0
    losses = [algo.step(s)["losses/task_ce"] for s in range(8)]
    assert sum(losses[-3:]) / 3 < sum(losses[:3]) / 3  # it learns
    moved = algo._faithfulness(algo.prompt.detach(), dev.texts, dev.labels)
    assert moved["tv_faithfulness"] < 1.0 - 1e-4  # off the vocabulary, soft != projection


def test_softprompt_run_reports_faithfulness(tiny_gpt2, fsc_dir, tmp_path):
    result = run(_config(tiny_gpt2, fsc_dir, tmp_path), show_progress=False)
    soft = result["soft_prompt"]
    assert result["method"] == "softprompt"
    assert soft["step"] in (4, 8)
    for split, n in (("dev", 32), ("test", result["test_n"])):
        block = soft[split]
        assert block["n"] == n
        assert 0.0 <= block["tv_faithfulness"] <= 1.0
        assert block["accuracy_gap"] == pytest.approx(
            block["soft_accuracy"] - block["projected_accuracy"]
        )
    metrics = (Path(tmp_path) / "metrics.jsonl").read_text()
    assert "soft/dev_accuracy" in metrics and "faithfulness/dev_tv" in metrics
    assert result["perplexity_reference"] == str(tiny_gpt2)  # causal target judges itself
    assert result["prompt_perplexity"] > 1.0


def test_softprompt_state_round_trip_continues_identically(tiny_gpt2, fsc_dir, tmp_path):
    from hardprompts.checkpoint import load_checkpoint, save_checkpoint

    config = _config(tiny_gpt2, fsc_dir, tmp_path, init="random")
    task = build_task(config)
    ctx = RunContext(config, task, tmp_path)
    whole, cut = config.algorithm.make(ctx), config.algorithm.make(ctx)
    for step in range(3):
        whole.step(step)
        cut.step(step)
    cut.after_eval(3, [])  # a best soft prompt exists in the saved state
    save_checkpoint(tmp_path / "ckpt", cut.state_dict())
    resumed = config.algorithm.make(ctx)
    resumed.load_state_dict(load_checkpoint(tmp_path / "ckpt"))
    assert resumed.best["step"] == 3
    for step in range(3, 6):
        a, b = whole.step(step), resumed.step(step)
        assert a == b  # same batches (generator restored), same Adam moments
    torch.testing.assert_close(whole.prompt.detach(), resumed.prompt.detach(), rtol=0, atol=0)
