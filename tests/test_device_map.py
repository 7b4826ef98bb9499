"""``device_map`` / ``max_memory``: models loaded through accelerate's big-model path.

On a CPU the only devices are the CPU and the disk, so a ``max_memory`` below the model's size
makes accelerate keep some layers in memory and offload the rest to disk, running them through
its hooks: the same code path as layers spread over GPUs. (With everything fitting on the CPU,
transformers places the model without hooks.)
"""

from __future__ import annotations

import json

import pytest
import torch
import yaml
from peft import LoraConfig
from tiny_models import TINY_AGENT, make_tiny_reviews
from typer.testing import CliRunner

from hardprompts.algorithms.appo import APPOConfig
from hardprompts.cli import app
from hardprompts.config import Config, PolicyConfig, TargetConfig, config_from_dict
from hardprompts.errors import ConfigError
from hardprompts.modeling import _max_memory, load_lm, load_tokenizer, placement
from hardprompts.policy import PromptPolicy
from hardprompts.targets.hf import HFTarget

VERBALIZERS = [" terrible", " great"]
TEMPLATE = "{prompt} Input: {x} Output:"


def _split_memory(path) -> int:
    """CPU bytes for the embeddings and LM head but not all the blocks of the tiny GPT-2."""
    model = load_lm(str(path), "causal", device="cpu")
    return int(0.95 * sum(p.numel() * p.element_size() for p in model.parameters()))


def test_target_split_over_cpu_and_disk_scores_like_the_plain_one(tiny_gpt2):
    plain = HFTarget.from_config(
        TargetConfig(model=str(tiny_gpt2), device="cpu"), TEMPLATE, VERBALIZERS, "causal"
    )
    split_cfg = TargetConfig(
        model=str(tiny_gpt2), device_map="auto", max_memory={"cpu": _split_memory(tiny_gpt2)}
    )
    split = HFTarget.from_config(split_cfg, TEMPLATE, VERBALIZERS, "causal")
    placed = split.model.hf_device_map
    assert set(placed.values()) == {"cpu", "disk"}, placed  # really split: hooks at work
    assert placed["transformer.wte"] == "cpu" and split.device == torch.device("cpu")
    prompts = ["great", "the film was", ""]
    texts = ["a great film", "a terrible film, so bad", "fine"]
    assert torch.allclose(split.score(prompts, texts), plain.score(prompts, texts), atol=1e-6)


def test_placement_fields_and_their_errors(tiny_gpt2):
    cfg = Config()
    assert placement(cfg.target) == {"device": "auto", "device_map": None, "max_memory": None}
    agent = APPOConfig(name="appo", agent_device_map="auto", agent_max_memory={0: "70GiB"})
    assert placement(agent, "agent_")["device_map"] == "auto"
    assert _max_memory({"0": "70GiB", 1: "70GiB", "cpu": "200GiB"}) == {
        0: "70GiB",
        1: "70GiB",
        "cpu": "200GiB",
    }
    loaded = config_from_dict(
        yaml.safe_load("target: {device_map: auto, max_memory: {0: 20GiB, cpu: 60GiB}}")
    )
    assert loaded.target.max_memory == {0: "20GiB", "cpu": "60GiB"}
    with pytest.raises(ConfigError, match=r"target.device is 'cpu' and target.device_map is set"):
        config_from_dict({"target": {"device": "cpu", "device_map": "auto"}})
    with pytest.raises(ConfigError, match="policy.max_memory needs policy.device_map"):
        config_from_dict({"policy": {"max_memory": {"cpu": "1GiB"}}})
    with pytest.raises(ConfigError, match="algorithm.agent_max_memory needs algorithm.agent_device"):
        config_from_dict({"algorithm": {"name": "appo", "agent_max_memory": {"cpu": "1GiB"}}})

    # Trainable or read-directly weights cannot live on disk: said plainly, naming the field.
    lora = LoraConfig(r=2, lora_alpha=4, task_type="CAUSAL_LM")
    offloading = APPOConfig(
        name="appo",
        agent_device_map="auto",
        agent_max_memory={"cpu": _split_memory(tiny_gpt2)},
        **TINY_AGENT,
    )
    from hardprompts.agent import PromptAgent

    with pytest.raises(ConfigError, match="raise algorithm.agent_max_memory"):
        PromptAgent.from_config(offloading, str(tiny_gpt2), lora=lora)
    on_disk = load_lm(str(tiny_gpt2), "causal", device_map="auto", max_memory={"cpu": 1000})
    with pytest.raises(ConfigError, match="raise policy.max_memory"):
        PromptPolicy(on_disk, load_tokenizer(str(tiny_gpt2)), hidden_size=8)
    assert PolicyConfig().device_map is None


def _tune(tmp_path, name: str, config: dict, *sets: str) -> dict:
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(config))
    out = tmp_path / name
    args = ["tune", "-c", str(path), "--out", str(out)]
    for s in sets:
        args += ["--set", s]
    res = CliRunner().invoke(app, args)
    assert res.exit_code == 0, res.output
    result = json.loads((out / "result.json").read_text())
    return {k: v for k, v in result.items() if k not in ("wall_seconds", "config")}


@pytest.mark.slow
def test_rlprompt_and_appo_with_device_map_equal_the_plain_runs(tiny_gpt2, tmp_path):
    data = make_tiny_reviews(tmp_path / "data", ["16-42"])
    split = f"{{cpu: {_split_memory(tiny_gpt2)}}}"
    base = {
        "task": {"dataset": str(data), "verbalizers": VERBALIZERS, "template": TEMPLATE},
        "target": {"model": str(tiny_gpt2), "kind": "causal"},
        "train": {"steps": 2, "seed": 0, "eval_every": 1, "checkpoint_every": 2},
    }
    # RLPrompt: the target and the policy's LM both split over CPU and disk.
    rl = {**base, "policy": {"model": str(tiny_gpt2), "mlp_hidden": 16}}
    rl["algorithm"] = {"name": "rlprompt", "prompts_per_step": 4}
    placed = ["target.device_map=auto", f"target.max_memory={split}"]
    placed += ["policy.device_map=auto", f"policy.max_memory={split}"]
    assert _tune(tmp_path, "rl-placed", rl, *placed) == _tune(tmp_path, "rl-plain", rl)
    # APPO: the agent with its LoRA adapters through device_map (all of it in CPU memory: LoRA
    # layers cannot be offloaded), the target split.
    appo = {**base, "policy": {"model": str(tiny_gpt2)}, "algorithm": {"name": "appo", **TINY_AGENT}}
    placed = ["target.device_map=auto", f"target.max_memory={split}"]
    placed += ["algorithm.agent_device_map=auto"]
    assert _tune(tmp_path, "appo-placed", appo, *placed) == _tune(tmp_path, "appo-plain", appo)
