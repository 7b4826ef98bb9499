"""Sample-and-select: the candidate pool, selection on dev only, and `hardprompts tune` with resume."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import yaml
from tiny_models import TINY_AGENT
from typer.testing import CliRunner

from hardprompts.agent import PromptPool
from hardprompts.algorithms.appo import stableprompt_reward
from hardprompts.cli import app
from hardprompts.config import load_config
from hardprompts.errors import ConfigError
from hardprompts.metrics import prompt_scores
from hardprompts.tasks import build_task

REPO = Path(__file__).resolve().parents[1]
runner = CliRunner()


def test_pool_keeps_the_k_best_distinct_prompts():
    pool = PromptPool(3)
    pool.add("a", 1.0, 0.1, step=1)
    pool.add("b", 3.0, 0.3, step=1)
    pool.add("c", 2.0, 0.2, step=2)
    pool.add("d", 2.0, 0.2, step=1)  # same reward as c, earlier step: ranks first
    assert pool.prompts() == ["b", "d", "c"]
    pool.add("a", 5.0, 0.5, step=3)  # a prompt sampled again keeps its best reward
    pool.add("b", 0.0, 0.0, step=3)  # ... and never loses it to a worse draw
    assert pool.prompts() == ["a", "b", "d"]
    assert pool.entries[1] == {"prompt": "b", "reward": 3.0, "accuracy": 0.3, "step": 1}
    again = PromptPool(3)
    again.load_state_dict(pool.state_dict())
    assert again.entries == pool.entries


def write_config(tmp_path: Path, fsc_dir, tiny_gpt2, steps: int, **algorithm) -> Path:
    cfg = {
        "task": {
            "dataset": "sst-2",
            "data_dir": str(fsc_dir),
            "template": "{prompt} Input: {x} Output:",
        },
        "target": {"model": str(tiny_gpt2), "kind": "causal"},
        "policy": {"model": str(tiny_gpt2)},
        "algorithm": {"name": "search", **TINY_AGENT, **algorithm},
        "train": {"steps": steps, "eval_every": 2, "checkpoint_every": 2, "seed": 5},
    }
    path = tmp_path / "search.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def tune(config: Path, out: Path, *extra: str) -> dict:
    res = runner.invoke(app, ["tune", "--config", str(config), "--out", str(out), *extra])
    assert res.exit_code == 0, res.output
    return json.loads((out / "result.json").read_text())


def test_search_picks_the_best_on_dev_of_its_samples(fsc_dir, tiny_gpt2, tmp_path):
    # select_top above N: every sample goes to dev, so the result is the dev-best of all of them.
    config = write_config(tmp_path, fsc_dir, tiny_gpt2, steps=3, select_top=100)
    result = tune(config, tmp_path / "run")
    samples = result["samples"]
    assert len(samples) == result["prompts_sampled"] == 3 * 4
    assert [s["step"] for s in samples] == [1] * 4 + [2] * 4 + [3] * 4
    assert result["train_pairs_scored"] == 12 * 32  # every prompt on the whole train split

    cfg = load_config(config)
    task = build_task(cfg)
    target = task.target
    prompts = [s["prompt"] for s in samples]
    train, dev = task.split("train"), task.split("dev")
    # The train rewards it recorded are the StablePrompt reward of each sample on train ...
    mine = stableprompt_reward(target.score(prompts, train.texts), torch.tensor(train.labels))
    torch.testing.assert_close(torch.tensor([s["train_reward"] for s in samples]), mine)
    # ... and its choice is the best on dev (accuracy, then gap reward) of all the samples.
    scores = prompt_scores(prompts, target.score(prompts, dev.texts), dev.labels, 0.0)
    best = max((s.accuracy, s.mean_gap_reward) for s in scores)
    assert (result["dev_accuracy"], result["dev_gap_reward"]) == pytest.approx(best)
    assert result["best_prompt"] in [
        s.prompt for s in scores if (s.accuracy, s.mean_gap_reward) == best
    ]
    # Test accuracy is that prompt's, computed once at the end.
    test = task.split("test")
    acc = prompt_scores(
        [result["best_prompt"]], target.score([result["best_prompt"]], test.texts), test.labels, 0.0
    )
    assert result["test_accuracy"] == pytest.approx(acc[0].accuracy)


def test_search_sends_only_the_train_best_to_dev(fsc_dir, tiny_gpt2, tmp_path):
    config = write_config(tmp_path, fsc_dir, tiny_gpt2, steps=2, select_top=2)
    result = tune(config, tmp_path / "run")  # one dev evaluation, after step 2
    ranked = sorted(result["samples"], key=lambda s: (-s["train_reward"], s["step"]))
    top = list(dict.fromkeys(s["prompt"] for s in ranked))[:2]
    assert [c["prompt"] for c in result["candidates"]] == top
    assert result["best_prompt"] in top


@pytest.mark.slow
def test_tune_search_resume_equals_uninterrupted(fsc_dir, tiny_gpt2, tmp_path):
    config = write_config(tmp_path, fsc_dir, tiny_gpt2, steps=4, select_top=3)
    full = tune(config, tmp_path / "full")
    assert full["method"] == "search" and full["steps"] == 4 and full["prompt_perplexity"] > 0
    half = tmp_path / "half"
    tune(config, half, "--set", "train.steps=2")
    resumed = tune(config, half, "--resume")
    drop = ("wall_seconds", "config")
    assert {k: v for k, v in resumed.items() if k not in drop} == {
        k: v for k, v in full.items() if k not in drop
    }


def test_search_config_defaults_and_errors():
    cfg = load_config(REPO / "configs" / "sst2_search.yaml").algorithm
    assert cfg.reward_batch_size is None and cfg.select_top == 10
    default = load_config(None, ["algorithm.name=search"]).algorithm
    assert default.agent_model is None and default.prompts_per_query == 4
    with pytest.raises(
        ConfigError, match=r"algorithm.demo_template: .*must contain \{x\} and \{y\}"
    ):
        load_config(None, ["algorithm.name=search", "algorithm.demo_template=Input only"])
    from hardprompts.algorithms.appo import APPOConfig
    from hardprompts.algorithms.search import SearchConfig

    for model in (APPOConfig, SearchConfig):  # every field documents itself (and its source)
        assert [n for n, f in model.model_fields.items() if not f.description] == []
    with pytest.raises(ConfigError, match=r"algorithm.lr: unknown field"):
        load_config(None, ["algorithm.name=search", "algorithm.lr=0.1"])  # search does not train


def test_unknown_agent_model_names_the_fix(fsc_dir, tiny_gpt2, tmp_path):
    config = write_config(tmp_path, fsc_dir, tiny_gpt2, steps=1)
    res = runner.invoke(
        app,
        ["tune", "--config", str(config), "--out", str(tmp_path / "run"),
         "--set", f"policy.model={tmp_path / 'no-such-model'}"],
    )  # fmt: skip
    assert res.exit_code == 2
    assert "policy.model (the agent): could not load the tokenizer of" in res.output
    assert "no-such-model" in res.output


def test_the_agent_is_policy_model_and_agent_model_is_a_deprecated_alias():
    # One field names the model that writes the prompt, for every method.
    default = load_config(None, ["algorithm.name=search"])
    assert default.policy.model == "Qwen/Qwen2.5-0.5B-Instruct"  # the agent default
    assert load_config(None, ["algorithm.name=pin"]).policy.model == "distilgpt2"
    chosen = load_config(None, ["algorithm.name=appo", "policy.model=/models/agent"])
    assert chosen.policy.model == "/models/agent" and chosen.algorithm.agent_model is None
    with pytest.warns(FutureWarning, match="algorithm.agent_model is deprecated"):
        old = load_config(None, ["algorithm.name=search", "algorithm.agent_model=/models/old"])
    assert old.policy.model == "/models/old" and old.algorithm.agent_model is None
    assert (
        load_config(None, ["algorithm.name=search"]).to_dict()["algorithm"]["agent_model"] is None
    )
    with pytest.raises(ConfigError, match="algorithm.agent_model .* and policy.model .* both"):
        load_config(
            None,
            ["algorithm.name=appo", "algorithm.agent_model=/a", "policy.model=/b"],
        )
