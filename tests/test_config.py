"""Configuration: defaults, YAML, --set overrides, and the message every bad input gets."""

from __future__ import annotations

import pytest

from hardprompts.config import ClassificationTaskConfig, apply_overrides, load_config
from hardprompts.errors import ConfigError


def test_defaults_match_the_papers():
    cfg = load_config()
    assert cfg.task.dataset == "sst-2" and cfg.task.split_seed == "16-42"
    assert cfg.target.model == "roberta-large" and cfg.target.kind == "auto"
    assert (
        cfg.policy.model == "distilgpt2"
        and cfg.policy.prompt_length == 5
        and cfg.policy.mlp_hidden == 2048
    )
    assert cfg.train.steps == 12000
    assert cfg.target.trust_remote_code is False


def test_yaml_then_overrides(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("task:\n  dataset: mr\n  verbalizers: [' bad', ' good']\ntrain:\n  steps: 7\n")
    cfg = load_config(path, ["train.steps=9", "target.kind=causal", "task.split_seed=null"])
    assert cfg.task.dataset == "mr"
    assert cfg.task.verbalizers == [" bad", " good"]
    assert cfg.train.steps == 9
    assert cfg.target.kind == "causal"
    assert cfg.task.split_seed is None


def test_override_parses_lists_and_keeps_strings():
    data = apply_overrides(
        {}, ["task.verbalizers=[' no', ' yes']", "target.model=gpt2", "train.seed=3"]
    )
    assert data["task"]["verbalizers"] == [" no", " yes"]
    assert data["target"]["model"] == "gpt2"
    assert data["train"]["seed"] == 3


@pytest.mark.parametrize(
    "overrides,message",
    [
        (["task.datset=mr"], r"task\.datset: unknown field.*did you mean task\.dataset\?"),
        (["train.steps=abc"], r"train\.steps: Input should be a valid integer.*'abc'"),
        (["train.steps=0"], r"train\.steps: Input should be greater than or equal to 1"),
        (
            ["target.kind=encoder"],
            r"target\.kind: Input should be 'auto', 'masked', 'causal', 'openai' or 'openai-chat'",
        ),
        (["target.kind=openai"], r"target\.base_url is not set"),
        (["algorithm.name=nope"], r"unknown algorithm name 'nope'; valid names"),
        (["task.template={prompt} {mask}"], r"task\.template: the template must contain \{x\}"),
        (["task.verbalizers=[' a', ' a']"], r"verbalizers must be distinct"),
        (["nosection.x=1"], r"nosection: unknown field"),
        (["train.steps"], r"expected KEY=VALUE"),
        (["train.steps.x=1"], r"train\.steps: Input should be a valid integer"),
    ],
)
def test_bad_fields_get_one_clear_message(overrides, message):
    with pytest.raises(ConfigError, match=message):
        load_config(None, overrides)


def test_missing_and_malformed_files(tmp_path):
    with pytest.raises(ConfigError, match="config file not found: .*nope.yaml"):
        load_config(tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("task: [unclosed\n")
    with pytest.raises(ConfigError, match="is not valid YAML"):
        load_config(bad)
    scalar = tmp_path / "scalar.yaml"
    scalar.write_text("just a string\n")
    with pytest.raises(ConfigError, match="top level must be a mapping"):
        load_config(scalar)


def test_saved_config_round_trips():
    cfg = load_config(None, ["task.dataset=cr", "train.steps=3"])
    again = load_config(None, [f"{k}={v}" for k, v in [("task.dataset", "cr"), ("train.steps", 3)]])
    assert cfg.to_dict() == again.to_dict()
    assert ClassificationTaskConfig.model_validate(cfg.to_dict()["task"]) == cfg.task


def test_every_field_has_a_description():
    from hardprompts.config import algorithm_config_class, algorithm_names, describe_fields

    rows = describe_fields()
    assert len(rows) > 20
    names = algorithm_names()
    assert {"rlprompt", "pin", "pez", "softprompt", "appo", "search"} <= set(names)
    for name in names:
        rows += [
            (f"{name}:{f}", d, doc) for f, d, doc in describe_fields(algorithm_config_class(name))
        ]
    missing = [name for name, _, doc in rows if not doc]
    assert not missing, f"fields without a description: {missing}"
