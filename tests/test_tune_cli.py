"""`hardprompts tune` end to end with RLPrompt and PIN, and the shipped example configs."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from hardprompts.cli import app
from hardprompts.config import load_config
from hardprompts.metrics import prompt_perplexity
from hardprompts.modeling import load_lm, load_tokenizer

REPO = Path(__file__).resolve().parents[1]
runner = CliRunner()


def tune(*args: str):
    return runner.invoke(app, ["tune", *args], catch_exceptions=False)


def tiny_sets(tiny_roberta: Path, tiny_gpt2: Path, fsc_dir: Path, name: str) -> list[str]:
    """--set options for a 4-step run on the real SST-2 16-shot split with tiny random models."""
    sets = [
        f"algorithm.name={name}",
        f"task.data_dir={fsc_dir}",
        "task.dataset=sst-2",
        "task.split_seed=16-42",
        f"target.model={tiny_roberta}",  # masked target: "{x} {prompt} <mask> ."
        "target.device=cpu",
        f"policy.model={tiny_gpt2}",
        "policy.device=cpu",
        "policy.mlp_hidden=16",
        "algorithm.prompts_per_step=4",
        "train.steps=4",
        "train.eval_every=2",
        "train.checkpoint_every=2",
    ]
    if name == "pin":  # update from the first step (PIN waits for 256 stored prompts)
        sets.append("algorithm.replay_batch_size=4")
    return [arg for s in sets for arg in ("--set", s)]


@pytest.mark.parametrize("name", ["rlprompt", "pin"])
def test_tune_end_to_end(tiny_roberta, tiny_gpt2, fsc_dir, tmp_path, name):
    out = tmp_path / "run"
    res = tune(*tiny_sets(tiny_roberta, tiny_gpt2, fsc_dir, name), "--out", str(out))
    assert res.exit_code == 0, res.output
    assert "best prompt" in res.output

    result = json.loads((out / "result.json").read_text())
    assert result["method"] == name
    assert isinstance(result["best_prompt"], str) and result["best_prompt"]
    assert len(result["tokens"]) == 5 and all(isinstance(t, str) for t in result["tokens"])
    assert 0.0 <= result["dev_accuracy"] <= 1.0 and 0.0 <= result["test_accuracy"] <= 1.0
    assert result["test_n"] == 1821  # the SST-2 test set
    assert result["prompt_perplexity"] > 1.0
    # judged by the policy's LM (algorithm.perplexity_model unset), as reported
    assert result["perplexity_reference"] == str(tiny_gpt2)
    judge = (load_lm(str(tiny_gpt2), "causal", device="cpu"), load_tokenizer(str(tiny_gpt2)))
    assert result["prompt_perplexity"] == pytest.approx(
        prompt_perplexity([result["best_prompt"]], *judge)[0]
    )
    assert result["steps"] == 4 and result["best_step"] in (2, 4)
    assert result["config"]["algorithm"]["name"] == name
    assert result["config"]["target"]["model"] == str(tiny_roberta)
    assert json.loads((out / "config.json").read_text()) == result["config"]

    lines = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [m["step"] for m in lines] == [1, 2, 3, 4]
    assert ["dev/accuracy" in m for m in lines] == [False, True, False, True]
    for m in lines:
        for key in (
            "rewards/mean",
            "rewards/task",
            "losses/sql",
            "charts/sample_seconds",
            "charts/reward_seconds",
            "charts/update_seconds",
        ):
            assert key in m, key
    assert any(p.name.startswith("events.out.tfevents") for p in (out / "tensorboard").iterdir())
    assert {"state.json", "state.safetensors"} <= {p.name for p in (out / "checkpoint").iterdir()}

    # The folder holds a run: without --resume that is an error; with it the run continues.
    res = tune(*tiny_sets(tiny_roberta, tiny_gpt2, fsc_dir, name), "--out", str(out))
    assert res.exit_code == 2 and "--resume" in res.output
    res = tune(
        *tiny_sets(tiny_roberta, tiny_gpt2, fsc_dir, name),
        "--set",
        "train.steps=6",
        "--out",
        str(out),
        "--resume",
    )
    assert res.exit_code == 0, res.output
    assert len((out / "metrics.jsonl").read_text().splitlines()) == 6
    assert json.loads((out / "result.json").read_text())["steps"] == 6


def test_unknown_algorithm_field_is_a_clear_error(tmp_path):
    res = tune("--set", "algorithm.name=pin", "--set", "algorithm.bogus=1", "--out", str(tmp_path))
    assert res.exit_code == 2
    assert "algorithm.bogus: unknown field; valid fields here:" in res.output
    assert "token_filter_k" in res.output and "Traceback" not in res.output
    res = tune("--set", "algorithm.name=rlprompts", "--out", str(tmp_path))
    assert res.exit_code == 2 and "valid names:" in res.output and "rlprompt" in res.output


def test_tune_help():
    res = runner.invoke(app, ["tune", "--help"])
    assert res.exit_code == 0 and "--resume" in res.output


EXAMPLES = {
    "sst2_rlprompt.yaml": ("rlprompt", "distilgpt2", "sst-2", 12000),
    "sst2_pin.yaml": ("pin", "facebook/opt-125m", "sst-2", 6000),
    "agnews_rlprompt.yaml": ("rlprompt", "distilgpt2", "agnews", 12000),
    "agnews_pin.yaml": ("pin", "facebook/opt-125m", "agnews", 6000),
}


@pytest.mark.parametrize("filename", sorted(EXAMPLES))
def test_example_configs_load(filename):
    path = REPO / "configs" / filename
    text = path.read_text()
    header = [line for line in text.splitlines() if line.startswith("#")]
    assert text.startswith("#") and len(header) >= 5, "a comment header comes first"
    assert f"hardprompts tune --config configs/{filename}" in text  # the exact command
    name, policy, dataset, steps = EXAMPLES[filename]
    cfg = load_config(path)
    assert cfg.algorithm.name == name and cfg.policy.model == policy
    assert cfg.task.dataset == dataset and cfg.train.steps == steps
    assert cfg.target.model == "roberta-large" and cfg.target.kind == "masked"
    # Nothing but known fields, and the YAML keeps defaults visible where the papers set them.
    assert yaml.safe_load(text)["algorithm"]["name"] == name
